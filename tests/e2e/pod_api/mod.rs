//! The pod API end to end: an in-process `devenv-manager` whose pod API talks
//! to a real kube-apiserver (the test bed), real service-account tokens from
//! TokenRequest, and real pods stored in the API (they stay Pending: there is
//! no kubelet, which the pod API does not need).
//!
//! Each test has its own namespace (the only devenv namespace of its own
//! manager), and its manager runs as its own service account with the RBAC a
//! deployment needs, so TokenReviews are counted per test in the audit log.

mod auth;
mod ca;
mod cli;
mod outage;
mod ownership;

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_testbed::server::Server;
use devenv_testbed::{self as testbed, eventually};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use serde_json::{Value, json};

const AUDIENCE: &str = "devenv-manager";
const DEVENV: &str = env!("CARGO_BIN_EXE_devenv");

/// A namespace, a manager serving it, and the admin client of the bed.
struct Fixture {
    bed: &'static testbed::TestBed,
    ns: String,
    server: Server,
    admin: kube::Client,
    /// The manager's username, for counting its TokenReviews in the audit log.
    manager_user: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Fixture {
    async fn new(prefix: &str) -> Option<Fixture> {
        Self::with(prefix, |_| {}).await
    }

    async fn with(prefix: &str, tweak: impl FnOnce(&mut Config)) -> Option<Fixture> {
        let bed = testbed::shared().await?;
        let ns = bed.temp_namespace(prefix).await;
        let admin = bed.client().await;
        let manager = manager_config(bed, &admin, &ns).await;
        let mut config = Config::default();
        config.devenv.namespaces = vec![ns.clone()];
        tweak(&mut config);
        let server = Server::start_with_cluster(config, Source::Config(Box::new(manager))).await;
        let fixture = Fixture {
            bed,
            manager_user: format!("system:serviceaccount:{ns}:manager"),
            ns,
            server,
            admin,
        };
        fixture.wait_until_synced().await;
        Some(fixture)
    }

    async fn wait_until_synced(&self) {
        eventually("the pod cache is in sync", || async {
            let answer = self.call("GET", "/api/v1/health", None).await;
            (answer.body["podCache"] == "synced").then_some(())
        })
        .await;
    }

    /// A developer: service account `devenv-{name}` and a token for the manager.
    async fn developer(&self, name: &str) -> String {
        let sa = format!("devenv-{name}");
        self.bed.create_service_account(&self.ns, &sa).await;
        self.bed.token(&self.ns, &sa, AUDIENCE, 3600).await
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> Answer {
        call(&self.server, method, path, token).await
    }

    /// `method /api/v1/pods/{ns}/{name}` in this fixture's namespace.
    async fn on_pod(&self, method: &str, name: &str, token: Option<&str>) -> Answer {
        self.call(method, &format!("/api/v1/pods/{}/{name}", self.ns), token)
            .await
    }

    /// `token`'s developer can neither read nor delete pod `name` (404
    /// NotFound both times), and the pod is still there.
    async fn assert_not_theirs(&self, name: &str, token: &str) {
        let get = self.on_pod("GET", name, Some(token)).await;
        assert_error(&get, 404, "NotFound");
        let delete = self.on_pod("DELETE", name, Some(token)).await;
        assert_error(&delete, 404, "NotFound");
        assert!(self.pods().get_opt(name).await.unwrap().is_some());
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Creates a pod as the admin, labelled `developer={label}` (if any) and
    /// running as `sa` (created if missing); returns it as stored.
    async fn pod(&self, name: &str, label: Option<&str>, sa: &str) -> Pod {
        self.bed.create_service_account(&self.ns, sa).await;
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "infinity"]}]
            }
        }))
        .unwrap();
        if let Some(label) = label {
            pod.metadata.labels = Some([("developer".to_string(), label.to_string())].into());
        }
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {name}: {e}"))
    }

    /// Waits until `token`'s list shows exactly `names`.
    async fn wait_for_list(&self, token: &str, names: &[&str]) -> Value {
        let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        expected.sort();
        eventually(&format!("the list shows {names:?}"), || async {
            let answer = self.call("GET", "/api/v1/pods", Some(token)).await;
            (answer.status == 200 && pod_names(&answer.body) == expected).then_some(answer.body)
        })
        .await
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.server.metrics_text().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
    }

    /// TokenReviews the manager made, according to the API server's audit log
    /// (`None` on a real cluster, which has no log the tests can read).
    async fn token_reviews_at_the_api_server(&self) -> Option<usize> {
        let path = self.bed.audit_log_path()?;
        // Settle the log (every request completed so far is in it), then count.
        self.bed.count_writes_settled(&self.manager_user).await;
        let text = std::fs::read_to_string(path).unwrap();
        Some(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|e| {
                    e["stage"] == "ResponseComplete"
                        && e["verb"] == "create"
                        && e["objectRef"]["resource"] == "tokenreviews"
                        && e["user"]["username"] == self.manager_user.as_str()
                })
                .count(),
        )
    }

    async fn stop(self) {
        self.server.stop().await;
        // The one cluster-scoped object a fixture makes (matters on a real cluster).
        let _ = Api::<ClusterRoleBinding>::all(self.admin.clone())
            .delete(
                &format!("e2e-{}-manager", self.ns),
                &DeleteParams::default(),
            )
            .await;
        self.bed.delete_namespace(&self.ns).await;
    }
}

async fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.client().request(method, server.api_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token).header("X-Auth-Type", "k8s-sa");
    }
    let response = request.send().await.expect("the pod API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn pod_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_error(answer: &Answer, code: u16, reason: &str) {
    assert_eq!(answer.status, code, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert_eq!(answer.body["error"]["reason"], reason, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
}

/// Service account `manager` in `ns` with what the pod API needs (a
/// deployment's RBAC): create TokenReviews; watch and delete pods and keep
/// ConfigMaps in the devenv namespace. Returns a configuration that acts as it.
async fn manager_config(bed: &testbed::TestBed, admin: &kube::Client, ns: &str) -> kube::Config {
    bed.create_service_account(ns, "manager").await;
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    };
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: "manager".into(),
        namespace: Some(ns.into()),
        ..Subject::default()
    };
    let apply = PatchParams::apply("e2e-pod-api").force();
    let cluster_role = ClusterRole {
        metadata: ObjectMeta {
            name: Some("e2e-devenv-manager-tokenreview".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![rule(
            &["authentication.k8s.io"],
            &["tokenreviews"],
            &["create"],
        )]),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            "e2e-devenv-manager-tokenreview",
            &apply,
            &Patch::Apply(&cluster_role),
        )
        .await
        .unwrap();
    let binding_name = format!("e2e-{ns}-manager");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding_name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "e2e-devenv-manager-tokenreview".into(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&binding_name, &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    let role = Role {
        metadata: ObjectMeta {
            name: Some("manager".into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
            rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch", "create", "update", "patch"],
            ),
        ]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .patch("manager", &apply, &Patch::Apply(&role))
        .await
        .unwrap();
    let role_binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("manager".into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "manager".into(),
        },
        subjects: Some(vec![subject]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .patch("manager", &apply, &Patch::Apply(&role_binding))
        .await
        .unwrap();

    let token = bed.token(ns, "manager", testbed::SA_ISSUER, 3600).await;
    let mut config = bed.kube_config();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    // RBAC is read from an informer cache: wait until the grants are in
    // force, so the tests see the pod API, not RBAC propagation.
    bed.wait_for_access(
        ns,
        "manager",
        &[
            ("authentication.k8s.io", "tokenreviews", "create", None),
            ("", "pods", "watch", Some(ns)),
            ("", "pods", "delete", Some(ns)),
            ("", "configmaps", "patch", Some(ns)),
        ],
    )
    .await;
    config
}
