//! AdmissionReview v1 in, AdmissionReview v1 out. Parses the body once,
//! calls the pure decisions, and builds the response that echoes the
//! request's uid.
//!
//! The envelope is read with the objects left as raw JSON slices of the body
//! (no copy, no `serde_json::Value`), then each object is decoded straight
//! into the type the decision needs. kube's `AdmissionReview<K>` is not used
//! for reading: its `#[serde(flatten)]` type meta makes serde buffer the
//! whole review as a generic tree first, several times the body's size.

use kube::core::Status;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::learnerspaces;
use super::pod_view::PodView;
use super::pods::{PodDecision, PodPolicy};
use super::{ReviewError, denial_message};
use crate::config::{Config, OperatorConfig};
use crate::k8s::{DynamicObject, Operation};

const API_VERSION: &str = "admission.k8s.io/v1";

/// Both webhooks, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Webhook {
    pods: PodPolicy,
    operator: OperatorConfig,
}

/// The answer to one review, as the API server reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// Why, when denied.
    pub result: Status,
    /// RFC 6902 JSON Patch, serialized.
    pub patch: Option<Vec<u8>>,
    pub warnings: Option<Vec<String>>,
}

impl Response {
    fn allow(uid: &str) -> Self {
        Response {
            uid: uid.to_string(),
            allowed: true,
            result: Status::default(),
            patch: None,
            warnings: None,
        }
    }

    fn deny(mut self, message: String) -> Self {
        self.allowed = false;
        self.result.message = message;
        self.patch = None;
        self
    }
}

/// A decided review: the response to send and what to log about it.
#[derive(Debug)]
pub struct Outcome {
    pub response: Response,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        self.response.allowed
    }

    /// The JSON body of the AdmissionReview answer. The patch is base64
    /// (Go's `[]byte` encoding), which is what the API server documents.
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
        let request = &Envelope::parse(body)?;
        let (object, old) = match request.objects::<PodView>()? {
            Decoded::Objects(object, old) => (object, old),
            Decoded::Passed => return Ok(request.outcome(Response::allow(&request.uid), "")),
            Decoded::Undecodable(reason) => {
                return Ok(request.outcome(invalid(request, reason), ""));
            }
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| object.metadata.namespace.clone())
            .unwrap_or_default();
        let mut response = Response::allow(&request.uid);
        match self
            .pods
            .decide(&request.operation, &namespace, &object, old.as_deref())
        {
            PodDecision::NotDevenv => {}
            PodDecision::Allow { patch, .. } if patch.is_empty() => {}
            PodDecision::Allow { patch, .. } => {
                let patch = serde_json::to_vec(&json_patch::Patch(patch))
                    .map_err(|e| ReviewError::Malformed(e.to_string()))?;
                response.patch = Some(patch);
            }
            PodDecision::Deny { errors, .. } => response = response.deny(denial_message(&errors)),
        }
        Ok(request.outcome(response, &namespace))
    }

    /// `POST /validate/learnerspaces`.
    pub fn validate_learnerspaces(&self, body: &[u8]) -> Result<Outcome, ReviewError> {
        let request = &Envelope::parse(body)?;
        let (object, old) = match request.objects::<DynamicObject>()? {
            Decoded::Objects(object, old) => (object, old),
            Decoded::Passed => return Ok(request.outcome(Response::allow(&request.uid), "")),
            Decoded::Undecodable(reason) => {
                return Ok(request.outcome(invalid(request, reason), ""));
            }
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let mut response = Response::allow(&request.uid);
        let verdict =
            learnerspaces::validate(&self.operator, &object.data, old.as_ref().map(|o| &o.data));
        if !verdict.warnings.is_empty() {
            response.warnings = Some(verdict.warnings.clone());
        }
        if !verdict.is_valid() {
            response = response.deny(denial_message(&verdict.errors));
        }
        Ok(request.outcome(response, &namespace))
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

/// The review as sent, with its objects still raw JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
}

/// The fields of `request` the webhooks use; the rest (userInfo, options,
/// ...) is skipped without being built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: Option<crate::k8s::GroupVersionKind>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    operation: Operation,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
}

/// What a request's objects decoded to.
enum Decoded<K> {
    /// The object, and on UPDATE the old one.
    Objects(Box<K>, Option<Box<K>>),
    /// An operation the webhooks do not decide on (DELETE, CONNECT): allowed.
    Passed,
    /// A JSON object that is not a `K`: denied, with the request's uid and
    /// this reason.
    Undecodable(String),
}

impl<'a> Envelope<'a> {
    /// The one parse of the body; a review that is not a well-formed
    /// `admission.k8s.io/v1` request is a [`ReviewError`] (HTTP 400).
    fn parse(body: &'a [u8]) -> Result<Request<'a>, ReviewError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            // Valid JSON or not, it is not an object: a derived struct
            // would otherwise read a JSON array field by field.
            return Err(ReviewError::NotAnAdmissionReview);
        }
        let envelope: Envelope<'a> = serde_json::from_slice(body).map_err(|e| {
            // serde_json reports some type errors (an enum given a number) as
            // syntax errors; only on this error path, a scan that builds
            // nothing tells a malformed review from a body that is not JSON.
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ReviewError::Malformed(e.to_string()),
                Err(_) => ReviewError::NotJson(e.to_string()),
            }
        })?;
        check_type(&envelope.api_version, &envelope.kind)?;
        let request = envelope.request.ok_or(ReviewError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(ReviewError::MissingUid);
        }
        Ok(request)
    }
}

impl Request<'_> {
    /// Decodes `object` (and on UPDATE `oldObject`). On CREATE and UPDATE a
    /// missing, `null` or non-object one is a [`ReviewError::MissingObject`]:
    /// malformed input fails closed, never `allowed: true`.
    fn objects<K: DeserializeOwned>(&self) -> Result<Decoded<K>, ReviewError> {
        let update = match self.operation {
            Operation::Create => false,
            Operation::Update => true,
            _ => return Ok(Decoded::Passed),
        };
        let object = required("request.object", self.object)?;
        let old = if update {
            Some(required("request.oldObject", self.old_object)?)
        } else {
            None
        };
        let decode = |field: &str, raw: &RawValue| {
            serde_json::from_str::<K>(raw.get())
                .map(Box::new)
                .map_err(|e| format!("{field}: {e}"))
        };
        let decoded = decode("object", object).and_then(|object| {
            let old = old.map(|raw| decode("oldObject", raw)).transpose()?;
            Ok((object, old))
        });
        Ok(match decoded {
            Ok((object, old)) => Decoded::Objects(object, old),
            Err(reason) => Decoded::Undecodable(reason),
        })
    }

    fn outcome(&self, response: Response, namespace: &str) -> Outcome {
        Outcome {
            response,
            kind: self
                .kind
                .as_ref()
                .map(|k| k.kind.clone())
                .unwrap_or_default(),
            namespace: if namespace.is_empty() {
                self.namespace.clone().unwrap_or_default()
            } else {
                namespace.to_string()
            },
            name: self.name.clone(),
        }
    }
}

/// The answer to a review whose object could not be read: denied.
fn invalid(request: &Request<'_>, reason: String) -> Response {
    let mut response = Response::allow(&request.uid);
    response.allowed = false;
    response.result = Status::failure(&reason, "InvalidRequest");
    response
}

fn required<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<&'a RawValue, ReviewError> {
    match raw {
        Some(raw) if is_json_object(raw) => Ok(raw),
        Some(_) => Err(ReviewError::NotAnObject(field)),
        None => Err(ReviewError::MissingObject(field)),
    }
}

fn is_json_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
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
