//! `devenv-manager check`: what the chart's `helm test` hook runs from inside
//! the cluster (the image is distroless: no shell, no curl). Three probes,
//! each an HTTP request and a verdict on its answer:
//!
//! - the webhook: a real AdmissionReview of a valid LearnerSpace, over HTTPS
//!   verified against the CA, answered `allowed` for the same uid;
//! - the pod API's `GET /api/v1/health`, over HTTPS verified against the CA:
//!   serving, connected to the API server, its pod cache synced;
//! - the metrics endpoint (plain HTTP): the Prometheus text with the
//!   webhook's families.
//!
//! The requests and verdicts are pure (unit-tested below); [`run`] sends
//! them, retrying each until it passes or the deadline comes, since a test
//! may start while a replica is still syncing. A Service name of the pod's
//! own namespace is resolved through the variables Kubernetes sets in every
//! pod (`DEVENV_MANAGER_SERVICE_HOST`), so the check needs no cluster DNS
//! (the test bed's node has none); other names through the system resolver.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::dns::Name;
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use crate::devenv_cli::client::{self, Ca, Connector};
use crate::webhook::VALIDATE_LEARNERSPACES_PATH;

/// The LearnerSpace the webhook is asked about; it is never stored (the
/// request goes to the webhook, not to the API server).
pub const LEARNERSPACE_NAME: &str = "devenv-manager-check";
/// A metric family the metrics endpoint always has (registered at start).
pub const METRIC_FAMILY: &str = "admission_requests";
/// Between two tries of a probe that failed.
const RETRY: Duration = Duration::from_secs(2);
/// One request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Setup(String),
    #[error("{what}: cannot build the request for {url}: {reason}")]
    Request {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{what}: cannot reach {url}: {reason}")]
    Unreachable {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{what}: {url} answered {status}: {detail}")]
    Answer {
        what: &'static str,
        url: String,
        status: StatusCode,
        detail: String,
    },
}

/// Where the three endpoints are, and what to trust.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The webhook's base URL (`https://devenv-manager.devenv-system.svc:443`).
    pub webhook: String,
    /// The pod API's base URL (`https://...:8080`).
    pub api: String,
    /// The metrics endpoint's base URL (`http://...:9090`).
    pub metrics: String,
    /// PEM file of the CA that signed the serving certificate.
    pub ca: PathBuf,
    /// Where the LearnerSpace of the webhook probe lives (`operator.namespace`).
    pub learnerspace_namespace: String,
    /// How long each probe is retried.
    pub timeout: Duration,
    /// The namespace this runs in (`POD_NAMESPACE`), whose Services'
    /// addresses are in the environment; `None`: DNS only.
    pub pod_namespace: Option<String>,
}

/// One probe: its name, its request and the verdict on the answer (a line
/// saying what passed, or why not).
#[derive(Debug, Clone)]
pub struct Probe {
    pub what: &'static str,
    pub method: Method,
    pub url: String,
    pub body: Option<Bytes>,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Admission,
    Health,
    Metrics,
}

impl Probe {
    /// The verdict on an answer: what passed, or what is wrong.
    pub fn judge(&self, status: StatusCode, body: &[u8]) -> Result<String, String> {
        if status != StatusCode::OK {
            return Err(excerpt(body));
        }
        match self.verdict {
            Verdict::Admission => judge_admission(body),
            Verdict::Health => judge_health(body),
            Verdict::Metrics => judge_metrics(body),
        }
    }

    /// The HTTP request (built anew for each try: a request is sent once).
    pub fn request(&self) -> Result<Request<Full<Bytes>>, CheckError> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(&self.url)
            .header(
                header::USER_AGENT,
                concat!("devenv-manager-check/", env!("CARGO_PKG_VERSION")),
            );
        if self.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(self.body.clone().unwrap_or_default()))
            .map_err(|e| CheckError::Request {
                what: self.what,
                url: self.url.clone(),
                reason: e.to_string(),
            })
    }
}

/// The uid of the probe's AdmissionReview (the answer must carry it back).
pub const REVIEW_UID: &str = "00000000-0000-4000-8000-00000000c4ec";

/// An AdmissionReview of a CREATE of a valid LearnerSpace, as the API
/// server would send it.
pub fn admission_review(namespace: &str) -> Value {
    let object = json!({
        "apiVersion": "aivo.dev/v1",
        "kind": "LearnerSpace",
        "metadata": {"name": LEARNERSPACE_NAME, "namespace": namespace},
        "spec": {"learnerId": "devenv-manager.check"}
    });
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": REVIEW_UID,
            "kind": {"group": "aivo.dev", "version": "v1", "kind": "LearnerSpace"},
            "resource": {"group": "aivo.dev", "version": "v1", "resource": "learnerspaces"},
            "name": LEARNERSPACE_NAME,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "devenv-manager-check", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": true
        }
    })
}

/// The three probes of `targets`, in the order they run.
pub fn probes(targets: &Targets) -> Result<Vec<Probe>, CheckError> {
    let review = serde_json::to_vec(&admission_review(&targets.learnerspace_namespace))
        .expect("a JSON value serializes");
    Ok(vec![
        probe(
            "webhook",
            Method::POST,
            &join(&targets.webhook, VALIDATE_LEARNERSPACES_PATH),
            Some(review),
            Verdict::Admission,
        )?,
        probe(
            "pod API",
            Method::GET,
            &join(&targets.api, "/api/v1/health"),
            None,
            Verdict::Health,
        )?,
        probe(
            "metrics",
            Method::GET,
            &join(&targets.metrics, "/metrics"),
            None,
            Verdict::Metrics,
        )?,
    ])
}

/// `base` (with or without a trailing `/`) followed by `path`.
fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// A probe, refused when its request cannot be built (a bad URL).
fn probe(
    what: &'static str,
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
    verdict: Verdict,
) -> Result<Probe, CheckError> {
    let probe = Probe {
        what,
        method,
        url: url.to_string(),
        body: body.map(Bytes::from),
        verdict,
    };
    probe.request()?;
    Ok(probe)
}

/// `allowed` for the probe's own uid.
fn judge_admission(body: &[u8]) -> Result<String, String> {
    let review: Value = serde_json::from_slice(body).map_err(|_| excerpt(body))?;
    let response = &review["response"];
    if response["uid"] != REVIEW_UID {
        return Err(format!("the answer is for uid {}", response["uid"]));
    }
    if response["allowed"] != true {
        return Err(format!(
            "a valid LearnerSpace was refused: {}",
            response["status"]["message"]
        ));
    }
    Ok("a valid LearnerSpace is allowed".to_string())
}

/// Serving, connected to the API server, pod cache synced.
fn judge_health(body: &[u8]) -> Result<String, String> {
    let health: Value = serde_json::from_slice(body).map_err(|_| excerpt(body))?;
    let expected = json!({"status": "ok", "cluster": "connected", "podCache": "synced"});
    if health != expected {
        return Err(format!("health is {health}, not {expected}"));
    }
    Ok("serving, connected, pod cache synced".to_string())
}

/// The Prometheus text, with [`METRIC_FAMILY`].
fn judge_metrics(body: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    let family = format!("# TYPE {METRIC_FAMILY} ");
    if !text.lines().any(|line| line.starts_with(&family)) {
        return Err(format!("no {METRIC_FAMILY} family in {}", excerpt(body)));
    }
    Ok(format!(
        "{} metric families",
        text.matches("# TYPE ").count()
    ))
}

/// The start of a body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
    if text.is_empty() {
        "an empty body".to_string()
    } else {
        format!("{text:?}")
    }
}

/// Runs every probe until it passes or `targets.timeout` has gone by; a
/// line per passed probe, or the first probe's last failure.
#[instrument(skip_all, fields(webhook = %targets.webhook, api = %targets.api, metrics = %targets.metrics))]
pub async fn run(targets: &Targets) -> Result<Vec<String>, CheckError> {
    let roots = client::trusted_roots(Ca::File(targets.ca.clone()))
        .map_err(|e| CheckError::Setup(e.to_string()))?;
    let resolver = ServiceEnvResolver {
        namespace: targets.pod_namespace.clone(),
    };
    let http: Client<Connector<ServiceEnvResolver>, Full<Bytes>> =
        client::http_client_with(roots, resolver).map_err(|e| CheckError::Setup(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + targets.timeout;
    let mut passed = Vec::new();
    for probe in probes(targets)? {
        let line = loop {
            match send(&http, &probe).await {
                Ok(line) => break line,
                Err(e) if tokio::time::Instant::now() + RETRY < deadline => {
                    warn!(probe = probe.what, error = %e, "probe failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(e),
            }
        };
        info!(probe = probe.what, result = %line, "probe passed");
        passed.push(format!("{}: {line}", probe.what));
    }
    Ok(passed)
}

/// One try of a probe.
async fn send(
    http: &Client<Connector<ServiceEnvResolver>, Full<Bytes>>,
    probe: &Probe,
) -> Result<String, CheckError> {
    let unreachable = |reason: String| CheckError::Unreachable {
        what: probe.what,
        url: probe.url.clone(),
        reason,
    };
    let request = probe.request()?;
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|e| client::root_cause(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| client::root_cause(&e))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable("timed out".to_string()))?
        .map_err(unreachable)?;
    probe
        .judge(status, &body)
        .map_err(|detail| CheckError::Answer {
            what: probe.what,
            url: probe.url.clone(),
            status,
            detail,
        })
}

/// The variable that holds the address of `host`, when `host` names a
/// Service of `namespace` (`NAME.NAMESPACE.svc`, optionally followed by
/// `.cluster.local`): `NAME_SERVICE_HOST`, upper case, `-` as `_`, as the
/// kubelet sets it.
pub fn service_host_variable(host: &str, namespace: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    let rest = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (service, in_namespace) = rest.split_once('.')?;
    (in_namespace == namespace && !service.is_empty())
        .then(|| format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_")))
}

/// Resolves Services of its namespace from the environment
/// ([`service_host_variable`]), anything else through the system resolver.
#[derive(Clone)]
pub struct ServiceEnvResolver {
    namespace: Option<String>,
}

type Resolved =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for ServiceEnvResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolved;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let from_env = self
            .namespace
            .as_deref()
            .and_then(|ns| service_host_variable(name.as_str(), ns))
            .and_then(|variable| std::env::var(variable).ok())
            .and_then(|value| value.parse::<IpAddr>().ok());
        let host = name.as_str().to_string();
        Box::pin(async move {
            if let Some(ip) = from_env {
                return Ok(vec![SocketAddr::new(ip, 0)].into_iter());
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(found.into_iter())
        })
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
