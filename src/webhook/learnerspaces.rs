//! LearnerSpace validation: every rule of docs/webhook.md, each error as
//! `spec.field.path: reason`, all of them collected. Works on the raw JSON
//! so that a wrong type is reported against its field instead of failing the
//! whole decode.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::FieldError;
use crate::config::{OperatorConfig, QuotaConfig};
use crate::names::{self, LEARNER_NAMESPACE_PREFIX};
use crate::quantity::Quantity;

const MAX_LIST: usize = 32;
const SPEC_FIELDS: &[&str] = &[
    "learnerId",
    "subjects",
    "resourceQuota",
    "networkPolicy",
    "vaultRole",
];
const QUOTA_FIELDS: &[&str] = &[
    "cpu",
    "memory",
    "storage",
    "ephemeralStorage",
    "pods",
    "services",
    "secrets",
    "configmaps",
];
const POLICY_FIELDS: &[&str] = &["egressDeny", "allowedNamespaces"];

/// The verdict on one LearnerSpace.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Validation {
    pub errors: Vec<FieldError>,
    /// Unknown fields, reported back to `kubectl` as admission warnings.
    pub warnings: Vec<String>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }
}

/// Validates a LearnerSpace object (`old` on UPDATE), given as JSON.
pub fn validate(config: &OperatorConfig, object: &Value, old: Option<&Value>) -> Validation {
    let mut v = Validation::default();
    let spec = match object.get("spec") {
        Some(Value::Object(spec)) => spec,
        Some(_) => {
            v.error("spec", "must be an object");
            return v;
        }
        None => {
            v.error("spec", "required (spec.learnerId is required)");
            return v;
        }
    };
    for key in spec.keys().filter(|k| !SPEC_FIELDS.contains(&k.as_str())) {
        v.warnings
            .push(format!("spec.{key}: unknown field, ignored"));
    }
    if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
        && name.len() > 63
    {
        v.error(
            "metadata.name",
            "must be at most 63 characters: it labels every object of the learner",
        );
    }
    validate_learner_id(spec, old, &mut v);
    validate_subjects(spec.get("subjects"), &mut v);
    if let Some(quota) = present(spec.get("resourceQuota")) {
        validate_quota(quota, &config.max_resource_quota, &mut v);
    }
    if let Some(policy) = present(spec.get("networkPolicy")) {
        validate_network_policy(policy, &mut v);
    }
    if let Some(role) = present(spec.get("vaultRole")) {
        match role.as_str() {
            Some(r) if is_vault_role(r) => {}
            Some(r) => v.error(
                "spec.vaultRole",
                format!("{r:?} must match [a-z0-9][a-z0-9_-]{{0,62}}"),
            ),
            None => v.error("spec.vaultRole", "must be a string"),
        }
    }
    v
}

/// `null` is the same as absent: both take the operator's default.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn validate_learner_id(spec: &Map<String, Value>, old: Option<&Value>, v: &mut Validation) {
    const FIELD: &str = "spec.learnerId";
    let id = match present(spec.get("learnerId")) {
        None => return v.error(FIELD, "required"),
        Some(Value::String(id)) => id,
        Some(_) => return v.error(FIELD, "must be a string"),
    };
    if id.is_empty() || id.len() > 128 {
        v.error(
            FIELD,
            format!("must be 1 to 128 characters, got {}", id.chars().count()),
        );
    } else if let Some(bad) = id.chars().find(|c| !is_learner_id_char(*c)) {
        v.error(
            FIELD,
            format!("{id:?} has {bad:?}; only letters, digits, '.', '_', '@' and '-' are allowed"),
        );
    } else if !names::sanitizes_to_non_empty(id) {
        v.error(
            FIELD,
            format!("{id:?} must contain at least one letter or digit to name a namespace"),
        );
    }
    let old_id = old
        .and_then(|o| o.get("spec"))
        .and_then(|s| s.get("learnerId"))
        .and_then(Value::as_str);
    if let Some(old_id) = old_id
        && old_id != id
    {
        v.error(FIELD, format!("is immutable (was {old_id:?}, now {id:?})"));
    }
}

fn is_learner_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')
}

fn is_vault_role(role: &str) -> bool {
    let bytes = role.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn validate_subjects(subjects: Option<&Value>, v: &mut Validation) {
    let Some(subjects) = present(subjects) else {
        return;
    };
    let Some(list) = subjects.as_array() else {
        return v.error("spec.subjects", "must be a list of strings");
    };
    if list.len() > MAX_LIST {
        v.error(
            "spec.subjects",
            format!("at most {MAX_LIST} subjects, got {}", list.len()),
        );
    }
    let mut seen = HashSet::new();
    for (i, subject) in list.iter().enumerate() {
        let field = format!("spec.subjects[{i}]");
        let Some(s) = subject.as_str() else {
            v.error(field, "must be a string");
            continue;
        };
        if s.is_empty() {
            v.error(field, "must not be empty");
        } else if s.len() > 63 {
            v.error(
                field,
                format!("must be at most 63 characters, got {}", s.len()),
            );
        } else if !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            v.error(
                field,
                format!("{s:?} may only hold lower-case letters, digits and '-'"),
            );
        } else if !seen.insert(s) {
            v.error(field, format!("duplicate subject {s:?}"));
        }
    }
}

fn validate_quota(quota: &Value, max: &QuotaConfig, v: &mut Validation) {
    let Some(quota) = quota.as_object() else {
        return v.error("spec.resourceQuota", "must be an object");
    };
    for key in quota.keys().filter(|k| !QUOTA_FIELDS.contains(&k.as_str())) {
        v.warnings
            .push(format!("spec.resourceQuota.{key}: unknown field, ignored"));
    }
    for (field, limit) in [
        ("cpu", &max.cpu),
        ("memory", &max.memory),
        ("storage", &max.storage),
        ("ephemeralStorage", &max.ephemeral_storage),
    ] {
        let Some(value) = present(quota.get(field)) else {
            continue;
        };
        let path = format!("spec.resourceQuota.{field}");
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                v.error(
                    path,
                    "must be a quantity such as \"2\", \"500m\" or \"4Gi\"",
                );
                continue;
            }
        };
        match Quantity::parse(&text) {
            Err(e) => v.error(path, e.to_string()),
            Ok(q) if !q.is_positive() => {
                v.error(path, format!("{text:?} must be greater than zero"))
            }
            Ok(q) => {
                if let Ok(limit_q) = Quantity::parse(limit)
                    && q > limit_q
                {
                    v.error(path, format!("{text:?} exceeds the maximum of {limit}"));
                }
            }
        }
    }
    for (field, min, limit) in [
        ("pods", 1, max.pods),
        ("services", 0, max.services),
        ("secrets", 0, max.secrets),
        ("configmaps", 0, max.configmaps),
    ] {
        let Some(value) = present(quota.get(field)) else {
            continue;
        };
        let path = format!("spec.resourceQuota.{field}");
        match value.as_i64() {
            Some(n) if (min..=limit).contains(&n) => {}
            Some(n) => v.error(path, format!("{n} is outside {min} to {limit}")),
            None => v.error(path, format!("must be an integer from {min} to {limit}")),
        }
    }
}

fn validate_network_policy(policy: &Value, v: &mut Validation) {
    let Some(policy) = policy.as_object() else {
        return v.error("spec.networkPolicy", "must be an object");
    };
    for key in policy
        .keys()
        .filter(|k| !POLICY_FIELDS.contains(&k.as_str()))
    {
        v.warnings
            .push(format!("spec.networkPolicy.{key}: unknown field, ignored"));
    }
    if let Some(deny) = present(policy.get("egressDeny"))
        && !deny.is_boolean()
    {
        v.error("spec.networkPolicy.egressDeny", "must be true or false");
    }
    let Some(allowed) = present(policy.get("allowedNamespaces")) else {
        return;
    };
    let Some(list) = allowed.as_array() else {
        return v.error(
            "spec.networkPolicy.allowedNamespaces",
            "must be a list of namespace names",
        );
    };
    if list.len() > MAX_LIST {
        v.error(
            "spec.networkPolicy.allowedNamespaces",
            format!("at most {MAX_LIST} namespaces, got {}", list.len()),
        );
    }
    let mut seen = HashSet::new();
    for (i, ns) in list.iter().enumerate() {
        let field = format!("spec.networkPolicy.allowedNamespaces[{i}]");
        let Some(ns) = ns.as_str() else {
            v.error(field, "must be a string");
            continue;
        };
        if let Err(e) = names::check_dns1123_label(ns) {
            v.error(field, e);
        } else if ns.starts_with(LEARNER_NAMESPACE_PREFIX) {
            v.error(
                field,
                format!("{ns:?} is a learner namespace; learners never reach each other"),
            );
        } else if !seen.insert(ns) {
            v.error(field, format!("duplicate namespace {ns:?}"));
        }
    }
}

#[cfg(test)]
#[path = "learnerspaces_tests.rs"]
mod tests;
