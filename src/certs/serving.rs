//! Every replica in `self-managed` mode: serve the pair kept in Secret
//! `devenv-manager-tls` (a watch on that one name), so that replicas never
//! disagree, and hand its CA bundle to whoever publishes it (the CA
//! ConfigMaps). `/readyz` holds the replica back while it has no valid
//! certificate to serve.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Material, SECRET_NAME};
use crate::k8s::Client;
use crate::probes::{Health, State};
use crate::tls::ReloadingResolver;

/// The `/readyz` part this module reports.
pub const HEALTH_PART: &str = "certificates";

/// How often the served certificate's expiry is checked between updates.
const EXPIRY_CHECK: Duration = Duration::from_secs(15);

/// Secret `data` as plain bytes.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Follows the Secret until `shutdown`: installs each valid pair in
/// `resolver` and sends each bundle on `bundle`.
pub async fn follow(
    client: Client,
    namespace: String,
    resolver: Arc<ReloadingResolver>,
    bundle: watch::Sender<Option<String>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let origin = format!("Secret {namespace}/{SECRET_NAME}");
    health.set(
        HEALTH_PART,
        State::Starting,
        format!("waiting for {origin}"),
    );
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}"));
    let mut secrets = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut expiry_check = tokio::time::interval(EXPIRY_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = expiry_check.tick() => report_expiry(&resolver, &health, &origin),
            event = secrets.next() => match event {
                Some(Ok(secret)) => {
                    take(&secret, &resolver, &bundle, &origin);
                    report_expiry(&resolver, &health, &origin);
                }
                Some(Err(e)) => warn!(error = %e, secret = %origin, "watch failed; retrying"),
                None => return,
            },
        }
    }
}

fn take(
    secret: &Secret,
    resolver: &ReloadingResolver,
    bundle: &watch::Sender<Option<String>>,
    origin: &str,
) {
    // Checked whole: a Secret the leader is about to replace (unparsable,
    // keys that do not match) is not served; the previous pair stays.
    let material = match Material::from_data(&secret_data(secret)) {
        Ok(material) => material,
        Err(e) => {
            warn!(error = %e, "not serving the Secret's certificate");
            return;
        }
    };
    match resolver.install(
        material.tls_pem.as_bytes(),
        material.tls_key_pem.as_bytes(),
        origin,
    ) {
        Ok(true) => {
            info!(secret = %origin, not_after = %material.serving.not_after, "serving the Secret's certificate")
        }
        Ok(false) => {}
        Err(e) => warn!(error = %e, "not serving the Secret's certificate"),
    }
    bundle.send_if_modified(|current| {
        let changed = current.as_deref() != Some(material.ca_pem.as_str());
        if changed {
            *current = Some(material.ca_pem.clone());
        }
        changed
    });
}

fn report_expiry(resolver: &ReloadingResolver, health: &Health, origin: &str) {
    let now = jiff::Timestamp::now().as_second();
    match resolver.expiry() {
        None => health.set(
            HEALTH_PART,
            State::Starting,
            format!("waiting for {origin}"),
        ),
        Some(not_after) if not_after <= now => health.set(
            HEALTH_PART,
            State::Failed,
            format!("the certificate from {origin} expired at {not_after} (Unix time)"),
        ),
        Some(_) => health.set(HEALTH_PART, State::Ready, format!("serving from {origin}")),
    }
}
