//! The pod API's metrics: `api_requests_total{route,code}`,
//! `api_request_duration_seconds{route}`, `tokenreview_cache_hits_total`,
//! `tokenreview_requests_total`. Routes are templates
//! (`GET /api/v1/pods/{namespace}/{name}`), never concrete paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::LATENCY_BUCKETS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone)]
pub struct ApiMetrics {
    requests: Family<ApiLabels, Counter>,
    duration: Family<RouteLabel, Histogram>,
    /// Authentications answered from the token cache (or by joining a
    /// TokenReview already in flight for the same token).
    pub tokenreview_cache_hits: Counter,
    /// TokenReviews sent to the API server.
    pub tokenreview_requests: Counter,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            tokenreview_cache_hits: Counter::default(),
            tokenreview_requests: Counter::default(),
        };
        registry.register(
            "api_requests",
            "Pod API requests answered, by route template and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time to answer a pod API request, by route template",
            metrics.duration.clone(),
        );
        registry.register(
            "tokenreview_cache_hits",
            "Pod API authentications answered without a new TokenReview",
            metrics.tokenreview_cache_hits.clone(),
        );
        registry.register(
            "tokenreview_requests",
            "TokenReviews sent to the Kubernetes API server",
            metrics.tokenreview_requests.clone(),
        );
        metrics
    }

    pub fn answered(&self, route: &'static str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&ApiLabels { route, code })
            .inc();
        self.duration
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }
}
