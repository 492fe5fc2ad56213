//! Starts `devenv-manager serve` in-process on ephemeral ports with generated
//! certificates, and builds HTTPS clients that verify its CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_manager::serve::{self, Running};
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub webhook: SocketAddr,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub cert_dir: PathBuf,
    pub shutdown: CancellationToken,
    pub running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(Config::default()).await
    }

    /// Never connects to a cluster: tests of the webhook alone must not reach
    /// whatever cluster this machine's kubeconfig names.
    pub async fn start_with(config: Config) -> Server {
        Self::start_with_cluster(config, Source::Never).await
    }

    /// Like [`Server::start_with`], with the pod API's cluster given.
    pub async fn start_with_cluster(config: Config, cluster: Source) -> Server {
        Self::start_operator(config, cluster, "devenv-manager-test".to_string()).await
    }

    /// Like [`Server::start_with_cluster`], naming the operator replica.
    pub async fn start_operator(mut config: Config, cluster: Source, identity: String) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_dir = dir.path().join("certs");
        config.webhook.bind = "127.0.0.1:0".parse().unwrap();
        config.api.bind = "127.0.0.1:0".parse().unwrap();
        config.metrics.bind = "127.0.0.1:0".parse().unwrap();
        config.webhook.cert_dir = cert_dir.clone();
        config.api.cert_dir = cert_dir.clone();
        let shutdown = CancellationToken::new();
        let options = serve::Options {
            cluster,
            identity,
            in_pod: false,
        };
        let running = serve::start(config, shutdown.clone(), options)
            .await
            .expect("server starts");
        Server {
            webhook: running.webhook_addr,
            api: running.api_addr,
            metrics: running.metrics_addr,
            cert_dir,
            shutdown,
            running: Some(running),
            _dir: dir,
        }
    }

    pub fn webhook_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.webhook.port())
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.api.port())
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.cert_dir.join("ca.crt"))
    }

    /// POSTs JSON to a webhook path: the status and the body as text.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .client()
            .post(self.webhook_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.expect("clean shutdown");
        }
    }
}

/// A client that trusts only the CA in `ca_file`, with a fresh connection
/// pool (so a test sees the certificate a new connection gets).
pub fn client_trusting(ca_file: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_file).expect("CA file");
    let ca = reqwest::Certificate::from_pem(&pem).expect("CA PEM");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client")
}

/// A raw TLS connection to `addr` that verifies the CA in `ca_file` and
/// offers exactly `alpn` (`h2`, `http/1.1`): for tests that speak bytes, not
/// HTTP (idle connections, a bare HTTP/2 preface, a body written before the
/// answer is read).
pub async fn tls_connect(
    addr: SocketAddr,
    ca_file: &Path,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    devenv_manager::tls::install_crypto_provider();
    let pem = std::fs::read(ca_file).expect("CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the peer closes the connection (EOF or reset), returning what
/// was read; panics if it stays open for `patience` (a hang guard for a test
/// that would otherwise never end, not a measure of speed).
pub async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    patience: std::time::Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(patience, read_all)
        .await
        .expect("the server never closed the connection");
    seen
}
