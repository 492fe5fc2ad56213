//! Reconcile branches that the real API server cannot be made to reach at an
//! exact step (an error on one particular call), against a scripted mock API
//! (controller-rs's ApiServerVerifier pattern): each expected request is
//! checked by method and path, answered, and nothing else may be asked.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::operator::context::Stores;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn ready_store<K>() -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "aivo-system");
    let stores = Stores {
        learner_spaces: ready_store(),
        namespaces: ready_store(),
        network_policies: ready_store(),
        quotas: ready_store(),
        limit_ranges: ready_store(),
        service_accounts: ready_store(),
        roles: ready_store(),
        role_bindings: ready_store(),
        config_maps: ready_store(),
    };
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let context = Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config: OperatorConfig::default(),
        stores,
        metrics: Metrics::new(),
        written: Default::default(),
    };
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
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .expect("the client is gone");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path, "{method}");
    let response = Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    send.send_response(response);
}

#[tokio::test]
async fn a_failed_tombstone_holds_the_learnerspace_and_spares_the_namespace() {
    let (ctx, mut handle) = context();
    let ls = deleting();
    let namespace = crate::names::learner_namespace("john.doe");
    let tombstone = crate::names::tombstone_name("john.doe");

    let reconciling = tokio::spawn(reconcile(Arc::new(ls.clone()), ctx));
    let ns_body = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"aivo.dev/learnerspace": "john-doe"}}});
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
    let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "no further request"
    );
}

#[tokio::test]
async fn nothing_is_done_before_the_caches_are_synced() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "aivo-system");
    let (unsynced, _writer) = reflector::store();
    let (ctx, _) = context();
    let ctx = Context {
        client: client.clone(),
        stores: Stores {
            namespaces: unsynced,
            ..ctx.stores.clone()
        },
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        ),
        config: OperatorConfig::default(),
        metrics: Metrics::new(),
        written: Default::default(),
    };
    let action = reconcile(Arc::new(deleting()), Arc::new(ctx))
        .await
        .expect("requeued, not failed");
    assert_eq!(action, Action::requeue(Duration::from_millis(500)));
    let extra = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "no request while the caches fill"
    );
}
