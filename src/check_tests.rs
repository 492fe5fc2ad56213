//! `devenv-manager check`'s pure parts: the probes it builds, the review it
//! sends (one the webhook allows), the verdicts, and which host names it
//! reads from the service environment.

use super::*;
use http_body::Body as _;

fn targets() -> Targets {
    Targets {
        webhook: "https://devenv-manager.devenv-system.svc:443/".to_string(),
        api: "https://devenv-manager.devenv-system.svc:8080".to_string(),
        metrics: "http://devenv-manager-test.devenv-system.svc:9090".to_string(),
        ca: PathBuf::from("/etc/devenv-manager/ca/ca.crt"),
        learnerspace_namespace: "aivo-system".to_string(),
        timeout: Duration::from_secs(60),
        pod_namespace: Some("devenv-system".to_string()),
    }
}

#[test]
fn services_of_the_own_namespace_are_found_in_the_environment() {
    for host in [
        "devenv-manager.devenv-system.svc",
        "devenv-manager.devenv-system.svc.cluster.local",
        "devenv-manager.devenv-system.svc.cluster.local.",
    ] {
        assert_eq!(
            service_host_variable(host, "devenv-system").as_deref(),
            Some("DEVENV_MANAGER_SERVICE_HOST"),
            "{host}"
        );
    }
    assert_eq!(
        service_host_variable(
            "devenv-manager-test-metrics.devenv-system.svc",
            "devenv-system"
        )
        .as_deref(),
        Some("DEVENV_MANAGER_TEST_METRICS_SERVICE_HOST")
    );
    // Another namespace's Services are not in this pod's environment.
    assert_eq!(
        service_host_variable("devenv-manager.other.svc", "devenv-system"),
        None
    );
    assert_eq!(service_host_variable("localhost", "devenv-system"), None);
    assert_eq!(service_host_variable("example.com", "devenv-system"), None);
    assert_eq!(
        service_host_variable(".devenv-system.svc", "devenv-system"),
        None
    );
}

#[test]
fn the_probes_ask_the_three_endpoints() {
    let probes = probes(&targets()).unwrap();
    let asked: Vec<(&str, String, String)> = probes
        .iter()
        .map(|p| (p.what, p.method.to_string(), p.url.clone()))
        .collect();
    assert_eq!(
        asked,
        [
            (
                "webhook",
                "POST".to_string(),
                "https://devenv-manager.devenv-system.svc:443/validate/learnerspaces".to_string()
            ),
            (
                "pod API",
                "GET".to_string(),
                "https://devenv-manager.devenv-system.svc:8080/api/v1/health".to_string()
            ),
            (
                "metrics",
                "GET".to_string(),
                "http://devenv-manager-test.devenv-system.svc:9090/metrics".to_string()
            ),
        ]
    );
    assert_eq!(
        probes[0].request().unwrap().headers()[header::CONTENT_TYPE],
        "application/json"
    );
    assert!(probes[1].request().unwrap().body().size_hint().exact() == Some(0));
    let mut bad = targets();
    bad.api = "not a url".to_string();
    assert!(matches!(
        super::probes(&bad),
        Err(CheckError::Request {
            what: "pod API",
            ..
        })
    ));
}

/// The review is what the offline webhook allows: a valid LearnerSpace.
#[test]
fn the_review_is_of_a_valid_learnerspace() {
    let review = admission_review("aivo-system");
    assert_eq!(review["request"]["uid"], REVIEW_UID);
    let config = crate::config::Config::default();
    let webhook = crate::webhook::Webhook::new(&config);
    let object = review["request"]["object"].clone();
    let results = crate::webhook::offline::admit_all(&webhook, vec![object], "aivo-system");
    assert!(!results[0].denied(), "{:?}", results[0].errors);
}

fn judged(verdict: Verdict, status: StatusCode, body: &str) -> Result<String, String> {
    probe("p", Method::GET, "http://x/", None, verdict)
        .unwrap()
        .judge(status, body.as_bytes())
}

#[test]
fn verdicts() {
    let allowed = json!({"response": {"uid": REVIEW_UID, "allowed": true}}).to_string();
    assert!(judged(Verdict::Admission, StatusCode::OK, &allowed).is_ok());
    let refused = json!({"response": {"uid": REVIEW_UID, "allowed": false,
        "status": {"message": "spec.learnerId: bad"}}})
    .to_string();
    let e = judged(Verdict::Admission, StatusCode::OK, &refused).unwrap_err();
    assert!(
        e.contains("refused") && e.contains("spec.learnerId: bad"),
        "{e}"
    );
    let other = json!({"response": {"uid": "x", "allowed": true}}).to_string();
    assert!(judged(Verdict::Admission, StatusCode::OK, &other).is_err());
    assert_eq!(
        judged(Verdict::Admission, StatusCode::BAD_REQUEST, "no"),
        Err("\"no\"".to_string())
    );

    let healthy = r#"{"status":"ok","cluster":"connected","podCache":"synced"}"#;
    assert!(judged(Verdict::Health, StatusCode::OK, healthy).is_ok());
    let waiting = r#"{"status":"ok","cluster":"waiting","podCache":"syncing"}"#;
    let e = judged(Verdict::Health, StatusCode::OK, waiting).unwrap_err();
    assert!(e.contains("waiting"), "{e}");
    assert_eq!(
        judged(Verdict::Health, StatusCode::SERVICE_UNAVAILABLE, ""),
        Err("an empty body".to_string())
    );

    let metrics = "# HELP admission_requests x\n# TYPE admission_requests counter\n\
                   # TYPE other gauge\n";
    assert_eq!(
        judged(Verdict::Metrics, StatusCode::OK, metrics),
        Ok("2 metric families".to_string())
    );
    assert!(judged(Verdict::Metrics, StatusCode::OK, "# TYPE other gauge\n").is_err());
}
