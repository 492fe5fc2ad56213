//! `devenv-manager serve`: wires the listeners, the shared metrics and health,
//! and the one shutdown signal. Everything it starts stops on that signal;
//! if any part dies, the rest are stopped and `serve` returns the error.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::certs;
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::probes::{self, Health, State};
use crate::server;
use crate::tls::{self, ReloadingResolver};
use crate::webhook::{self, Webhook, routes::BodyLimits};

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

pub(crate) fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    server::bind(addr).with_context(|| format!("cannot listen for the {what} on {addr}"))
}

/// How the process meets the world; tests change these, `serve` does not.
pub struct Options {
    /// Where the Kubernetes configuration comes from (`kube::Config::infer`).
    pub cluster: cluster::Source,
    /// This replica's name in the leader elections (tests run several in
    /// one process).
    pub identity: String,
    /// Whether this process runs in a pod (`KUBERNETES_SERVICE_HOST` is
    /// set), which `certs.mode: auto` follows.
    pub in_pod: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster: cluster::Source::Infer,
            identity: crate::leader::identity(),
            in_pod: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        }
    }
}

/// Binds every listener and starts every part; returns once they are
/// serving. The cluster parts connect in the background.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<Running> {
    tls::install_crypto_provider();
    let metrics = Metrics::new();
    let health = Health::new();
    let (certificates, keeping) = certs::startup::prepare(&config, options.in_pod)?;
    let webhook_listener = bind(config.webhook.bind, "webhook")?;
    let metrics_listener = bind(config.metrics.bind, "metrics")?;
    let webhook_addr = webhook_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let mut tasks = JoinSet::new();
    let webhook = server::Listener {
        name: "webhook",
        transport: tls_transport(certificates.webhook.clone(), &metrics, "webhook"),
        limits: config.webhook.limits.clone(),
        metrics: metrics.listeners.clone(),
    };
    let routes = webhook::routes::routes(
        Arc::new(Webhook::new(&config)),
        BodyLimits::new(&config.webhook),
        metrics.clone(),
    );
    spawn_server(
        &mut tasks,
        webhook_listener,
        webhook,
        warp::service(routes),
        &shutdown,
    );
    let probes = server::Listener {
        name: "metrics",
        transport: server::Transport::Plain,
        limits: config.metrics.limits.clone(),
        metrics: metrics.listeners.clone(),
    };
    let routes = probes::routes(health.clone(), metrics.clone());
    spawn_server(
        &mut tasks,
        metrics_listener,
        probes,
        warp::service(routes),
        &shutdown,
    );
    health.set(
        "webhook",
        State::Ready,
        format!("listening on {webhook_addr}"),
    );

    let cluster = Cluster::connect(options.cluster, shutdown.clone());
    {
        let keeping = keeping.run(
            cluster.clone(),
            options.identity.clone(),
            health.clone(),
            metrics.certs.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            keeping.await;
            Ok(())
        });
    }
    spawn_operator(
        &mut tasks,
        &config,
        cluster.clone(),
        options.identity,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    );
    let api_addr = crate::api::spawn(
        crate::api::Settings::of(&config),
        crate::api::Shared {
            cluster,
            tls: certificates.api,
            ca_bundle: certificates.bundle,
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

/// Serves `service` on `listener` until shutdown.
fn spawn_server<S, B>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    settings: server::Listener,
    service: S,
    shutdown: &CancellationToken,
) where
    S: server::HttpService<B>,
    B: server::ResponseBody,
{
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        server::serve(listener, settings, service, shutdown).await;
        Ok(())
    });
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
        Some(expiry) => metrics.certificate_expires(listener, expiry),
        // Self-managed, before the Secret is read: nothing served yet.
        None if resolver.is_empty() => {}
        None => warn!(listener, "cannot read the serving certificate's expiry"),
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal();
    let running = start(config, shutdown.clone(), Options::default()).await?;
    let health = running.health.clone();
    let outcome = running.wait().await;
    health.shutting_down();
    outcome
}
