//! The operator running against the real kube-apiserver: objects created
//! with the right fields, no writes when nothing changed (counted in the API
//! server's audit log), drift repaired, quota changes, duplicates, deletion
//! with a tombstone, a crash in the middle of a deletion, two replicas and
//! one lease.
//!
//! Each test has its own operator namespace, its own operator identity (a
//! service account bound to cluster-admin, so the audit log tells its writes
//! apart), and learner ids derived from that namespace.

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_manager::crd::{LearnerSpace, Phase};
use devenv_testbed as testbed;
use devenv_testbed::eventually;
use devenv_testbed::server::Server;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

struct Operator {
    server: Server,
    user: String,
}

impl Operator {
    /// An in-process `devenv-manager` whose operator reconciles `namespace`
    /// as service account `identity` of that namespace.
    async fn start(bed: &testbed::TestBed, namespace: &str, identity: &str) -> Operator {
        let id = bed.cluster_admin(namespace, identity).await;
        let mut config = Config::default();
        config.operator.namespace = namespace.to_string();
        // The pod API in the same process publishes its CA into the devenv
        // namespaces: give each test its own, so that test servers (each with
        // its own CA) never take turns rewriting one shared ConfigMap.
        config.devenv.namespaces = vec![namespace.to_string()];
        let cluster = Source::Config(Box::new(id.config));
        Operator {
            server: Server::start_operator(config, cluster, identity.to_string()).await,
            user: id.username,
        }
    }

    async fn operator_state(&self) -> String {
        let body: Value = reqwest::get(format!("http://{}/readyz", self.server.metrics))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["operator"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of the unlabelled metric `name` (0 when absent).
    async fn sample(&self, name: &str) -> u64 {
        let text = self.server.metrics_text().await;
        text.lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    async fn reconciles(&self) -> u64 {
        self.sample("operator_reconciles_total").await
    }

    /// `operator_leader`: 1 while this replica leads.
    async fn leader(&self) -> u64 {
        self.sample("operator_leader").await
    }
}

fn learner_space(name: &str, learner_id: &str) -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": name},
        "spec": {
            "learnerId": learner_id,
            "subjects": ["mathematics", "science", "programming"],
            "resourceQuota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "pods": 10},
            "networkPolicy": {"egressDeny": true, "allowedNamespaces": ["aivo-system", "aivo-shared"]},
            "vaultRole": "learner-default"
        }
    }))
    .unwrap()
}

async fn ready(api: &Api<LearnerSpace>, name: &str) -> LearnerSpace {
    eventually(&format!("{name} Ready"), || async {
        let ls = api.get(name).await.ok()?;
        (ls.status.as_ref()?.phase == Some(Phase::Ready)).then_some(ls)
    })
    .await
}

fn learner_namespace(ls: &LearnerSpace) -> String {
    ls.status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .expect("status.namespace")
}

async fn setup(bed: &testbed::TestBed, prefix: &str) -> (String, Client, Api<LearnerSpace>) {
    let admin = bed.client().await;
    testbed::manifests::install_crd(admin.clone()).await;
    let namespace = bed.temp_namespace(prefix).await;
    let api = Api::namespaced(admin.clone(), &namespace);
    (namespace, admin, api)
}

/// Creates, retrying while a freshly installed CRD is not yet served.
async fn create(api: &Api<LearnerSpace>, ls: &LearnerSpace) -> LearnerSpace {
    eventually("the LearnerSpace API", || async {
        api.create(&PostParams::default(), ls).await.ok()
    })
    .await
}

async fn assert_deletion_requested(admin: &Client, namespace: &str) {
    let ns = Api::<Namespace>::all(admin.clone())
        .get_opt(namespace)
        .await
        .unwrap();
    assert!(
        ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "deletion of namespace {namespace} requested"
    );
}

#[tokio::test]
async fn creates_every_object_and_a_second_pass_writes_nothing() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    if bed.audit_log_path().is_none() {
        return testbed::skip("needs the local test bed's audit log");
    }
    let (namespace, admin, api) = setup(bed, "op-create").await;
    let operator = Operator::start(bed, &namespace, "devenv-manager").await;
    let learner = format!("{namespace}.john");
    create(&api, &learner_space("john", &learner)).await;
    let ls = ready(&api, "john").await;
    let target = learner_namespace(&ls);

    // Status, and the namespace docs/operator.md names.
    let status = ls.status.clone().unwrap();
    assert_eq!(status.observed_generation, ls.metadata.generation);
    assert_eq!(status.conditions[0].type_, "Ready");
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(target, devenv_manager::names::learner_namespace(&learner));
    assert!(ls.finalizers().iter().any(|f| f == "aivo.dev/tombstone"));

    let ns = Api::<Namespace>::all(admin.clone())
        .get(&target)
        .await
        .unwrap();
    let labels = ns.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["aivo.dev/learnerspace"], "john");
    assert_eq!(ns.annotations()["aivo.dev/learner-id"], learner);

    let policies: Vec<String> = Api::<NetworkPolicy>::namespaced(admin.clone(), &target)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    for name in [
        "deny-all",
        "allow-ingress",
        "allow-egress-same-namespace",
        "allow-egress-dns",
        "allow-egress-allowed-namespaces",
    ] {
        assert!(
            policies.contains(&name.to_string()),
            "{name} in {policies:?}"
        );
    }
    let quota = Api::<ResourceQuota>::namespaced(admin.clone(), &target)
        .get("learner-quota")
        .await
        .unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["limits.memory"].0, "4Gi");
    assert_eq!(hard["requests.storage"].0, "10Gi");
    assert_eq!(hard["requests.ephemeral-storage"].0, "10Gi");
    assert_eq!(hard["limits.ephemeral-storage"].0, "10Gi");
    assert_eq!(hard["pods"].0, "10");
    let limits = Api::<LimitRange>::namespaced(admin.clone(), &target)
        .get("learner-limits")
        .await
        .unwrap();
    let item = &limits.spec.unwrap().limits[0];
    assert_eq!(item.default.as_ref().unwrap()["ephemeral-storage"].0, "1Gi");
    assert_eq!(
        item.default_request.as_ref().unwrap()["ephemeral-storage"].0,
        "256Mi"
    );
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), &target)
        .get("learner")
        .await
        .unwrap();
    assert_eq!(
        sa.annotations()["vault.hashicorp.com/role"],
        "learner-default"
    );
    // The learner's rights are the installed ClusterRole, bound here: no
    // Role of the operator's own.
    let roles = Api::<Role>::namespaced(admin.clone(), &target)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(roles.items.is_empty(), "{:?}", roles.items);
    let binding = Api::<RoleBinding>::namespaced(admin.clone(), &target)
        .get("learner")
        .await
        .unwrap();
    assert_eq!(
        binding.role_ref,
        RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "devenv-learner".into()
        }
    );
    assert_eq!(
        binding.subjects.unwrap()[0],
        Subject {
            kind: "ServiceAccount".into(),
            name: "learner".into(),
            namespace: Some(target.clone()),
            api_group: None
        }
    );
    let vault = Api::<ConfigMap>::namespaced(admin.clone(), &target)
        .get("vault-secret-paths")
        .await
        .unwrap();
    assert_eq!(
        vault.data.unwrap()["database"],
        format!("secret/data/learners/{learner}/database")
    );

    // An Event on the LearnerSpace for the transition to Ready.
    let events = eventually("a Ready event", || async {
        let list =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Ready"))
    })
    .await;
    assert_eq!(events.regarding.unwrap().name.as_deref(), Some("john"));

    // A second pass over an object in its wanted state writes nothing.
    // Lease renewals are writes too, every few seconds: count everything else.
    let writes = || async {
        let mut counts = bed.writes_by_resource_settled(&operator.user).await;
        counts.remove("leases");
        counts
    };
    let before = writes().await;
    let reconciles = operator.reconciles().await;
    api.patch(
        "john",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
    )
    .await
    .unwrap();
    eventually("another reconcile", || async {
        (operator.reconciles().await > reconciles).then_some(())
    })
    .await;
    assert_eq!(
        writes().await,
        before,
        "a reconcile with nothing to change wrote"
    );
    operator.server.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_and_spec_changes_are_applied() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let (namespace, admin, api) = setup(bed, "op-drift").await;
    let operator = Operator::start(bed, &namespace, "devenv-manager").await;
    create(&api, &learner_space("drift", &format!("{namespace}.drift"))).await;
    let target = learner_namespace(&ready(&api, "drift").await);

    // Edited: the quota is put back.
    let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), &target);
    quotas
        .patch(
            "learner-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "1000"}}})),
        )
        .await
        .unwrap();
    eventually("the quota put back", || async {
        let q = quotas.get("learner-quota").await.ok()?;
        (q.spec?.hard?.get("pods")?.0 == "10").then_some(())
    })
    .await;

    // Deleted: a network policy and the role binding come back.
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &target);
    policies
        .delete("deny-all", &DeleteParams::default())
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &target);
    bindings
        .delete("learner", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted objects recreated", || async {
        (policies.get_opt("deny-all").await.ok()?.is_some()
            && bindings.get_opt("learner").await.ok()?.is_some())
        .then_some(())
    })
    .await;

    // A binding of ours to another role (what earlier versions made: a
    // `learner` Role) is replaced, not fought over: a roleRef cannot change.
    let old_style = bindings.get("learner").await.unwrap();
    bindings
        .delete("learner", &DeleteParams::default())
        .await
        .unwrap();
    let mut old_style: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "learner", "labels": old_style.metadata.labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "learner"},
        "subjects": old_style.subjects,
    }))
    .unwrap();
    old_style.metadata.namespace = Some(target.clone());
    let created = bindings
        .create(&PostParams::default(), &old_style)
        .await
        .unwrap();
    let replaced = eventually("the binding replaced", || async {
        let b = bindings.get_opt("learner").await.ok()??;
        (b.role_ref.kind == "ClusterRole").then_some(b)
    })
    .await;
    assert_ne!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(replaced.role_ref.name, "devenv-learner");

    // The quota follows the spec; turning egress isolation off removes the egress policies.
    let change =
        json!({"spec": {"resourceQuota": {"cpu": "4"}, "networkPolicy": {"egressDeny": false}}});
    api.patch("drift", &PatchParams::default(), &Patch::Merge(change))
        .await
        .unwrap();
    eventually("the new quota and policies", || async {
        let q = quotas.get("learner-quota").await.ok()?;
        let hard = q.spec?.hard?;
        let names: Vec<String> = policies
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        let mut names = names;
        names.sort();
        (hard.get("limits.cpu")?.0 == "4" && names == ["allow-ingress", "deny-all-ingress"])
            .then_some(())
    })
    .await;
    let ls = api.get("drift").await.unwrap();
    assert_eq!(
        ls.status.unwrap().observed_generation,
        ls.metadata.generation
    );
    operator.server.stop().await;
}

#[tokio::test]
async fn a_duplicate_learner_fails_and_leaves_the_first_alone() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let (namespace, admin, api) = setup(bed, "op-dup").await;
    let operator = Operator::start(bed, &namespace, "devenv-manager").await;
    let learner = format!("{namespace}.twin");
    create(&api, &learner_space("first", &learner)).await;
    let target = learner_namespace(&ready(&api, "first").await);

    create(&api, &learner_space("second", &learner)).await;
    let second = eventually("second Failed", || async {
        let ls = api.get("second").await.ok()?;
        (ls.status.as_ref()?.phase == Some(Phase::Failed)).then_some(ls)
    })
    .await;
    let message = second.status.unwrap().message.unwrap();
    assert!(
        message.contains("already has LearnerSpace first"),
        "{message}"
    );

    // Deleting the duplicate touches nothing of the first.
    api.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    eventually("second gone", || async {
        api.get_opt("second").await.ok()?.is_none().then_some(())
    })
    .await;
    let ns = Api::<Namespace>::all(admin.clone())
        .get(&target)
        .await
        .unwrap();
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "the first's namespace is not deleted"
    );
    assert_eq!(ns.labels()["aivo.dev/learnerspace"], "first");
    let tombstones = Api::<ConfigMap>::namespaced(admin, &namespace);
    assert!(
        tombstones
            .get_opt(&devenv_manager::names::tombstone_name(&learner))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        api.get("first").await.unwrap().status.unwrap().phase,
        Some(Phase::Ready)
    );
    operator.server.stop().await;
}

#[tokio::test]
async fn deletion_writes_a_tombstone_and_requests_namespace_deletion() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let (namespace, admin, api) = setup(bed, "op-del").await;
    let operator = Operator::start(bed, &namespace, "devenv-manager").await;
    let learner = format!("{namespace}.gone");
    create(&api, &learner_space("gone", &learner)).await;
    let ls = ready(&api, "gone").await;
    let target = learner_namespace(&ls);

    api.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("the LearnerSpace released", || async {
        api.get_opt("gone").await.ok()?.is_none().then_some(())
    })
    .await;

    let tombstone = Api::<ConfigMap>::namespaced(admin.clone(), &namespace)
        .get(&devenv_manager::names::tombstone_name(&learner))
        .await
        .expect("tombstone written");
    let data = tombstone.data.unwrap();
    assert_eq!(data["learnerId"], learner);
    assert_eq!(data["namespace"], target);
    assert_eq!(data["subjects"], "mathematics,science,programming");
    assert_eq!(data["learnerSpaceUid"], ls.uid().unwrap());
    assert!(data["deletedAt"].starts_with("20"), "{}", data["deletedAt"]);
    // No controller manager here: the namespace stays Terminating, which
    // shows deletion was requested (on a real cluster it may be gone already).
    assert_deletion_requested(&admin, &target).await;
    operator.server.stop().await;
}

#[tokio::test]
async fn a_crash_between_tombstone_and_release_is_finished_without_writing_twice() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let (namespace, admin, api) = setup(bed, "op-crash").await;
    let first = Operator::start(bed, &namespace, "devenv-manager").await;
    let learner = format!("{namespace}.crash");
    create(&api, &learner_space("crash", &learner)).await;
    let ls = ready(&api, "crash").await;
    let target = learner_namespace(&ls);
    first.server.stop().await;

    // The state a crash right after the tombstone leaves: tombstone written,
    // LearnerSpace deleting but held by the finalizer, namespace not deleted.
    api.delete("crash", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("crash").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let at = deleting
        .metadata
        .deletion_timestamp
        .clone()
        .unwrap()
        .0
        .to_string();
    let written = configmaps
        .create(
            &PostParams::default(),
            &devenv_manager::operator::tombstone::tombstone(&deleting, &namespace, &at),
        )
        .await
        .unwrap();

    let restarted = Operator::start(bed, &namespace, "devenv-manager-2").await;
    eventually("the LearnerSpace released", || async {
        api.get_opt("crash").await.ok()?.is_none().then_some(())
    })
    .await;
    let tombstone = configmaps.get(&written.name_any()).await.unwrap();
    assert_eq!(
        tombstone.resource_version(),
        written.resource_version(),
        "the tombstone was not written again"
    );
    assert_deletion_requested(&admin, &target).await;
    restarted.server.stop().await;
}

#[tokio::test]
async fn two_operators_share_one_lease() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let (namespace, _admin, api) = setup(bed, "op-lease").await;
    let a = Operator::start(bed, &namespace, "replica-a").await;
    eventually("replica a leading", || async {
        (a.operator_state().await == "ready").then_some(())
    })
    .await;
    let b = Operator::start(bed, &namespace, "replica-b").await;
    eventually("replica b standing by", || async {
        (b.operator_state().await == "standby").then_some(())
    })
    .await;
    // What the no-leader alert sums (docs/alerts.md).
    assert_eq!((a.leader().await, b.leader().await), (1, 0));

    create(
        &api,
        &learner_space("shared", &format!("{namespace}.shared")),
    )
    .await;
    ready(&api, "shared").await;
    if bed.audit_log_path().is_some() {
        // Both replicas publish the pod API's CA config map; only the leader reconciles.
        let standby = bed.writes_by_resource_settled(&b.user).await;
        let reconciling: Vec<_> = standby
            .keys()
            .filter(|r| r.as_str() != "configmaps")
            .collect();
        assert!(
            reconciling.is_empty(),
            "the standby replica wrote {standby:?}"
        );
        assert!(
            bed.writes_by_resource_settled(&a.user)
                .await
                .contains_key("namespaces")
        );
    }

    // The leader goes away (releasing the lease on shutdown): the standby takes over.
    a.server.stop().await;
    eventually("replica b leading", || async {
        (b.operator_state().await == "ready").then_some(())
    })
    .await;
    assert_eq!(b.leader().await, 1);
    create(&api, &learner_space("after", &format!("{namespace}.after"))).await;
    ready(&api, "after").await;
    b.server.stop().await;
}

#[tokio::test]
async fn a_leader_stops_promptly_when_the_crd_is_not_installed() {
    // A bed of its own: the CRD is cluster-wide, and the others install it.
    let Some(bed) = testbed::start().await else {
        return;
    };
    let namespace = bed.temp_namespace("no-crd").await;
    let operator = Operator::start(&bed, &namespace, "no-crd-operator").await;
    eventually("the operator leads", || async {
        (operator.operator_state().await == "ready").then_some(())
    })
    .await;
    // The LearnerSpace watch fails and retries; shutdown must still end it.
    let stopped =
        tokio::time::timeout(std::time::Duration::from_secs(120), operator.server.stop()).await;
    assert!(stopped.is_ok(), "serve did not stop within 120 s");
}
