//! Reads, ownership and deletion: a developer lists, gets and deletes their
//! own pods, and another's pod is exactly like a missing one, whatever its
//! label says or becomes.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Fixture, assert_error, pod_names};

#[tokio::test]
async fn developers_list_get_and_delete_their_own_pods() {
    let Some(f) = Fixture::new("podapi-own").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("alice-1", Some("alice"), "devenv-alice").await;
    f.pod("alice-2", Some("alice"), "devenv-alice").await;
    f.pod("bob-1", Some("bob"), "devenv-bob").await;
    f.pod("unlabelled", None, "devenv-alice").await;

    let list = f.wait_for_list(&alice, &["alice-1", "alice-2"]).await;
    let first = &list["items"][0];
    assert_eq!(first["namespace"], f.ns.as_str());
    assert_eq!(first["developer"], "alice");
    assert_eq!(first["serviceAccount"], "devenv-alice");
    assert_eq!(first["status"], "Pending");
    assert_eq!(first["ready"], "0/1");
    f.wait_for_list(&bob, &["bob-1"]).await;

    // Filtered by namespace: the same; another namespace is a 400.
    let filtered = f
        .call(
            "GET",
            &format!("/api/v1/pods?namespace={}", f.ns),
            Some(&alice),
        )
        .await;
    assert_eq!(pod_names(&filtered.body), ["alice-1", "alice-2"]);
    let elsewhere = f
        .call("GET", "/api/v1/pods?namespace=default", Some(&alice))
        .await;
    assert_error(&elsewhere, 400, "BadRequest");

    let got = f.on_pod("GET", "alice-1", Some(&alice)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["name"], "alice-1");
    assert_eq!(got.body["containers"][0]["image"], "busybox");

    let deleted = f.on_pod("DELETE", "alice-2", Some(&alice)).await;
    // Without a kubelet the pod is never scheduled, so the API server removes
    // it at once (grace period 0) while still answering with the Pod: 200.
    // On a real cluster it may have been scheduled: graceful deletion, 202
    // (`node::pods` checks both on a real node).
    if f.bed.real_cluster {
        assert!(matches!(deleted.status, 200 | 202), "{}", deleted.body);
    } else {
        assert_eq!(deleted.status, 200, "{}", deleted.body);
    }
    assert_eq!(deleted.body["name"], "alice-2");
    if deleted.status == 200 {
        assert_eq!(deleted.body["status"], "Deleted");
        assert!(f.pods().get_opt("alice-2").await.unwrap().is_none());
        f.wait_for_list(&alice, &["alice-1"]).await;
    }
    let text = f.server.metrics_text().await;
    assert!(
        text.contains(
            r#"api_requests_total{route="GET /api/v1/pods/{namespace}/{name}",code="200"} 1"#
        ),
        "{text}"
    );
    f.stop().await;
}

#[tokio::test]
async fn another_developers_pod_is_404_exactly_like_a_missing_one() {
    let Some(f) = Fixture::new("podapi-other").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("bobs", Some("bob"), "devenv-bob").await;
    f.wait_for_list(&bob, &["bobs"]).await;

    let others = f.on_pod("GET", "bobs", Some(&alice)).await;
    let missing = f.on_pod("GET", "nothing", Some(&alice)).await;
    assert_error(&others, 404, "NotFound");
    assert_error(&missing, 404, "NotFound");
    // Nothing tells the two apart but the name the caller chose.
    assert_eq!(
        others.body["error"]["message"]
            .as_str()
            .unwrap()
            .replace("bobs", "X"),
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nothing", "X")
    );
    let delete = f.on_pod("DELETE", "bobs", Some(&alice)).await;
    assert_error(&delete, 404, "NotFound");
    assert!(f.pods().get_opt("bobs").await.unwrap().is_some());
    // And not in alice's list.
    f.wait_for_list(&alice, &[]).await;
    f.stop().await;
}

#[tokio::test]
async fn a_pod_labelled_for_you_but_running_as_another_developer_is_not_yours() {
    let Some(f) = Fixture::new("podapi-sa").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;
    f.pod("mine", Some("alice"), "devenv-alice").await;
    f.pod("spoofed", Some("alice"), "devenv-bob").await;

    f.wait_for_list(&alice, &["mine"]).await;
    f.assert_not_theirs("spoofed", &alice).await;
    // Bob's label is not on it either, so it is nobody's through the API.
    f.wait_for_list(&bob, &[]).await;
    f.stop().await;
}

/// A pod running as `default` never reaches the webhook (its CEL
/// matchConditions send only `devenv-*` accounts), so nothing checked its
/// label: labelled for alice, it is still not alice's.
#[tokio::test]
async fn a_pod_labelled_for_you_but_running_as_default_is_not_yours() {
    let Some(f) = Fixture::new("podapi-default").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("planted", Some("alice"), "default").await;
    f.pod("mine", Some("alice"), "devenv-alice").await;

    // A watch delivers events in order: once "mine" shows, the cache holds
    // "planted" too, and it is not in the list.
    f.wait_for_list(&alice, &["mine"]).await;
    f.assert_not_theirs("planted", &alice).await;
    f.stop().await;
}

#[tokio::test]
async fn a_pod_relabelled_after_it_was_read_is_not_deleted() {
    let Some(f) = Fixture::new("podapi-race").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.bed.create_service_account(&f.ns, "devenv-bob").await;
    let stale = f.pod("contested", Some("alice"), "devenv-alice").await;
    f.wait_for_list(&alice, &["contested"]).await;

    // Between the manager's read (`stale`, what its cache held) and its
    // delete, the pod is relabelled for bob.
    let relabel = json!({"metadata": {"labels": {"developer": "bob"}}});
    f.pods()
        .patch(
            "contested",
            &PatchParams::default(),
            &Patch::Merge(&relabel),
        )
        .await
        .unwrap();

    // The delete the API would send, with the stale pod's preconditions.
    let config = devenv_manager::config::DevenvConfig {
        namespaces: vec![f.ns.clone()],
        ..Default::default()
    };
    let outcome =
        devenv_manager::api::pods::delete_developers_pod(&f.admin, &config, "alice", &stale).await;

    let error = outcome.expect_err("a relabelled pod must not be deleted");
    assert_eq!(error.status().as_u16(), 404, "{error}");
    let pod = f.pods().get("contested").await.unwrap();
    assert_eq!(pod.metadata.labels.unwrap()["developer"], "bob");

    // Through HTTP, whatever the cache holds by now: never deleted.
    let delete = f.on_pod("DELETE", "contested", Some(&alice)).await;
    assert!(matches!(delete.status, 404 | 409), "{}", delete.body);
    assert!(f.pods().get_opt("contested").await.unwrap().is_some());
    f.stop().await;
}

#[tokio::test]
async fn a_pod_updated_but_still_yours_is_deleted_after_a_fresh_read() {
    let Some(f) = Fixture::new("podapi-update").await else {
        return;
    };
    let alice = f.developer("alice").await;
    let stale = f.pod("busy", Some("alice"), "devenv-alice").await;
    let annotate = json!({"metadata": {"annotations": {"touched": "yes"}}});
    f.pods()
        .patch("busy", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();

    let config = devenv_manager::config::DevenvConfig {
        namespaces: vec![f.ns.clone()],
        ..Default::default()
    };
    let outcome =
        devenv_manager::api::pods::delete_developers_pod(&f.admin, &config, "alice", &stale).await;

    assert!(outcome.is_ok(), "{outcome:?}");
    f.wait_for_list(&alice, &[]).await;
    f.stop().await;
}
