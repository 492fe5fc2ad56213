//! The LearnerSpace status: phase, namespace, observed generation, message
//! and a standard `Ready` condition. Pure; the reconciler writes it only
//! when it differs from what is stored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{LearnerSpaceStatus, Phase};

/// The status to store, keeping the condition's `lastTransitionTime` when
/// its status did not change.
pub fn status(
    phase: Phase,
    reason: &str,
    message: &str,
    namespace: Option<&str>,
    generation: Option<i64>,
    previous: Option<&LearnerSpaceStatus>,
    now: Timestamp,
) -> LearnerSpaceStatus {
    let ready = if phase == Phase::Ready {
        "True"
    } else {
        "False"
    };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let since = match previous_ready {
        Some(c) if c.status == ready => c.last_transition_time.clone(),
        _ => Time(now),
    };
    LearnerSpaceStatus {
        phase: Some(phase),
        namespace: namespace.map(str::to_string),
        observed_generation: generation,
        message: Some(message.to_string()),
        conditions: vec![Condition {
            type_: "Ready".to_string(),
            status: ready.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: since,
        }],
    }
}

/// A hash of what a status says (its transition times aside): equal for
/// statuses that differ only in transition times.
pub fn fingerprint(status: &LearnerSpaceStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let text = serde_json::to_string(&timeless(status)).unwrap_or_default();
    text.hash(&mut hasher);
    hasher.finish()
}

fn timeless(status: &LearnerSpaceStatus) -> LearnerSpaceStatus {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal but for when the condition last changed.
    fn equivalent(a: &LearnerSpaceStatus, b: &LearnerSpaceStatus) -> bool {
        timeless(a) == timeless(b)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn ready_condition_follows_the_phase() {
        let s = status(
            Phase::Ready,
            "Reconciled",
            "ok",
            Some("ns"),
            Some(3),
            None,
            at(10),
        );
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Reconciled")
        );
        let f = status(
            Phase::Failed,
            "DuplicateLearner",
            "taken",
            None,
            Some(1),
            None,
            at(10),
        );
        assert_eq!(f.conditions[0].status, "False");
    }

    #[test]
    fn transition_time_moves_only_on_a_transition() {
        let first = status(
            Phase::Ready,
            "Reconciled",
            "ok",
            Some("ns"),
            Some(1),
            None,
            at(10),
        );
        let same = status(
            Phase::Ready,
            "Reconciled",
            "ok",
            Some("ns"),
            Some(1),
            Some(&first),
            at(99),
        );
        assert_eq!(
            same, first,
            "an unchanged status is equal, so it costs no write"
        );
        let failed = status(
            Phase::Failed,
            "ApplyFailed",
            "boom",
            Some("ns"),
            Some(1),
            Some(&first),
            at(99),
        );
        assert_eq!(failed.conditions[0].last_transition_time, Time(at(99)));
        let recomputed = status(
            Phase::Failed,
            "ApplyFailed",
            "boom",
            Some("ns"),
            Some(1),
            None,
            at(120),
        );
        assert!(equivalent(&failed, &recomputed));
        assert_eq!(fingerprint(&failed), fingerprint(&recomputed));
        assert_ne!(fingerprint(&failed), fingerprint(&first));
        assert!(!equivalent(&failed, &first));
    }
}
