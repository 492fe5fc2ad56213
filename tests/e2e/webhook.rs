//! The webhook registered with a real kube-apiserver: the API server calls it
//! over TLS, and what it stores is checked. Also the CRD from `deploy/crd.yaml`
//! and its own schema and CEL rules with the webhook unregistered.
//!
//! Each test has its own namespace, its own in-process `devenv-manager`, and
//! its own uniquely named webhook configurations selecting only that
//! namespace, so tests share one API server without seeing each other.

use std::process::Command;
use std::time::Duration;

use devenv_manager::config::Config;
use devenv_testbed as testbed;
use devenv_testbed::server::Server;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");

/// A namespace, a manager for it, and the manager registered with the API server.
struct Registered {
    namespace: String,
    server: Server,
    client: kube::Client,
    names: String,
}

impl Registered {
    async fn new(bed: &testbed::TestBed, prefix: &str) -> Registered {
        let namespace = bed.temp_namespace(prefix).await;
        let mut config = Config::default();
        config.devenv.namespaces = vec![namespace.clone()];
        config.operator.namespace = namespace.clone();
        let server = Server::start_with(config.clone()).await;

        // The configuration exactly as `devenv-manager webhook-config` prints it.
        let config_file = server.cert_dir.join("config.yaml");
        std::fs::write(
            &config_file,
            devenv_manager::yaml::to_yaml(&config).unwrap(),
        )
        .unwrap();
        let output = Command::new(BIN)
            .args(["webhook-config", "--config"])
            .arg(&config_file)
            .arg("--ca-file")
            .arg(server.cert_dir.join("ca.crt"))
            .args([
                "--url",
                &format!("https://127.0.0.1:{}", server.webhook.port()),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let docs: Vec<Value> =
            devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&output.stdout))
                .unwrap();
        let names = format!("devenv-manager-{namespace}");
        let client = bed.client().await;
        let mut mutating: MutatingWebhookConfiguration =
            serde_json::from_value(docs[0].clone()).unwrap();
        mutating.metadata.name = Some(names.clone());
        let mut validating: ValidatingWebhookConfiguration =
            serde_json::from_value(docs[1].clone()).unwrap();
        validating.metadata.name = Some(names.clone());
        testbed::register_webhooks(&client, &mutating, &validating).await;
        bed.create_service_account(&namespace, "devenv-probe").await;
        let registered = Registered {
            namespace,
            server,
            client,
            names,
        };
        registered.wait_until_called().await;
        registered
    }

    /// The API server picks up new webhook configurations asynchronously:
    /// wait until a dry-run devenv pod comes back injected.
    async fn wait_until_called(&self) {
        let pods = self.pods();
        let probe = devenv_pod("probe", "devenv-probe", None);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let mut last = None;
        for _ in 0..200 {
            match pods.create(&dry, &probe).await {
                Ok(pod)
                    if pod
                        .metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key("developer")) =>
                {
                    return;
                }
                other => last = Some(other),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API server never called the webhook; last answer: {last:?}");
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn unregister(&self) {
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.names, &dp)
            .await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.names, &dp)
            .await;
    }

    async fn admissions(&self, webhook: &str) -> u64 {
        let text = self.server.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(&format!("admission_requests_total{{webhook=\"{webhook}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

fn devenv_pod(name: &str, sa: &str, developer: Option<&str>) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": sa,
            "containers": [{"name": "workspace", "image": "registry.example.com/devenv/workspace:1"}],
            "initContainers": [{"name": "init", "image": "busybox"}]
        }
    });
    if let Some(developer) = developer {
        pod["metadata"]["labels"] = json!({"developer": developer});
    }
    serde_json::from_value(pod).unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The shared bed, when it is the local one: the API server must reach this
/// process's webhook by URL. `None` (after a skip line) otherwise.
async fn local_bed() -> Option<&'static testbed::TestBed> {
    let bed = testbed::shared().await?;
    if bed.real_cluster {
        testbed::skip("needs the local test bed");
        return None;
    }
    Some(bed)
}

#[tokio::test]
async fn the_api_server_stores_injected_devenv_pods() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let r = Registered::new(bed, "inject").await;
    bed.create_service_account(&r.namespace, "devenv-alice")
        .await;

    let stored = r
        .pods()
        .create(
            &PostParams::default(),
            &devenv_pod("ws", "devenv-alice", None),
        )
        .await
        .unwrap();

    assert_eq!(stored.metadata.labels.unwrap()["developer"], "alice");
    let spec = stored.spec.unwrap();
    let volume = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "devenv-manager-token")
        .expect("token volume");
    let sources = volume.projected.unwrap().sources.unwrap();
    let token = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(
        (
            token.path.as_str(),
            token.audience.as_deref(),
            token.expiration_seconds
        ),
        ("devenv-manager", Some("devenv-manager"), Some(3600))
    );
    assert_eq!(
        sources[1].config_map.as_ref().unwrap().name,
        "devenv-manager-ca"
    );
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.unwrap().iter())
    {
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "devenv-manager-token")
            .unwrap();
        assert_eq!(mount.mount_path, "/var/run/secrets/tokens");
        assert_eq!(mount.read_only, Some(true));
        let env = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DEVENV_MANAGER_URL")
            .unwrap();
        assert_eq!(
            env.value.as_deref(),
            Some("https://devenv-manager.devenv-system.svc.cluster.local:8080")
        );
    }
}

#[tokio::test]
async fn label_spoofing_and_relabelling_are_refused() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let r = Registered::new(bed, "spoof").await;
    bed.create_service_account(&r.namespace, "devenv-alice")
        .await;

    let message = api_error(
        r.pods()
            .create(
                &PostParams::default(),
                &devenv_pod("ws", "devenv-alice", Some("bob")),
            )
            .await,
    );
    assert!(
        message.contains("metadata.labels.developer: names developer \"bob\""),
        "{message}"
    );

    r.pods()
        .create(
            &PostParams::default(),
            &devenv_pod("ws", "devenv-alice", None),
        )
        .await
        .unwrap();
    let relabel = json!({"metadata": {"labels": {"developer": "bob"}}});
    let message = api_error(
        r.pods()
            .patch("ws", &PatchParams::default(), &Patch::Merge(&relabel))
            .await,
    );
    assert!(message.contains("may not be changed"), "{message}");
    let unlabel = json!({"metadata": {"labels": {"developer": null}}});
    let message = api_error(
        r.pods()
            .patch("ws", &PatchParams::default(), &Patch::Merge(&unlabel))
            .await,
    );
    assert!(message.contains("may not be removed"), "{message}");
    // Other labels may change.
    r.pods()
        .patch(
            "ws",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn other_pods_never_reach_the_webhook_and_survive_its_outage() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let r = Registered::new(bed, "outage").await;
    bed.create_service_account(&r.namespace, "devenv-alice")
        .await;
    let before = r.admissions("mutate-pods").await;

    let plain = devenv_pod("plain", "default", None);
    r.pods()
        .create(&PostParams::default(), &plain)
        .await
        .unwrap();
    assert_eq!(
        r.admissions("mutate-pods").await,
        before,
        "the CEL matchConditions kept it away"
    );

    // Stop the manager: other pods are still admitted, devenv pods fail closed.
    let Registered {
        namespace,
        server,
        client,
        names,
    } = r;
    server.stop().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    pods.create(
        &PostParams::default(),
        &devenv_pod("plain-2", "default", None),
    )
    .await
    .unwrap();
    let message = api_error(
        pods.create(
            &PostParams::default(),
            &devenv_pod("ws", "devenv-alice", None),
        )
        .await,
    );
    assert!(message.contains("failed calling webhook"), "{message}");
    let dp = DeleteParams::default();
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(&names, &dp)
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client)
        .delete(&names, &dp)
        .await;
}

fn learner_space(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// Creates, retrying while a new CRD is still being served ("the server
/// could not find the requested resource").
async fn create_ls(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    for _ in 0..100 {
        match api.create(&PostParams::default(), object).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
    api.create(&PostParams::default(), object).await
}

#[tokio::test]
async fn learnerspaces_are_validated_by_the_webhook_and_by_the_crd_schema() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let resource = testbed::manifests::install_crd(bed.client().await).await;
    let r = Registered::new(bed, "ls").await;
    let api: Api<DynamicObject> = Api::namespaced_with(r.client.clone(), &r.namespace, &resource);

    let valid = learner_space(
        "john-doe",
        json!({
            "learnerId": "john.doe", "subjects": ["mathematics", "science", "programming"],
            "resourceQuota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "pods": 10},
            "networkPolicy": {"egressDeny": true, "allowedNamespaces": ["aivo-system", "aivo-shared"]},
            "vaultRole": "learner-default"
        }),
    );
    let stored = create_ls(&api, &valid)
        .await
        .expect("a valid LearnerSpace is stored");
    assert_eq!(stored.data["spec"]["resourceQuota"]["memory"], "4Gi");
    let before = r.admissions("validate-learnerspaces").await;
    assert!(before >= 1, "the validating webhook was called");

    // Valid for the schema, invalid for the webhook: every error in one message.
    let invalid = learner_space(
        "too-big",
        json!({
            "learnerId": "jane", "subjects": ["math"],
            "resourceQuota": {"cpu": "64", "memory": "1Ti", "pods": 500}
        }),
    );
    let message = api_error(create_ls(&api, &invalid).await);
    for field in [
        "spec.resourceQuota.cpu",
        "spec.resourceQuota.memory",
        "spec.resourceQuota.pods",
    ] {
        assert!(message.contains(field), "{field} missing from: {message}");
    }

    // Without the webhook, the CRD's own schema and CEL rules still refuse.
    r.unregister().await;
    // Wait until the API server stops calling it: an object only the webhook
    // refuses is then accepted (dry run: nothing is stored).
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut dropped = false;
    for _ in 0..200 {
        if api.create(&dry, &invalid).await.is_ok() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped,
        "the API server kept calling the unregistered webhook"
    );
    let mut changed = stored.clone();
    changed.data["spec"]["learnerId"] = json!("someone.else");
    let message = api_error(
        api.replace("john-doe", &PostParams::default(), &changed)
            .await,
    );
    assert!(message.contains("spec.learnerId is immutable"), "{message}");
    let bad_pattern = learner_space(
        "bad",
        json!({"learnerId": "no spaces allowed", "vaultRole": "Admin"}),
    );
    let message = api_error(create_ls(&api, &bad_pattern).await);
    assert!(
        message.contains("spec.learnerId") && message.contains("spec.vaultRole"),
        "{message}"
    );
}

/// Applies deploy/'s devenv-pod-developer-label policy, bound to
/// `namespace` only (the deployed binding names `devenv`), and waits until
/// the API server enforces it: a dry-run status relabel of `probe` (a
/// devenv pod labelled for alice) is refused.
async fn bind_pod_label_policy(client: &kube::Client, namespace: &str, probe: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let docs: Vec<Value> =
        devenv_manager::yaml::from_yaml_stream(&testbed::fixture("deploy/admission-policy.yaml"))
            .unwrap();
    let policy = docs
        .iter()
        .find(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                && d["metadata"]["name"] == "devenv-pod-developer-label"
        })
        .expect("the policy in deploy/");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(policy.clone()).unwrap();
    let apply = PatchParams::apply("e2e-webhook").force();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .patch("devenv-pod-developer-label", &apply, &Patch::Apply(&policy))
        .await
        .unwrap();
    let name = format!("devenv-pod-developer-label-{namespace}");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": "devenv-pod-developer-label",
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        }
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .patch(&name, &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let relabel = json!({"metadata": {"labels": {"developer": "bob"}}});
    for _ in 0..600 {
        if let Err(kube::Error::Api(s)) = pods
            .patch_status(probe, &dry, &Patch::Merge(&relabel))
            .await
            && s.message.contains("may not be changed or removed")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the API server never enforced devenv-pod-developer-label");
}

/// The API server keeps metadata changes made through `pods/status`, which
/// the webhook is not asked about: the developer label is kept by deploy/'s
/// ValidatingAdmissionPolicy, through every subresource.
#[tokio::test]
async fn the_developer_label_cannot_be_changed_through_pods_status() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let r = Registered::new(bed, "status").await;
    bed.create_service_account(&r.namespace, "devenv-alice")
        .await;
    let stored = r
        .pods()
        .create(
            &PostParams::default(),
            &devenv_pod("ws", "devenv-alice", None),
        )
        .await
        .unwrap();
    assert_eq!(stored.metadata.labels.unwrap()["developer"], "alice");
    r.pods()
        .create(
            &PostParams::default(),
            &devenv_pod("plain", "default", Some("alice")),
        )
        .await
        .unwrap();

    // The hole: without the policy, a status patch relabels the pod (dry run).
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let relabel = json!({"metadata": {"labels": {"developer": "bob"}}});
    let moved = r
        .pods()
        .patch_status("ws", &dry, &Patch::Merge(&relabel))
        .await
        .expect("the API server alone takes a relabel through pods/status");
    assert_eq!(moved.metadata.labels.unwrap()["developer"], "bob");

    bind_pod_label_policy(&r.client, &r.namespace, "ws").await;
    let webhook_calls = r.admissions("mutate-pods").await;

    let message = api_error(
        r.pods()
            .patch_status("ws", &PatchParams::default(), &Patch::Merge(&relabel))
            .await,
    );
    assert!(
        message.contains("metadata.labels.developer: may not be changed or removed on a devenv pod (was \"alice\", through pods/status)"),
        "{message}"
    );
    let unlabel = json!({"metadata": {"labels": {"developer": null}}});
    let message = api_error(
        r.pods()
            .patch_status("ws", &PatchParams::default(), &Patch::Merge(&unlabel))
            .await,
    );
    assert!(
        message.contains("may not be changed or removed"),
        "{message}"
    );
    // Through the pod itself too, whatever the webhook says first.
    let message = api_error(
        r.pods()
            .patch("ws", &PatchParams::default(), &Patch::Merge(&relabel))
            .await,
    );
    assert!(message.contains("may not be changed"), "{message}");

    // What the kubelet writes through pods/status still goes through, and
    // so do other labels.
    let status = json!({
        "metadata": {"labels": {"team": "a"}},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    });
    r.pods()
        .patch_status("ws", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let now = r.pods().get("ws").await.unwrap();
    let labels = now.metadata.labels.unwrap();
    assert_eq!(
        (labels["developer"].as_str(), labels["team"].as_str()),
        ("alice", "a")
    );
    // A pod that is no devenv pod is not the policy's business.
    r.pods()
        .patch_status("plain", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    // The status writes never reached the webhook: the policy refused them.
    // (The relabel of the pod itself did.)
    assert_eq!(r.admissions("mutate-pods").await, webhook_calls + 1);

    let _ =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>::all(
            r.client.clone(),
        )
        .delete(
            &format!("devenv-pod-developer-label-{}", r.namespace),
            &DeleteParams::default(),
        )
        .await;
    r.unregister().await;
}

/// Every way of writing the token path, every path under it, `subPath`
/// mounts, and projected volumes under our name with a source beside ours:
/// all refused by the API server (through the webhook), none stored.
#[tokio::test]
async fn every_mount_path_variant_and_foreign_projection_is_refused() {
    let Some(bed) = local_bed().await else {
        return;
    };
    let r = Registered::new(bed, "mounts").await;
    bed.create_service_account(&r.namespace, "devenv-alice")
        .await;
    let with = |volumes: Value, mounts: Value| -> Pod {
        let mut pod = serde_json::to_value(devenv_pod("ws", "devenv-alice", None)).unwrap();
        pod["spec"]["volumes"] = volumes;
        pod["spec"]["containers"][0]["volumeMounts"] = mounts;
        serde_json::from_value(pod).unwrap()
    };
    let mine = json!([{"name": "mine", "emptyDir": {}}]);
    let mut cases = Vec::new();
    for path in [
        "/var/run/secrets/tokens",
        "/var/run/secrets/tokens/",
        "/var/run/secrets//tokens",
        "/var/run/secrets/./tokens",
        "/var/run/other/../secrets/tokens",
        "/var/run/secrets/tokens/ca.crt",
    ] {
        cases.push((
            format!("mount at {path}"),
            with(mine.clone(), json!([{"name": "mine", "mountPath": path}])),
            "at or under /var/run/secrets/tokens",
        ));
    }
    cases.push((
        "subPath mount of the token file".into(),
        with(
            mine.clone(),
            json!([{"name": "mine", "mountPath": "/var/run/secrets/tokens/devenv-manager", "subPath": "token"}]),
        ),
        "at or under /var/run/secrets/tokens",
    ));
    let token =
        json!({"serviceAccountToken": {"path": "devenv-manager", "audience": "devenv-manager"}});
    for (what, extra) in [
        (
            "a secret beside our token",
            json!({"secret": {"name": "stolen"}}),
        ),
        (
            "every key of our CA map",
            json!({"configMap": {"name": "devenv-manager-ca"}}),
        ),
    ] {
        cases.push((
            what.to_string(),
            with(
                json!([{"name": "devenv-manager-token", "projected": {"sources": [token, extra]}}]),
                json!([]),
            ),
            "is not the devenv-manager token projection",
        ));
    }
    for (what, pod, expected) in cases {
        let message = api_error(r.pods().create(&PostParams::default(), &pod).await);
        assert!(
            message.contains("denied the request") && message.contains(expected),
            "{what}: {message}"
        );
    }
    assert!(
        r.pods().get_opt("ws").await.unwrap().is_none(),
        "nothing stored"
    );
    // Beside the path, a mount is fine.
    r.pods()
        .create(
            &PostParams::default(),
            &with(
                mine,
                json!([{"name": "mine", "mountPath": "/var/run/secrets/tokens-cache"}]),
            ),
        )
        .await
        .unwrap();
    r.unregister().await;
}
