//! The chart's hooks (docs/helm.md): the `helm test` Pod and what it needs,
//! the pre-delete Job that deletes the webhook configurations and its
//! identity. Each hook object is deleted when its hook succeeds and before
//! the next run, the supporting objects come first (lower weights), and the
//! pods are hardened exactly as the Deployment's.

use serde_json::{Value, json};

use crate::{find, rendered};

/// The hook objects of `event`.
fn hooks(docs: &[Value], event: &str) -> Vec<Value> {
    docs.iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"] == event)
        .cloned()
        .collect()
}

fn weight(doc: &Value) -> i64 {
    doc["metadata"]["annotations"]["helm.sh/hook-weight"]
        .as_str()
        .expect("a hook weight")
        .parse()
        .unwrap()
}

/// The pod spec of a Pod or of a Job's template.
fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => &doc["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

/// Every hook is deleted on success and before it is created again; the
/// pod (or Job) runs after the objects it needs; its security contexts are
/// the Deployment's.
fn assert_well_formed(docs: &[Value], event: &str, runner: &str) {
    let hooks = hooks(docs, event);
    assert!(hooks.len() >= 2, "{event}: {hooks:?}");
    let manager = &find(docs, "Deployment", "devenv-manager")["spec"]["template"]["spec"];
    for hook in &hooks {
        assert_eq!(
            hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded",
            "{hook}"
        );
        if hook["kind"] == runner {
            let spec = pod_spec(hook);
            assert_eq!(spec["securityContext"], manager["securityContext"]);
            assert_eq!(
                spec["containers"][0]["securityContext"],
                manager["containers"][0]["securityContext"]
            );
            assert_eq!(
                spec["containers"][0]["image"],
                manager["containers"][0]["image"]
            );
            assert_eq!(spec["restartPolicy"], "Never");
        } else {
            let runner_weight = hooks.iter().find(|h| h["kind"] == runner).map(weight);
            assert!(Some(weight(hook)) < runner_weight, "{hook}");
        }
    }
}

#[test]
fn the_test_hook_checks_from_inside_with_only_the_ca() {
    let Some(helm) = crate::helm() else { return };
    let docs = rendered(helm, &[]);
    assert_well_formed(&docs, "test", "Pod");
    let pod = find(&docs, "Pod", "devenv-manager-test");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    // Only ca.crt of the Secret (self-managed, it also holds ca.key).
    assert_eq!(
        pod["spec"]["volumes"][0]["secret"],
        json!({"secretName": "devenv-manager-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}],
               "defaultMode": 288})
    );
    let args = pod["spec"]["containers"][0]["args"].as_array().unwrap();
    assert_eq!(args[0], "check");
    // The metrics Service it names selects the manager's metrics port.
    let metrics = find(&docs, "Service", "devenv-manager-test-metrics");
    assert!(args.contains(&json!(
        "http://devenv-manager-test-metrics.devenv-system.svc:9090"
    )));
    assert_eq!(
        metrics["spec"]["selector"],
        json!({"app.kubernetes.io/name": "devenv-manager"})
    );
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "metrics");
    // The NetworkPolicy lets this Pod, and only it, reach the pod API.
    let policy = find(&docs, "NetworkPolicy", "devenv-manager-test");
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "devenv-manager-test"}}}],
                "ports": [{"port": "api", "protocol": "TCP"}]}])
    );
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "devenv-manager-test"
    );
    // No policy to open when there is none.
    let open = rendered(helm, &["--set", "networkPolicy.enabled=false"]);
    assert!(
        !open.iter().any(|d| d["kind"] == "NetworkPolicy"),
        "networkPolicy.enabled=false"
    );
}

#[test]
fn the_pre_delete_hook_may_only_delete_the_two_webhook_configurations() {
    let Some(helm) = crate::helm() else { return };
    let docs = rendered(helm, &[]);
    assert_well_formed(&docs, "pre-delete", "Job");
    let role = find(&docs, "ClusterRole", "devenv-manager-uninstall");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                "verbs": ["delete"], "resourceNames": ["devenv-manager"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding", "devenv-manager-uninstall");
    assert_eq!(binding["roleRef"]["name"], "devenv-manager-uninstall");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "devenv-manager-uninstall",
                "namespace": "devenv-system"}])
    );
    find(&docs, "ServiceAccount", "devenv-manager-uninstall");
    let job = find(&docs, "Job", "devenv-manager-uninstall");
    let spec = pod_spec(job);
    assert_eq!(spec["serviceAccountName"], "devenv-manager-uninstall");
    assert_eq!(spec["containers"][0]["args"], json!(["unregister"]));
}
