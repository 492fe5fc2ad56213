//! The admission webhook: `POST /mutate/pods` and `POST /validate/learnerspaces`.
//!
//! [`pods`] and [`learnerspaces`] decide; [`review`] turns AdmissionReview
//! bytes into a decision and back; [`routes`] is the HTTP edge; [`offline`]
//! runs the same decisions on manifests for `devenv-manager admit`.

pub mod learnerspaces;
pub mod offline;
pub mod pod_view;
pub mod pods;
pub mod registration;
pub mod review;
pub mod routes;

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

/// Why a request is not a usable AdmissionReview: answered with HTTP 400 and
/// this one-line reason (the API server logs it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
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
    #[error("body exceeds {MAX_REVIEW_BYTES} bytes")]
    TooLarge,
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("cannot read body: {0}")]
    Body(String),
}
