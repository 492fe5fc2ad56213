//! `/healthz`, `/readyz` and `/metrics` on the plain-HTTP metrics port.
//!
//! `/readyz` is honest: each part of the process (webhook, operator, pod API)
//! reports its state, the body lists them, and the status is 200 only when
//! no part is starting, failed or shutting down. A part waiting for a cluster
//! or standing by for the leader lease does not hold readiness back: the
//! webhook it shares the pod with must keep receiving traffic.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use warp::Filter;
use warp::http::StatusCode;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    Starting,
    Ready,
    WaitingForCluster,
    Standby,
    Failed,
    ShuttingDown,
}

impl State {
    fn blocks_readiness(self) -> bool {
        matches!(self, State::Starting | State::Failed | State::ShuttingDown)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartStatus {
    pub state: State,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The states of the process's parts, shared by everything that runs.
#[derive(Debug, Default)]
pub struct Health {
    parts: Mutex<BTreeMap<&'static str, PartStatus>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    pub fn set(&self, part: &'static str, state: State, detail: impl Into<String>) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts.insert(
            part,
            PartStatus {
                state,
                detail: detail.into(),
            },
        );
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, PartStatus> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_ready(&self) -> bool {
        let parts = self.snapshot();
        !parts.is_empty() && parts.values().all(|p| !p.state.blocks_readiness())
    }

    /// Marks every part as shutting down, so load balancers stop sending.
    pub fn shutting_down(&self) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        for part in parts.values_mut() {
            part.state = State::ShuttingDown;
        }
    }
}

pub fn routes(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    use warp::Reply;
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| "ok\n".into_response());
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        let status = if health.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(warp::reply::json(&health.snapshot()), status).into_response()
    });
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            metrics.encode(),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .into_response()
    });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                warp::reply::with_status("not found\n", StatusCode::NOT_FOUND).into_response(),
            )
        })
        .unify()
}
