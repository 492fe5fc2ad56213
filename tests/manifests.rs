//! The manifests a platform engineer applies: everything under `deploy/` and
//! `webhook-config/`.
//!
//! - every document parses into its Kubernetes type with no unknown field
//!   (so a typo fails here, not silently in a cluster);
//! - the RBAC grants exactly the API calls the code makes ([`CODE_CALLS`]);
//! - the pieces agree with each other and with the code: the configuration
//!   loads, the Deployment mounts what the configuration names, the Service
//!   is what the webhook configurations call, the examples pass the webhook;
//! - with the test bed, the API server accepts every manifest, the manager's
//!   pod passes Pod Security "restricted", and the manager running with
//!   exactly this RBAC (not cluster-admin) reconciles a LearnerSpace, deletes
//!   it with a tombstone, publishes its CA and serves the pod API.
//!
//! (That `deploy/crd.yaml` is what `devenv-manager crd` prints is tested in
//! `tests/cli.rs`.)

mod common;
mod testbed;

use testbed::eventually;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use devenv_manager::config::Config;
use devenv_manager::webhook::registration::{self, Endpoint};
use devenv_manager::webhook::{Webhook, learnerspaces, offline};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MANIFEST_DIRS: [&str; 2] = ["deploy", "webhook-config"];
/// The manager's service account, which every binding must name.
const MANAGER_SA: (&str, &str) = ("devenv-system", "devenv-manager");

// ---------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------

/// Every `.yaml`/`.yml` file under the manifest directories, relative to the
/// repository root, sorted.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in MANIFEST_DIRS {
        walk(&Path::new(ROOT).join(dir), &mut files);
    }
    let mut names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(ROOT).unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The documents of one file (multi-document YAML; empty documents skipped).
fn docs(file: &str) -> Vec<Value> {
    devenv_manager::yaml::from_yaml_stream(&common::fixture(file))
        .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"))
}

/// Every document of every manifest file, with the file it is in.
fn all_docs() -> Vec<(String, Value)> {
    yaml_files()
        .into_iter()
        .flat_map(|file| docs(&file).into_iter().map(move |d| (file.clone(), d)))
        .collect()
}

fn kind_of(doc: &Value) -> (&str, &str) {
    (
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    )
}

/// The one document of `kind` named `name` in `file`, as type `T`.
fn object<T: DeserializeOwned>(file: &str, kind: &str, name: &str) -> T {
    let found: Vec<Value> = docs(file)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{file}: one {kind} {name}");
    serde_json::from_value(found[0].clone()).unwrap()
}

/// Every document of `kind` across the manifests, as type `T`.
fn objects<T: DeserializeOwned>(kind: &str) -> Vec<T> {
    all_docs()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| serde_json::from_value(d).unwrap())
        .collect()
}

/// The manager's configuration, as `deploy/config.yaml` gives it.
fn deploy_config() -> (Config, String) {
    let cm: ConfigMap = object("deploy/config.yaml", "ConfigMap", "devenv-manager-config");
    let data = cm.data.expect("data");
    assert_eq!(data.len(), 1, "one file in the ConfigMap");
    let (key, text) = data.into_iter().next().unwrap();
    let config = Config::from_yaml(&text).unwrap_or_else(|e| panic!("config.yaml: {e}"));
    config.validate().expect("config.yaml is valid");
    (config, key)
}

// ---------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------

/// The differences between what was written and what the type kept.
///
/// k8s-openapi's types, like most serde types, ignore fields they do not know
/// rather than refuse them, so a typo (`readOnlyRootFileSystem`) would
/// deserialize fine and vanish; the API server would then drop it too, and
/// the pod would run without the setting. So each document is deserialized
/// into its type, serialized back, and compared with the original: a field
/// that did not survive the round trip is unknown to the type; a value that
/// changed was read as something else (a number written where a string
/// belongs, say). Null values are absent values.
fn round_trip_diff(original: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (key, value) in o {
                let at = format!("{path}.{key}");
                match b.get(key) {
                    _ if value.is_null() => {}
                    None => out.push(format!("{at}: unknown field")),
                    Some(kept) => round_trip_diff(value, kept, &at, out),
                }
            }
            for (key, value) in b {
                // Embedded objects (a StatefulSet's volumeClaimTemplates)
                // get their apiVersion and kind from the type.
                let type_meta = key == "apiVersion" || key == "kind";
                if !o.contains_key(key) && !value.is_null() && !type_meta {
                    out.push(format!("{path}.{key}: added by the type ({value})"));
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (value, kept)) in o.iter().zip(b).enumerate() {
                round_trip_diff(value, kept, &format!("{path}[{i}]"), out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("{path}: {o} was read as {b}")),
    }
}

/// Parses `doc` as `T`, refusing unknown fields (see [`round_trip_diff`]).
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let value: T = serde_path_to_error::deserialize(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    let mut diff = Vec::new();
    round_trip_diff(doc, &back, "", &mut diff);
    if diff.is_empty() {
        Ok(value)
    } else {
        Err(diff.join("; "))
    }
}

fn check_typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    typed::<T>(doc).map(drop)
}

/// The shape of an object that is not a k8s-openapi type (kustomize,
/// cert-manager): the keys it may have, so that a misspelt one is caught.
enum Shape {
    /// A scalar (or anything: not looked into).
    Leaf,
    /// An object with these keys and no others.
    Map(&'static [(&'static str, Shape)]),
    /// A list of these.
    List(&'static Shape),
    /// `metadata`: checked as a k8s-openapi `ObjectMeta`.
    Meta,
}

fn check_shape(value: &Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
    match (shape, value) {
        (Shape::Leaf, _) => {}
        (Shape::Meta, _) => {
            if let Err(e) = check_typed::<ObjectMeta>(value) {
                out.push(format!("{path}: {e}"));
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                check_shape(v, item, &format!("{path}[{i}]"), out);
            }
        }
        (Shape::Map(keys), Value::Object(map)) => {
            for (key, v) in map {
                match keys.iter().find(|(k, _)| k == key) {
                    Some((_, inner)) => check_shape(v, inner, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: unknown field")),
                }
            }
        }
        (_, other) => out.push(format!("{path}: unexpected {other}")),
    }
}

const STRINGS: Shape = Shape::List(&Shape::Leaf);

/// kustomize's `Kustomization` and `Component`, the fields used here.
const KUSTOMIZATION: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    ("resources", STRINGS),
    ("components", STRINGS),
    (
        "images",
        Shape::List(&Shape::Map(&[
            ("name", Shape::Leaf),
            ("newName", Shape::Leaf),
            ("newTag", Shape::Leaf),
            ("digest", Shape::Leaf),
        ])),
    ),
    (
        "patches",
        Shape::List(&Shape::Map(&[
            ("patch", Shape::Leaf),
            ("path", Shape::Leaf),
            ("target", Shape::Leaf),
            ("options", Shape::Leaf),
        ])),
    ),
]);

const ISSUER_REF: Shape = Shape::Map(&[
    ("name", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("group", Shape::Leaf),
]);

/// cert-manager.io/v1 `Issuer` (the self-signed and CA issuers).
const CERT_MANAGER_ISSUER: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    (
        "spec",
        Shape::Map(&[
            (
                "selfSigned",
                Shape::Map(&[("crlDistributionPoints", STRINGS)]),
            ),
            (
                "ca",
                Shape::Map(&[
                    ("secretName", Shape::Leaf),
                    ("crlDistributionPoints", STRINGS),
                    ("ocspServers", STRINGS),
                    ("issuingCertificateURLs", STRINGS),
                ]),
            ),
        ]),
    ),
]);

/// cert-manager.io/v1 `Certificate`.
const CERT_MANAGER_CERTIFICATE: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    (
        "spec",
        Shape::Map(&[
            ("secretName", Shape::Leaf),
            ("secretTemplate", Shape::Leaf),
            ("commonName", Shape::Leaf),
            ("literalSubject", Shape::Leaf),
            ("subject", Shape::Leaf),
            ("duration", Shape::Leaf),
            ("renewBefore", Shape::Leaf),
            ("renewBeforePercentage", Shape::Leaf),
            ("dnsNames", STRINGS),
            ("ipAddresses", STRINGS),
            ("uris", STRINGS),
            ("emailAddresses", STRINGS),
            ("isCA", Shape::Leaf),
            ("usages", STRINGS),
            (
                "privateKey",
                Shape::Map(&[
                    ("algorithm", Shape::Leaf),
                    ("size", Shape::Leaf),
                    ("encoding", Shape::Leaf),
                    ("rotationPolicy", Shape::Leaf),
                ]),
            ),
            ("issuerRef", ISSUER_REF),
            ("revisionHistoryLimit", Shape::Leaf),
            ("encodeUsagesInRequest", Shape::Leaf),
            ("keystores", Shape::Leaf),
            ("additionalOutputFormats", Shape::Leaf),
            ("nameConstraints", Shape::Leaf),
            ("otherNames", Shape::Leaf),
        ]),
    ),
]);

fn check_document(doc: &Value) -> Result<(), String> {
    let shaped = |shape: &Shape| {
        let mut out = Vec::new();
        check_shape(doc, shape, "", &mut out);
        if out.is_empty() {
            Ok(())
        } else {
            Err(out.join("; "))
        }
    };
    match kind_of(doc) {
        ("v1", "Namespace") => check_typed::<Namespace>(doc),
        ("v1", "ServiceAccount") => check_typed::<ServiceAccount>(doc),
        ("v1", "ConfigMap") => check_typed::<ConfigMap>(doc),
        ("v1", "Service") => check_typed::<Service>(doc),
        ("apps/v1", "Deployment") => check_typed::<Deployment>(doc),
        ("apps/v1", "StatefulSet") => check_typed::<StatefulSet>(doc),
        ("policy/v1", "PodDisruptionBudget") => check_typed::<PodDisruptionBudget>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => check_typed::<NetworkPolicy>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => check_typed::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            check_typed::<ClusterRoleBinding>(doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => check_typed::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => check_typed::<RoleBinding>(doc),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            check_typed::<CustomResourceDefinition>(doc)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            check_typed::<MutatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            check_typed::<ValidatingWebhookConfiguration>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            check_typed::<ValidatingAdmissionPolicy>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            check_typed::<ValidatingAdmissionPolicyBinding>(doc)
        }
        // The spec is the webhook's to judge (unknown spec fields are only
        // warnings there; here they are errors); the rest is ObjectMeta.
        ("aivo.dev/v1", "LearnerSpace") => {
            let (config, _) = deploy_config();
            let verdict = learnerspaces::validate(&config.operator, doc, None);
            let mut problems: Vec<String> = verdict.errors.iter().map(|e| e.to_string()).collect();
            problems.extend(verdict.warnings);
            let mut out = Vec::new();
            check_shape(
                doc,
                &Shape::Map(&[
                    ("apiVersion", Shape::Leaf),
                    ("kind", Shape::Leaf),
                    ("metadata", Shape::Meta),
                    ("spec", Shape::Leaf),
                ]),
                "",
                &mut out,
            );
            problems.extend(out);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
        ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        | ("kustomize.config.k8s.io/v1alpha1", "Component") => shaped(&KUSTOMIZATION),
        ("cert-manager.io/v1", "Issuer") => shaped(&CERT_MANAGER_ISSUER),
        ("cert-manager.io/v1", "Certificate") => shaped(&CERT_MANAGER_CERTIFICATE),
        (api_version, kind) => Err(format!(
            "no check for {api_version} {kind}: add its type to check_document in tests/manifests.rs"
        )),
    }
}

#[test]
fn every_manifest_parses_into_its_type_with_no_unknown_field() {
    let files = yaml_files();
    assert!(files.len() >= 10, "found {files:?}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        for (i, doc) in docs(file).iter().enumerate() {
            checked += 1;
            let (api_version, kind) = kind_of(doc);
            if let Err(e) = check_document(doc) {
                failures.push(format!("{file} document {i} ({api_version} {kind}): {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 25, "only {checked} documents");
}

#[test]
fn the_unknown_field_check_catches_typos() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{
            "name": "c",
            "securityContext": {"readOnlyRootFileSystem": true},
        }]}}}
    });
    let error = check_document(&deployment).unwrap_err();
    assert!(
        error.contains(".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: unknown field"),
        "{error}"
    );
    let mistyped = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "443"}]}
    });
    assert!(check_document(&mistyped).is_err());
    let certificate = json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "x", "anotations": {}},
        "spec": {"secretName": "s", "dnsName": ["a"]}
    });
    let error = check_document(&certificate).unwrap_err();
    assert!(error.contains(".spec.dnsName: unknown field"), "{error}");
    assert!(error.contains("anotations: unknown field"), "{error}");
    let unknown_kind = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
    assert!(check_document(&unknown_kind).is_err());
}

// ---------------------------------------------------------------------------
// RBAC: exactly the calls the code makes
// ---------------------------------------------------------------------------

/// Where a call is made: cluster-wide (`Api::all`, or a namespace only known
/// at run time: the learner namespaces), in `operator.namespace`, or in each
/// of `devenv.namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Operator,
    Devenv,
}

/// One kind of API call the manager makes.
struct Call {
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    /// The one object the call is about (`resourceNames`), or "" for any.
    name: &'static str,
    verbs: &'static [&'static str],
    /// Where in the code (and why).
    at: &'static str,
}

const fn call(
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    at: &'static str,
) -> Call {
    Call {
        scope,
        group,
        resource,
        name: "",
        verbs,
        at,
    }
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
const CODE_CALLS: &[Call] = &[
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
];

/// One grant: (scope, namespace or "", group, resource, resource name or
/// "" for any, verb).
type Grant = (Scope, String, String, String, String, String);

/// What the code needs, for the namespaces of `config`.
fn needed(config: &Config) -> BTreeMap<Grant, Vec<String>> {
    let mut needed: BTreeMap<Grant, Vec<String>> = BTreeMap::new();
    let namespaces = |scope: Scope| -> Vec<String> {
        match scope {
            Scope::Cluster => vec![String::new()],
            Scope::Operator => vec![config.operator.namespace.clone()],
            Scope::Devenv => config.devenv.namespaces.clone(),
        }
    };
    let mut add = |scope: Scope, group: &str, resource: &str, name: &str, verb: &str, at: &str| {
        for ns in namespaces(scope) {
            needed
                .entry((
                    scope,
                    ns,
                    group.into(),
                    resource.into(),
                    name.into(),
                    verb.into(),
                ))
                .or_default()
                .push(at.to_string());
        }
    };
    for c in CODE_CALLS {
        for verb in c.verbs {
            add(c.scope, c.group, c.resource, c.name, verb, c.at);
        }
    }
    // The learner RoleBinding (in a namespace named at run time) binds a
    // ClusterRole: writing it needs `bind` on exactly that role.
    let ls: devenv_manager::crd::LearnerSpace =
        serde_json::from_value(docs("deploy/examples/learnerspace.yaml")[0].clone()).unwrap();
    let desired = devenv_manager::operator::objects::desired(&ls, &config.operator).unwrap();
    let role_ref = desired.role_binding.role_ref;
    assert_eq!(role_ref.kind, "ClusterRole");
    add(
        Scope::Cluster,
        "rbac.authorization.k8s.io",
        "clusterroles",
        &role_ref.name,
        "bind",
        "operator/objects.rs role_binding(): the learner RoleBinding's roleRef",
    );
    needed
}

/// Splits rules into grants, refusing what RBAC here never needs.
fn expand(scope: Scope, ns: &str, rules: &[PolicyRule], problems: &mut Vec<String>) -> Vec<Grant> {
    let mut grants = Vec::new();
    for rule in rules {
        if rule.non_resource_urls.is_some() {
            problems.push(format!("{ns}: nonResourceURLs are not used: {rule:?}"));
        }
        let names: Vec<String> = match &rule.resource_names {
            Some(names) => names.clone(),
            None => vec![String::new()],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for name in &names {
                    for verb in &rule.verbs {
                        if [group, resource, name, verb]
                            .iter()
                            .any(|s| s.contains('*'))
                        {
                            problems.push(format!("{ns}: wildcard in {group}/{resource} {verb}"));
                        }
                        grants.push((
                            scope,
                            ns.to_string(),
                            group.clone(),
                            resource.clone(),
                            name.clone(),
                            verb.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

fn is_manager(subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>) -> bool {
    subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == MANAGER_SA.1
            && s.namespace.as_deref() == Some(MANAGER_SA.0)
    })
}

/// What `deploy/rbac.yaml` grants the manager's service account.
fn granted(config: &Config, problems: &mut Vec<String>) -> BTreeSet<Grant> {
    let file = "deploy/rbac.yaml";
    let cluster_roles: Vec<ClusterRole> = objects("ClusterRole");
    let roles: Vec<Role> = objects("Role");
    let mut grants = BTreeSet::new();
    for binding in objects::<ClusterRoleBinding>("ClusterRoleBinding") {
        assert!(is_manager(&binding.subjects), "{binding:?}");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        let role = cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&binding.role_ref.name))
            .unwrap_or_else(|| panic!("{file}: no ClusterRole {}", binding.role_ref.name));
        assert!(role.aggregation_rule.is_none());
        grants.extend(expand(
            Scope::Cluster,
            "",
            role.rules.as_deref().unwrap_or_default(),
            problems,
        ));
    }
    for binding in objects::<RoleBinding>("RoleBinding") {
        assert!(is_manager(&binding.subjects), "{binding:?}");
        assert_eq!(binding.role_ref.kind, "Role", "{binding:?}");
        let ns = binding.metadata.namespace.clone().expect("namespace");
        let role = roles
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(&binding.role_ref.name)
                    && r.metadata.namespace.as_deref() == Some(&ns)
            })
            .unwrap_or_else(|| panic!("{file}: no Role {ns}/{}", binding.role_ref.name));
        let scope = if ns == config.operator.namespace {
            Scope::Operator
        } else if config.devenv.namespaces.contains(&ns) {
            Scope::Devenv
        } else {
            problems.push(format!(
                "a Role in {ns}, which is neither operator.namespace nor a devenv namespace"
            ));
            continue;
        };
        grants.extend(expand(
            scope,
            &ns,
            role.rules.as_deref().unwrap_or_default(),
            problems,
        ));
    }
    // A role no binding uses is a mistake too.
    let bound: BTreeSet<String> = objects::<RoleBinding>("RoleBinding")
        .iter()
        .map(|b| {
            format!(
                "{}/{}",
                b.metadata.namespace.clone().unwrap(),
                b.role_ref.name
            )
        })
        .chain(
            objects::<ClusterRoleBinding>("ClusterRoleBinding")
                .iter()
                .map(|b| b.role_ref.name.clone()),
        )
        .collect();
    for role in &roles {
        let key = format!(
            "{}/{}",
            role.metadata.namespace.clone().unwrap_or_default(),
            role.metadata.name.clone().unwrap_or_default()
        );
        assert!(bound.contains(&key), "Role {key} is bound to nothing");
    }
    // The learner's ClusterRole is bound by the operator, in each learner
    // namespace; every other ClusterRole here by a binding here.
    let learner_role = devenv_manager::operator::objects::LEARNER_CLUSTER_ROLE;
    for role in &cluster_roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        assert!(
            bound.contains(&name) != (name == learner_role),
            "ClusterRole {name}: bound to nothing, or the learner's bound here"
        );
    }
    grants
}

#[test]
fn rbac_grants_exactly_the_calls_the_code_makes() {
    let (config, _) = deploy_config();
    let mut problems = Vec::new();
    let granted = granted(&config, &mut problems);
    let needed = needed(&config);
    let show = |g: &Grant| {
        let where_ = if g.1.is_empty() {
            "cluster-wide".to_string()
        } else {
            format!("in {}", g.1)
        };
        let group = if g.2.is_empty() { "core" } else { &g.2 };
        let name = if g.4.is_empty() {
            String::new()
        } else {
            format!(" named {}", g.4)
        };
        format!("{} {group}/{}{name} {where_}", g.5, g.3)
    };
    for (grant, at) in &needed {
        if !granted.contains(grant) {
            problems.push(format!(
                "missing: {} (used by {})",
                show(grant),
                at.join("; ")
            ));
        }
    }
    for grant in &granted {
        if !needed.contains_key(grant) {
            problems.push(format!(
                "granted but no code needs it: {} (add the call to CODE_CALLS or remove the grant)",
                show(grant)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The learner's rights are installed once, as the ClusterRole the code
/// binds, and the manager holds none of them: no Secret, no pod outside the
/// devenv namespaces, no other role to bind.
#[test]
fn the_learner_cluster_role_is_the_codes_and_the_manager_holds_none_of_it() {
    let deployed: ClusterRole = object(
        "deploy/rbac.yaml",
        "ClusterRole",
        devenv_manager::operator::objects::LEARNER_CLUSTER_ROLE,
    );
    let code = devenv_manager::operator::objects::learner_cluster_role();
    assert_eq!(deployed.rules, code.rules);
    assert_eq!(deployed.metadata.labels, code.metadata.labels);

    let (config, _) = deploy_config();
    let granted = granted(&config, &mut Vec::new());
    for (_, ns, group, resource, name, verb) in &granted {
        assert!(
            resource != "secrets" && !resource.starts_with("pods/"),
            "the manager holds {verb} {resource} in {ns:?}"
        );
        if resource == "pods" {
            assert!(
                config.devenv.namespaces.contains(ns),
                "{verb} pods in {ns:?}"
            );
        }
        if resource == "clusterroles" || resource == "roles" {
            assert_eq!(
                (group.as_str(), name.as_str(), verb.as_str()),
                (
                    "rbac.authorization.k8s.io",
                    code.metadata.name.as_deref().unwrap(),
                    "bind"
                ),
                "{verb} {resource}"
            );
        }
        assert!(
            group != "admissionregistration.k8s.io",
            "the manager could change its own fence: {verb} {resource}"
        );
    }
}

/// The admission policies hard-code what the configuration and the RBAC
/// name: they must say the same.
#[test]
fn the_admission_policies_name_what_the_configuration_names() {
    let (config, _) = deploy_config();
    let file = "deploy/admission-policy.yaml";
    let lane: ValidatingAdmissionPolicy =
        object(file, "ValidatingAdmissionPolicy", "devenv-manager-lane");
    let spec = lane.spec.unwrap();
    let variable = |name: &str| -> Value {
        let expression = &spec
            .variables
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("variable {name}"))
            .expression;
        // These variables are CEL string and list literals, which read as
        // JSON once their quotes are double quotes.
        serde_json::from_str(&expression.replace('\'', "\"")).unwrap()
    };
    assert_eq!(
        variable("operatorNamespace"),
        json!(config.operator.namespace)
    );
    assert_eq!(
        variable("devenvNamespaces"),
        json!(config.devenv.namespaces)
    );
    assert_eq!(
        variable("learnerPrefix"),
        json!(devenv_manager::names::LEARNER_NAMESPACE_PREFIX)
    );
    let conditions = spec.match_conditions.unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        conditions[0].expression,
        format!(
            "request.userInfo.username == 'system:serviceaccount:{}:{}'",
            MANAGER_SA.0, MANAGER_SA.1
        )
    );
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let binding: ValidatingAdmissionPolicyBinding = object(
        file,
        "ValidatingAdmissionPolicyBinding",
        "devenv-manager-lane",
    );
    let binding = binding.spec;
    assert_eq!(binding.policy_name, "devenv-manager-lane");
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(
        binding.match_resources.is_none(),
        "every write of the manager"
    );

    let labels: ValidatingAdmissionPolicy = object(
        file,
        "ValidatingAdmissionPolicy",
        "devenv-pod-developer-label",
    );
    let spec = labels.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let prefix = &config.devenv.service_account_prefix;
    assert!(
        spec.match_conditions.unwrap()[0]
            .expression
            .contains(&format!("startsWith('{prefix}')")),
        "the service-account prefix"
    );
    assert!(
        spec.validations.unwrap().iter().any(|v| v
            .expression
            .contains(&format!("'{prefix}' + variables.after"))),
        "the service-account prefix"
    );
    let resources = spec.match_constraints.unwrap().resource_rules.unwrap()[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(
        resources,
        ["pods", "pods/*"],
        "the pod and every subresource"
    );
    let binding: ValidatingAdmissionPolicyBinding = object(
        file,
        "ValidatingAdmissionPolicyBinding",
        "devenv-pod-developer-label",
    );
    assert_eq!(binding.spec.validation_actions, ["Deny"]);
    let selector = binding
        .spec
        .match_resources
        .unwrap()
        .namespace_selector
        .unwrap();
    let requirement = &selector.match_expressions.unwrap()[0];
    assert_eq!(requirement.key, "kubernetes.io/metadata.name");
    assert_eq!(requirement.operator, "In");
    assert_eq!(requirement.values.as_ref(), Some(&config.devenv.namespaces));
}

// ---------------------------------------------------------------------------
// The pieces agree
// ---------------------------------------------------------------------------

fn port_of(bind: &std::net::SocketAddr) -> i32 {
    i32::from(bind.port())
}

fn manager_deployment() -> Deployment {
    object("deploy/deployment.yaml", "Deployment", "devenv-manager")
}

#[test]
fn the_deployment_runs_the_manager_as_the_issue_asks() {
    let (config, key) = deploy_config();
    let deployment = manager_deployment();
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(MANAGER_SA.0));
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    let selector = spec.selector.match_labels.unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(MANAGER_SA.1));
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(10001));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );

    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let security = c.security_context.clone().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(10001));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");

    let resources = c.resources.clone().unwrap();
    for part in [resources.requests.unwrap(), resources.limits.unwrap()] {
        assert!(
            part.contains_key("cpu") && part.contains_key("memory"),
            "{part:?}"
        );
    }

    // POD_NAME from the downward API: the operator's leader identity.
    let env = c.env.clone().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );

    // The ports the configuration binds, named for the Service and probes.
    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports["webhook"], port_of(&config.webhook.bind));
    assert_eq!(ports["api"], port_of(&config.api.bind));
    assert_eq!(ports["metrics"], port_of(&config.metrics.bind));
    for (probe, path) in [
        (c.liveness_probe.clone(), "/healthz"),
        (c.readiness_probe.clone(), "/readyz"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => ports[&name],
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n,
        };
        assert_eq!(port, port_of(&config.metrics.bind));
    }

    // `--config` names the file the ConfigMap volume holds; the certificate
    // Secret is mounted read-only where the configuration looks for it.
    let volumes = pod.volumes.unwrap();
    let mounts = c.volume_mounts.clone().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    };
    let config_volume = volumes
        .iter()
        .find(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some("devenv-manager-config"))
        .expect("the config volume");
    let args = c.args.clone().unwrap();
    assert_eq!(
        args,
        [
            "serve".to_string(),
            "--config".to_string(),
            format!("{}/{key}", mount_of(&config_volume.name).mount_path),
        ]
    );
    let tls_volume = volumes
        .iter()
        .find(|v| v.secret.is_some())
        .expect("the certificate Secret");
    assert_eq!(
        tls_volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("devenv-manager-tls")
    );
    let tls_mount = mount_of(&tls_volume.name);
    assert_eq!(tls_mount.read_only, Some(true));
    for cert_dir in [&config.webhook.cert_dir, &config.api.cert_dir] {
        assert_eq!(Path::new(&tls_mount.mount_path), cert_dir.as_path());
    }
    assert!(mounts.iter().all(|m| m.read_only == Some(true)));

    // The service account exists where the Deployment runs.
    let _: ServiceAccount = object("deploy/rbac.yaml", "ServiceAccount", MANAGER_SA.1);

    // The PodDisruptionBudget keeps one of the two replicas.
    let pdb: PodDisruptionBudget =
        object("deploy/pdb.yaml", "PodDisruptionBudget", "devenv-manager");
    let pdb = pdb.spec.unwrap();
    let pdb_selector = pdb.selector.unwrap().match_labels.unwrap();
    assert!(
        pdb_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    assert_eq!(
        pdb.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // The network policy selects the manager and names its ports.
    let policy: NetworkPolicy = object(
        "deploy/networkpolicy.yaml",
        "NetworkPolicy",
        "devenv-manager",
    );
    let policy = policy.spec.unwrap();
    let policy_selector = policy.pod_selector.unwrap().match_labels.unwrap();
    assert!(
        policy_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    for rule in policy.ingress.unwrap() {
        for port in rule.ports.unwrap() {
            match port.port.unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                    assert!(ports.contains_key(&name), "{name}")
                }
                other => panic!("name the port: {other:?}"),
            }
        }
    }
}

#[test]
fn the_service_is_what_the_webhook_configurations_and_the_manager_url_name() {
    let (config, _) = deploy_config();
    let service: Service = object("deploy/service.yaml", "Service", "devenv-manager");
    let namespace = service.metadata.namespace.clone().unwrap();
    let spec = service.spec.unwrap();
    let pod_labels = manager_deployment()
        .spec
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(
        spec.selector
            .unwrap()
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    let ports: BTreeMap<i32, String> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| {
            let target = match p.target_port.unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
                other => panic!("name the target port: {other:?}"),
            };
            (p.port, target)
        })
        .collect();
    assert_eq!(ports[&443], "webhook");
    assert_eq!(ports[&port_of(&config.api.bind)], "api");
    assert_eq!(ports.len(), 2);

    // The committed webhook configurations are what the generator makes for
    // this configuration and this Service.
    let endpoint = Endpoint::Service {
        name: "devenv-manager".into(),
        namespace: namespace.clone(),
        port: 443,
    };
    let (mutating, validating) = registration::configurations(&config, &endpoint, None);
    assert_eq!(
        registration::to_yaml(&mutating, &validating).unwrap(),
        common::fixture("webhook-config/webhooks.yaml"),
        "webhook-config/webhooks.yaml does not match deploy/config.yaml and deploy/service.yaml"
    );

    // DEVENV_MANAGER_URL, as the webhook injects it, reaches the pod API.
    assert_eq!(
        config.devenv.manager_url,
        format!(
            "https://devenv-manager.{namespace}.svc.cluster.local:{}",
            port_of(&config.api.bind)
        )
    );
    // The certificate names the Service (cert-manager; `certs generate`
    // uses the same names by default).
    let certificate = &docs("deploy/cert-manager/certificate.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "devenv-manager-tls")
        .expect("the serving Certificate")["spec"]["dnsNames"]
        .clone();
    for name in [
        format!("devenv-manager.{namespace}.svc"),
        format!("devenv-manager.{namespace}.svc.cluster.local"),
    ] {
        assert!(
            certificate.as_array().unwrap().contains(&json!(name)),
            "{name}"
        );
    }
}

#[test]
fn namespaces_and_roles_follow_the_configuration() {
    let (config, _) = deploy_config();
    let names: BTreeSet<String> = objects::<Namespace>("Namespace")
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    let mut wanted: BTreeSet<String> = config.devenv.namespaces.iter().cloned().collect();
    wanted.insert(config.operator.namespace.clone());
    wanted.insert(MANAGER_SA.0.to_string());
    assert_eq!(names, wanted);
    assert_eq!(
        names,
        ["aivo-system", "devenv", "devenv-system"]
            .map(String::from)
            .into()
    );
    // Every namespaced object is in one of them.
    for (file, doc) in all_docs() {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            assert!(names.contains(ns), "{file}: namespace {ns}");
        }
    }
    // The template account is reserved, so never a developer.
    let template: ServiceAccount =
        object("deploy/rbac.yaml", "ServiceAccount", "devenv-user-template");
    let ns = template.metadata.namespace.unwrap();
    assert!(config.devenv.namespaces.contains(&ns));
    let name = template.metadata.name.unwrap();
    let suffix = name
        .strip_prefix(&config.devenv.service_account_prefix)
        .unwrap();
    assert!(config.devenv.reserved_names.iter().any(|r| r == suffix));
}

#[test]
fn the_example_developer_and_workspace_pass_the_webhook() {
    let (config, _) = deploy_config();
    let developer: ServiceAccount = object(
        "deploy/users/devenv-eywalker.yaml",
        "ServiceAccount",
        "devenv-eywalker",
    );
    let ns = developer.metadata.namespace.clone().unwrap();
    assert_eq!(ns, "devenv");
    assert!(config.devenv.namespaces.contains(&ns));
    assert_eq!(developer.metadata.labels.unwrap()["developer"], "eywalker");

    // The StatefulSet declares the token volume itself: the webhook takes
    // it as its own (no denial), keeps it, and completes it with the CA.
    let webhook = Webhook::new(&config);
    let statefulset = docs("deploy/examples/devenv-statefulset.yaml")
        .into_iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    let declared = statefulset["spec"]["template"]["spec"]["volumes"].clone();
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["serviceAccountName"],
        "devenv-eywalker"
    );
    let admitted = offline::admit(&webhook, statefulset, "default");
    assert!(!admitted.denied(), "{:?}", admitted.errors);
    assert!(admitted.mutated);
    let template = &admitted.object["spec"]["template"];
    let volumes = template["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), declared.as_array().unwrap().len());
    let sources = volumes[0]["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(sources[1]["configMap"]["name"], "devenv-manager-ca");
    let env = &template["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "DEVENV_MANAGER_URL");
    assert_eq!(env[0]["value"], config.devenv.manager_url.as_str());
    assert_eq!(template["metadata"]["labels"]["developer"], "eywalker");

    // The example LearnerSpace is valid, in the operator's namespace.
    let ls = &docs("deploy/examples/learnerspace.yaml")[0];
    assert_eq!(
        ls["metadata"]["namespace"],
        config.operator.namespace.as_str()
    );
    let verdict = learnerspaces::validate(&config.operator, ls, None);
    assert!(verdict.errors.is_empty() && verdict.warnings.is_empty());
}

#[test]
fn the_kustomizations_name_every_manifest() {
    // deploy/kustomization.yaml lists every manifest next to it, so a new
    // file cannot be forgotten; everything a kustomization names exists.
    let base = &docs("deploy/kustomization.yaml")[0];
    let listed: BTreeSet<String> = base["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = yaml_files()
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/"))
        .filter(|f| !f.contains('/') && *f != "kustomization.yaml")
        .map(String::from)
        .collect();
    assert_eq!(listed, present);
    assert_eq!(base["images"][0]["name"], "devenv-manager");
    assert_eq!(
        manager_deployment().spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("devenv-manager"),
        "the image the kustomization sets"
    );

    for file in yaml_files()
        .iter()
        .filter(|f| f.ends_with("kustomization.yaml"))
    {
        let dir = Path::new(ROOT).join(file).parent().unwrap().to_path_buf();
        let doc = &docs(file)[0];
        for entry in ["resources", "components"] {
            for path in doc[entry].as_array().into_iter().flatten() {
                let path = dir.join(path.as_str().unwrap());
                assert!(path.exists(), "{file}: {} does not exist", path.display());
            }
        }
    }

    // The cert-manager component: the Secret the Deployment mounts, CA
    // injected from that Certificate into both webhook configurations.
    let component = &docs("deploy/cert-manager/kustomization.yaml")[0];
    assert_eq!(component["kind"], "Component");
    let certificates = docs("deploy/cert-manager/certificate.yaml");
    let serving = certificates
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "devenv-manager-tls")
        .expect("a Certificate into devenv-manager-tls");
    let inject = format!(
        "{}/{}",
        serving["metadata"]["namespace"].as_str().unwrap(),
        serving["metadata"]["name"].as_str().unwrap()
    );
    let mut patched = BTreeSet::new();
    for patch in component["patches"].as_array().unwrap() {
        let patch: Value = devenv_manager::yaml::from_yaml_stream(patch["patch"].as_str().unwrap())
            .unwrap()
            .remove(0);
        check_document(&patch).unwrap();
        assert_eq!(
            patch["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            inject.as_str()
        );
        patched.insert(patch["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(
        patched,
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ]
        .map(String::from)
        .into()
    );
    // Every issuerRef names an Issuer of the file.
    let issuers: BTreeSet<&str> = certificates
        .iter()
        .filter(|d| d["kind"] == "Issuer")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    for certificate in certificates.iter().filter(|d| d["kind"] == "Certificate") {
        let issuer = &certificate["spec"]["issuerRef"];
        assert_eq!(issuer["kind"], "Issuer");
        assert!(issuers.contains(issuer["name"].as_str().unwrap()));
    }
}

/// `kubectl kustomize` of deploy/ and of an overlay with the cert-manager
/// component, when kubectl is installed (it is not required to build).
#[test]
fn kustomize_builds_both_ways() {
    let kubectl = |dir: &Path| {
        std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
    };
    let Ok(base) = kubectl(&Path::new(ROOT).join("deploy")) else {
        eprintln!("skipping kustomize_builds_both_ways: kubectl not installed");
        return;
    };
    assert!(
        base.status.success(),
        "{}",
        String::from_utf8_lossy(&base.stderr)
    );
    let built: Vec<Value> =
        devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&base.stdout)).unwrap();
    let listed: usize = docs("deploy/kustomization.yaml")[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| docs(&format!("deploy/{}", f.as_str().unwrap())).len())
        .sum();
    assert_eq!(built.len(), listed);
    let deployment = built.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/devenv-manager:0.1.0"
    );

    // An overlay outside deploy/ (kustomize refuses one inside the base it
    // includes), with paths relative to it, as a user would write it.
    let dir = tempfile::Builder::new()
        .prefix("overlay")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let Ok(relative) = dir.path().strip_prefix(ROOT) else {
        eprintln!(
            "skipping the cert-manager overlay: the target directory is outside the repository"
        );
        return;
    };
    let up = "../".repeat(relative.components().count());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{up}deploy]\ncomponents: [{up}deploy/cert-manager]\n"
        ),
    )
    .unwrap();
    let overlay = kubectl(dir.path()).unwrap();
    assert!(
        overlay.status.success(),
        "{}",
        String::from_utf8_lossy(&overlay.stderr)
    );
    let built: Vec<Value> =
        devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&overlay.stdout)).unwrap();
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = built.iter().find(|d| d["kind"] == kind).unwrap();
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "devenv-system/devenv-manager"
        );
        assert!(config["webhooks"][0]["rules"].is_array(), "{config}");
    }
    assert_eq!(
        built
            .iter()
            .filter(|d| d["apiVersion"] == "cert-manager.io/v1")
            .count(),
        4
    );
}

// ---------------------------------------------------------------------------
// The real API server
// ---------------------------------------------------------------------------

/// Server-side applies `doc` (or only dry-runs it) as the admin.
async fn apply(client: &kube::Client, doc: &Value, dry_run: bool) -> Result<(), String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
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

/// Waits until `deploy/crd.yaml` is served.
async fn crd_established(client: &kube::Client) {
    let crds = kube::Api::<CustomResourceDefinition>::all(client.clone());
    eventually("the CRD Established", || async {
        let crd = crds.get("learnerspaces.aivo.dev").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// The whole of deploy/ applied to the test bed's kube-apiserver; the
/// manager's pod checked against Pod Security "restricted"; then the
/// manager, run with the token of `devenv-system/devenv-manager` and only
/// the RBAC of deploy/rbac.yaml, does its work.
#[tokio::test]
async fn the_api_server_accepts_deploy_and_its_rbac_runs_the_manager() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, DeleteParams, PostParams};

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

    // 1. deploy/ (the kustomization's resources, in its order: namespaces
    //    and the CRD first), the example developer and workspace; the
    //    webhook configurations and the example LearnerSpace as dry runs
    //    (the webhook is not running; the LearnerSpace comes later).
    let mut files: Vec<String> = docs("deploy/kustomization.yaml")[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("deploy/{}", f.as_str().unwrap()))
        .collect();
    files.push("deploy/users/devenv-eywalker.yaml".into());
    files.push("deploy/examples/devenv-statefulset.yaml".into());
    for file in &files {
        for doc in docs(file) {
            apply(&admin, &doc, false)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            if doc["kind"] == "CustomResourceDefinition" {
                crd_established(&admin).await;
            }
        }
    }
    for file in [
        "webhook-config/webhooks.yaml",
        "deploy/examples/learnerspace.yaml",
    ] {
        for doc in docs(file) {
            apply(&admin, &doc, true)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    // 2. The manager's pod, as the Deployment would create it, passes the
    //    "restricted" Pod Security level devenv-system enforces (a dry-run
    //    create runs admission, PodSecurity included).
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

    // 3. The manager, as devenv-system/devenv-manager with deploy/'s RBAC
    //    and admission policies.
    let (config, _) = deploy_config();
    let user = format!("system:serviceaccount:{}:{}", MANAGER_SA.0, MANAGER_SA.1);
    let token = bed
        .token(MANAGER_SA.0, MANAGER_SA.1, testbed::SA_ISSUER, 3600)
        .await;
    let mut manager = bed.kube_config();
    manager.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    // RBAC is read from an informer cache: wait until the grants are in
    // force, so that what follows tests the grants, not their propagation.
    // Waits until the manager's service account holds a sample of its grants.
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

    // A squatter's namespace, made before its LearnerSpace, with the name
    // the operator will compute, a binding and an open network policy.
    let squatted = devenv_manager::names::learner_namespace("squatter.victim");
    let squat = squat(&admin, &squatted).await;

    let from = audit_mark(bed, &user).await;
    let server = common::Server::start_operator(
        config.clone(),
        devenv_manager::cluster::Source::Config(Box::new(manager.clone())),
        "manifests-test".into(),
    )
    .await;

    // The operator: a LearnerSpace becomes Ready with its learner binding
    // (the `bind` grant passed), an Event and the Lease.
    let ls_api: Api<devenv_manager::crd::LearnerSpace> =
        Api::namespaced(admin.clone(), &config.operator.namespace);
    let ls: devenv_manager::crd::LearnerSpace =
        serde_json::from_value(docs("deploy/examples/learnerspace.yaml")[0].clone()).unwrap();
    ls_api.create(&PostParams::default(), &ls).await.unwrap();
    let name = ls.metadata.name.clone().unwrap();
    let ready = eventually("the LearnerSpace Ready", || async {
        let ls = ls_api.get(&name).await.ok()?;
        let status = ls.status?;
        (status.phase == Some(devenv_manager::crd::Phase::Ready)).then_some(status)
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
    // The learner reads Secrets in its namespace, and nowhere else.
    let learner = format!("system:serviceaccount:{learner_ns}:learner");
    eventually("the learner's rights in force", || async {
        rbac_allows(&admin, &learner, "", "secrets", "", "list", &learner_ns)
            .await
            .then_some(())
    })
    .await;
    assert!(
        !rbac_allows(&admin, &learner, "", "secrets", "", "list", "default").await,
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

    // The pod API: the CA is published; eywalker lists and deletes a pod.
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

    // The squatted namespace is not adopted: the LearnerSpace fails with
    // NamespaceTaken and a Warning Event, and the namespace is as the
    // squatter left it.
    let victim: devenv_manager::crd::LearnerSpace = serde_json::from_value(json!({
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
    assert_eq!(taken.phase, Some(devenv_manager::crd::Phase::Failed));
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
    squat.assert_untouched(&admin).await;

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
    ls_api
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    ls_api
        .delete("victim", &DeleteParams::default())
        .await
        .unwrap();
    for released in [name.as_str(), "victim"] {
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

/// The number of lines in the audit log once every request `user` made so
/// far is in it.
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

/// Whether RBAC alone lets `user` do `verb` (on the object `name`, if any)
/// in `ns` ("" cluster-wide), asked with a SubjectAccessReview.
async fn rbac_allows(
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
async fn fence_in_force(bed: &testbed::TestBed, user: &str) {
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

/// What a squatter made: a namespace with a learner's name, a RoleBinding
/// and an allow-all NetworkPolicy in it.
struct Squat {
    namespace: Namespace,
    binding: RoleBinding,
    policy: NetworkPolicy,
}

async fn squat(admin: &kube::Client, name: &str) -> Squat {
    use kube::api::{Api, PostParams};
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
    async fn assert_untouched(&self, admin: &kube::Client) {
        use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
        use kube::api::{Api, ListParams};
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

/// Every kind of write outside the manager's lane is refused; in-lane
/// writes of the same kinds are not (dry runs), so the refusals are the
/// lane's and not a blanket one.
async fn out_of_lane(
    admin: &kube::Client,
    manager: &kube::Client,
    user: &str,
    learner_ns: &str,
    squatted: &str,
) {
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    // Someone else's namespace.
    let bystander = "bystander";
    let other: Namespace =
        serde_json::from_value(json!({"metadata": {"name": bystander}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    fn done<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
        result.map(drop)
    }
    let apply = PatchParams::apply("devenv-manager").force();
    let cms = |ns: &str| Api::<ConfigMap>::namespaced(manager.clone(), ns);
    let namespaces = Api::<Namespace>::all(manager.clone());
    let coredns: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns"},
        "data": {"Corefile": ". { forward . 6.6.6.6 }"}
    }))
    .unwrap();
    let binding = |ns: &str, role: &str, subject: Value| -> RoleBinding {
        serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "learner-extra", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject]
        }))
        .unwrap()
    };
    let sa = |ns: &str| json!({"kind": "ServiceAccount", "name": "default", "namespace": ns});
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
    let made: Namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "aivo-learner-made-up-00000000"}}))
    .unwrap();
    let lax: Namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "aivo-learner-lax-00000000", "labels": {
            "app.kubernetes.io/managed-by": "devenv-manager",
            "aivo.dev/component": "learner-namespace",
            "pod-security.kubernetes.io/enforce": "privileged"}}}))
    .unwrap();

    let attempts = [
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
            result: done(namespaces.delete(bystander, &DeleteParams::default()).await),
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
                    .create(&PostParams::default(), &binding("default", "devenv-learner", sa("default")))
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
                    .create(&PostParams::default(), &binding(squatted, "devenv-learner", sa(squatted)))
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
                        &binding(
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
                    .create(&PostParams::default(), &binding(learner_ns, "cluster-admin", sa(learner_ns)))
                    .await,
            ),
        },
        Forbidden {
            what: "get Secret default/anything",
            by: Refuser::Rbac,
            result: done(Api::<k8s_openapi::api::core::v1::Secret>::namespaced(manager.clone(), "default").get("anything").await),
        },
        Forbidden {
            what: "list Secrets in every namespace",
            by: Refuser::Rbac,
            result: done(Api::<k8s_openapi::api::core::v1::Secret>::all(manager.clone()).list(&ListParams::default()).await),
        },
        Forbidden {
            what: "list Secrets in the learner namespace",
            by: Refuser::Rbac,
            result: done(Api::<k8s_openapi::api::core::v1::Secret>::namespaced(manager.clone(), learner_ns).list(&ListParams::default()).await),
        },
        Forbidden {
            what: "list pods outside the devenv namespaces",
            by: Refuser::Rbac,
            result: done(Api::<Pod>::namespaced(manager.clone(), "default").list(&ListParams::default()).await),
        },
    ];
    // The fence's refusals are of writes RBAC grants: the grant alone is
    // not what stops them.
    let granted = [
        ("", "configmaps", "", "patch", "kube-system"),
        ("", "namespaces", "kube-system", "delete", ""),
        ("", "namespaces", bystander, "delete", ""),
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
    ];
    for (group, resource, name, verb, ns) in granted {
        assert!(
            rbac_allows(admin, user, group, resource, name, verb, ns).await,
            "RBAC grants {verb} {resource} {name} in {ns:?}"
        );
    }
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

    // In its lane, the same kinds of write pass (dry runs: nothing changes).
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
            &Patch::Apply(&binding(learner_ns, "devenv-learner", sa(learner_ns))),
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
