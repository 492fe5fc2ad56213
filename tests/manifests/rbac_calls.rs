//! The API calls the code makes, by hand: what `deploy/rbac.yaml` must
//! grant, no more and no less ([`CODE_CALLS`]).

/// Where a call is made: cluster-wide (`Api::all`, or a namespace only known
/// at run time: the learner namespaces), in `operator.namespace`, in each
/// of `devenv.namespaces`, or in the manager's own (`certs.namespace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    Cluster,
    Operator,
    Devenv,
    Manager,
}

/// One kind of API call the manager makes.
pub(crate) struct Call {
    pub(crate) scope: Scope,
    pub(crate) group: &'static str,
    pub(crate) resource: &'static str,
    /// The one object the call is about (`resourceNames`), or "" for any.
    pub(crate) name: &'static str,
    pub(crate) verbs: &'static [&'static str],
    /// Where in the code (and why).
    pub(crate) at: &'static str,
}

/// A call about the one object `name` (RBAC `resourceNames`).
const fn named(
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    name: &'static str,
    verbs: &'static [&'static str],
    at: &'static str,
) -> Call {
    Call {
        scope,
        group,
        resource,
        name,
        verbs,
        at,
    }
}

/// A call about any object of the kind.
const fn call(
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    at: &'static str,
) -> Call {
    named(scope, group, resource, "", verbs, at)
}

/// The API calls the manager makes, from the code. A watcher or reflector
/// is `list` + `watch`; server-side apply (`Patch::Apply`) is `patch`, and
/// `create` too, because the API server authorizes an apply that creates
/// the object as a create. Update this list when the code changes; the test
/// compares it with the RBAC in `deploy/rbac.yaml` both ways.
///
/// The `bind` on the learner's ClusterRole (RBAC lets the operator write a
/// RoleBinding to a role it holds `bind` on without holding the role's
/// rules) is not listed here: it is read from the RoleBinding the operator
/// builds, `operator::objects::desired(..).role_binding`.
pub(crate) const CODE_CALLS: &[Call] = &[
    // --- the operator, src/operator/ ---
    call(
        Scope::Operator,
        "aivo.dev",
        "learnerspaces",
        &["list", "watch"],
        "controller.rs: watcher(Api::<LearnerSpace>::namespaced(operator ns)) feeding Controller::for_stream",
    ),
    call(
        Scope::Operator,
        "aivo.dev",
        "learnerspaces",
        &["patch"],
        "reconcile.rs: kube-runtime finalizer() adds and removes aivo.dev/tombstone with JSON patches",
    ),
    call(
        Scope::Operator,
        "aivo.dev",
        "learnerspaces/status",
        &["patch"],
        "reconcile.rs set_status: api.patch_status",
    ),
    call(
        Scope::Operator,
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "reconcile.rs record: events::Recorder::publish creates an Event, patches it when it repeats (series), in the LearnerSpace's namespace",
    ),
    call(
        Scope::Operator,
        "coordination.k8s.io",
        "leases",
        &["get", "create", "patch"],
        "leader.rs: kube-lease-manager reads the Lease (and creates it when absent), takes, renews and releases it with patches (server-side apply, strategic merge); holder() reads it",
    ),
    call(
        Scope::Operator,
        "",
        "configmaps",
        &["get", "create", "patch"],
        "reconcile.rs write_tombstone: get_opt, create, merge patch of tombstone-* ConfigMaps",
    ),
    call(
        Scope::Cluster,
        "",
        "namespaces",
        &["list", "watch"],
        "controller.rs: watch::<Namespace>(Api::all) (cache and drift)",
    ),
    call(
        Scope::Cluster,
        "",
        "namespaces",
        &["create", "patch"],
        "reconcile.rs ensure: server-side apply of a learner namespace that drifted",
    ),
    call(
        Scope::Cluster,
        "",
        "namespaces",
        &["get"],
        "reconcile.rs check: get_opt of a learner namespace the cache does not hold (is it someone else's?)",
    ),
    call(
        Scope::Cluster,
        "",
        "namespaces",
        &["create"],
        "reconcile.rs apply_all: create of a learner namespace that does not exist",
    ),
    call(
        Scope::Cluster,
        "",
        "namespaces",
        &["get", "delete"],
        "reconcile.rs cleanup: namespaces.get_opt, then delete",
    ),
    call(
        Scope::Cluster,
        "networking.k8s.io",
        "networkpolicies",
        &["list", "watch"],
        "controller.rs: watch::<NetworkPolicy>(Api::all)",
    ),
    call(
        Scope::Cluster,
        "networking.k8s.io",
        "networkpolicies",
        &["create", "patch"],
        "reconcile.rs ensure (learner namespaces)",
    ),
    call(
        Scope::Cluster,
        "networking.k8s.io",
        "networkpolicies",
        &["delete"],
        "reconcile.rs prune_network_policies",
    ),
    call(
        Scope::Cluster,
        "",
        "resourcequotas",
        &["list", "watch", "create", "patch"],
        "controller.rs watch::<ResourceQuota>(Api::all); reconcile.rs ensure",
    ),
    call(
        Scope::Cluster,
        "",
        "limitranges",
        &["list", "watch", "create", "patch"],
        "controller.rs watch::<LimitRange>(Api::all); reconcile.rs ensure",
    ),
    call(
        Scope::Cluster,
        "",
        "serviceaccounts",
        &["list", "watch", "create", "patch"],
        "controller.rs watch::<ServiceAccount>(Api::all); reconcile.rs ensure",
    ),
    call(
        Scope::Cluster,
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["list", "watch", "create", "patch"],
        "controller.rs watch::<RoleBinding>(Api::all); reconcile.rs ensure",
    ),
    call(
        Scope::Cluster,
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["delete"],
        "reconcile.rs remove_binding_to_another_role: a roleRef cannot change",
    ),
    call(
        Scope::Cluster,
        "",
        "configmaps",
        &["list", "watch", "create", "patch"],
        "controller.rs watch::<ConfigMap>(Api::all); reconcile.rs ensure (vault-secret-paths)",
    ),
    // --- the pod API, src/api/ ---
    call(
        Scope::Cluster,
        "authentication.k8s.io",
        "tokenreviews",
        &["create"],
        "auth.rs: Api::<TokenReview>::all().create",
    ),
    call(
        Scope::Devenv,
        "",
        "pods",
        &["list", "watch"],
        "pods.rs PodCache::start: reflector(watcher(Api::<Pod>::namespaced)) per devenv namespace",
    ),
    call(
        Scope::Devenv,
        "",
        "pods",
        &["delete", "get"],
        "pods.rs delete: api.delete with preconditions, api.get_opt for the fresh read",
    ),
    call(
        Scope::Devenv,
        "",
        "configmaps",
        &["list", "watch"],
        "ca_publisher.rs: reflector(watcher(Api::<ConfigMap>::namespaced, metadata.name=devenv-manager-ca))",
    ),
    call(
        Scope::Devenv,
        "",
        "configmaps",
        &["create", "patch"],
        "ca_publisher.rs reconcile: server-side apply of devenv-manager-ca",
    ),
    // --- self-managed certificates, src/certs/ ---
    named(
        Scope::Manager,
        "",
        "secrets",
        "devenv-manager-tls",
        &["get", "list", "watch", "update"],
        "keeper.rs: get_opt, replace at the resourceVersion read; serving.rs and keeper.rs changes(): watcher(metadata.name=devenv-manager-tls)",
    ),
    call(
        Scope::Manager,
        "",
        "secrets",
        &["create"],
        "keeper.rs write: create of Secret devenv-manager-tls when absent (the lane policy allows no other name)",
    ),
    named(
        Scope::Manager,
        "coordination.k8s.io",
        "leases",
        "devenv-manager-certs",
        &["get", "patch"],
        "run.rs: leader.rs run_while_leader on Lease devenv-manager-certs (kube-lease-manager reads, takes, renews, releases it with patches)",
    ),
    call(
        Scope::Manager,
        "coordination.k8s.io",
        "leases",
        &["create"],
        "run.rs: kube-lease-manager creates Lease devenv-manager-certs when absent",
    ),
    call(
        Scope::Manager,
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "keeper.rs record: events::Recorder::publish on Secret devenv-manager-tls",
    ),
    named(
        Scope::Cluster,
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "devenv-manager",
        &["get", "list", "watch", "patch"],
        "keeper.rs: get_opt, JSON patch of caBundle, watcher(metadata.name=devenv-manager)",
    ),
    named(
        Scope::Cluster,
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "devenv-manager",
        &["get", "list", "watch", "patch"],
        "keeper.rs: get_opt, JSON patch of caBundle, watcher(metadata.name=devenv-manager)",
    ),
    named(
        Scope::Devenv,
        "",
        "configmaps",
        "devenv-manager-ca",
        &["get"],
        "keeper.rs targets: get_opt of each CA ConfigMap (does it trust the new CA yet?)",
    ),
];
