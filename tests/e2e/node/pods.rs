//! End-to-end tests on the test bed's real node (`devenv_testbed::node`):
//! pods that run, tokens a kubelet mounts, `devenv` inside a devenv pod, and
//! what DELETE answers for a pod removed at once and for one that terminates
//! gracefully.

use devenv_testbed as testbed;
use devenv_testbed::manager::Manager;
use devenv_testbed::node::{BUSYBOX, Node, WORKSPACE};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::{Value, json};

/// A pod of `developer` in `ns` running `script` in busybox.
fn pod(name: &str, developer: &str, image: &str, script: &str, grace: i64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": format!("devenv-{developer}"),
            "terminationGracePeriodSeconds": grace,
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .unwrap()
}

async fn call(manager: &Manager, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let response = manager
        .http()
        .request(method, format!("{}{path}", manager.api_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("calling the pod API");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Exits 0 a few seconds after SIGTERM: graceful termination takes time.
const GRACEFUL: &str = "trap 'sleep 2; exit 0' TERM; while true; do sleep 1; done";

#[tokio::test]
async fn delete_is_200_for_a_pod_removed_at_once_and_202_while_a_running_pod_terminates() {
    let Some(node) = super::shared().await else {
        return;
    };
    let ns = node.namespace("node-delete").await;
    let operator_ns = node.namespace("node-delete-op").await;
    let manager = Manager::start(node, |c| {
        c.devenv.namespaces = vec![ns.clone()];
        c.operator.namespace = operator_ns.clone();
    })
    .await;
    node.bed.create_service_account(&ns, "devenv-alice").await;
    let token = node
        .bed
        .token(&ns, "devenv-alice", "devenv-manager", 3600)
        .await;

    // Never scheduled (no node has the label): the API server removes it at
    // once and answers with the Pod, grace period 0.
    let mut parked = pod("parked", "alice", BUSYBOX, "sleep 3600", 30);
    parked.spec.as_mut().unwrap().node_selector =
        Some([("devenv-testbed/nowhere".to_owned(), "true".to_owned())].into());
    node.create_pod(&ns, &parked).await;
    node.create_pod(&ns, &pod("running", "alice", BUSYBOX, GRACEFUL, 30))
        .await;
    node.wait_running(&ns, "running").await;
    testbed::eventually("both pods in the pod API", || async {
        let (status, body) = call(&manager, reqwest::Method::GET, "/api/v1/pods", &token).await;
        let names: Vec<&str> = body["items"]
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        (status == 200 && names == ["parked", "running"]).then_some(())
    })
    .await;

    let (status, body) = call(
        &manager,
        reqwest::Method::DELETE,
        &format!("/api/v1/pods/{ns}/parked"),
        &token,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("Deleted")),
        "{body}"
    );
    let pods = Api::<Pod>::namespaced(node.bed.client().await, &ns);
    assert!(pods.get_opt("parked").await.unwrap().is_none());

    let (status, body) = call(
        &manager,
        reqwest::Method::DELETE,
        &format!("/api/v1/pods/{ns}/running"),
        &token,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("Terminating")),
        "{body}"
    );
    // Still there, terminating, until the kubelet has stopped it.
    let terminating = pods.get_opt("running").await.unwrap();
    assert!(
        terminating.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the running pod should still exist, marked for deletion"
    );
    node.wait_gone(&ns, "running").await;
    manager.stop().await;
}

/// The seed's StatefulSet (deploy/examples/devenv-statefulset.yaml) with
/// the test bed's workspace image, which has `devenv` on its PATH.
fn seed_statefulset() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/devenv-statefulset.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let image = "registry.example.com/devenv/workspace:2026.11.1";
    assert!(text.contains(image), "{path} no longer names {image}");
    text.replace(image, WORKSPACE)
}

/// A hostPath PersistentVolume bound ahead to the StatefulSet's claim (the
/// test bed has no storage provisioner).
fn home_volume(node: &Node) -> String {
    let path = node.dir.join("pv-home-eywalker");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": node.unique("home-eywalker")},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": path, "type": "Directory"},
            "claimRef": {"namespace": "devenv", "name": "home-devenv-eywalker-0"},
            "persistentVolumeReclaimPolicy": "Retain",
        },
    })
    .to_string()
}

/// Lines of `devenv pods list --remote` (a table) naming `pod`.
fn lists(table: &str, pod: &str) -> bool {
    table
        .lines()
        .skip(1)
        .any(|line| line.split_whitespace().nth(1) == Some(pod))
}

// Multi-threaded: kubectl runs as blocking child processes while the
// in-process manager keeps serving on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devenv_in_the_seed_statefulset_lists_itself_and_deletes_a_sibling_with_no_flags() {
    let Some(node) = super::shared().await else {
        return;
    };
    let _devenv = super::devenv_namespace().await;
    let operator_ns = node.namespace("node-devenv-op").await;
    node.bed.ensure_namespace("devenv").await;
    node.wait_for_service_account("devenv", "default").await;
    let manager = Manager::start(node, |c| {
        c.devenv.namespaces = vec!["devenv".to_owned()];
        c.operator.namespace = operator_ns.clone();
    })
    .await;
    manager.wait_for_ca_configmaps().await;

    // As the README says: the developer's account, then the workspace.
    super::apply_the_developer_account(node);
    node.kubectl_ok(&["apply", "-f", "-"], Some(&home_volume(node)));
    node.kubectl_ok(&["apply", "-f", "-"], Some(&seed_statefulset()));
    let ws = node.wait_running("devenv", "devenv-eywalker-0").await;
    let container = &ws.spec.as_ref().unwrap().containers[0];
    assert!(
        container
            .env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "DEVENV_MANAGER_URL" && e.value.as_deref() == Some(&manager.api_url)),
        "the webhook injects the manager's URL: {:?}",
        container.env
    );

    // No flags, no environment of its own: the injected URL, the projected
    // token and the CA from the projected ConfigMap.
    let (code, out, err) = node
        .exec(
            "devenv",
            "devenv-eywalker-0",
            &["devenv", "pods", "list", "--remote"],
        )
        .await;
    assert_eq!(code, 0, "devenv pods list --remote: {err}");
    assert!(lists(&out, "devenv-eywalker-0"), "{out}");

    // A sibling: another pod of the same developer.
    node.create_pod(
        "devenv",
        &pod("eywalker-scratch", "eywalker", WORKSPACE, GRACEFUL, 30),
    )
    .await;
    // Another developer's workspace.
    node.bed
        .create_service_account("devenv", "devenv-bob")
        .await;
    node.create_pod("devenv", &pod("bob-ws", "bob", WORKSPACE, GRACEFUL, 30))
        .await;
    node.wait_running("devenv", "eywalker-scratch").await;
    node.wait_running("devenv", "bob-ws").await;

    let listed = testbed::eventually("the sibling in eywalker's list", || async {
        let (code, out, _) = node
            .exec(
                "devenv",
                "devenv-eywalker-0",
                &["devenv", "pods", "list", "--remote"],
            )
            .await;
        (code == 0 && lists(&out, "eywalker-scratch")).then_some(out)
    })
    .await;
    assert!(
        !lists(&listed, "bob-ws"),
        "bob's pod in eywalker's list: {listed}"
    );

    // The same command in bob's pod sees bob's pod only.
    let (code, out, err) = node
        .exec("devenv", "bob-ws", &["devenv", "pods", "list", "--remote"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(lists(&out, "bob-ws"), "{out}");
    assert!(!lists(&out, "devenv-eywalker-0"), "{out}");
    assert!(!lists(&out, "eywalker-scratch"), "{out}");
    // Nor can bob delete eywalker's pod: 404, exactly like a missing one.
    let (code, _, err) = node
        .exec(
            "devenv",
            "bob-ws",
            &[
                "devenv",
                "pods",
                "delete",
                "eywalker-scratch",
                "--remote",
                "-n",
                "devenv",
            ],
        )
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");

    // Deleting the sibling from the workspace: it runs, so it terminates.
    let (code, out, err) = node
        .exec(
            "devenv",
            "devenv-eywalker-0",
            &[
                "devenv",
                "pods",
                "delete",
                "eywalker-scratch",
                "--remote",
                "-n",
                "devenv",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pod devenv/eywalker-scratch is terminating"),
        "{out}"
    );
    node.wait_gone("devenv", "eywalker-scratch").await;
    let pods = Api::<Pod>::namespaced(node.bed.client().await, "devenv");
    assert!(pods.get_opt("bob-ws").await.unwrap().is_some());

    node.kubectl_ok(
        &[
            "delete",
            "statefulset",
            "-n",
            "devenv",
            "devenv-eywalker",
            "--wait=false",
        ],
        None,
    );
    manager.stop().await;
}
