use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use warp::http::HeaderValue;

use super::*;
use crate::config::Config;

const ALICE: &str = "system:serviceaccount:devenv:devenv-alice";

/// A TokenReview stand-in: tokens whose payload names a known user are
/// authenticated for the audience in their payload.
#[derive(Default)]
struct FakeReviewer {
    calls: AtomicUsize,
    unreachable: bool,
}

impl FakeReviewer {
    fn as_dyn(&self) -> Result<&dyn TokenReviewer, ApiError> {
        Ok(self)
    }
}

/// A TokenReview that never answers: the API server hangs.
struct HangingReviewer;

impl TokenReviewer for HangingReviewer {
    fn review<'a>(&'a self, _token: &'a str) -> BoxFuture<'a, Result<ReviewStatus, ApiError>> {
        Box::pin(std::future::pending())
    }
}

impl TokenReviewer for FakeReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ReviewStatus, ApiError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // Let concurrent callers pile up behind this review.
            tokio::task::yield_now().await;
            if self.unreachable {
                return Err(ApiError::Unavailable("connection refused".into()));
            }
            let payload = token.split('.').nth(1).unwrap_or_default();
            let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            match claims["sub"].as_str() {
                Some(user) => Ok(ReviewStatus {
                    authenticated: true,
                    username: Some(user.to_string()),
                    audiences: vec![claims["aud"].as_str().unwrap_or("devenv-manager").into()],
                    error: None,
                }),
                None => Ok(ReviewStatus {
                    error: Some("invalid bearer token".into()),
                    ..ReviewStatus::default()
                }),
            }
        })
    }
}

impl FakeReviewer {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn token(claims: serde_json::Value) -> String {
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"ES256"}"#),
        b64(claims.to_string().as_bytes()),
        b64(b"signature")
    )
}

fn user_token(user: &str) -> String {
    token(serde_json::json!({ "sub": user }))
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn authenticator(burst: u32) -> (Authenticator, Arc<Metrics>) {
    let mut config = Config::default();
    config.api.failed_auth_burst = burst;
    // Practically no refill within a test.
    config.api.failed_auths_per_minute = 0.001;
    let metrics = Metrics::new();
    let settings = crate::api::Settings::of(&config);
    let auth = Authenticator::new(settings.devenv, settings.failed_auths, metrics.clone());
    (auth, metrics)
}

const CLIENT: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

#[test]
fn bearer_token_parsing() {
    let mut h = HeaderMap::new();
    assert_eq!(bearer_token(&h), Err(ApiError::MissingToken));
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer abc.def.ghi"),
    );
    assert_eq!(bearer_token(&h), Ok("abc.def.ghi"));
    h.insert("authorization", HeaderValue::from_static("bearer   abc"));
    assert_eq!(bearer_token(&h), Ok("abc"));
    for bad in [
        "Basic dXNlcjpwdw==",
        "Bearer",
        "Bearer ",
        "abc",
        "Bearer a b",
    ] {
        h.insert("authorization", HeaderValue::from_static(bad));
        assert!(
            matches!(bearer_token(&h), Err(ApiError::BadAuthorization(_))),
            "{bad}"
        );
    }
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1))).unwrap(),
    );
    assert!(matches!(
        bearer_token(&h),
        Err(ApiError::BadAuthorization(m)) if m.contains("longer")
    ));
}

#[test]
fn auth_type_must_be_k8s_sa_when_present() {
    let mut h = headers("a.b.c");
    h.insert("x-auth-type", HeaderValue::from_static("k8s-sa"));
    assert_eq!(bearer_token(&h), Ok("a.b.c"));
    h.insert("x-auth-type", HeaderValue::from_static("K8S-SA"));
    assert_eq!(bearer_token(&h), Ok("a.b.c"));
    h.insert("x-auth-type", HeaderValue::from_static("oidc"));
    let err = bearer_token(&h).unwrap_err();
    assert_eq!(err.status().as_u16(), 401);
    assert!(err.to_string().contains("k8s-sa"), "{err}");
    // Checked before the token: a missing token with a bad type names the type.
    let mut h = HeaderMap::new();
    h.insert("x-auth-type", HeaderValue::from_static("basic"));
    assert!(matches!(
        bearer_token(&h),
        Err(ApiError::BadAuthorization(_))
    ));
}

#[test]
fn verdicts() {
    let c = DevenvConfig::default();
    let ok = |user: &str| ReviewStatus {
        authenticated: true,
        username: Some(user.into()),
        audiences: vec!["devenv-manager".into()],
        error: None,
    };
    assert_eq!(
        verdict_of(&c, &ok(ALICE)),
        Verdict::Developer(Developer {
            name: "alice".into(),
            namespace: "devenv".into()
        })
    );
    for not_a_developer in [
        "system:serviceaccount:devenv:devenv-manager",
        "system:serviceaccount:devenv:devenv-user-template",
        "system:serviceaccount:devenv:default",
        "system:serviceaccount:kube-system:devenv-alice",
        "system:serviceaccount:devenv:devenv-Alice",
        "system:serviceaccount:devenv:devenv-",
        "admin",
    ] {
        assert!(
            matches!(verdict_of(&c, &ok(not_a_developer)), Verdict::NotADeveloper(m) if m.contains(not_a_developer)),
            "{not_a_developer}"
        );
    }
    let wrong_audience = ReviewStatus {
        audiences: vec!["https://kubernetes.default.svc".into()],
        ..ok(ALICE)
    };
    assert!(
        matches!(verdict_of(&c, &wrong_audience), Verdict::Rejected(m) if m.contains("audience"))
    );
    let no_audiences = ReviewStatus {
        audiences: vec![],
        ..ok(ALICE)
    };
    assert!(matches!(
        verdict_of(&c, &no_audiences),
        Verdict::Rejected(_)
    ));
    let rejected = ReviewStatus {
        error: Some("token has expired".into()),
        ..ReviewStatus::default()
    };
    assert_eq!(
        verdict_of(&c, &rejected),
        Verdict::Rejected("token has expired".into())
    );
    assert_eq!(
        verdict_of(&c, &ReviewStatus::default()),
        Verdict::Rejected("not authenticated".into())
    );
}

#[tokio::test]
async fn one_review_per_token_then_cache_hits() {
    let (auth, metrics) = authenticator(10);
    let reviewer = FakeReviewer::default();
    let h = headers(&user_token(ALICE));
    for _ in 0..5 {
        let developer = auth
            .authenticate(reviewer.as_dyn(), &h, CLIENT)
            .await
            .unwrap();
        assert_eq!(developer.name, "alice");
    }
    assert_eq!(reviewer.calls(), 1);
    assert_eq!(metrics.api.tokenreview_requests.get(), 1);
    assert_eq!(metrics.api.tokenreview_cache_hits.get(), 4);
}

#[tokio::test]
async fn concurrent_requests_share_one_review() {
    let (auth, _) = authenticator(10);
    let reviewer = FakeReviewer::default();
    let h = headers(&user_token(ALICE));
    let results = futures::future::join_all(
        (0..20).map(|_| auth.authenticate(reviewer.as_dyn(), &h, CLIENT)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(reviewer.calls(), 1);
}

#[tokio::test]
async fn failures_are_cached_too() {
    let (auth, _) = authenticator(10);
    let reviewer = FakeReviewer::default();
    let h = headers(&token(serde_json::json!({"nothing": "here"})));
    for _ in 0..3 {
        let err = auth
            .authenticate(reviewer.as_dyn(), &h, CLIENT)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        assert!(err.to_string().contains("invalid bearer token"), "{err}");
    }
    assert_eq!(reviewer.calls(), 1);
}

#[tokio::test]
async fn forbidden_and_unauthorized_answers() {
    let (auth, _) = authenticator(10);
    let reviewer = FakeReviewer::default();
    let manager = headers(&user_token("system:serviceaccount:devenv:devenv-manager"));
    let err = auth
        .authenticate(reviewer.as_dyn(), &manager, CLIENT)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 403);
    let other_audience = headers(&token(serde_json::json!({"sub": ALICE, "aud": "other"})));
    let err = auth
        .authenticate(reviewer.as_dyn(), &other_audience, CLIENT)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 401);
}

#[tokio::test]
async fn a_token_that_is_no_jwt_costs_no_review() {
    let (auth, _) = authenticator(10);
    let reviewer = FakeReviewer::default();
    let err = auth
        .authenticate(reviewer.as_dyn(), &headers("hunter2"), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 401);
    assert_eq!(reviewer.calls(), 0);
}

#[tokio::test]
async fn junk_tokens_are_bounded_per_client_address() {
    let (auth, metrics) = authenticator(5);
    let reviewer = FakeReviewer::default();
    let alice = headers(&user_token(ALICE));
    auth.authenticate(reviewer.as_dyn(), &alice, CLIENT)
        .await
        .unwrap();
    let mut too_many = 0;
    for i in 0..50 {
        let junk = headers(&token(serde_json::json!({ "junk": i })));
        match auth.authenticate(reviewer.as_dyn(), &junk, CLIENT).await {
            Err(ApiError::TooManyFailedAuthentications(_)) => too_many += 1,
            Err(e) => assert_eq!(e.status().as_u16(), 401),
            Ok(d) => panic!("junk authenticated as {d:?}"),
        }
    }
    assert_eq!(reviewer.calls(), 1 + 5);
    assert_eq!(metrics.api.tokenreview_requests.get(), 1 + 5);
    assert_eq!(too_many, 45);
    // Another address has its own budget.
    let other = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
    let junk = headers(&token(serde_json::json!({ "junk": "x" })));
    let err = auth
        .authenticate(reviewer.as_dyn(), &junk, other)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 401);
    // A known good token from the flooding address still works, from the
    // cache; but a new token from it must wait: its budget is spent.
    auth.authenticate(reviewer.as_dyn(), &alice, CLIENT)
        .await
        .unwrap();
    let err = auth
        .authenticate(
            reviewer.as_dyn(),
            &headers(&user_token("system:serviceaccount:devenv:devenv-bob")),
            CLIENT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 429);
}

#[tokio::test]
async fn good_tokens_do_not_spend_the_failure_budget() {
    let (auth, _) = authenticator(2);
    let reviewer = FakeReviewer::default();
    for i in 0..20 {
        let h = headers(&token(serde_json::json!({ "sub": ALICE, "n": i })));
        auth.authenticate(reviewer.as_dyn(), &h, CLIENT)
            .await
            .unwrap();
    }
    assert_eq!(reviewer.calls(), 20);
}

#[tokio::test]
async fn an_unreachable_api_server_is_503_and_nothing_is_cached() {
    let (auth, _) = authenticator(1);
    let reviewer = FakeReviewer {
        unreachable: true,
        ..FakeReviewer::default()
    };
    let h = headers(&user_token(ALICE));
    for _ in 0..3 {
        let err = auth
            .authenticate(reviewer.as_dyn(), &h, CLIENT)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 503);
    }
    // Asked each time (not cached), and the outage did not spend the budget.
    assert_eq!(reviewer.calls(), 3);
}

#[tokio::test]
async fn answers_are_not_kept_past_the_tokens_expiry() {
    let (auth, _) = authenticator(10);
    let reviewer = FakeReviewer::default();
    // Expired a minute ago: the answer is never cached.
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let h = headers(&token(serde_json::json!({ "sub": ALICE, "exp": exp })));
    auth.authenticate(reviewer.as_dyn(), &h, CLIENT)
        .await
        .unwrap();
    auth.authenticate(reviewer.as_dyn(), &h, CLIENT)
        .await
        .unwrap();
    assert_eq!(reviewer.calls(), 2);
}

#[test]
fn usernames_every_reserved_and_malformed_case() {
    let c = DevenvConfig {
        namespaces: vec!["devenv".into(), "sandbox".into()],
        ..DevenvConfig::default()
    };
    fn owned(parsed: Option<(&str, &str)>) -> Option<(String, String)> {
        parsed.map(|(ns, d)| (ns.to_string(), d.to_string()))
    }
    let parse = |u: &str| owned(developer_from_username(&c, u));
    let pair = |ns: &str, d: &str| Some((ns.to_string(), d.to_string()));
    assert_eq!(parse(ALICE), pair("devenv", "alice"));
    assert_eq!(
        parse("system:serviceaccount:sandbox:devenv-a-1"),
        pair("sandbox", "a-1")
    );
    let longest = format!("system:serviceaccount:devenv:devenv-{}", "x".repeat(63));
    assert!(parse(&longest).is_some());
    let too_long = format!("system:serviceaccount:devenv:devenv-{}", "x".repeat(64));
    let malformed = [
        // Reserved developer names.
        "system:serviceaccount:devenv:devenv-manager",
        "system:serviceaccount:devenv:devenv-user-template",
        "system:serviceaccount:sandbox:devenv-manager",
        // Not a devenv- service account.
        "system:serviceaccount:devenv:default",
        "system:serviceaccount:devenv:manager",
        "system:serviceaccount:devenv:xdevenv-alice",
        "system:serviceaccount:devenv:Devenv-alice",
        // Developer part not a DNS-1123 label.
        "system:serviceaccount:devenv:devenv-",
        "system:serviceaccount:devenv:devenv-Alice",
        "system:serviceaccount:devenv:devenv--alice",
        "system:serviceaccount:devenv:devenv-alice-",
        "system:serviceaccount:devenv:devenv-al.ice",
        "system:serviceaccount:devenv:devenv-al_ice",
        "system:serviceaccount:devenv:devenv-al ice",
        too_long.as_str(),
        // Namespace not a devenv namespace, or missing.
        "system:serviceaccount:kube-system:devenv-alice",
        "system:serviceaccount:Devenv:devenv-alice",
        "system:serviceaccount::devenv-alice",
        "system:serviceaccount:devenv",
        "system:serviceaccount:devenv:",
        // Extra parts, other kinds of users, nothing.
        "system:serviceaccount:devenv:devenv-alice:x",
        "system:serviceaccounts:devenv:devenv-alice",
        "system:node:devenv-alice",
        "devenv-alice",
        "alice",
        "",
    ];
    for username in malformed {
        assert_eq!(parse(username), None, "{username:?}");
    }
}

#[tokio::test]
async fn what_needs_no_api_server_is_401_without_one() {
    let (auth, metrics) = authenticator(10);
    let no_cluster = || Err(ApiError::Unavailable("waiting for a cluster".into()));
    let mut wrong_type = headers(&user_token(ALICE));
    wrong_type.insert("x-auth-type", HeaderValue::from_static("basic"));
    let mut basic = HeaderMap::new();
    basic.insert(
        warp::http::header::AUTHORIZATION,
        HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"),
    );
    for (name, h) in [
        ("no Authorization", HeaderMap::new()),
        ("Basic scheme", basic),
        ("wrong X-Auth-Type", wrong_type),
        ("not a JWT", headers("hunter2")),
    ] {
        let err = auth
            .authenticate(no_cluster(), &h, CLIENT)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 401, "{name}: {err:?}");
    }
    // Only a token that needs a TokenReview waits for the cluster.
    let err = auth
        .authenticate(no_cluster(), &headers(&user_token(ALICE)), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 503);
    assert_eq!(metrics.api.tokenreview_requests.get(), 0);
}

#[tokio::test]
async fn a_dropped_request_leaves_no_review_in_flight() {
    let (auth, _) = authenticator(10);
    let h = headers(&user_token(ALICE));
    {
        let request = auth.authenticate(Ok(&HangingReviewer), &h, CLIENT);
        tokio::pin!(request);
        // Polled once: the TokenReview is in flight, the entry in the map.
        assert!(futures::poll!(request.as_mut()).is_pending());
        assert_eq!(auth.reviews_in_flight(), 1);
        // The client resets its stream: hyper drops the request future.
    }
    assert_eq!(auth.reviews_in_flight(), 0);
}
