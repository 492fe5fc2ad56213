//! What every reconcile shares: the client, the configuration, the watch
//! caches of every kind the operator manages, the event recorder, metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::config::OperatorConfig;
use crate::crd::{LearnerSpace, LearnerSpaceStatus};
use crate::metrics::Metrics;

/// Read-only views of the watch caches, kept current by the controller.
#[derive(Clone)]
pub struct Stores {
    pub learner_spaces: Store<LearnerSpace>,
    pub namespaces: Store<Namespace>,
    pub network_policies: Store<NetworkPolicy>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    pub service_accounts: Store<ServiceAccount>,
    pub role_bindings: Store<RoleBinding>,
    pub config_maps: Store<ConfigMap>,
}

impl Stores {
    /// Whether every cache has its initial list. Until then "absent from the
    /// cache" does not mean absent, and acting on it would write needlessly.
    pub fn synced(&self) -> bool {
        use futures::FutureExt;
        fn ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
        }
        ready(&self.learner_spaces)
            && ready(&self.namespaces)
            && ready(&self.network_policies)
            && ready(&self.quotas)
            && ready(&self.limit_ranges)
            && ready(&self.service_accounts)
            && ready(&self.role_bindings)
            && ready(&self.config_maps)
    }
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
