//! Counting requests in the local bed's audit log. The bed is shared by
//! every test of a process, so counts are always of one user's requests.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{TestBed, WRITE_VERBS, poll, unique_name};

impl TestBed {
    /// How many write requests (create, update, patch, delete, deletecollection;
    /// allowed or denied) `username` has made so far, according to the audit log.
    /// The user is the effective one: the impersonated user if any.
    ///
    /// The API server writes an event just after it has sent the response, so a
    /// request the test has just seen complete may not be counted yet: use
    /// [`TestBed::count_writes_settled`] for an exact count.
    ///
    /// Panics on a real cluster; check [`TestBed::audit_log_path`] first.
    pub fn count_writes(&self, username: &str) -> usize {
        let path = self
            .audit_log_path()
            .expect("count_writes needs the local test bed's audit log");
        audit_events(path)
            .filter(|e| is_write(e) && effective_user(e) == Some(username))
            .count()
    }

    /// Like [`TestBed::count_writes`], but first waits until every request that
    /// completed before this call is in the audit log. It does so with a marker:
    /// a dry-run ConfigMap create by the admin user (which therefore counts as an
    /// admin write) whose event it waits for.
    pub async fn count_writes_settled(&self, username: &str) -> usize {
        self.settle_audit_log().await;
        self.count_writes(username)
    }

    /// The write requests of `username` per resource (`namespaces`,
    /// `leases`...), once the audit log has caught up.
    pub async fn writes_by_resource_settled(
        &self,
        username: &str,
    ) -> std::collections::BTreeMap<String, usize> {
        self.settle_audit_log().await;
        let path = self
            .audit_log_path()
            .expect("needs the local test bed's audit log");
        let mut counts = std::collections::BTreeMap::new();
        for event in
            audit_events(path).filter(|e| is_write(e) && effective_user(e) == Some(username))
        {
            *counts.entry(resource(&event)).or_insert(0) += 1;
        }
        counts
    }

    /// The write requests of `username` by verb and resource (`create
    /// namespaces`, `patch learnerspaces/status`...), and how many of them
    /// the API server answered 429 (priority and fairness turned them away:
    /// the client had to retry), once the audit log has caught up.
    pub async fn writes_settled(&self, username: &str) -> Writes {
        self.settle_audit_log().await;
        let path = self
            .audit_log_path()
            .expect("needs the local test bed's audit log");
        let mut writes = Writes::default();
        for event in
            audit_events(path).filter(|e| is_write(e) && effective_user(e) == Some(username))
        {
            let verb = event["verb"].as_str().unwrap_or("?");
            let key = format!("{verb} {}", resource(&event));
            *writes.by_verb_resource.entry(key).or_insert(0) += 1;
            if event["responseStatus"]["code"] == 429 {
                writes.throttled += 1;
            }
        }
        writes
    }

    /// Waits until every request completed before this call is in the audit log.
    async fn settle_audit_log(&self) {
        let path = self
            .audit_log_path()
            .expect("settling needs the local test bed's audit log");
        let marker = unique_name("audit-marker");
        let configmap = ConfigMap {
            metadata: ObjectMeta {
                name: Some(marker.clone()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        Api::<ConfigMap>::namespaced(self.client().await, "default")
            .create(&pp, &configmap)
            .await
            .expect("creating the audit marker (dry run)");
        let found = poll(Duration::from_secs(10), || {
            audit_events(path).any(|e| {
                e["stage"] == "ResponseComplete" && e["objectRef"]["name"] == marker.as_str()
            })
        })
        .await;
        assert!(
            found,
            "audit marker {marker} never reached {}",
            path.display()
        );
    }
}

/// The audit log's events; lines that do not parse (e.g. one being written) are
/// skipped.
fn audit_events(path: &Path) -> impl Iterator<Item = serde_json::Value> {
    let lines = File::open(path)
        .map(|f| BufReader::new(f).lines())
        .into_iter()
        .flatten();
    lines
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
}

/// Write requests counted from the audit log: see [`TestBed::writes_settled`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    pub by_verb_resource: std::collections::BTreeMap<String, usize>,
    pub throttled: usize,
}

impl Writes {
    /// All of them but those to `resource` (e.g. `leases`, which a leader
    /// renews whatever else it does).
    pub fn total_except(&self, resource: &str) -> usize {
        self.by_verb_resource
            .iter()
            .filter(|(key, _)| key.rsplit(' ').next() != Some(resource))
            .map(|(_, n)| n)
            .sum()
    }
}

/// `resource` or `resource/subresource`, as an event names it.
fn resource(event: &serde_json::Value) -> String {
    let resource = event["objectRef"]["resource"].as_str().unwrap_or("?");
    match event["objectRef"]["subresource"].as_str() {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    }
}

fn is_write(event: &serde_json::Value) -> bool {
    event["stage"] == "ResponseComplete"
        && event["verb"]
            .as_str()
            .is_some_and(|verb| WRITE_VERBS.contains(&verb))
}

fn effective_user(event: &serde_json::Value) -> Option<&str> {
    event["impersonatedUser"]["username"]
        .as_str()
        .or_else(|| event["user"]["username"].as_str())
}
