//! Leader election on a `coordination.k8s.io/v1` Lease, so that with several
//! replicas only one reconciles while all of them serve the webhook and API.
//!
//! The usual client-go scheme: the holder renews the lease every few seconds;
//! another replica takes it over once it has not been renewed for its
//! duration; every write carries the resourceVersion it read, so two replicas
//! can never both win. A leader that cannot renew steps down before its lease
//! could expire, and one shutting down releases the lease so the next takes
//! over at once. (The maintained lease crates depend on another major of kube,
//! hence this small one.)

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::k8s::ObjectMeta;

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
}

/// What to do about the lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it, holding it.
    Create,
    /// Ours, or free, or expired: write ourselves in (keeping its resourceVersion).
    Take { transition: bool },
    /// Held by another replica whose lease is still valid.
    Wait { holder: String },
}

/// Pure: decides from the lease as read, our identity and the time.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return Decision::Take {
            transition: holder != identity,
        };
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    match renewed {
        Some(at) if at + duration > now => Decision::Wait { holder },
        _ => Decision::Take { transition: true },
    }
}

/// The lease as we want it after taking or renewing it.
fn held(
    previous: Option<&Lease>,
    settings: &LeaseSettings,
    now: Timestamp,
    transition: bool,
) -> Lease {
    let spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(transition);
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            resource_version: previous.and_then(|l| l.resource_version()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(settings.duration.as_secs() as i32),
            acquire_time: if transition || spec.acquire_time.is_none() {
                Some(MicroTime(now))
            } else {
                spec.acquire_time
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// Tries once to hold the lease. Ok(None) when we hold it; Ok(Some(holder))
/// when another replica does.
async fn try_hold(
    api: &Api<Lease>,
    settings: &LeaseSettings,
) -> Result<Option<String>, kube::Error> {
    let current = api.get_opt(&settings.name).await?;
    let now = Timestamp::now();
    let result = match decide(current.as_ref(), &settings.identity, now) {
        Decision::Wait { holder } => return Ok(Some(holder)),
        Decision::Create => {
            api.create(&PostParams::default(), &held(None, settings, now, true))
                .await
        }
        Decision::Take { transition } => {
            let lease = held(current.as_ref(), settings, now, transition);
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(None),
        // Someone else wrote first: they hold it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some("another replica".to_string())),
        Err(e) => Err(e),
    }
}

/// Frees the lease on shutdown so that a standby takes over without waiting.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    if let Err(e) = api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        warn!(error = %e, "could not release the leader lease; the next leader waits for it to expire");
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
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut last_holder = String::new();
    while !shutdown.is_cancelled() {
        match try_hold(&api, &settings).await {
            Ok(None) => {
                info!(identity = %settings.identity, "leader lease acquired; reconciling");
                on_role(Role::Leading);
                let term = shutdown.child_token();
                let task = tokio::spawn(lead(term.clone()));
                keep_renewing(&api, &settings, &shutdown).await;
                term.cancel();
                let _ = task.await;
                if shutdown.is_cancelled() {
                    release(&api, &settings).await;
                    return;
                }
                warn!(identity = %settings.identity, "leader lease lost; standing by");
                last_holder.clear();
            }
            Ok(Some(holder)) => {
                if holder != last_holder {
                    info!(%holder, "another replica leads; standing by");
                    on_role(Role::Standby(holder.clone()));
                    last_holder = holder;
                }
            }
            Err(e) => warn!(error = %e, "cannot read the leader lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.renew_every) => {}
        }
    }
}

/// Renews until the lease is lost, renewing keeps failing for too long, or
/// shutdown.
async fn keep_renewing(api: &Api<Lease>, settings: &LeaseSettings, shutdown: &CancellationToken) {
    // Step down well before the lease could expire in others' eyes.
    let give_up_after = settings.duration.saturating_sub(settings.renew_every);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.renew_every) => {}
        }
        match try_hold(api, settings).await {
            Ok(None) => last_renewal = tokio::time::Instant::now(),
            Ok(Some(_)) => return,
            Err(e) => {
                warn!(error = %e, "cannot renew the leader lease");
                if last_renewal.elapsed() >= give_up_after {
                    return;
                }
            }
        }
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
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_at: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(0)), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 100, 15)), "a", at(105)),
            Decision::Take { transition: false }
        );
        assert_eq!(
            decide(Some(&lease(None, 100, 15)), "a", at(105)),
            Decision::Take { transition: true }
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 100, 15)), "a", at(114)),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 100, 15)), "a", at(115)),
            Decision::Take { transition: true }
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_keeps_the_version() {
        let settings = LeaseSettings::new("ns", "a".into());
        let mut previous = lease(Some("b"), 0, 15);
        previous.metadata.resource_version = Some("42".into());
        previous.spec.as_mut().unwrap().lease_transitions = Some(3);
        let next = held(Some(&previous), &settings, at(100), true);
        let spec = next.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(
            next.metadata.resource_version.as_deref(),
            Some("42"),
            "optimistic concurrency"
        );
    }
}
