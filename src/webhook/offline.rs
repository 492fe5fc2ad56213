//! `devenv-manager admit -f FILE`: the webhook's decisions, offline, on the
//! manifests of a repository (like `kyverno apply`). Pods are admitted as on
//! CREATE; workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
//! CronJob) have their pod template admitted in the workload's namespace.

use serde_json::Value;

use super::pod_view::PodView;
use super::pods::PodDecision;
use super::{FieldError, Webhook, learnerspaces};
use crate::k8s::Operation;

/// The verdict on one document of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// `Kind namespace/name`, for messages.
    pub subject: String,
    /// The object after mutation (unchanged when nothing applies).
    pub object: Value,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    /// Whether the webhook changed the object.
    pub mutated: bool,
}

impl Admitted {
    pub fn denied(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// Admits every document; `default_namespace` stands in for a missing
/// `metadata.namespace`, as `kubectl apply -n` would.
pub fn admit_all(
    webhook: &Webhook,
    documents: Vec<Value>,
    default_namespace: &str,
) -> Vec<Admitted> {
    documents
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|d| admit(webhook, d, default_namespace))
        .collect()
}

pub fn admit(webhook: &Webhook, mut object: Value, default_namespace: &str) -> Admitted {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let subject = format!("{kind} {namespace}/{name}");
    let mut admitted = Admitted {
        subject,
        object: Value::Null,
        errors: Vec::new(),
        warnings: Vec::new(),
        mutated: false,
    };

    if kind == "LearnerSpace" && api_version.starts_with("aivo.dev/") {
        let verdict = learnerspaces::validate(webhook.operator_config(), &object, None);
        admitted.errors = verdict.errors;
        admitted.warnings = verdict.warnings;
    } else if let Some(pointer) = template_pointer(&kind, api_version) {
        match object.pointer_mut(pointer) {
            Some(template) => admit_pod(webhook, template, &namespace, pointer, &mut admitted),
            None => admitted.errors.push(FieldError::new(
                pointer.trim_start_matches('/').replace('/', "."),
                "missing pod template",
            )),
        }
    } else {
        admitted.warnings.push(format!(
            "{kind} is neither a pod, a workload nor a LearnerSpace; passed through"
        ));
    }
    admitted.object = object;
    admitted
}

/// Where the pod (template) sits in each kind the API server would create pods for.
fn template_pointer(kind: &str, api_version: &str) -> Option<&'static str> {
    match (kind, api_version) {
        ("Pod", "v1") => Some(""),
        ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet", "apps/v1") => {
            Some("/spec/template")
        }
        ("Job", "batch/v1") => Some("/spec/template"),
        ("CronJob", "batch/v1") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn admit_pod(
    webhook: &Webhook,
    template: &mut Value,
    namespace: &str,
    at: &str,
    admitted: &mut Admitted,
) {
    let field_prefix = at.trim_start_matches('/').replace('/', ".");
    let pod: PodView = match serde_json::from_value(template.clone()) {
        Ok(pod) => pod,
        Err(e) => {
            let field = if field_prefix.is_empty() {
                "object".to_string()
            } else {
                field_prefix
            };
            admitted
                .errors
                .push(FieldError::new(field, format!("not a valid pod: {e}")));
            return;
        }
    };
    match webhook
        .pod_policy()
        .decide(&Operation::Create, namespace, &pod, None)
    {
        PodDecision::NotDevenv => {}
        PodDecision::Allow { patch, .. } => {
            if patch.is_empty() {
                return;
            }
            // Pod templates may omit `metadata`; a stored pod never does.
            if let Some(map) = template.as_object_mut() {
                map.entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
            }
            if let Err(e) = json_patch::patch(template, &patch) {
                admitted.errors.push(FieldError::new(
                    field_prefix,
                    format!("patch does not apply: {e}"),
                ));
                return;
            }
            admitted.mutated = true;
        }
        PodDecision::Deny { errors, .. } => {
            admitted.errors = errors
                .into_iter()
                .map(|e| {
                    let field = if field_prefix.is_empty() {
                        e.field
                    } else {
                        format!("{field_prefix}.{}", e.field)
                    };
                    FieldError::new(field, e.reason)
                })
                .collect();
        }
    }
}
