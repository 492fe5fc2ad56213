//! The LearnerSpace status: phase, namespace, observed generation, message
//! and a standard `Ready` condition. Pure; the reconciler writes it only
//! when it differs from what is stored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{LearnerSpaceStatus, Phase};

/// What a reconcile reports: the phase reached, why (the condition's
/// reason, and the Event's on a failure), the words for it, and the
/// learner's namespace once it is this LearnerSpace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub phase: Phase,
    pub reason: &'static str,
    pub message: String,
    pub namespace: Option<String>,
}

impl Report {
    /// A report naming no namespace (the LearnerSpace claims none).
    pub fn new(phase: Phase, reason: &'static str, message: impl Into<String>) -> Report {
        Report {
            phase,
            reason,
            message: message.into(),
            namespace: None,
        }
    }

    /// The same report, claiming `namespace`.
    pub fn in_namespace(self, namespace: &str) -> Report {
        Report {
            namespace: Some(namespace.to_string()),
            ..self
        }
    }
}

/// The status to store for `report`, keeping the condition's
/// `lastTransitionTime` when its status did not change.
pub fn status(
    report: &Report,
    generation: Option<i64>,
    previous: Option<&LearnerSpaceStatus>,
    now: Timestamp,
) -> LearnerSpaceStatus {
    let ready = if report.phase == Phase::Ready {
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
        phase: Some(report.phase),
        namespace: report.namespace.clone(),
        observed_generation: generation,
        message: Some(report.message.clone()),
        conditions: vec![Condition {
            type_: "Ready".to_string(),
            status: ready.to_string(),
            reason: report.reason.to_string(),
            message: report.message.clone(),
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

    fn ready(previous: Option<&LearnerSpaceStatus>, now: i64) -> LearnerSpaceStatus {
        let report = Report::new(Phase::Ready, "Reconciled", "ok").in_namespace("ns");
        status(&report, Some(1), previous, at(now))
    }

    fn failed(previous: Option<&LearnerSpaceStatus>, now: i64) -> LearnerSpaceStatus {
        let report = Report::new(Phase::Failed, "ApplyFailed", "boom").in_namespace("ns");
        status(&report, Some(1), previous, at(now))
    }

    #[test]
    fn ready_condition_follows_the_phase() {
        let report = Report::new(Phase::Ready, "Reconciled", "ok").in_namespace("ns");
        let s = status(&report, Some(3), None, at(10));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.namespace.as_deref(), Some("ns"));
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Reconciled")
        );
        let report = Report::new(Phase::Failed, "DuplicateLearner", "taken");
        let f = status(&report, Some(1), None, at(10));
        assert_eq!(f.conditions[0].status, "False");
        assert_eq!(f.namespace, None, "a report names no namespace unless told");
    }

    #[test]
    fn transition_time_moves_only_on_a_transition() {
        let first = ready(None, 10);
        let same = ready(Some(&first), 99);
        assert_eq!(
            same, first,
            "an unchanged status is equal, so it costs no write"
        );
        let failed_now = failed(Some(&first), 99);
        assert_eq!(failed_now.conditions[0].last_transition_time, Time(at(99)));
        let recomputed = failed(None, 120);
        assert!(equivalent(&failed_now, &recomputed));
        assert_eq!(fingerprint(&failed_now), fingerprint(&recomputed));
        assert_ne!(fingerprint(&failed_now), fingerprint(&first));
        assert!(!equivalent(&failed_now, &first));
    }
}
