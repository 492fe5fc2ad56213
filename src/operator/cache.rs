//! The watch cache of one managed kind, holding each object as its JSON
//! text (managed fields dropped) rather than as a typed object.
//!
//! Why: with 10,000 learners the operator watches 110,000 objects. As
//! k8s-openapi values they cost about 2.5 KB each (every label map, selector
//! and quota is a `BTreeMap`, which allocates a node of eleven entries
//! whatever it holds; every `ObjectMeta` is two dozen fields); as JSON text a
//! few hundred bytes. The cache is read only by a reconcile, a dozen
//! lookups each, so parsing on the way out costs microseconds where the
//! typed cache cost hundreds of megabytes.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use serde_json::Value;

use super::kinds::Managed;

/// Namespace (none for a cluster-scoped kind) and name.
type Key = (Option<String>, String);

/// A cache of kind `K` fed by [`Cache::record`] with its watch's events;
/// clones share it.
pub struct Cache<K> {
    state: Arc<RwLock<State>>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            state: self.state.clone(),
            kind: PhantomData,
        }
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<Key, Box<str>>,
    /// A relist in progress: what it has listed so far. The objects stay
    /// as they were until it is done, like kube-runtime's reflector.
    relisting: Option<HashMap<Key, Box<str>>>,
    /// An initial list has completed.
    ready: bool,
}

impl<K: Managed> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            state: Default::default(),
            kind: PhantomData,
        }
    }
}

impl<K: Managed> Cache<K> {
    /// Follows one event of the kind's watch.
    pub fn record(&self, event: &Event<K>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(object) => {
                if let Some((key, json)) = entry(object) {
                    state.objects.insert(key, json);
                }
            }
            Event::Delete(object) => {
                if let Some((key, _)) = entry(object) {
                    state.objects.remove(&key);
                }
            }
            Event::Init => state.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(listed), Some((key, json))) = (&mut state.relisting, entry(object)) {
                    listed.insert(key, json);
                }
            }
            Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                state.objects = listed;
                state.ready = true;
            }
        }
    }

    /// Whether an initial list has completed: until then "absent" does not
    /// mean absent.
    pub fn ready(&self) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// The cached object `name` (in `namespace`) as JSON.
    pub fn json(&self, namespace: Option<&str>, name: &str) -> Option<Value> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let text = state
            .objects
            .get(&(namespace.map(str::to_owned), name.to_owned()))?;
        serde_json::from_str(text).ok()
    }

    /// The cached object `name` (in `namespace`).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        serde_json::from_value(self.json(namespace, name)?).ok()
    }
}

/// What of a watched object no reconcile reads, left out of the cache: the
/// operator never sets or compares a managed object's status (a
/// ResourceQuota's changes with every pod), creation time or generation.
/// (The watch already dropped the managed fields.)
const UNREAD: [&[&str]; 3] = [
    &["status"],
    &["metadata", "creationTimestamp"],
    &["metadata", "generation"],
];

/// The key and JSON text of a watched object; none for an object without
/// a name.
fn entry<K: Managed>(object: &K) -> Option<(Key, Box<str>)> {
    let meta = object.meta();
    let key = (meta.namespace.clone(), meta.name.clone()?);
    let mut json = serde_json::to_value(object).ok()?;
    for path in UNREAD {
        let (last, parents) = path.split_last()?;
        let parent = parents.iter().try_fold(&mut json, |v, k| v.get_mut(*k));
        if let Some(serde_json::Value::Object(map)) = parent {
            map.remove(*last);
        }
    }
    Some((key, json.to_string().into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "data": {"role": value},
        }))
        .unwrap()
    }

    #[test]
    fn follows_applies_and_deletes_once_listed() {
        let cache = Cache::<ConfigMap>::default();
        assert!(!cache.ready());
        cache.record(&Event::Init);
        cache.record(&Event::InitApply(config_map("a", "1")));
        // Not ready (and not holding "a") until the list is done.
        assert!(!cache.ready() && cache.get(Some("ns"), "a").is_none());
        cache.record(&Event::InitDone);
        assert!(cache.ready());
        assert_eq!(cache.json(Some("ns"), "a").unwrap()["data"]["role"], "1");
        cache.record(&Event::Apply(config_map("a", "2")));
        cache.record(&Event::Apply(config_map("b", "3")));
        assert_eq!(
            cache.get(Some("ns"), "a").unwrap().data.unwrap()["role"],
            "2"
        );
        cache.record(&Event::Delete(config_map("b", "3")));
        assert!(cache.get(Some("ns"), "b").is_none());
        assert!(
            cache.get(None, "a").is_none(),
            "namespaced: the namespace is part of the key"
        );
    }

    #[test]
    fn what_no_reconcile_reads_is_left_out() {
        let cache = Cache::<ConfigMap>::default();
        let mut object = config_map("a", "1");
        object.metadata.generation = Some(3);
        object.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-01T00:00:00Z".parse().unwrap(),
            ));
        object.metadata.resource_version = Some("42".into());
        cache.record(&Event::Apply(object));
        let json = cache.json(Some("ns"), "a").unwrap();
        assert_eq!(
            json["metadata"],
            json!({"name": "a", "namespace": "ns", "resourceVersion": "42"})
        );
        assert_eq!(json["data"]["role"], "1");
    }

    #[test]
    fn a_relist_replaces_what_it_held_when_it_is_done() {
        let cache = Cache::<ConfigMap>::default();
        cache.record(&Event::Init);
        cache.record(&Event::InitApply(config_map("gone", "1")));
        cache.record(&Event::InitDone);
        cache.record(&Event::Init);
        cache.record(&Event::InitApply(config_map("kept", "1")));
        // Still the old view while relisting.
        assert!(cache.get(Some("ns"), "gone").is_some());
        cache.record(&Event::InitDone);
        assert!(cache.get(Some("ns"), "gone").is_none());
        assert!(cache.get(Some("ns"), "kept").is_some());
        assert!(cache.ready());
    }
}
