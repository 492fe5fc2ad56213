//! The pod API's HTTP edge (warp): one filter that hands method, path, query,
//! headers and client address to [`handle`], which finds the route, runs it,
//! maps any error in one place ([`ApiError::into_response`]), and writes the
//! access log line and the metrics.
//!
//! Routing is a pure function ([`Route::parse`]) rather than a tree of warp
//! filters, so that unknown paths, wrong methods and bad parameters get the
//! same JSON errors, metrics and log line as everything else.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, field};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::{Filter, Reply};

use super::error::ApiError;
use super::pods::{Deleted, delete_developers_pod, is_developers_pod};
use super::view::{DeleteResult, DeleteStatus, PodList, PodSummary};
use super::{PodApi, json_response, openapi, version};
use crate::names::is_dns1123_label;
use crate::server::PeerAddr;

/// A request may take this long, TokenReview and delete included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// No route takes a body; a small one (a DeleteOptions a client sends out of
/// habit) is ignored, a larger one refused without being read.
const MAX_BODY_BYTES: u64 = 4096;

pub const PREFIX: &str = "/api/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Version,
    OpenApi,
    ListPods { namespace: Option<String> },
    GetPod { namespace: String, name: String },
    DeletePod { namespace: String, name: String },
}

/// A route that did not parse, with the metrics label it is counted under.
pub type Unrouted = (ApiError, &'static str);

impl Route {
    /// The route template: the `route` label of `api_requests_total`.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Health => "GET /api/v1/health",
            Route::Version => "GET /api/v1/version",
            Route::OpenApi => "GET /api/v1/openapi.json",
            Route::ListPods { .. } => "GET /api/v1/pods",
            Route::GetPod { .. } => "GET /api/v1/pods/{namespace}/{name}",
            Route::DeletePod { .. } => "DELETE /api/v1/pods/{namespace}/{name}",
        }
    }

    /// Every route template, for the OpenAPI drift test.
    pub const TEMPLATES: [&'static str; 6] = [
        "GET /api/v1/health",
        "GET /api/v1/version",
        "GET /api/v1/openapi.json",
        "GET /api/v1/pods",
        "GET /api/v1/pods/{namespace}/{name}",
        "DELETE /api/v1/pods/{namespace}/{name}",
    ];

    pub fn needs_authentication(&self) -> bool {
        !matches!(self, Route::Health | Route::Version | Route::OpenApi)
    }

    /// Finds the route for a request; 404, 405 or 400 otherwise.
    pub fn parse(method: &Method, path: &str, query: &str) -> Result<Route, Unrouted> {
        const UNMATCHED: &str = "unmatched";
        let not_found = || (ApiError::RouteNotFound(path.to_string()), UNMATCHED);
        let segments: Vec<&str> = path
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(not_found)?
            .split('/')
            .collect();
        let (route, allow) = match segments.as_slice() {
            ["health"] => (Route::Health, "GET"),
            ["version"] => (Route::Version, "GET"),
            ["openapi.json"] => (Route::OpenApi, "GET"),
            ["pods"] => {
                let namespace = list_namespace(query).map_err(|e| (e, "GET /api/v1/pods"))?;
                (Route::ListPods { namespace }, "GET")
            }
            ["pods", namespace, name] => {
                let (namespace, name) = (namespace.to_string(), name.to_string());
                let route = if method == Method::DELETE {
                    Route::DeletePod { namespace, name }
                } else {
                    Route::GetPod { namespace, name }
                };
                (route, "GET, DELETE")
            }
            _ => return Err(not_found()),
        };
        let allowed = match route {
            Route::DeletePod { .. } => true,
            _ => method == Method::GET,
        };
        if !allowed {
            return Err((
                ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    allow,
                },
                UNMATCHED,
            ));
        }
        if let Route::GetPod { namespace, name } | Route::DeletePod { namespace, name } = &route {
            check_pod_names(namespace, name).map_err(|e| (e, route.template()))?;
        }
        Ok(route)
    }
}

/// `?namespace=NS`, the only query parameter of the list.
fn list_namespace(query: &str) -> Result<Option<String>, ApiError> {
    let mut namespace = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            // `?namespace=` means no filter, as kubectl's `-n ""` does.
            "namespace" if value.is_empty() => {}
            "namespace" if is_dns1123_label(value) => namespace = Some(value.to_string()),
            "namespace" => {
                return Err(ApiError::BadRequest(format!(
                    "namespace {value:?} is not a valid namespace name"
                )));
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {key:?}; only 'namespace' is accepted"
                )));
            }
        }
    }
    Ok(namespace)
}

/// Namespace: a DNS-1123 label; pod name: a DNS-1123 subdomain (at most 253
/// characters of labels joined by dots).
fn check_pod_names(namespace: &str, name: &str) -> Result<(), ApiError> {
    if !is_dns1123_label(namespace) {
        return Err(ApiError::BadRequest(format!(
            "namespace {namespace:?} is not a valid namespace name"
        )));
    }
    if name.len() > 253 || !name.split('.').all(is_dns1123_label) {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not a valid pod name"
        )));
    }
    Ok(())
}

/// What [`handle`] needs of a request.
struct Request {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    client: Option<IpAddr>,
}

/// Every path of the pod API.
pub fn routes(
    api: Arc<PodApi>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<PeerAddr>())
        .then(
            move |method, path: warp::path::FullPath, query, headers, peer: Option<PeerAddr>| {
                let request = Request {
                    method,
                    path: path.as_str().to_string(),
                    query,
                    headers,
                    client: peer.map(|PeerAddr(addr)| addr.ip()),
                };
                handle(api.clone(), request)
            },
        )
}

/// Who made a request, for the access log.
#[derive(Default)]
struct Caller {
    developer: Option<String>,
}

async fn handle(api: Arc<PodApi>, request: Request) -> warp::reply::Response {
    let started = Instant::now();
    let parsed = Route::parse(&request.method, &request.path, &request.query);
    let template = match &parsed {
        Ok(route) => route.template(),
        Err((_, template)) => template,
    };
    let (namespace, pod) = match &parsed {
        Ok(Route::GetPod { namespace, name } | Route::DeletePod { namespace, name }) => {
            (Some(namespace.as_str()), Some(name.as_str()))
        }
        Ok(Route::ListPods { namespace }) => (namespace.as_deref(), None),
        _ => (None, None),
    };
    let span = tracing::info_span!(
        "api_request",
        route = template,
        developer = field::Empty,
        namespace,
        pod,
    );
    let mut caller = Caller::default();
    let outcome = async {
        let route = parsed.map_err(|(error, _)| error)?;
        if let Some(length) = content_length(&request.headers)
            && length > MAX_BODY_BYTES {
                return Err(ApiError::BadRequest(format!(
                    "request bodies over {MAX_BODY_BYTES} bytes are refused; no route takes one"
                )));
            }
        match tokio::time::timeout(REQUEST_TIMEOUT, answer(&api, route, &request, &mut caller))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(ApiError::Unavailable(format!(
                "the request did not complete within {REQUEST_TIMEOUT:?}; the Kubernetes API server may be overloaded"
            ))),
        }
    }
    .instrument(span.clone())
    .await;
    let response = outcome.unwrap_or_else(ApiError::into_response);

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    api.metrics
        .api
        .answered(template, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: "devenv_manager::api::access",
            developer = caller.developer.as_deref().unwrap_or("-"),
            method = %request.method,
            path = %request.path,
            route = template,
            status,
            latency_ms = elapsed.as_secs_f64() * 1e3,
            client = %request.client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            "request"
        );
    });
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(warp::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn answer(
    api: &PodApi,
    route: Route,
    request: &Request,
    caller: &mut Caller,
) -> Result<warp::reply::Response, ApiError> {
    match route {
        Route::Health => return Ok(json_response(StatusCode::OK, &api.health())),
        Route::Version => return Ok(json_response(StatusCode::OK, &version::VersionInfo::get())),
        Route::OpenApi => {
            return Ok(warp::reply::with_header(
                openapi::document(),
                "content-type",
                "application/json",
            )
            .into_response());
        }
        _ => {}
    }
    let backend = api.backend();
    let reviewer = match &backend {
        Ok(backend) => Ok(&backend.reviewer as &dyn super::auth::TokenReviewer),
        Err(e) => Err(e.clone()),
    };
    let developer = api
        .authenticator
        .authenticate(reviewer, &request.headers, request.client)
        .await?;
    let backend = backend?;
    tracing::Span::current().record("developer", developer.name.as_str());
    caller.developer = Some(developer.name.clone());
    api.developer_limit
        .try_acquire(&developer.name, Instant::now())
        .map_err(ApiError::RateLimited)?;

    let devenv = &api.devenv;
    let mine = |pod: &crate::k8s::Pod| is_developers_pod(devenv, pod, &developer.name);
    match route {
        Route::ListPods { namespace } => {
            if let Some(ns) = &namespace
                && !devenv.namespaces.contains(ns)
            {
                return Err(ApiError::BadRequest(format!(
                    "namespace {ns:?} is not a devenv namespace ({})",
                    devenv.namespaces.join(", ")
                )));
            }
            let items = backend
                .pods
                .list(namespace.as_deref(), &developer.name, mine)?
                .iter()
                .map(|pod| PodSummary::of(pod))
                .collect();
            Ok(json_response(StatusCode::OK, &PodList { items }))
        }
        Route::GetPod { namespace, name } => {
            let pod = backend
                .pods
                .get(&namespace, &name)?
                .filter(|pod| mine(pod))
                .ok_or(ApiError::PodNotFound { namespace, name })?;
            Ok(json_response(StatusCode::OK, &PodSummary::of(&pod)))
        }
        Route::DeletePod { namespace, name } => {
            let pod = backend
                .pods
                .get(&namespace, &name)?
                .filter(|pod| mine(pod))
                .ok_or_else(|| ApiError::PodNotFound {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })?;
            let deleted =
                delete_developers_pod(&backend.client, devenv, &developer.name, &pod).await?;
            let (status, word) = match deleted {
                Deleted::Gone => (StatusCode::OK, DeleteStatus::Deleted),
                Deleted::Terminating => (StatusCode::ACCEPTED, DeleteStatus::Terminating),
            };
            tracing::info!(developer = %developer.name, %namespace, pod = %name, result = ?word, "pod deleted");
            let result = DeleteResult {
                namespace,
                name,
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                status: word,
            };
            Ok(json_response(status, &result))
        }
        Route::Health | Route::Version | Route::OpenApi => Err(ApiError::Internal(
            "unauthenticated route reached the pod handlers".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str, query: &str) -> Result<Route, (u16, &'static str)> {
        Route::parse(&method, path, query).map_err(|(e, t)| (e.status().as_u16(), t))
    }

    #[test]
    fn routes_parse() {
        assert_eq!(parse(Method::GET, "/api/v1/health", ""), Ok(Route::Health));
        assert_eq!(
            parse(Method::GET, "/api/v1/version", ""),
            Ok(Route::Version)
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/openapi.json", ""),
            Ok(Route::OpenApi)
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods", ""),
            Ok(Route::ListPods { namespace: None })
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods", "namespace=devenv"),
            Ok(Route::ListPods {
                namespace: Some("devenv".into())
            })
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods", "namespace="),
            Ok(Route::ListPods { namespace: None })
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/devenv/ws-0", ""),
            Ok(Route::GetPod {
                namespace: "devenv".into(),
                name: "ws-0".into()
            })
        );
        assert_eq!(
            parse(Method::DELETE, "/api/v1/pods/devenv/a.b", ""),
            Ok(Route::DeletePod {
                namespace: "devenv".into(),
                name: "a.b".into()
            })
        );
    }

    #[test]
    fn bad_requests_and_unknown_routes() {
        assert_eq!(parse(Method::GET, "/", ""), Err((404, "unmatched")));
        assert_eq!(parse(Method::GET, "/api/v1", ""), Err((404, "unmatched")));
        assert_eq!(parse(Method::GET, "/api/v1/", ""), Err((404, "unmatched")));
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/", ""),
            Err((404, "unmatched"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/ns", ""),
            Err((404, "unmatched"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/ns/a/b", ""),
            Err((404, "unmatched"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v2/pods", ""),
            Err((404, "unmatched"))
        );
        assert_eq!(
            parse(Method::POST, "/api/v1/pods", ""),
            Err((405, "unmatched"))
        );
        assert_eq!(
            parse(Method::PUT, "/api/v1/pods/devenv/x", ""),
            Err((405, "unmatched"))
        );
        assert_eq!(
            parse(Method::DELETE, "/api/v1/health", ""),
            Err((405, "unmatched"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods", "namespace=Not_Valid"),
            Err((400, "GET /api/v1/pods"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods", "labelSelector=x"),
            Err((400, "GET /api/v1/pods"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/devenv/Bad_Name", ""),
            Err((400, "GET /api/v1/pods/{namespace}/{name}"))
        );
        assert_eq!(
            parse(Method::DELETE, "/api/v1/pods/devenv/a..b", ""),
            Err((400, "DELETE /api/v1/pods/{namespace}/{name}"))
        );
        assert_eq!(
            parse(Method::GET, "/api/v1/pods/UPPER/x", ""),
            Err((400, "GET /api/v1/pods/{namespace}/{name}"))
        );
        let long = "a".repeat(254);
        assert_eq!(
            parse(Method::GET, &format!("/api/v1/pods/devenv/{long}"), ""),
            Err((400, "GET /api/v1/pods/{namespace}/{name}"))
        );
    }

    #[test]
    fn templates_are_complete() {
        let routes = [
            Route::Health,
            Route::Version,
            Route::OpenApi,
            Route::ListPods { namespace: None },
            Route::GetPod {
                namespace: String::new(),
                name: String::new(),
            },
            Route::DeletePod {
                namespace: String::new(),
                name: String::new(),
            },
        ];
        let templates: Vec<&str> = routes.iter().map(Route::template).collect();
        assert_eq!(templates, Route::TEMPLATES);
        assert_eq!(
            routes.iter().filter(|r| r.needs_authentication()).count(),
            3
        );
    }
}
