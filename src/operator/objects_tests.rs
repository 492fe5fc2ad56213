//! The builders against docs/operator.md, field by field.

use serde_json::{Value, json};

use super::*;
use crate::crd::LearnerSpace;

/// The example LearnerSpace of deploy/examples/learnerspace.yaml.
fn example() -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": "john-doe", "namespace": "aivo-system", "uid": "u-1"},
        "spec": {
            "learnerId": "john.doe",
            "subjects": ["mathematics", "science", "programming"],
            "resourceQuota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "pods": 10},
            "networkPolicy": {"egressDeny": true, "allowedNamespaces": ["aivo-system", "aivo-shared"]},
            "vaultRole": "learner-default"
        }
    }))
    .unwrap()
}

fn build(ls: &LearnerSpace) -> Desired {
    desired(ls, &OperatorConfig::default()).unwrap()
}

fn v<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

#[test]
fn namespace_name_labels_and_pod_security() {
    let d = build(&example());
    let ns = v(&d.namespace);
    let name = ns["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("aivo-learner-john-doe-") && name.len() == 30,
        "{name}"
    );
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["aivo.dev/component"], "learner-namespace");
    assert_eq!(labels["aivo.dev/learnerspace"], "john-doe");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "devenv-manager");
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
        assert_eq!(
            labels[format!("pod-security.kubernetes.io/{mode}-version")],
            "latest"
        );
    }
    assert_eq!(
        ns["metadata"]["annotations"],
        json!({"aivo.dev/learner-id": "john.doe"})
    );
}

#[test]
fn every_namespaced_object_lives_in_the_learner_namespace_and_is_labelled() {
    let d = build(&example());
    let ns = d.namespace.metadata.name.clone().unwrap();
    let values = d.to_values();
    assert_eq!(values.len(), 1 + 5 + 5);
    for object in &values[1..] {
        assert_eq!(object["metadata"]["namespace"], ns.as_str(), "{object}");
        assert_eq!(
            object["metadata"]["labels"]["aivo.dev/learnerspace"],
            "john-doe"
        );
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "devenv-manager"
        );
        assert!(
            object["apiVersion"].is_string() && object["kind"].is_string(),
            "{object}"
        );
    }
}

fn policy<'a>(d: &'a Desired, name: &str) -> &'a NetworkPolicySpec {
    d.network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no policy {name}"))
        .spec
        .as_ref()
        .unwrap()
}

#[test]
fn network_policies_deny_all_then_allow_exactly() {
    let d = build(&example());
    let names: Vec<_> = d
        .network_policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "deny-all",
            "allow-ingress",
            "allow-egress-same-namespace",
            "allow-egress-dns",
            "allow-egress-allowed-namespaces"
        ]
    );
    for p in &d.network_policies {
        assert_eq!(
            v(&p.spec.as_ref().unwrap().pod_selector),
            json!({}),
            "every pod"
        );
    }

    let deny = policy(&d, "deny-all");
    assert_eq!(deny.policy_types.as_deref().unwrap(), ["Ingress", "Egress"]);
    assert!(
        deny.ingress.is_none() && deny.egress.is_none(),
        "no rule: everything denied"
    );

    let ingress = v(&policy(&d, "allow-ingress").ingress);
    assert_eq!(
        ingress,
        json!([{"from": [
            {"podSelector": {}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aivo-system"}}}
        ]}])
    );

    assert_eq!(
        v(&policy(&d, "allow-egress-same-namespace").egress),
        json!([{"to": [{"podSelector": {}}]}])
    );
    assert_eq!(
        v(&policy(&d, "allow-egress-dns").egress),
        json!([{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        }])
    );
    assert_eq!(
        v(&policy(&d, "allow-egress-allowed-namespaces").egress),
        json!([{"to": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aivo-system"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aivo-shared"}}}
        ]}])
    );
}

#[test]
fn no_other_learner_is_ever_reachable() {
    let d = build(&example());
    let specs: Vec<_> = d.network_policies.iter().map(|p| &p.spec).collect();
    let text = serde_json::to_string(&specs).unwrap();
    assert!(
        !text.contains("aivo-learner-"),
        "no policy names a learner namespace"
    );
    // No peer selects all namespaces (an empty namespaceSelector would).
    for p in &d.network_policies {
        let spec = v(p.spec.as_ref().unwrap());
        for rules in [&spec["ingress"], &spec["egress"]] {
            for rule in rules.as_array().into_iter().flatten() {
                for peer in rule["from"]
                    .as_array()
                    .or(rule["to"].as_array())
                    .into_iter()
                    .flatten()
                {
                    assert_ne!(peer.get("namespaceSelector"), Some(&json!({})), "{peer}");
                    assert!(peer.get("ipBlock").is_none(), "{peer}");
                }
            }
        }
    }
}

#[test]
fn without_egress_deny_only_ingress_is_isolated() {
    let mut ls = example();
    ls.spec.network_policy.as_mut().unwrap().egress_deny = Some(false);
    let d = build(&ls);
    let names: Vec<_> = d
        .network_policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["deny-all-ingress", "allow-ingress"]);
    for p in &d.network_policies {
        assert_eq!(
            p.spec.as_ref().unwrap().policy_types.as_deref().unwrap(),
            ["Ingress"]
        );
    }
    for name in names {
        assert!(NETWORK_POLICY_NAMES.contains(&name.as_str()));
    }
}

#[test]
fn quota_keys() {
    let d = build(&example());
    assert_eq!(d.quota.metadata.name.as_deref(), Some("learner-quota"));
    assert_eq!(
        v(&d.quota.spec.as_ref().unwrap().hard),
        json!({
            "requests.cpu": "2", "limits.cpu": "2",
            "requests.memory": "4Gi", "limits.memory": "4Gi",
            "requests.storage": "10Gi",
            "requests.ephemeral-storage": "10Gi", "limits.ephemeral-storage": "10Gi",
            "pods": "10", "services": "5", "secrets": "10", "configmaps": "10"
        })
    );
}

#[test]
fn defaults_fill_what_the_spec_leaves_out() {
    let ls: LearnerSpace = serde_json::from_value(json!({
        "metadata": {"name": "min"}, "spec": {"learnerId": "min"}
    }))
    .unwrap();
    let e = Effective::resolve(&ls, &OperatorConfig::default()).unwrap();
    assert_eq!(
        (
            e.cpu.as_str(),
            e.memory.as_str(),
            e.storage.as_str(),
            e.ephemeral_storage.as_str(),
            e.pods
        ),
        ("2", "4Gi", "10Gi", "10Gi", 10)
    );
    assert!(e.egress_deny);
    assert_eq!(e.allowed_namespaces, ["aivo-system", "aivo-shared"]);
    assert_eq!(e.vault_role, "learner-default");
    let ls: LearnerSpace = serde_json::from_value(json!({
        "metadata": {"name": "num"}, "spec": {"learnerId": "num", "resourceQuota": {"cpu": 4, "memory": "8Gi"}}
    }))
    .unwrap();
    let d = build(&ls);
    assert_eq!(
        v(&d.quota.spec.as_ref().unwrap().hard)["limits.cpu"],
        "4",
        "an integer cpu works"
    );
}

#[test]
fn limit_range_defaults_fit_under_the_quota() {
    let d = build(&example());
    let item = &d.limits.spec.as_ref().unwrap().limits[0];
    assert_eq!(item.type_, "Container");
    assert_eq!(
        v(&item.default_request),
        json!({"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "256Mi"})
    );
    assert_eq!(
        v(&item.default),
        json!({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"})
    );

    let mut small = example();
    let q = small.spec.resource_quota.as_mut().unwrap();
    q.cpu = Some(crate::crd::QuantityValue("250m".into()));
    q.memory = Some(crate::crd::QuantityValue("100Mi".into()));
    q.ephemeral_storage = Some(crate::crd::QuantityValue("200Mi".into()));
    let d = build(&small);
    let item = &d.limits.spec.as_ref().unwrap().limits[0];
    assert_eq!(
        v(&item.default),
        json!({"cpu": "250m", "memory": "100Mi", "ephemeral-storage": "200Mi"})
    );
    assert_eq!(
        v(&item.default_request),
        json!({"cpu": "100m", "memory": "100Mi", "ephemeral-storage": "200Mi"})
    );
}

#[test]
fn ephemeral_storage_follows_the_spec_then_the_configuration() {
    let mut ls = example();
    ls.spec.resource_quota.as_mut().unwrap().ephemeral_storage =
        Some(crate::crd::QuantityValue("3Gi".into()));
    let hard = v(&build(&ls).quota.spec.unwrap().hard);
    assert_eq!(hard["requests.ephemeral-storage"], "3Gi");
    assert_eq!(hard["limits.ephemeral-storage"], "3Gi");
    let mut config = OperatorConfig::default();
    config.default_resource_quota.ephemeral_storage = "7Gi".into();
    let d = desired(&example(), &config).unwrap();
    assert_eq!(
        v(&d.quota.spec.unwrap().hard)["limits.ephemeral-storage"],
        "7Gi"
    );
}

#[test]
fn rbac_is_exactly_read_only() {
    let d = build(&example());
    assert_eq!(d.service_account.metadata.name.as_deref(), Some("learner"));
    assert_eq!(
        v(&d.service_account.metadata.annotations),
        json!({"vault.hashicorp.com/role": "learner-default"})
    );
    assert_eq!(
        v(&learner_cluster_role().rules),
        json!([
            {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/status"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"]}
        ])
    );
    assert_eq!(
        learner_cluster_role().metadata.name.as_deref(),
        Some("devenv-learner")
    );
    // A RoleBinding: the ClusterRole's rules hold in the learner's
    // namespace only, for the learner's service account only.
    let ns = d.namespace.metadata.name.clone().unwrap();
    assert_eq!(
        d.role_binding.metadata.namespace.as_deref(),
        Some(ns.as_str())
    );
    assert_eq!(
        v(&d.role_binding),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": d.role_binding.metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "devenv-learner"},
            "subjects": [{"kind": "ServiceAccount", "name": "learner", "namespace": ns}]
        })
    );
    let kinds: Vec<String> = d
        .to_values()
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(!kinds.contains(&"Role".to_string()), "no Role: {kinds:?}");
}

#[test]
fn vault_paths_list_the_learner_secrets() {
    let d = build(&example());
    assert_eq!(
        d.vault_paths.metadata.name.as_deref(),
        Some("vault-secret-paths")
    );
    assert_eq!(
        v(&d.vault_paths.data),
        json!({
            "api-keys": "secret/data/learners/john.doe/api-keys",
            "database": "secret/data/learners/john.doe/database",
            "external-services": "secret/data/learners/john.doe/external-services",
            "role": "learner-default"
        })
    );
}

#[test]
fn names_that_cannot_label_are_refused() {
    let mut ls = example();
    ls.metadata.name = Some("x".repeat(64));
    assert!(matches!(
        desired(&ls, &OperatorConfig::default()),
        Err(BuildError::NameTooLong(_))
    ));
    let mut ls = example();
    ls.spec.learner_id = "...".into();
    assert!(matches!(
        desired(&ls, &OperatorConfig::default()),
        Err(BuildError::BadLearnerId(_))
    ));
}
