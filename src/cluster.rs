//! The connection to the Kubernetes API server, shared by every part that
//! needs one (the pod API, the operator).
//!
//! `serve` must keep running the webhook without a cluster, so connecting is a
//! background task: it infers a configuration (in-cluster service account or
//! kubeconfig), checks the API server answers, and retries with backoff. It
//! says once, clearly, that the cluster parts are waiting; later failures of the
//! same kind are logged at debug level only.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::k8s::Client;

/// Where the Kubernetes configuration comes from.
#[derive(Clone)]
pub enum Source {
    /// In-cluster service account, else `$KUBECONFIG` / `~/.kube/config`, as
    /// kubectl does (`kube::Config::infer`).
    Infer,
    /// A given configuration (tests pass the test bed's).
    Config(Box<kube::Config>),
    /// Never connect: the cluster parts wait until shutdown. For tests of the
    /// webhook alone, which must not reach whatever cluster the machine's
    /// kubeconfig names.
    Never,
}

/// First and longest wait between connection attempts.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long one reachability check may take before it counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the (possibly future) connection. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: watch::Receiver<Option<Client>>,
}

impl Cluster {
    /// Starts connecting in the background; the task ends once connected or
    /// at shutdown.
    pub fn connect(source: Source, shutdown: CancellationToken) -> Cluster {
        let (sender, client) = watch::channel(None);
        tokio::spawn(async move {
            if matches!(source, Source::Never) {
                // Holding the sender keeps the waiters waiting (not failing).
                shutdown.cancelled().await;
                drop(sender);
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                client = connect_with_retries(source) => {
                    let _ = sender.send(Some(client));
                }
            }
        });
        Cluster { client }
    }

    /// Waits for the client; `None` when the process shuts down first.
    pub async fn client(&self) -> Option<Client> {
        let mut receiver = self.client.clone();
        let connected = receiver.wait_for(Option::is_some).await.ok()?;
        connected.clone()
    }
}

async fn connect_with_retries(source: Source) -> Client {
    let mut delay = FIRST_RETRY;
    let mut said_waiting = false;
    loop {
        match try_connect(&source).await {
            Ok((client, version)) => {
                info!(
                    apiserver_version = %version,
                    "connected to the Kubernetes API server; starting the pod API backend and the operator"
                );
                return client;
            }
            Err(reason) if !said_waiting => {
                warn!(
                    reason = %reason,
                    "no reachable Kubernetes API server: the webhook is serving, the pod API and the operator are waiting for a cluster (retrying with backoff)"
                );
                said_waiting = true;
            }
            Err(reason) => {
                debug!(reason = %reason, retry_in = ?delay, "still no Kubernetes API server")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

async fn try_connect(source: &Source) -> Result<(Client, String), String> {
    let config = match source {
        Source::Config(config) => (**config).clone(),
        Source::Infer => kube::Config::infer().await.map_err(|e| e.to_string())?,
        Source::Never => return Err("connecting is disabled".to_string()),
    };
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    match tokio::time::timeout(CHECK_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(version)) => Ok((client, version.git_version)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the API server did not answer within {CHECK_TIMEOUT:?}"
        )),
    }
}
