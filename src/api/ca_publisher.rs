//! CA distribution: ConfigMap `devenv-manager-ca` (key `ca.crt`, the CA that
//! signed the pod API's certificate) in each devenv namespace, as
//! kube-controller-manager keeps `kube-root-ca.crt` in every namespace. The
//! injected projected volume mounts it next to the token, so `devenv` in a pod
//! trusts the API with no flags.
//!
//! The ConfigMaps are watched (one watch per namespace, on that one name): one
//! deleted or edited is put back at once. The bundle comes from the
//! certificate source ([`crate::certs`]: Secret `devenv-manager-tls` in
//! self-managed mode, `ca.crt` of `api.certDir` in files mode), so a rotation
//! reaches every namespace without a restart. A write happens only when a
//! ConfigMap differs from what it should be; a failed one is retried every
//! couple of seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::k8s::{Client, ObjectMeta};

pub const CONFIGMAP_NAME: &str = "devenv-manager-ca";
pub const CONFIGMAP_KEY: &str = "ca.crt";
/// Field manager of the server-side applies.
const FIELD_MANAGER: &str = "devenv-manager";
/// How often failed writes are retried.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The ConfigMap as it should be in `namespace`.
pub fn desired_configmap(namespace: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "devenv-manager".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "devenv-manager".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CONFIGMAP_KEY.to_string(),
            ca_pem.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// Whether the ConfigMap found (if any) already carries `ca_pem`.
pub fn is_current(found: Option<&ConfigMap>, ca_pem: &str) -> bool {
    found
        .and_then(|cm| cm.data.as_ref())
        .and_then(|data| data.get(CONFIGMAP_KEY))
        .is_some_and(|pem| pem == ca_pem)
}

struct Namespace {
    name: String,
    api: Api<ConfigMap>,
    store: Store<ConfigMap>,
    synced: bool,
    /// The last write error, so that a persisting one is logged once.
    last_error: Option<String>,
}

/// Keeps the CA ConfigMaps current until `shutdown`.
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    mut bundle: watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) {
    let mut targets = Vec::new();
    let mut streams = Vec::new();
    for (index, name) in namespaces.iter().enumerate() {
        let api = Api::<ConfigMap>::namespaced(client.clone(), name);
        let (store, writer) = reflector::store();
        let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
        let stream = reflector(writer, watcher(api.clone(), config).default_backoff());
        streams.push(stream.map(move |event| (index, event)).boxed());
        targets.push(Namespace {
            name: name.clone(),
            api,
            store,
            synced: false,
            last_error: None,
        });
    }
    let mut events = futures::stream::select_all(streams);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            changed = bundle.changed() => if changed.is_err() { return },
            event = events.next() => match event {
                Some((index, Ok(watcher::Event::InitDone))) => targets[index].synced = true,
                Some((_, Ok(_))) => {}
                // The watcher retries with backoff; the pod cache reports outages.
                Some((_, Err(_))) => continue,
                None => return,
            },
        }
        let Some(pem) = bundle.borrow_and_update().clone() else {
            continue;
        };
        for target in targets.iter_mut().filter(|t| t.synced) {
            reconcile(target, &pem).await;
        }
    }
}

/// Writes the ConfigMap of one namespace if it is missing or stale.
async fn reconcile(target: &mut Namespace, pem: &str) {
    let found = target
        .store
        .get(&ObjectRef::new(CONFIGMAP_NAME).within(&target.name));
    if is_current(found.as_deref(), pem) {
        return;
    }
    let desired = desired_configmap(&target.name, pem);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match target
        .api
        .patch(CONFIGMAP_NAME, &params, &Patch::Apply(&desired))
        .await
    {
        Ok(_) => {
            info!(
                namespace = %target.name,
                configmap = CONFIGMAP_NAME,
                action = if found.is_some() { "updated" } else { "created" },
                "published the pod API's CA"
            );
            target.last_error = None;
        }
        Err(e) => {
            let error = e.to_string();
            if target.last_error.as_deref() != Some(error.as_str()) {
                warn!(namespace = %target.name, configmap = CONFIGMAP_NAME, %error, "cannot publish the pod API's CA; retrying");
            }
            target.last_error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_configmap_carries_the_ca() {
        let cm = desired_configmap("devenv", "PEM");
        assert_eq!(cm.metadata.name.as_deref(), Some("devenv-manager-ca"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("devenv"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], "PEM");
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "devenv-manager"
        );
    }

    #[test]
    fn only_a_different_or_missing_ca_needs_a_write() {
        let cm = desired_configmap("devenv", "PEM");
        assert!(is_current(Some(&cm), "PEM"));
        assert!(!is_current(Some(&cm), "NEW PEM"));
        assert!(!is_current(None, "PEM"));
        assert!(!is_current(Some(&ConfigMap::default()), "PEM"));
    }
}
