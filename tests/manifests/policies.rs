//! The admission policies of `deploy/admission-policy.yaml` name what the
//! configuration names.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::{Value, json};

use crate::{MANAGER_SA, deploy_config, object};

/// The admission policies hard-code what the configuration and the RBAC
/// name: they must say the same.
#[test]
fn the_admission_policies_name_what_the_configuration_names() {
    let (config, _) = deploy_config();
    let file = "deploy/admission-policy.yaml";
    let lane: ValidatingAdmissionPolicy =
        object(file, "ValidatingAdmissionPolicy", "devenv-manager-lane");
    let spec = lane.spec.unwrap();
    let variable = |name: &str| -> Value {
        let expression = &spec
            .variables
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("variable {name}"))
            .expression;
        // These variables are CEL string and list literals, which read as
        // JSON once their quotes are double quotes.
        serde_json::from_str(&expression.replace('\'', "\"")).unwrap()
    };
    assert_eq!(
        variable("operatorNamespace"),
        json!(config.operator.namespace)
    );
    assert_eq!(
        variable("devenvNamespaces"),
        json!(config.devenv.namespaces)
    );
    assert_eq!(variable("managerNamespace"), json!(config.certs.namespace));
    assert_eq!(
        variable("learnerPrefix"),
        json!(devenv_manager::names::LEARNER_NAMESPACE_PREFIX)
    );
    let conditions = spec.match_conditions.unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        conditions[0].expression,
        format!(
            "request.userInfo.username == 'system:serviceaccount:{}:{}'",
            MANAGER_SA.0, MANAGER_SA.1
        )
    );
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let binding: ValidatingAdmissionPolicyBinding = object(
        file,
        "ValidatingAdmissionPolicyBinding",
        "devenv-manager-lane",
    );
    let binding = binding.spec;
    assert_eq!(binding.policy_name, "devenv-manager-lane");
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(
        binding.match_resources.is_none(),
        "every write of the manager"
    );

    let labels: ValidatingAdmissionPolicy = object(
        file,
        "ValidatingAdmissionPolicy",
        "devenv-pod-developer-label",
    );
    let spec = labels.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let prefix = &config.devenv.service_account_prefix;
    assert!(
        spec.match_conditions.unwrap()[0]
            .expression
            .contains(&format!("startsWith('{prefix}')")),
        "the service-account prefix"
    );
    assert!(
        spec.validations.unwrap().iter().any(|v| v
            .expression
            .contains(&format!("'{prefix}' + variables.after"))),
        "the service-account prefix"
    );
    let resources = spec.match_constraints.unwrap().resource_rules.unwrap()[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(
        resources,
        ["pods", "pods/*"],
        "the pod and every subresource"
    );
    let binding: ValidatingAdmissionPolicyBinding = object(
        file,
        "ValidatingAdmissionPolicyBinding",
        "devenv-pod-developer-label",
    );
    assert_eq!(binding.spec.validation_actions, ["Deny"]);
    let selector = binding
        .spec
        .match_resources
        .unwrap()
        .namespace_selector
        .unwrap();
    let requirement = &selector.match_expressions.unwrap()[0];
    assert_eq!(requirement.key, "kubernetes.io/metadata.name");
    assert_eq!(requirement.operator, "In");
    assert_eq!(requirement.values.as_ref(), Some(&config.devenv.namespaces));
}
