//! Every object a LearnerSpace needs, as plain values: the namespace, its
//! network policies, quota, limit range, RBAC (a binding of the
//! `devenv-learner` ClusterRole) and Vault wiring. Pure: a
//! LearnerSpace and the configuration in, typed objects out; no API in sight.
//! `devenv-manager render` prints them; the reconciler applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota,
    ResourceQuotaSpec, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use super::kinds::Desired;
use crate::config::OperatorConfig;
use crate::crd::LearnerSpace;
use crate::k8s::ObjectMeta;
use crate::names;
use crate::quantity::Quantity;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "devenv-manager";
pub const LEARNERSPACE_LABEL: &str = "aivo.dev/learnerspace";
pub const COMPONENT_LABEL: &str = "aivo.dev/component";
pub const LEARNER_ID_ANNOTATION: &str = "aivo.dev/learner-id";
pub const VAULT_ROLE_ANNOTATION: &str = "vault.hashicorp.com/role";
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
pub const QUOTA_NAME: &str = "learner-quota";
pub const LIMITS_NAME: &str = "learner-limits";
/// The learner's service account and role binding share this name.
pub const RBAC_NAME: &str = "learner";
/// The ClusterRole installed with the manager (`deploy/rbac.yaml`) that each
/// learner namespace's RoleBinding grants there. The manager holds `bind` on
/// it, not its rules.
pub const LEARNER_CLUSTER_ROLE: &str = "devenv-learner";
pub const VAULT_CONFIGMAP: &str = "vault-secret-paths";
pub const VAULT_SECRETS: [&str; 3] = ["api-keys", "database", "external-services"];

/// The LearnerSpace's settings with the operator's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub name: String,
    pub learner_id: String,
    pub namespace: String,
    pub subjects: Vec<String>,
    pub cpu: String,
    pub memory: String,
    pub storage: String,
    pub ephemeral_storage: String,
    pub pods: i64,
    pub services: i64,
    pub secrets: i64,
    pub configmaps: i64,
    pub egress_deny: bool,
    pub allowed_namespaces: Vec<String>,
    pub vault_role: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("metadata.name is missing")]
    NoName,
    #[error(
        "metadata.name {0:?} is longer than 63 characters, so it cannot label the learner's objects"
    )]
    NameTooLong(String),
    #[error("spec.learnerId {0:?} does not name a namespace")]
    BadLearnerId(String),
}

impl Effective {
    pub fn resolve(ls: &LearnerSpace, config: &OperatorConfig) -> Result<Effective, BuildError> {
        let name = ls.metadata.name.clone().ok_or(BuildError::NoName)?;
        if name.len() > 63 {
            return Err(BuildError::NameTooLong(name));
        }
        let spec = &ls.spec;
        if !names::sanitizes_to_non_empty(&spec.learner_id) {
            return Err(BuildError::BadLearnerId(spec.learner_id.clone()));
        }
        let quota = spec.resource_quota.clone().unwrap_or_default();
        let defaults = &config.default_resource_quota;
        let policy = spec.network_policy.clone().unwrap_or_default();
        let policy_defaults = &config.default_network_policy;
        Ok(Effective {
            namespace: names::learner_namespace(&spec.learner_id),
            learner_id: spec.learner_id.clone(),
            subjects: spec.subjects.clone(),
            cpu: quota
                .cpu
                .map(|q| q.0)
                .unwrap_or_else(|| defaults.cpu.clone()),
            memory: quota
                .memory
                .map(|q| q.0)
                .unwrap_or_else(|| defaults.memory.clone()),
            storage: quota
                .storage
                .map(|q| q.0)
                .unwrap_or_else(|| defaults.storage.clone()),
            ephemeral_storage: quota
                .ephemeral_storage
                .map(|q| q.0)
                .unwrap_or_else(|| defaults.ephemeral_storage.clone()),
            pods: quota.pods.unwrap_or(defaults.pods),
            services: quota.services.unwrap_or(defaults.services),
            secrets: quota.secrets.unwrap_or(defaults.secrets),
            configmaps: quota.configmaps.unwrap_or(defaults.configmaps),
            egress_deny: policy.egress_deny.unwrap_or(policy_defaults.egress_deny),
            allowed_namespaces: policy
                .allowed_namespaces
                .unwrap_or_else(|| policy_defaults.allowed_namespaces.clone()),
            vault_role: spec
                .vault_role
                .clone()
                .unwrap_or_else(|| config.default_vault_role.clone()),
            name,
        })
    }
}

/// The objects for one LearnerSpace (the managed kinds are listed in
/// [`super::kinds`]).
pub fn desired(ls: &LearnerSpace, config: &OperatorConfig) -> Result<Desired, BuildError> {
    Ok(Desired::build(&Effective::resolve(ls, config)?, config))
}

/// Labels every managed object carries: how the operator finds them again.
pub fn managed_labels(e: &Effective, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (LEARNERSPACE_LABEL.to_string(), e.name.clone()),
        (COMPONENT_LABEL.to_string(), component.to_string()),
    ])
}

fn meta(e: &Effective, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(e.namespace.clone()),
        labels: Some(managed_labels(e, component)),
        ..Default::default()
    }
}

pub fn namespace(e: &Effective) -> Namespace {
    let mut labels = managed_labels(e, "learner-namespace");
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(e.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                LEARNER_ID_ANNOTATION.to_string(),
                e.learner_id.clone(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn namespace_peer(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
            match_expressions: None,
        }),
        ..Default::default()
    }
}

fn same_namespace_peer() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }
}

fn policy(
    e: &Effective,
    name: &str,
    types: &[&str],
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(e, name, "network-policy"),
        spec: Some(NetworkPolicySpec {
            // Every pod of the namespace.
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(types.iter().map(|t| t.to_string()).collect()),
            ingress,
            egress,
        }),
    }
}

/// Default deny, then allow exactly: ingress from the namespace and the
/// operator's namespace; with `egressDeny`, egress to the namespace, to each
/// allowed namespace, and DNS in kube-system. Never another learner.
pub fn network_policies(e: &Effective, operator_namespace: &str) -> Vec<NetworkPolicy> {
    let allow_ingress = policy(
        e,
        "allow-ingress",
        &["Ingress"],
        Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![
                same_namespace_peer(),
                namespace_peer(operator_namespace),
            ]),
            ports: None,
        }]),
        None,
    );
    if !e.egress_deny {
        return vec![
            policy(e, "deny-all-ingress", &["Ingress"], None, None),
            allow_ingress,
        ];
    }
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.to_string()),
        end_port: None,
    };
    let mut policies = vec![
        policy(e, "deny-all", &["Ingress", "Egress"], None, None),
        allow_ingress,
        policy(
            e,
            "allow-egress-same-namespace",
            &["Egress"],
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![same_namespace_peer()]),
                ports: None,
            }]),
        ),
        policy(
            e,
            "allow-egress-dns",
            &["Egress"],
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![namespace_peer("kube-system")]),
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
            }]),
        ),
    ];
    if !e.allowed_namespaces.is_empty() {
        policies.push(policy(
            e,
            "allow-egress-allowed-namespaces",
            &["Egress"],
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(
                    e.allowed_namespaces
                        .iter()
                        .map(|n| namespace_peer(n))
                        .collect(),
                ),
                ports: None,
            }]),
        ));
    }
    policies
}

/// Names of the network policies `network_policies` may create, so the
/// reconciler can remove the ones a change of settings made obsolete.
pub const NETWORK_POLICY_NAMES: [&str; 6] = [
    "deny-all",
    "deny-all-ingress",
    "allow-ingress",
    "allow-egress-same-namespace",
    "allow-egress-dns",
    "allow-egress-allowed-namespaces",
];

fn quantity(text: &str) -> K8sQuantity {
    K8sQuantity(text.to_string())
}

pub fn quota(e: &Effective) -> ResourceQuota {
    let hard = BTreeMap::from([
        ("requests.cpu".to_string(), quantity(&e.cpu)),
        ("limits.cpu".to_string(), quantity(&e.cpu)),
        ("requests.memory".to_string(), quantity(&e.memory)),
        ("limits.memory".to_string(), quantity(&e.memory)),
        ("requests.storage".to_string(), quantity(&e.storage)),
        (
            "requests.ephemeral-storage".to_string(),
            quantity(&e.ephemeral_storage),
        ),
        (
            "limits.ephemeral-storage".to_string(),
            quantity(&e.ephemeral_storage),
        ),
        ("pods".to_string(), quantity(&e.pods.to_string())),
        ("services".to_string(), quantity(&e.services.to_string())),
        ("secrets".to_string(), quantity(&e.secrets.to_string())),
        (
            "configmaps".to_string(),
            quantity(&e.configmaps.to_string()),
        ),
    ]);
    ResourceQuota {
        metadata: meta(e, QUOTA_NAME, "resource-quota"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        status: None,
    }
}

/// The smaller of a preferred default and the quota, so a pod without
/// resources always fits under the quota.
fn capped(preferred: &str, quota: &str) -> String {
    match (Quantity::parse(preferred), Quantity::parse(quota)) {
        (Ok(p), Ok(q)) if q < p => quota.to_string(),
        _ => preferred.to_string(),
    }
}

/// Container defaults: requests 100m CPU, 128Mi memory, 256Mi ephemeral
/// storage; limits 500m, 512Mi, 1Gi; each capped by the quota. The quota
/// covers requests and limits of all three, so without these a pod that
/// sets no resources would be refused.
pub fn limit_range(e: &Effective) -> LimitRange {
    let amounts = |cpu: &str, memory: &str, ephemeral: &str| {
        BTreeMap::from([
            ("cpu".to_string(), quantity(&capped(cpu, &e.cpu))),
            ("memory".to_string(), quantity(&capped(memory, &e.memory))),
            (
                "ephemeral-storage".to_string(),
                quantity(&capped(ephemeral, &e.ephemeral_storage)),
            ),
        ])
    };
    LimitRange {
        metadata: meta(e, LIMITS_NAME, "limit-range"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default_request: Some(amounts("100m", "128Mi", "256Mi")),
                default: Some(amounts("500m", "512Mi", "1Gi")),
                ..Default::default()
            }],
        }),
    }
}

pub fn service_account(e: &Effective) -> ServiceAccount {
    let mut metadata = meta(e, RBAC_NAME, "rbac");
    metadata.annotations = Some(BTreeMap::from([(
        VAULT_ROLE_ANNOTATION.to_string(),
        e.vault_role.clone(),
    )]));
    ServiceAccount {
        metadata,
        ..Default::default()
    }
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// The learner's rights, read-only on pods, their logs and status, config
/// maps and secrets, granted by each learner namespace's RoleBinding in that
/// namespace only. Not created by the operator: `deploy/rbac.yaml` installs
/// it (tests/manifests.rs checks it is this).
pub fn learner_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(LEARNER_CLUSTER_ROLE.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        rules: Some(vec![
            rule(
                &["pods", "pods/log", "pods/status"],
                &["get", "list", "watch"],
            ),
            rule(&["configmaps", "secrets"], &["get", "list"]),
        ]),
        aggregation_rule: None,
    }
}

/// Binds [`learner_cluster_role`] to the learner's service account, in the
/// learner's namespace.
pub fn role_binding(e: &Effective) -> RoleBinding {
    RoleBinding {
        metadata: meta(e, RBAC_NAME, "rbac"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: LEARNER_CLUSTER_ROLE.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: RBAC_NAME.to_string(),
            namespace: Some(e.namespace.clone()),
            api_group: None,
        }]),
    }
}

pub fn vault_paths(e: &Effective) -> ConfigMap {
    let mut data: BTreeMap<String, String> = VAULT_SECRETS
        .iter()
        .map(|s| {
            (
                s.to_string(),
                format!("secret/data/learners/{}/{s}", e.learner_id),
            )
        })
        .collect();
    data.insert("role".to_string(), e.vault_role.clone());
    ConfigMap {
        metadata: meta(e, VAULT_CONFIGMAP, "vault"),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
