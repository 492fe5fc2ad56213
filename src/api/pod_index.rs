//! Which cached pods carry which `developer` label, so that a developer's
//! list reads only that developer's pods instead of scanning every pod of
//! every devenv namespace (thousands, on a course platform). Kept beside the
//! reflector's store from the same watch events, and rebuilt the same way
//! on a relist (buffered from `Init` to `InitDone`, then swapped in).

use std::collections::{BTreeSet, HashMap};

use kube::runtime::watcher;

use super::view::DEVELOPER_LABEL;
use crate::k8s::Pod;

/// A pod's name in its namespace.
type Name = String;

#[derive(Debug, Default)]
pub struct DeveloperIndex {
    by_developer: HashMap<String, BTreeSet<Name>>,
    of_pod: HashMap<Name, String>,
    /// The relist in progress, swapped in at `InitDone`.
    relisting: Option<Vec<(Name, String)>>,
}

fn key(pod: &Pod) -> Option<(Name, String)> {
    let name = pod.metadata.name.clone()?;
    let developer = pod.metadata.labels.as_ref()?.get(DEVELOPER_LABEL)?.clone();
    Some((name, developer))
}

impl DeveloperIndex {
    /// Follows one event of the namespace's watch.
    pub fn record(&mut self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => self.apply(pod),
            watcher::Event::Delete(pod) => {
                if let Some(name) = &pod.metadata.name {
                    self.remove(name);
                }
            }
            watcher::Event::Init => self.relisting = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(relist), Some(entry)) = (&mut self.relisting, key(pod)) {
                    relist.push(entry);
                }
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                self.by_developer.clear();
                self.of_pod.clear();
                for (name, developer) in listed {
                    self.insert(name, developer);
                }
            }
        }
    }

    /// The names of `developer`'s labelled pods, sorted.
    pub fn pods_of(&self, developer: &str) -> impl Iterator<Item = &str> {
        self.by_developer
            .get(developer)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    fn apply(&mut self, pod: &Pod) {
        let Some(name) = &pod.metadata.name else {
            return;
        };
        // The label can change (or go) on an update: index it afresh.
        self.remove(name);
        if let Some((name, developer)) = key(pod) {
            self.insert(name, developer);
        }
    }

    fn insert(&mut self, name: Name, developer: String) {
        self.by_developer
            .entry(developer.clone())
            .or_default()
            .insert(name.clone());
        self.of_pod.insert(name, developer);
    }

    fn remove(&mut self, name: &str) {
        if let Some(developer) = self.of_pod.remove(name)
            && let Some(names) = self.by_developer.get_mut(&developer)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_developer.remove(&developer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, developer: Option<&str>) -> Pod {
        let labels = developer.map(|d| json!({DEVELOPER_LABEL: d}));
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn names<'a>(index: &'a DeveloperIndex, developer: &str) -> Vec<&'a str> {
        index.pods_of(developer).collect()
    }

    #[test]
    fn follows_applies_relabels_and_deletes() {
        let mut index = DeveloperIndex::default();
        index.record(&watcher::Event::Apply(pod("b", Some("alice"))));
        index.record(&watcher::Event::Apply(pod("a", Some("alice"))));
        index.record(&watcher::Event::Apply(pod("c", Some("bob"))));
        assert_eq!(names(&index, "alice"), ["a", "b"]);
        assert_eq!(names(&index, "bob"), ["c"]);
        index.record(&watcher::Event::Apply(pod("b", Some("bob"))));
        assert_eq!(names(&index, "alice"), ["a"]);
        assert_eq!(names(&index, "bob"), ["b", "c"]);
        index.record(&watcher::Event::Apply(pod("a", None)));
        assert!(names(&index, "alice").is_empty());
        index.record(&watcher::Event::Delete(pod("c", Some("bob"))));
        assert_eq!(names(&index, "bob"), ["b"]);
        assert!(names(&index, "nobody").is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_is_done() {
        let mut index = DeveloperIndex::default();
        index.record(&watcher::Event::Apply(pod("gone", Some("alice"))));
        index.record(&watcher::Event::Init);
        index.record(&watcher::Event::InitApply(pod("new", Some("alice"))));
        // Until the relist is done the old index answers, as the store does.
        assert_eq!(names(&index, "alice"), ["gone"]);
        index.record(&watcher::Event::InitDone);
        assert_eq!(names(&index, "alice"), ["new"]);
    }
}
