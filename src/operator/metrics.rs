//! The operator's metrics: `learner_namespaces_total`,
//! `learner_namespace_creation_duration_seconds`,
//! `learner_namespace_deletion_duration_seconds`,
//! `learner_spaces_by_phase{phase}`, `operator_reconcile_errors_total{category}`,
//! `operator_reconciles_total`, `operator_leader`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

#[derive(Debug, Clone)]
pub struct OperatorMetrics {
    pub learner_namespaces: Counter,
    pub namespace_creation: Histogram,
    pub namespace_deletion: Histogram,
    pub learner_spaces_by_phase: Family<PhaseLabel, Gauge>,
    pub reconcile_errors: Family<CategoryLabel, Counter>,
    pub reconciles: Counter,
    /// 1 while this replica leads (holds the operator's Lease and
    /// reconciles), else 0: summed over the replicas it says whether any
    /// one reconciles, which no other metric does (they only stop moving).
    leader: Gauge,
}

impl OperatorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = OperatorMetrics {
            learner_namespaces: Counter::default(),
            namespace_creation: Histogram::new(SLOW_BUCKETS),
            namespace_deletion: Histogram::new(SLOW_BUCKETS),
            learner_spaces_by_phase: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "learner_namespaces",
            "Learner namespaces created by the operator",
            metrics.learner_namespaces.clone(),
        );
        registry.register(
            "learner_namespace_creation_duration_seconds",
            "From LearnerSpace creation to its namespace being Ready",
            metrics.namespace_creation.clone(),
        );
        registry.register(
            "learner_namespace_deletion_duration_seconds",
            "From LearnerSpace deletion to tombstone written and namespace deletion requested",
            metrics.namespace_deletion.clone(),
        );
        registry.register(
            "learner_spaces_by_phase",
            "LearnerSpaces in the operator's cache, by status phase",
            metrics.learner_spaces_by_phase.clone(),
        );
        registry.register(
            "operator_reconcile_errors",
            "Failed reconciles, by error category",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "operator_reconciles",
            "LearnerSpace reconciles run",
            metrics.reconciles.clone(),
        );
        registry.register(
            "operator_leader",
            "1 while this replica holds the operator's Lease and reconciles, else 0",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Whether this replica leads now.
    pub fn leading(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_gauge_follows_the_role() {
        let mut registry = Registry::default();
        let metrics = OperatorMetrics::register(&mut registry);
        let encoded = |registry: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
            out
        };
        // Registered before any term, as a standby: 0, never absent.
        assert!(encoded(&registry).contains("\noperator_leader 0\n"));
        metrics.leading(true);
        assert!(encoded(&registry).contains("\noperator_leader 1\n"));
        metrics.leading(false);
        assert!(encoded(&registry).contains("\noperator_leader 0\n"));
    }
}
