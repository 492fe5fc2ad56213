//! Authentication: missing, bad, expired and wrong-audience tokens, callers
//! that are not developers, and what TokenReviews and request rates cost.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use devenv_testbed as testbed;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use super::{AUDIENCE, Answer, Fixture, assert_error};

/// Signs a service-account JWT with the test bed's own issuer key, as the API
/// server would, with the claims of a TokenRequest token but any `exp`.
/// `None` when the bed's key is not at hand (a real cluster).
fn sign_token(bed: &testbed::TestBed, ns: &str, sa: &ServiceAccount, exp: i64) -> Option<String> {
    let dir = bed.dir()?;
    let key_pem = std::fs::read(dir.join("service-account.key")).unwrap();
    let pub_pem = std::fs::read(dir.join("service-account.pub")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let public = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pub_pem).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // The API server's key id: base64url(SHA-256(DER public key)).
    let kid = b64(ring::digest::digest(&ring::digest::SHA256, public.as_ref()).as_ref());
    let name = sa.metadata.name.clone().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = json!({"alg": "ES256", "kid": kid});
    let claims = json!({
        "aud": [AUDIENCE],
        "exp": exp,
        "iat": exp - 3600,
        "nbf": exp - 3600,
        "iss": testbed::SA_ISSUER,
        "jti": format!("e2e-{now}"),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa.metadata.uid.clone().unwrap()},
        },
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_der(),
        &rng,
    )
    .unwrap();
    let signature = pair.sign(&rng, signing_input.as_bytes()).unwrap();
    Some(format!("{signing_input}.{}", b64(signature.as_ref())))
}

#[tokio::test]
async fn missing_bad_expired_and_wrong_audience_tokens_are_401() {
    let Some(f) = Fixture::new("podapi-401").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("ws", Some("alice"), "devenv-alice").await;
    f.wait_for_list(&alice, &["ws"]).await;

    // No token.
    let answer = f.call("GET", "/api/v1/pods", None).await;
    assert_error(&answer, 401, "Unauthorized");
    assert!(answer.headers.contains_key("www-authenticate"));
    // Not a token at all, and a JWT-shaped forgery.
    assert_error(
        &f.call("GET", "/api/v1/pods", Some("hunter2")).await,
        401,
        "Unauthorized",
    );
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(forged)).await,
        401,
        "Unauthorized",
    );
    // A real token of the developer, but for another audience.
    let other_audience = f
        .bed
        .token(&f.ns, "devenv-alice", "someone-else", 3600)
        .await;
    let answer = f.call("GET", "/api/v1/pods", Some(&other_audience)).await;
    assert_error(&answer, 401, "Unauthorized");
    // A real token of a service account deleted since: what a token looks like
    // once it is no longer valid (TokenRequest will not issue one that expires
    // in less than 10 minutes).
    f.bed.create_service_account(&f.ns, "devenv-carol").await;
    let carol = f.bed.token(&f.ns, "devenv-carol", AUDIENCE, 3600).await;
    Api::<ServiceAccount>::namespaced(f.admin.clone(), &f.ns)
        .delete("devenv-carol", &DeleteParams::default())
        .await
        .unwrap();
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&carol)).await,
        401,
        "Unauthorized",
    );
    // A wrong X-Auth-Type, even with a good token.
    let response = f
        .server
        .client()
        .get(f.server.api_url("/api/v1/pods"))
        .bearer_auth(&alice)
        .header("X-Auth-Type", "oidc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Truly expired: a token signed with the bed's own issuer key. The same
    // forgery with a future `exp` is accepted, so the refusal is the expiry.
    let sa = Api::<ServiceAccount>::namespaced(f.admin.clone(), &f.ns)
        .get("devenv-alice")
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // (Needs the local bed's signing key; a real cluster keeps its own.)
    if !f.bed.real_cluster {
        let valid = sign_token(f.bed, &f.ns, &sa, now + 3600).expect("the bed's signing key");
        let expired = sign_token(f.bed, &f.ns, &sa, now - 3600).expect("the bed's signing key");
        let answer = f.call("GET", "/api/v1/pods", Some(&valid)).await;
        assert_eq!(answer.status, 200, "the control token: {}", answer.body);
        let answer = f.call("GET", "/api/v1/pods", Some(&expired)).await;
        assert_error(&answer, 401, "Unauthorized");
    }

    // The good token still works.
    assert_eq!(
        f.call("GET", "/api/v1/pods", Some(&alice)).await.status,
        200
    );
    f.stop().await;
}

#[tokio::test]
async fn authenticated_non_developers_are_403() {
    let Some(f) = Fixture::new("podapi-403").await else {
        return;
    };
    // The reserved developer name `manager`.
    f.bed.create_service_account(&f.ns, "devenv-manager").await;
    let reserved = f.bed.token(&f.ns, "devenv-manager", AUDIENCE, 3600).await;
    let answer = f.call("GET", "/api/v1/pods", Some(&reserved)).await;
    assert_error(&answer, 403, "Forbidden");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("devenv-manager")
    );
    // A service account that is no devenv one.
    let default = f.bed.token(&f.ns, "default", AUDIENCE, 3600).await;
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&default)).await,
        403,
        "Forbidden",
    );
    // devenv-alice, but of a namespace that is not a devenv namespace.
    let elsewhere = f.bed.temp_namespace("podapi-403-elsewhere").await;
    f.bed
        .create_service_account(&elsewhere, "devenv-alice")
        .await;
    let outsider = f
        .bed
        .token(&elsewhere, "devenv-alice", AUDIENCE, 3600)
        .await;
    assert_error(
        &f.call("GET", "/api/v1/pods", Some(&outsider)).await,
        403,
        "Forbidden",
    );
    f.bed.delete_namespace(&elsewhere).await;
    f.stop().await;
}

#[tokio::test]
async fn many_requests_with_one_token_cost_one_token_review() {
    let Some(f) = Fixture::new("podapi-cache").await else {
        return;
    };
    let alice = f.developer("alice").await;

    for _ in 0..25 {
        let answer = f.call("GET", "/api/v1/pods", Some(&alice)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    assert_eq!(f.metric("tokenreview_requests_total").await, 1.0);
    assert_eq!(f.metric("tokenreview_cache_hits_total").await, 24.0);
    if !f.bed.real_cluster {
        let at_api_server = f.token_reviews_at_the_api_server().await;
        assert_eq!(at_api_server, Some(1));
    }
    f.stop().await;
}

#[tokio::test]
async fn a_junk_token_flood_costs_a_bounded_number_of_token_reviews() {
    let Some(f) = Fixture::with("podapi-flood", |c| {
        c.api.failed_auth_burst = 5;
        c.api.failed_auths_per_minute = 1.0;
    })
    .await
    else {
        return;
    };
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);

    let mut refused = 0;
    for i in 0..60 {
        // Distinct, JWT-shaped, so neither the cache nor the shape check stops them.
        let junk = format!(
            "{}.{}.{}",
            b64(format!("{{\"n\":{i}}}")),
            b64("{}".into()),
            b64("x".into())
        );
        let answer = f.call("GET", "/api/v1/pods", Some(&junk)).await;
        match answer.status {
            401 => {}
            429 => {
                assert!(answer.headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("junk token answered {other}: {}", answer.body),
        }
    }

    // 5 at once, plus at most a refill or two while the test runs.
    let reviews = f.metric("tokenreview_requests_total").await;
    assert!((5.0..=7.0).contains(&reviews), "{reviews} TokenReviews");
    assert!(refused >= 53, "only {refused} of 60 refused");
    if !f.bed.real_cluster {
        let at_api_server = f.token_reviews_at_the_api_server().await;
        assert_eq!(at_api_server.map(|n| n as f64), Some(reviews));
    }
    f.stop().await;
}

#[tokio::test]
async fn a_developer_over_the_request_rate_gets_429_with_retry_after() {
    let Some(f) = Fixture::with("podapi-rate", |c| {
        c.api.developer_burst = 3;
        c.api.developer_requests_per_second = 0.01;
    })
    .await
    else {
        return;
    };
    let alice = f.developer("alice").await;
    let bob = f.developer("bob").await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(f.call("GET", "/api/v1/pods", Some(&alice)).await);
    }

    let ok = statuses.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Answer> = statuses.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok, 3);
    assert_eq!(limited.len(), 3);
    assert_error(limited[0], 429, "TooManyRequests");
    let retry: u64 = limited[0].headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Per developer: bob is not limited by alice's requests.
    assert_eq!(f.call("GET", "/api/v1/pods", Some(&bob)).await.status, 200);
    f.stop().await;
}
