//! Unknown fields: every document under `deploy/` and `webhook-config/`
//! parses into its type, and nothing it says is lost on the way (the check
//! itself is `devenv_testbed::typed`, shared with `tests/chart`).

pub(crate) use devenv_testbed::typed::check_document;
use serde_json::json;

use crate::{docs, kind_of, yaml_files};

#[test]
fn every_manifest_parses_into_its_type_with_no_unknown_field() {
    let files = yaml_files();
    assert!(files.len() >= 10, "found {files:?}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        for (i, doc) in docs(file).iter().enumerate() {
            checked += 1;
            let (api_version, kind) = kind_of(doc);
            if let Err(e) = check_document(doc) {
                failures.push(format!("{file} document {i} ({api_version} {kind}): {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 25, "only {checked} documents");
}

#[test]
fn the_unknown_field_check_catches_typos() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{
            "name": "c",
            "securityContext": {"readOnlyRootFileSystem": true},
        }]}}}
    });
    let error = check_document(&deployment).unwrap_err();
    assert!(
        error.contains(".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: unknown field"),
        "{error}"
    );
    let mistyped = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "443"}]}
    });
    assert!(check_document(&mistyped).is_err());
    let certificate = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "x", "anotations": {}},
        "spec": {"secretName": "s", "dnsName": ["a"]}
    });
    let error = check_document(&certificate).unwrap_err();
    assert!(error.contains(".spec.dnsName: unknown field"), "{error}");
    assert!(error.contains("anotations: unknown field"), "{error}");
    let unknown_kind = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
    assert!(check_document(&unknown_kind).is_err());
}
