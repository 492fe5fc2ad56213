//! The authenticated pod API (HTTPS, `api.bind`): developers list, inspect and
//! delete their own pods.
//!
//! - [`routes`]: the HTTP edge (one warp filter, routing, access log, metrics);
//! - [`auth`]: bearer token, TokenReview, [`token_cache`], failed-auth limit;
//! - [`pods`]: the ownership rule, the watch cache, deletion with preconditions;
//! - [`view`]: what is shown of a pod (shared with the `devenv` CLI);
//! - [`error`]: the one error type and its one mapping to HTTP;
//! - [`ca_publisher`]: the `devenv-manager-ca` ConfigMaps;
//! - [`rate_limit`], [`version`], [`openapi`].
//!
//! The listener starts with `serve` whether or not a cluster is reachable:
//! health, version and the OpenAPI document always answer, and the pod routes
//! answer 503 until the API server has been reached and the pod cache filled.

pub mod auth;
pub mod ca_publisher;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod pod_index;
pub mod pods;
pub mod rate_limit;
pub mod routes;
pub mod token_cache;
pub mod version;
pub mod view;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderValue, StatusCode, header};

use crate::cluster::Cluster;
use crate::config::{Config, DevenvConfig};
use crate::k8s::Client;
use crate::metrics::Metrics;
use crate::probes::{Health, State};
use crate::server;
use crate::server::Limits;
use crate::tls::ReloadingResolver;
use auth::{Authenticator, KubeTokenReviewer};
use error::ApiError;
use pods::PodCache;
use rate_limit::{Rate, RateLimiter};

/// The part's name in `/readyz`.
pub const HEALTH_PART: &str = "pod-api";

/// What the pod API uses of the configuration, taken from it once
/// ([`Settings::of`]); nothing below this reads the whole [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `api.bind`.
    pub bind: SocketAddr,
    /// `api.limits`.
    pub limits: Limits,
    /// Who a developer is and which pods are theirs (`devenv`).
    pub devenv: Arc<DevenvConfig>,
    /// Requests of one developer.
    pub developer_requests: Rate,
    /// Failed authentications from one client address (per second).
    pub failed_auths: Rate,
}

impl Settings {
    pub fn of(config: &Config) -> Settings {
        let api = &config.api;
        Settings {
            bind: api.bind,
            limits: api.limits.clone(),
            devenv: Arc::new(config.devenv.clone()),
            developer_requests: Rate {
                per_second: api.developer_requests_per_second,
                burst: api.developer_burst,
            },
            failed_auths: Rate {
                per_second: api.failed_auths_per_minute / 60.0,
                burst: api.failed_auth_burst,
            },
        }
    }
}

/// What the pod API shares with the rest of `serve`.
pub struct Shared {
    pub cluster: Cluster,
    /// The serving certificate ([`crate::certs`]).
    pub tls: Arc<ReloadingResolver>,
    /// The CA bundle to publish to the devenv namespaces.
    pub ca_bundle: watch::Receiver<Option<String>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
}

/// State shared by every request.
pub struct PodApi {
    devenv: Arc<DevenvConfig>,
    authenticator: Authenticator,
    developer_limit: RateLimiter<String>,
    metrics: Arc<Metrics>,
    /// Set once the API server has been reached.
    backend: OnceLock<Backend>,
}

/// What the pod routes need of the cluster.
pub struct Backend {
    pub client: Client,
    pub pods: PodCache,
    pub reviewer: KubeTokenReviewer,
}

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Health")]
pub struct HealthInfo {
    pub status: Serving,
    /// Whether the manager has reached the Kubernetes API server.
    pub cluster: ClusterState,
    /// Whether every devenv namespace's pod watch is listed and connected.
    pub pod_cache: CacheState,
}

// No doc comments on the variants below: they would make the schemas
// `oneOf`s instead of OpenAPI 3.0 `enum`s.

/// `ok` whenever the pod API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum Serving {
    Ok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum ClusterState {
    Connected,
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum CacheState {
    Synced,
    Syncing,
}

impl PodApi {
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Arc<PodApi> {
        let devenv = settings.devenv.clone();
        let developers = settings.developer_requests;
        Arc::new(PodApi {
            authenticator: Authenticator::new(
                devenv.clone(),
                settings.failed_auths,
                metrics.clone(),
            ),
            developer_limit: RateLimiter::new(developers.per_second, developers.burst),
            devenv,
            metrics,
            backend: OnceLock::new(),
        })
    }

    /// Connects the routes to a cluster. Only the first call has an effect.
    pub fn attach(&self, client: Client, pods: PodCache) {
        let reviewer = KubeTokenReviewer::new(client.clone(), &self.devenv.audience);
        let _ = self.backend.set(Backend {
            client,
            pods,
            reviewer,
        });
    }

    fn backend(&self) -> Result<&Backend, ApiError> {
        self.backend.get().ok_or_else(|| {
            ApiError::Unavailable(
                "the manager has not reached the Kubernetes API server yet; the pod API is waiting for a cluster"
                    .to_string(),
            )
        })
    }

    fn health(&self) -> HealthInfo {
        let backend = self.backend.get();
        HealthInfo {
            status: Serving::Ok,
            cluster: if backend.is_some() {
                ClusterState::Connected
            } else {
                ClusterState::Waiting
            },
            pod_cache: if backend.is_some_and(|b| b.pods.is_synced()) {
                CacheState::Synced
            } else {
                CacheState::Syncing
            },
        }
    }
}

/// A JSON response; serializing our own plain types cannot fail, but if it
/// did the client gets a 500 rather than a panic.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> warp::reply::Response {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                r#"{{"error":{{"code":500,"reason":"InternalError","message":"cannot encode the response: {}"}}}}"#,
                e.to_string().replace(['"', '\\'], "'")
            )
            .into_bytes(),
        ),
    };
    let mut response = warp::reply::Response::new(bytes.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Binds the pod API listener (so a taken port fails `serve` at once) and
/// starts, in `tasks`: the HTTPS server, and the part that waits for the
/// cluster and then runs the pod cache and the CA publisher. Returns the bound
/// address.
pub async fn spawn(
    settings: Settings,
    shared: Shared,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<SocketAddr> {
    let Shared {
        cluster,
        tls,
        ca_bundle,
        metrics,
        health,
        shutdown,
    } = shared;
    let listener = crate::serve::bind(settings.bind, "pod API")?;
    let addr = listener.local_addr()?;
    let listener_settings = server::Listener {
        name: "api",
        transport: crate::serve::tls_transport(tls, &metrics, "api"),
        limits: settings.limits.clone(),
        metrics: metrics.listeners.clone(),
    };
    let api = PodApi::new(&settings, metrics);
    health.set(
        HEALTH_PART,
        State::WaitingForCluster,
        "waiting for a Kubernetes API server",
    );

    {
        let (api, shutdown) = (api.clone(), shutdown.clone());
        tasks.spawn(async move {
            server::serve(
                listener,
                listener_settings,
                warp::service(routes::routes(api)),
                shutdown,
            )
            .await;
            Ok(())
        });
    }
    tasks.spawn(async move {
        let client = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            client = cluster.client() => client,
        };
        let Some(client) = client else {
            return Ok(());
        };
        run_backend(api, client, &settings, ca_bundle, health, shutdown).await;
        Ok(())
    });
    Ok(addr)
}

/// Runs the pod cache and the CA publisher until shutdown, keeping `/readyz`
/// honest about the cache.
async fn run_backend(
    api: Arc<PodApi>,
    client: Client,
    settings: &Settings,
    ca_bundle: watch::Receiver<Option<String>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let namespaces = &settings.devenv.namespaces;
    let (pods, fill_cache) = PodCache::start(&client, namespaces);
    api.attach(client.clone(), pods.clone());
    let publish_ca = ca_publisher::run(client, namespaces.clone(), ca_bundle, shutdown.clone());
    let report = async {
        // Waiting (not Starting) while the cache syncs or reconnects: the
        // webhook shares this pod and must not lose its readiness to a
        // missing RBAC rule or an API server outage.
        let mut last = None;
        loop {
            let synced = pods.is_synced();
            if last != Some(synced) {
                if synced {
                    health.set(HEALTH_PART, State::Ready, "pod cache in sync");
                } else {
                    health.set(
                        HEALTH_PART,
                        State::WaitingForCluster,
                        "pod cache syncing with the Kubernetes API server",
                    );
                }
                last = Some(synced);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = fill_cache => {}
        _ = publish_ca => {}
        _ = report => {}
    }
}
