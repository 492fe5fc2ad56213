//! What deploy/'s manager token must not do, whatever happens to the
//! manager: each write out of its lane is refused by the API server (the
//! devenv-manager-lane admission policy, RBAC or the API server itself).

use devenv_manager::webhook::registration::CONFIGURATION_NAME;
use devenv_testbed::{TestBed, eventually};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// What refuses a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuser {
    /// The devenv-manager-lane policy (for writes RBAC allows: checked with
    /// SubjectAccessReviews).
    Lane,
    Rbac,
    /// The API server's own NamespaceLifecycle: kube-system, default and
    /// kube-public can be deleted by nobody.
    Lifecycle,
}

impl Refuser {
    /// Who refused, from the words of a 403.
    fn of(message: &str) -> Option<Refuser> {
        if message.contains("devenv-manager stays in its lane") {
            Some(Refuser::Lane)
        } else if message.contains("cannot ") || message.contains("attempting to grant") {
            Some(Refuser::Rbac)
        } else if message.contains("may not be deleted") {
            Some(Refuser::Lifecycle)
        } else {
            None
        }
    }
}

/// One write the manager's token must not make: refused with 403 by the
/// API server, by `by`.
struct Forbidden<'a> {
    what: &'a str,
    by: Refuser,
    result: Result<(), kube::Error>,
}

/// Someone else's namespace, which the manager must not delete.
const BYSTANDER: &str = "bystander";

/// Every kind of write outside the manager's lane is refused; in-lane
/// writes of the same kinds are not (dry runs), so the refusals are the
/// lane's and not a blanket one.
pub(super) async fn out_of_lane(
    admin: &kube::Client,
    manager: &kube::Client,
    user: &str,
    learner_ns: &str,
    squatted: &str,
) {
    let other: Namespace =
        serde_json::from_value(json!({"metadata": {"name": BYSTANDER}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let own = OwnWebhook::create(admin).await;
    let attempts = forbidden_writes(manager, learner_ns, squatted).await;
    assert_rbac_grants_what_the_lane_refuses(admin, user).await;
    assert_refused_by_whom_expected(attempts);
    assert_in_lane_writes_pass(manager, learner_ns).await;
    own.assert_only_its_ca_bundle_may_change(manager).await;
    own.delete(admin).await;
}

/// A MutatingWebhookConfiguration named as the manager's own, whose webhook
/// is sent nothing (its namespaceSelector matches no namespace), so that
/// tests sharing the bed are not affected while it exists.
struct OwnWebhook;

impl OwnWebhook {
    fn api(client: &kube::Client) -> Api<MutatingWebhookConfiguration> {
        Api::all(client.clone())
    }

    async fn create(admin: &kube::Client) -> OwnWebhook {
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": CONFIGURATION_NAME},
            "webhooks": [{
                "name": "pods.devenv-manager.devenv.io",
                "clientConfig": {"url": "https://127.0.0.1:9/mutate/pods"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"devenv-manager/lane-test": "never"}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Ignore",
            }],
        }))
        .unwrap();
        Self::api(admin)
            .create(&PostParams::default(), &config)
            .await
            .expect("creating the manager's webhook configuration");
        OwnWebhook
    }

    /// Its caBundle may change (a dry run), and nothing else of it.
    async fn assert_only_its_ca_bundle_may_change(&self, manager: &kube::Client) {
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        let json_patch = |ops: Value| Patch::Json::<()>(serde_json::from_value(ops).unwrap());
        Self::api(manager)
            .patch(
                CONFIGURATION_NAME,
                &dry,
                &json_patch(json!([{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}])),
            )
            .await
            .expect("the manager writes its own caBundle");
        for (what, ops) in [
            (
                "widen the namespaceSelector",
                json!([{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}]),
            ),
            (
                "point the webhook elsewhere",
                json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": "https://attacker.example/mutate"}]),
            ),
            (
                "fail open",
                json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"}]),
            ),
            (
                "add a webhook",
                json!([{"op": "add", "path": "/webhooks/-", "value": {
                "name": "more.devenv-manager.devenv.io", "clientConfig": {"url": "https://127.0.0.1:9/x"},
                "sideEffects": "None", "admissionReviewVersions": ["v1"]}}]),
            ),
        ] {
            let refused = Self::api(manager)
                .patch(CONFIGURATION_NAME, &dry, &json_patch(ops))
                .await;
            match refused {
                Err(kube::Error::Api(status)) if status.code == 403 => assert_eq!(
                    Refuser::of(&status.message),
                    Some(Refuser::Lane),
                    "{what}: {}",
                    status.message
                ),
                other => panic!("{what}: not refused: {other:?}"),
            }
        }
    }

    async fn delete(self, admin: &kube::Client) {
        Self::api(admin)
            .delete(CONFIGURATION_NAME, &DeleteParams::default())
            .await
            .expect("deleting the manager's webhook configuration");
    }
}

/// RoleBinding `learner-extra` in `ns`, of ClusterRole `role`, to `subject`.
fn learner_extra(ns: &str, role: &str, subject: Value) -> RoleBinding {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "learner-extra", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject]
    }))
    .unwrap()
}

/// The `default` service account of `ns`, as a binding's subject.
fn default_sa(ns: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": "default", "namespace": ns})
}

fn done<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    result.map(drop)
}

/// Each write out of the manager's lane, made with its token, and who must
/// refuse it.
async fn forbidden_writes(
    manager: &kube::Client,
    learner_ns: &str,
    squatted: &str,
) -> [Forbidden<'static>; 20] {
    let apply = PatchParams::apply("devenv-manager").force();
    let cms = |ns: &str| Api::<ConfigMap>::namespaced(manager.clone(), ns);
    let namespaces = Api::<Namespace>::all(manager.clone());
    let coredns: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns"},
        "data": {"Corefile": ". { forward . 6.6.6.6 }"}
    }))
    .unwrap();
    let open_policy: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all"},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]}
    }))
    .unwrap();
    let ours_labels = json!({
        "app.kubernetes.io/managed-by": "devenv-manager",
        "aivo.dev/component": "learner-namespace",
        "aivo.dev/learnerspace": "victim",
        "pod-security.kubernetes.io/enforce": "restricted"
    });
    let stray_secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "stray", "namespace": "devenv-system"}, "stringData": {"k": "v"}}))
    .unwrap();
    let made: Namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "aivo-learner-made-up-00000000"}}))
    .unwrap();
    let lax: Namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "aivo-learner-lax-00000000", "labels": {
            "app.kubernetes.io/managed-by": "devenv-manager",
            "aivo.dev/component": "learner-namespace",
            "pod-security.kubernetes.io/enforce": "privileged"}}}))
    .unwrap();

    [
        Forbidden {
            what: "apply ConfigMap kube-system/coredns",
            by: Refuser::Lane,
            result: done(cms("kube-system").patch("coredns", &apply, &Patch::Apply(&coredns)).await),
        },
        Forbidden {
            what: "delete namespace kube-system",
            by: Refuser::Lifecycle,
            result: done(namespaces.delete("kube-system", &DeleteParams::default()).await),
        },
        Forbidden {
            what: "delete a namespace that is not a learner's",
            by: Refuser::Lane,
            result: done(namespaces.delete(BYSTANDER, &DeleteParams::default()).await),
        },
        Forbidden {
            what: "label namespace kube-system privileged",
            by: Refuser::Lane,
            result: done(
                namespaces
                    .patch(
                        "kube-system",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
                    )
                    .await,
            ),
        },
        Forbidden {
            what: "create RoleBinding default/learner-extra (devenv-learner)",
            by: Refuser::Lane,
            result: done(
                Api::<RoleBinding>::namespaced(manager.clone(), "default")
                    .create(&PostParams::default(), &learner_extra("default", "devenv-learner", default_sa("default")))
                    .await,
            ),
        },
        Forbidden {
            what: "create NetworkPolicy default/allow-all",
            by: Refuser::Lane,
            result: done(
                Api::<NetworkPolicy>::namespaced(manager.clone(), "default")
                    .create(&PostParams::default(), &open_policy)
                    .await,
            ),
        },
        Forbidden {
            what: "create RoleBinding in the squatted namespace",
            by: Refuser::Lane,
            result: done(
                Api::<RoleBinding>::namespaced(manager.clone(), squatted)
                    .create(&PostParams::default(), &learner_extra(squatted, "devenv-learner", default_sa(squatted)))
                    .await,
            ),
        },
        Forbidden {
            what: "adopt the squatted namespace by labelling it",
            by: Refuser::Lane,
            result: done(
                namespaces
                    .patch(squatted, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": ours_labels}})))
                    .await,
            ),
        },
        Forbidden {
            what: "create a learner-named namespace without the manager's labels",
            by: Refuser::Lane,
            result: done(namespaces.create(&PostParams::default(), &made).await),
        },
        Forbidden {
            what: "create a learner namespace that is not Pod Security restricted",
            by: Refuser::Lane,
            result: done(namespaces.create(&PostParams::default(), &lax).await),
        },
        Forbidden {
            what: "bind devenv-learner to every authenticated user in a learner namespace",
            by: Refuser::Lane,
            result: done(
                Api::<RoleBinding>::namespaced(manager.clone(), learner_ns)
                    .create(
                        &PostParams::default(),
                        &learner_extra(
                            learner_ns,
                            "devenv-learner",
                            json!({"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}),
                        ),
                    )
                    .await,
            ),
        },
        Forbidden {
            what: "bind cluster-admin in a learner namespace",
            by: Refuser::Rbac,
            result: done(
                Api::<RoleBinding>::namespaced(manager.clone(), learner_ns)
                    .create(&PostParams::default(), &learner_extra(learner_ns, "cluster-admin", default_sa(learner_ns)))
                    .await,
            ),
        },
        Forbidden {
            what: "create a Secret in its own namespace that is not its certificate",
            by: Refuser::Lane,
            result: done(Api::<Secret>::namespaced(manager.clone(), "devenv-system").create(&PostParams::default(), &stray_secret).await),
        },
        Forbidden {
            what: "delete its certificate Secret",
            by: Refuser::Rbac,
            result: done(Api::<Secret>::namespaced(manager.clone(), "devenv-system").delete("devenv-manager-tls", &DeleteParams::default()).await),
        },
        Forbidden {
            what: "read a Secret of its own namespace that is not its certificate",
            by: Refuser::Rbac,
            result: done(Api::<Secret>::namespaced(manager.clone(), "devenv-system").get("other").await),
        },
        Forbidden {
            what: "patch a webhook configuration that is not its own",
            by: Refuser::Rbac,
            result: done(
                Api::<ValidatingWebhookConfiguration>::all(manager.clone())
                    .patch("someone-else", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
                    .await,
            ),
        },
        Forbidden {
            what: "get Secret default/anything",
            by: Refuser::Rbac,
            result: done(Api::<Secret>::namespaced(manager.clone(), "default").get("anything").await),
        },
        Forbidden {
            what: "list Secrets in every namespace",
            by: Refuser::Rbac,
            result: done(Api::<Secret>::all(manager.clone()).list(&ListParams::default()).await),
        },
        Forbidden {
            what: "list Secrets in the learner namespace",
            by: Refuser::Rbac,
            result: done(Api::<Secret>::namespaced(manager.clone(), learner_ns).list(&ListParams::default()).await),
        },
        Forbidden {
            what: "list pods outside the devenv namespaces",
            by: Refuser::Rbac,
            result: done(Api::<Pod>::namespaced(manager.clone(), "default").list(&ListParams::default()).await),
        },
    ]
}

/// The fence's refusals are of writes RBAC grants: the grant alone is not
/// what stops them.
async fn assert_rbac_grants_what_the_lane_refuses(admin: &kube::Client, user: &str) {
    let granted = [
        ("", "configmaps", "", "patch", "kube-system"),
        ("", "namespaces", "kube-system", "delete", ""),
        ("", "namespaces", BYSTANDER, "delete", ""),
        ("", "namespaces", "kube-system", "patch", ""),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            "",
            "create",
            "default",
        ),
        (
            "rbac.authorization.k8s.io",
            "clusterroles",
            "devenv-learner",
            "bind",
            "default",
        ),
        (
            "networking.k8s.io",
            "networkpolicies",
            "",
            "create",
            "default",
        ),
        ("", "namespaces", "", "create", ""),
        ("", "secrets", "", "create", "devenv-system"),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            CONFIGURATION_NAME,
            "patch",
            "",
        ),
    ];
    for (group, resource, name, verb, ns) in granted {
        assert!(
            rbac_allows(admin, user, group, resource, name, verb, ns).await,
            "RBAC grants {verb} {resource} {name} in {ns:?}"
        );
    }
}

/// Each attempt was refused with 403, by the one it names.
fn assert_refused_by_whom_expected(attempts: [Forbidden<'_>; 20]) {
    let mut problems = Vec::new();
    for attempt in attempts {
        match attempt.result {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                // The lane policy's own words: an error evaluating it would
                // refuse too, but say "resulted in error".
                let by = Refuser::of(&status.message);
                if by != Some(attempt.by) {
                    problems.push(format!(
                        "{}: refused, but by {by:?}, not {:?}: {}",
                        attempt.what, attempt.by, status.message
                    ));
                }
            }
            other => problems.push(format!("{}: not refused: {other:?}", attempt.what)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// In its lane, the same kinds of write pass (dry runs: nothing changes).
async fn assert_in_lane_writes_pass(manager: &kube::Client, learner_ns: &str) {
    let cms = |ns: &str| Api::<ConfigMap>::namespaced(manager.clone(), ns);
    let namespaces = Api::<Namespace>::all(manager.clone());
    let dry_apply = PatchParams {
        dry_run: true,
        ..PatchParams::apply("lane-probe").force()
    };
    let probe: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vault-secret-paths"}, "data": {"role": "x"}
    }))
    .unwrap();
    cms(learner_ns)
        .patch("vault-secret-paths", &dry_apply, &Patch::Apply(&probe))
        .await
        .expect("a ConfigMap in a learner namespace");
    Api::<RoleBinding>::namespaced(manager.clone(), learner_ns)
        .patch(
            "learner-extra",
            &dry_apply,
            &Patch::Apply(&learner_extra(
                learner_ns,
                "devenv-learner",
                default_sa(learner_ns),
            )),
        )
        .await
        .expect("a devenv-learner binding in a learner namespace");
    namespaces
        .patch(
            learner_ns,
            &PatchParams {
                dry_run: true,
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"metadata": {"annotations": {"probe": "1"}}})),
        )
        .await
        .expect("a learner namespace it made");
}

/// Whether RBAC alone lets `user` do `verb` (on the object `name`, if any)
/// in `ns` ("" cluster-wide), asked with a SubjectAccessReview.
pub(super) async fn rbac_allows(
    admin: &kube::Client,
    user: &str,
    group: &str,
    resource: &str,
    name: &str,
    verb: &str,
    ns: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let groups = match user.strip_prefix("system:serviceaccount:") {
        Some(rest) => vec![
            "system:serviceaccounts".to_string(),
            format!(
                "system:serviceaccounts:{}",
                rest.split(':').next().unwrap_or_default()
            ),
            "system:authenticated".to_string(),
        ],
        None => vec!["system:authenticated".to_string()],
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(groups),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                name: (!name.is_empty()).then(|| name.to_string()),
                verb: Some(verb.to_string()),
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    kube::Api::<SubjectAccessReview>::all(admin.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

/// The API server loads admission policies asynchronously: waits until the
/// lane policy refuses a dry-run write of the manager's (made by the admin
/// impersonating it, so the manager's own record stays clean).
pub(super) async fn fence_in_force(bed: &TestBed, user: &str) {
    let mut config = bed.kube_config();
    config.auth_info.impersonate = Some(user.to_string());
    let impersonating = kube::Client::try_from(config).unwrap();
    let probe: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "lane-probe"}})).unwrap();
    let dry = kube::api::PostParams {
        dry_run: true,
        ..kube::api::PostParams::default()
    };
    let api = kube::Api::<ConfigMap>::namespaced(impersonating, "kube-system");
    eventually("the devenv-manager-lane policy in force", || async {
        match api.create(&dry, &probe).await {
            // The policy's own denial, not an error evaluating it.
            Err(kube::Error::Api(s)) if s.message.contains("is outside it") => Some(()),
            _ => None,
        }
    })
    .await;
}
