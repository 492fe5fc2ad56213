//! The manager as its own Deployment on the test bed's real node, installed
//! the way the README's "Install" says (`kubectl apply -k deploy/`, with
//! self-managed certificates), from an image holding the binaries under
//! test: both replicas Ready through their probes (so both serve the
//! certificate the Lease holder put in Secret devenv-manager-tls), as uid
//! 10001 with a read-only root; the API server reaching the webhook through
//! the Service (so the manager filled in the caBundle); a LearnerSpace going
//! Ready; the Lease handed over when the leader goes.
//! What of deploy/ acts on the namespace `devenv` is removed when it ends
//! ([`Installed`]): the other node tests share the node.

use std::process::Command;

use devenv_testbed as testbed;
use devenv_testbed::node::{self, Node, WORKSPACE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::json;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The manager pods, by name, that are Ready.
async fn ready_pods(node: &Node) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(node.bed.client().await, "devenv-system");
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=devenv-manager"))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

/// The uid and whether the root filesystem is read-only, of the process of
/// container `id` (a CRI id), read on the node itself.
fn process_of(node: &Node, id: &str) -> (String, bool) {
    let runc_root = node.dir.join("runc/k8s.io");
    let state = Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["state", id])
        .output()
        .unwrap();
    assert!(
        state.status.success(),
        "runc state {id}: {}",
        String::from_utf8_lossy(&state.stderr)
    );
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let pid = state["pid"].as_i64().expect("container pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_read_only = mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&"/")
            && fields
                .get(5)
                .is_some_and(|o| o.split(',').any(|o| o == "ro"))
    });
    (uid, root_read_only)
}

async fn lease_holder(node: &Node) -> Option<String> {
    Api::<Lease>::namespaced(node.bed.client().await, "aivo-system")
        .get_opt("devenv-manager-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// What of deploy/ acts on other tests' pods in the node's `devenv`
/// namespace, removed when the test ends: the webhook configurations, the
/// admission policies and the Deployment (whose managers would keep
/// publishing their CA there), waiting until its pods are gone. The
/// namespaces, the CRD and the RBAC stay: they change nothing for others.
struct Installed<'a> {
    node: &'a Node,
    webhooks: String,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let delete = ["delete", "--ignore-not-found", "--wait=false", "-f"];
        // Best effort, and never a second panic while unwinding from a
        // failed assertion: outputs are not checked.
        let _ = self
            .node
            .kubectl_stdin(&[&delete[..], &["-"]].concat(), &self.webhooks);
        for file in ["admission-policy.yaml", "deployment.yaml"] {
            let path = format!("{DEPLOY}/{file}");
            let _ = self.node.kubectl(&[&delete[..], &[path.as_str()]].concat());
        }
        super::wait_until_manager_pods_are_gone(self.node);
    }
}

// Multi-threaded: kubectl and devenv-manager run as blocking child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_runs_as_its_deployment_serves_the_api_server_and_hands_over_the_lease() {
    let Some(node) = super::shared().await else {
        return;
    };
    let _devenv = super::devenv_namespace().await;
    // Dropped (the test ended or failed) before `_devenv` is released.
    let _installed = install_as_the_readme_says(node);
    let pods = assert_both_replicas_run_as_10001_with_a_read_only_root(node).await;
    assert_the_manager_made_its_certificates(node).await;
    assert_the_api_server_calls_the_webhook_through_the_service(node).await;
    // The leader reconciles a LearnerSpace.
    super::learner_space_ready(node, "first", "first.learner").await;
    assert_the_lease_passes_when_the_leader_goes(node, &pods).await;
    // The new leader reconciles the next LearnerSpace; the first stays Ready.
    super::learner_space_ready(node, "second", "second.learner").await;
    assert_both_learner_spaces_ready(node).await;
    assert_deletion_finalizes_the_namespace_and_keeps_the_tombstone(node).await;
}

/// README "Install": `kubectl apply -k deploy/`, nothing else (the
/// manager makes its certificates and fills in both webhook
/// configurations' caBundle); what to remove afterwards.
fn install_as_the_readme_says(node: &Node) -> Installed<'_> {
    let webhooks = testbed::fixture("webhook-config/webhooks.yaml");
    let installed = Installed { node, webhooks };
    node.kubectl_ok(&["apply", "-k", DEPLOY], None);
    installed
}

/// Both replicas Ready through their probes, their processes (read on the
/// node) uid 10001 with a read-only root. Returns the two pods.
async fn assert_both_replicas_run_as_10001_with_a_read_only_root(node: &Node) -> Vec<Pod> {
    let deployments = Api::<Deployment>::namespaced(node.bed.client().await, "devenv-system");
    testbed::eventually("deploy/devenv-manager 2/2 ready", || async {
        let d = deployments.get("devenv-manager").await.ok()?;
        (d.status?.ready_replicas == Some(2)).then_some(())
    })
    .await;
    let pods = ready_pods(node).await;
    assert_eq!(
        pods.len(),
        2,
        "{:?}",
        pods.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(container.image, node::MANAGER_IMAGE);
        let id = container.container_id.as_deref().unwrap();
        let id = id.strip_prefix("containerd://").unwrap_or(id);
        let (uid, read_only) = process_of(node, id);
        assert_eq!(uid, "10001", "{:?} runs as uid {uid}", pod.metadata.name);
        assert!(
            read_only,
            "{:?} has a writable root filesystem",
            pod.metadata.name
        );
    }

    pods
}

/// The Lease holder made Secret devenv-manager-tls and wrote its CA into
/// both webhook configurations.
async fn assert_the_manager_made_its_certificates(node: &Node) {
    use devenv_manager::certs::material::{Material, same_certificates};
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let client = node.bed.client().await;
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "devenv-system")
            .get(devenv_manager::certs::SECRET_NAME)
            .await
            .expect("Secret devenv-manager-tls");
    let material = Material::from_data(&devenv_manager::certs::serving::secret_data(&secret))
        .expect("a usable CA and serving certificate");
    let name = devenv_manager::webhook::registration::CONFIGURATION_NAME;
    testbed::eventually("both caBundles filled in", || async {
        let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(name)
            .await
            .ok()?;
        let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .get(name)
            .await
            .ok()?;
        let mut bundles = mutating
            .webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle.clone())
            .chain(
                validating
                    .webhooks
                    .iter()
                    .flatten()
                    .map(|w| w.client_config.ca_bundle.clone()),
            );
        bundles
            .all(|b| b.is_some_and(|b| same_certificates(&b.0, &material.cas)))
            .then_some(())
    })
    .await;
}

/// The API server calls the webhook through the Service: a devenv pod is
/// injected, and runs.
async fn assert_the_api_server_calls_the_webhook_through_the_service(node: &Node) {
    super::apply_the_developer_account(node);
    node.wait_for_service_account("devenv", "default").await;
    let workspace: Pod = serde_json::from_value(json!({
        "metadata": {"name": "eywalker-ws"},
        "spec": {
            "serviceAccountName": "devenv-eywalker",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": WORKSPACE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
        },
    }))
    .unwrap();
    let created = Api::<Pod>::namespaced(node.bed.client().await, "devenv")
        .create(&PostParams::default(), &workspace)
        .await
        .expect("creating a devenv pod");
    let labels = created.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("developer").map(String::as_str),
        Some("eywalker")
    );
    let volumes = created
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_deref()
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| v.name == "devenv-manager-token"),
        "{volumes:?}"
    );
    node.wait_running("devenv", "eywalker-ws").await;
}

/// The leader (one of `pods`) goes: the Lease passes to a live replica.
async fn assert_the_lease_passes_when_the_leader_goes(node: &Node, pods: &[Pod]) {
    let holder = testbed::eventually("a lease holder", || lease_holder(node)).await;
    let leader = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .find(|name| holder.starts_with(&format!("{name}-")))
        .unwrap_or_else(|| panic!("the holder {holder} is none of the manager pods"));
    Api::<Pod>::namespaced(node.bed.client().await, "devenv-system")
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    // The holder is then a live replica: the other one, or the pod the
    // ReplicaSet started in the leader's place (whichever asked first), Ready.
    testbed::eventually("the Lease held by another ready replica", || async {
        let now = lease_holder(node).await?;
        if now.starts_with(&format!("{leader}-")) {
            return None;
        }
        ready_pods(node)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .any(|name| name != leader && now.starts_with(&format!("{name}-")))
            .then_some(())
    })
    .await;
}

/// Exactly the two LearnerSpaces of this test, both Ready.
async fn assert_both_learner_spaces_ready(node: &Node) {
    let resource = testbed::manifests::learnerspaces();
    let spaces =
        Api::<DynamicObject>::namespaced_with(node.bed.client().await, "aivo-system", &resource)
            .list(&ListParams::default())
            .await
            .unwrap();
    for space in &spaces.items {
        assert_eq!(
            space.data["status"]["phase"], "Ready",
            "{:?}",
            space.metadata.name
        );
    }
    assert_eq!(spaces.items.len(), 2);
}

/// Deleting a LearnerSpace: the tombstone is written and, with a real
/// controller-manager, the learner namespace is really finalized.
async fn assert_deletion_finalizes_the_namespace_and_keeps_the_tombstone(node: &Node) {
    let resource = testbed::manifests::learnerspaces();
    let learner_ns = devenv_manager::names::learner_namespace("first.learner");
    Api::<DynamicObject>::namespaced_with(node.bed.client().await, "aivo-system", &resource)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(node.bed.client().await);
    testbed::eventually(&format!("namespace {learner_ns} gone"), || async {
        matches!(namespaces.get_opt(&learner_ns).await, Ok(None)).then_some(())
    })
    .await;
    let tombstone = devenv_manager::names::tombstone_name("first.learner");
    let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        node.bed.client().await,
        "aivo-system",
    );
    let recorded = configmaps.get(&tombstone).await.expect("the tombstone");
    assert!(
        recorded
            .data
            .unwrap_or_default()
            .values()
            .any(|v| v.contains("first.learner")),
        "the tombstone names the learner"
    );
}
