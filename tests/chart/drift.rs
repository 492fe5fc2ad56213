//! The chart cannot drift from `deploy/`: with default values `helm template`
//! renders exactly the objects `kubectl kustomize deploy/` builds, and with
//! `certManager.enabled` those of `deploy/` plus the `deploy/cert-manager`
//! component. The release's objects, that is: the hooks (the `helm test`
//! Pod, the pre-delete Job, and what they need) are Helm's alone and left
//! out.

use std::collections::BTreeMap;

use devenv_manager::config::Config;
use devenv_testbed::repo_dir;
use serde_json::Value;

use crate::{NAMESPACE, id, kubectl, parse, rendered, run};

/// The labels and annotations Helm conventionally adds (the last: what
/// `crds.keep` and `namespaces.keep` set); nothing else is removed before
/// comparing.
const HELM_LABELS: [&str; 5] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/resource-policy",
];

/// Removes [`HELM_LABELS`] from the object's labels and annotations (an
/// emptied map goes too).
fn strip_helm_labels(doc: &mut Value) {
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["labels", "annotations"] {
        if let Some(map) = meta.get_mut(field).and_then(Value::as_object_mut) {
            for label in HELM_LABELS {
                map.remove(label);
            }
            if map.is_empty() {
                meta.remove(field);
            }
        }
    }
}

/// CEL expressions compared with their whitespace runs collapsed: kustomize
/// re-emits a folded (`>-`) scalar with more-indented lines with an extra
/// blank line, which CEL ignores (outside string literals, where none of
/// ours has a newline).
fn normalize_cel(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if let (true, Value::String(text)) =
                    (key == "expression" || key == "messageExpression", &mut *v)
                {
                    *text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                } else {
                    normalize_cel(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_cel),
        _ => {}
    }
}

/// The manager's configuration file in ConfigMap devenv-manager-config,
/// replaced by the configuration it loads to (every key, defaults filled
/// in): the chart's file names every key, `deploy/config.yaml` only those
/// it changes, and both must mean the same configuration.
fn effective_config(doc: &mut Value) {
    if doc["kind"] != "ConfigMap" || doc["metadata"]["name"] != "devenv-manager-config" {
        return;
    }
    let data = doc["data"].as_object_mut().expect("data");
    for (key, text) in data.iter_mut() {
        let config = Config::from_yaml(text.as_str().expect("a string"))
            .unwrap_or_else(|e| panic!("ConfigMap devenv-manager-config {key}: {e}"));
        config.validate().expect("a valid configuration");
        *text = serde_json::to_value(&config).unwrap();
    }
}

/// The objects by `kind/namespace/name`, normalized for comparison.
fn by_id(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for mut doc in docs {
        strip_helm_labels(&mut doc);
        normalize_cel(&mut doc);
        effective_config(&mut doc);
        let key = format!("{} {}", doc["apiVersion"].as_str().unwrap_or("?"), id(&doc));
        assert!(out.insert(key.clone(), doc).is_none(), "{key} twice");
    }
    out
}

/// Where two JSON values differ, as `path: kustomize ... helm ...` lines.
fn differences(kustomize: &Value, helm: &Value, path: &str, out: &mut Vec<String>) {
    match (kustomize, helm) {
        (Value::Object(k), Value::Object(h)) => {
            for (key, value) in k {
                let at = format!("{path}.{key}");
                match h.get(key) {
                    Some(other) => differences(value, other, &at, out),
                    None => out.push(format!("{at}: only in deploy/ ({value})")),
                }
            }
            for (key, value) in h {
                if !k.contains_key(key) {
                    out.push(format!("{path}.{key}: only in the chart ({value})"));
                }
            }
        }
        (Value::Array(k), Value::Array(h)) if k.len() == h.len() => {
            for (i, (a, b)) in k.iter().zip(h).enumerate() {
                differences(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (k, h) if k == h => {}
        // kustomize writes `0.0` as `0`; the API server stores the number.
        (Value::Number(k), Value::Number(h)) if k.as_f64() == h.as_f64() => {}
        (k, h) => out.push(format!("{path}: deploy/ has {k}, the chart {h}")),
    }
}

/// Every difference between kustomize's objects and the chart's.
fn compare(kustomize: Vec<Value>, helm: Vec<Value>) -> Vec<String> {
    let kustomize = by_id(kustomize);
    let helm = by_id(helm);
    let mut problems = Vec::new();
    for key in kustomize.keys().filter(|k| !helm.contains_key(*k)) {
        problems.push(format!("{key}: only in deploy/"));
    }
    for key in helm.keys().filter(|k| !kustomize.contains_key(*k)) {
        problems.push(format!("{key}: only in the chart"));
    }
    for (key, doc) in &kustomize {
        if let Some(other) = helm.get(key) {
            differences(doc, other, key, &mut problems);
        }
    }
    problems
}

/// Asserts that the chart's objects are kustomize's, naming every difference.
fn assert_same(what: &str, kustomize: Vec<Value>, helm: Vec<Value>) {
    assert!(
        kustomize.len() >= 20,
        "{what}: only {} objects",
        kustomize.len()
    );
    let problems = compare(kustomize, helm);
    assert!(
        problems.is_empty(),
        "{what}: the chart (charts/devenv-manager) and deploy/ differ; change both \
         (docs/helm.md):\n{}",
        problems.join("\n")
    );
}

/// `helm template` with `args`, parsed, without its hooks (objects with a
/// `helm.sh/hook` annotation, which `helm install` does not keep as part of
/// the release and `deploy/` has no counterpart of).
fn release(helm: &std::path::Path, args: &[&str]) -> Vec<Value> {
    rendered(helm, args)
        .into_iter()
        .filter(|d| d["metadata"]["annotations"].get("helm.sh/hook").is_none())
        .collect()
}

/// `kubectl kustomize` of `dir`, parsed.
fn kustomize(kubectl: &std::path::Path, dir: &str) -> Vec<Value> {
    parse(&run(kubectl, &["kustomize", dir]).unwrap_or_else(|e| panic!("{e}")))
}

/// The objects but Namespace `name`.
fn without_namespace(docs: Vec<Value>, name: &str) -> Vec<Value> {
    docs.into_iter()
        .filter(|d| !(d["kind"] == "Namespace" && d["metadata"]["name"] == name))
        .collect()
}

#[test]
fn default_values_render_what_kustomize_builds_from_deploy() {
    let Some(helm) = crate::helm() else { return };
    let Some(kubectl) = kubectl() else { return };
    let deploy = kustomize(&kubectl, "deploy");
    // Installed as docs/helm.md says, into devenv-system with
    // --create-namespace: Helm creates that namespace itself, so the chart
    // leaves it out (and only it).
    assert_same(
        "default values, release namespace devenv-system",
        without_namespace(deploy.clone(), NAMESPACE),
        release(helm, &[]),
    );
    // A release kept in another namespace gets all three.
    assert_same(
        "default values, release namespace elsewhere",
        deploy.clone(),
        release(helm, &["--namespace", "devenv-releases"]),
    );
    // And a value that is not the default is seen, alone.
    assert_eq!(
        compare(
            without_namespace(deploy, NAMESPACE),
            release(helm, &["--set", "replicas=3"])
        ),
        [
            "apps/v1 Deployment/devenv-system/devenv-manager.spec.replicas: deploy/ has 2, the chart 3"
        ]
    );
}

#[test]
fn cert_manager_renders_what_the_cert_manager_component_adds() {
    let Some(helm) = crate::helm() else { return };
    let Some(kubectl) = kubectl() else { return };
    // kustomize refuses an overlay inside the base it includes, so the
    // overlay docs/install.md describes is written outside the repository;
    // and it refuses absolute paths, so it names the repository relatively.
    let overlay = tempfile::tempdir().unwrap();
    let up = "../".repeat(overlay.path().components().count() - 1);
    let root = format!("{up}{}", repo_dir().strip_prefix("/").unwrap().display());
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{root}/deploy]\ncomponents: [{root}/deploy/cert-manager]\n"
        ),
    )
    .unwrap();
    assert_same(
        "certManager.enabled=true",
        without_namespace(
            kustomize(&kubectl, overlay.path().to_str().unwrap()),
            NAMESPACE,
        ),
        release(helm, &["--set", "certManager.enabled=true"]),
    );
}

#[test]
fn the_comparison_tells_helm_labels_from_differences() {
    let object = |replicas: i64, labels: Value| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "labels": labels},
            "spec": {"replicas": replicas}
        })
    };
    let plain = serde_json::json!({"app.kubernetes.io/name": "devenv-manager"});
    let helm_labelled = serde_json::json!({
        "app.kubernetes.io/name": "devenv-manager",
        "helm.sh/chart": "devenv-manager-0.1.0",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/instance": "devenv-manager",
        "app.kubernetes.io/version": "0.1.0",
    });
    let same = compare(
        vec![object(2, plain.clone())],
        vec![object(2, helm_labelled.clone())],
    );
    assert!(same.is_empty(), "{same:?}");
    let changed = compare(
        vec![object(2, plain.clone())],
        vec![object(3, helm_labelled)],
    );
    assert_eq!(
        changed,
        ["apps/v1 Deployment/n/d.spec.replicas: deploy/ has 2, the chart 3"]
    );
    // Any other label is a difference.
    let other = serde_json::json!({"app.kubernetes.io/name": "devenv-manager", "tier": "x"});
    let extra = compare(vec![object(2, plain.clone())], vec![object(2, other)]);
    assert_eq!(extra.len(), 1, "{extra:?}");
    let missing = compare(vec![object(2, plain)], vec![]);
    assert_eq!(missing, ["apps/v1 Deployment/n/d: only in deploy/"]);
}
