//! The pod API over HTTPS with no reachable cluster: what answers without one,
//! the error shape, routing errors, and what `/readyz` and `/metrics` say.
//! (Everything that needs an API server is in `tests/e2e/pod_api/`.)

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_testbed::server::Server;
use serde_json::Value;

/// A cluster that is never there: nothing listens on port 1.
fn unreachable_cluster() -> Source {
    let url = "https://127.0.0.1:1".parse().unwrap();
    Source::Config(Box::new(kube::Config::new(url)))
}

async fn start() -> Server {
    Server::start_with_cluster(Config::default(), unreachable_cluster()).await
}

async fn get(
    server: &Server,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = server.client().get(server.api_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn health_version_and_openapi_answer_without_a_cluster_or_token() {
    let server = start().await;

    let (status, _, health) = get(&server, "/api/v1/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["cluster"], "waiting");

    let (status, _, version) = get(&server, "/api/v1/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["gitCommit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(
        version["buildDate"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z'))
    );

    let (status, headers, openapi) = get(&server, "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/v1/pods/{namespace}/{name}"]["delete"].is_object());
    server.stop().await;
}

#[tokio::test]
async fn pod_routes_wait_for_the_cluster_with_a_clear_503() {
    let server = start().await;

    let (status, headers, body) = get(&server, "/api/v1/pods", Some("a.b.c")).await;

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], 503);
    assert_eq!(body["error"]["reason"], "ServiceUnavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("waiting for a cluster"), "{message}");
    assert!(headers.contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn what_needs_no_cluster_is_401_while_waiting_for_one() {
    let server = start().await;
    let client = server.client();
    let url = server.api_url("/api/v1/pods");
    let requests = [
        ("no Authorization", client.get(&url)),
        (
            "Basic scheme",
            client.get(&url).basic_auth("alice", Some("secret")),
        ),
        (
            "wrong X-Auth-Type",
            client
                .get(&url)
                .bearer_auth("a.b.c")
                .header("x-auth-type", "oidc"),
        ),
        ("not a JWT", client.get(&url).bearer_auth("hunter2")),
    ];
    for (name, request) in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], 401, "{name}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn readyz_reports_the_pod_api_waiting_without_holding_readiness_back() {
    let server = start().await;

    let response = reqwest::get(format!("http://{}/readyz", server.metrics))
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let parts: Value = response.json().await.unwrap();
    assert_eq!(parts["pod-api"]["state"], "waitingForCluster", "{parts}");
    assert_eq!(parts["webhook"]["state"], "ready", "{parts}");
    server.stop().await;
}

#[tokio::test]
async fn routing_errors_are_json_too() {
    let server = start().await;
    let client = server.client();

    let (status, _, body) = get(&server, "/api/v1/nothing", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["reason"], "NotFound");

    let response = client
        .post(server.api_url("/api/v1/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "MethodNotAllowed");

    let (status, _, body) = get(&server, "/api/v1/pods?namespace=Bad_Name", Some("a.b.c")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bad_Name")
    );

    let response = client
        .delete(server.api_url("/api/v1/pods/devenv/x"))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_expose_the_api_certificate() {
    let server = start().await;
    get(&server, "/api/v1/health", None).await;
    get(&server, "/api/v1/pods/devenv/some-pod", Some("a.b.c")).await;
    get(&server, "/api/v1/pods/devenv/other-pod", Some("a.b.c")).await;

    let text = server.metrics_text().await;

    assert!(
        text.contains(r#"api_requests_total{route="GET /api/v1/health",code="200"} 1"#),
        "{text}"
    );
    // The route template, never the pod name: bounded label values.
    assert!(
        text.contains(
            r#"api_requests_total{route="GET /api/v1/pods/{namespace}/{name}",code="503"} 2"#
        ),
        "{text}"
    );
    assert!(!text.contains("some-pod"), "{text}");
    assert!(
        text.contains(r#"tls_certificate_expiry_timestamp_seconds{listener="api"}"#),
        "{text}"
    );
    assert!(text.contains("tokenreview_requests_total 0"), "{text}");
    assert!(text.contains("tokenreview_cache_hits_total 0"), "{text}");
    server.stop().await;
}
