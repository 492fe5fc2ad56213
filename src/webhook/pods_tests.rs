//! Every rule of docs/webhook.md for pods, one table or test each.

use json_patch::PatchOperation;
use serde_json::{Value, json};

use super::*;
use crate::config::DevenvConfig;

fn policy() -> PodPolicy {
    PodPolicy::new(&DevenvConfig::default())
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("test pod")
}

fn devenv_pod(sa: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ws"},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "main", "image": "ide"}]}
    })
}

fn create(p: &PodPolicy, value: &Value) -> PodDecision {
    p.decide(&Operation::Create, "devenv", &pod(value.clone()), None)
}

fn patch_of(decision: PodDecision) -> Vec<PatchOperation> {
    match decision {
        PodDecision::Allow { patch, .. } => patch,
        other => panic!("expected allow, got {other:?}"),
    }
}

fn errors_of(decision: PodDecision) -> Vec<String> {
    match decision {
        PodDecision::Deny { errors, .. } => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected deny, got {other:?}"),
    }
}

/// Applies the webhook's patch like the API server does.
fn mutate(p: &PodPolicy, value: &Value) -> Value {
    let mut doc = value.clone();
    json_patch::patch(&mut doc, &patch_of(create(p, value))).expect("patch applies");
    doc
}

#[test]
fn only_devenv_pods_are_devenv() {
    let p = policy();
    let cases = [
        ("devenv", Some("devenv-alice"), true),
        ("other", Some("devenv-alice"), false),
        ("kube-system", Some("devenv-alice"), false),
        ("devenv", Some("default"), false),
        ("devenv", None, false),
        ("devenv", Some("devenv-manager"), false),
        ("devenv", Some("devenv-user-template"), false),
        ("devenv", Some("devenv-Alice"), false),
        ("devenv", Some("devenv-"), false),
        ("devenv", Some("devenv-al_ice"), false),
    ];
    for (namespace, sa, devenv) in cases {
        let mut value = devenv_pod("x");
        match sa {
            Some(sa) => value["spec"]["serviceAccountName"] = json!(sa),
            None => {
                value["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("serviceAccountName");
            }
        }
        let decision = p.decide(&Operation::Create, namespace, &pod(value), None);
        assert_eq!(
            decision != PodDecision::NotDevenv,
            devenv,
            "{namespace} {sa:?}"
        );
    }
}

#[test]
fn injects_everything_into_a_bare_pod() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    let out = mutate(&p, &value);

    assert_eq!(out["metadata"]["labels"], json!({"developer": "alice"}));
    assert_eq!(
        out["spec"]["volumes"],
        json!([{
            "name": "devenv-manager-token",
            "projected": {"sources": [
                {"serviceAccountToken": {"path": "devenv-manager", "audience": "devenv-manager", "expirationSeconds": 3600}},
                {"configMap": {"name": "devenv-manager-ca", "optional": true, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ]}
        }])
    );
    for field in ["containers", "initContainers"] {
        let c = &out["spec"][field][0];
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "devenv-manager-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true}]),
            "{field}"
        );
        assert_eq!(
            c["env"],
            json!([{"name": "DEVENV_MANAGER_URL", "value": "https://devenv-manager.devenv-system.svc.cluster.local:8080"}]),
            "{field}"
        );
    }
}

#[test]
fn injection_is_idempotent() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "x", "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}));
    value["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let once = mutate(&p, &value);
    assert_eq!(
        patch_of(create(&p, &once)),
        vec![],
        "second pass must add nothing"
    );
}

#[test]
fn adds_only_what_is_absent_and_appends_to_existing_lists() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["metadata"]["labels"] = json!({"app.kubernetes.io/name": "ide"});
    value["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    value["spec"]["containers"][0]["env"] = json!([{"name": "DEVENV_MANAGER_URL", "value": "https://custom:8080"}, {"name": "B", "value": "2"}]);
    value["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);

    let paths: Vec<String> = patch_of(create(&p, &value))
        .iter()
        .map(|op| match op {
            PatchOperation::Add(add) => add.path.to_string(),
            other => panic!("only adds expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/labels/developer",
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts/-"
        ]
    );
    let out = mutate(&p, &value);
    assert_eq!(out["metadata"]["labels"]["app.kubernetes.io/name"], "ide");
    assert_eq!(
        out["spec"]["containers"][0]["env"][0]["value"], "https://custom:8080",
        "a value the pod sets is kept"
    );
    assert_eq!(out["spec"]["volumes"][1]["name"], "devenv-manager-token");
}

#[test]
fn a_matching_label_is_kept() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["metadata"]["labels"] = json!({"developer": "alice"});
    let out = mutate(&p, &value);
    assert_eq!(out["metadata"]["labels"], json!({"developer": "alice"}));
}

#[test]
fn our_own_volume_is_kept_and_completed_with_the_ca() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    // A workspace's own token volume (as in deploy/examples/), after API server defaulting.
    value["spec"]["volumes"] = json!([{
        "name": "devenv-manager-token",
        "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"path": "devenv-manager", "audience": "devenv-manager", "expirationSeconds": 7200}}
        ]}
    }]);
    let patch = patch_of(create(&p, &value));
    let out = mutate(&p, &value);
    assert!(
        patch
            .iter()
            .any(|op| op.path().as_str() == "/spec/volumes/0/projected/sources/-")
    );
    let sources = &out["spec"]["volumes"][0]["projected"]["sources"];
    assert_eq!(
        sources[0]["serviceAccountToken"]["expirationSeconds"], 7200,
        "kept as declared"
    );
    assert_eq!(sources[1]["configMap"]["name"], "devenv-manager-ca");
    assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(patch_of(create(&p, &out)), vec![]);
}

#[test]
fn our_mount_with_defaulted_fields_is_not_different() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["containers"][0]["volumeMounts"] = json!([{
        "name": "devenv-manager-token", "mountPath": "/var/run/secrets/tokens/", "readOnly": true, "mountPropagation": "None"
    }]);
    let out = mutate(&p, &value);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn opting_out_adds_nothing() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["metadata"]["annotations"] = json!({"devenv.io/inject": "false"});
    assert_eq!(patch_of(create(&p, &value)), vec![]);
}

#[test]
fn denies_a_label_naming_another_developer() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["metadata"]["labels"] = json!({"developer": "bob"});
    let errors = errors_of(create(&p, &value));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("metadata.labels.developer: "),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("\"bob\"") && errors[0].contains("devenv-alice"),
        "{errors:?}"
    );
}

#[test]
fn opting_out_never_opts_out_of_the_denials() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["metadata"]["annotations"] = json!({"devenv.io/inject": "false"});
    value["metadata"]["labels"] = json!({"developer": "bob"});
    errors_of(create(&p, &value));
}

#[test]
fn denies_updates_that_change_or_remove_the_label() {
    let p = policy();
    let mut old = devenv_pod("devenv-alice");
    old["metadata"]["labels"] = json!({"developer": "alice"});
    let old = pod(old);

    let mut removed = devenv_pod("devenv-alice");
    removed["metadata"]["labels"] = json!({"other": "x"});
    let errors = errors_of(p.decide(&Operation::Update, "devenv", &pod(removed), Some(&old)));
    assert!(
        errors[0].starts_with("metadata.labels.developer: may not be removed"),
        "{errors:?}"
    );

    let mut changed = devenv_pod("devenv-alice");
    changed["metadata"]["labels"] = json!({"developer": "bob"});
    let errors = errors_of(p.decide(&Operation::Update, "devenv", &pod(changed), Some(&old)));
    assert_eq!(
        errors.len(),
        2,
        "names another developer and changes it: {errors:?}"
    );

    let same = pod(json!({
        "metadata": {"name": "ws", "labels": {"developer": "alice", "new": "label"}},
        "spec": {"serviceAccountName": "devenv-alice", "containers": [{"name": "main"}]}
    }));
    assert_eq!(
        p.decide(&Operation::Update, "devenv", &same, Some(&old)),
        PodDecision::Allow {
            developer: "alice".into(),
            patch: vec![]
        },
        "updates are never patched: pod specs are immutable"
    );
}

#[test]
fn denies_a_foreign_volume_under_our_name() {
    let p = policy();
    for foreign in [
        json!({"name": "devenv-manager-token", "emptyDir": {}}),
        json!({"name": "devenv-manager-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "devenv-manager", "audience": "vault"}}]}}),
        json!({"name": "devenv-manager-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "audience": "devenv-manager"}}]}}),
    ] {
        let mut value = devenv_pod("devenv-alice");
        value["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}, foreign]);
        let errors = errors_of(create(&p, &value));
        assert!(errors[0].starts_with("spec.volumes[1]: "), "{errors:?}");
    }
}

#[test]
fn denies_another_mount_at_the_token_path() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["initContainers"] = json!([{"name": "init", "volumeMounts": [{"name": "x", "mountPath": "/var/run/secrets/tokens/"}]}]);
    value["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "a", "mountPath": "/a"}, {"name": "secrets", "mountPath": "/var/run/secrets/tokens"}]);
    value["metadata"]["labels"] = json!({"developer": "mallory"});
    let errors = errors_of(create(&p, &value));
    assert_eq!(errors.len(), 3, "every error is collected: {errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("spec.initContainers[0].volumeMounts[0]: "))
    );
    assert!(errors.iter().any(|e| e.starts_with("spec.containers[0].volumeMounts[1]: mounts volume \"secrets\"")));
}

/// Every spelling of the token path, and every path under it, is the token
/// path: a mount of anything else there is refused, `subPath` or not.
#[test]
fn mounts_at_or_under_the_token_path_are_refused_however_spelt() {
    let p = policy();
    for path in [
        "/var/run/secrets/tokens",
        "/var/run/secrets/tokens/",
        "/var/run/secrets//tokens",
        "//var/run/secrets/tokens",
        "/var/run/secrets/./tokens",
        "/var/run/./secrets/tokens/.",
        "/var/run/other/../secrets/tokens",
        "/../var/run/secrets/tokens",
        "var/run/secrets/tokens",
        "/var/run/secrets/tokens/devenv-manager",
        "/var/run/secrets/tokens/ca.crt",
        "/var/run/secrets/tokens/deeper/still",
    ] {
        for sub_path in [None, Some("token")] {
            let mut mount = json!({"name": "mine", "mountPath": path});
            if let Some(sub_path) = sub_path {
                mount["subPath"] = json!(sub_path);
            }
            let mut value = devenv_pod("devenv-alice");
            value["spec"]["volumes"] = json!([{"name": "mine", "secret": {"secretName": "s"}}]);
            value["spec"]["containers"][0]["volumeMounts"] = json!([mount]);
            let errors = errors_of(create(&p, &value));
            assert_eq!(errors.len(), 1, "{path} {sub_path:?}: {errors:?}");
            assert!(
                errors[0].starts_with("spec.containers[0].volumeMounts[0]: mounts volume \"mine\"")
                    && errors[0].contains("at or under /var/run/secrets/tokens"),
                "{path}: {errors:?}"
            );
        }
    }
}

#[test]
fn mounts_beside_or_above_the_token_path_are_allowed() {
    let p = policy();
    for path in [
        "/var/run/secrets",
        "/var/run/secrets/tokens-other",
        "/var/run/secrets/token",
        "/var/run/secrets/tokens/../other",
        "/data",
    ] {
        let mut value = devenv_pod("devenv-alice");
        value["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        value["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": path}]);
        let out = mutate(&p, &value);
        let mounts = out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap();
        assert_eq!(mounts.len(), 2, "{path}: ours added beside it");
        assert_eq!(mounts[1]["mountPath"], "/var/run/secrets/tokens");
    }
}

#[test]
fn our_volume_mounted_at_another_spelling_of_the_path_is_not_mounted_twice() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "devenv-manager-token", "mountPath": "/var/run/secrets//tokens/.", "readOnly": true}]);
    let out = mutate(&p, &value);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn token_source() -> Value {
    json!({"serviceAccountToken": {"path": "devenv-manager", "audience": "devenv-manager"}})
}

fn ca_source() -> Value {
    json!({"configMap": {"name": "devenv-manager-ca", "optional": true, "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
}

/// A volume under our name counts as ours only with exactly our token
/// source and at most our CA source: anything beside them could put a file
/// of someone else's choosing where `devenv` reads.
#[test]
fn a_volume_under_our_name_with_any_other_source_is_refused() {
    let p = policy();
    let cases = [
        (
            "a secret beside the token",
            json!([token_source(), {"secret": {"name": "stolen", "items": [{"key": "t", "path": "x"}]}}]),
        ),
        (
            "the downward API beside the token",
            json!([token_source(), {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]),
        ),
        (
            "another config map beside the token",
            json!([token_source(), {"configMap": {"name": "other", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]),
        ),
        (
            "every key of our config map",
            json!([token_source(), {"configMap": {"name": "devenv-manager-ca"}}]),
        ),
        (
            "another item of our config map",
            json!([token_source(), {"configMap": {"name": "devenv-manager-ca", "items": [
                {"key": "ca.crt", "path": "ca.crt"}, {"key": "extra", "path": "extra"}]}}]),
        ),
        (
            "our CA at another path",
            json!([token_source(), {"configMap": {"name": "devenv-manager-ca", "items": [{"key": "ca.crt", "path": "devenv-manager-2"}]}}]),
        ),
        ("two token sources", json!([token_source(), token_source()])),
        (
            "two CA sources",
            json!([token_source(), ca_source(), ca_source()]),
        ),
        (
            "a source of a kind added later",
            json!([token_source(), {"podCertificate": {"signerName": "x", "keyType": "ED25519"}}]),
        ),
        ("the CA alone", json!([ca_source()])),
        ("no source", json!([])),
    ];
    for (what, sources) in cases {
        let mut value = devenv_pod("devenv-alice");
        value["spec"]["volumes"] =
            json!([{"name": "devenv-manager-token", "projected": {"sources": sources}}]);
        let errors = errors_of(create(&p, &value));
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        assert!(
            errors[0].starts_with("spec.volumes[0]: a volume named devenv-manager-token exists"),
            "{what}: {errors:?}"
        );
    }
}

#[test]
fn our_volume_with_both_sources_after_defaulting_is_ours() {
    let p = policy();
    let mut value = devenv_pod("devenv-alice");
    value["spec"]["volumes"] = json!([{"name": "devenv-manager-token", "projected": {
    "defaultMode": 420,
    "sources": [
        {"serviceAccountToken": {"path": "devenv-manager", "audience": "devenv-manager", "expirationSeconds": 3600}},
        {"configMap": {"name": "devenv-manager-ca", "optional": true, "items": [{"key": "ca.crt", "path": "ca.crt", "mode": 292}]}}
    ]}}]);
    let patch = patch_of(create(&p, &value));
    assert!(
        patch
            .iter()
            .all(|op| !op.path().as_str().starts_with("/spec/volumes")),
        "kept as it is: {patch:?}"
    );
}

/// Pod volumes and mounts cannot change after creation; an UPDATE is judged
/// on its label only, and only when the label changes. So a pod admitted
/// before a rule existed (or while the webhook was away) can still be
/// updated, for instance to remove its finalizers.
#[test]
fn updates_that_keep_the_label_are_allowed_whatever_the_pod_holds() {
    let p = policy();
    let mut old = devenv_pod("devenv-alice");
    old["metadata"]["labels"] = json!({"developer": "bob"});
    old["metadata"]["finalizers"] = json!(["example.com/hold"]);
    old["spec"]["volumes"] = json!([{"name": "devenv-manager-token", "emptyDir": {}}]);
    old["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "x", "mountPath": "/var/run/secrets/tokens"}]);
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    assert_eq!(
        p.decide(
            &Operation::Update,
            "devenv",
            &pod(new),
            Some(&pod(old.clone()))
        ),
        PodDecision::Allow {
            developer: "alice".into(),
            patch: vec![]
        }
    );
    // The same pod created is refused three times over.
    assert_eq!(errors_of(create(&p, &old)).len(), 3);
}

#[test]
fn an_update_may_add_the_label_only_for_the_pods_own_developer() {
    let p = policy();
    let old = pod(devenv_pod("devenv-alice"));
    let mut own = devenv_pod("devenv-alice");
    own["metadata"]["labels"] = json!({"developer": "alice"});
    assert!(matches!(
        p.decide(&Operation::Update, "devenv", &pod(own), Some(&old)),
        PodDecision::Allow { .. }
    ));
    let mut other = devenv_pod("devenv-alice");
    other["metadata"]["labels"] = json!({"developer": "bob"});
    let errors = errors_of(p.decide(&Operation::Update, "devenv", &pod(other), Some(&old)));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("names developer \"bob\""), "{errors:?}");
}

#[test]
fn configuration_is_honoured() {
    let config = DevenvConfig {
        namespaces: vec!["sandbox".into()],
        service_account_prefix: "dev-".into(),
        audience: "aud".into(),
        token_mount_path: "/tokens".into(),
        manager_url: "https://m:1".into(),
        reserved_names: vec!["admin".into()],
        token_expiration_seconds: 600,
    };
    let p = PodPolicy::new(&config);
    let value = devenv_pod("dev-carol");
    let decision = p.decide(&Operation::Create, "sandbox", &pod(value.clone()), None);
    let mut out = value.clone();
    json_patch::patch(&mut out, &patch_of(decision)).unwrap();
    assert_eq!(out["metadata"]["labels"]["developer"], "carol");
    assert_eq!(
        out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "aud"
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/tokens"
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"][0]["value"],
        "https://m:1"
    );
    assert_eq!(
        p.decide(
            &Operation::Create,
            "sandbox",
            &pod(devenv_pod("dev-admin")),
            None
        ),
        PodDecision::NotDevenv
    );
}

#[test]
fn pointers_escape_slash_and_tilde() {
    assert_eq!(
        pointer(&["metadata", "labels", "a/b~c"]).to_string(),
        "/metadata/labels/a~1b~0c"
    );
}
