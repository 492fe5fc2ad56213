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
