//! Every LearnerSpace rule of docs/webhook.md.

use serde_json::{Value, json};

use super::*;
use crate::config::OperatorConfig;

fn check(spec: Value) -> Validation {
    validate(&OperatorConfig::default(), &json!({"spec": spec}), None)
}

fn fields(v: &Validation) -> Vec<&str> {
    v.errors.iter().map(|e| e.field.as_str()).collect()
}

/// The example LearnerSpace of deploy/examples/learnerspace.yaml.
fn example() -> Value {
    json!({
        "learnerId": "john.doe",
        "subjects": ["mathematics", "science", "programming"],
        "resourceQuota": {"cpu": "2", "memory": "4Gi", "storage": "10Gi", "pods": 10},
        "networkPolicy": {"egressDeny": true, "allowedNamespaces": ["aivo-system", "aivo-shared"]},
        "vaultRole": "learner-default"
    })
}

#[test]
fn the_readme_example_is_valid() {
    let v = check(example());
    assert!(v.is_valid(), "{:?}", v.errors);
    assert!(v.warnings.is_empty());
}

#[test]
fn only_learner_id_is_required() {
    assert!(check(json!({"learnerId": "a"})).is_valid());
    assert_eq!(fields(&check(json!({}))), ["spec.learnerId"]);
    assert_eq!(
        fields(&validate(&OperatorConfig::default(), &json!({}), None)),
        ["spec"]
    );
    assert!(check(json!({"learnerId": "a", "resourceQuota": null, "vaultRole": null})).is_valid());
}

#[test]
fn learner_ids() {
    for ok in [
        "a",
        "john.doe",
        "John.Doe",
        "a_b@c-d.e",
        &"x".repeat(128),
        "0",
    ] {
        assert!(check(json!({"learnerId": ok})).is_valid(), "{ok}");
    }
    for bad in [
        json!(""),
        json!("x".repeat(129)),
        json!("a b"),
        json!("a/b"),
        json!("é"),
        json!("..."),
        json!("@_-"),
        json!(7),
    ] {
        let v = check(json!({"learnerId": bad}));
        assert_eq!(fields(&v), ["spec.learnerId"], "{bad}");
    }
}

#[test]
fn learner_id_is_immutable() {
    let config = OperatorConfig::default();
    let old = json!({"spec": {"learnerId": "john.doe"}});
    let v = validate(&config, &json!({"spec": {"learnerId": "jane"}}), Some(&old));
    assert_eq!(
        v.errors[0].to_string(),
        "spec.learnerId: is immutable (was \"john.doe\", now \"jane\")"
    );
    assert!(
        validate(
            &config,
            &json!({"spec": {"learnerId": "john.doe", "subjects": ["x"]}}),
            Some(&old)
        )
        .is_valid()
    );
}

#[test]
fn subjects() {
    assert!(check(json!({"learnerId": "a", "subjects": []})).is_valid());
    let v = check(
        json!({"learnerId": "a", "subjects": ["math", "", "Math", "math", 3, "x".repeat(64)]}),
    );
    assert_eq!(
        fields(&v),
        [
            "spec.subjects[1]",
            "spec.subjects[2]",
            "spec.subjects[3]",
            "spec.subjects[4]",
            "spec.subjects[5]"
        ]
    );
    let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    assert_eq!(
        fields(&check(json!({"learnerId": "a", "subjects": many}))),
        ["spec.subjects"]
    );
    assert_eq!(
        fields(&check(json!({"learnerId": "a", "subjects": "math"}))),
        ["spec.subjects"]
    );
}

#[test]
fn quota_quantities() {
    for ok in [
        json!("2"),
        json!(2),
        json!("500m"),
        json!("16"),
        json!("0.5"),
        json!("1e1"),
    ] {
        assert!(
            check(json!({"learnerId": "a", "resourceQuota": {"cpu": ok}})).is_valid(),
            "{ok}"
        );
    }
    for bad in [
        json!("0"),
        json!("-1"),
        json!("17"),
        json!("16001m"),
        json!("two"),
        json!("2 "),
        json!(true),
    ] {
        let v = check(json!({"learnerId": "a", "resourceQuota": {"cpu": bad}}));
        assert_eq!(fields(&v), ["spec.resourceQuota.cpu"], "{bad}");
    }
    assert!(
        check(json!({"learnerId": "a", "resourceQuota": {"memory": "64Gi", "storage": "500Gi"}}))
            .is_valid()
    );
    let v =
        check(json!({"learnerId": "a", "resourceQuota": {"memory": "65Gi", "storage": "0.5Ti"}}));
    assert_eq!(
        fields(&v),
        ["spec.resourceQuota.memory", "spec.resourceQuota.storage"]
    );
    assert!(
        v.errors[0].reason.contains("exceeds the maximum of 64Gi"),
        "{:?}",
        v.errors
    );
}

#[test]
fn ephemeral_storage_is_a_bounded_quantity() {
    let v = check(json!({"learnerId": "a", "resourceQuota": {"ephemeralStorage": "100Gi"}}));
    assert!(v.is_valid() && v.warnings.is_empty(), "{v:?}");
    for bad in [json!("101Gi"), json!("0"), json!("lots"), json!(false)] {
        let v = check(json!({"learnerId": "a", "resourceQuota": {"ephemeralStorage": bad}}));
        assert_eq!(fields(&v), ["spec.resourceQuota.ephemeralStorage"], "{bad}");
    }
    let v = check(json!({"learnerId": "a", "resourceQuota": {"ephemeralStorage": "200Gi"}}));
    assert!(
        v.errors[0].reason.contains("exceeds the maximum of 100Gi"),
        "{:?}",
        v.errors
    );
}

#[test]
fn quota_counts() {
    assert!(check(json!({"learnerId": "a", "resourceQuota": {"pods": 1, "services": 0, "secrets": 100, "configmaps": 5}})).is_valid());
    let v = check(
        json!({"learnerId": "a", "resourceQuota": {"pods": 0, "services": -1, "secrets": 1.5, "configmaps": "5"}}),
    );
    assert_eq!(
        fields(&v),
        [
            "spec.resourceQuota.pods",
            "spec.resourceQuota.services",
            "spec.resourceQuota.secrets",
            "spec.resourceQuota.configmaps"
        ]
    );
    assert_eq!(
        fields(&check(
            json!({"learnerId": "a", "resourceQuota": {"pods": 101}})
        )),
        ["spec.resourceQuota.pods"]
    );
}

#[test]
fn allowed_namespaces() {
    let v = check(
        json!({"learnerId": "a", "networkPolicy": {"allowedNamespaces": [
            "aivo-shared", "Bad_NS", "aivo-learner-bob-12345678", "aivo-shared", 5
        ]}}),
    );
    assert_eq!(
        fields(&v),
        [
            "spec.networkPolicy.allowedNamespaces[1]",
            "spec.networkPolicy.allowedNamespaces[2]",
            "spec.networkPolicy.allowedNamespaces[3]",
            "spec.networkPolicy.allowedNamespaces[4]"
        ]
    );
    let many: Vec<String> = (0..33).map(|i| format!("ns{i}")).collect();
    assert_eq!(
        fields(&check(
            json!({"learnerId": "a", "networkPolicy": {"allowedNamespaces": many}})
        )),
        ["spec.networkPolicy.allowedNamespaces"]
    );
    assert_eq!(
        fields(&check(
            json!({"learnerId": "a", "networkPolicy": {"egressDeny": "yes"}})
        )),
        ["spec.networkPolicy.egressDeny"]
    );
}

#[test]
fn vault_roles() {
    for ok in ["learner-default", "a", "0_a-b", &"a".repeat(63)] {
        assert!(
            check(json!({"learnerId": "a", "vaultRole": ok})).is_valid(),
            "{ok}"
        );
    }
    for bad in [
        json!(""),
        json!("-a"),
        json!("_a"),
        json!("A"),
        json!("a.b"),
        json!("a".repeat(64)),
        json!(1),
    ] {
        assert_eq!(
            fields(&check(json!({"learnerId": "a", "vaultRole": bad}))),
            ["spec.vaultRole"],
            "{bad}"
        );
    }
}

#[test]
fn every_error_is_collected_and_unknown_fields_warn() {
    let v = check(json!({
        "learnerId": "",
        "subjects": ["OK?"],
        "resourceQuota": {"cpu": "0", "pods": 1000, "gpu": 1},
        "networkPolicy": {"allowedNamespaces": ["aivo-learner-x"], "mode": "strict"},
        "vaultRole": "Admin",
        "color": "blue"
    }));
    assert_eq!(v.errors.len(), 6, "{:?}", v.errors);
    assert_eq!(
        v.warnings,
        [
            "spec.color: unknown field, ignored",
            "spec.resourceQuota.gpu: unknown field, ignored",
            "spec.networkPolicy.mode: unknown field, ignored"
        ]
    );
}

#[test]
fn names_longer_than_a_label_are_refused() {
    let config = OperatorConfig::default();
    let long = json!({"metadata": {"name": "x".repeat(64)}, "spec": {"learnerId": "a"}});
    assert_eq!(fields(&validate(&config, &long, None)), ["metadata.name"]);
    let ok = json!({"metadata": {"name": "x".repeat(63)}, "spec": {"learnerId": "a"}});
    assert!(validate(&config, &ok, None).is_valid());
}

/// `devenv admit` reads files the API server never type-checked: each wrong
/// type is reported at its field, with what was expected, next to the rules'
/// errors of the other fields.
#[test]
fn type_errors_name_their_field_and_the_expected_type() {
    let v = check(json!({
        "learnerId": 7,
        "subjects": null,
        "resourceQuota": {"cpu": true, "memory": "65Gi"},
        "networkPolicy": "open",
        "vaultRole": "Admin"
    }));
    let got: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "spec.learnerId: invalid type: integer `7`, expected a string",
            "spec.resourceQuota.cpu: invalid type: boolean `true`, expected a quantity such as \"2\", \"500m\" or \"4Gi\"",
            "spec.resourceQuota.memory: \"65Gi\" exceeds the maximum of 64Gi",
            "spec.networkPolicy: invalid type: string \"open\", expected struct NetworkPolicySpec",
            "spec.vaultRole: \"Admin\" must match [a-z0-9][a-z0-9_-]{0,62}",
        ]
    );
    assert_eq!(
        check(json!({"learnerId": null})).errors[0].to_string(),
        "spec.learnerId: required"
    );
}
