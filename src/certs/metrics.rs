//! Certificate metrics, registered by the certificate part:
//! `tls_ca_expiry_timestamp_seconds`, `certificate_renewals_total{step}` and
//! `certificate_renewal_failures_total`. (The served certificate's expiry is
//! `tls_certificate_expiry_timestamp_seconds{listener}`, set by each listener.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Material, Reason, Step};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct CertsMetrics {
    ca_expiry: Gauge,
    renewals: Family<StepLabel, Counter>,
    failures: Counter,
}

impl CertsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CertsMetrics::default();
        registry.register(
            "tls_ca_expiry_timestamp_seconds",
            "notAfter of the CA that signs the serving certificate (self-managed mode)",
            metrics.ca_expiry.clone(),
        );
        registry.register(
            "certificate_renewals",
            "Writes of Secret devenv-manager-tls by this replica, by step (create, add-ca, reissue, drop-old-cas)",
            metrics.renewals.clone(),
        );
        registry.register(
            "certificate_renewal_failures",
            "Certificate passes that failed (and are retried) on this replica",
            metrics.failures.clone(),
        );
        metrics
    }

    pub fn observed(&self, material: &Material) {
        self.ca_expiry.set(material.signer().not_after.as_second());
    }

    pub fn renewed(&self, step: Step) {
        self.renewals
            .get_or_create(&StepLabel {
                step: step_name(step),
            })
            .inc();
    }

    pub fn failed(&self) {
        self.failures.inc();
    }
}

/// The step's name in metrics and Events.
pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Create => "create",
        Step::AddCa => "add-ca",
        Step::Reissue(Reason::Due) => "reissue",
        Step::Reissue(Reason::Unusable) => "reissue-unusable",
        Step::Reissue(Reason::Names) => "reissue-names",
        Step::Reissue(Reason::NewCa) => "reissue-new-ca",
        Step::DropOldCas => "drop-old-cas",
    }
}
