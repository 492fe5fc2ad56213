//! Prometheus metrics (prometheus-client), registered once and shared.
//! Label values are bounded: webhook names, booleans, listener names, pod API
//! route templates and HTTP status codes.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub allowed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub webhook: &'static str,
}

/// A webhook and why a request to it was not a usable review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub webhook: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// A pod API route template (`GET /api/v1/pods/{namespace}/{name}`), never
/// the concrete path, and the status code answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: &'static str,
}

/// From a tenth of a second to ten minutes: how long a learner waits.
const SLOW_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0];

#[derive(Debug)]
pub struct Metrics {
    pub learner_namespaces: Counter,
    pub namespace_creation: Histogram,
    pub namespace_deletion: Histogram,
    pub learner_spaces_by_phase: Family<PhaseLabel, Gauge>,
    pub reconcile_errors: Family<CategoryLabel, Counter>,
    pub reconciles: Counter,
    registry: Registry,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<WebhookLabel, Histogram>,
    /// Requests answered 400 or 503 without a decision, by reason.
    pub admission_refused: Family<RefusalLabels, Counter>,
    /// Connections of every listener.
    pub listeners: crate::server::ListenerMetrics,
    /// Self-managed certificates.
    pub certs: crate::certs::metrics::CertsMetrics,
    pub tls_expiry: Family<ListenerLabel, Gauge>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub api_duration: Family<RouteLabel, Histogram>,
    /// Authentications answered from the token cache (or by joining a
    /// TokenReview already in flight for the same token).
    pub tokenreview_cache_hits: Counter,
    /// TokenReviews sent to the API server.
    pub tokenreview_requests: Counter,
}

/// Buckets for sub-millisecond work up to the API server's webhook timeout.
const LATENCY_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook and verdict",
            admission_requests.clone(),
        );
        let admission_duration = Family::<WebhookLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decide an admission review, body parse to response",
            admission_duration.clone(),
        );
        let admission_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "admission_refused_requests",
            "Webhook requests answered without a decision (400 or 503), by webhook and reason",
            admission_refused.clone(),
        );
        let listeners = crate::server::ListenerMetrics::register(&mut registry);
        let certs = crate::certs::metrics::CertsMetrics::register(&mut registry);
        let tls_expiry = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, per listener",
            tls_expiry.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Pod API requests answered, by route template and status code",
            api_requests.clone(),
        );
        let api_duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "api_request_duration_seconds",
            "Time to answer a pod API request, by route template",
            api_duration.clone(),
        );
        let tokenreview_cache_hits = Counter::default();
        registry.register(
            "tokenreview_cache_hits",
            "Pod API authentications answered without a new TokenReview",
            tokenreview_cache_hits.clone(),
        );
        let tokenreview_requests = Counter::default();
        registry.register(
            "tokenreview_requests",
            "TokenReviews sent to the Kubernetes API server",
            tokenreview_requests.clone(),
        );
        let learner_namespaces = Counter::default();
        registry.register(
            "learner_namespaces",
            "Learner namespaces created by the operator",
            learner_namespaces.clone(),
        );
        let namespace_creation = Histogram::new(SLOW_BUCKETS);
        registry.register(
            "learner_namespace_creation_duration_seconds",
            "From LearnerSpace creation to its namespace being Ready",
            namespace_creation.clone(),
        );
        let namespace_deletion = Histogram::new(SLOW_BUCKETS);
        registry.register(
            "learner_namespace_deletion_duration_seconds",
            "From LearnerSpace deletion to tombstone written and namespace deletion requested",
            namespace_deletion.clone(),
        );
        let learner_spaces_by_phase = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "learner_spaces_by_phase",
            "LearnerSpaces in the operator's cache, by status phase",
            learner_spaces_by_phase.clone(),
        );
        let reconcile_errors = Family::<CategoryLabel, Counter>::default();
        registry.register(
            "operator_reconcile_errors",
            "Failed reconciles, by error category",
            reconcile_errors.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "operator_reconciles",
            "LearnerSpace reconciles run",
            reconciles.clone(),
        );
        Arc::new(Metrics {
            learner_namespaces,
            namespace_creation,
            namespace_deletion,
            learner_spaces_by_phase,
            reconcile_errors,
            reconciles,
            registry,
            admission_requests,
            admission_duration,
            admission_refused,
            listeners,
            certs,
            tls_expiry,
            api_requests,
            api_duration,
            tokenreview_cache_hits,
            tokenreview_requests,
        })
    }

    pub fn record_admission(&self, webhook: &'static str, allowed: bool, seconds: f64) {
        let allowed = if allowed { "true" } else { "false" };
        self.admission_requests
            .get_or_create(&AdmissionLabels { webhook, allowed })
            .inc();
        self.admission_duration
            .get_or_create(&WebhookLabel { webhook })
            .observe(seconds);
    }

    pub fn record_admission_refusal(&self, webhook: &'static str, reason: &'static str) {
        self.admission_refused
            .get_or_create(&RefusalLabels { webhook, reason })
            .inc();
    }

    pub fn record_api_request(&self, route: &'static str, code: u16, seconds: f64) {
        self.api_requests
            .get_or_create(&ApiLabels { route, code })
            .inc();
        self.api_duration
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
