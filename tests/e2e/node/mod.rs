//! End-to-end tests on the test bed's real node (`devenv_testbed::node`):
//! pods that run, tokens a kubelet mounts, `devenv` inside a devenv pod,
//! learner namespaces checked with real packets, the manager as its own
//! Deployment (`kubectl apply -k deploy/`), and the chart installed, tested,
//! upgraded and uninstalled with `helm`. One node serves every test of this
//! module.

mod deployment;
mod helm;
mod learners;
mod pods;

use devenv_testbed::node::{self, Node};
use devenv_testbed::{self as testbed, binaries};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

/// The node of this test process, started by the first test that asks.
async fn shared() -> Option<&'static Node> {
    node::shared(binaries!()).await
}

/// Held by the tests that work in the README's fixed namespace `devenv`
/// (the seed StatefulSet and `deploy/` as it is): each registers its own
/// manager's webhook for that namespace and publishes its own CA there, so
/// at most one of them runs at a time. Every other node test has namespaces
/// of its own and runs alongside.
async fn devenv_namespace() -> MutexGuard<'static, ()> {
    static DEVENV: Mutex<()> = Mutex::const_new(());
    DEVENV.lock().await
}

/// Waits (best effort, for cleanup: the output is not checked) until the
/// manager pods an install started are gone from `devenv-system`.
fn wait_until_manager_pods_are_gone(node: &Node) {
    let _ = node.kubectl(&[
        "wait",
        "--for=delete",
        "pod",
        "-n",
        "devenv-system",
        "-l",
        "app.kubernetes.io/name=devenv-manager",
        "--timeout=120s",
    ]);
}

/// Creates LearnerSpace `name` for `learner` (admitted by the manager's
/// validating webhook, through its Service) and waits until it is Ready.
async fn learner_space_ready(node: &Node, name: &str, learner: &str) {
    let resource = testbed::manifests::learnerspaces();
    let api =
        Api::<DynamicObject>::namespaced_with(node.bed.client().await, "aivo-system", &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1",
        "kind": "LearnerSpace",
        "metadata": {"name": name},
        "spec": {"learnerId": learner},
    }))
    .unwrap();
    // The validating webhook (through the Service) admits it.
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating LearnerSpace {name}: {e}"));
    testbed::eventually(&format!("LearnerSpace {name} Ready"), || async {
        let current = api.get(name).await.ok()?;
        (current.data["status"]["phase"] == "Ready").then_some(())
    })
    .await;
}

/// The README's developer account (deploy/users/devenv-eywalker.yaml),
/// applied.
fn apply_the_developer_account(node: &Node) {
    node.kubectl_ok(
        &[
            "apply",
            "-f",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/users/devenv-eywalker.yaml"
            ),
        ],
        None,
    );
}
