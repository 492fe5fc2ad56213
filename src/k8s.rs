//! One facade for the Kubernetes client and API types, so the whole crate uses
//! the same kube and k8s-openapi versions through one path.

pub use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, EnvVar, KeyToPath, Pod, PodSpec, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
pub use kube::core::{DynamicObject, GroupVersionKind};
pub use kube::{Client, CustomResourceExt, Resource, ResourceExt};

/// What the API server answered, named once instead of its HTTP code being
/// matched by hand at every call.
pub trait ApiErrorExt {
    /// The HTTP status code of an API server refusal; `None` for an error
    /// that never reached it (connection, timeout, decoding).
    fn api_code(&self) -> Option<u16>;

    /// 404: the object is not there.
    fn is_not_found(&self) -> bool {
        self.api_code() == Some(404)
    }

    /// 409: another write came first (a stale resourceVersion, a name
    /// already taken, a field another manager owns).
    fn is_conflict(&self) -> bool {
        self.api_code() == Some(409)
    }
}

impl ApiErrorExt for kube::Error {
    fn api_code(&self) -> Option<u16> {
        match self {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> kube::Error {
        let mut status = kube::core::Status::failure("refused", "Refused");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_codes_are_named() {
        assert!(refused(404).is_not_found() && !refused(404).is_conflict());
        assert!(refused(409).is_conflict() && !refused(409).is_not_found());
        assert_eq!(refused(500).api_code(), Some(500));
        let local = kube::Error::LinesCodecMaxLineLengthExceeded;
        assert_eq!(local.api_code(), None);
        assert!(!local.is_not_found());
    }
}
