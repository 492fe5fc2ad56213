//! Unknown fields: a manifest document parses into its type, and nothing it
//! says is lost on the way (a typo fails in a test, not silently in a
//! cluster). Shared by `tests/manifests` (everything under `deploy/`) and
//! `tests/chart` (what `helm template` renders).

use devenv_manager::webhook::learnerspaces;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::manifests::{deploy_config, kind_of};

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
pub fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
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

pub fn check_typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    typed::<T>(doc).map(drop)
}

/// The shape of an object that is not a k8s-openapi type (kustomize,
/// cert-manager, Prometheus Operator, Argo CD): the keys it may have, so that a misspelt one is caught.
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

/// A Prometheus Operator `RelabelConfig` (monitoring.coreos.com/v1).
const RELABEL_CONFIG: Shape = Shape::List(&Shape::Map(&[
    ("sourceLabels", STRINGS),
    ("separator", Shape::Leaf),
    ("targetLabel", Shape::Leaf),
    ("regex", Shape::Leaf),
    ("modulus", Shape::Leaf),
    ("replacement", Shape::Leaf),
    ("action", Shape::Leaf),
]));

/// monitoring.coreos.com/v1 `ServiceMonitor`: the upstream CRD's fields.
const SERVICE_MONITOR: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    (
        "spec",
        Shape::Map(&[
            ("jobLabel", Shape::Leaf),
            ("targetLabels", STRINGS),
            ("podTargetLabels", STRINGS),
            (
                "endpoints",
                Shape::List(&Shape::Map(&[
                    ("port", Shape::Leaf),
                    ("targetPort", Shape::Leaf),
                    ("path", Shape::Leaf),
                    ("scheme", Shape::Leaf),
                    ("params", Shape::Leaf),
                    ("interval", Shape::Leaf),
                    ("scrapeTimeout", Shape::Leaf),
                    ("tlsConfig", Shape::Leaf),
                    ("bearerTokenFile", Shape::Leaf),
                    ("bearerTokenSecret", Shape::Leaf),
                    ("authorization", Shape::Leaf),
                    ("honorLabels", Shape::Leaf),
                    ("honorTimestamps", Shape::Leaf),
                    ("trackTimestampsStaleness", Shape::Leaf),
                    ("basicAuth", Shape::Leaf),
                    ("oauth2", Shape::Leaf),
                    ("metricRelabelings", RELABEL_CONFIG),
                    ("relabelings", RELABEL_CONFIG),
                    ("proxyUrl", Shape::Leaf),
                    ("followRedirects", Shape::Leaf),
                    ("enableHttp2", Shape::Leaf),
                    ("filterRunning", Shape::Leaf),
                ])),
            ),
            ("selector", Shape::Leaf),
            (
                "namespaceSelector",
                Shape::Map(&[("any", Shape::Leaf), ("matchNames", STRINGS)]),
            ),
            ("sampleLimit", Shape::Leaf),
            ("scrapeProtocols", STRINGS),
            ("targetLimit", Shape::Leaf),
            ("labelLimit", Shape::Leaf),
            ("labelNameLengthLimit", Shape::Leaf),
            ("labelValueLengthLimit", Shape::Leaf),
            ("keepDroppedTargets", Shape::Leaf),
            ("attachMetadata", Shape::Leaf),
            ("scrapeClass", Shape::Leaf),
            ("bodySizeLimit", Shape::Leaf),
        ]),
    ),
]);

/// monitoring.coreos.com/v1 `PrometheusRule`: the upstream CRD's fields.
const PROMETHEUS_RULE: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    (
        "spec",
        Shape::Map(&[(
            "groups",
            Shape::List(&Shape::Map(&[
                ("name", Shape::Leaf),
                ("labels", Shape::Leaf),
                ("interval", Shape::Leaf),
                ("query_offset", Shape::Leaf),
                ("limit", Shape::Leaf),
                ("partial_response_strategy", Shape::Leaf),
                (
                    "rules",
                    Shape::List(&Shape::Map(&[
                        ("record", Shape::Leaf),
                        ("alert", Shape::Leaf),
                        ("expr", Shape::Leaf),
                        ("for", Shape::Leaf),
                        ("keep_firing_for", Shape::Leaf),
                        ("labels", Shape::Leaf),
                        ("annotations", Shape::Leaf),
                    ])),
                ),
            ])),
        )]),
    ),
]);

/// Argo CD's argoproj.io/v1alpha1 `Application`, the fields
/// deploy/argocd/application.yaml may use (a single Helm source).
const ARGOCD_APPLICATION: Shape = Shape::Map(&[
    ("apiVersion", Shape::Leaf),
    ("kind", Shape::Leaf),
    ("metadata", Shape::Meta),
    (
        "spec",
        Shape::Map(&[
            ("project", Shape::Leaf),
            (
                "source",
                Shape::Map(&[
                    ("repoURL", Shape::Leaf),
                    ("targetRevision", Shape::Leaf),
                    ("path", Shape::Leaf),
                    ("chart", Shape::Leaf),
                    (
                        "helm",
                        Shape::Map(&[
                            ("releaseName", Shape::Leaf),
                            ("valueFiles", STRINGS),
                            ("values", Shape::Leaf),
                            ("valuesObject", Shape::Leaf),
                            ("parameters", Shape::Leaf),
                            ("skipCrds", Shape::Leaf),
                            ("skipSchemaValidation", Shape::Leaf),
                            ("skipTests", Shape::Leaf),
                            ("version", Shape::Leaf),
                            ("passCredentials", Shape::Leaf),
                            ("ignoreMissingValueFiles", Shape::Leaf),
                            ("namespace", Shape::Leaf),
                            ("kubeVersion", Shape::Leaf),
                            ("apiVersions", STRINGS),
                        ]),
                    ),
                ]),
            ),
            (
                "destination",
                Shape::Map(&[
                    ("server", Shape::Leaf),
                    ("name", Shape::Leaf),
                    ("namespace", Shape::Leaf),
                ]),
            ),
            (
                "syncPolicy",
                Shape::Map(&[
                    (
                        "automated",
                        Shape::Map(&[
                            ("prune", Shape::Leaf),
                            ("selfHeal", Shape::Leaf),
                            ("allowEmpty", Shape::Leaf),
                            ("enabled", Shape::Leaf),
                        ]),
                    ),
                    ("syncOptions", STRINGS),
                    ("retry", Shape::Leaf),
                    (
                        "managedNamespaceMetadata",
                        Shape::Map(&[("labels", Shape::Leaf), ("annotations", Shape::Leaf)]),
                    ),
                ]),
            ),
            (
                "ignoreDifferences",
                Shape::List(&Shape::Map(&[
                    ("group", Shape::Leaf),
                    ("kind", Shape::Leaf),
                    ("name", Shape::Leaf),
                    ("namespace", Shape::Leaf),
                    ("jsonPointers", STRINGS),
                    ("jqPathExpressions", STRINGS),
                    ("managedFieldsManagers", STRINGS),
                ])),
            ),
            ("revisionHistoryLimit", Shape::Leaf),
            ("info", Shape::Leaf),
        ]),
    ),
]);

/// Checks one document of any kind the manifests and the chart use: a
/// k8s-openapi type with no unknown field, or a known shape (kustomize,
/// cert-manager, Prometheus Operator, Argo CD); an unknown kind is an error.
pub fn check_document(doc: &Value) -> Result<(), String> {
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
        // The chart's hooks: the `helm test` Pod and the pre-delete Job.
        ("v1", "Pod") => check_typed::<Pod>(doc),
        ("batch/v1", "Job") => check_typed::<Job>(doc),
        ("apps/v1", "Deployment") => check_typed::<Deployment>(doc),
        ("flowcontrol.apiserver.k8s.io/v1", "FlowSchema") => check_typed::<FlowSchema>(doc),
        ("flowcontrol.apiserver.k8s.io/v1", "PriorityLevelConfiguration") => {
            check_typed::<PriorityLevelConfiguration>(doc)
        }
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
        ("monitoring.coreos.com/v1", "ServiceMonitor") => shaped(&SERVICE_MONITOR),
        ("monitoring.coreos.com/v1", "PrometheusRule") => shaped(&PROMETHEUS_RULE),
        ("argoproj.io/v1alpha1", "Application") => shaped(&ARGOCD_APPLICATION),
        (api_version, kind) => Err(format!(
            "no check for {api_version} {kind}: add its type to check_document in crates/devenv-testbed/src/typed.rs"
        )),
    }
}
