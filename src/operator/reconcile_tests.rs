//! Reconcile branches that the real API server cannot be made to reach at an
//! exact step (an error on one particular call), against a scripted mock API
//! (controller-rs's ApiServerVerifier pattern): each expected request is
//! checked by method and path, answered, and nothing else may be asked.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::operator::context::{KindStores, Stores};
use crate::operator::preflight::DUPLICATE_RECHECK;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Every cache synced and empty.
fn synced_stores() -> Stores {
    let (learner_spaces, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    Stores {
        learner_spaces,
        managed: KindStores::synced_empty(),
    }
}

fn context() -> (Arc<Context>, Handle) {
    context_with(synced_stores())
}

/// A context over `stores` whose client is a mock API server.
fn context_with(stores: Stores) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "aivo-system");
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let context = Context::new(
        client,
        OperatorConfig::default(),
        stores,
        recorder,
        Metrics::new(),
        Default::default(),
    );
    (Arc::new(context), handle)
}

/// A LearnerSpace being deleted, still held by the finalizer.
fn deleting() -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {
            "name": "john-doe", "namespace": "aivo-system", "uid": "uid-1",
            "resourceVersion": "7", "generation": 1,
            "finalizers": ["aivo.dev/tombstone"],
            "deletionTimestamp": "2026-11-24T12:00:00Z"
        },
        "spec": {"learnerId": "john.doe", "subjects": ["mathematics"]},
        "status": {"phase": "Ready"}
    }))
    .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})
}

/// Expects one request, checks it, answers it.
async fn expect(handle: &mut Handle, method: &str, path: &str, code: StatusCode, body: Value) {
    expect_body(handle, method, path, code, body).await;
}

/// Like [`expect`], returning the request's body (JSON, or null).
async fn expect_body(
    handle: &mut Handle,
    method: &str,
    path: &str,
    code: StatusCode,
    body: Value,
) -> Value {
    use http_body_util::BodyExt;
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .expect("the client is gone");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path, "{method}");
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let response = Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    send.send_response(response);
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Asserts that no request follows.
async fn no_more_requests(handle: &mut Handle) {
    let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    match extra {
        Err(_) | Ok(None) => {}
        Ok(Some((request, _))) => {
            panic!("unexpected request {} {}", request.method(), request.uri())
        }
    }
}

/// A LearnerSpace that already holds its finalizer, with no status yet.
fn new_learner_space() -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {
            "name": "john-doe", "namespace": "aivo-system", "uid": "uid-2",
            "resourceVersion": "3", "generation": 1,
            "finalizers": ["aivo.dev/tombstone"]
        },
        "spec": {"learnerId": "john.doe"}
    }))
    .unwrap()
}

const STATUS_PATH: &str = "/apis/aivo.dev/v1/namespaces/aivo-system/learnerspaces/john-doe/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/aivo-system/events";

fn event_answer() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null})
}

/// A namespace with the learner's name that the manager did not make (absent
/// from the label-filtered cache, found by a live read): the LearnerSpace
/// fails with NamespaceTaken and a Warning Event, and not one request is
/// made into the namespace.
#[tokio::test]
async fn a_namespace_someone_else_made_is_not_adopted() {
    let (ctx, mut handle) = context();
    let ls = new_learner_space();
    let namespace = crate::names::learner_namespace("john.doe");
    let reconciling = tokio::spawn(reconcile(Arc::new(ls.clone()), ctx));

    // A squatter's namespace, even with our LearnerSpace label but not the
    // manager's, is not ours.
    let squatted = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"aivo.dev/learnerspace": "john-doe", "team": "squat"}}});
    expect(
        &mut handle,
        "GET",
        &format!("/api/v1/namespaces/{namespace}"),
        StatusCode::OK,
        squatted,
    )
    .await;
    let patch = expect_body(
        &mut handle,
        "PATCH",
        STATUS_PATH,
        StatusCode::OK,
        serde_json::to_value(&ls).unwrap(),
    )
    .await;
    let status = &patch["status"];
    assert_eq!(status["phase"], "Failed", "{patch}");
    assert_eq!(status["conditions"][0]["reason"], "NamespaceTaken");
    assert!(status.get("namespace").is_none(), "not claimed: {patch}");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("not adopted"), "{message}");
    let event = expect_body(
        &mut handle,
        "POST",
        EVENTS_PATH,
        StatusCode::CREATED,
        event_answer(),
    )
    .await;
    assert_eq!(event["reason"], "NamespaceTaken", "{event}");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], message);

    let action = tokio::time::timeout(Duration::from_secs(5), reconciling)
        .await
        .unwrap()
        .unwrap()
        .expect("a taken namespace is a state, not an error");
    assert_eq!(action, Action::requeue(DUPLICATE_RECHECK));
    no_more_requests(&mut handle).await;
}

/// Absent at the read, there by the create: the create fails, nothing is
/// applied over the namespace, and the reconcile is retried.
#[tokio::test]
async fn a_namespace_made_between_the_read_and_the_create_is_not_adopted() {
    let (ctx, mut handle) = context();
    let ls = new_learner_space();
    let namespace = crate::names::learner_namespace("john.doe");
    let reconciling = tokio::spawn(reconcile(Arc::new(ls.clone()), ctx));

    expect(
        &mut handle,
        "GET",
        &format!("/api/v1/namespaces/{namespace}"),
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    let created = expect_body(
        &mut handle,
        "POST",
        "/api/v1/namespaces",
        StatusCode::CONFLICT,
        status(409, "AlreadyExists"),
    )
    .await;
    assert_eq!(created["metadata"]["name"], namespace.as_str());
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "devenv-manager"
    );
    let patch = expect_body(
        &mut handle,
        "PATCH",
        STATUS_PATH,
        StatusCode::OK,
        serde_json::to_value(&ls).unwrap(),
    )
    .await;
    assert_eq!(patch["status"]["phase"], "Creating", "{patch}");
    expect(
        &mut handle,
        "POST",
        EVENTS_PATH,
        StatusCode::CREATED,
        event_answer(),
    )
    .await;

    let error = tokio::time::timeout(Duration::from_secs(5), reconciling)
        .await
        .unwrap()
        .unwrap()
        .expect_err("the conflict is reported");
    assert!(error.is_transient(), "retried soon: {error}");
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn a_failed_tombstone_holds_the_learnerspace_and_spares_the_namespace() {
    let (ctx, mut handle) = context();
    let ls = deleting();
    let namespace = crate::names::learner_namespace("john.doe");
    let tombstone = crate::names::tombstone_name("john.doe");

    let reconciling = tokio::spawn(reconcile(Arc::new(ls.clone()), ctx));
    let ns_body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"aivo.dev/learnerspace": "john-doe", "app.kubernetes.io/managed-by": "devenv-manager"}}});
    expect(
        &mut handle,
        "GET",
        &format!("/api/v1/namespaces/{namespace}"),
        StatusCode::OK,
        ns_body,
    )
    .await;
    let mut terminating = serde_json::to_value(&ls).unwrap();
    terminating["status"]["phase"] = json!("Terminating");
    expect(
        &mut handle,
        "PATCH",
        "/apis/aivo.dev/v1/namespaces/aivo-system/learnerspaces/john-doe/status",
        StatusCode::OK,
        terminating,
    )
    .await;
    expect(
        &mut handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/aivo-system/events",
        StatusCode::CREATED,
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}),
    )
    .await;
    expect(
        &mut handle,
        "GET",
        &format!("/api/v1/namespaces/aivo-system/configmaps/{tombstone}"),
        StatusCode::NOT_FOUND,
        status(404, "NotFound"),
    )
    .await;
    expect(
        &mut handle,
        "POST",
        "/api/v1/namespaces/aivo-system/configmaps",
        StatusCode::INTERNAL_SERVER_ERROR,
        status(500, "InternalError"),
    )
    .await;

    let result = tokio::time::timeout(Duration::from_secs(5), reconciling)
        .await
        .unwrap()
        .unwrap();
    let error = result.expect_err("a tombstone that could not be written fails the cleanup");
    assert!(error.is_transient(), "retried soon: {error}");
    // Neither the namespace deletion nor the finalizer release was asked for.
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn nothing_is_done_before_the_caches_are_synced() {
    let mut stores = synced_stores();
    let unsynced = crate::operator::cache::Cache::<Namespace>::default();
    stores.managed.insert(unsynced);
    let (ctx, mut handle) = context_with(stores);
    let action = reconcile(Arc::new(deleting()), ctx)
        .await
        .expect("requeued, not failed");
    assert_eq!(action, Action::requeue(Duration::from_millis(500)));
    let extra = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "no request while the caches fill"
    );
}
