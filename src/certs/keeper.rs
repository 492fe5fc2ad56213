//! The Lease holder's certificate loop in `self-managed` mode: read the
//! Secret and every place that must trust its CA, let the [`schedule`]
//! decide, write at most one step, then put the bundle back wherever it is
//! stale. Every write is conditional (create, or replace at the
//! resourceVersion read), so two leaders for a moment cannot both rotate.
//!
//! [`schedule`]: super::schedule

use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::inject::{self, Entry};
use super::material::{Cert, Material, carries};
use super::metrics::{CertsMetrics, step_name};
use super::serving::secret_data;
use super::{Lifetimes, Plan, SECRET_NAME, Step, rotate};
use crate::k8s::{Client, ObjectMeta};

/// What the keeper keeps, and where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the Secret lives (the manager's namespace).
    pub namespace: String,
    /// The serving certificate's names.
    pub names: Vec<String>,
    pub lifetimes: Lifetimes,
    /// Namespaces whose CA ConfigMap must carry a new CA before the serving
    /// certificate switches to it.
    pub ca_configmap_namespaces: Vec<String>,
    /// The name of both of the manager's webhook configurations
    /// ([`crate::webhook::registration::CONFIGURATION_NAME`] in a cluster).
    pub webhook_configuration: String,
}

/// What one pass did, for logs, Events and metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct Pass {
    pub step: Option<Step>,
    pub injected: Vec<&'static str>,
    pub recheck_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("{what}: {source}")]
    Kube {
        what: &'static str,
        source: kube::Error,
    },
    #[error(transparent)]
    Certs(#[from] super::CertsError),
}

fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> KeeperError {
    move |source| KeeperError::Kube { what, source }
}

/// The longest a pass waits when nothing is due and nothing changes, so a
/// clock jump or a missed watch event costs at most this.
const MAX_SLEEP: Duration = Duration::from_secs(600);
/// The wait after a failed pass.
const RETRY: Duration = Duration::from_secs(5);

pub struct Keeper {
    client: Client,
    settings: Settings,
    metrics: CertsMetrics,
    recorder: Recorder,
    secrets: Api<Secret>,
    mutating: Api<MutatingWebhookConfiguration>,
    validating: Api<ValidatingWebhookConfiguration>,
}

impl Keeper {
    pub fn new(client: Client, settings: Settings, metrics: CertsMetrics) -> Self {
        let reporter = Reporter {
            controller: "devenv-manager".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Keeper {
            metrics,
            recorder: Recorder::new(client.clone(), reporter),
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            mutating: Api::all(client.clone()),
            validating: Api::all(client.clone()),
            client,
            settings,
        }
    }

    /// Runs passes until `stop` (shutdown, or the Lease lost): after each,
    /// sleeps until the schedule's next instant or until the Secret or a
    /// webhook configuration changes.
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = self.changes();
        loop {
            let outcome = self
                .pass(Timestamp::now())
                .instrument(info_span!("certificates", secret = SECRET_NAME))
                .await;
            let sleep = match &outcome {
                Ok(pass) => until(pass.recheck_at),
                Err(e) => {
                    warn!(error = %e, "certificate pass failed; retrying");
                    self.metrics.failed();
                    self.record(
                        EventType::Warning,
                        "CertificateRenewalFailed",
                        &e.to_string(),
                    )
                    .await;
                    RETRY
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(sleep.min(MAX_SLEEP)) => {}
                _ = changes.next() => {
                    // Several events often arrive together (our own writes).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// One pass at `now`.
    pub async fn pass(&self, now: Timestamp) -> Result<Pass, KeeperError> {
        let secret = self
            .secrets
            .get_opt(SECRET_NAME)
            .await
            .map_err(kube("read the Secret"))?;
        let material = secret
            .as_ref()
            .and_then(|s| match Material::from_data(&secret_data(s)) {
                Ok(material) => Some(material),
                Err(e) => {
                    warn!(error = %e, "the Secret is unusable; replacing it");
                    None
                }
            });
        let targets = self.targets().await?;
        let plan: Plan = super::plan(
            now,
            material.as_ref(),
            &self.settings.names,
            |cert| targets.all_carry(cert),
            &self.settings.lifetimes,
        );
        let (material, step) = match (plan.step, material) {
            (None, Some(current)) => (current, None),
            // With no usable material the schedule always says Create.
            (step, material) => {
                let step = step.unwrap_or(Step::Create);
                let next = rotate::apply(
                    step,
                    material.as_ref(),
                    &self.settings.names,
                    &self.settings.lifetimes,
                    now,
                )?;
                self.write(secret.as_ref(), &next).await?;
                self.renewed(step, &next).await;
                (next, Some(step))
            }
        };
        self.metrics.observed(&material);
        let injected = self.inject(&targets, &material).await?;
        Ok(Pass {
            step,
            injected,
            recheck_at: if step.is_some() { now } else { plan.recheck_at },
        })
    }

    async fn renewed(&self, step: Step, material: &Material) {
        let note = format!(
            "{}: serving certificate valid until {}, signed by a CA valid until {}; {} CA(s) trusted",
            step_name(step),
            material.serving.not_after,
            material.signer().not_after,
            material.cas.len()
        );
        info!(step = step_name(step), "{note}");
        self.metrics.renewed(step);
        self.record(EventType::Normal, "CertificateRenewed", &note)
            .await;
    }

    /// Events on the Secret are best effort: a refused one fails nothing.
    async fn record(&self, type_: EventType, reason: &str, note: &str) {
        let secret = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(SECRET_NAME.into()),
            namespace: Some(self.settings.namespace.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Renew".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &secret).await {
            debug!(error = %e, "cannot record event");
        }
    }

    async fn write(&self, found: Option<&Secret>, material: &Material) -> Result<(), KeeperError> {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.to_string()),
                namespace: Some(self.settings.namespace.clone()),
                labels: Some(
                    [
                        ("app.kubernetes.io/name", "devenv-manager"),
                        ("app.kubernetes.io/managed-by", "devenv-manager"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(
                material
                    .to_data()
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                    .collect(),
            ),
            ..Secret::default()
        };
        match found {
            None => {
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(kube("create the Secret"))?;
            }
            Some(found) => {
                // A Secret's type cannot change: one made by hand as Opaque
                // stays Opaque, with our data.
                secret.type_ = found.type_.clone();
                // Replaced at the version read: a concurrent writer makes this
                // fail (409) and the next pass decides again.
                secret.metadata.resource_version = found.metadata.resource_version.clone();
                self.secrets
                    .replace(SECRET_NAME, &PostParams::default(), &secret)
                    .await
                    .map_err(kube("replace the Secret"))?;
            }
        }
        Ok(())
    }

    async fn targets(&self) -> Result<Targets, KeeperError> {
        let mutating = self
            .mutating
            .get_opt(&self.settings.webhook_configuration)
            .await
            .map_err(kube("read the MutatingWebhookConfiguration"))?;
        let validating = self
            .validating
            .get_opt(&self.settings.webhook_configuration)
            .await
            .map_err(kube("read the ValidatingWebhookConfiguration"))?;
        let mut configmaps = Vec::new();
        for namespace in &self.settings.ca_configmap_namespaces {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let found = api
                .get_opt(crate::api::ca_publisher::CONFIGMAP_NAME)
                .await
                .map_err(kube("read a CA ConfigMap"))?;
            configmaps.push(found);
        }
        Ok(Targets {
            mutating,
            validating,
            configmaps,
        })
    }

    async fn inject(
        &self,
        targets: &Targets,
        material: &Material,
    ) -> Result<Vec<&'static str>, KeeperError> {
        let mut injected = Vec::new();
        let params = PatchParams::default();
        if let Some(config) = &targets.mutating {
            let entries = inject::mutating_entries(config);
            if let Some(patch) = inject::bundle_patch(&entries, &material.ca_pem, &material.cas) {
                self.mutating
                    .patch(
                        &self.settings.webhook_configuration,
                        &params,
                        &Patch::<()>::Json(patch),
                    )
                    .await
                    .map_err(kube("patch the MutatingWebhookConfiguration's caBundle"))?;
                injected.push("MutatingWebhookConfiguration");
            }
        }
        if let Some(config) = &targets.validating {
            let entries = inject::validating_entries(config);
            if let Some(patch) = inject::bundle_patch(&entries, &material.ca_pem, &material.cas) {
                self.validating
                    .patch(
                        &self.settings.webhook_configuration,
                        &params,
                        &Patch::<()>::Json(patch),
                    )
                    .await
                    .map_err(kube("patch the ValidatingWebhookConfiguration's caBundle"))?;
                injected.push("ValidatingWebhookConfiguration");
            }
        }
        Ok(injected)
    }

    /// Wakes on any change of the Secret or of either webhook configuration.
    fn changes(&self) -> BoxStream<'static, ()> {
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        stream::select_all([
            watcher(self.secrets.clone(), by_name(SECRET_NAME))
                .map(|_| ())
                .boxed(),
            watcher(
                self.mutating.clone(),
                by_name(&self.settings.webhook_configuration),
            )
            .map(|_| ())
            .boxed(),
            watcher(
                self.validating.clone(),
                by_name(&self.settings.webhook_configuration),
            )
            .map(|_| ())
            .boxed(),
        ])
        .boxed()
    }
}

/// The places that must trust a CA before the serving certificate uses it.
struct Targets {
    mutating: Option<MutatingWebhookConfiguration>,
    validating: Option<ValidatingWebhookConfiguration>,
    configmaps: Vec<Option<ConfigMap>>,
}

impl Targets {
    fn all_carry(&self, cert: &Cert) -> bool {
        let webhooks = |entries: Vec<Entry<'_>>| inject::all_carry(&entries, cert);
        self.mutating.as_ref().is_none_or(|c| webhooks(inject::mutating_entries(c)))
            && self.validating.as_ref().is_none_or(|c| webhooks(inject::validating_entries(c)))
            // A ConfigMap not there yet (or a namespace that does not exist)
            // has no pod that trusts an older bundle.
            && self.configmaps.iter().flatten().all(|cm| {
                cm.data
                    .as_ref()
                    .and_then(|d| d.get(crate::api::ca_publisher::CONFIGMAP_KEY))
                    .is_some_and(|pem| carries(pem.as_bytes(), cert))
            })
    }
}

fn until(at: Timestamp) -> Duration {
    let now = Timestamp::now();
    if at <= now {
        return Duration::ZERO;
    }
    at.duration_since(now).unsigned_abs()
}
