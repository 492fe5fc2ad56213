//! The chart (`charts/devenv-manager`) installed with `helm` on the test
//! bed's real node, from the image holding the binaries under test, as
//! docs/helm.md says: `helm install`, then a devenv pod injected, a
//! LearnerSpace Ready, a pod listed through the pod API from inside a devenv
//! pod; `helm test` passes (its Pod checks the webhook, the pod API and the
//! metrics from inside the cluster); `helm upgrade` with a changed
//! configuration rolls the manager onto it; `helm uninstall` leaves no
//! webhook configuration behind (the pre-delete hook) and keeps the CRD and
//! the LearnerSpaces.
//!
//! The other node tests share the node: the namespaces and the CRD may be
//! there already (kubectl-made, by them or by `deploy/` in
//! `deployment.rs`), so whatever of the chart exists is adopted the way
//! Helm documents (its ownership label and annotations) instead of being
//! created; what the release leaves in `devenv` is removed at the end
//! ([`Release`]), and the LearnerSpace it kept is deleted by hand (no
//! operator is left to release its tombstone finalizer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use devenv_testbed as testbed;
use devenv_testbed::node::{self, Node, WORKSPACE};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/devenv-manager");
const RELEASE: &str = "devenv-manager";
const NAMESPACE: &str = "devenv-system";
/// `helm uninstall` of the release, waiting for what it deletes.
const UNINSTALL: [&str; 7] = [
    "uninstall",
    RELEASE,
    "-n",
    NAMESPACE,
    "--wait",
    "--timeout",
    "3m",
];
const LEARNERSPACE: &str = "helm-learner";
const WORKSPACE_POD: &str = "helm-eywalker-ws";

/// `helm` (scripts/helm.sh's build); `None` after a `skipping` line.
fn helm() -> Option<PathBuf> {
    let found = testbed::helm_candidates("helm", "DEVENV_HELM")
        .into_iter()
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("DEVENV_REQUIRE_TESTBED").as_deref() == Ok("1") {
            panic!("DEVENV_REQUIRE_TESTBED=1 but helm is not built: run scripts/helm.sh");
        }
        testbed::skip("helm not built (run scripts/helm.sh)");
    }
    found
}

/// The values this test installs with: the image under test, never pulled,
/// one replica (the node is small; two are deployment.rs's concern).
fn values() -> Vec<String> {
    let (repository, tag) = node::MANAGER_IMAGE
        .rsplit_once(':')
        .expect("MANAGER_IMAGE has a tag");
    [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".to_string(),
        "replicas=1".to_string(),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

/// Runs helm as the node's admin; its output, or panics with it.
fn run_helm(helm: &Path, node: &Node, args: &[&str]) -> String {
    let output = helm_output(helm, node, args);
    assert!(
        output.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn helm_output(helm: &Path, node: &Node, args: &[&str]) -> std::process::Output {
    Command::new(helm)
        .arg("--kubeconfig")
        .arg(node.kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running helm")
}

/// The release, removed when the test ends, passed or not: `helm
/// uninstall` (a no-op once the test did it), then whatever acts on other
/// tests' pods in `devenv` (the webhook configurations, the manager pods),
/// the workspace pod and this test's LearnerSpace (its finalizer dropped:
/// no operator is left to release it).
struct Release<'a> {
    node: &'a Node,
    helm: PathBuf,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        // Best effort, never a second panic: outputs are not checked.
        let _ = helm_output(&self.helm, self.node, &UNINSTALL);
        let delete = ["delete", "--ignore-not-found", "--wait=false"];
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let _ = self.node.kubectl(&[&delete[..], &[kind, RELEASE]].concat());
        }
        let _ = self.node.kubectl(
            &[
                &delete[..],
                &["-n", "devenv", "pod", WORKSPACE_POD, "--grace-period=0"],
            ]
            .concat(),
        );
        let _ = self.node.kubectl(&[
            "patch",
            "-n",
            "aivo-system",
            "learnerspace",
            LEARNERSPACE,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let _ = self.node.kubectl(
            &[
                &delete[..],
                &["-n", "aivo-system", "learnerspace", LEARNERSPACE],
            ]
            .concat(),
        );
        let learner_ns = devenv_manager::names::learner_namespace("helm.learner");
        let _ = self
            .node
            .kubectl(&[&delete[..], &["namespace", &learner_ns]].concat());
        super::wait_until_manager_pods_are_gone(self.node);
    }
}

// Multi-threaded: helm and kubectl run as blocking child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_test_upgrade_and_uninstall_on_the_node() {
    let Some(node) = super::shared().await else {
        return;
    };
    let Some(helm) = helm() else { return };
    // The release's webhooks and CA act on `devenv`, like deploy/'s.
    let _devenv = super::devenv_namespace().await;
    let _release = Release {
        node,
        helm: helm.clone(),
    };
    adopt_what_exists(&helm, node);
    let mut install = vec![
        "install",
        RELEASE,
        CHART,
        "-n",
        NAMESPACE,
        "--create-namespace",
    ];
    install.extend(["--wait", "--timeout", "5m"]);
    let values = values();
    install.extend(values.iter().map(String::as_str));
    run_helm(&helm, node, &install);

    assert_a_devenv_pod_is_injected_and_listed_through_the_pod_api(node).await;
    super::learner_space_ready(node, LEARNERSPACE, "helm.learner").await;
    let out = run_helm(
        &helm,
        node,
        &["test", RELEASE, "-n", NAMESPACE, "--timeout", "3m"],
    );
    assert!(out.contains("Phase:          Succeeded"), "{out}");
    assert_upgrade_rolls_onto_the_new_configuration(&helm, node).await;
    assert_uninstall_removes_the_webhooks_and_keeps_the_learnerspaces(&helm, node).await;
}

/// Objects of the chart that exist already (the namespaces, the CRD and
/// whatever deploy/ left: kubectl-made) get Helm's ownership metadata, so
/// that `helm install` adopts them instead of refusing to overwrite them.
fn adopt_what_exists(helm: &Path, node: &Node) {
    // The release's objects; hooks are made and deleted by Helm each run.
    let mut args = vec!["template", RELEASE, CHART, "-n", NAMESPACE, "--no-hooks"];
    let values = values();
    args.extend(values.iter().map(String::as_str));
    let rendered = run_helm(helm, node, &args);
    let existing = node.kubectl_ok(
        &["get", "-f", "-", "--ignore-not-found", "-o", "json"],
        Some(&rendered),
    );
    // A List, one object alone, or nothing at all.
    let existing: Value = serde_json::from_str(&existing).unwrap_or(json!({"items": []}));
    let objects = match existing["kind"].as_str() {
        Some("List") | None => existing["items"].as_array().cloned().unwrap_or_default(),
        Some(_) => vec![existing],
    };
    let identities: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({"apiVersion": o["apiVersion"], "kind": o["kind"],
                   "metadata": {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"]}})
        })
        .collect();
    if identities.is_empty() {
        return;
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": identities}).to_string();
    node.kubectl_ok(
        &[
            "label",
            "-f",
            "-",
            "--overwrite",
            "app.kubernetes.io/managed-by=Helm",
        ],
        Some(&list),
    );
    node.kubectl_ok(
        &[
            "annotate",
            "-f",
            "-",
            "--overwrite",
            &format!("meta.helm.sh/release-name={RELEASE}"),
            &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
        ],
        Some(&list),
    );
}

/// A devenv pod is injected by the release's webhook (so its caBundle was
/// filled in), and from inside it `devenv pods list --remote` lists it
/// through the pod API. The node has no cluster DNS: the pod resolves the
/// `managerUrl` the webhook gave it (the Service's name) through a host
/// alias to the Service's ClusterIP.
async fn assert_a_devenv_pod_is_injected_and_listed_through_the_pod_api(node: &Node) {
    super::apply_the_developer_account(node);
    node.wait_for_service_account("devenv", "default").await;
    let service = Api::<Service>::namespaced(node.bed.client().await, NAMESPACE)
        .get(RELEASE)
        .await
        .expect("Service devenv-manager");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let workspace: Pod = serde_json::from_value(json!({
        "metadata": {"name": WORKSPACE_POD},
        "spec": {
            "serviceAccountName": "devenv-eywalker",
            "terminationGracePeriodSeconds": 0,
            "hostAliases": [{"ip": cluster_ip,
                             "hostnames": ["devenv-manager.devenv-system.svc.cluster.local"]}],
            "containers": [{"name": "main", "image": WORKSPACE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
        },
    }))
    .unwrap();
    // Until the Lease holder has written the caBundle the webhook fails
    // closed: retried.
    let pods = Api::<Pod>::namespaced(node.bed.client().await, "devenv");
    let created = testbed::eventually("the devenv pod admitted", || async {
        pods.create(&PostParams::default(), &workspace).await.ok()
    })
    .await;
    let labels = created.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("developer").map(String::as_str),
        Some("eywalker")
    );
    node.wait_running("devenv", WORKSPACE_POD).await;
    testbed::eventually("the pod listed through the pod API", || async {
        let (code, out, _) = node
            .exec(
                "devenv",
                WORKSPACE_POD,
                &["devenv", "pods", "list", "--remote"],
            )
            .await;
        (code == 0 && out.lines().any(|l| l.contains(WORKSPACE_POD))).then_some(())
    })
    .await;
}

/// The manager pods now, by name.
async fn manager_pods(node: &Node) -> Vec<String> {
    Api::<Pod>::namespaced(node.bed.client().await, NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=devenv-manager"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// `helm upgrade --reuse-values` with `config.logLevel=debug` and
/// `rolloutOnConfigChange`: the ConfigMap says debug, a new pod replaced
/// the old one, and it logs at debug.
async fn assert_upgrade_rolls_onto_the_new_configuration(helm: &Path, node: &Node) {
    let before = manager_pods(node).await;
    run_helm(
        helm,
        node,
        &[
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "config.logLevel=debug",
            "--set",
            "rolloutOnConfigChange=true",
            "--wait",
            "--timeout",
            "5m",
        ],
    );
    let config = Api::<ConfigMap>::namespaced(node.bed.client().await, NAMESPACE)
        .get("devenv-manager-config")
        .await
        .unwrap();
    let text = config.data.unwrap_or_default()["config.yaml"].clone();
    assert!(text.contains("logLevel: debug"), "{text}");
    let deployments = Api::<Deployment>::namespaced(node.bed.client().await, NAMESPACE);
    testbed::eventually("the rollout done, the old pod gone", || async {
        let d = deployments.get(RELEASE).await.ok()?;
        let status = d.status?;
        let now = manager_pods(node).await;
        (status.updated_replicas == Some(1)
            && status.ready_replicas == Some(1)
            && now.len() == 1
            && !before.contains(&now[0]))
        .then_some(())
    })
    .await;
    let pod = manager_pods(node).await.remove(0);
    testbed::eventually("the new pod logs at debug", || async {
        let logs = node.kubectl(&["logs", "-n", NAMESPACE, &pod]);
        String::from_utf8_lossy(&logs.stdout)
            .contains(r#""level":"DEBUG""#)
            .then_some(())
    })
    .await;
}

/// `helm uninstall`: the pre-delete hook deleted both webhook
/// configurations (and was cleaned up itself), the Deployment is gone, the
/// CRD and the LearnerSpace stay.
async fn assert_uninstall_removes_the_webhooks_and_keeps_the_learnerspaces(
    helm: &Path,
    node: &Node,
) {
    // --debug: Helm logs what it found already gone.
    let output = helm_output(helm, node, &[&UNINSTALL[..], &["--debug"]].concat());
    let (out, log) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "helm uninstall: {out}{log}");
    assert!(out.contains("kept due to the resource policy"), "{out}");
    // When Helm 3 came to them (last), the hook had deleted them already.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(
            log.lines().any(
                |l| l.contains(r#"Ignoring delete failure for "devenv-manager""#)
                    && l.contains(&format!("Kind={kind}"))
            ),
            "{kind} not deleted by the pre-delete hook first:\n{log}"
        );
    }
    let client = node.bed.client().await;
    let name = devenv_manager::webhook::registration::CONFIGURATION_NAME;
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    assert!(mutating.get_opt(name).await.unwrap().is_none());
    assert!(validating.get_opt(name).await.unwrap().is_none());
    assert!(
        Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
            .get_opt(RELEASE)
            .await
            .unwrap()
            .is_none()
    );
    // The hook's Job and identity went when it succeeded.
    assert!(
        Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), NAMESPACE)
            .get_opt("devenv-manager-uninstall")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt("learnerspaces.aivo.dev")
            .await
            .unwrap()
            .is_some()
    );
    let resource = testbed::manifests::learnerspaces();
    let spaces = Api::<DynamicObject>::namespaced_with(client.clone(), "aivo-system", &resource);
    let kept = spaces
        .get(LEARNERSPACE)
        .await
        .expect("the LearnerSpace kept");
    assert_eq!(kept.data["status"]["phase"], "Ready");
    // Deleted now, it waits on its tombstone finalizer: no operator runs.
    spaces
        .delete(LEARNERSPACE, &DeleteParams::default())
        .await
        .unwrap();
    let waiting = spaces.get(LEARNERSPACE).await.expect("still there");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers.as_deref(),
        Some(&[devenv_manager::crd::FINALIZER.to_string()][..])
    );
    // What an administrator does after uninstalling for good (docs/helm.md).
    spaces
        .patch(
            LEARNERSPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
}
