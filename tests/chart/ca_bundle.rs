//! `webhook.caBundle`: a serving certificate of your own (Secret
//! devenv-manager-tls, made before `helm install`) whose CA both webhook
//! configurations carry; the manager reads the mounted Secret
//! (`CERTS_MODE=files`), as with cert-manager; both at once are refused.

use base64::Engine;
use serde_json::Value;

use crate::{find, rendered, template};

/// `--set` of a base64 PEM-shaped bundle, for the value sets (any base64
/// parses; the render test below uses a real CA).
pub const PLACEHOLDER: &str = "webhook.caBundle=\
    LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJkZXZlbnYKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

/// The manager container and the pod spec of the Deployment.
fn manager(docs: &[Value]) -> (&Value, &Value) {
    let spec = &find(docs, "Deployment", "devenv-manager")["spec"]["template"]["spec"];
    (&spec["containers"][0], spec)
}

/// Whether the manager reads Secret devenv-manager-tls from files.
fn reads_mounted_secret(docs: &[Value]) -> bool {
    let (container, spec) = manager(docs);
    let files_mode = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "CERTS_MODE" && e["value"] == "files");
    let mounted = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tls" && m["mountPath"] == "/etc/devenv-manager/tls");
    let secret = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "tls" && v["secret"]["secretName"] == "devenv-manager-tls");
    assert_eq!(
        (files_mode, mounted),
        (secret, secret),
        "CERTS_MODE, mount and volume go together"
    );
    secret
}

/// The `caBundle` of every webhook of both configurations.
fn bundles(docs: &[Value]) -> Vec<Option<String>> {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .flat_map(|kind| {
        find(docs, kind, "devenv-manager")["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["clientConfig"]["caBundle"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    })
    .collect()
}

#[test]
fn a_ca_bundle_value_goes_into_both_webhooks_and_mounts_the_secret() {
    let Some(helm) = crate::helm() else { return };
    let defaults = rendered(helm, &[]);
    assert!(!reads_mounted_secret(&defaults));
    assert_eq!(bundles(&defaults), [None, None]);

    let ca = devenv_manager::tls::generate(&["devenv-manager".to_string()]).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.ca_pem);
    let own = rendered(helm, &["--set", &format!("webhook.caBundle={bundle}")]);
    assert!(reads_mounted_secret(&own));
    assert_eq!(bundles(&own), [Some(bundle.clone()), Some(bundle.clone())]);
    // Nothing for cert-manager: no injection annotation, no Certificate.
    for doc in &own {
        assert!(
            doc["metadata"]["annotations"]
                .get("cert-manager.io/inject-ca-from")
                .is_none(),
            "{doc}"
        );
        assert_ne!(doc["apiVersion"], "cert-manager.io/v1", "{doc}");
    }
    // The same objects as the defaults, but those three changes.
    assert_eq!(own.len(), defaults.len());

    let cert_manager = rendered(helm, &["--set", "certManager.enabled=true"]);
    assert!(reads_mounted_secret(&cert_manager));
    assert_eq!(bundles(&cert_manager), [None, None]);
}

#[test]
fn a_ca_bundle_value_and_cert_manager_are_refused_together() {
    let Some(helm) = crate::helm() else { return };
    let error = template(
        helm,
        &["--set", "certManager.enabled=true", "--set", PLACEHOLDER],
    )
    .expect_err("both rendered");
    assert!(
        error.contains("webhook.caBundle and certManager.enabled=true exclude each other"),
        "{error}"
    );
    let error = template(helm, &["--set", "webhook.caBundle=not base64!"]).expect_err("rendered");
    assert!(error.contains("/webhook/caBundle"), "{error}");
}
