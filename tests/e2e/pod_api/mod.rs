//! The pod API end to end: an in-process `devenv-manager` whose pod API talks
//! to a real kube-apiserver (the test bed), real service-account tokens from
//! TokenRequest, and real pods stored in the API (they stay Pending: there is
//! no kubelet, which the pod API does not need).
//!
//! Each test has its own namespace (the only devenv namespace of its own
//! manager), and its manager runs as its own service account with the RBAC a
//! deployment needs, so TokenReviews are counted per test in the audit log.

mod common;
mod testbed;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::Server;
use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use serde_json::{Value, json};

const AUDIENCE: &str = "devenv-manager";
const DEVENV: &str = env!("CARGO_BIN_EXE_devenv");

use testbed::eventually;

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

// ---------------------------------------------------------------------------
// Reads, ownership, deletion
// ---------------------------------------------------------------------------

#[tokio::test]
async fn developers_list_get_and_delete_their_own_pods() {
    let Some(f) = Fixture::new("podapi-own").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("alice-1", Some("alice"), "devenv-alice").await;
    f.pod("alice-2", Some("alice"), "devenv-alice").await;
    f.pod("bob-1", Some("bob"), "devenv-bob").await;
    f.pod("unlabelled", None, "devenv-alice").await;

    let list = f.wait_for_list(&alice, &["alice-1", "alice-2"]).await;
    let first = &list["items"][0];
    assert_eq!(first["namespace"], f.ns.as_str());
    assert_eq!(first["developer"], "alice");
    assert_eq!(first["serviceAccount"], "devenv-alice");
    assert_eq!(first["status"], "Pending");
    assert_eq!(first["ready"], "0/1");
    f.wait_for_list(&bob, &["bob-1"]).await;

    // Filtered by namespace: the same; another namespace is a 400.
    let filtered = f
        .call(
            "GET",
            &format!("/api/v1/pods?namespace={}", f.ns),
            Some(&alice),
        )
        .await;
    assert_eq!(pod_names(&filtered.body), ["alice-1", "alice-2"]);
    let elsewhere = f
        .call("GET", "/api/v1/pods?namespace=default", Some(&alice))
        .await;
    assert_error(&elsewhere, 400, "BadRequest");

    let got = f.on_pod("GET", "alice-1", Some(&alice)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["name"], "alice-1");
    assert_eq!(got.body["containers"][0]["image"], "busybox");

    let deleted = f.on_pod("DELETE", "alice-2", Some(&alice)).await;
    // Without a kubelet the pod is never scheduled, so the API server removes
    // it at once (grace period 0) while still answering with the Pod: 200.
    // On a real cluster it may have been scheduled: graceful deletion, 202
    // (tests/e2e_node.rs checks both on a real node).
    if f.bed.real_cluster {
        assert!(matches!(deleted.status, 200 | 202), "{}", deleted.body);
    } else {
        assert_eq!(deleted.status, 200, "{}", deleted.body);
    }
    assert_eq!(deleted.body["name"], "alice-2");
    if deleted.status == 200 {
        assert_eq!(deleted.body["status"], "Deleted");
        assert!(f.pods().get_opt("alice-2").await.unwrap().is_none());
        f.wait_for_list(&alice, &["alice-1"]).await;
    }
    let text = f.server.metrics_text().await;
    assert!(
        text.contains(
            r#"api_requests_total{route="GET /api/v1/pods/{namespace}/{name}",code="200"} 1"#
        ),
        "{text}"
    );
    f.stop().await;
}

#[tokio::test]
async fn another_developers_pod_is_404_exactly_like_a_missing_one() {
    let Some(f) = Fixture::new("podapi-other").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("bobs", Some("bob"), "devenv-bob").await;
    f.wait_for_list(&bob, &["bobs"]).await;

    let others = f.on_pod("GET", "bobs", Some(&alice)).await;
    let missing = f.on_pod("GET", "nothing", Some(&alice)).await;
    assert_error(&others, 404, "NotFound");
    assert_error(&missing, 404, "NotFound");
    // Nothing tells the two apart but the name the caller chose.
    assert_eq!(
        others.body["error"]["message"]
            .as_str()
            .unwrap()
            .replace("bobs", "X"),
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nothing", "X")
    );
    let delete = f.on_pod("DELETE", "bobs", Some(&alice)).await;
    assert_error(&delete, 404, "NotFound");
    assert!(f.pods().get_opt("bobs").await.unwrap().is_some());
    // And not in alice's list.
    f.wait_for_list(&alice, &[]).await;
    f.stop().await;
}

#[tokio::test]
async fn a_pod_labelled_for_you_but_running_as_another_developer_is_not_yours() {
    let Some(f) = Fixture::new("podapi-sa").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("mine", Some("alice"), "devenv-alice").await;
    f.pod("spoofed", Some("alice"), "devenv-bob").await;

    f.wait_for_list(&alice, &["mine"]).await;
    let get = f.on_pod("GET", "spoofed", Some(&alice)).await;
    assert_error(&get, 404, "NotFound");
    let delete = f.on_pod("DELETE", "spoofed", Some(&alice)).await;
    assert_error(&delete, 404, "NotFound");
    assert!(f.pods().get_opt("spoofed").await.unwrap().is_some());
    // Bob's label is not on it either, so it is nobody's through the API.
    f.wait_for_list(&bob, &[]).await;
    f.stop().await;
}

/// A pod running as `default` never reaches the webhook (its CEL
/// matchConditions send only `devenv-*` accounts), so nothing checked its
/// label: labelled for alice, it is still not alice's.
#[tokio::test]
async fn a_pod_labelled_for_you_but_running_as_default_is_not_yours() {
    let Some(f) = Fixture::new("podapi-default").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("planted", Some("alice"), "default").await;
    f.pod("mine", Some("alice"), "devenv-alice").await;

    // A watch delivers events in order: once "mine" shows, the cache holds
    // "planted" too, and it is not in the list.
    f.wait_for_list(&alice, &["mine"]).await;
    let get = f.on_pod("GET", "planted", Some(&alice)).await;
    assert_error(&get, 404, "NotFound");
    let delete = f.on_pod("DELETE", "planted", Some(&alice)).await;
    assert_error(&delete, 404, "NotFound");
    assert!(f.pods().get_opt("planted").await.unwrap().is_some());
    f.stop().await;
}

#[tokio::test]
async fn a_pod_relabelled_after_it_was_read_is_not_deleted() {
    let Some(f) = Fixture::new("podapi-race").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.bed.create_service_account(&f.ns, "devenv-bob").await;
    let stale = f.pod("contested", Some("alice"), "devenv-alice").await;
    f.wait_for_list(&alice, &["contested"]).await;

    // Between the manager's read (`stale`, what its cache held) and its
    // delete, the pod is relabelled for bob.
    let relabel = json!({"metadata": {"labels": {"developer": "bob"}}});
    f.pods()
        .patch(
            "contested",
            &PatchParams::default(),
            &Patch::Merge(&relabel),
        )
        .await
        .unwrap();

    // The delete the API would send, with the stale pod's preconditions.
    let config = devenv_manager::config::DevenvConfig {
        namespaces: vec![f.ns.clone()],
        ..Default::default()
    };
    let outcome =
        devenv_manager::api::pods::delete_developers_pod(&f.admin, &config, "alice", &stale).await;

    let error = outcome.expect_err("a relabelled pod must not be deleted");
    assert_eq!(error.status().as_u16(), 404, "{error}");
    let pod = f.pods().get("contested").await.unwrap();
    assert_eq!(pod.metadata.labels.unwrap()["developer"], "bob");

    // Through HTTP, whatever the cache holds by now: never deleted.
    let delete = f.on_pod("DELETE", "contested", Some(&alice)).await;
    assert!(matches!(delete.status, 404 | 409), "{}", delete.body);
    assert!(f.pods().get_opt("contested").await.unwrap().is_some());
    f.stop().await;
}

#[tokio::test]
async fn a_pod_updated_but_still_yours_is_deleted_after_a_fresh_read() {
    let Some(f) = Fixture::new("podapi-update").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let stale = f.pod("busy", Some("alice"), "devenv-alice").await;
    let annotate = json!({"metadata": {"annotations": {"touched": "yes"}}});
    f.pods()
        .patch("busy", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();

    let config = devenv_manager::config::DevenvConfig {
        namespaces: vec![f.ns.clone()],
        ..Default::default()
    };
    let outcome =
        devenv_manager::api::pods::delete_developers_pod(&f.admin, &config, "alice", &stale).await;

    assert!(outcome.is_ok(), "{outcome:?}");
    f.wait_for_list(&alice, &[]).await;
    f.stop().await;
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

/// Signs a service-account JWT with the test bed's own issuer key, as the API
/// server would, with the claims of a TokenRequest token but any `exp`.
/// `None` when the bed's key is not at hand (a real cluster).
fn sign_token(bed: &testbed::TestBed, ns: &str, sa: &ServiceAccount, exp: i64) -> Option<String> {
    let dir = bed.dir()?;
    let key_pem = std::fs::read(dir.join("service-account.key")).unwrap();
    let pub_pem = std::fs::read(dir.join("service-account.pub")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let public = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pub_pem).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // The API server's key id: base64url(SHA-256(DER public key)).
    let kid = b64(ring::digest::digest(&ring::digest::SHA256, public.as_ref()).as_ref());
    let name = sa.metadata.name.clone().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = json!({"alg": "ES256", "kid": kid});
    let claims = json!({
        "aud": [AUDIENCE],
        "exp": exp,
        "iat": exp - 3600,
        "nbf": exp - 3600,
        "iss": testbed::SA_ISSUER,
        "jti": format!("e2e-{now}"),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa.metadata.uid.clone().unwrap()},
        },
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_der(),
        &rng,
    )
    .unwrap();
    let signature = pair.sign(&rng, signing_input.as_bytes()).unwrap();
    Some(format!("{signing_input}.{}", b64(signature.as_ref())))
}

#[tokio::test]
async fn missing_bad_expired_and_wrong_audience_tokens_are_401() {
    let Some(f) = Fixture::new("podapi-401").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("ws", Some("alice"), "devenv-alice").await;
    f.wait_for_list(&alice, &["ws"]).await;

    // No token.
    let answer = f.call("GET", "/api/v1/pods", None).await;
    assert_error(&answer, 401, "Unauthorized");
    assert!(answer.headers.contains_key("www-authenticate"));
    // Not a token at all, and a JWT-shaped forgery.
    assert_error(
        &f.call("GET", "/api/v1/pods", Some("hunter2")).await,
        401,
        "Unauthorized",
    );
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(forged)).await,
        401,
        "Unauthorized",
    );
    // A real token of the developer, but for another audience.
    let other_audience = f
        .bed
        .token(&f.ns, "devenv-alice", "someone-else", 3600)
        .await;
    let answer = f.call("GET", "/api/v1/pods", Some(&other_audience)).await;
    assert_error(&answer, 401, "Unauthorized");
    // A real token of a service account deleted since: what a token looks like
    // once it is no longer valid (TokenRequest will not issue one that expires
    // in less than 10 minutes).
    f.bed.create_service_account(&f.ns, "devenv-carol").await;
    let carol = f.bed.token(&f.ns, "devenv-carol", AUDIENCE, 3600).await;
    Api::<ServiceAccount>::namespaced(f.admin.clone(), &f.ns)
        .delete("devenv-carol", &DeleteParams::default())
        .await
        .unwrap();
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&carol)).await,
        401,
        "Unauthorized",
    );
    // A wrong X-Auth-Type, even with a good token.
    let response = f
        .server
        .client()
        .get(f.server.api_url("/api/v1/pods"))
        .bearer_auth(&alice)
        .header("X-Auth-Type", "oidc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Truly expired: a token signed with the bed's own issuer key. The same
    // forgery with a future `exp` is accepted, so the refusal is the expiry.
    let sa = Api::<ServiceAccount>::namespaced(f.admin.clone(), &f.ns)
        .get("devenv-alice")
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // (Needs the local bed's signing key; a real cluster keeps its own.)
    if !f.bed.real_cluster {
        let valid = sign_token(f.bed, &f.ns, &sa, now + 3600).expect("the bed's signing key");
        let expired = sign_token(f.bed, &f.ns, &sa, now - 3600).expect("the bed's signing key");
        let answer = f.call("GET", "/api/v1/pods", Some(&valid)).await;
        assert_eq!(answer.status, 200, "the control token: {}", answer.body);
        let answer = f.call("GET", "/api/v1/pods", Some(&expired)).await;
        assert_error(&answer, 401, "Unauthorized");
    }

    // The good token still works.
    assert_eq!(
        f.call("GET", "/api/v1/pods", Some(&alice)).await.status,
        200
    );
    f.stop().await;
}

#[tokio::test]
async fn authenticated_non_developers_are_403() {
    let Some(f) = Fixture::new("podapi-403").await else {
        return;
    };
    // The reserved developer name `manager`.
    f.bed.create_service_account(&f.ns, "devenv-manager").await;
    let reserved = f.bed.token(&f.ns, "devenv-manager", AUDIENCE, 3600).await;
    let answer = f.call("GET", "/api/v1/pods", Some(&reserved)).await;
    assert_error(&answer, 403, "Forbidden");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("devenv-manager")
    );
    // A service account that is no devenv one.
    let default = f.bed.token(&f.ns, "default", AUDIENCE, 3600).await;
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&default)).await,
        403,
        "Forbidden",
    );
    // devenv-alice, but of a namespace that is not a devenv namespace.
    let elsewhere = f.bed.temp_namespace("podapi-403-elsewhere").await;
    f.bed
        .create_service_account(&elsewhere, "devenv-alice")
        .await;
    let outsider = f
        .bed
        .token(&elsewhere, "devenv-alice", AUDIENCE, 3600)
        .await;
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&outsider)).await,
        403,
        "Forbidden",
    );
    f.bed.delete_namespace(&elsewhere).await;
    f.stop().await;
}

#[tokio::test]
async fn many_requests_with_one_token_cost_one_token_review() {
    let Some(f) = Fixture::new("podapi-cache").await else {
        return;
    };
    let alice = f.developer("alice").await;

    for _ in 0..25 {
        let answer = f.call("GET", "/api/v1/pods", Some(&alice)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    assert_eq!(f.metric("tokenreview_requests_total").await, 1.0);
    assert_eq!(f.metric("tokenreview_cache_hits_total").await, 24.0);
    if !f.bed.real_cluster {
        let at_api_server = f.token_reviews_at_the_api_server().await;
        assert_eq!(at_api_server, Some(1));
    }
    f.stop().await;
}

#[tokio::test]
async fn a_junk_token_flood_costs_a_bounded_number_of_token_reviews() {
    let Some(f) = Fixture::with("podapi-flood", |c| {
        c.api.failed_auth_burst = 5;
        c.api.failed_auths_per_minute = 1.0;
    })
    .await
    else {
        return;
    };
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);

    let mut refused = 0;
    for i in 0..60 {
        // Distinct, JWT-shaped, so neither the cache nor the shape check stops them.
        let junk = format!(
            "{}.{}.{}",
            b64(format!("{{\"n\":{i}}}")),
            b64("{}".into()),
            b64("x".into())
        );
        let answer = f.call("GET", "/api/v1/pods", Some(&junk)).await;
        match answer.status {
            401 => {}
            429 => {
                assert!(answer.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("junk token answered {other}: {}", answer.body),
        }
    }

    // 5 at once, plus at most a refill or two while the test runs.
    let reviews = f.metric("tokenreview_requests_total").await;
    assert!((5.0..=7.0).contains(&reviews), "{reviews} TokenReviews");
    assert!(refused >= 53, "only {refused} of 60 refused");
    if !f.bed.real_cluster {
        let at_api_server = f.token_reviews_at_the_api_server().await;
        assert_eq!(at_api_server.map(|n| n as f64), Some(reviews));
    }
    f.stop().await;
}

#[tokio::test]
async fn a_developer_over_the_request_rate_gets_429_with_retry_after() {
    let Some(f) = Fixture::with("podapi-rate", |c| {
        c.api.developer_burst = 3;
        c.api.developer_requests_per_second = 0.01;
    })
    .await
    else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(f.call("GET", "/api/v1/pods", Some(&alice)).await);
    }

    let ok = statuses.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Answer> = statuses.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok, 3);
    assert_eq!(limited.len(), 3);
    assert_error(limited[0], 429, "TooManyRequests");
    let retry: u64 = limited[0].headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Per developer: bob is not limited by alice's requests.
    assert_eq!(f.call("GET", "/api/v1/pods", Some(&bob)).await.status, 200);
    f.stop().await;
}

// ---------------------------------------------------------------------------
// CA distribution
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_ca_configmap_is_published_put_back_and_rotated() {
    let Some(f) = Fixture::new("podapi-ca").await else {
        return;
    };
    let configmaps = Api::<ConfigMap>::namespaced(f.admin.clone(), &f.ns);
    let ca_file = f.server.cert_dir.join("ca.crt");
    let published = |expected: String| {
        let configmaps = configmaps.clone();
        move || {
            let (configmaps, expected) = (configmaps.clone(), expected.clone());
            async move {
                let cm = configmaps.get_opt("devenv-manager-ca").await.ok()??;
                (cm.data?.get("ca.crt")? == &expected).then_some(())
            }
        }
    };

    let ca = std::fs::read_to_string(&ca_file).unwrap();
    eventually("the CA ConfigMap is published", published(ca.clone())).await;

    configmaps
        .delete("devenv-manager-ca", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted CA ConfigMap is put back",
        published(ca.clone()),
    )
    .await;

    let edited = json!({"data": {"ca.crt": "tampered"}});
    configmaps
        .patch(
            "devenv-manager-ca",
            &PatchParams::default(),
            &Patch::Merge(&edited),
        )
        .await
        .unwrap();
    eventually("the edited CA ConfigMap is put back", published(ca.clone())).await;

    // Rotation: a new CA and serving certificate in the certificate directory.
    let names = devenv_manager::tls::default_dns_names("devenv-manager", "devenv-system");
    devenv_manager::tls::generate(&names)
        .unwrap()
        .write(&f.server.cert_dir)
        .unwrap();
    let rotated = std::fs::read_to_string(&ca_file).unwrap();
    assert_ne!(rotated, ca);
    eventually("the CA ConfigMap follows the rotation", published(rotated)).await;
    // And the API serves the new certificate: a client trusting only the new
    // CA gets through.
    let answer = call(&f.server, "GET", "/api/v1/health", None).await;
    assert_eq!(answer.status, 200);
    f.stop().await;
}

// ---------------------------------------------------------------------------
// API server outage
// ---------------------------------------------------------------------------

#[tokio::test]
async fn with_the_api_server_stopped_the_pod_api_answers_503() {
    let Some(mut bed) = testbed::start().await else {
        return;
    };
    let admin = bed.client().await;
    let ns = bed.temp_namespace("podapi-outage").await;
    bed.create_service_account(&ns, "devenv-alice").await;
    let alice = bed.token(&ns, "devenv-alice", AUDIENCE, 3600).await;
    let unused = bed.token(&ns, "devenv-alice", AUDIENCE, 3601).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ws", "labels": {"developer": "alice"}},
        "spec": {"serviceAccountName": "devenv-alice", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(admin, &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let mut config = Config::default();
    config.devenv.namespaces = vec![ns.clone()];
    let server =
        Server::start_with_cluster(config, Source::Config(Box::new(bed.kube_config()))).await;
    eventually("alice's pod is listed", || async {
        let answer = call(&server, "GET", "/api/v1/pods", Some(&alice)).await;
        (pod_names(&answer.body) == ["ws"]).then_some(())
    })
    .await;

    bed.stop_apiserver();

    // A token not seen before needs a TokenReview, which cannot be made.
    let answer = call(&server, "GET", "/api/v1/pods", Some(&unused)).await;
    assert_error(&answer, 503, "ServiceUnavailable");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{message}");
    assert!(answer.headers.contains_key("retry-after"));
    // A cached token: the pod cache notices the lost watch and stops serving
    // what may be stale.
    let answer = eventually("the cached token's list turns 503", || async {
        let answer = call(&server, "GET", "/api/v1/pods", Some(&alice)).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    assert_error(&answer, 503, "ServiceUnavailable");
    let health = call(&server, "GET", "/api/v1/health", None).await;
    assert_eq!(health.body["podCache"], "syncing");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The devenv CLI against the running server
// ---------------------------------------------------------------------------

struct Cli<'a> {
    f: &'a Fixture,
    token_file: std::path::PathBuf,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(DEVENV)
            .args(args)
            .env(
                "DEVENV_MANAGER_URL",
                format!("https://localhost:{}", self.f.server.api.port()),
            )
            .env("DEVENV_TOKEN_FILE", &self.token_file)
            .env("DEVENV_MANAGER_CA", self.f.server.cert_dir.join("ca.crt"))
            .output()
            .expect("devenv runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

// Multi-threaded: the CLI runs as a blocking child process while the server
// it talks to keeps running on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devenv_cli_lists_gets_and_deletes() {
    let Some(f) = Fixture::new("podapi-cli").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("ws-0", Some("alice"), "devenv-alice").await;
    f.pod("ws-1", Some("alice"), "devenv-alice").await;
    f.pod("bobs", Some("bob"), "devenv-bob").await;
    f.wait_for_list(&alice, &["ws-0", "ws-1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{alice}\n")).unwrap();
    let cli = Cli { f: &f, token_file };
    let ns = f.ns.as_str();

    // list, as a table and as JSON; blocking process calls off the runtime.
    let (code, out, err) = tokio::task::block_in_place(|| cli.run(&["pods", "list", "--remote"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(ns) && lines[1].contains("ws-0") && lines[1].contains("Pending"),
        "{out}"
    );
    assert!(!out.contains("bobs"), "{out}");

    let (code, out, err) = tokio::task::block_in_place(|| {
        cli.run(&["pods", "list", "--remote", "-n", ns, "-o", "json"])
    });
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod_names(&list), ["ws-0", "ws-1"]);

    // get, both ways.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "get", "ws-1", "--remote", "-n", ns]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME ") && out.contains("ws-1"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| {
        cli.run(&["pods", "get", "ws-1", "--remote", "-n", ns, "-o", "json"])
    });
    assert_eq!(code, 0);
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["name"], "ws-1");
    assert_eq!(pod["developer"], "alice");

    // Another's pod: one clear line, exit 1.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "get", "bobs", "--remote", "-n", ns]));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found") && err.contains("404"), "{err}");

    // delete.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "delete", "ws-0", "--remote", "-n", ns]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("pod {ns}/ws-0")), "{out}");
    f.wait_for_list(&alice, &["ws-1"]).await;

    // Usage and setup errors.
    let (code, _, err) = tokio::task::block_in_place(|| cli.run(&["pods", "list"]));
    assert_eq!(code, 2);
    assert!(err.contains("--remote"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        let missing = Cli {
            f: &f,
            token_file: "/nonexistent/token".into(),
        };
        missing.run(&["pods", "list", "--remote"])
    });
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/token"), "{err}");
    f.stop().await;
}
