//! LearnerSpace validation: every rule of docs/webhook.md, each error as
//! `spec.field.path: reason`, all of them collected.
//!
//! The spec is checked as the typed [`LearnerSpaceSpec`] against the rules
//! of [`crate::crd`], the same constants the CRD schema is generated from; what
//! is added here is what a schema cannot say (the configured maximums,
//! duplicates, a learner id that names a namespace, the old id on UPDATE). The
//! API server has checked the types before calling the webhook, but `devenv
//! admit` has not: a wrong type is reported against its field
//! ([`decode`]) and that field's rules are skipped.

use std::collections::HashSet;
use std::sync::LazyLock;

use schemars::JsonSchema;
use serde_json::{Map, Value};

use super::FieldError;
use crate::config::{OperatorConfig, QuotaConfig};
use crate::crd::{
    self, LEARNER_ID, LearnerSpaceSpec, MAX_LIST_ITEMS, NetworkPolicySpec, QuantityValue,
    ResourceQuotaSpec, SUBJECT, VAULT_ROLE,
};
use crate::names::{self, DNS1123_LABEL_MAX_LEN, LEARNER_NAMESPACE_PREFIX};
use crate::quantity::Quantity;

#[path = "learnerspaces_decode.rs"]
mod decode;

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
    let raw = match object.get("spec") {
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
    if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
        && name.len() > DNS1123_LABEL_MAX_LEN
    {
        v.error(
            "metadata.name",
            format!(
                "must be at most {DNS1123_LABEL_MAX_LEN} characters: it labels every object of the learner"
            ),
        );
    }
    let decoded = decode::decode::<LearnerSpaceSpec>("spec", Value::Object(raw.clone()));
    let mut c = Checker {
        v,
        type_errors: decoded.type_errors,
    };
    c.unknown_fields("spec", Some(raw), &SPEC_FIELDS);
    if let Some(spec) = &decoded.value {
        let old_id = old
            .and_then(|o| o.pointer("/spec/learnerId"))
            .and_then(Value::as_str);
        c.learner_id(&spec.learner_id, old_id);
        c.subjects(&spec.subjects);
        c.quota(
            spec.resource_quota.as_ref(),
            raw.get("resourceQuota"),
            &config.max_resource_quota,
        );
        c.network_policy(spec.network_policy.as_ref(), raw.get("networkPolicy"));
        c.vault_role(spec.vault_role.as_deref());
    }
    c.finish()
}

/// The field names of each object, from the types (as the CRD lists them).
static SPEC_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<LearnerSpaceSpec>);
static QUOTA_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<ResourceQuotaSpec>);
static POLICY_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<NetworkPolicySpec>);

fn field_names<T: JsonSchema>() -> Vec<String> {
    schemars::schema_for!(T)
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Runs the rules over the typed spec, field by field in the order of the
/// type, reporting a field's type error in place of its rules.
struct Checker {
    v: Validation,
    /// Type errors not yet reported.
    type_errors: Vec<FieldError>,
}

impl Checker {
    /// Whether `field` was decoded from a value of its type, so its rules
    /// apply. If not, its type error is reported here, in the rules' order.
    fn typed(&mut self, field: &str) -> bool {
        match self.type_errors.iter().position(|e| e.field == field) {
            Some(i) => {
                let e = self.type_errors.remove(i);
                self.v.errors.push(e);
                false
            }
            None => true,
        }
    }

    fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.v.error(field, reason);
    }

    fn finish(mut self) -> Validation {
        self.v.errors.append(&mut self.type_errors);
        self.v
    }

    /// Warns of every field of `object` its type does not have (serde
    /// ignores them; `kubectl` should say so).
    fn unknown_fields(
        &mut self,
        path: &str,
        object: Option<&Map<String, Value>>,
        known: &[String],
    ) {
        for key in object.into_iter().flat_map(Map::keys) {
            if !known.contains(key) {
                self.v
                    .warnings
                    .push(format!("{path}.{key}: unknown field, ignored"));
            }
        }
    }

    fn learner_id(&mut self, id: &str, old_id: Option<&str>) {
        const FIELD: &str = "spec.learnerId";
        if !self.typed(FIELD) {
            return;
        }
        let rule = &LEARNER_ID;
        if !(rule.min..=rule.max).contains(&id.len()) {
            self.error(
                FIELD,
                format!(
                    "must be {} to {} characters, got {}",
                    rule.min,
                    rule.max,
                    id.chars().count()
                ),
            );
        } else if let Some(bad) = rule.stray_char(id) {
            self.error(
                FIELD,
                format!("{id:?} has {bad:?}; only {} are allowed", rule.in_words),
            );
        } else if !names::sanitizes_to_non_empty(id) {
            self.error(
                FIELD,
                format!("{id:?} must contain at least one letter or digit to name a namespace"),
            );
        }
        if let Some(old_id) = old_id
            && old_id != id
        {
            self.error(FIELD, format!("is immutable (was {old_id:?}, now {id:?})"));
        }
    }

    fn subjects(&mut self, subjects: &[String]) {
        const FIELD: &str = "spec.subjects";
        if !self.typed(FIELD) {
            return;
        }
        if subjects.len() > MAX_LIST_ITEMS {
            self.error(
                FIELD,
                format!("at most {MAX_LIST_ITEMS} subjects, got {}", subjects.len()),
            );
        }
        let mut seen = HashSet::new();
        for (i, s) in subjects.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            if !self.typed(&field) {
                continue;
            }
            if s.len() < SUBJECT.min {
                self.error(field, "must not be empty");
            } else if s.len() > SUBJECT.max {
                self.error(
                    field,
                    format!(
                        "must be at most {} characters, got {}",
                        SUBJECT.max,
                        s.len()
                    ),
                );
            } else if SUBJECT.stray_char(s).is_some() {
                self.error(field, format!("{s:?} may only hold {}", SUBJECT.in_words));
            } else if !seen.insert(s) {
                self.error(field, format!("duplicate subject {s:?}"));
            }
        }
    }

    fn quota(&mut self, quota: Option<&ResourceQuotaSpec>, raw: Option<&Value>, max: &QuotaConfig) {
        if !self.typed("spec.resourceQuota") {
            return;
        }
        let Some(quota) = quota else {
            return;
        };
        self.unknown_fields(
            "spec.resourceQuota",
            raw.and_then(Value::as_object),
            &QUOTA_FIELDS,
        );
        for (name, value, limit) in [
            ("cpu", &quota.cpu, &max.cpu),
            ("memory", &quota.memory, &max.memory),
            ("storage", &quota.storage, &max.storage),
            (
                "ephemeralStorage",
                &quota.ephemeral_storage,
                &max.ephemeral_storage,
            ),
        ] {
            let field = format!("spec.resourceQuota.{name}");
            if self.typed(&field)
                && let Some(value) = value
                && let Err(reason) = check_quantity(value, limit)
            {
                self.error(field, reason);
            }
        }
        for (name, value, min, limit) in [
            ("pods", quota.pods, crd::MIN_PODS, max.pods),
            ("services", quota.services, crd::MIN_COUNT, max.services),
            ("secrets", quota.secrets, crd::MIN_COUNT, max.secrets),
            (
                "configmaps",
                quota.configmaps,
                crd::MIN_COUNT,
                max.configmaps,
            ),
        ] {
            let field = format!("spec.resourceQuota.{name}");
            if self.typed(&field)
                && let Some(n) = value
                && !(min..=limit).contains(&n)
            {
                self.error(field, format!("{n} is outside {min} to {limit}"));
            }
        }
    }

    fn network_policy(&mut self, policy: Option<&NetworkPolicySpec>, raw: Option<&Value>) {
        const FIELD: &str = "spec.networkPolicy.allowedNamespaces";
        if !self.typed("spec.networkPolicy") {
            return;
        }
        let Some(policy) = policy else {
            return;
        };
        self.unknown_fields(
            "spec.networkPolicy",
            raw.and_then(Value::as_object),
            &POLICY_FIELDS,
        );
        // A boolean has no rule beyond its type.
        self.typed("spec.networkPolicy.egressDeny");
        if !self.typed(FIELD) {
            return;
        }
        let Some(list) = &policy.allowed_namespaces else {
            return;
        };
        if list.len() > MAX_LIST_ITEMS {
            self.error(
                FIELD,
                format!("at most {MAX_LIST_ITEMS} namespaces, got {}", list.len()),
            );
        }
        let mut seen = HashSet::new();
        for (i, ns) in list.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            if !self.typed(&field) {
                continue;
            }
            if let Err(e) = names::check_dns1123_label(ns) {
                self.error(field, e);
            } else if ns.starts_with(LEARNER_NAMESPACE_PREFIX) {
                self.error(
                    field,
                    format!("{ns:?} is a learner namespace; learners never reach each other"),
                );
            } else if !seen.insert(ns) {
                self.error(field, format!("duplicate namespace {ns:?}"));
            }
        }
    }

    fn vault_role(&mut self, role: Option<&str>) {
        const FIELD: &str = "spec.vaultRole";
        if self.typed(FIELD)
            && let Some(role) = role
            && !VAULT_ROLE.is_match(role)
        {
            self.error(
                FIELD,
                format!("{role:?} must match {}", VAULT_ROLE.unanchored()),
            );
        }
    }
}

/// A quota amount: a quantity, greater than zero, at most the configured
/// maximum.
fn check_quantity(value: &QuantityValue, limit: &str) -> Result<(), String> {
    let text = value.as_str();
    let q = Quantity::parse(text).map_err(|e| e.to_string())?;
    if !q.is_positive() {
        return Err(format!("{text:?} must be greater than zero"));
    }
    if let Ok(limit_q) = Quantity::parse(limit)
        && q > limit_q
    {
        return Err(format!("{text:?} exceeds the maximum of {limit}"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "learnerspaces_tests.rs"]
mod tests;
