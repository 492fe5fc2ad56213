//! Service-account tokens through a real API server: the TokenRequest and
//! TokenReview round trip that devenv-manager's authenticated pod API relies on,
//! plus smoke tests of the test bed itself.

use std::sync::OnceLock;

use devenv_testbed as testbed;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

const AUDIENCE: &str = "devenv-manager";

/// Reviews `token` as the admin for `audiences`, as devenv-manager does.
async fn review(bed: &testbed::TestBed, token: &str, audiences: &[&str]) -> TokenReviewStatus {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(audiences.iter().map(|&a| a.to_owned()).collect()),
        },
        ..TokenReview::default()
    };
    Api::<TokenReview>::all(bed.client().await)
        .create(&PostParams::default(), &review)
        .await
        .expect("creating a TokenReview")
        .status
        .expect("TokenReview has a status")
}

#[tokio::test]
async fn eywalker_token_authenticates_for_devenv_manager() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    // The identity devenv-manager expects is fixed, so this test cannot use a
    // temporary namespace; creating both idempotently keeps reruns (and a real
    // cluster) working.
    bed.ensure_namespace("devenv").await;
    bed.create_service_account("devenv", "devenv-eywalker")
        .await;
    let token = bed.token("devenv", "devenv-eywalker", AUDIENCE, 600).await;

    let status = review(bed, &token, &[AUDIENCE]).await;

    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("an authenticated review names the user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:devenv:devenv-eywalker")
    );
    assert!(
        status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE),
        "the review's audiences include {AUDIENCE}"
    );
}

#[tokio::test]
async fn token_for_another_audience_is_rejected() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let ns = bed.temp_namespace("tokens").await;
    bed.create_service_account(&ns, "someone").await;
    let token = bed.token(&ns, "someone", "other", 600).await;

    let status = review(bed, &token, &[AUDIENCE]).await;

    assert_ne!(status.authenticated, Some(true), "{status:?}");
    // The same token is fine for the audience it was made for: the rejection
    // above is about the audience, not a broken token.
    assert_eq!(
        review(bed, &token, &["other"]).await.authenticated,
        Some(true)
    );
    bed.delete_namespace(&ns).await;
}

#[tokio::test]
async fn garbage_token_is_rejected() {
    let Some(bed) = testbed::shared().await else {
        return;
    };

    let status = review(bed, "not-a-jwt.at.all", &[AUDIENCE]).await;

    assert_ne!(status.authenticated, Some(true), "{status:?}");
}

#[tokio::test]
async fn answers_version() {
    let Some(bed) = testbed::shared().await else {
        return;
    };

    let version = bed
        .client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");

    assert!(!version.platform.is_empty(), "{version:?}");
}

/// The server URL seen by whichever of the two tests below asks first.
static FIRST_URL: OnceLock<String> = OnceLock::new();

/// Both tests run in parallel on their own runtimes and must get the same API
/// server, each with a client that works on its own runtime.
async fn assert_one_shared_server() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    bed.client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");
    let first = FIRST_URL.get_or_init(|| bed.server_url().to_owned());
    assert_eq!(first, bed.server_url());
}

#[tokio::test]
async fn shares_one_api_server_a() {
    assert_one_shared_server().await;
}

#[tokio::test]
async fn shares_one_api_server_b() {
    assert_one_shared_server().await;
}

#[tokio::test]
async fn audit_log_counts_writes_per_user() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    if bed.audit_log_path().is_none() {
        testbed::skip("needs the local test bed's audit log");
        return;
    }
    let ns = bed.temp_namespace("audit").await;
    bed.create_service_account(&ns, "writer").await;
    // Audience of the API server itself, so the token works as a credential.
    let token = bed.token(&ns, "writer", testbed::SA_ISSUER, 600).await;
    let writer = Api::<ConfigMap>::namespaced(bed.client_with_token(&token).await, &ns);
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some("x".to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };

    // RBAC denies both creates (the account has no role), and denied writes
    // count too; the read does not.
    for _ in 0..2 {
        let denied = writer.create(&PostParams::default(), &configmap).await;
        assert!(
            matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
            "{denied:?}"
        );
    }
    let _ = writer.get("x").await;

    let user = format!("system:serviceaccount:{ns}:writer");
    assert_eq!(bed.count_writes_settled(&user).await, 2);
}
