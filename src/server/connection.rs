//! What a connection is doing, for its deadlines: how many requests are in
//! flight, how many it has served, and since when it has been idle.
//!
//! One watchdog for HTTP/1.1 and HTTP/2 alike, fed by the service wrapper
//! ([`Tracked`]) rather than by the protocol code: hyper's HTTP/1 header
//! timer does not run before the first byte and HTTP/2 has no idle timeout at
//! all, while "no request in flight since T" means the same in both.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{Limits, PeerAddr};

/// Why a connection ended: the `reason` label of
/// `listener_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    ByPeer,
    HandshakeFailed,
    HandshakeTimeout,
    /// No complete request head within `requestHeaderTimeoutSeconds` of the
    /// connection's start.
    RequestHeaderTimeout,
    /// Idle longer than `idleTimeoutSeconds` after a request.
    IdleTimeout,
    Shutdown,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::ByPeer => "peer",
            Closed::HandshakeFailed => "handshake-failed",
            Closed::HandshakeTimeout => "handshake-timeout",
            Closed::RequestHeaderTimeout => "request-header-timeout",
            Closed::IdleTimeout => "idle-timeout",
            Closed::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    served: u64,
    idle_since: Instant,
}

/// The state, and a signal raised when a request ends, so the watchdog
/// recomputes its deadline (the idle one may be sooner than the one it sleeps
/// towards).
#[derive(Debug, Clone)]
pub struct Activity(Arc<(Mutex<State>, tokio::sync::Notify)>);

/// Held while a request is being answered.
pub struct InFlight(Activity);

impl Activity {
    pub fn new() -> Self {
        Activity(Arc::new((
            Mutex::new(State {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
            }),
            tokio::sync::Notify::new(),
        )))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once a request has ended since the last call.
    pub async fn request_ended(&self) {
        self.0.1.notified().await
    }

    pub fn begin(&self) -> InFlight {
        self.state().in_flight += 1;
        InFlight(self.clone())
    }

    /// When to look again: the idle deadline, or (while requests run, whose
    /// own timeouts bound them) one idle period from now.
    pub fn deadline(&self, limits: &Limits) -> Instant {
        let state = self.state();
        if state.in_flight > 0 {
            return Instant::now() + limits.idle_timeout();
        }
        state.idle_since + idle_limit(&state, limits)
    }

    /// Which deadline an idle connection is closed by.
    pub fn idle_reason(&self) -> Closed {
        if self.state().served == 0 {
            Closed::RequestHeaderTimeout
        } else {
            Closed::IdleTimeout
        }
    }

    /// Why the connection must close now, if it must.
    pub fn expired(&self, limits: &Limits) -> Option<Closed> {
        let state = self.state();
        if state.in_flight > 0 || Instant::now() < state.idle_since + idle_limit(&state, limits) {
            return None;
        }
        drop(state);
        Some(self.idle_reason())
    }
}

/// A connection that has never sent a request gets the request-head
/// deadline; one that has, the keep-alive idle time.
fn idle_limit(state: &State, limits: &Limits) -> std::time::Duration {
    if state.served == 0 {
        limits.request_header_timeout()
    } else {
        limits.idle_timeout()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        state.served += 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        // A stored permit if the watchdog is not waiting: nothing is lost.
        self.0.0.1.notify_one();
    }
}

/// A tower service as a hyper service that tags each request with the peer
/// address and counts it in the connection's [`Activity`] until its response
/// is ready (or the request is dropped: a reset stream).
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    peer: SocketAddr,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, peer: SocketAddr, activity: Activity) -> Self {
        Tracked {
            inner,
            peer,
            activity,
        }
    }
}

impl<S, B> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<B>, Infallible>>;

    fn call(&self, mut request: http::Request<hyper::body::Incoming>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        let in_flight = self.activity.begin();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let _in_flight = in_flight;
            futures::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            request_header_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_after_the_request_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(
            activity.deadline(&limits()),
            started + Duration::from_secs(10)
        );
        assert_eq!(activity.expired(&limits()), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            activity.expired(&limits()),
            Some(Closed::RequestHeaderTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let activity = Activity::new();
        let request = activity.begin();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(activity.expired(&limits()), None);
        drop(request);
        // Idle from the end of the request, now with the keep-alive time.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(activity.expired(&limits()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.expired(&limits()), Some(Closed::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_requests_end_idle_only_when_the_last_one_ends() {
        let activity = Activity::new();
        let (a, b) = (activity.begin(), activity.begin());
        drop(a);
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(activity.expired(&limits()), None);
        drop(b);
        assert_eq!(
            activity.deadline(&limits()),
            Instant::now() + Duration::from_secs(60)
        );
    }
}
