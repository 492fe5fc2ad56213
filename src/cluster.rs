//! Finding the cluster: in-cluster configuration or a kubeconfig. Without
//! one, `serve` keeps running the webhook (it needs no API server), says
//! once that the cluster-bound parts are waiting, and keeps trying.

use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

async fn connect() -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| e.to_string())?;
    info!(version = %version.git_version, "connected to the Kubernetes API server");
    Ok(client)
}

/// Returns a client once the API server answers, or None on shutdown.
/// `waiting` runs once, with the reason, the first time it is not reachable.
pub async fn wait_for_client(
    shutdown: &CancellationToken,
    waiting: impl FnOnce(&str),
) -> Option<Client> {
    let mut waiting = Some(waiting);
    let mut delay = Duration::from_millis(500);
    loop {
        match connect().await {
            Ok(client) => return Some(client),
            Err(reason) => {
                if let Some(report) = waiting.take() {
                    warn!(%reason, "no reachable Kubernetes cluster: the webhook is serving; the operator and the pod API are waiting for a cluster");
                    report(&reason);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
