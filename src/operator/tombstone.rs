//! The tombstone: a ConfigMap in the operator's namespace that records a
//! deleted learner. Written before the namespace is deleted; never deleted by
//! the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::objects::{COMPONENT_LABEL, LEARNERSPACE_LABEL, MANAGED_BY_LABEL, MANAGER};
use crate::crd::LearnerSpace;
use crate::k8s::ObjectMeta;
use crate::names;

pub const UID_KEY: &str = "learnerSpaceUid";

/// The tombstone for `ls`, deleted at `deleted_at` (RFC 3339).
pub fn tombstone(ls: &LearnerSpace, operator_namespace: &str, deleted_at: &str) -> ConfigMap {
    let learner_id = &ls.spec.learner_id;
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::tombstone_name(learner_id)),
            namespace: Some(operator_namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                (COMPONENT_LABEL.to_string(), "tombstone".to_string()),
                // Not `aivo.dev/learnerspace`: the tombstone outlives it and
                // must never look like an object to repair or prune.
                (
                    format!("{LEARNERSPACE_LABEL}-name"),
                    ls.metadata.name.clone().unwrap_or_default(),
                ),
            ])),
            ..Default::default()
        },
        data: Some(record(ls, deleted_at)),
        ..Default::default()
    }
}

/// The record itself: learner id, namespace, subjects, deletion time, uid.
pub fn record(ls: &LearnerSpace, deleted_at: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("learnerId".to_string(), ls.spec.learner_id.clone()),
        (
            "namespace".to_string(),
            names::learner_namespace(&ls.spec.learner_id),
        ),
        ("subjects".to_string(), ls.spec.subjects.join(",")),
        ("deletedAt".to_string(), deleted_at.to_string()),
        (
            UID_KEY.to_string(),
            ls.metadata.uid.clone().unwrap_or_default(),
        ),
    ])
}

/// Whether `existing` already records the deletion of `uid`: as its main
/// record, or as an earlier same-learner deletion's `deletion-{uid}` entry.
pub fn records(existing: &ConfigMap, uid: &str) -> bool {
    existing.data.as_ref().is_some_and(|d| {
        d.get(UID_KEY).map(String::as_str) == Some(uid) || d.contains_key(&history_key(uid))
    })
}

/// A learner deleted twice (two LearnerSpaces over time, one tombstone name):
/// the later deletion is added under this key, as a JSON record, so neither is lost.
pub fn history_key(uid: &str) -> String {
    format!("deletion-{uid}")
}
