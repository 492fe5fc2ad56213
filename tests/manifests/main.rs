//! The manifests a platform engineer applies: everything under `deploy/` and
//! `webhook-config/`.
//!
//! - every document parses into its Kubernetes type with no unknown field
//!   (so a typo fails here, not silently in a cluster);
//! - the RBAC grants exactly the API calls the code makes ([`CODE_CALLS`]);
//! - the pieces agree with each other and with the code: the configuration
//!   loads, the Deployment mounts what the configuration names, the Service
//!   is what the webhook configurations call, the examples pass the webhook;
//!
//! None of these needs an API server; that the API server accepts every
//! manifest and that the manager runs with exactly this RBAC is tested with
//! the test bed, in `tests/e2e/deploy/`.
//!
//! (That `deploy/crd.yaml` is what `devenv-manager crd` prints is tested in
//! `tests/cli.rs`.)

mod agree;
mod kustomize;
mod policies;
mod rbac;
mod rbac_calls;
mod unknown_fields;

use std::path::{Path, PathBuf};

use devenv_testbed::manifests::{
    MANAGER_SA, deploy_config, docs, kind_of, manager_deployment, object, resource_files,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MANIFEST_DIRS: [&str; 2] = ["deploy", "webhook-config"];

/// Every `.yaml`/`.yml` file under the manifest directories, relative to the
/// repository root, sorted.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in MANIFEST_DIRS {
        walk(&Path::new(ROOT).join(dir), &mut files);
    }
    let mut names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(ROOT).unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every document of every manifest file, with the file it is in.
fn all_docs() -> Vec<(String, Value)> {
    yaml_files()
        .into_iter()
        .flat_map(|file| docs(&file).into_iter().map(move |d| (file.clone(), d)))
        .collect()
}

/// Every document of `kind` across the manifests, as type `T`.
fn objects<T: DeserializeOwned>(kind: &str) -> Vec<T> {
    all_docs()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| serde_json::from_value(d).unwrap())
        .collect()
}
