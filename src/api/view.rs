//! What the pod API shows of a pod: a summary with the fields a developer
//! looks at (as `kubectl get pods -o wide` does), not the whole object; the
//! `devenv` CLI reads the same types, and the OpenAPI document's schemas are
//! generated from them ([`super::openapi`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::k8s::{Pod, ResourceExt};

/// Label that names a pod's developer.
pub const DEVELOPER_LABEL: &str = "developer";

/// The phases Kubernetes gives a pod (`status.phase`).
const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Pod")]
pub struct PodSummary {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    /// The pod's `developer` label.
    pub developer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `Pending`, `Running`, ..., a container's waiting reason such as
    /// `CrashLoopBackOff`, or `Terminating`: what kubectl's STATUS column says.
    pub status: String,
    /// The pod's `status.phase`.
    #[schemars(extend("enum" = POD_PHASES))]
    pub phase: String,
    /// Ready containers over containers, e.g. `1/2`.
    #[schemars(example = &"1/1")]
    pub ready: String,
    pub restarts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// `metadata.creationTimestamp`, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub created: Option<String>,
    pub containers: Vec<ContainerSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Container")]
pub struct ContainerSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub ready: bool,
    pub restart_count: i32,
    /// `running`, `waiting: <reason>`, `terminated: <reason>` or `unknown`.
    #[schemars(example = &"waiting: CrashLoopBackOff")]
    pub state: String,
}

/// `GET /api/v1/pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodList {
    pub items: Vec<PodSummary>,
}

/// `DELETE /api/v1/pods/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: DeleteStatus,
}

/// `Deleted` (gone, HTTP 200) or `Terminating` (graceful deletion under way,
/// HTTP 202).
// No doc comments on the variants: they would make the schema a `oneOf`
// instead of an OpenAPI 3.0 `enum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(inline)]
pub enum DeleteStatus {
    Deleted,
    Terminating,
}

impl PodSummary {
    pub fn of(pod: &Pod) -> PodSummary {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let container_statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        let containers: Vec<ContainerSummary> = spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let st = container_statuses.iter().find(|s| s.name == c.name);
                ContainerSummary {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ready: st.is_some_and(|s| s.ready),
                    restart_count: st.map_or(0, |s| s.restart_count),
                    state: st
                        .and_then(|s| s.state.as_ref())
                        .map_or_else(|| "unknown".to_string(), container_state),
                }
            })
            .collect();
        let phase = status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_string());
        let waiting_reason = container_statuses
            .iter()
            .filter_map(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .next();
        let shown_status = if pod.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            waiting_reason.unwrap_or_else(|| phase.clone())
        };
        PodSummary {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            resource_version: pod.resource_version().unwrap_or_default(),
            developer: pod
                .labels()
                .get(DEVELOPER_LABEL)
                .cloned()
                .unwrap_or_default(),
            service_account: spec.and_then(|s| s.service_account_name.clone()),
            status: shown_status,
            phase,
            ready: format!(
                "{}/{}",
                containers.iter().filter(|c| c.ready).count(),
                containers.len()
            ),
            restarts: containers.iter().map(|c| c.restart_count).sum(),
            node: spec.and_then(|s| s.node_name.clone()),
            pod_ip: status.and_then(|s| s.pod_ip.clone()),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            containers,
        }
    }
}

fn container_state(state: &k8s_openapi::api::core::v1::ContainerState) -> String {
    if state.running.is_some() {
        "running".to_string()
    } else if let Some(waiting) = &state.waiting {
        format!(
            "waiting: {}",
            waiting.reason.as_deref().unwrap_or("unknown")
        )
    } else if let Some(terminated) = &state.terminated {
        format!(
            "terminated: {}",
            terminated.reason.as_deref().unwrap_or("unknown")
        )
    } else {
        "unknown".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn summarises_a_pending_pod() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "ws", "namespace": "devenv", "uid": "u1",
                         "resourceVersion": "42", "labels": {"developer": "alice"},
                         "creationTimestamp": "2025-01-02T03:04:05Z"},
            "spec": {"serviceAccountName": "devenv-alice",
                     "containers": [{"name": "main", "image": "ubuntu"}, {"name": "side"}]},
            "status": {"phase": "Pending"}
        }));
        let s = PodSummary::of(&p);
        assert_eq!(s.name, "ws");
        assert_eq!(s.namespace, "devenv");
        assert_eq!(s.uid, "u1");
        assert_eq!(s.resource_version, "42");
        assert_eq!(s.developer, "alice");
        assert_eq!(s.service_account.as_deref(), Some("devenv-alice"));
        assert_eq!(s.status, "Pending");
        assert_eq!(s.ready, "0/2");
        assert_eq!(s.restarts, 0);
        assert_eq!(s.created.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(s.containers[0].image.as_deref(), Some("ubuntu"));
        assert_eq!(s.containers[1].state, "unknown");
    }

    #[test]
    fn shows_waiting_reasons_restarts_and_terminating() {
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "ws", "namespace": "devenv", "labels": {"developer": "alice"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "image": "x", "imageID": "",
                 "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 5, "image": "y", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        }));
        let s = PodSummary::of(&p);
        assert_eq!(s.status, "CrashLoopBackOff");
        assert_eq!(s.phase, "Running");
        assert_eq!(s.ready, "1/2");
        assert_eq!(s.restarts, 7);
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.containers[0].state, "running");
        assert_eq!(s.containers[1].state, "waiting: CrashLoopBackOff");

        p.metadata.deletion_timestamp = p.metadata.creation_timestamp.clone().or(Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        ));
        assert_eq!(PodSummary::of(&p).status, "Terminating");
    }

    #[test]
    fn round_trips_through_json() {
        let s = PodSummary::of(&pod(serde_json::json!({
            "metadata": {"name": "ws", "namespace": "devenv"},
            "spec": {"containers": [{"name": "a"}]}
        })));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["resourceVersion"], "");
        assert!(json.get("node").is_none());
        let back: PodSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
