//! The one server every listener uses (webhook and pod API over TLS, probes
//! and metrics in plain HTTP): an accept loop with a connection cap,
//! tokio-rustls for the handshake, and hyper's HTTP/1.1 or HTTP/2 connection
//! (chosen by ALPN, never by reading the client's first bytes) around any
//! tower service (in practice `warp::service(filter)`; warp 0.4 has no TLS).
//!
//! Every phase of a connection has a deadline (see [`Limits`]): the
//! handshake; the first request head, counted from the connection's start,
//! so that a connection that sends nothing, only the HTTP/2 preface, or its
//! headers a byte at a time is closed; the idle time between requests; HTTP/2
//! keep-alive pings. A [`connection::Activity`] watchdog enforces the
//! request-head and idle deadlines for both protocols alike. On shutdown it
//! stops accepting and drains open connections.

pub mod budget;
mod connection;
pub mod limits;
mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use budget::{BodyBudget, Exhausted, Reservation};
pub use limits::Limits;
pub use metrics::ListenerMetrics;

use crate::tls::ReloadingResolver;
use connection::{Activity, Closed};

/// The TCP peer of a connection, put in every request's extensions so that a
/// service can tell clients apart (the pod API rate-limits failed
/// authentications per address). Read it with `warp::ext::optional::<PeerAddr>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What a listener serves: a cloneable tower service that answers every
/// HTTP request (in practice `warp::service(filter)`).
pub trait HttpService<B>:
    tower_service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body hyper can send on either protocol.
pub trait ResponseBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// How a listener's connections are carried.
pub enum Transport {
    /// TLS with certificates from the resolver (re-read on every new
    /// connection); `on_reload` runs after each reload, and once at start.
    Tls {
        resolver: Arc<ReloadingResolver>,
        on_reload: Box<dyn Fn(&ReloadingResolver) + Send + Sync>,
    },
    /// Plain HTTP/1.1 (probes and metrics).
    Plain,
}

/// What `serve` needs besides the listener and the service.
pub struct Listener {
    /// Name for logs and metrics (`webhook`, `api`, `metrics`).
    pub name: &'static str,
    pub transport: Transport,
    pub limits: Limits,
    pub metrics: ListenerMetrics,
}

/// The largest request head (HTTP/1 buffer, HTTP/2 header list) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// HTTP/2 flow-control windows: what a client may send before we read it.
/// Small windows bound the memory an unread stream holds; 64 KiB per stream
/// still moves a 3 MiB review in well under a millisecond per round trip.
/// The connection's window holds sixteen streams' worth, so a few streams
/// whose bodies are not read yet do not stall the others.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// After a deadline asks a connection to close, how long it may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Connections the kernel may hold for a listener before it is accepted.
/// Past the backlog, Linux silently drops a client's final handshake ACK: the
/// client believes it is connected to a server that never saw it, and no
/// deadline here can close it. Linux caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] (tokio's `bind` uses 1024).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Builds the rustls configuration: certificates from the resolver, ALPN h2
/// then http/1.1.
fn server_config(resolver: Arc<ReloadingResolver>) -> ServerConfig {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The HTTP/1.1 and HTTP/2 connection settings of one listener.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_header_timeout())
            .max_buf_size(MAX_HEADER_BYTES);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(limits.keep_alive_interval())
            .keep_alive_timeout(limits.keep_alive_interval());
        Protocols { http1, http2 }
    }
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains
/// open connections for at most `limits.drainTimeoutSeconds`.
pub async fn serve<S, B>(
    listener: TcpListener,
    settings: Listener,
    service: S,
    shutdown: CancellationToken,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let Listener {
        name,
        transport,
        limits,
        metrics,
    } = settings;
    let acceptor = match &transport {
        Transport::Tls {
            resolver,
            on_reload,
        } => {
            on_reload(resolver);
            Some(TlsAcceptor::from(Arc::new(server_config(resolver.clone()))))
        }
        Transport::Plain => None,
    };
    let protocols = Arc::new(Protocols::new(&limits));
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Cancelled when the drain time is over: connections still open close.
    let hard_stop = CancellationToken::new();

    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once (rather than not accepting) keeps the kernel's
            // backlog free for connections that will be served.
            metrics.refused(name);
            debug!(listener = name, %peer, max = limits.max_connections, "connection refused: listener is full");
            continue;
        };
        if let Transport::Tls {
            resolver,
            on_reload,
        } = &transport
        {
            refresh_certificate(name, resolver, on_reload.as_ref());
        }
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            name,
            peer,
            acceptor: acceptor.clone(),
            protocols: protocols.clone(),
            limits: limits.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        };
        let service = service.clone();
        connections.spawn(async move {
            let _slot = slot;
            connection.run(tcp, service).await;
        });
    }

    drop(listener);
    connections.close();
    info!(
        listener = name,
        open = connections.len(),
        "draining connections"
    );
    tokio::select! {
        _ = connections.wait() => info!(listener = name, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout()) => {
            warn!(listener = name, "drain timed out; closing remaining connections");
            hard_stop.cancel();
            connections.wait().await;
        }
    }
}

fn refresh_certificate(
    name: &'static str,
    resolver: &ReloadingResolver,
    on_reload: &(dyn Fn(&ReloadingResolver) + Send + Sync),
) {
    match resolver.refresh() {
        Ok(true) => {
            info!(listener = name, "serving certificate reloaded");
            on_reload(resolver);
        }
        Ok(false) => {}
        Err(e) => {
            warn!(listener = name, error = %e, "certificate reload failed; keeping the previous one")
        }
    }
}

/// One accepted connection and everything it is bounded by.
struct Connection {
    name: &'static str,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    protocols: Arc<Protocols>,
    limits: Arc<Limits>,
    metrics: ListenerMetrics,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl Connection {
    async fn run<S, B>(self, tcp: TcpStream, service: S)
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let _open = self.metrics.opened(self.name);
        let activity = Activity::new();
        let service = connection::Tracked::new(service, self.peer, activity.clone());
        let closed = match &self.acceptor {
            None => {
                let conn = self
                    .protocols
                    .http1
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                self.drive(conn, &activity).await
            }
            Some(acceptor) => {
                let accept = acceptor.accept(tcp);
                let tls = match tokio::time::timeout(self.limits.handshake_timeout(), accept).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(listener = self.name, peer = %self.peer, error = %e, "TLS handshake failed");
                        return self.metrics.closed(self.name, Closed::HandshakeFailed);
                    }
                    Err(_) => {
                        debug!(listener = self.name, peer = %self.peer, "TLS handshake timed out");
                        return self.metrics.closed(self.name, Closed::HandshakeTimeout);
                    }
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(tls);
                if h2 {
                    let conn = self.protocols.http2.serve_connection(io, service);
                    self.drive(conn, &activity).await
                } else {
                    let conn = self.protocols.http1.serve_connection(io, service);
                    self.drive(conn, &activity).await
                }
            }
        };
        self.metrics.closed(self.name, closed);
    }

    /// Runs a connection until it ends, a deadline closes it, or the server
    /// shuts down. A deadline or shutdown first asks the connection to close
    /// gracefully (HTTP/2 GOAWAY, HTTP/1 after the current response), then
    /// drops it.
    async fn drive<C>(&self, conn: C, activity: &Activity) -> Closed
    where
        C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>,
    {
        tokio::pin!(conn);
        let mut closing: Option<(Closed, tokio::time::Instant)> = None;
        loop {
            let deadline = activity.deadline(&self.limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = &result {
                        debug!(listener = self.name, peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return match (closing, result) {
                        (Some((why, _)), _) => why,
                        // hyper's own request-head timer (HTTP/1) fired
                        // first: the same deadline as the watchdog's.
                        (None, Err(e)) if e.is_timeout() => activity.idle_reason(),
                        (None, _) => Closed::ByPeer,
                    };
                }
                _ = self.hard_stop.cancelled() => return Closed::Shutdown,
                _ = self.shutdown.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    // The drain timeout, not the close grace, bounds this one.
                    closing = Some((Closed::Shutdown, far_future()));
                }
                // Look again: the deadline may now be the (sooner) idle one.
                _ = activity.request_ended(), if closing.is_none() => {}
                _ = tokio::time::sleep_until(deadline), if closing.is_none() => {
                    if let Some(why) = activity.expired(&self.limits) {
                        debug!(listener = self.name, peer = %self.peer, reason = why.as_str(), "closing connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some((why, tokio::time::Instant::now() + CLOSE_GRACE));
                    }
                }
                _ = sleep_until_closing(&closing) => {
                    return closing.map_or(Closed::ByPeer, |(why, _)| why);
                }
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

async fn sleep_until_closing(closing: &Option<(Closed, tokio::time::Instant)>) {
    match closing {
        Some((_, by)) => tokio::time::sleep_until(*by).await,
        None => std::future::pending().await,
    }
}
