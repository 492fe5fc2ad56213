//! HTTPS client of the pod API: hyper's client over rustls, the stack kube
//! already brings (see docs/cli.md for why not reqwest), trusting only the
//! given CA, HTTP/2 or HTTP/1.1 as ALPN picks. Turns every failure into one
//! readable sentence.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::api::auth::AUTH_TYPE;
use crate::api::view::{DeleteResult, PodList, PodSummary};

/// Until the TCP connection and the TLS handshake are done.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole request, connection and answer body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("devenv/", env!("CARGO_PKG_VERSION"));

/// The CA to trust.
#[derive(Debug, Clone)]
pub enum Ca {
    File(PathBuf),
    Pem(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach the manager at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The API's own error body: its message, code and reason.
    #[error("{message} ({code} {reason})")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("unexpected answer from the manager ({status}): {detail}")]
    Unexpected { status: StatusCode, detail: String },
}

/// The manager's base URL: `http(s)://authority/prefix`.
#[derive(Debug, Clone)]
pub struct BaseUrl {
    https: bool,
    authority: Authority,
    /// The path before `/api/v1`, without its trailing `/` (often empty).
    prefix: String,
}

impl BaseUrl {
    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}/", self.scheme(), self.authority, self.prefix)
    }
}

/// The connector of [`http_client`] (also `devenv-manager check`'s, with
/// its own resolver).
pub(crate) type Connector<R = GaiResolver> = Timed<HttpsConnector<HttpConnector<R>>>;

pub struct ManagerClient {
    base: BaseUrl,
    token: String,
    http: Client<Connector, Empty<Bytes>>,
}

impl ManagerClient {
    /// A client of the pod API at `url`. A plain `http://` URL is refused
    /// (the token would cross the network in clear text) unless it names
    /// this machine's loopback interface or `allow_http` is set.
    pub fn new(
        url: &str,
        token_file: &Path,
        ca: Option<Ca>,
        allow_http: bool,
    ) -> Result<Self, ClientError> {
        let base = manager_url(url, allow_http)?;
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| {
                ClientError::Setup(format!(
                    "cannot read the token file {} ({e}); set DEVENV_TOKEN_FILE or run inside a devenv pod",
                    token_file.display()
                ))
            })?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(ClientError::Setup(format!(
                "the token file {} is empty",
                token_file.display()
            )));
        }
        let roots = match ca {
            Some(ca) => trusted_roots(ca)?,
            None if base.https => {
                return Err(ClientError::Setup(format!(
                    "no CA to trust for {url}: pass --ca-file, set DEVENV_MANAGER_CA, or mount {}",
                    super::DEFAULT_CA_FILE
                )));
            }
            // Plain http: no certificate is ever checked.
            None => rustls::RootCertStore::empty(),
        };
        Ok(ManagerClient {
            base,
            token,
            http: http_client(roots)?,
        })
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = format!(
            "{}://{}{}/api/v1",
            self.base.scheme(),
            self.base.authority,
            self.base.prefix
        );
        // Nothing a user types can leave its path segment: `/` and the rest
        // are percent-encoded, and `.`/`..` (which a server may resolve) dropped.
        for segment in segments.iter().filter(|s| !matches!(**s, "." | "..")) {
            url.push('/');
            url.push_str(&percent_encode(segment));
        }
        url
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: String,
    ) -> Result<T, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.to_string(),
            reason,
        };
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header("X-Auth-Type", AUTH_TYPE)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::new())
            .map_err(|e| ClientError::Setup(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| root_cause(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| root_cause(&e))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(TIMED_OUT.to_string()))?
            .map_err(unreachable)?;
        answer(status, &body)
    }

    pub async fn list(&self, namespace: Option<&str>) -> Result<PodList, ClientError> {
        let mut url = self.url(&["pods"]);
        if let Some(ns) = namespace {
            url.push_str("?namespace=");
            url.push_str(&percent_encode(ns));
        }
        self.call(Method::GET, url).await
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<PodSummary, ClientError> {
        self.call(Method::GET, self.url(&["pods", namespace, name]))
            .await
    }

    pub async fn delete(&self, namespace: &str, name: &str) -> Result<DeleteResult, ClientError> {
        self.call(Method::DELETE, self.url(&["pods", namespace, name]))
            .await
    }
}

/// The answer's body as `T`, or the API's error as [`ClientError::Api`].
fn answer<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| ClientError::Unexpected {
            status,
            detail: format!("cannot read the answer: {e}"),
        });
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(serde::Deserialize)]
    struct ErrorDetail {
        code: u16,
        reason: String,
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => Err(ClientError::Api {
            code: error.code,
            reason: error.reason,
            message: error.message,
        }),
        Err(_) => Err(ClientError::Unexpected {
            status,
            detail: String::from_utf8_lossy(body).chars().take(200).collect(),
        }),
    }
}

/// Only the given CA: never the system roots.
pub(crate) fn trusted_roots(ca: Ca) -> Result<rustls::RootCertStore, ClientError> {
    let (pem, origin) = match ca {
        Ca::File(path) => (
            std::fs::read(&path).map_err(|e| {
                ClientError::Setup(format!("cannot read the CA file {}: {e}", path.display()))
            })?,
            path.display().to_string(),
        ),
        Ca::Pem(pem) => (pem, "DEVENV_MANAGER_CA".to_string()),
    };
    let no_certificate = || ClientError::Setup(format!("{origin} holds no PEM certificate"));
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| no_certificate())?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(no_certificate());
    }
    Ok(roots)
}

/// hyper's pooled client over rustls (ring, as the server), HTTP/2 or
/// HTTP/1.1 by ALPN, plain http allowed (`manager_url` decided when).
fn http_client(
    roots: rustls::RootCertStore,
) -> Result<Client<Connector, Empty<Bytes>>, ClientError> {
    http_client_with(roots, GaiResolver::new())
}

/// [`http_client`] with another body type and name resolver.
pub(crate) fn http_client_with<B, R>(
    roots: rustls::RootCertStore,
    resolver: R,
) -> Result<Client<Connector<R>, B>, ClientError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = std::net::SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
{
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Setup(format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = HttpConnector::new_with_resolver(resolver);
    // The TLS layer takes https URLs; it hands this the TCP part.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new()).build(Timed(https)))
}

/// The manager's base URL, refused when it is not http(s), or when it is
/// plain http to anything but loopback without `allow_http`.
pub fn manager_url(url: &str, allow_http: bool) -> Result<BaseUrl, ClientError> {
    let not_http = || ClientError::Setup(format!("manager URL {url:?} is not an http(s) URL"));
    let uri: Uri = url.parse().map_err(|_| not_http())?;
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(not_http()),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(not_http)?;
    let base = BaseUrl {
        https,
        authority,
        prefix: uri.path().trim_end_matches('/').to_string(),
    };
    if !https && !allow_http && !is_loopback(base.authority.host()) {
        return Err(ClientError::Setup(format!(
            "refusing to send your token in clear text to {url}: use an https:// URL, \
             or pass --insecure-http if you accept that anyone on the way can read it"
        )));
    }
    Ok(base)
}

/// `localhost`, 127.0.0.0/8 or ::1: traffic that never leaves the machine.
fn is_loopback(host: &str) -> bool {
    // An IPv6 host comes in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Every byte but the unreserved ones (RFC 3986) as `%XX`: safe in a path
/// segment and in a query value alike.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const TIMED_OUT: &str = "timed out";

/// The innermost cause of a client error ("Connection refused (os error
/// 111)", "invalid peer certificate: UnknownIssuer"), which is what a person
/// needs to read; any timeout reads "timed out".
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    loop {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            || cause.is::<ConnectTimedOut>()
        {
            return TIMED_OUT.to_string();
        }
        match cause.source() {
            Some(source) => cause = source,
            None => return cause.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("timed out")]
struct ConnectTimedOut;

/// A connector that gives up after [`CONNECT_TIMEOUT`], TLS handshake
/// included (`HttpConnector`'s own timeout covers the TCP connect only).
#[derive(Clone)]
pub(crate) struct Timed<C>(C);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for Timed<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(ConnectTimedOut.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<ManagerClient, ClientError> {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc.def.ghi\n").unwrap();
        ManagerClient::new(url, &token, None, true)
    }

    #[test]
    fn urls_are_built_segment_by_segment() {
        let c = client("http://manager:8080").unwrap();
        assert_eq!(
            c.url(&["pods", "devenv", "ws-0"]).as_str(),
            "http://manager:8080/api/v1/pods/devenv/ws-0"
        );
        let c = client("http://manager:8080/prefix/").unwrap();
        assert_eq!(
            c.url(&["pods"]).as_str(),
            "http://manager:8080/prefix/api/v1/pods"
        );
        // Nothing a user types can escape its path segment (`..` is dropped
        // by the url crate, and the server answers 404 for the short path).
        assert_eq!(
            c.url(&["pods", "..", "a/b"]).as_str(),
            "http://manager:8080/prefix/api/v1/pods/a%2Fb"
        );
        assert_eq!(c.token, "abc.def.ghi");
    }

    #[test]
    fn setup_errors_are_clear() {
        let err = client("ftp://x").err().unwrap().to_string();
        assert!(err.contains("not an http(s) URL"), "{err}");
        let err = client("https://manager:8080").err().unwrap().to_string();
        assert!(err.contains("no CA to trust"), "{err}");
        let err = ManagerClient::new("http://m", Path::new("/nonexistent/token"), None, true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cannot read the token file /nonexistent/token"),
            "{err}"
        );
    }

    #[test]
    fn clear_text_is_refused_unless_loopback_or_asked_for() {
        for url in [
            "http://devenv-manager.devenv-system.svc:8080",
            "http://10.0.0.7:8080",
            "HTTP://manager",
            "http://localhost.example.com",
        ] {
            let err = manager_url(url, false).unwrap_err().to_string();
            assert!(
                err.starts_with("refusing to send your token in clear text to ")
                    && err.contains("--insecure-http"),
                "{url}: {err}"
            );
            assert!(manager_url(url, true).is_ok(), "{url} with --insecure-http");
        }
        for url in [
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://[::1]:8080",
            "https://devenv-manager.devenv-system.svc:8080",
        ] {
            assert!(manager_url(url, false).is_ok(), "{url}");
        }
        // Refused before anything else is looked at (the token file here).
        let err = ManagerClient::new("http://m:8080", Path::new("/nonexistent"), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("clear text"), "{err}");
    }

    #[test]
    fn queries_and_segments_are_percent_encoded() {
        assert_eq!(percent_encode("devenv"), "devenv");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let base = manager_url("HTTPS://[::1]:8443/p/", false).unwrap();
        assert_eq!(base.to_string(), "https://[::1]:8443/p/");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let err = trusted_roots(Ca::Pem(b"not a certificate".to_vec())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DEVENV_MANAGER_CA holds no PEM certificate"
        );
        let certs = crate::tls::generate(&["localhost".to_string()]).unwrap();
        assert!(trusted_roots(Ca::Pem(certs.ca_pem.into_bytes())).is_ok());
    }

    #[test]
    fn timeouts_read_timed_out() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "os said so");
        assert_eq!(root_cause(&io), "timed out");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(root_cause(&refused), "refused");
        let boxed: BoxError = ConnectTimedOut.into();
        assert_eq!(root_cause(boxed.as_ref()), "timed out");
    }

    /// A TLS server whose certificate another CA signed is refused; with the
    /// CA that signed it, the client speaks HTTP/2 (chosen by ALPN).
    #[tokio::test]
    async fn only_the_given_ca_is_trusted_and_http2_is_negotiated() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let served = crate::tls::generate(&["localhost".to_string()]).unwrap();
        let other = crate::tls::generate(&["localhost".to_string()]).unwrap();
        let certificate = CertificateDer::pem_slice_iter(served.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificate, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (alpn_tx, mut alpn_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, alpn_tx) = (acceptor.clone(), alpn_tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = alpn_tx.send(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                    // Enough of a server to see the client's HTTP/2 preface.
                    let mut preface = [0u8; 24];
                    let _ = tls.read_exact(&mut preface).await;
                    let _ = alpn_tx.send(Some(preface.to_vec()));
                    let _ = tls.shutdown().await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc.def.ghi\n").unwrap();
        let url = format!("https://localhost:{port}");

        let stranger = ManagerClient::new(
            &url,
            &token,
            Some(Ca::Pem(other.ca_pem.into_bytes())),
            false,
        )
        .unwrap();
        let err = stranger.list(None).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach the manager at https://localhost:{port}/: "))
                // Both CAs carry the same name: the signature is what fails.
                && err.contains("invalid peer certificate"),
            "{err}"
        );

        let trusted = ManagerClient::new(
            &url,
            &token,
            Some(Ca::Pem(served.ca_pem.into_bytes())),
            false,
        )
        .unwrap();
        let _ = trusted.list(None).await;
        let mut seen = Vec::new();
        while let Ok(Some(item)) = alpn_rx.try_recv() {
            seen.push(item);
        }
        assert!(seen.contains(&b"h2".to_vec()), "{seen:?}");
        assert!(
            seen.contains(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
            "{seen:?}"
        );
    }
}
