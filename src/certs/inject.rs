//! CA-bundle injection: the `caBundle` of every webhook in the manager's own
//! MutatingWebhookConfiguration and ValidatingWebhookConfiguration follows
//! the Secret's `ca.crt`. Pure: the JSON Patch (RFC 6902) that puts a stale
//! bundle back, or none when every entry already carries it.

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};

use super::material::{Cert, same_certificates};

/// One webhook entry: its name and the bundle it carries.
pub struct Entry<'a> {
    pub name: &'a str,
    pub ca_bundle: Option<&'a [u8]>,
}

pub fn mutating_entries(config: &MutatingWebhookConfiguration) -> Vec<Entry<'_>> {
    entries(&config.webhooks, |w| (&w.name, &w.client_config))
}

pub fn validating_entries(config: &ValidatingWebhookConfiguration) -> Vec<Entry<'_>> {
    entries(&config.webhooks, |w| (&w.name, &w.client_config))
}

/// The two kinds of webhook differ in type, not in these two fields.
fn entries<'a, W>(
    webhooks: &'a Option<Vec<W>>,
    parts: impl Fn(&'a W) -> (&'a String, &'a WebhookClientConfig),
) -> Vec<Entry<'a>> {
    webhooks
        .iter()
        .flatten()
        .map(|w| {
            let (name, client) = parts(w);
            Entry {
                name,
                ca_bundle: client.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            }
        })
        .collect()
}

/// Whether every entry trusts `cert` (the schedule's gate before switching
/// the serving certificate to a new CA). A configuration with no entries
/// constrains nothing.
pub fn all_carry(entries: &[Entry<'_>], cert: &Cert) -> bool {
    entries.iter().all(|e| {
        e.ca_bundle
            .is_some_and(|b| super::material::carries(b, cert))
    })
}

/// The patch that gives every stale entry `bundle_pem` (whose certificates
/// are `bundle`). Each write is guarded by a `test` of the entry's name, so
/// that a configuration reordered since it was read fails the patch instead
/// of receiving a bundle on the wrong webhook.
pub fn bundle_patch(entries: &[Entry<'_>], bundle_pem: &str, bundle: &[Cert]) -> Option<Patch> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle_pem);
    let ops: Vec<PatchOperation> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.ca_bundle.is_some_and(|b| same_certificates(b, bundle)))
        .flat_map(|(i, e)| {
            let index = i.to_string();
            [
                PatchOperation::Test(TestOperation {
                    path: PointerBuf::from_tokens(["webhooks", index.as_str(), "name"]),
                    value: e.name.into(),
                }),
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens([
                        "webhooks",
                        index.as_str(),
                        "clientConfig",
                        "caBundle",
                    ]),
                    value: encoded.clone().into(),
                }),
            ]
        })
        .collect();
    (!ops.is_empty()).then_some(Patch(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::rotate::tests::material;

    fn configuration(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        let webhooks: Vec<serde_json::Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client = serde_json::json!({"url": "https://127.0.0.1:8443/mutate"});
                if let Some(b) = b {
                    client["caBundle"] = base64::engine::general_purpose::STANDARD.encode(b).into();
                }
                serde_json::json!({
                    "name": format!("w{i}.devenv.io"),
                    "clientConfig": client,
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "devenv-manager"},
            "webhooks": webhooks,
        }))
        .unwrap()
    }

    #[test]
    fn missing_and_stale_bundles_are_patched_current_ones_left_alone() {
        let (m, old) = (material(), material());
        let config = configuration(&[None, Some(&m.ca_pem), Some(&old.ca_pem)]);
        let entries = mutating_entries(&config);
        assert!(!all_carry(&entries, m.signer()));
        let patch = bundle_patch(&entries, &m.ca_pem, &m.cas).unwrap();
        let mut value = serde_json::to_value(&config).unwrap();
        json_patch::patch(&mut value, &patch).unwrap();
        let patched: MutatingWebhookConfiguration = serde_json::from_value(value).unwrap();
        let entries = mutating_entries(&patched);
        assert!(all_carry(&entries, m.signer()));
        assert!(bundle_patch(&entries, &m.ca_pem, &m.cas).is_none());
        // Entry 1 was current: only entries 0 and 2 are written (test + add each).
        assert_eq!(patch.0.len(), 4);
    }

    #[test]
    fn a_reordered_configuration_fails_the_patch_instead_of_misplacing_it() {
        let m = material();
        let config = configuration(&[None, None]);
        let patch = bundle_patch(&mutating_entries(&config), &m.ca_pem, &m.cas).unwrap();
        let mut value = serde_json::to_value(&config).unwrap();
        value["webhooks"].as_array_mut().unwrap().reverse();
        assert!(json_patch::patch(&mut value, &patch).is_err());
    }

    #[test]
    fn no_entries_constrain_nothing() {
        let m = material();
        assert!(all_carry(&[], m.signer()));
        assert!(bundle_patch(&[], &m.ca_pem, &m.cas).is_none());
    }
}
