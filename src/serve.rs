//! `devenv-manager serve`: wires the listeners, the shared metrics and health,
//! and the one shutdown signal. Everything it starts stops on that signal;
//! if any part dies, the rest are stopped and `serve` returns the error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::metrics::{ListenerLabel, Metrics};
use crate::probes::{self, Health, State};
use crate::server;
use crate::tls::{self, ReloadingResolver};
use crate::webhook::{self, Webhook, routes::BodyLimits};

/// Name and namespace of the manager's Service, for the default certificate SANs.
pub const SERVICE_NAME: &str = "devenv-manager";
pub const SERVICE_NAMESPACE: &str = "devenv-system";

/// A started server: the addresses it actually listens on (useful with port 0).
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Running {
    /// Waits until shutdown, or until a part fails (then stops the others).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome
                && result.is_ok()
            {
                result = Err(e);
            }
            if !self.shutdown.is_cancelled() {
                // A part stopped on its own: that is a failure of the whole.
                if result.is_ok() {
                    result = Err(anyhow::anyhow!("a server stopped unexpectedly"));
                }
                self.health.shutting_down();
                self.shutdown.cancel();
            }
        }
        result
    }
}

/// Makes sure the certificate directory has a certificate, generating a
/// self-signed CA and serving certificate when it has none.
fn ensure_certificates(dir: &Path) -> anyhow::Result<()> {
    let names = tls::default_dns_names(SERVICE_NAME, SERVICE_NAMESPACE);
    if tls::ensure(dir, &names).with_context(|| format!("certificates in {}", dir.display()))? {
        info!(
            ca = %dir.join(tls::CA_FILE).display(),
            "no serving certificate found; generated a self-signed CA and certificate"
        );
    }
    Ok(())
}

pub(crate) fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    server::bind(addr).with_context(|| format!("cannot listen for the {what} on {addr}"))
}

/// Binds every listener and starts every part; returns once they are serving.
/// The cluster parts connect in the background (`kube::Config::infer`).
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    start_with_cluster(config, shutdown, cluster::Source::Infer).await
}

/// [`start`], with the Kubernetes configuration given (tests pass a test bed's).
pub async fn start_with_cluster(
    config: Config,
    shutdown: CancellationToken,
    cluster: cluster::Source,
) -> anyhow::Result<Running> {
    let identity = crate::operator::leader::identity();
    start_with_identity(config, shutdown, cluster, identity).await
}

/// [`start_with_cluster`], naming this replica in the operator's leader
/// election (tests run several in one process).
pub async fn start_with_identity(
    config: Config,
    shutdown: CancellationToken,
    cluster: cluster::Source,
    operator_identity: String,
) -> anyhow::Result<Running> {
    tls::install_crypto_provider();
    let metrics = Metrics::new();
    let health = Health::new();
    health.set("webhook", State::Starting, "");

    ensure_certificates(&config.webhook.cert_dir)?;
    let resolver = Arc::new(
        ReloadingResolver::new(&config.webhook.cert_dir).with_context(|| {
            format!(
                "serving certificate in {}",
                config.webhook.cert_dir.display()
            )
        })?,
    );
    let webhook_listener = bind(config.webhook.bind, "webhook")?;
    let metrics_listener = bind(config.metrics.bind, "metrics")?;
    let webhook_addr = webhook_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let mut tasks = JoinSet::new();
    {
        let routes = webhook::routes::routes(
            Arc::new(Webhook::new(&config)),
            BodyLimits::new(&config.webhook),
            metrics.clone(),
        );
        let settings = server::Listener {
            name: "webhook",
            transport: tls_transport(resolver, &metrics, "webhook"),
            limits: config.webhook.limits.clone(),
            metrics: metrics.listeners.clone(),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            server::serve(webhook_listener, settings, warp::service(routes), shutdown).await;
            Ok(())
        });
    }
    {
        let settings = server::Listener {
            name: "metrics",
            transport: server::Transport::Plain,
            limits: config.metrics.limits.clone(),
            metrics: metrics.listeners.clone(),
        };
        let routes = probes::routes(health.clone(), metrics.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            server::serve(metrics_listener, settings, warp::service(routes), shutdown).await;
            Ok(())
        });
    }
    health.set(
        "webhook",
        State::Ready,
        format!("listening on {webhook_addr}"),
    );

    // The pod API: listening now, serving pods once the cluster is reached.
    let cluster = Cluster::connect(cluster, shutdown.clone());
    ensure_certificates(&config.api.cert_dir)?;
    spawn_operator(
        &mut tasks,
        &config,
        cluster.clone(),
        operator_identity,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    );
    let api_addr = crate::api::spawn(
        crate::api::Settings::of(&config),
        crate::api::Shared {
            cluster,
            metrics: metrics.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
        },
        &mut tasks,
    )
    .await?;
    info!(%webhook_addr, %api_addr, %metrics_addr, namespaces = ?config.devenv.namespaces, "devenv-manager serving");

    Ok(Running {
        webhook_addr,
        api_addr,
        metrics_addr,
        health,
        metrics,
        tasks,
        shutdown,
    })
}

/// The operator starts once the cluster answers; until then `/readyz` says
/// it is waiting (which does not hold the pod's readiness back).
fn spawn_operator(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    config: &Config,
    cluster: Cluster,
    identity: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let operator_config = config.operator.clone();
    health.set(
        "operator",
        State::WaitingForCluster,
        "waiting for a Kubernetes API server",
    );
    tasks.spawn(async move {
        let Some(client) = cluster.client().await else {
            return Ok(());
        };
        crate::operator::run(client, operator_config, metrics, health, identity, shutdown).await;
        Ok(())
    });
}

/// TLS from `resolver`, recording the certificate's expiry on every reload.
pub fn tls_transport(
    resolver: Arc<ReloadingResolver>,
    metrics: &Arc<Metrics>,
    listener: &'static str,
) -> server::Transport {
    let metrics = metrics.clone();
    server::Transport::Tls {
        resolver,
        on_reload: Box::new(move |r: &ReloadingResolver| record_expiry(&metrics, listener, r)),
    }
}

fn record_expiry(metrics: &Metrics, listener: &'static str, resolver: &ReloadingResolver) {
    match resolver.expiry() {
        Some(expiry) => {
            metrics
                .tls_expiry
                .get_or_create(&ListenerLabel { listener })
                .set(expiry);
        }
        None => warn!(listener, "cannot read the serving certificate's expiry"),
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal();
    let running = start(config, shutdown.clone()).await?;
    let health = running.health.clone();
    let outcome = running.wait().await;
    health.shutting_down();
    outcome
}
