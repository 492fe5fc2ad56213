//! Connection metrics of every listener, registered by the server part.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::connection::Closed;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// `listener_connections`, `listener_connections_refused_total`,
/// `listener_connections_closed_total{reason}`.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    open: Family<ListenerLabel, Gauge>,
    refused: Family<ListenerLabel, Counter>,
    closed: Family<ClosedLabels, Counter>,
}

/// Counts a connection open until dropped.
pub struct Open {
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl ListenerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ListenerMetrics::default();
        registry.register(
            "listener_connections",
            "Connections open, per listener",
            metrics.open.clone(),
        );
        registry.register(
            "listener_connections_refused",
            "Connections closed at accept because the listener held maxConnections",
            metrics.refused.clone(),
        );
        registry.register(
            "listener_connections_closed",
            "Connections ended, per listener and reason (peer, handshake-failed, handshake-timeout, request-header-timeout, idle-timeout, shutdown)",
            metrics.closed.clone(),
        );
        metrics
    }

    pub(super) fn opened(&self, listener: &'static str) -> Open {
        let gauge = self.open.get_or_create(&ListenerLabel { listener }).clone();
        gauge.inc();
        Open { gauge }
    }

    pub(super) fn refused(&self, listener: &'static str) {
        self.refused
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }

    /// One sample in each family, as after one connection of `listener`
    /// that was refused and one that ended: for
    /// [`crate::metrics::Metrics::with_every_family`].
    pub fn sample_every_family(&self, listener: &'static str) {
        drop(self.opened(listener));
        self.refused(listener);
        self.closed(listener, Closed::ByPeer);
    }

    pub(super) fn closed(&self, listener: &'static str, why: Closed) {
        self.closed
            .get_or_create(&ClosedLabels {
                listener,
                reason: why.as_str(),
            })
            .inc();
    }
}
