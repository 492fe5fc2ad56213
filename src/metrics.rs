//! Prometheus metrics (prometheus-client): one registry, into which each part
//! registers the metrics it owns (`webhook::metrics`, `api::metrics`,
//! `operator::metrics`, `server::metrics`, `certs::metrics`, and the serving
//! certificates' expiry here). Label values are bounded: webhook names,
//! booleans, listener names, pod API route templates, HTTP status codes,
//! phases, error categories and renewal steps.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::metrics::ApiMetrics;
use crate::certs::metrics::CertsMetrics;
use crate::operator::metrics::OperatorMetrics;
use crate::server::ListenerMetrics;
use crate::webhook::metrics::WebhookMetrics;

/// Buckets for sub-millisecond work up to the API server's webhook timeout.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub webhook: WebhookMetrics,
    pub api: ApiMetrics,
    pub operator: OperatorMetrics,
    /// Connections of every listener.
    pub listeners: ListenerMetrics,
    /// Self-managed certificates.
    pub certs: CertsMetrics,
    tls_expiry: Family<ListenerLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let tls_expiry = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, per listener",
            tls_expiry.clone(),
        );
        Arc::new(Metrics {
            webhook: WebhookMetrics::register(&mut registry),
            api: ApiMetrics::register(&mut registry),
            operator: OperatorMetrics::register(&mut registry),
            listeners: ListenerMetrics::register(&mut registry),
            certs: CertsMetrics::register(&mut registry),
            tls_expiry,
            registry,
        })
    }

    /// A registry with a sample in every family. A labelled family encodes
    /// nothing until its first label set, so only this encoding names every
    /// series the manager can export: what the chart's tests check the
    /// alerts' and the dashboard's PromQL against (tests/chart/monitoring.rs).
    pub fn with_every_family() -> Arc<Self> {
        let metrics = Metrics::new();
        metrics.certificate_expires("webhook", 0);
        metrics.webhook.decided("mutate-pods", true, 0.0);
        metrics.webhook.refused("mutate-pods", "malformed");
        metrics.api.answered("unmatched", 404, 0.0);
        metrics.listeners.sample_every_family("metrics");
        metrics.certs.renewed(crate::certs::schedule::Step::Create);
        let operator = &metrics.operator;
        operator
            .learner_spaces_by_phase
            .get_or_create(&crate::operator::metrics::PhaseLabel { phase: "Ready" })
            .set(0);
        operator
            .reconcile_errors
            .get_or_create(&crate::operator::metrics::CategoryLabel {
                category: "ApiError",
            })
            .inc();
        metrics
    }

    /// `notAfter` (Unix seconds) of the certificate `listener` serves.
    pub fn certificate_expires(&self, listener: &'static str, not_after: i64) {
        self.tls_expiry
            .get_or_create(&ListenerLabel { listener })
            .set(not_after);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
