//! deploy/argocd/application.yaml (docs/helm.md#gitops): an Argo CD
//! Application that installs this chart as docs/helm.md does, and ignores
//! exactly the fields others write into what the chart renders: the
//! caBundle of each webhook configuration the chart has.

use std::collections::BTreeSet;

use devenv_testbed::{fixture, repo_dir};
use serde::Deserialize;
use serde_json::Value;

use crate::{CHART, NAMESPACE, RELEASE, VALUE_SETS, rendered};

const APPLICATION: &str = "deploy/argocd/application.yaml";
/// Where the manager or cert-manager writes the CA bundle.
const CA_BUNDLE: &str = ".webhooks[]?.clientConfig.caBundle";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Application {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    project: String,
    source: Source,
    destination: Destination,
    sync_policy: SyncPolicy,
    ignore_differences: Vec<IgnoreDifference>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Source {
    #[serde(rename = "repoURL")]
    repo_url: String,
    target_revision: String,
    path: String,
    helm: Helm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Helm {
    release_name: String,
    values_object: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Destination {
    server: String,
    namespace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SyncPolicy {
    automated: Value,
    sync_options: Vec<String>,
    managed_namespace_metadata: ManagedNamespaceMetadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManagedNamespaceMetadata {
    labels: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IgnoreDifference {
    group: String,
    kind: String,
    name: String,
    jq_path_expressions: Vec<String>,
}

fn application() -> Application {
    let doc = devenv_manager::yaml::from_yaml_stream::<Value>(&fixture(APPLICATION))
        .unwrap_or_else(|e| panic!("{APPLICATION}: {e}"))
        .remove(0);
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{APPLICATION}: {e}"))
}

#[test]
fn the_application_installs_the_chart_as_docs_helm_md_does() {
    let app = application();
    assert_eq!(
        (app.api_version.as_str(), app.kind.as_str()),
        ("argoproj.io/v1alpha1", "Application")
    );
    // Applied into Argo CD's namespace (`kubectl -n argocd apply -f`),
    // whatever it is called; every namespace deploy/ names is the manager's.
    assert_eq!(app.metadata.namespace, None);
    assert_eq!(app.spec.project, "default");
    let source = &app.spec.source;
    assert_eq!(source.path, CHART);
    assert!(
        repo_dir().join(&source.path).join("Chart.yaml").is_file(),
        "{}: no chart",
        source.path
    );
    // A placeholder docs/helm.md says to replace; a git URL all the same.
    assert!(
        source.repo_url.starts_with("https://"),
        "{}",
        source.repo_url
    );
    assert!(!source.target_revision.is_empty());
    assert_eq!(source.helm.release_name, RELEASE);
    assert_eq!(
        app.spec.destination.server,
        "https://kubernetes.default.svc"
    );
    assert_eq!(app.spec.destination.namespace, NAMESPACE);
    assert!(app.spec.sync_policy.automated.is_object());
    let options: BTreeSet<&str> = app
        .spec
        .sync_policy
        .sync_options
        .iter()
        .map(String::as_str)
        .collect();
    for option in [
        // The chart leaves the release's namespace to whoever installs it.
        "CreateNamespace=true",
        "ServerSideApply=true",
        "RespectIgnoreDifferences=true",
    ] {
        assert!(options.contains(option), "syncOptions lacks {option}");
    }
    // Argo CD creates devenv-system with the labels deploy/ gives it.
    let namespaces =
        devenv_manager::yaml::from_yaml_stream::<Value>(&fixture("deploy/namespaces.yaml"))
            .unwrap();
    let own = namespaces
        .iter()
        .find(|n| n["metadata"]["name"] == NAMESPACE)
        .expect("deploy/namespaces.yaml has the release namespace");
    assert_eq!(
        app.spec.sync_policy.managed_namespace_metadata.labels,
        own["metadata"]["labels"]
    );
    // And kustomize users do not get it: deploy/kustomization.yaml does not
    // name it.
    let kustomization = fixture("deploy/kustomization.yaml");
    assert!(
        !kustomization.contains("argocd"),
        "deploy/kustomization.yaml"
    );
}

#[test]
fn the_application_renders_and_ignores_exactly_the_chart_s_ca_bundles() {
    let Some(helm) = crate::helm() else { return };
    let app = application();
    // Its values pass the schema, into its release namespace.
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        serde_json::to_string(&app.spec.source.helm.values_object).unwrap(),
    )
    .unwrap();
    let docs = rendered(helm, &["--values", values.path().to_str().unwrap()]);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == NAMESPACE),
        "the chart renders its release namespace: CreateNamespace=true would clash"
    );

    let ignored: BTreeSet<(String, String, String)> = app
        .spec
        .ignore_differences
        .iter()
        .map(|i| (i.group.clone(), i.kind.clone(), i.name.clone()))
        .collect();
    assert_eq!(
        ignored.len(),
        app.spec.ignore_differences.len(),
        "no repeats"
    );
    for ignore in &app.spec.ignore_differences {
        assert_eq!(ignore.jq_path_expressions, [CA_BUNDLE], "{}", ignore.kind);
    }
    // Under every value set: the webhook configurations the chart renders,
    // each with no caBundle of its own, and no Secret (the serving
    // certificate's is the manager's or cert-manager's, never the chart's).
    for (name, args) in VALUE_SETS {
        let docs = rendered(helm, args);
        let webhooks: BTreeSet<(String, String, String)> = docs
            .iter()
            .filter(|d| d["webhooks"].is_array())
            .map(|d| {
                let api_version = d["apiVersion"].as_str().unwrap();
                let group = api_version.split_once('/').map_or("", |(g, _)| g);
                (
                    group.to_string(),
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            webhooks, ignored,
            "{name}: ignoreDifferences and the chart's webhooks"
        );
        assert!(
            !docs.iter().any(|d| d["kind"] == "Secret"),
            "{name}: the chart renders a Secret; ignore its data in {APPLICATION}"
        );
    }
}
