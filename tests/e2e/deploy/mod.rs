//! `deploy/` as it is, on the test bed's kube-apiserver: the API server
//! accepts every manifest, the manager's pod passes Pod Security
//! "restricted", and the manager running with exactly this RBAC (not
//! cluster-admin) reconciles a LearnerSpace, deletes it with a tombstone,
//! publishes its CA and serves the pod API; what its token must not do is
//! refused ([`lane`]), and a squatted learner namespace is left alone
//! ([`squat`]).
//!
//! It uses deploy/'s fixed names (devenv-system, devenv, aivo-system, the
//! manager's service account, cluster-wide RBAC and admission policies) on
//! the shared bed. That is safe next to the other tests: they work in
//! namespaces of their own, deploy/'s webhook configurations are applied as
//! dry runs only, and its admission policies select deploy/'s manager and
//! namespaces only. Its audit counts are of the manager's user only.

mod lane;
mod squat;

use devenv_manager::config::Config;
use devenv_manager::crd::{LearnerSpace, Phase};
use devenv_testbed::manifests::{
    MANAGER_SA, crd_established, deploy_config, docs, kind_of, manager_deployment,
};
use devenv_testbed::server::Server;
use devenv_testbed::{self as testbed, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use lane::{fence_in_force, out_of_lane, rbac_allows};
use squat::{Squat, squat};

/// The whole of deploy/ applied to the test bed's kube-apiserver; the
/// manager's pod checked against Pod Security "restricted"; then the
/// manager, run with the token of `devenv-system/devenv-manager` and only
/// the RBAC of deploy/rbac.yaml, does its work.
#[tokio::test]
async fn the_api_server_accepts_deploy_and_its_rbac_runs_the_manager() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    if bed.audit_log_path().is_none() {
        // It creates devenv-system, devenv and aivo-system and cluster-wide
        // RBAC: only on the bed this test starts, never on someone's cluster.
        testbed::skip("the_api_server_accepts_deploy...: needs the local test bed");
        return;
    }
    let admin = bed.client().await;

    // 1. deploy/ as it is; 2. the manager's pod passes "restricted".
    apply_deploy(&admin).await;
    assert_the_managers_pod_is_restricted(&admin).await;

    // 3. The manager, as devenv-system/devenv-manager with deploy/'s RBAC
    //    and admission policies.
    let (mut config, _) = deploy_config();
    // Out of the cluster, on a bed shared with other tests: certificates
    // generated into a directory, not the self-managed Secret and the
    // cluster-wide webhook configurations (the node's Deployment test runs
    // those, in the cluster, with this RBAC).
    config.certs.mode = devenv_manager::certs::CertsMode::Auto;
    let (manager, user) = manager_identity(bed).await;
    // A squatter's namespace, made before its LearnerSpace, with the name
    // the operator will compute, a binding and an open network policy.
    let squatted = devenv_manager::names::learner_namespace("squatter.victim");
    let squat = squat(&admin, &squatted).await;

    let from = audit_mark(bed, &user).await;
    let server = Server::start_operator(
        config.clone(),
        devenv_manager::cluster::Source::Config(Box::new(manager.clone())),
        "manifests-test".into(),
    )
    .await;
    let ls_api: Api<LearnerSpace> = Api::namespaced(admin.clone(), &config.operator.namespace);
    let (name, learner_ns) = assert_the_operator_reconciles(&admin, &config, &ls_api).await;
    assert_the_pod_api_serves_eywalker(bed, &admin, &config, &server).await;
    assert_the_squatted_namespace_is_not_adopted(&admin, &config, &ls_api, &squat).await;

    // Nothing the manager wrote so far was refused (RBAC or policy), and it
    // wrote nothing into the squatted namespace.
    let upto = audit_mark(bed, &user).await;
    let writes = audit_writes(bed, &user, from, upto);
    let refused: Vec<&Value> = writes
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let into_squat: Vec<&Value> = writes
        .iter()
        .filter(|e| {
            e["objectRef"]["namespace"] == squatted.as_str()
                || e["objectRef"]["name"] == squatted.as_str()
        })
        .collect();
    assert!(into_squat.is_empty(), "written: {into_squat:#?}");

    // 4. What the manager's token cannot do, whatever happens to the
    //    manager: each write refused by the API server.
    let as_manager = kube::Client::try_from(manager).unwrap();
    out_of_lane(&admin, &as_manager, &user, &learner_ns, &squatted).await;

    // 5. Deletion: the tombstone is written and the LearnerSpace released;
    //    the victim's deletion leaves the squatter's namespace alone.
    let from = audit_mark(bed, &user).await;
    assert_deletion_leaves_a_tombstone(&admin, &config, &ls_api, &name).await;
    squat.assert_untouched(&admin).await;
    server.stop().await;

    // And the API server refused the manager nothing it tried to write.
    let upto = audit_mark(bed, &user).await;
    let refused: Vec<Value> = audit_writes(bed, &user, from, upto)
        .into_iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

/// deploy/ (the kustomization's resources, in its order: namespaces and
/// the CRD first), the example developer and workspace; the webhook
/// configurations and the example LearnerSpace as dry runs (the webhook is
/// not running; the LearnerSpace comes later).
async fn apply_deploy(admin: &kube::Client) {
    // The webhook configurations only as dry runs, below.
    let mut files: Vec<String> = testbed::manifests::resource_files("deploy/kustomization.yaml")
        .into_iter()
        .filter(|f| !f.starts_with("webhook-config/"))
        .collect();
    files.push("deploy/users/devenv-eywalker.yaml".into());
    files.push("deploy/examples/devenv-statefulset.yaml".into());
    for file in &files {
        for doc in docs(file) {
            apply(admin, &doc, false)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            if doc["kind"] == "CustomResourceDefinition" {
                crd_established(&Api::all(admin.clone())).await;
            }
        }
    }
    for file in [
        "webhook-config/webhooks.yaml",
        "deploy/examples/learnerspace.yaml",
    ] {
        for doc in docs(file) {
            apply(admin, &doc, true)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

/// Server-side applies `doc` (or only dry-runs it) as the admin.
async fn apply(client: &kube::Client, doc: &Value, dry_run: bool) -> Result<(), String> {
    use kube::api::{DynamicObject, Patch, PatchParams};
    let (api_version, kind) = kind_of(doc);
    let gvk = match api_version.split_once('/') {
        Some((group, version)) => kube::api::GroupVersionKind::gvk(group, version, kind),
        None => kube::api::GroupVersionKind::gvk("", api_version, kind),
    };
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{api_version} {kind}: {e}"))?;
    let api: Api<DynamicObject> = match (capabilities.scope, doc["metadata"]["namespace"].as_str())
    {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        (kube::discovery::Scope::Namespaced, None) => {
            return Err(format!("{kind}: namespaced, and no namespace"));
        }
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let mut params = PatchParams::apply("devenv-manifests-test").force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(doc))
        .await
        .map(drop)
        .map_err(|e| format!("{kind} {name}: {e}"))
}

/// The manager's pod, as the Deployment would create it, passes the
/// "restricted" Pod Security level devenv-system enforces (a dry-run create
/// runs admission, PodSecurity included).
async fn assert_the_managers_pod_is_restricted(admin: &kube::Client) {
    let template = manager_deployment().spec.template;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("devenv-manager-dry-run".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        ..Pod::default()
    };
    Api::<Pod>::namespaced(admin.clone(), MANAGER_SA.0)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .unwrap_or_else(|e| panic!("the manager's pod is refused in {}: {e}", MANAGER_SA.0));
}

/// A client configuration with the token of deploy/'s manager service
/// account, and its username, once a sample of its grants and the lane
/// policy are in force (RBAC is read from an informer cache and policies
/// load asynchronously: what follows tests the grants, not their
/// propagation).
async fn manager_identity(bed: &testbed::TestBed) -> (kube::Config, String) {
    let user = format!("system:serviceaccount:{}:{}", MANAGER_SA.0, MANAGER_SA.1);
    let token = bed
        .token(MANAGER_SA.0, MANAGER_SA.1, testbed::SA_ISSUER, 3600)
        .await;
    let mut manager = bed.kube_config();
    manager.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    bed.wait_for_access(
        MANAGER_SA.0,
        MANAGER_SA.1,
        &[
            ("authentication.k8s.io", "tokenreviews", "create", None),
            ("aivo.dev", "learnerspaces", "watch", Some("aivo-system")),
            ("", "pods", "delete", Some("devenv")),
            ("rbac.authorization.k8s.io", "rolebindings", "create", None),
        ],
    )
    .await;
    fence_in_force(bed, &user).await;
    (manager, user)
}

/// The operator: the example LearnerSpace becomes Ready with its learner
/// binding (the `bind` grant passed), an Event and the Lease; the learner
/// reads Secrets in its namespace and nowhere else. Returns the
/// LearnerSpace's name and namespace.
async fn assert_the_operator_reconciles(
    admin: &kube::Client,
    config: &Config,
    ls_api: &Api<LearnerSpace>,
) -> (String, String) {
    let ls: LearnerSpace =
        serde_json::from_value(docs("deploy/examples/learnerspace.yaml")[0].clone()).unwrap();
    ls_api.create(&PostParams::default(), &ls).await.unwrap();
    let name = ls.metadata.name.clone().unwrap();
    let ready = eventually("the LearnerSpace Ready", || async {
        let ls = ls_api.get(&name).await.ok()?;
        let status = ls.status?;
        (status.phase == Some(Phase::Ready)).then_some(status)
    })
    .await;
    let learner_ns = ready.namespace.unwrap();
    let binding = Api::<RoleBinding>::namespaced(admin.clone(), &learner_ns)
        .get("learner")
        .await
        .expect("the learner RoleBinding");
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("ClusterRole", "devenv-learner")
    );
    let learner = format!("system:serviceaccount:{learner_ns}:learner");
    eventually("the learner's rights in force", || async {
        rbac_allows(admin, &learner, "", "secrets", "", "list", &learner_ns)
            .await
            .then_some(())
    })
    .await;
    assert!(
        !rbac_allows(admin, &learner, "", "secrets", "", "list", "default").await,
        "the learner reads Secrets elsewhere"
    );
    Api::<Lease>::namespaced(admin.clone(), &config.operator.namespace)
        .get("devenv-manager-operator")
        .await
        .expect("the leader Lease");
    eventually("an Event on the LearnerSpace", || async {
        let events = Api::<Event>::namespaced(admin.clone(), &config.operator.namespace)
            .list(&Default::default())
            .await
            .ok()?;
        events
            .items
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&name))
            .then_some(())
    })
    .await;
    (name, learner_ns)
}

/// The pod API: the CA is published; eywalker lists and deletes a pod.
async fn assert_the_pod_api_serves_eywalker(
    bed: &testbed::TestBed,
    admin: &kube::Client,
    config: &Config,
    server: &Server,
) {
    let devenv_ns = config.devenv.namespaces[0].clone();
    eventually("the CA ConfigMap", || async {
        Api::<ConfigMap>::namespaced(admin.clone(), &devenv_ns)
            .get_opt("devenv-manager-ca")
            .await
            .ok()?
    })
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "eywalker-workspace", "labels": {"developer": "eywalker"}},
        "spec": {
            "serviceAccountName": "devenv-eywalker",
            "containers": [{"name": "workspace", "image": "registry.example.com/devenv/workspace:1"}]
        }
    }))
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), &devenv_ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let developer_token = bed
        .token(&devenv_ns, "devenv-eywalker", &config.devenv.audience, 3600)
        .await;
    let client = server.client();
    let listed: Value = eventually("the pod API lists eywalker's pod", || async {
        let answer = client
            .get(server.api_url("/api/v1/pods"))
            .bearer_auth(&developer_token)
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let body: Value = answer.json().await.ok()?;
        (body["items"].as_array()?.len() == 1).then_some(body)
    })
    .await;
    assert_eq!(listed["items"][0]["name"], "eywalker-workspace");
    let deleted = client
        .delete(server.api_url(&format!("/api/v1/pods/{devenv_ns}/eywalker-workspace")))
        .bearer_auth(&developer_token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
}

/// The squatted namespace is not adopted: its LearnerSpace (`victim`)
/// fails with NamespaceTaken and a Warning Event, and the namespace is as
/// the squatter left it.
async fn assert_the_squatted_namespace_is_not_adopted(
    admin: &kube::Client,
    config: &Config,
    ls_api: &Api<LearnerSpace>,
    squat: &Squat,
) {
    let victim: LearnerSpace = serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": "victim", "namespace": config.operator.namespace},
        "spec": {"learnerId": "squatter.victim"}
    }))
    .unwrap();
    ls_api
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();
    let taken = eventually("the victim NamespaceTaken", || async {
        let status = ls_api.get("victim").await.ok()?.status?;
        (status.conditions.first()?.reason == "NamespaceTaken").then_some(status)
    })
    .await;
    assert_eq!(taken.phase, Some(Phase::Failed));
    assert_eq!(taken.namespace, None, "the namespace is not claimed");
    assert!(
        taken.message.as_deref().unwrap().contains("not adopted"),
        "{taken:?}"
    );
    eventually("a NamespaceTaken Event", || async {
        let events = Api::<Event>::namespaced(admin.clone(), &config.operator.namespace)
            .list(&Default::default())
            .await
            .ok()?;
        events
            .items
            .iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("victim")
                    && e.reason.as_deref() == Some("NamespaceTaken")
            })
            .map(|e| assert_eq!(e.type_.as_deref(), Some("Warning")))
    })
    .await;
    squat.assert_untouched(admin).await;
}

/// Deleting the example LearnerSpace `name` and the victim: both are
/// released, and a tombstone is written.
async fn assert_deletion_leaves_a_tombstone(
    admin: &kube::Client,
    config: &Config,
    ls_api: &Api<LearnerSpace>,
    name: &str,
) {
    ls_api.delete(name, &DeleteParams::default()).await.unwrap();
    ls_api
        .delete("victim", &DeleteParams::default())
        .await
        .unwrap();
    for released in [name, "victim"] {
        eventually(&format!("{released} released"), || async {
            ls_api.get_opt(released).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    let tombstones = Api::<ConfigMap>::namespaced(admin.clone(), &config.operator.namespace)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        tombstones.items.iter().any(|c| c
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("tombstone-")),
        "a tombstone"
    );
}

/// The number of lines in the audit log once every request `user` made so
/// far is in it. Other tests write to the same log meanwhile: marks only
/// bound a window, and [`audit_writes`] keeps `user`'s entries of it.
async fn audit_mark(bed: &testbed::TestBed, user: &str) -> usize {
    bed.count_writes_settled(user).await;
    std::fs::read_to_string(bed.audit_log_path().unwrap())
        .unwrap()
        .lines()
        .count()
}

/// The completed write requests `user` made itself (its own token, not
/// impersonated) between two [`audit_mark`]s.
fn audit_writes(bed: &testbed::TestBed, user: &str, from: usize, upto: usize) -> Vec<Value> {
    std::fs::read_to_string(bed.audit_log_path().unwrap())
        .unwrap()
        .lines()
        .skip(from)
        .take(upto - from)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == user)
        .collect()
}
