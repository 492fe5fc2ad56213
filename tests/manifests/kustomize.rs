//! The kustomizations name every manifest, and build both ways.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::unknown_fields::check_document;
use crate::{ROOT, docs, manager_deployment, resource_files, yaml_files};

#[test]
fn the_kustomizations_name_every_manifest() {
    // deploy/kustomization.yaml lists every manifest next to it, so a new
    // file cannot be forgotten; everything a kustomization names exists.
    let base = &docs("deploy/kustomization.yaml")[0];
    let listed: BTreeSet<String> = base["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        // Other kustomizations (the webhook configurations) are checked below.
        .filter(|r| !r.starts_with("../"))
        .collect();
    let present: BTreeSet<String> = yaml_files()
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/"))
        .filter(|f| !f.contains('/') && *f != "kustomization.yaml")
        .map(String::from)
        .collect();
    assert_eq!(listed, present);
    assert_eq!(base["images"][0]["name"], "devenv-manager");
    assert_eq!(
        manager_deployment().spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("devenv-manager"),
        "the image the kustomization sets"
    );

    for file in yaml_files()
        .iter()
        .filter(|f| f.ends_with("kustomization.yaml"))
    {
        let dir = Path::new(ROOT).join(file).parent().unwrap().to_path_buf();
        let doc = &docs(file)[0];
        for entry in ["resources", "components"] {
            for path in doc[entry].as_array().into_iter().flatten() {
                let path = dir.join(path.as_str().unwrap());
                assert!(path.exists(), "{file}: {} does not exist", path.display());
            }
        }
    }

    // The cert-manager component: the Secret the Deployment mounts, CA
    // injected from that Certificate into both webhook configurations.
    let component = &docs("deploy/cert-manager/kustomization.yaml")[0];
    assert_eq!(component["kind"], "Component");
    let certificates = docs("deploy/cert-manager/certificate.yaml");
    let serving = certificates
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "devenv-manager-tls")
        .expect("a Certificate into devenv-manager-tls");
    let inject = format!(
        "{}/{}",
        serving["metadata"]["namespace"].as_str().unwrap(),
        serving["metadata"]["name"].as_str().unwrap()
    );
    let mut patched = BTreeSet::new();
    for patch in component["patches"].as_array().unwrap() {
        let patch: Value = devenv_manager::yaml::from_yaml_stream(patch["patch"].as_str().unwrap())
            .unwrap()
            .remove(0);
        if patch["kind"] == "Deployment" {
            // A partial Deployment (no selector): agree.rs checks what it sets.
            continue;
        }
        check_document(&patch).unwrap();
        assert_eq!(
            patch["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            inject.as_str()
        );
        patched.insert(patch["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(
        patched,
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ]
        .map(String::from)
        .into()
    );
    // Every issuerRef names an Issuer of the file.
    let issuers: BTreeSet<&str> = certificates
        .iter()
        .filter(|d| d["kind"] == "Issuer")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for certificate in certificates.iter().filter(|d| d["kind"] == "Certificate") {
        let issuer = &certificate["spec"]["issuerRef"];
        assert_eq!(issuer["kind"], "Issuer");
        assert!(issuers.contains(issuer["name"].as_str().unwrap()));
    }
}

/// `kubectl kustomize` of deploy/ and of an overlay with the cert-manager
/// component, when kubectl is installed (it is not required to build).
#[test]
fn kustomize_builds_both_ways() {
    let kubectl = |dir: &Path| {
        std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
    };
    let Ok(base) = kubectl(&Path::new(ROOT).join("deploy")) else {
        eprintln!("skipping kustomize_builds_both_ways: kubectl not installed");
        return;
    };
    assert!(
        base.status.success(),
        "{}",
        String::from_utf8_lossy(&base.stderr)
    );
    let built: Vec<Value> =
        devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&base.stdout)).unwrap();
    let listed: usize = resource_files("deploy/kustomization.yaml")
        .iter()
        .map(|f| docs(f).len())
        .sum();
    assert_eq!(built.len(), listed);
    let deployment = built.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/devenv-manager:0.1.0"
    );

    // An overlay outside deploy/ (kustomize refuses one inside the base it
    // includes), with paths relative to it, as a user would write it.
    let dir = tempfile::Builder::new()
        .prefix("overlay")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let Ok(relative) = dir.path().strip_prefix(ROOT) else {
        eprintln!(
            "skipping the cert-manager overlay: the target directory is outside the repository"
        );
        return;
    };
    let up = "../".repeat(relative.components().count());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{up}deploy]\ncomponents: [{up}deploy/cert-manager]\n"
        ),
    )
    .unwrap();
    let overlay = kubectl(dir.path()).unwrap();
    assert!(
        overlay.status.success(),
        "{}",
        String::from_utf8_lossy(&overlay.stderr)
    );
    let built: Vec<Value> =
        devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&overlay.stdout)).unwrap();
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = built.iter().find(|d| d["kind"] == kind).unwrap();
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "devenv-system/devenv-manager"
        );
        assert!(config["webhooks"][0]["rules"].is_array(), "{config}");
    }
    assert_eq!(
        built
            .iter()
            .filter(|d| d["apiVersion"] == "cert-manager.io/v1")
            .count(),
        4
    );
}
