//! Before a LearnerSpace's objects are applied: may they be? Another
//! LearnerSpace of the same learner may have come first, the learner's
//! namespace may be on its way out, or may be someone else's. Pure: the
//! LearnerSpace, the others and the namespace as found in, a [`Verdict`]
//! out; the reconciler acts on it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Resource, ResourceExt};

use super::ownership;
use super::status::Report;
use crate::crd::{LearnerSpace, Phase};

/// A LearnerSpace held back because of another one, or of a namespace it
/// may not use, is looked at again this often: the obstacle may go away.
pub const DUPLICATE_RECHECK: Duration = Duration::from_secs(30);
/// A terminating namespace is waited for this often.
pub const TERMINATING_RECHECK: Duration = Duration::from_secs(10);

/// What to do with a LearnerSpace whose objects could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Apply its objects, creating the namespace first when it is absent.
    Apply { create_namespace: bool },
    /// Write nothing but `report`, and look again after `recheck`.
    Hold { report: Report, recheck: Duration },
}

/// The verdict on `ls`, whose namespace is `target`: `others` are the
/// LearnerSpaces known (the cache; `ls` may be among them), `namespace` is
/// `target` as found (`None`: it does not exist).
///
/// In this order: a duplicate learner is held whatever its namespace; a
/// namespace on its way out is waited for, whoever's it was, and nothing
/// is written into it; one that is not this LearnerSpace's is not adopted.
pub fn preflight(
    ls: &LearnerSpace,
    others: &[Arc<LearnerSpace>],
    target: &str,
    namespace: Option<&Namespace>,
) -> Verdict {
    let name = ls.name_any();
    if let Some(first) = first_with_same_learner(ls, others) {
        let message = format!(
            "learner {:?} already has LearnerSpace {first} (namespace {target}); this one is ignored",
            ls.spec.learner_id
        );
        return hold(Report::new(Phase::Failed, "DuplicateLearner", message));
    }
    let Some(existing) = namespace else {
        return Verdict::Apply {
            create_namespace: true,
        };
    };
    if existing.meta().deletion_timestamp.is_some() {
        let message = format!("waiting for the previous namespace {target} to finish terminating");
        return Verdict::Hold {
            report: Report::new(Phase::Pending, "NamespaceTerminating", message)
                .in_namespace(target),
            recheck: TERMINATING_RECHECK,
        };
    }
    if !ownership::owned_by(existing, &name) {
        let message = ownership::taken_message(target, existing, &name);
        return hold(Report::new(Phase::Failed, "NamespaceTaken", message));
    }
    Verdict::Apply {
        create_namespace: false,
    }
}

fn hold(report: Report) -> Verdict {
    Verdict::Hold {
        report,
        recheck: DUPLICATE_RECHECK,
    }
}

/// The oldest other live LearnerSpace for the same learner, if this is not
/// it: the oldest by creation time (then name) keeps the learner.
fn first_with_same_learner(ls: &LearnerSpace, others: &[Arc<LearnerSpace>]) -> Option<String> {
    let key = |l: &LearnerSpace| {
        (
            l.meta().creation_timestamp.clone().map(|t| t.0),
            l.name_any(),
        )
    };
    others
        .iter()
        .filter(|other| {
            other.spec.learner_id == ls.spec.learner_id && other.meta().uid != ls.meta().uid
        })
        .filter(|other| other.meta().deletion_timestamp.is_none())
        .filter(|other| key(other) < key(ls))
        .min_by_key(|other| key(other))
        .map(|other| other.name_any())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TARGET: &str = "aivo-learner-john-doe";

    fn learner_space(name: &str, uid: &str, created: &str) -> Arc<LearnerSpace> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
                "metadata": {"name": name, "namespace": "aivo-system", "uid": uid,
                             "creationTimestamp": created},
                "spec": {"learnerId": "john.doe"}
            }))
            .unwrap(),
        )
    }

    fn namespace(labels: serde_json::Value, terminating: bool) -> Namespace {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": TARGET, "labels": labels}});
        if terminating {
            ns["metadata"]["deletionTimestamp"] = json!("2026-11-24T12:00:00Z");
        }
        serde_json::from_value(ns).unwrap()
    }

    fn ours(owner: &str) -> Namespace {
        namespace(
            json!({"app.kubernetes.io/managed-by": "devenv-manager", "aivo.dev/learnerspace": owner}),
            false,
        )
    }

    fn held_for(verdict: &Verdict) -> (&'static str, Phase, Duration, Option<&str>) {
        match verdict {
            Verdict::Hold { report, recheck } => (
                report.reason,
                report.phase,
                *recheck,
                report.namespace.as_deref(),
            ),
            Verdict::Apply { .. } => panic!("applied: {verdict:?}"),
        }
    }

    #[test]
    fn an_absent_namespace_is_created_and_ours_is_applied_to() {
        let ls = learner_space("a", "1", "2026-01-01T00:00:00Z");
        let others = [ls.clone()];
        assert_eq!(
            preflight(&ls, &others, TARGET, None),
            Verdict::Apply {
                create_namespace: true
            }
        );
        assert_eq!(
            preflight(&ls, &others, TARGET, Some(&ours("a"))),
            Verdict::Apply {
                create_namespace: false
            }
        );
    }

    #[test]
    fn the_later_of_two_learner_spaces_of_a_learner_is_held_whatever_its_namespace() {
        let first = learner_space("a", "1", "2026-01-01T00:00:00Z");
        let later = learner_space("b", "2", "2026-01-02T00:00:00Z");
        let others = [first.clone(), later.clone()];
        for namespace in [None, Some(ours("a")), Some(namespace(json!({}), true))] {
            let verdict = preflight(&later, &others, TARGET, namespace.as_ref());
            assert_eq!(
                held_for(&verdict),
                ("DuplicateLearner", Phase::Failed, DUPLICATE_RECHECK, None)
            );
            let Verdict::Hold { report, .. } = verdict else {
                unreachable!()
            };
            assert!(report.message.contains("LearnerSpace a"), "{report:?}");
        }
        assert_eq!(
            preflight(&first, &others, TARGET, Some(&ours("a"))),
            Verdict::Apply {
                create_namespace: false
            },
            "the first keeps its learner"
        );
    }

    #[test]
    fn a_deleted_first_learner_space_no_longer_holds_the_later() {
        let mut first = (*learner_space("a", "1", "2026-01-01T00:00:00Z")).clone();
        first.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-03T00:00:00Z".parse().unwrap(),
            ));
        let later = learner_space("b", "2", "2026-01-02T00:00:00Z");
        let others = [Arc::new(first), later.clone()];
        assert_eq!(
            preflight(&later, &others, TARGET, None),
            Verdict::Apply {
                create_namespace: true
            }
        );
    }

    #[test]
    fn a_terminating_namespace_is_waited_for_even_when_ours() {
        let ls = learner_space("a", "1", "2026-01-01T00:00:00Z");
        let terminating = namespace(
            json!({"app.kubernetes.io/managed-by": "devenv-manager", "aivo.dev/learnerspace": "a"}),
            true,
        );
        assert_eq!(
            held_for(&preflight(&ls, &[], TARGET, Some(&terminating))),
            (
                "NamespaceTerminating",
                Phase::Pending,
                TERMINATING_RECHECK,
                Some(TARGET)
            )
        );
        let squatted_and_terminating = namespace(json!({"team": "x"}), true);
        assert_eq!(
            held_for(&preflight(
                &ls,
                &[],
                TARGET,
                Some(&squatted_and_terminating)
            ))
            .0,
            "NamespaceTerminating"
        );
    }

    #[test]
    fn a_namespace_that_is_not_this_learner_spaces_is_not_adopted() {
        let ls = learner_space("a", "1", "2026-01-01T00:00:00Z");
        let squatted = namespace(
            json!({"aivo.dev/learnerspace": "a", "team": "squat"}),
            false,
        );
        let another_ones = ours("someone-else");
        for taken in [squatted, another_ones] {
            let verdict = preflight(&ls, &[], TARGET, Some(&taken));
            assert_eq!(
                held_for(&verdict),
                ("NamespaceTaken", Phase::Failed, DUPLICATE_RECHECK, None),
                "not claimed"
            );
        }
    }
}
