//! Helm 4 (`helm4`, `scripts/helm.sh`'s build of `charts/tools/helm4`):
//! the chart lints as strictly as with Helm 3, and under every value set
//! renders the same objects (hooks included). Helm 4 orders and spaces its
//! output differently, so objects are compared by `kind/namespace/name`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{VALUE_SETS, id, lint_every_value_set, rendered};

#[test]
fn helm4_lint_strict_passes_under_every_value_set() {
    let Some(helm4) = crate::helm4() else { return };
    lint_every_value_set(helm4);
}

/// The rendered objects by `kind/namespace/name`.
fn objects(helm: &Path, args: &[&str]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in rendered(helm, args) {
        let key = format!("{} {}", doc["apiVersion"].as_str().unwrap_or("?"), id(&doc));
        assert!(out.insert(key.clone(), doc).is_none(), "{key} twice");
    }
    out
}

#[test]
fn helm4_renders_the_objects_helm3_renders() {
    let (Some(helm3), Some(helm4)) = (crate::helm(), crate::helm4()) else {
        return;
    };
    for (name, args) in VALUE_SETS {
        let three = objects(helm3, args);
        let four = objects(helm4, args);
        assert_eq!(
            three.keys().collect::<Vec<_>>(),
            four.keys().collect::<Vec<_>>(),
            "{name}: Helm 3 and Helm 4 render other objects"
        );
        for (key, object) in &three {
            assert_eq!(object, &four[key], "{name}: {key} differs under Helm 4");
        }
    }
}
