//! Which pods are a developer's (a pure rule), the watch cache they are read
//! from, and deletion with preconditions.
//!
//! Reads never call the API server: one reflector per devenv namespace keeps
//! the pods carrying a `developer` label in memory (as kube-rs' version-rs
//! serves from a `Store`). One watch per namespace, not one cluster-wide, so the
//! manager needs pod access only where devenv pods run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use super::error::ApiError;
use super::pod_index::DeveloperIndex;
use super::view::DEVELOPER_LABEL;
use crate::config::DevenvConfig;
use crate::k8s::{ApiErrorExt, Client, Pod, ResourceExt};
use crate::names::developer_from_service_account;

/// How long a delete may wait for the API server.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `pod` is `developer`'s: in a devenv namespace, labelled
/// `developer={developer}`, **and** running as `devenv-{developer}`. Both are
/// needed: the label alone can be set on any pod (one running as `default`
/// never reaches the webhook, so nothing checks it), and a pod runs with the
/// powers of its service account, so that is whose it really is. A pod with
/// only one of the two is nobody's.
pub fn is_developers_pod(config: &DevenvConfig, pod: &Pod, developer: &str) -> bool {
    let in_devenv_namespace = pod
        .metadata
        .namespace
        .as_ref()
        .is_some_and(|ns| config.namespaces.contains(ns));
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(DEVELOPER_LABEL))
        .is_some_and(|d| d == developer);
    in_devenv_namespace && labelled && runs_as(config, pod, developer)
}

/// Whether the pod's service account is `developer`'s. The API server fills
/// `serviceAccountName` from the deprecated `serviceAccount` when only that
/// is given; when both are set, both must name the developer.
fn runs_as(config: &DevenvConfig, pod: &Pod, developer: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let accounts: Vec<&str> = [
        spec.service_account_name.as_deref(),
        spec.service_account.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|sa| !sa.is_empty())
    .collect();
    !accounts.is_empty()
        && accounts
            .iter()
            .all(|sa| developer_from_service_account(config, sa) == Some(developer))
}

/// Sync state of one namespace's watch, read by every request.
#[derive(Debug, Default)]
struct WatchState {
    /// The initial list has completed at least once.
    synced: AtomicBool,
    /// The last thing the watch produced was an event, not an error.
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
struct NamespaceCache {
    namespace: String,
    store: Store<Pod>,
    /// The store's pods by `developer` label, from the same events.
    index: Arc<RwLock<DeveloperIndex>>,
    state: Arc<WatchState>,
}

/// The pods of every devenv namespace that carry a `developer` label.
#[derive(Debug, Clone)]
pub struct PodCache {
    namespaces: Vec<NamespaceCache>,
}

impl PodCache {
    /// The cache, and the future that fills it (run it until shutdown).
    pub fn start(
        client: &Client,
        namespaces: &[String],
    ) -> (
        PodCache,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut caches = Vec::new();
        let mut streams = Vec::new();
        for namespace in namespaces {
            let (store, writer) = reflector::store();
            let state = Arc::new(WatchState::default());
            let index = Arc::new(RwLock::new(DeveloperIndex::default()));
            let api = Api::<Pod>::namespaced(client.clone(), namespace);
            let config = watcher::Config::default().labels(DEVELOPER_LABEL);
            let stream = reflector(
                writer,
                // Managed fields and annotations (the last-applied
                // configuration, above all) are most of a pod's bytes, and
                // the API shows neither.
                watcher(api, config).default_backoff().modify(|pod| {
                    pod.managed_fields_mut().clear();
                    pod.annotations_mut().clear();
                }),
            );
            let (label, watched, indexed) = (namespace.clone(), state.clone(), index.clone());
            streams.push(stream.map(move |event| {
                if let Ok(event) = &event {
                    indexed
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(event);
                }
                (label.clone(), watched.clone(), event)
            }));
            caches.push(NamespaceCache {
                namespace: namespace.clone(),
                store,
                index,
                state,
            });
        }
        let driver = async move {
            let mut events = futures::stream::select_all(streams.into_iter().map(Box::pin));
            while let Some((namespace, state, event)) = events.next().await {
                record(&namespace, &state, event.map_err(|e| e.to_string()));
            }
        };
        (PodCache { namespaces: caches }, driver)
    }

    /// Whether every namespace has been listed and its watch is connected.
    pub fn is_synced(&self) -> bool {
        self.namespaces.iter().all(|n| n.readiness().is_ok())
    }

    /// The cached pods labelled `developer={developer}` in `namespace` (or
    /// in every devenv namespace) that also pass `keep`; 503 while a needed
    /// watch is not in sync. Reads only that developer's pods (the index),
    /// never every pod.
    pub fn list(
        &self,
        namespace: Option<&str>,
        developer: &str,
        keep: impl Fn(&Pod) -> bool,
    ) -> Result<Vec<Arc<Pod>>, ApiError> {
        let mut pods = Vec::new();
        for cache in self
            .namespaces
            .iter()
            .filter(|c| namespace.is_none_or(|ns| ns == c.namespace))
        {
            cache.readiness()?;
            let index = cache.index.read().unwrap_or_else(|p| p.into_inner());
            pods.extend(
                index
                    .pods_of(developer)
                    .filter_map(|name| {
                        cache
                            .store
                            .get(&ObjectRef::<Pod>::new(name).within(&cache.namespace))
                    })
                    .filter(|pod| keep(pod)),
            );
        }
        pods.sort_by(|a, b| {
            (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
                .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
        });
        Ok(pods)
    }

    /// One cached pod; `Ok(None)` when it is not there (or the namespace is
    /// not a devenv namespace).
    pub fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<Pod>>, ApiError> {
        let Some(cache) = self.namespaces.iter().find(|c| c.namespace == namespace) else {
            return Ok(None);
        };
        cache.readiness()?;
        Ok(cache
            .store
            .get(&ObjectRef::<Pod>::new(name).within(namespace)))
    }
}

impl NamespaceCache {
    fn readiness(&self) -> Result<(), ApiError> {
        if !self.state.connected.load(Ordering::Acquire) {
            let reason = self
                .state
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(ApiError::Unavailable(match reason {
                Some(reason) => format!(
                    "the Kubernetes API server is unreachable (watching pods in {}: {reason}); try again shortly",
                    self.namespace
                ),
                None => format!(
                    "the pod cache for namespace {} is still loading from the Kubernetes API server; try again shortly",
                    self.namespace
                ),
            }));
        }
        if !self.state.synced.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable(format!(
                "the pod cache for namespace {} is still loading from the Kubernetes API server; try again shortly",
                self.namespace
            )));
        }
        Ok(())
    }
}

/// Updates a namespace's sync state from one watch event, logging only the
/// transitions (a watch retrying every few seconds must not flood the log).
fn record(namespace: &str, state: &WatchState, event: Result<watcher::Event<Pod>, String>) {
    match event {
        Ok(event) => {
            if matches!(event, watcher::Event::InitDone) {
                state.synced.store(true, Ordering::Release);
            }
            // A relist after an error starts with `Init`: connected again, but
            // not in sync until `InitDone` (the store swaps in the new list then).
            let was_connected = state.connected.swap(true, Ordering::AcqRel);
            if !was_connected
                && state
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .is_some()
            {
                info!(namespace, "pod watch reconnected");
            }
        }
        Err(error) => {
            let was_connected = state.connected.swap(false, Ordering::AcqRel);
            if was_connected || !state.synced.load(Ordering::Acquire) {
                warn!(namespace, %error, "pod watch failed; the pod API answers 503 until it recovers");
            }
            *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        }
    }
}

/// What a successful delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The pod is gone (HTTP 200).
    Gone,
    /// Graceful deletion has started (HTTP 202).
    Terminating,
}

/// Deletes `pod` (as read from the cache) for `developer`, with the uid and
/// resourceVersion read as preconditions: if the pod changed in between
/// (relabelled, replaced, or updated), the API server refuses. Then the pod is
/// read afresh: if it is still the developer's, the delete is retried once with
/// the new preconditions; if not, the answer is 404 and nothing is deleted.
pub async fn delete_developers_pod(
    client: &Client,
    config: &DevenvConfig,
    developer: &str,
    pod: &Pod,
) -> Result<Deleted, ApiError> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let not_found = || ApiError::PodNotFound {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let api = Api::<Pod>::namespaced(client.clone(), &namespace);
    match delete_exactly(&api, pod).await {
        Err(DeleteError::Conflict) => {}
        Err(DeleteError::NotFound) => return Err(not_found()),
        Err(DeleteError::Api(e)) => return Err(e),
        Ok(deleted) => return Ok(deleted),
    }
    let fresh = match with_timeout(api.get_opt(&name)).await? {
        Some(fresh) if is_developers_pod(config, &fresh, developer) => fresh,
        _ => return Err(not_found()),
    };
    match delete_exactly(&api, &fresh).await {
        Ok(deleted) => Ok(deleted),
        Err(DeleteError::NotFound) => Err(not_found()),
        Err(DeleteError::Conflict) => Err(ApiError::Conflict(format!(
            "pod {namespace}/{name} kept changing while it was being deleted; it was not deleted, try again"
        ))),
        Err(DeleteError::Api(e)) => Err(e),
    }
}

/// What a successful delete did, from the API server's answer: the pod as
/// it was when the delete took effect, or a Status (`None`).
///
/// The API server answers with the Pod both when graceful deletion has
/// started and when it removed the pod at once: a pod that was never
/// scheduled, or has finished, gets a grace period of 0 and, without
/// finalizers, goes before the answer is sent. So the kind of the answer
/// says nothing; its deletion timestamp, grace period and finalizers do.
pub fn outcome(answer: Option<&Pod>) -> Deleted {
    let Some(pod) = answer else {
        return Deleted::Gone;
    };
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_none() {
        // Removed without the graceful path (nothing marked it for later).
        return Deleted::Gone;
    }
    let finalizers_left = meta.finalizers.as_ref().is_some_and(|f| !f.is_empty());
    let grace = meta.deletion_grace_period_seconds.unwrap_or(0);
    if finalizers_left || grace > 0 {
        // Still stored: the kubelet stops it within `grace` seconds, or the
        // finalizers' owners let it go.
        Deleted::Terminating
    } else {
        Deleted::Gone
    }
}

enum DeleteError {
    Conflict,
    NotFound,
    Api(ApiError),
}

/// One delete of exactly this version of the pod.
async fn delete_exactly(api: &Api<Pod>, pod: &Pod) -> Result<Deleted, DeleteError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: pod.resource_version(),
        }),
        ..DeleteParams::default()
    };
    let deleted = tokio::time::timeout(DELETE_TIMEOUT, api.delete(&pod.name_any(), &params)).await;
    match deleted {
        Ok(Ok(answer)) => Ok(outcome(answer.as_ref().left())),
        Ok(Err(e)) if e.is_conflict() => Err(DeleteError::Conflict),
        Ok(Err(e)) if e.is_not_found() => Err(DeleteError::NotFound),
        Ok(Err(e)) => Err(DeleteError::Api(upstream_error("delete the pod", e))),
        Err(_) => Err(DeleteError::Api(ApiError::Unavailable(format!(
            "the Kubernetes API server did not answer the delete within {DELETE_TIMEOUT:?}"
        )))),
    }
}

async fn with_timeout<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(DELETE_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| upstream_error("read the pod", e)),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the Kubernetes API server did not answer within {DELETE_TIMEOUT:?}"
        ))),
    }
}

/// A failed call to the API server, as the pod API reports it: always 503
/// (the request was fine; the manager could not carry it out), with what the
/// API server said.
pub fn upstream_error(what: &str, error: kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => ApiError::Unavailable(format!(
            "the Kubernetes API server refused to {what}: {} ({})",
            status.message, status.code
        )),
        other => ApiError::Unavailable(format!(
            "the Kubernetes API server is unreachable (could not {what}): {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, label: Option<&str>, sa: Option<&str>) -> Pod {
        let mut json = serde_json::json!({
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c"}]}
        });
        if let Some(label) = label {
            json["metadata"]["labels"] = serde_json::json!({ "developer": label });
        }
        if let Some(sa) = sa {
            json["spec"]["serviceAccountName"] = sa.into();
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ownership_needs_the_label_and_the_service_account() {
        let c = DevenvConfig::default();
        let mine = |p: &Pod| is_developers_pod(&c, p, "alice");
        assert!(mine(&pod("devenv", Some("alice"), Some("devenv-alice"))));
        // The label alone: no service account, `default` (never sent to the
        // webhook, so its label was never checked), a reserved account.
        assert!(!mine(&pod("devenv", Some("alice"), None)));
        assert!(!mine(&pod("devenv", Some("alice"), Some("default"))));
        assert!(!mine(&pod("devenv", Some("alice"), Some(""))));
        assert!(!mine(&pod(
            "devenv",
            Some("alice"),
            Some("devenv-user-template")
        )));
        // The service account alone, or with another developer's label.
        assert!(!mine(&pod("devenv", Some("bob"), Some("devenv-alice"))));
        assert!(!mine(&pod("devenv", None, Some("devenv-alice"))));
        assert!(!mine(&pod("devenv", Some("Alice"), Some("devenv-alice"))));
        // Labelled alice but running as bob: bob's powers, never alice's pod.
        assert!(!mine(&pod("devenv", Some("alice"), Some("devenv-bob"))));
        // Outside the devenv namespaces.
        assert!(!mine(&pod("default", Some("alice"), Some("devenv-alice"))));
    }

    #[test]
    fn the_deprecated_service_account_field_counts_too() {
        let c = DevenvConfig::default();
        let mut p = pod("devenv", Some("alice"), None);
        p.spec.as_mut().unwrap().service_account = Some("devenv-alice".into());
        assert!(is_developers_pod(&c, &p, "alice"), "the only name given");
        p.spec.as_mut().unwrap().service_account = Some("devenv-bob".into());
        assert!(!is_developers_pod(&c, &p, "alice"));
        p.spec.as_mut().unwrap().service_account_name = Some("devenv-alice".into());
        assert!(!is_developers_pod(&c, &p, "alice"), "both must agree");
    }

    fn answer(deletion: Option<(&str, i64)>, finalizers: &[&str]) -> Pod {
        let mut p = pod("devenv", Some("alice"), Some("devenv-alice"));
        if let Some((timestamp, grace)) = deletion {
            let json = serde_json::json!({
                "deletionTimestamp": timestamp,
                "deletionGracePeriodSeconds": grace,
            });
            let meta: kube::api::ObjectMeta = serde_json::from_value(json).unwrap();
            p.metadata.deletion_timestamp = meta.deletion_timestamp;
            p.metadata.deletion_grace_period_seconds = meta.deletion_grace_period_seconds;
        }
        if !finalizers.is_empty() {
            p.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        }
        p
    }

    #[test]
    fn a_pod_removed_at_once_is_gone_even_though_the_answer_is_a_pod() {
        // What the API server answers for an unscheduled or finished pod:
        // the object, stamped with grace period 0, already out of storage.
        let removed = answer(Some(("2026-01-01T00:00:00Z", 0)), &[]);
        assert_eq!(outcome(Some(&removed)), Deleted::Gone);
        // A Status answer, and a Pod that never entered graceful deletion.
        assert_eq!(outcome(None), Deleted::Gone);
        assert_eq!(outcome(Some(&answer(None, &[]))), Deleted::Gone);
    }

    #[test]
    fn a_running_pod_or_one_held_by_finalizers_is_terminating() {
        let graceful = answer(Some(("2026-01-01T00:00:30Z", 30)), &[]);
        assert_eq!(outcome(Some(&graceful)), Deleted::Terminating);
        let held = answer(Some(("2026-01-01T00:00:00Z", 0)), &["example.com/keep"]);
        assert_eq!(outcome(Some(&held)), Deleted::Terminating);
    }

    #[test]
    fn upstream_errors_are_503_with_the_api_servers_words() {
        let status = kube::core::Status::failure("pods is forbidden", "Forbidden").with_code(403);
        let error = upstream_error("delete the pod", kube::Error::Api(Box::new(status)));
        assert_eq!(error.status().as_u16(), 503);
        assert!(error.to_string().contains("pods is forbidden"), "{error}");
    }
}
