//! The kinds the operator keeps for each LearnerSpace, declared once.
//!
//! [`managed_kinds!`] below is the only list of them: it makes the
//! [`Desired`] set of one LearnerSpace's objects (a field and a builder per
//! kind) and the [`Managed`] impls, and [`for_each`] walks the same list for
//! everything else that is per kind: the watches and their caches
//! (`controller.rs`, `context.rs`), the cache-sync check, the apply loop
//! (`reconcile.rs`) and `render`. Adding a kind is one line there plus its
//! builder in `objects.rs` (and its RBAC).

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::objects::{self, Effective};
use crate::config::OperatorConfig;

/// A kind of object the operator keeps for each LearnerSpace: watched,
/// cached, compared and applied alike.
pub trait Managed:
    Resource<DynamicType = (), Scope: Scoped>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// This kind's objects among one LearnerSpace's.
    fn wanted(desired: &Desired) -> &[Self];
}

/// Something done once per managed kind, generic over it (the closure over
/// types that Rust lacks): [`for_each`] calls it for every kind.
pub trait PerKind {
    fn kind<K: Managed>(&mut self);
}

/// Where an object of a kind is written: a cluster-scoped kind at the
/// cluster, a namespaced one in its namespace.
pub trait Scoped {
    fn api<K>(client: Client, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>;
}

impl Scoped for NamespaceResourceScope {
    fn api<K>(client: Client, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::namespaced(client, namespace)
    }
}

impl Scoped for ClusterResourceScope {
    fn api<K>(client: Client, _namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::all(client)
    }
}

/// The API for writing `object` (its namespace, when its kind has one).
pub fn api_for<K: Managed>(client: Client, object: &K) -> Api<K> {
    let namespace = object.meta().namespace.as_deref().unwrap_or_default();
    K::Scope::api(client, namespace)
}

/// Each entry: the field of [`Desired`], `one` or `many` objects of the
/// kind, and how they are built from the effective settings and the
/// configuration. The order is the apply order.
macro_rules! managed_kinds {
    ($(
        $(#[$doc:meta])*
        $field:ident: $count:ident $kind:ty = |$e:pat_param, $config:pat_param| $build:expr;
    )+) => {
        /// Everything one LearnerSpace owns, in the order it is applied (the
        /// namespace first: the rest lives in it).
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct Desired {
            $($(#[$doc])* pub $field: managed_kinds!(@type $count $kind),)+
        }

        impl Desired {
            /// Builds every object from the settings `e` resolved to.
            pub fn build(e: &Effective, config: &OperatorConfig) -> Desired {
                Desired {
                    $($field: {
                        let ($e, $config) = (e, config);
                        $build
                    },)+
                }
            }
        }

        $(impl Managed for $kind {
            fn wanted(desired: &Desired) -> &[Self] {
                managed_kinds!(@slice $count desired.$field)
            }
        })+

        /// Calls `f` for every managed kind, in apply order.
        pub fn for_each(f: &mut impl PerKind) {
            $(f.kind::<$kind>();)+
        }
    };
    (@type one $kind:ty) => { $kind };
    (@type many $kind:ty) => { Vec<$kind> };
    (@slice one $value:expr) => { std::slice::from_ref(&$value) };
    (@slice many $value:expr) => { $value.as_slice() };
}

managed_kinds! {
    namespace: one Namespace = |e, _| objects::namespace(e);
    network_policies: many NetworkPolicy =
        |e, config| objects::network_policies(e, &config.namespace);
    quota: one ResourceQuota = |e, _| objects::quota(e);
    limits: one LimitRange = |e, _| objects::limit_range(e);
    service_account: one ServiceAccount = |e, _| objects::service_account(e);
    role_binding: one RoleBinding = |e, _| objects::role_binding(e);
    vault_paths: one ConfigMap = |e, _| objects::vault_paths(e);
}

impl Desired {
    /// Every object as JSON, in apply order, for `render`.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        struct Values<'a>(&'a Desired, Vec<serde_json::Value>);
        impl PerKind for Values<'_> {
            fn kind<K: Managed>(&mut self) {
                // k8s-openapi objects always serialize.
                let values = K::wanted(self.0).iter().map(serde_json::to_value);
                self.1.extend(values.map(Result::unwrap_or_default));
            }
        }
        let mut values = Values(self, Vec::new());
        for_each(&mut values);
        values.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LearnerSpace;

    #[test]
    fn every_kind_is_listed_once_in_apply_order_namespace_first() {
        struct Kinds(Vec<&'static str>);
        impl PerKind for Kinds {
            fn kind<K: Managed>(&mut self) {
                self.0
                    .push(std::any::type_name::<K>().rsplit("::").next().unwrap());
            }
        }
        let mut kinds = Kinds(Vec::new());
        for_each(&mut kinds);
        assert_eq!(
            kinds.0,
            [
                "Namespace",
                "NetworkPolicy",
                "ResourceQuota",
                "LimitRange",
                "ServiceAccount",
                "RoleBinding",
                "ConfigMap"
            ]
        );
    }

    #[test]
    fn values_follow_the_kinds() {
        let ls: LearnerSpace = serde_json::from_value(serde_json::json!({
            "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
            "metadata": {"name": "a", "namespace": "aivo-system"},
            "spec": {"learnerId": "a"}
        }))
        .unwrap();
        let desired = objects::desired(&ls, &OperatorConfig::default()).unwrap();
        let kinds: Vec<String> = desired
            .to_values()
            .iter()
            .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
            .collect();
        let policies = desired.network_policies.len();
        assert_eq!(kinds[0], "Namespace");
        assert!(kinds[1..=policies].iter().all(|k| k == "NetworkPolicy"));
        assert_eq!(
            kinds[policies + 1..],
            [
                "ResourceQuota",
                "LimitRange",
                "ServiceAccount",
                "RoleBinding",
                "ConfigMap"
            ]
        );
    }
}
