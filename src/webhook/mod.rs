//! The admission webhook: `POST /mutate/pods` and `POST /validate/learnerspaces`.
//!
//! [`pods`] and [`learnerspaces`] decide; [`review`] turns AdmissionReview
//! bytes into a decision and back; [`routes`] is the HTTP edge; [`offline`]
//! runs the same decisions on manifests for `devenv-manager admit`.

pub mod learnerspaces;
pub mod metrics;
pub mod offline;
pub mod pod_view;
pub mod pods;
pub mod registration;
pub mod review;
pub mod routes;
pub mod unregister;

use std::fmt;

pub use review::{Outcome, Webhook};

/// Largest AdmissionReview accepted (the API server's own request limit is
/// 3 MiB, so nothing legitimate is larger).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

pub const MUTATE_PODS_PATH: &str = "/mutate/pods";
pub const VALIDATE_LEARNERSPACES_PATH: &str = "/validate/learnerspaces";

/// One broken rule, as `field.path: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every error in one denial message, in the order found.
pub fn denial_message(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a request is not a usable AdmissionReview: answered with HTTP 400 (or
/// 503 when the server is out of room for bodies) and this one-line reason,
/// which the API server logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not an AdmissionReview: expected a JSON object")]
    NotAnAdmissionReview,
    #[error("unsupported AdmissionReview version {0:?}; only admission.k8s.io/v1 is served")]
    UnsupportedVersion(String),
    #[error("kind is {0:?}, expected AdmissionReview")]
    WrongKind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("request.uid is missing")]
    MissingUid,
    #[error("AdmissionReview is malformed: {0}")]
    Malformed(String),
    #[error("{0} is missing or null")]
    MissingObject(&'static str),
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error("body exceeds {MAX_REVIEW_BYTES} bytes")]
    TooLarge,
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("cannot read body: {0}")]
    Body(String),
    #[error("too many request bodies in flight: {0}; retry shortly")]
    Busy(crate::server::Exhausted),
}

impl ReviewError {
    /// 503 for a server out of room (the client may retry), 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ReviewError::Busy(_) => 503,
            _ => 400,
        }
    }

    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ReviewError::NotJson(_) | ReviewError::NotAnAdmissionReview => "not-json",
            ReviewError::UnsupportedVersion(_) | ReviewError::WrongKind(_) => "wrong-type",
            ReviewError::MissingRequest | ReviewError::MissingUid | ReviewError::Malformed(_) => {
                "malformed"
            }
            ReviewError::MissingObject(_) | ReviewError::NotAnObject(_) => "bad-object",
            ReviewError::TooLarge => "too-large",
            ReviewError::BodyTimeout => "body-timeout",
            ReviewError::Body(_) => "body-error",
            ReviewError::Busy(_) => "busy",
        }
    }
}
