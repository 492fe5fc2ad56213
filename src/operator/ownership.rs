//! Whose a learner namespace is. The operator adopts nothing: a namespace
//! that exists without the labels it puts on the namespaces it creates was
//! made by someone else (a name can be computed in advance, so it can be
//! squatted), and using it would keep whatever that someone put in it (a
//! RoleBinding, an allow-all NetworkPolicy). Pure: a namespace in, a verdict
//! and the words for it out.

use k8s_openapi::api::core::v1::Namespace;

use super::objects::{LEARNERSPACE_LABEL, MANAGED_BY_LABEL, MANAGER};

/// Whether `namespace` is the one the operator made for LearnerSpace `name`:
/// it carries both the manager's label and this LearnerSpace's.
pub fn owned_by(namespace: &Namespace, name: &str) -> bool {
    let label = |key: &str| {
        namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    };
    label(MANAGED_BY_LABEL) == Some(MANAGER) && label(LEARNERSPACE_LABEL) == Some(name)
}

/// Why `namespace` (named `target`) is not LearnerSpace `name`'s, and what
/// to do about it: the status message and Event note of `NamespaceTaken`.
pub fn taken_message(target: &str, namespace: &Namespace, name: &str) -> String {
    let labels = namespace.metadata.labels.as_ref();
    let managed = labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGER);
    match labels.and_then(|l| l.get(LEARNERSPACE_LABEL)) {
        Some(owner) if managed && owner != name => format!(
            "namespace {target} belongs to LearnerSpace {owner:?}; nothing was written into it. \
             Delete that LearnerSpace (its namespace goes with it), then this one proceeds"
        ),
        _ => format!(
            "namespace {target} already exists and was not created by devenv-manager for this \
             LearnerSpace (it lacks the labels {MANAGED_BY_LABEL}={MANAGER} and \
             {LEARNERSPACE_LABEL}={name}), so it is not adopted and nothing was written into it. \
             Find out who created it; once it is deleted (kubectl delete namespace {target}), \
             this LearnerSpace creates its own"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn namespace(labels: serde_json::Value) -> Namespace {
        serde_json::from_value(
            json!({"metadata": {"name": "aivo-learner-x-12345678", "labels": labels}}),
        )
        .unwrap()
    }

    #[test]
    fn only_both_labels_make_a_namespace_ours() {
        let ours =
            json!({"app.kubernetes.io/managed-by": "devenv-manager", "aivo.dev/learnerspace": "x"});
        assert!(owned_by(&namespace(ours), "x"));
        for labels in [
            json!(null),
            json!({}),
            // A squatter's: nothing of ours, or only one of the two labels.
            json!({"team": "squat"}),
            json!({"aivo.dev/learnerspace": "x"}),
            json!({"app.kubernetes.io/managed-by": "devenv-manager"}),
            json!({"app.kubernetes.io/managed-by": "helm", "aivo.dev/learnerspace": "x"}),
            // Another LearnerSpace's.
            json!({"app.kubernetes.io/managed-by": "devenv-manager", "aivo.dev/learnerspace": "y"}),
        ] {
            assert!(!owned_by(&namespace(labels.clone()), "x"), "{labels}");
        }
    }

    #[test]
    fn the_message_says_whose_it_is_and_what_to_do() {
        let squatted = taken_message(
            "aivo-learner-x-1",
            &namespace(json!({"team": "squat"})),
            "x",
        );
        assert!(
            squatted.contains("not adopted")
                && squatted.contains("nothing was written into it")
                && squatted.contains("kubectl delete namespace aivo-learner-x-1")
                && squatted.contains("aivo.dev/learnerspace=x"),
            "{squatted}"
        );
        let other = namespace(
            json!({"app.kubernetes.io/managed-by": "devenv-manager", "aivo.dev/learnerspace": "y"}),
        );
        let message = taken_message("aivo-learner-x-1", &other, "x");
        assert!(
            message.contains("belongs to LearnerSpace \"y\"")
                && message.contains("Delete that LearnerSpace"),
            "{message}"
        );
    }
}
