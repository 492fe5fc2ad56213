//! The webhook's metrics: `admission_requests_total{webhook,allowed}`,
//! `admission_duration_seconds{webhook}`,
//! `admission_refused_requests_total{webhook,reason}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::LATENCY_BUCKETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: &'static str,
    allowed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    webhook: &'static str,
}

/// A webhook and why a request to it was not a usable review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    webhook: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    requests: Family<AdmissionLabels, Counter>,
    duration: Family<WebhookLabel, Histogram>,
    /// Requests answered 400 or 503 without a decision, by reason.
    refused: Family<RefusalLabels, Counter>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = WebhookMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            refused: Family::default(),
        };
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook and verdict",
            metrics.requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to decide an admission review, body parse to response",
            metrics.duration.clone(),
        );
        registry.register(
            "admission_refused_requests",
            "Webhook requests answered without a decision (400 or 503), by webhook and reason",
            metrics.refused.clone(),
        );
        metrics
    }

    pub fn decided(&self, webhook: &'static str, allowed: bool, seconds: f64) {
        let allowed = if allowed { "true" } else { "false" };
        self.requests
            .get_or_create(&AdmissionLabels { webhook, allowed })
            .inc();
        self.duration
            .get_or_create(&WebhookLabel { webhook })
            .observe(seconds);
    }

    pub fn refused(&self, webhook: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusalLabels { webhook, reason })
            .inc();
    }
}
