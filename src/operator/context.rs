//! What every reconcile shares: the client, the configuration, the watch
//! caches of every kind the operator manages, the event recorder, metrics.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

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
    pub fn of<K: Managed>(&self) -> &Store<K> {
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
    pub fn insert<K: Managed>(&mut self, store: Store<K>) {
        self.0.retain(|s| !s.as_any().is::<Store<K>>());
        self.0.push(Arc::new(store));
    }

    pub fn get<K: Managed>(&self) -> &Store<K> {
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
                let (reader, mut writer) = kube::runtime::reflector::store();
                writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
                writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
                self.0.insert::<K>(reader);
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

impl<K: Managed> AnyStore for Store<K> {
    fn ready(&self) -> bool {
        ready(self)
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
