//! What every reconcile shares: the client, the configuration, the watch
//! caches of every kind the operator manages, the event recorder, metrics.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::Semaphore;

use super::cache::Cache;
use super::kinds::Managed;
use crate::config::OperatorConfig;
use crate::crd::{LearnerSpace, LearnerSpaceStatus};
use crate::metrics::Metrics;

/// Read-only views of the watch caches, kept current by the controller:
/// the LearnerSpaces' and one per managed kind.
#[derive(Clone)]
pub struct Stores {
    pub learner_spaces: Store<LearnerSpace>,
    pub managed: KindStores,
}

impl Stores {
    /// The cache of managed kind `K`.
    pub fn of<K: Managed>(&self) -> &Cache<K> {
        self.managed.get()
    }

    /// Whether every cache has its initial list. Until then "absent from the
    /// cache" does not mean absent, and acting on it would write needlessly.
    pub fn synced(&self) -> bool {
        ready(&self.learner_spaces) && self.managed.0.iter().all(|store| store.ready())
    }
}

/// One cache per managed kind, found by its type. [`KindStores::get`] of a
/// kind not inserted is a bug, so every constructor fills in all of
/// [`super::kinds::for_each`].
#[derive(Clone, Default)]
pub struct KindStores(Vec<Arc<dyn AnyStore>>);

impl KindStores {
    /// Adds (or replaces) the cache of kind `K`.
    pub fn insert<K: Managed>(&mut self, store: Cache<K>) {
        self.0.retain(|s| !s.as_any().is::<Cache<K>>());
        self.0.push(Arc::new(store));
    }

    pub fn get<K: Managed>(&self) -> &Cache<K> {
        self.0
            .iter()
            .find_map(|s| s.as_any().downcast_ref())
            .expect("every managed kind has a cache (kinds::for_each fills them in)")
    }

    /// A synced, empty cache of every managed kind: for tests of the
    /// reconciler without an API server.
    #[cfg(test)]
    pub fn synced_empty() -> KindStores {
        use super::kinds::{self, PerKind};
        struct Fill(KindStores);
        impl PerKind for Fill {
            fn kind<K: Managed>(&mut self) {
                let cache = Cache::<K>::default();
                cache.record(&kube::runtime::watcher::Event::Init);
                cache.record(&kube::runtime::watcher::Event::InitDone);
                self.0.insert::<K>(cache);
            }
        }
        let mut fill = Fill(KindStores::default());
        kinds::for_each(&mut fill);
        fill.0
    }
}

/// A cache of any managed kind, for what is done to each alike.
pub trait AnyStore: Send + Sync {
    fn ready(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<K: Managed> AnyStore for Cache<K> {
    fn ready(&self) -> bool {
        Cache::ready(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub stores: Stores,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub written: WrittenStatuses,
    pub applied: Arc<AppliedObjects>,
    pub released: Released,
    pub finalizing: FinalizerAdded,
    /// One permit per write in flight: `operator.maxInFlightWrites`.
    budget: Semaphore,
}

impl Context {
    /// `applied` is shared with the watches, which clear its entries.
    pub fn new(
        client: Client,
        config: OperatorConfig,
        stores: Stores,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        applied: Arc<AppliedObjects>,
    ) -> Context {
        Context {
            budget: Semaphore::new(config.max_in_flight_writes),
            client,
            config,
            stores,
            recorder,
            metrics,
            written: WrittenStatuses::default(),
            applied,
            released: Released::default(),
            finalizing: FinalizerAdded::default(),
        }
    }

    /// Runs `write` once a place in the write budget is free: however many
    /// reconciles run and however many objects each applies at once, the
    /// API server sees at most `maxInFlightWrites` of the operator's writes.
    pub async fn write<T>(&self, write: impl Future<Output = T>) -> T {
        // Never closed, so acquiring only waits.
        let _permit = self.budget.acquire().await;
        write.await
    }
}

/// What this operator applied that its cache may not show yet, by object
/// (`kind/namespace/name`), as a fingerprint of what was applied. An object
/// just created or repaired is absent from (or stale in) its cache until the
/// watch event of that write arrives; a reconcile in between (our own writes
/// trigger one) would apply it again. An entry lasts until the next watch
/// event for its object, which is our write's or a later change's: from
/// then on the cache comparison decides again, so a later edit or deletion
/// is still repaired.
#[derive(Default)]
pub struct AppliedObjects(Mutex<HashMap<String, u64>>);

impl AppliedObjects {
    pub fn key<K: Managed>(object: &K) -> String {
        let meta = object.meta();
        format!(
            "{}/{}/{}",
            K::kind(&()),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    /// Whether exactly `value` was applied to `key` since its last event.
    pub fn pending(&self, key: &str, value: &serde_json::Value) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key) == Some(&fingerprint(value))
    }

    pub fn record(&self, key: String, value: &serde_json::Value) {
        let print = fingerprint(value);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, print);
    }

    /// The watch saw `object` (any event): its cache is current again.
    pub fn seen<K: Managed>(&self, object: &K) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.is_empty() {
            map.remove(&Self::key(object));
        }
    }
}

fn fingerprint(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// The LearnerSpaces (by uid) this operator added the finalizer to, with
/// the resourceVersion it was added over. A reconcile of that same version
/// runs on a cache that has not seen the patch yet: the finalizer is there,
/// and adding it again would fail (the patch tests the list it read).
#[derive(Default)]
pub struct FinalizerAdded(Mutex<HashMap<String, String>>);

impl FinalizerAdded {
    pub fn record(&self, uid: &str, resource_version: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(uid.to_string(), resource_version.to_string());
    }

    /// Whether `resource_version` of `uid` is one the finalizer was added over.
    pub fn over(&self, uid: &str, resource_version: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(uid).is_some_and(|rv| rv == resource_version)
    }

    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// The LearnerSpaces (by uid) whose deletion this operator has finished:
/// tombstone written, namespace deletion asked for, finalizer removed. A
/// reconcile of one of them on a cache that has not yet seen it go (a
/// namespace event can trigger one) has nothing left to do, and doing it
/// again would write a second Event and a failing finalizer patch. Entries
/// leave with their LearnerSpace's uid from the cache ([`Released::retain`]).
#[derive(Default)]
pub struct Released(Mutex<HashSet<String>>);

impl Released {
    pub fn contains(&self, uid: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }

    pub fn insert(&self, uid: &str) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(uid.to_string());
    }

    /// Keeps only the uids `live` still holds.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.retain(|uid| live.contains(uid));
    }
}

/// The statuses this operator wrote, by LearnerSpace uid, with the
/// resourceVersion of the object they were written over. A reconcile that
/// runs again on that same version (the cache has not yet seen the write)
/// knows the status is already there, and writes neither it nor its Event
/// a second time. Only a fingerprint of each status is kept: this map has an
/// entry per LearnerSpace.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<String, (String, u64)>>);

impl WrittenStatuses {
    /// Whether `status` was written over `resource_version` of `uid`.
    pub fn already(&self, uid: &str, resource_version: &str, status: &LearnerSpaceStatus) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(uid).is_some_and(|(rv, print)| {
            rv == resource_version && *print == super::status::fingerprint(status)
        })
    }

    pub fn record(&self, uid: &str, resource_version: &str, status: &LearnerSpaceStatus) {
        let print = super::status::fingerprint(status);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(uid.to_string(), (resource_version.to_string(), print));
    }

    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn configmap(data: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "vault-secret-paths", "namespace": "aivo-learner-a"},
            "data": {"k": data}
        }))
        .unwrap()
    }

    #[test]
    fn an_applied_object_is_pending_until_its_next_watch_event() {
        let applied = AppliedObjects::default();
        let object = configmap("1");
        let key = AppliedObjects::key(&object);
        assert_eq!(key, "ConfigMap/aivo-learner-a/vault-secret-paths");
        let value = serde_json::to_value(&object).unwrap();
        assert!(!applied.pending(&key, &value));
        applied.record(key.clone(), &value);
        assert!(applied.pending(&key, &value));
        let other = serde_json::to_value(configmap("2")).unwrap();
        assert!(
            !applied.pending(&key, &other),
            "another wanted value is applied"
        );
        // Our write's event, or anyone's later one: the cache decides again.
        applied.seen(&configmap("edited"));
        assert!(!applied.pending(&key, &value));
    }

    #[test]
    fn released_learner_spaces_are_forgotten_once_gone() {
        let released = Released::default();
        released.insert("a");
        released.insert("b");
        released.retain(&HashSet::from(["b".to_string()]));
        assert!(!released.contains("a"));
        assert!(released.contains("b"));
    }

    #[test]
    fn the_finalizer_memory_names_the_version_it_was_added_over() {
        let added = FinalizerAdded::default();
        added.record("uid", "7");
        assert!(added.over("uid", "7"));
        assert!(!added.over("uid", "8"));
        added.forget("uid");
        assert!(!added.over("uid", "7"));
    }
}
