//! HTTPS client of the pod API (reqwest with rustls, trusting only the given
//! CA). Turns every failure into one readable sentence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use crate::api::auth::AUTH_TYPE;
use crate::api::view::{DeleteResult, PodList, PodSummary};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

pub struct ManagerClient {
    base: Url,
    token: String,
    http: reqwest::Client,
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
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("devenv/", env!("CARGO_PKG_VERSION")));
        match ca {
            Some(ca) => {
                let (pem, origin) = match ca {
                    Ca::File(path) => (
                        std::fs::read(&path).map_err(|e| {
                            ClientError::Setup(format!(
                                "cannot read the CA file {}: {e}",
                                path.display()
                            ))
                        })?,
                        path.display().to_string(),
                    ),
                    Ca::Pem(pem) => (pem, "DEVENV_MANAGER_CA".to_string()),
                };
                let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        ClientError::Setup(format!("{origin} holds no PEM certificate"))
                    })?;
                for certificate in certificates {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            None if base.scheme() == "https" => {
                return Err(ClientError::Setup(format!(
                    "no CA to trust for {url}: pass --ca-file, set DEVENV_MANAGER_CA, or mount {}",
                    super::DEFAULT_CA_FILE
                )));
            }
            None => {}
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build the HTTPS client: {e}")))?;
        Ok(ManagerClient { base, token, http })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // A base URL that cannot hold a path was refused in `new`.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
    ) -> Result<T, ClientError> {
        let response = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .header("X-Auth-Type", AUTH_TYPE)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.to_string(),
                reason: root_cause(&e),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.to_string(),
                reason: root_cause(&e),
            })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
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
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => Err(ClientError::Api {
                code: error.code,
                reason: error.reason,
                message: error.message,
            }),
            Err(_) => Err(ClientError::Unexpected {
                status,
                detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }

    pub async fn list(&self, namespace: Option<&str>) -> Result<PodList, ClientError> {
        let mut url = self.url(&["pods"]);
        if let Some(ns) = namespace {
            url.query_pairs_mut().append_pair("namespace", ns);
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

/// The manager's base URL, refused when it is not http(s), or when it is
/// plain http to anything but loopback without `allow_http`.
pub fn manager_url(url: &str, allow_http: bool) -> Result<Url, ClientError> {
    let base = Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.has_host())
        .ok_or_else(|| ClientError::Setup(format!("manager URL {url:?} is not an http(s) URL")))?;
    if base.scheme() == "http" && !allow_http && !is_loopback(&base) {
        return Err(ClientError::Setup(format!(
            "refusing to send your token in clear text to {url}: use an https:// URL, \
             or pass --insecure-http if you accept that anyone on the way can read it"
        )));
    }
    Ok(base)
}

/// `localhost`, 127.0.0.0/8 or ::1: traffic that never leaves the machine.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host comes in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The innermost cause of a reqwest error ("connection refused", "invalid
/// peer certificate: UnknownIssuer"), which is what a person needs to read.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_timeout() {
        return "timed out".to_string();
    }
    cause.to_string()
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
}
