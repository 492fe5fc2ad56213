//! The operator's errors, with a bounded category for metrics and Events.

use super::objects::BuildError;
use crate::k8s::ApiErrorExt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no name")]
    Unnamed,
    #[error("cannot serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A small fixed set of values, safe as a metric label or Event reason.
    /// An error the finalizer wrapper passes on has the category of its
    /// cause: `FinalizerError` is only the finalizer's own failures.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "FinalizerError",
            },
            Error::Kube(e) if e.is_conflict() => "Conflict",
            Error::Kube(e) if e.api_code() == Some(403) => "Forbidden",
            Error::Kube(_) => "ApiError",
            Error::Build(_) => "InvalidSpec",
            Error::Unnamed => "InvalidObject",
            Error::Serialize(_) => "InvalidObject",
        }
    }

    /// Errors that retrying may cure (the API server was busy or away).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(e) => match e.api_code() {
                Some(code) => code >= 500 || code == 429 || e.is_conflict(),
                // It never reached the API server: connection, timeout.
                None => true,
            },
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_transient(),
                _ => true,
            },
            Error::Build(_) | Error::Unnamed | Error::Serialize(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer;

    fn api(code: u16) -> Error {
        let mut status = kube::core::Status::failure("refused", "Forbidden");
        status.code = code;
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn a_wrapped_error_keeps_its_category() {
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(api(403))));
        assert_eq!(wrapped.category(), "Forbidden");
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(api(409))));
        assert_eq!(wrapped.category(), "Conflict");
        let own = Error::Finalizer(Box::new(finalizer::Error::UnnamedObject));
        assert_eq!(own.category(), "FinalizerError");
    }
}
