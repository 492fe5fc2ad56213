//! The one HTTPS server both listeners use: tokio-rustls in front of
//! hyper-util's auto (HTTP/1.1 and HTTP/2) connection builder, around any
//! tower service (in practice `warp::service(filter)`; warp 0.4 has no TLS).
//!
//! Bounded handshakes and header reads keep slow clients from holding
//! connections; on shutdown it stops accepting and drains open connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ReloadingResolver;

/// The TCP peer of a connection, put in every request's extensions so that a
/// service can tell clients apart (the pod API rate-limits failed
/// authentications per address). Read it with `warp::ext::optional::<PeerAddr>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Wraps a service to add [`PeerAddr`] to each request of one connection.
#[derive(Debug, Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower_service::Service<http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(request)
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listener name for logs and metrics (`webhook`, `api`).
    pub name: &'static str,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How long open connections may finish their requests after shutdown.
    pub drain_timeout: Duration,
}

impl ServeOptions {
    pub fn new(name: &'static str) -> Self {
        ServeOptions {
            name,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        }
    }
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

/// Serves `service` over TLS on `listener` until `shutdown` is cancelled,
/// then drains. `on_reload` runs after each certificate reload.
pub async fn serve<S, B>(
    listener: TcpListener,
    resolver: Arc<ReloadingResolver>,
    service: S,
    options: ServeOptions,
    shutdown: CancellationToken,
    on_reload: impl Fn(&ReloadingResolver) + Send + Sync + 'static,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = TlsAcceptor::from(Arc::new(server_config(resolver.clone())));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    on_reload(&resolver);

    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = options.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match resolver.refresh() {
            Ok(true) => {
                info!(listener = options.name, "serving certificate reloaded");
                on_reload(&resolver);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(listener = options.name, error = %e, "certificate reload failed; keeping the previous one")
            }
        }
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(WithPeer {
            inner: service.clone(),
            peer,
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = options.handshake_timeout;
        let name = options.name;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => return debug!(listener = name, %peer, "TLS handshake timed out"),
            };
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    info!(
        listener = options.name,
        open = graceful.count(),
        "draining connections"
    );
    tokio::select! {
        _ = graceful.shutdown() => info!(listener = options.name, "drained"),
        _ = tokio::time::sleep(options.drain_timeout) => {
            warn!(listener = options.name, "drain timed out; closing remaining connections")
        }
    }
}
