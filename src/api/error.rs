//! The pod API's one error type and the one place it becomes an HTTP answer:
//! `{"error": {"code": N, "reason": "...", "message": "..."}}`, with the
//! Kubernetes `Status` reason names.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};

use super::rate_limit::retry_after_seconds;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send 'Authorization: Bearer <service-account token>'")]
    MissingToken,
    #[error("{0}")]
    BadAuthorization(String),
    #[error("the token was rejected: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotADeveloper(String),
    #[error("too many failed authentications from this address; retry in {} s", retry_after_seconds(*.0))]
    TooManyFailedAuthentications(Duration),
    #[error("too many requests; retry in {} s", retry_after_seconds(*.0))]
    RateLimited(Duration),
    /// A missing pod and another developer's pod: the same answer, so that
    /// nobody learns which pods exist.
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method {method} not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// The Kubernetes API server cannot be reached (or has not been yet, or
    /// the pod cache is not in sync with it).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(inline)]
pub struct ErrorDetail {
    #[schemars(example = 404)]
    pub code: u16,
    /// The Kubernetes Status reason for the code.
    pub reason: Reason,
    #[schemars(example = &"pod devenv/ws-0 not found")]
    pub message: String,
}

/// `ErrorDetail::reason`.
// No doc comments on the variants: they would make the schema a `oneOf`
// instead of an OpenAPI 3.0 `enum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(inline)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooManyRequests,
    ServiceUnavailable,
    InternalError,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken
            | ApiError::BadAuthorization(_)
            | ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotADeveloper(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyFailedAuthentications(_) | ApiError::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::PodNotFound { .. } | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Kubernetes `Status.reason` for the code.
    pub fn reason(&self) -> Reason {
        match self.status() {
            StatusCode::UNAUTHORIZED => Reason::Unauthorized,
            StatusCode::FORBIDDEN => Reason::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => Reason::TooManyRequests,
            StatusCode::NOT_FOUND => Reason::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Reason::MethodNotAllowed,
            StatusCode::BAD_REQUEST => Reason::BadRequest,
            StatusCode::CONFLICT => Reason::Conflict,
            StatusCode::SERVICE_UNAVAILABLE => Reason::ServiceUnavailable,
            _ => Reason::InternalError,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyFailedAuthentications(wait) | ApiError::RateLimited(wait) => {
                Some(retry_after_seconds(*wait))
            }
            // The pod cache and the API server connection recover by themselves.
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        }
    }

    /// The one mapping from error to HTTP response.
    pub fn into_response(self) -> warp::reply::Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                reason: self.reason(),
                message: self.to_string(),
            },
        };
        let mut response = super::json_response(status, &body);
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::MissingToken
            | ApiError::BadAuthorization(_)
            | ApiError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"devenv-manager\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: warp::reply::Response) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_error_maps_to_its_code_reason_and_json_shape() {
        let wait = Duration::from_millis(1500);
        let cases = [
            (ApiError::MissingToken, 401, "Unauthorized"),
            (ApiError::BadAuthorization("x".into()), 401, "Unauthorized"),
            (ApiError::Unauthenticated("x".into()), 401, "Unauthorized"),
            (ApiError::NotADeveloper("x".into()), 403, "Forbidden"),
            (
                ApiError::TooManyFailedAuthentications(wait),
                429,
                "TooManyRequests",
            ),
            (ApiError::RateLimited(wait), 429, "TooManyRequests"),
            (
                ApiError::PodNotFound {
                    namespace: "devenv".into(),
                    name: "p".into(),
                },
                404,
                "NotFound",
            ),
            (ApiError::RouteNotFound("/x".into()), 404, "NotFound"),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    allow: "GET",
                },
                405,
                "MethodNotAllowed",
            ),
            (ApiError::BadRequest("x".into()), 400, "BadRequest"),
            (ApiError::Conflict("x".into()), 409, "Conflict"),
            (ApiError::Unavailable("x".into()), 503, "ServiceUnavailable"),
            (ApiError::Internal("x".into()), 500, "InternalError"),
        ];
        for (error, code, reason) in cases {
            let message = error.to_string();
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), code, "{message}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{message}"
            );
            let body = body_of(response).await;
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(body["error"]["reason"], reason, "{body}");
            assert_eq!(body["error"]["message"], message.as_str(), "{body}");
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        }
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let response = ApiError::RateLimited(Duration::from_millis(1500)).into_response();
        assert_eq!(response.headers()["retry-after"], "2");
        let response =
            ApiError::TooManyFailedAuthentications(Duration::from_secs(30)).into_response();
        assert_eq!(response.headers()["retry-after"], "30");
        let response = ApiError::Unavailable("down".into()).into_response();
        assert!(response.headers().contains_key("retry-after"));
        let response = ApiError::NotADeveloper("x".into()).into_response();
        assert!(!response.headers().contains_key("retry-after"));
    }

    #[test]
    fn auth_failures_challenge_and_405_lists_methods() {
        let response = ApiError::MissingToken.into_response();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"devenv-manager\""
        );
        let response = ApiError::MethodNotAllowed {
            method: "POST".into(),
            allow: "GET, DELETE",
        }
        .into_response();
        assert_eq!(response.headers()["allow"], "GET, DELETE");
    }

    #[test]
    fn pod_not_found_does_not_say_whose_it_is() {
        let message = ApiError::PodNotFound {
            namespace: "devenv".into(),
            name: "bobs-pod".into(),
        }
        .to_string();
        assert_eq!(message, "pod devenv/bobs-pod not found");
    }
}
