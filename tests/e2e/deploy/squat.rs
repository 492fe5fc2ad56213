//! A squatter's namespace with a learner's name, made before its
//! LearnerSpace: the operator must neither adopt it nor touch it.

use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// What a squatter made: a namespace with a learner's name, a RoleBinding
/// and an allow-all NetworkPolicy in it.
pub(super) struct Squat {
    namespace: Namespace,
    binding: RoleBinding,
    policy: NetworkPolicy,
}

pub(super) async fn squat(admin: &kube::Client, name: &str) -> Squat {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": name,
        // Even the LearnerSpace's label, without the manager's, is not enough.
        "labels": {"team": "squatter", "aivo.dev/learnerspace": "victim"}
    }}))
    .unwrap();
    let namespace = Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "squatter"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]
    }))
    .unwrap();
    let binding = Api::<RoleBinding>::namespaced(admin.clone(), name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "allow-all"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}
    }))
    .unwrap();
    let policy = Api::<NetworkPolicy>::namespaced(admin.clone(), name)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    Squat {
        namespace,
        binding,
        policy,
    }
}

impl Squat {
    /// Nothing was changed in it, and nothing of the operator's is in it.
    pub(super) async fn assert_untouched(&self, admin: &kube::Client) {
        let name = self.namespace.metadata.name.clone().unwrap();
        let now = Api::<Namespace>::all(admin.clone())
            .get(&name)
            .await
            .unwrap();
        assert_eq!(
            now.metadata.resource_version,
            self.namespace.metadata.resource_version
        );
        assert!(now.metadata.deletion_timestamp.is_none(), "not deleted");
        let binding = Api::<RoleBinding>::namespaced(admin.clone(), &name)
            .get("squatter")
            .await
            .unwrap();
        assert_eq!(
            binding.metadata.resource_version,
            self.binding.metadata.resource_version
        );
        let policy = Api::<NetworkPolicy>::namespaced(admin.clone(), &name)
            .get("allow-all")
            .await
            .unwrap();
        assert_eq!(
            policy.metadata.resource_version,
            self.policy.metadata.resource_version
        );
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=devenv-manager");
        let counts = [
            Api::<NetworkPolicy>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
            Api::<ResourceQuota>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
            Api::<LimitRange>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
            Api::<ServiceAccount>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
            Api::<RoleBinding>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
            Api::<ConfigMap>::namespaced(admin.clone(), &name)
                .list(&managed)
                .await
                .unwrap()
                .items
                .len(),
        ];
        assert_eq!(counts, [0; 6], "the operator's objects in {name}");
    }
}
