//! What every reconcile shares: the client, the configuration, the watch
//! caches of every kind the operator manages, the event recorder, metrics.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::config::OperatorConfig;
use crate::crd::LearnerSpace;
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
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub config_maps: Store<ConfigMap>,
}

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub stores: Stores,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}
