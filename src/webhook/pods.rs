//! The pod decision: is this a devenv pod, must it be refused, and which
//! RFC 6902 operations inject it. Pure: typed pods and the config in, patch
//! operations or field errors out.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation};
use serde_json::{Value, json};

use super::FieldError;
use super::pod_view::{
    ContainerView as Container, PodView as Pod, ProjectionView as Source, VolumeView as Volume,
};
use crate::config::DevenvConfig;
use crate::k8s::Operation;
use crate::names;

pub const DEVELOPER_LABEL: &str = "developer";
pub const INJECT_ANNOTATION: &str = "devenv.io/inject";
pub const TOKEN_VOLUME: &str = "devenv-manager-token";
/// File name of the token inside the projected volume.
pub const TOKEN_FILE: &str = "devenv-manager";
pub const CA_CONFIGMAP: &str = "devenv-manager-ca";
pub const CA_KEY: &str = "ca.crt";
pub const MANAGER_URL_ENV: &str = "DEVENV_MANAGER_URL";

/// What the webhook decided about one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodDecision {
    /// Not a devenv pod: allowed untouched.
    NotDevenv,
    /// A devenv pod, allowed with these operations (empty when nothing is missing
    /// or the pod opted out of injection).
    Allow {
        developer: String,
        patch: Vec<PatchOperation>,
    },
    /// A devenv pod breaking a rule; each error names its field.
    Deny {
        developer: String,
        errors: Vec<FieldError>,
    },
}

/// The injection for one configuration, with its JSON values built once so
/// that each review only clones them.
#[derive(Debug, Clone)]
pub struct PodPolicy {
    config: DevenvConfig,
    /// `tokenMountPath` normalized (see [`components`]), as it is injected.
    mount_path: String,
    mount_components: Vec<String>,
    volume: Value,
    ca_source: Value,
    mount: Value,
    env: Value,
}

impl PodPolicy {
    pub fn new(config: &DevenvConfig) -> Self {
        let ca_source = json!({
            "configMap": {
                "name": CA_CONFIGMAP,
                "optional": true,
                "items": [{"key": CA_KEY, "path": CA_KEY}],
            }
        });
        let volume = json!({
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {
                        "path": TOKEN_FILE,
                        "audience": config.audience,
                        "expirationSeconds": config.token_expiration_seconds,
                    }},
                    ca_source.clone(),
                ]
            }
        });
        let mount_components: Vec<String> = components(&config.token_mount_path)
            .into_iter()
            .map(String::from)
            .collect();
        let mount_path = format!("/{}", mount_components.join("/"));
        PodPolicy {
            mount: json!({"name": TOKEN_VOLUME, "mountPath": mount_path, "readOnly": true}),
            env: json!({"name": MANAGER_URL_ENV, "value": config.manager_url}),
            config: config.clone(),
            mount_path,
            mount_components,
            volume,
            ca_source,
        }
    }

    pub fn config(&self) -> &DevenvConfig {
        &self.config
    }

    /// The developer a pod in `namespace` belongs to, if it is a devenv pod.
    pub fn developer_of<'p>(&self, namespace: &str, pod: &'p Pod) -> Option<&'p str> {
        if !self.config.namespaces.iter().any(|n| n == namespace) {
            return None;
        }
        let sa = pod.spec.as_ref()?.service_account_name.as_deref()?;
        names::developer_from_service_account(&self.config, sa)
    }

    /// Decides on a CREATE or UPDATE of `pod` (with `old` on UPDATE) in `namespace`.
    pub fn decide(
        &self,
        operation: &Operation,
        namespace: &str,
        pod: &Pod,
        old: Option<&Pod>,
    ) -> PodDecision {
        let developer = match self.developer_of(namespace, pod) {
            Some(d) => d.to_string(),
            None => return PodDecision::NotDevenv,
        };
        let mut errors = Vec::new();
        let volume_index = match operation {
            Operation::Update => {
                // Only metadata can change on a pod (its volumes and mounts
                // are immutable), so only the label is judged, and only when
                // it changes: a pod admitted before these rules keeps
                // working (its finalizers can still be removed).
                if label_of(pod) != old.and_then(label_of) {
                    self.check_label(&developer, pod, &mut errors);
                    check_label_unchanged(pod, old, &mut errors);
                }
                None
            }
            _ => {
                self.check_label(&developer, pod, &mut errors);
                let index = self.check_volume(pod, &mut errors);
                self.check_mounts(pod, &mut errors);
                index
            }
        };
        if !errors.is_empty() {
            return PodDecision::Deny { developer, errors };
        }
        // Pod specs are immutable after creation: injection happens on CREATE only.
        let patch = if *operation == Operation::Create && !opted_out(pod) {
            self.injection(&developer, pod, volume_index)
        } else {
            Vec::new()
        };
        PodDecision::Allow { developer, patch }
    }

    fn check_label(&self, developer: &str, pod: &Pod, errors: &mut Vec<FieldError>) {
        if let Some(label) = label_of(pod)
            && label != developer
        {
            errors.push(FieldError::new(
                "metadata.labels.developer",
                format!(
                    "names developer {label:?} but the pod runs as service account {}{developer}",
                    self.config.service_account_prefix
                ),
            ));
        }
    }

    /// Refuses a foreign volume that took our name; returns the index of ours.
    fn check_volume(&self, pod: &Pod, errors: &mut Vec<FieldError>) -> Option<usize> {
        let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
        let index = volumes.iter().position(|v| v.name == TOKEN_VOLUME)?;
        if self.is_our_volume(&volumes[index]) {
            return Some(index);
        }
        errors.push(FieldError::new(
            format!("spec.volumes[{index}]"),
            format!(
                "a volume named {TOKEN_VOLUME} exists and is not the devenv-manager token projection \
                 (projected, with exactly a serviceAccountToken source of path {TOKEN_FILE} and audience {} \
                 and at most the configMap {CA_CONFIGMAP} item {CA_KEY})",
                self.config.audience
            ),
        ));
        None
    }

    /// Ours: projected, holding exactly one service-account token source
    /// with our path and audience, at most our CA source, and nothing else.
    /// Defaulted fields (`defaultMode`, `expirationSeconds`) and a missing CA
    /// source do not make it different.
    fn is_our_volume(&self, volume: &Volume) -> bool {
        let Some(projected) = &volume.projected else {
            return false;
        };
        let sources = projected.sources.as_deref().unwrap_or_default();
        let tokens = sources.iter().filter(|s| self.is_our_token(s)).count();
        let cas = sources.iter().filter(|s| is_our_ca(s)).count();
        tokens == 1 && cas <= 1 && tokens + cas == sources.len()
    }

    fn is_our_token(&self, source: &Source) -> bool {
        !source.has_other()
            && source.config_map.is_none()
            && source.service_account_token.as_ref().is_some_and(|t| {
                t.path == TOKEN_FILE && t.audience.as_deref() == Some(self.config.audience.as_str())
            })
    }

    /// Whether `path` is the token mount path or lies under it.
    fn is_at_or_under_mount_path(&self, path: &str) -> bool {
        let path = components(path);
        path.len() >= self.mount_components.len()
            && path.iter().zip(&self.mount_components).all(|(a, b)| a == b)
    }

    fn check_mounts(&self, pod: &Pod, errors: &mut Vec<FieldError>) {
        for (field, index, container) in containers(pod) {
            for (m, mount) in container.volume_mounts.iter().flatten().enumerate() {
                if mount.name != TOKEN_VOLUME && self.is_at_or_under_mount_path(&mount.mount_path) {
                    errors.push(FieldError::new(
                        format!("spec.{field}[{index}].volumeMounts[{m}]"),
                        format!(
                            "mounts volume {:?} at {:?}, at or under {}, which is reserved for the devenv-manager token",
                            mount.name, mount.mount_path, self.mount_path
                        ),
                    ));
                }
            }
        }
    }

    /// The operations that add what is missing, and only that.
    fn injection(
        &self,
        developer: &str,
        pod: &Pod,
        volume_index: Option<usize>,
    ) -> Vec<PatchOperation> {
        let mut ops = Vec::new();
        match pod.metadata.labels.as_ref() {
            None => ops.push(add(
                &["metadata", "labels"],
                json!({ DEVELOPER_LABEL: developer }),
            )),
            Some(labels) if !labels.contains_key(DEVELOPER_LABEL) => ops.push(add(
                &["metadata", "labels", DEVELOPER_LABEL],
                json!(developer),
            )),
            Some(_) => {}
        }

        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        match (volumes, volume_index) {
            (None, _) => ops.push(add(&["spec", "volumes"], json!([self.volume]))),
            (Some(_), None) => ops.push(add(&["spec", "volumes", "-"], self.volume.clone())),
            (Some(volumes), Some(i)) => {
                let has_ca = volumes[i]
                    .projected
                    .iter()
                    .flat_map(|p| p.sources.iter().flatten())
                    .any(|s| {
                        s.config_map
                            .as_ref()
                            .is_some_and(|c| c.name == CA_CONFIGMAP)
                    });
                if !has_ca {
                    let path =
                        pointer(&["spec", "volumes"]).with_index(i, &["projected", "sources", "-"]);
                    ops.push(PatchOperation::Add(AddOperation {
                        path,
                        value: self.ca_source.clone(),
                    }));
                }
            }
        }

        for (field, index, container) in containers(pod) {
            let base = pointer(&["spec", field]).with_index(index, &[]);
            let has_mount = container.volume_mounts.iter().flatten().any(|m| {
                m.name == TOKEN_VOLUME && components(&m.mount_path) == self.mount_components
            });
            if !has_mount {
                ops.push(append(
                    &base,
                    "volumeMounts",
                    container.volume_mounts.is_none(),
                    &self.mount,
                ));
            }
            let has_env = container
                .env
                .iter()
                .flatten()
                .any(|e| e.name == MANAGER_URL_ENV);
            if !has_env {
                ops.push(append(&base, "env", container.env.is_none(), &self.env));
            }
        }
        ops
    }
}

fn label_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(DEVELOPER_LABEL)
        .map(String::as_str)
}

fn check_label_unchanged(pod: &Pod, old: Option<&Pod>, errors: &mut Vec<FieldError>) {
    let Some(old) = old else { return };
    let (before, after) = (label_of(old), label_of(pod));
    match (before, after) {
        (Some(b), None) => errors.push(FieldError::new(
            "metadata.labels.developer",
            format!("may not be removed from a devenv pod (was {b:?})"),
        )),
        (Some(b), Some(a)) if a != b => errors.push(FieldError::new(
            "metadata.labels.developer",
            format!("may not be changed on a devenv pod (was {b:?}, now {a:?})"),
        )),
        _ => {}
    }
}

fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// Init containers first, as the kubelet runs them, then containers.
fn containers(pod: &Pod) -> impl Iterator<Item = (&'static str, usize, &Container)> {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ("initContainers", i, c));
    let main = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, c));
    init.chain(main)
}

/// Our CA source: the `devenv-manager-ca` ConfigMap, exactly its item
/// `ca.crt` at `ca.crt` (all keys, or another path, could put a file of
/// someone else's choosing beside the token).
fn is_our_ca(source: &Source) -> bool {
    !source.has_other()
        && source.service_account_token.is_none()
        && source.config_map.as_ref().is_some_and(|c| {
            c.name == CA_CONFIGMAP
                && matches!(c.items.as_deref(), Some([item]) if item.key == CA_KEY && item.path == CA_KEY)
        })
}

/// The components of a mount path as the container runtime resolves it:
/// empty components and `.` dropped, `..` taking away the one before it
/// (never above the root), a relative path counted from the root. So
/// `/var/run/secrets//tokens/`, `/var/run/secrets/./tokens` and
/// `/var/run/x/../secrets/tokens` are all `/var/run/secrets/tokens`.
fn components(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().map(|t| Token::new(*t)))
}

trait WithIndex {
    fn with_index(self, index: usize, rest: &[&str]) -> PointerBuf;
}

impl WithIndex for PointerBuf {
    fn with_index(mut self, index: usize, rest: &[&str]) -> PointerBuf {
        self.push_back(Token::from(index));
        for t in rest {
            self.push_back(Token::new(*t));
        }
        self
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// Adds `item` to the list `field` under `base`: the whole list when it is
/// absent (a JSON pointer into a missing list does not apply), else at its end.
fn append(base: &PointerBuf, field: &str, absent: bool, item: &Value) -> PatchOperation {
    let mut path = base.clone();
    path.push_back(Token::new(field));
    let value = if absent {
        json!([item])
    } else {
        path.push_back(Token::new("-"));
        item.clone()
    };
    PatchOperation::Add(AddOperation { path, value })
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
