//! Deciding, at start, where this process's serving certificates come from
//! (`certs.mode`), and what keeps them current afterwards.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::keeper;
use super::metrics::CertsMetrics;
use super::run::SelfManaged;
use super::{Source, files, serving};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::probes::{Health, State};
use crate::tls::{self, ReloadingResolver};

/// Name of the manager's Service, for the serving certificate's names.
pub const SERVICE_NAME: &str = "devenv-manager";
/// The manager's namespace in the shipped manifests (`certs.namespace`).
pub const DEFAULT_NAMESPACE: &str = "devenv-system";

/// What the listeners serve and what the CA ConfigMaps publish.
pub struct Certificates {
    pub webhook: Arc<ReloadingResolver>,
    pub api: Arc<ReloadingResolver>,
    /// The CA bundle devenv pods are to trust (`None` until known).
    pub bundle: watch::Receiver<Option<String>>,
}

/// What keeps the certificates current: run it once the process serves.
pub enum Keeping {
    /// Files: follow `ca.crt` of the pod API's directory.
    CaFile {
        path: std::path::PathBuf,
        bundle: watch::Sender<Option<String>>,
    },
    /// Self-managed: follow the Secret (every replica), keep it (the Lease
    /// holder), once the cluster answers.
    SelfManaged {
        resolver: Arc<ReloadingResolver>,
        bundle: watch::Sender<Option<String>>,
        settings: keeper::Settings,
    },
}

/// The serving certificate's names in `namespace`: the in-cluster names of
/// the Service, and loopback for local use and tests.
pub fn service_names(namespace: &str) -> Vec<String> {
    tls::default_dns_names(SERVICE_NAME, namespace)
}

/// Prepares the certificates for `config`; `in_pod` decides `auto`.
pub fn prepare(config: &Config, in_pod: bool) -> anyhow::Result<(Certificates, Keeping)> {
    let (sender, bundle) = watch::channel(None);
    match config.certs.source(in_pod) {
        Source::Files {
            generate_when_missing,
        } => {
            let names = service_names(&config.certs.namespace);
            let load = |dir: &Path, what: &str| -> anyhow::Result<Arc<ReloadingResolver>> {
                if generate_when_missing {
                    generate_if_missing(dir, &names)?;
                }
                let resolver = ReloadingResolver::new(dir)
                    .with_context(|| format!("{what} serving certificate in {}", dir.display()))?;
                Ok(Arc::new(resolver))
            };
            let webhook = load(&config.webhook.cert_dir, "webhook")?;
            let api = load(&config.api.cert_dir, "pod API")?;
            let keeping = Keeping::CaFile {
                path: config.api.cert_dir.join(tls::CA_FILE),
                bundle: sender,
            };
            Ok((
                Certificates {
                    webhook,
                    api,
                    bundle,
                },
                keeping,
            ))
        }
        Source::SelfManaged => {
            let lifetimes = config
                .certs
                .lifetimes()
                .map_err(|(key, message)| anyhow::anyhow!("certs.{key}: {message}"))?;
            let resolver = Arc::new(ReloadingResolver::in_memory());
            let settings = keeper::Settings {
                namespace: config.certs.namespace.clone(),
                names: service_names(&config.certs.namespace),
                lifetimes,
                ca_configmap_namespaces: config.devenv.namespaces.clone(),
                webhook_configuration: crate::webhook::registration::CONFIGURATION_NAME.into(),
            };
            let certificates = Certificates {
                webhook: resolver.clone(),
                api: resolver.clone(),
                bundle,
            };
            Ok((
                certificates,
                Keeping::SelfManaged {
                    resolver,
                    bundle: sender,
                    settings,
                },
            ))
        }
    }
}

/// Generates a self-signed CA and serving certificate into `dir` when it
/// holds none (a laptop).
fn generate_if_missing(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    if tls::ensure(dir, names).with_context(|| format!("certificates in {}", dir.display()))? {
        info!(
            ca = %dir.join(tls::CA_FILE).display(),
            "no serving certificate found; generated a self-signed CA and certificate"
        );
    }
    Ok(())
}

impl Keeping {
    /// Runs until `shutdown`.
    pub async fn run(
        self,
        cluster: Cluster,
        identity: String,
        health: Arc<Health>,
        metrics: CertsMetrics,
        shutdown: CancellationToken,
    ) {
        match self {
            Keeping::CaFile { path, bundle } => files::follow_ca_file(path, bundle, shutdown).await,
            Keeping::SelfManaged {
                resolver,
                bundle,
                settings,
            } => {
                health.set(
                    serving::HEALTH_PART,
                    State::Starting,
                    "waiting for a Kubernetes API server (the certificate is in a Secret)",
                );
                let Some(client) = wait_for(cluster, &shutdown).await else {
                    return;
                };
                let part = SelfManaged {
                    settings,
                    identity,
                    resolver,
                    bundle,
                    health,
                    metrics,
                };
                part.run(client, shutdown).await
            }
        }
    }
}

async fn wait_for(cluster: Cluster, shutdown: &CancellationToken) -> Option<crate::k8s::Client> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        client = cluster.client() => client,
    }
}
