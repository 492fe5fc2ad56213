//! The parts of a pod the webhook decides on, and nothing else.
//!
//! Deserializing a whole `k8s_openapi` Pod from a 5 KB review costs about
//! 24 µs, most of the budget of a review; this view reads only the fields
//! below and skips the rest (probes, resources, affinity...), which is several
//! times cheaper. Its field names are the Pod's, so any pod's JSON reads as a
//! `PodView`, and it implements `kube::Resource` so kube's admission types
//! carry it.

use std::borrow::Cow;

use serde::Deserialize;

use crate::k8s::ObjectMeta;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpecView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    pub service_account_name: Option<String>,
    pub volumes: Option<Vec<VolumeView>>,
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    pub init_containers: Option<Vec<ContainerView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    #[serde(default)]
    pub name: String,
    pub projected: Option<ProjectedView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProjectedView {
    pub sources: Option<Vec<ProjectionView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionView {
    pub service_account_token: Option<TokenProjectionView>,
    pub config_map: Option<ConfigMapProjectionView>,
    /// Every other kind of source (`secret`, `downwardAPI`,
    /// `clusterTrustBundle`, kinds added later...): the webhook only needs to
    /// know that one is there.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ProjectionView {
    /// Whether the source has a kind other than a token or a config map.
    pub fn has_other(&self) -> bool {
        self.other.values().any(|v| !v.is_null())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenProjectionView {
    #[serde(default)]
    pub path: String,
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigMapProjectionView {
    #[serde(default)]
    pub name: String,
    pub items: Option<Vec<KeyToPathView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyToPathView {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NamedView {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    #[serde(default)]
    pub name: String,
    pub env: Option<Vec<NamedView>>,
    pub volume_mounts: Option<Vec<MountView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mount_path: String,
}

// kube's admission types need a `Resource`; a PodView is a Pod as far as the
// API is concerned. It is only ever read, never written back, so it need not
// serialize every field of a pod.
impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl serde::Serialize for PodView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // Only metadata: AdmissionReview<K> must be Serialize, and the view is
        // never sent anywhere.
        let mut s = serializer.serialize_struct("Pod", 1)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.end()
    }
}
