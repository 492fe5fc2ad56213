//! The LearnerSpace operator: one isolated namespace per learner.
//!
//! [`kinds`] lists the kinds managed for each LearnerSpace, once;
//! [`objects`], [`status`] and [`tombstone`] build values, [`ownership`]
//! decides whose a namespace is and [`preflight`] whether a LearnerSpace may
//! be applied (pure); the [`reconcile`]r compares the values with what the
//! watch caches hold and applies only what differs; [`controller`] wires the
//! watches; [`crate::leader`] makes sure only one replica reconciles.

pub mod cache;
pub mod compare;
pub mod context;
pub mod controller;
pub mod error;
pub mod kinds;
pub mod metrics;
pub mod objects;
pub mod ownership;
pub mod preflight;
pub mod reconcile;
pub mod status;
pub mod tombstone;

use std::sync::Arc;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::config::OperatorConfig;
use crate::leader;
use crate::metrics::Metrics;
use crate::probes::{Health, State};

/// Runs the operator until `shutdown`: stands by while another replica holds
/// the lease, reconciles while this one does. Reports its state to `health`.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    identity: String,
    shutdown: CancellationToken,
) {
    let settings = leader::LeaseSettings::new(&config.namespace, identity);
    let on_role = {
        let health = health.clone();
        let metrics = metrics.clone();
        move |role: leader::Role| {
            metrics.operator.leading(role == leader::Role::Leading);
            match role {
                leader::Role::Leading => health.set(
                    "operator",
                    State::Ready,
                    "leading: reconciling LearnerSpaces",
                ),
                leader::Role::Standby(holder) => health.set(
                    "operator",
                    State::Standby,
                    format!("standing by; {holder} holds the lease"),
                ),
            }
        }
    };
    health.set("operator", State::Standby, "acquiring the leader lease");
    let lead = {
        let (client, metrics) = (client.clone(), metrics.clone());
        move |term| controller::run(client.clone(), config.clone(), metrics.clone(), term)
    };
    leader::run_while_leader(client, settings, shutdown, on_role, lead).await;
    // Shut down (the lease released, if held): no longer leading.
    metrics.operator.leading(false);
}
