//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration that
//! register the webhook with the API server (`devenv-manager webhook-config`).
//!
//! Production settings, and why:
//! - `namespaceSelector` matches only `devenv.namespaces` (pods) and
//!   `operator.namespace` (LearnerSpaces), so `kube-system` and the manager's
//!   own namespace are never sent to it;
//! - CEL `matchConditions` send only pods whose service account (or, on
//!   UPDATE, whose old object's service account or `developer` label) concerns
//!   devenv. An outage of devenv-manager therefore never blocks anyone else's
//!   pods, while devenv pods fail closed;
//! - `failurePolicy: Fail` on both: a devenv pod admitted without the webhook
//!   would escape the label rules, and a LearnerSpace admitted without it
//!   would escape the quota maximums. Both are narrow thanks to the selectors;
//! - `sideEffects: None`, `admissionReviewVersions: [v1]`, `timeoutSeconds: 5`
//!   (answers take microseconds; a hung manager costs a developer 5 s, not 10),
//!   `reinvocationPolicy: IfNeeded` so that pods other mutating webhooks
//!   changed (new containers) are injected too.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::pods::DEVELOPER_LABEL;
use super::{MUTATE_PODS_PATH, VALIDATE_LEARNERSPACES_PATH};
use crate::config::Config;
use crate::k8s::ObjectMeta;

pub const CONFIGURATION_NAME: &str = "devenv-manager";
pub const POD_WEBHOOK_NAME: &str = "pods.devenv-manager.devenv.io";
pub const LEARNERSPACE_WEBHOOK_NAME: &str = "learnerspaces.devenv-manager.aivo.dev";
const TIMEOUT_SECONDS: i32 = 5;

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// In cluster: a Service (port 443 forwards to the webhook's 8443).
    Service {
        name: String,
        namespace: String,
        port: i32,
    },
    /// Out of cluster or in tests: a base URL such as `https://127.0.0.1:8443`.
    Url(String),
}

/// Both configurations. `ca_bundle` is the PEM of the CA that signed the
/// serving certificate; `None` leaves it out (cert-manager's CA injector or
/// the caller fills it in).
pub fn configurations(
    config: &Config,
    endpoint: &Endpoint,
    ca_bundle: Option<&[u8]>,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let client = |path: &str| {
        let ca_bundle = ca_bundle.map(|ca| ByteString(ca.to_vec()));
        match endpoint {
            Endpoint::Service {
                name,
                namespace,
                port,
            } => WebhookClientConfig {
                ca_bundle,
                service: Some(ServiceReference {
                    name: name.clone(),
                    namespace: namespace.clone(),
                    path: Some(path.to_string()),
                    port: Some(*port),
                }),
                url: None,
            },
            Endpoint::Url(base) => WebhookClientConfig {
                ca_bundle,
                service: None,
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            },
        }
    };
    let metadata = ObjectMeta {
        name: Some(CONFIGURATION_NAME.to_string()),
        labels: Some(
            [(
                "app.kubernetes.io/name".to_string(),
                "devenv-manager".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };

    let mutating = MutatingWebhookConfiguration {
        metadata: metadata.clone(),
        webhooks: Some(vec![MutatingWebhook {
            name: POD_WEBHOOK_NAME.to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client(MUTATE_PODS_PATH),
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespaces_selector(&config.devenv.namespaces)),
            match_conditions: Some(vec![MatchCondition {
                name: "devenv-pods-only".to_string(),
                expression: pod_match_expression(&config.devenv.service_account_prefix),
            }]),
            reinvocation_policy: Some("IfNeeded".to_string()),
            rules: Some(vec![rule("", "v1", "pods")]),
            side_effects: "None".to_string(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            object_selector: None,
        }]),
    };

    let validating = ValidatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![ValidatingWebhook {
            name: LEARNERSPACE_WEBHOOK_NAME.to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client(VALIDATE_LEARNERSPACES_PATH),
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespaces_selector(std::slice::from_ref(
                &config.operator.namespace,
            ))),
            match_conditions: None,
            rules: Some(vec![rule(crate::crd::GROUP, "v1", "learnerspaces")]),
            side_effects: "None".to_string(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            object_selector: None,
        }]),
    };
    (mutating, validating)
}

fn rule(group: &str, version: &str, resource: &str) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec![version.to_string()]),
        operations: Some(vec!["CREATE".to_string(), "UPDATE".to_string()]),
        resources: Some(vec![resource.to_string()]),
        scope: Some("Namespaced".to_string()),
    }
}

fn namespaces_selector(namespaces: &[String]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(namespaces.to_vec()),
        }]),
        match_labels: None,
    }
}

/// CEL: the pod (or, on UPDATE, the pod before) runs as a `{prefix}*` service
/// account, or the old pod carried a `developer` label.
fn pod_match_expression(prefix: &str) -> String {
    let prefix = prefix.replace('\\', "\\\\").replace('\'', "\\'");
    format!(
        "(object != null && has(object.spec.serviceAccountName) && object.spec.serviceAccountName.startsWith('{prefix}')) || \
         (oldObject != null && ((has(oldObject.spec.serviceAccountName) && oldObject.spec.serviceAccountName.startsWith('{prefix}')) || \
         (has(oldObject.metadata.labels) && '{DEVELOPER_LABEL}' in oldObject.metadata.labels)))"
    )
}

/// Both configurations as one multi-document YAML stream.
pub fn to_yaml(
    mutating: &MutatingWebhookConfiguration,
    validating: &ValidatingWebhookConfiguration,
) -> Result<String, crate::yaml::YamlError> {
    Ok(format!(
        "{}---\n{}",
        crate::yaml::to_yaml(mutating)?,
        crate::yaml::to_yaml(validating)?
    ))
}
