//! Leader election on a `coordination.k8s.io/v1` Lease, so that with several
//! replicas only one reconciles while all of them serve the webhook and API.
//!
//! [`kube_lease_manager`] holds the Lease: it takes it when it is free or
//! expired, renews it `renew_every`, and hands it over on release. What it
//! does not do is stop a leader whose renewals fail: its `changed()` keeps
//! reporting "leader" (errors aside) however long the API server is away,
//! and a request to a hung API server has no deadline. Two things are added
//! here so that a stale leader stops reconciling before anyone else could
//! take over:
//!
//! - it talks through a [`LeaseClient`] that bounds every request by
//!   [`REQUEST_TIMEOUT`] and records when a write of the Lease last
//!   succeeded (a renewal, as the API server saw it);
//! - this replica reconciles only while the manager says it holds the Lease
//!   *and* that renewal is younger than `duration - renew_every`
//!   ([`may_lead`]), so a leader that cannot renew steps down 5 s before
//!   its lease could expire in the others' eyes.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// No request to the API server about the Lease may take longer: a renewal
/// that hangs must fail in time for the leader to step down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How soon a failed attempt (to build the manager, to renew) is retried.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("lease manager: {0}")]
    Manager(#[from] kube_lease_manager::LeaseManagerError),
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, identity: String) -> Self {
        LeaseSettings {
            name: "devenv-manager-operator".to_string(),
            namespace: namespace.to_string(),
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// How long a leader goes on without a successful renewal: one renewal
    /// period short of the lease's duration.
    pub fn give_up_after(&self) -> Duration {
        self.duration.saturating_sub(self.renew_every)
    }

    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }
}

/// Pure: whether this replica may reconcile at `now`. `holds` is what the
/// lease manager last said; `last_renewal` when a write of the Lease last
/// succeeded.
pub fn may_lead(
    holds: bool,
    last_renewal: Option<Instant>,
    now: Instant,
    settings: &LeaseSettings,
) -> bool {
    holds
        && last_renewal
            .is_some_and(|at| now.saturating_duration_since(at) < settings.give_up_after())
}

/// When a write of the Lease last succeeded.
#[derive(Debug, Clone, Default)]
struct Renewals(Arc<Mutex<Option<Instant>>>);

impl Renewals {
    fn record(&self, sent: Instant) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(last.map_or(sent, |l| l.max(sent)));
    }

    fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client the lease manager talks through: the operator's, with every
/// request (its answer read in full) bounded by [`REQUEST_TIMEOUT`], and
/// the time each successful write of the Lease was sent recorded. The time
/// sent, not answered: the lease's `renewTime` is from before it.
#[derive(Clone)]
struct LeaseClient {
    inner: Client,
    lease_path: Arc<str>,
    renewals: Renewals,
}

impl tower_service::Service<Request<Body>> for LeaseClient {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let writes_lease =
            request.method() != Method::GET && request.uri().path() == &*self.lease_path;
        let (inner, renewals) = (self.inner.clone(), self.renewals.clone());
        Box::pin(async move {
            let sent = Instant::now();
            let exchange = async {
                let (parts, body) = inner.send(request).await?.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, kube::Error>(Response::from_parts(parts, Body::from(body)))
            };
            let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| kube::Error::Service(Box::new(Error::Timeout(REQUEST_TIMEOUT))))??;
            if writes_lease && response.status().is_success() {
                renewals.record(sent);
            }
            Ok(response)
        })
    }
}

/// What the caller learns about leadership, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leading,
    Standby(String),
}

/// Runs `lead` while this replica holds the lease, and stands by otherwise,
/// until `shutdown`. `lead` gets a token cancelled when leadership is lost.
/// On shutdown a leader releases the lease, so that a standby takes over
/// without waiting for it to expire.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    settings: LeaseSettings,
    shutdown: CancellationToken,
    on_role: impl Fn(Role),
    lead: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let renewals = Renewals::default();
    let lease_client = Client::new(
        LeaseClient {
            inner: client,
            lease_path: settings.path().into(),
            renewals: renewals.clone(),
        },
        settings.namespace.clone(),
    );
    let Some(manager) = build(&lease_client, &settings, &shutdown).await else {
        return;
    };
    on_role(Role::Standby(holder(&lease_client, &settings).await));

    let mut holds = false;
    let mut term: Option<Term> = None;
    let mut change = Box::pin(next_change(&manager, Duration::ZERO));
    loop {
        // A leader looks again when its last renewal grows too old; a
        // standby whose manager holds the lease, when one may have succeeded.
        let wake = match (&term, renewals.last()) {
            (Some(_), Some(at)) => at + settings.give_up_after(),
            _ => Instant::now() + settings.renew_every,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            result = &mut change => {
                let retry = match result {
                    Ok(now_holds) => {
                        holds = now_holds;
                        Duration::ZERO
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot renew or read the leader lease");
                        RETRY
                    }
                };
                change.set(next_change(&manager, retry));
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let lead_now = may_lead(holds, renewals.last(), Instant::now(), &settings);
        if lead_now && term.is_none() {
            info!(identity = %settings.identity, "leader lease acquired; reconciling");
            on_role(Role::Leading);
            term = Some(Term::start(&shutdown, &lead));
        } else if !lead_now && let Some(ended) = term.take() {
            if holds {
                warn!(identity = %settings.identity, "leader lease not renewed in time; standing by");
            } else {
                warn!(identity = %settings.identity, "leader lease lost; standing by");
            }
            ended.stop().await;
            on_role(Role::Standby(holder(&lease_client, &settings).await));
        }
    }
    if let Some(ended) = term.take() {
        ended.stop().await;
    }
    drop(change);
    if holds {
        match tokio::time::timeout(REQUEST_TIMEOUT, manager.release()).await {
            Ok(Ok(())) => info!("leader lease released"),
            Ok(Err(e)) => {
                warn!(error = %e, "could not release the leader lease; the next leader waits for it to expire")
            }
            Err(_) => {
                warn!(
                    "releasing the leader lease timed out; the next leader waits for it to expire"
                )
            }
        }
    }
}

/// One term of leadership: the task reconciling, and what stops it.
struct Term {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Term {
    fn start<F, Fut>(shutdown: &CancellationToken, lead: &F) -> Term
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = shutdown.child_token();
        Term {
            task: tokio::spawn(lead(stop.clone())),
            stop,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The lease manager, once the Lease could be read (and created when
/// absent); `None` on shutdown before that.
async fn build(
    client: &Client,
    settings: &LeaseSettings,
    shutdown: &CancellationToken,
) -> Option<LeaseManager> {
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration.as_secs())
            // The manager renews this long before its lease expires.
            .with_grace(settings.give_up_after().as_secs())
            .build();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            built = built => match built {
                Ok(manager) => return Some(manager),
                Err(e) => warn!(error = %e, "cannot read the leader lease"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// The manager's next change of holding, after `delay`. It also keeps the
/// lease renewed while it runs, so one is always pending.
async fn next_change(manager: &LeaseManager, delay: Duration) -> Result<bool, Error> {
    tokio::time::sleep(delay).await;
    Ok(manager.changed().await?)
}

/// Who holds the lease, for readiness, as read now.
async fn holder(client: &Client, settings: &LeaseSettings) -> String {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    match api.get_opt(&settings.name).await {
        Ok(lease) => lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|holder| *holder != settings.identity)
            .unwrap_or_else(|| "no replica".to_string()),
        Err(_) => "another replica".to_string(),
    }
}

/// This replica's identity: the pod name when running in a pod.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "devenv-manager".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
