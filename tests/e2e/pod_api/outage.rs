//! An API server outage: with its API server stopped (a bed of its own,
//! not the shared one), the pod API answers 503.

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_testbed as testbed;
use devenv_testbed::eventually;
use devenv_testbed::server::Server;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{AUDIENCE, assert_error, call, pod_names};

#[tokio::test]
async fn with_the_api_server_stopped_the_pod_api_answers_503() {
    let Some(mut bed) = testbed::start().await else {
        return;
    };
    let admin = bed.client().await;
    let ns = bed.temp_namespace("podapi-outage").await;
    bed.create_service_account(&ns, "devenv-alice").await;
    let alice = bed.token(&ns, "devenv-alice", AUDIENCE, 3600).await;
    let unused = bed.token(&ns, "devenv-alice", AUDIENCE, 3601).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ws", "labels": {"developer": "alice"}},
        "spec": {"serviceAccountName": "devenv-alice", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(admin, &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let mut config = Config::default();
    config.devenv.namespaces = vec![ns.clone()];
    let server =
        Server::start_with_cluster(config, Source::Config(Box::new(bed.kube_config()))).await;
    eventually("alice's pod is listed", || async {
        let answer = call(&server, "GET", "/api/v1/pods", Some(&alice)).await;
        (pod_names(&answer.body) == ["ws"]).then_some(())
    })
    .await;

    bed.stop_apiserver();

    // A token not seen before needs a TokenReview, which cannot be made.
    let answer = call(&server, "GET", "/api/v1/pods", Some(&unused)).await;
    assert_error(&answer, 503, "ServiceUnavailable");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{message}");
    assert!(answer.headers.contains_key("retry-after"));
    // A cached token: the pod cache notices the lost watch and stops serving
    // what may be stale.
    let answer = eventually("the cached token's list turns 503", || async {
        let answer = call(&server, "GET", "/api/v1/pods", Some(&alice)).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    assert_error(&answer, 503, "ServiceUnavailable");
    let health = call(&server, "GET", "/api/v1/health", None).await;
    assert_eq!(health.body["podCache"], "syncing");
    server.stop().await;
}
