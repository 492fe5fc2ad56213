//! The `LearnerSpace` custom resource (`aivo.dev/v1`): the Rust types from
//! which the CRD is generated, validated by the webhook and reconciled by the
//! operator.
//!
//! The schema carries what OpenAPI and CEL can express of the webhook's rules,
//! so that a cluster without the webhook still refuses most invalid objects.

use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

use crate::names::{DNS1123_LABEL, DNS1123_LABEL_MAX_LEN, LEARNER_NAMESPACE_PREFIX, Pattern};

pub const GROUP: &str = "aivo.dev";
pub const FINALIZER: &str = "aivo.dev/tombstone";

// The rules of a LearnerSpace's fields, each stated once: the schema
// attributes below put them into the CRD (so the API server enforces them even
// without the webhook) and `webhook::learnerspaces` checks the same constants,
// adding only what a schema cannot say (maximums from the configuration,
// namespace-worthy learner ids, immutability with the old value in the message).

/// The most subjects, and the most allowed namespaces, a LearnerSpace may list.
pub const MAX_LIST_ITEMS: usize = 32;
/// The learner's identity as the learning platform writes it.
pub static LEARNER_ID: Text = Text::new(
    "A-Za-z0-9._@-",
    "letters, digits, '.', '_', '@' and '-'",
    1,
    128,
);
/// One subject.
pub static SUBJECT: Text = Text::new("a-z0-9-", "lower-case letters, digits and '-'", 1, 63);
pub static VAULT_ROLE: Pattern = Pattern::new("^[a-z0-9][a-z0-9_-]{0,62}$");
/// Kubernetes' own quantity grammar (apimachinery `resource.Quantity`), for the
/// schema; the webhook parses with [`crate::quantity::Quantity`], which a test
/// holds to the same grammar.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// A learner space runs at least one pod; the other counts may be zero.
pub const MIN_PODS: i64 = 1;
pub const MIN_COUNT: i64 = 0;

/// A string of `min..=max` characters of one class: the CRD gets
/// `pattern`/`minLength`/`maxLength` from it, the webhook its length and
/// character checks (and the class in words for their messages).
pub struct Text {
    /// The body of a regular-expression character class, such as `a-z0-9-`.
    pub class: &'static str,
    pub in_words: &'static str,
    pub min: usize,
    pub max: usize,
    outside: OnceLock<Regex>,
}

impl Text {
    pub const fn new(class: &'static str, in_words: &'static str, min: usize, max: usize) -> Self {
        Text {
            class,
            in_words,
            min,
            max,
            outside: OnceLock::new(),
        }
    }

    /// The whole rule as one regular expression, the CRD's `pattern`.
    pub fn pattern(&self) -> String {
        format!("^[{}]{{{},{}}}$", self.class, self.min, self.max)
    }

    /// The first character of `text` outside the class.
    pub fn stray_char(&self, text: &str) -> Option<char> {
        self.outside
            .get_or_init(|| {
                Regex::new(&format!("[^{}]", self.class)).expect("a class of the crate compiles")
            })
            .find(text)
            .and_then(|m| m.as_str().chars().next())
    }

    fn item_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "string",
            "pattern": self.pattern(),
            "minLength": self.min,
            "maxLength": self.max,
        })
    }
}

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
        regex(pattern = LEARNER_ID.pattern()),
        length(min = LEARNER_ID.min, max = LEARNER_ID.max),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.learnerId is immutable"}])
    )]
    pub learner_id: String,

    /// Subjects the learner studies; recorded in the tombstone.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "subjects_schema")]
    pub subjects: Vec<String>,

    /// Quota of the learner namespace; missing amounts take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaSpec>,

    /// Network isolation; missing fields take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Vault role carried by the learner's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VAULT_ROLE.source))]
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
    #[schemars(range(min = MIN_PODS))]
    pub pods: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_COUNT))]
    pub services: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_COUNT))]
    pub secrets: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_COUNT))]
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
    #[schemars(schema_with = "namespaces_schema")]
    pub allowed_namespaces: Option<Vec<String>>,
}

/// A quantity as written: YAML users write both `cpu: 2` and `cpu: "500m"`,
/// so like Kubernetes' own quantities it accepts a number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QuantityValue(pub String);

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = QuantityValue;
            // Read in type errors: "invalid type: boolean `true`, expected ...".
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quantity such as \"2\", \"500m\" or \"4Gi\"")
            }
            fn visit_i64<E>(self, i: i64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(i.to_string()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(u.to_string()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(f.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<QuantityValue, E> {
                Ok(QuantityValue(s.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `null` is the same as absent (as the API server prunes it), for a field
/// whose absence is its default.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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
        "maxItems": MAX_LIST_ITEMS,
        "x-kubernetes-list-type": "set",
        "items": SUBJECT.item_schema(),
    })
}

fn namespaces_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_LIST_ITEMS,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": DNS1123_LABEL_MAX_LEN,
            "pattern": DNS1123_LABEL.source,
            "x-kubernetes-validations": [{
                "rule": format!("!self.startsWith('{LEARNER_NAMESPACE_PREFIX}')"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantity::Quantity;

    /// The schema's quantity pattern and the webhook's parser read one grammar.
    #[test]
    fn the_quantity_pattern_and_parser_agree() {
        let pattern = Regex::new(QUANTITY_PATTERN).unwrap();
        for text in [
            "2", "500m", "4Gi", "0.5", ".5", "1e1", "1E-3", "+1", "-1", "1.", "16001m", "8Ei",
            "1Ki", "two", "2 ", "", "1.5.5", "1KI", "1ki", "Gi", "1e", "--1", "1Mi2",
        ] {
            assert_eq!(
                pattern.is_match(text),
                Quantity::parse(text).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn text_rules_give_the_patterns_of_the_crd() {
        assert_eq!(LEARNER_ID.pattern(), "^[A-Za-z0-9._@-]{1,128}$");
        assert_eq!(SUBJECT.pattern(), "^[a-z0-9-]{1,63}$");
        assert_eq!(LEARNER_ID.stray_char("a b"), Some(' '));
        assert_eq!(LEARNER_ID.stray_char("a_b@c-d.e"), None);
        assert_eq!(SUBJECT.stray_char("Math"), Some('M'));
        assert_eq!(VAULT_ROLE.unanchored(), "[a-z0-9][a-z0-9_-]{0,62}");
    }

    /// `Phase::as_str` (metrics labels) is what the API stores.
    #[test]
    fn phase_names_are_their_serde_names() {
        for phase in Phase::ALL {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }

    #[test]
    fn quantities_are_numbers_or_strings_and_nothing_else() {
        let q: ResourceQuotaSpec =
            serde_json::from_value(serde_json::json!({"cpu": 2, "memory": "4Gi", "storage": 0.5}))
                .unwrap();
        assert_eq!(q.cpu.unwrap().as_str(), "2");
        assert_eq!(q.memory.unwrap().as_str(), "4Gi");
        assert_eq!(q.storage.unwrap().as_str(), "0.5");
        let e = serde_json::from_value::<ResourceQuotaSpec>(serde_json::json!({"cpu": true}))
            .unwrap_err();
        assert!(e.to_string().contains("expected a quantity such as"), "{e}");
    }
}
