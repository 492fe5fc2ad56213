//! The documents of `deploy/`, read the way the tests need them: by file, by
//! kind and name, and the CRD installed on a test API server.

use devenv_manager::config::Config;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::discovery::ApiResource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{eventually, fixture};

/// The manager's service account, which every binding must name.
pub const MANAGER_SA: (&str, &str) = ("devenv-system", "devenv-manager");

/// The documents of one file, relative to the repository root
/// (multi-document YAML; empty documents skipped).
pub fn docs(file: &str) -> Vec<Value> {
    devenv_manager::yaml::from_yaml_stream(&fixture(file))
        .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"))
}

/// The files a kustomization's `resources` name, in order, relative to the
/// repository root; a directory entry (another kustomization) stands for
/// the files its own kustomization names.
pub fn resource_files(kustomization: &str) -> Vec<String> {
    let dir = std::path::Path::new(kustomization)
        .parent()
        .expect("a kustomization file in a directory");
    let mut files = Vec::new();
    for entry in docs(kustomization)[0]["resources"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let path = normalize(&dir.join(entry.as_str().expect("a resource path")));
        if crate::repo_dir().join(&path).is_dir() {
            files.extend(resource_files(&format!("{path}/kustomization.yaml")));
        } else {
            files.push(path);
        }
    }
    files
}

/// `deploy/../webhook-config` as `webhook-config`.
fn normalize(path: &std::path::Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// A document's `apiVersion` and `kind`.
pub fn kind_of(doc: &Value) -> (&str, &str) {
    (
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    )
}

/// The one document of `kind` named `name` in `file`, as type `T`.
pub fn object<T: DeserializeOwned>(file: &str, kind: &str, name: &str) -> T {
    let found: Vec<Value> = docs(file)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{file}: one {kind} {name}");
    serde_json::from_value(found[0].clone()).unwrap()
}

/// The manager's configuration, as `deploy/config.yaml` gives it, and the
/// ConfigMap key that holds it.
pub fn deploy_config() -> (Config, String) {
    let cm: ConfigMap = object("deploy/config.yaml", "ConfigMap", "devenv-manager-config");
    let data = cm.data.expect("data");
    assert_eq!(data.len(), 1, "one file in the ConfigMap");
    let (key, text) = data.into_iter().next().unwrap();
    let config = Config::from_yaml(&text).unwrap_or_else(|e| panic!("config.yaml: {e}"));
    config.validate().expect("config.yaml is valid");
    (config, key)
}

/// The manager's Deployment in `deploy/deployment.yaml`.
pub fn manager_deployment() -> Deployment {
    object("deploy/deployment.yaml", "Deployment", "devenv-manager")
}

/// The LearnerSpace resource, for dynamic APIs.
pub fn learnerspaces() -> ApiResource {
    ApiResource {
        group: "aivo.dev".into(),
        version: "v1".into(),
        api_version: "aivo.dev/v1".into(),
        kind: "LearnerSpace".into(),
        plural: "learnerspaces".into(),
    }
}

/// Creates `deploy/crd.yaml` unless present (the CRD is cluster-scoped: the
/// first test of a bed installs it, the others find it) and waits until it
/// is Established; returns the LearnerSpace resource.
pub async fn install_crd(client: kube::Client) -> ApiResource {
    let crd: CustomResourceDefinition = serde_json::from_value(docs("deploy/crd.yaml")[0].clone())
        .expect("deploy/crd.yaml is a CRD");
    let crds = Api::<CustomResourceDefinition>::all(client);
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("the CRD from deploy/crd.yaml is refused: {e}"),
    }
    crd_established(&crds).await;
    learnerspaces()
}

/// Waits until the LearnerSpace CRD is Established (served).
pub async fn crd_established(crds: &Api<CustomResourceDefinition>) {
    eventually("the LearnerSpace CRD Established", || async {
        let current = crds.get("learnerspaces.aivo.dev").await.ok()?;
        current
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}
