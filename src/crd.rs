//! The `LearnerSpace` custom resource (`aivo.dev/v1`): the Rust types from
//! which the CRD is generated, validated by the webhook and reconciled by the
//! operator.
//!
//! The schema carries what OpenAPI and CEL can express of the webhook's rules,
//! so that a cluster without the webhook still refuses most invalid objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "aivo.dev";
pub const FINALIZER: &str = "aivo.dev/tombstone";

/// Every character a learner id may hold.
pub const LEARNER_ID_PATTERN: &str = "^[A-Za-z0-9._@-]{1,128}$";
pub const SUBJECT_PATTERN: &str = "^[a-z0-9-]{1,63}$";
pub const VAULT_ROLE_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
/// Kubernetes' own quantity grammar (apimachinery `resource.Quantity`).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A learner's isolated namespace.
// clippy reads the repeated `type_ = "string"` of the printer columns as
// duplicated attributes; they are four distinct columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "aivo.dev",
    version = "v1",
    kind = "LearnerSpace",
    plural = "learnerspaces",
    shortname = "ls",
    category = "aivo",
    namespaced,
    status = "LearnerSpaceStatus",
    printcolumn(name = "Learner", type_ = "string", json_path = ".spec.learnerId"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LearnerSpaceSpec {
    /// The learner's identity, as the learning platform knows it. Immutable.
    #[schemars(
        regex(pattern = "^[A-Za-z0-9._@-]{1,128}$"),
        length(min = 1, max = 128),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.learnerId is immutable"}])
    )]
    pub learner_id: String,

    /// Subjects the learner studies; recorded in the tombstone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"), schema_with = "subjects_schema")]
    pub subjects: Vec<String>,

    /// Quota of the learner namespace; missing amounts take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaSpec>,

    /// Network isolation; missing fields take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Vault role carried by the learner's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub vault_role: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaSpec {
    /// CPU for requests and limits, a Kubernetes quantity (`2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu: Option<QuantityValue>,
    /// Memory for requests and limits (`4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Option<QuantityValue>,
    /// Total storage requested by claims (`10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub storage: Option<QuantityValue>,
    /// Node disk for the learner's containers, requests and limits: writable
    /// layers, logs, `emptyDir` volumes (`10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub ephemeral_storage: Option<QuantityValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pods: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub services: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub secrets: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub configmaps: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Deny all egress except the learner's namespace, the allowed namespaces and DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<bool>,
    /// Namespaces the learner's pods may reach (never another learner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"), schema_with = "namespaces_schema")]
    pub allowed_namespaces: Option<Vec<String>>,
}

/// A quantity as written: YAML users write both `cpu: 2` and `cpu: "500m"`,
/// so like Kubernetes' own quantities it accepts a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QuantityValue(pub String);

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(i64),
            Float(f64),
            Str(String),
        }
        Ok(QuantityValue(match IntOrString::deserialize(d)? {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::Float(f) => f.to_string(),
            IntOrString::Str(s) => s,
        }))
    }
}

impl QuantityValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    Pending,
    Creating,
    Ready,
    Failed,
    Terminating,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Creating,
        Phase::Ready,
        Phase::Failed,
        Phase::Terminating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Creating => "Creating",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearnerSpaceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The learner namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        // No `type`: an int-or-string takes `2` and `"500m"` alike; the
        // pattern only applies to strings.
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN,
    })
}

fn subjects_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "pattern": SUBJECT_PATTERN, "minLength": 1, "maxLength": 63},
    })
}

fn namespaces_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "x-kubernetes-validations": [{
                "rule": "!self.startsWith('aivo-learner-')",
                "message": "must not be a learner namespace",
            }],
        },
    })
}

/// The CRD as YAML, exactly what `devenv-manager crd` prints and
/// `deploy/crd.yaml` holds.
pub fn crd_yaml() -> Result<String, crate::yaml::YamlError> {
    use kube::CustomResourceExt;
    crate::yaml::to_yaml(&LearnerSpace::crd())
}
