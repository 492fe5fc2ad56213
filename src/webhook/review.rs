//! AdmissionReview v1 in, AdmissionReview v1 out. Parses the body, calls the
//! pure decisions, and builds the response that echoes the request's uid.

use kube::core::admission::AdmissionResponse;
use kube::core::{DynamicObject, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::learnerspaces;
use super::pod_view::PodView;
use super::pods::{PodDecision, PodPolicy};
use super::{ReviewError, denial_message};
use crate::config::{Config, OperatorConfig};
use crate::k8s::{AdmissionRequest, AdmissionReview, Operation};

const API_VERSION: &str = "admission.k8s.io/v1";

/// Both webhooks, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Webhook {
    pods: PodPolicy,
    operator: OperatorConfig,
}

/// A decided review: the response to send and what to log about it.
#[derive(Debug)]
pub struct Outcome {
    pub response: AdmissionResponse,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        self.response.allowed
    }

    /// The JSON body of the AdmissionReview answer. Serialized here rather
    /// than through kube's `AdmissionResponse`, which writes the patch as an
    /// array of numbers: the API server also reads that, but base64 (Go's
    /// `[]byte` encoding) is what it documents and a quarter of the size.
    pub fn to_json(&self) -> Vec<u8> {
        use base64::Engine;
        let r = &self.response;
        let patch = r
            .patch
            .as_ref()
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        let review = WireReview {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: WireResponse {
                uid: &r.uid,
                allowed: r.allowed,
                status: (!r.allowed).then_some(&r.result),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: r.warnings.as_deref(),
            },
        };
        // Strings, booleans and a Status always serialize.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

impl Webhook {
    pub fn new(config: &Config) -> Self {
        Webhook {
            pods: PodPolicy::new(&config.devenv),
            operator: config.operator.clone(),
        }
    }

    pub fn pod_policy(&self) -> &PodPolicy {
        &self.pods
    }

    pub fn operator_config(&self) -> &OperatorConfig {
        &self.operator
    }

    /// `POST /mutate/pods`.
    pub fn mutate_pods(&self, body: &[u8]) -> Result<Outcome, ReviewError> {
        let request = match parse::<PodView>(body)? {
            Parsed::Request(request) => *request,
            Parsed::Undecodable(outcome) => return Ok(*outcome),
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| {
                request
                    .object
                    .as_ref()
                    .and_then(|p| p.metadata.namespace.clone())
            })
            .unwrap_or_default();
        let mut response = AdmissionResponse::from(&request);
        if let (Some(pod), Operation::Create | Operation::Update) =
            (&request.object, &request.operation)
        {
            match self.pods.decide(
                &request.operation,
                &namespace,
                pod,
                request.old_object.as_ref(),
            ) {
                PodDecision::NotDevenv => {}
                PodDecision::Allow { patch, .. } if patch.is_empty() => {}
                PodDecision::Allow { patch, .. } => {
                    response = response
                        .with_patch(json_patch::Patch(patch))
                        .map_err(|e| ReviewError::Malformed(e.to_string()))?;
                }
                PodDecision::Deny { errors, .. } => {
                    response = response.deny(denial_message(&errors))
                }
            }
        }
        Ok(outcome(&request, namespace, response))
    }

    /// `POST /validate/learnerspaces`.
    pub fn validate_learnerspaces(&self, body: &[u8]) -> Result<Outcome, ReviewError> {
        let request = match parse::<DynamicObject>(body)? {
            Parsed::Request(request) => *request,
            Parsed::Undecodable(outcome) => return Ok(*outcome),
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let mut response = AdmissionResponse::from(&request);
        if let (Some(object), Operation::Create | Operation::Update) =
            (&request.object, &request.operation)
        {
            let old = request.old_object.as_ref().map(|o| &o.data);
            let verdict = learnerspaces::validate(&self.operator, &object.data, old);
            if !verdict.warnings.is_empty() {
                response.warnings = Some(verdict.warnings.clone());
            }
            if !verdict.is_valid() {
                response = response.deny(denial_message(&verdict.errors));
            }
        }
        Ok(outcome(&request, namespace, response))
    }
}

fn outcome<K: Resource>(
    request: &AdmissionRequest<K>,
    namespace: String,
    response: AdmissionResponse,
) -> Outcome {
    Outcome {
        response,
        kind: request.kind.kind.clone(),
        namespace,
        name: request.name.clone(),
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a kube::core::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

enum Parsed<K: Resource> {
    Request(Box<AdmissionRequest<K>>),
    /// A well-formed review whose object is not a `K`: denied, with its uid.
    Undecodable(Box<Outcome>),
}

/// Typed decode first (the fast path); only when it fails is the body read
/// again as plain JSON, to tell a bad review (HTTP 400) from a good review of
/// a bad object (HTTP 200, denied).
fn parse<K: Resource + DeserializeOwned>(body: &[u8]) -> Result<Parsed<K>, ReviewError> {
    match serde_json::from_slice::<AdmissionReview<K>>(body) {
        Ok(review) => {
            check_type(&review.types.api_version, &review.types.kind)?;
            let mut request = review.request.ok_or(ReviewError::MissingRequest)?;
            if request.uid.is_empty() {
                return Err(ReviewError::MissingUid);
            }
            request.types = review.types;
            Ok(Parsed::Request(Box::new(request)))
        }
        Err(typed_error) => {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
            let text =
                |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
            check_type(&text(value.get("apiVersion")), &text(value.get("kind")))?;
            let request = value
                .get("request")
                .filter(|r| r.is_object())
                .ok_or(ReviewError::MissingRequest)?;
            let uid = text(request.get("uid"));
            if uid.is_empty() {
                return Err(ReviewError::MissingUid);
            }
            // The envelope is fine; decode it again without the objects to
            // learn which part was malformed.
            let mut bare = request.clone();
            if let Some(map) = bare.as_object_mut() {
                map.remove("object");
                map.remove("oldObject");
            }
            if let Err(e) = serde_json::from_value::<AdmissionRequest<DynamicObject>>(bare) {
                return Err(ReviewError::Malformed(format!("request: {e}")));
            }
            let mut response = AdmissionResponse::invalid(format!("object: {typed_error}"));
            response.uid = uid;
            Ok(Parsed::Undecodable(Box::new(Outcome {
                response,
                kind: text(request.get("kind").and_then(|k| k.get("kind"))),
                namespace: text(request.get("namespace")),
                name: text(request.get("name")),
            })))
        }
    }
}

fn check_type(api_version: &str, kind: &str) -> Result<(), ReviewError> {
    if api_version != API_VERSION {
        return Err(ReviewError::UnsupportedVersion(api_version.to_string()));
    }
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(kind.to_string()));
    }
    Ok(())
}
