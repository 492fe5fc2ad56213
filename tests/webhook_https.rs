//! The webhook over real HTTPS: generated certificates, a client that
//! verifies the CA, real AdmissionReview JSON, and the returned RFC 6902
//! patch applied with the json-patch crate.

use base64::Engine;
use devenv_testbed::fixture;
use devenv_testbed::server::{Server, client_trusting};
use serde_json::{Value, json};

async fn post(server: &Server, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    server.post(path, body).await
}

async fn review(server: &Server, path: &str, review: &Value) -> Value {
    let (status, body) = post(server, path, review.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"], review["request"]["uid"],
        "uid echoed"
    );
    answer["response"].clone()
}

fn decode_patch(response: &Value) -> Option<json_patch::Patch> {
    let b64 = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 patch");
    Some(serde_json::from_slice(&bytes).expect("RFC 6902 patch"))
}

#[tokio::test]
async fn injects_a_devenv_pod_and_the_result_is_stable() {
    let server = Server::start().await;
    let mut request: Value =
        serde_json::from_str(&fixture("tests/fixtures/pod-create-devenv.json")).unwrap();
    let response = review(&server, "/mutate/pods", &request).await;
    assert_eq!(response["allowed"], true);

    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &decode_patch(&response).expect("a patch"))
        .expect("patch applies to the object as sent");

    assert_eq!(pod["metadata"]["labels"]["developer"], "eywalker");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"], "devenv",
        "other labels kept"
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 4);
    let token = &volumes[3];
    assert_eq!(token["name"], "devenv-manager-token");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        json!({"path": "devenv-manager", "audience": "devenv-manager", "expirationSeconds": 3600})
    );
    assert_eq!(
        token["projected"]["sources"][1]["configMap"]["name"],
        "devenv-manager-ca"
    );
    for field in ["initContainers", "containers"] {
        for container in pod["spec"][field].as_array().unwrap() {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts.iter().any(|m| m["name"] == "devenv-manager-token"
                    && m["mountPath"] == "/var/run/secrets/tokens"
                    && m["readOnly"] == true),
                "{container}"
            );
            let env = container["env"].as_array().unwrap();
            assert_eq!(
                env.iter()
                    .filter(|e| e["name"] == "DEVENV_MANAGER_URL")
                    .count(),
                1,
                "{container}"
            );
        }
    }
    // The init container had no env at all: the whole list was added.
    assert_eq!(
        pod["spec"]["initContainers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Reinvocation: the webhook on its own output adds nothing.
    request["request"]["object"] = pod;
    let again = review(&server, "/mutate/pods", &request).await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "no second patch: {again}");
    server.stop().await;
}

#[tokio::test]
async fn denials_and_other_pods() {
    let server = Server::start().await;
    let spoofed: Value =
        serde_json::from_str(&fixture("tests/fixtures/pod-create-spoofed-label.json")).unwrap();
    let response = review(&server, "/mutate/pods", &spoofed).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("metadata.labels.developer: names developer \"mallory\""),
        "{message}"
    );

    let other: Value =
        serde_json::from_str(&fixture("tests/fixtures/pod-create-other.json")).unwrap();
    let response = review(&server, "/mutate/pods", &other).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());

    // The namespace comes from the request: the same pod elsewhere is not a devenv pod.
    let mut elsewhere: Value =
        serde_json::from_str(&fixture("tests/fixtures/pod-create-devenv.json")).unwrap();
    elsewhere["request"]["namespace"] = json!("team-a");
    assert!(
        review(&server, "/mutate/pods", &elsewhere)
            .await
            .get("patch")
            .is_none()
    );

    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"admission_requests_total{webhook="mutate-pods",allowed="false"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"admission_requests_total{webhook="mutate-pods",allowed="true"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("admission_duration_seconds_count{webhook=\"mutate-pods\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("tls_certificate_expiry_timestamp_seconds{listener=\"webhook\"}"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn learnerspace_validation_reports_every_error() {
    let server = Server::start().await;
    let request: Value =
        serde_json::from_str(&fixture("examples/admission-review-learnerspace.json")).unwrap();
    let response = review(&server, "/validate/learnerspaces", &request).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    for field in [
        "spec.learnerId: ",
        "spec.subjects[0]: ",
        "spec.subjects[2]: duplicate",
        "spec.resourceQuota.cpu: \"32\" exceeds the maximum of 16",
        "spec.resourceQuota.pods: ",
        "spec.networkPolicy.allowedNamespaces[1]: ",
        "spec.vaultRole: ",
    ] {
        assert!(message.contains(field), "{field} missing from {message}");
    }
    assert_eq!(
        response["warnings"],
        json!(["spec.colour: unknown field, ignored"])
    );

    let mut valid = request.clone();
    valid["request"]["object"]["spec"] = json!({"learnerId": "john.doe"});
    let response = review(&server, "/validate/learnerspaces", &valid).await;
    assert_eq!(response["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_and_the_server_keeps_serving() {
    let server = Server::start().await;
    let good: Value = serde_json::from_str(&fixture("examples/admission-review-pod.json")).unwrap();

    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_operation = good.clone();
    bad_operation["request"]["operation"] = json!(42);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"{not json".to_vec(), "body is not JSON"),
        ("empty", Vec::new(), "body is not JSON"),
        (
            "v1beta1",
            v1beta1.to_string().into_bytes(),
            "only admission.k8s.io/v1",
        ),
        (
            "no uid",
            no_uid.to_string().into_bytes(),
            "request.uid is missing",
        ),
        (
            "no request",
            no_request.to_string().into_bytes(),
            "no request",
        ),
        (
            "bad operation",
            bad_operation.to_string().into_bytes(),
            "malformed",
        ),
        ("too large", vec![b' '; 3 * 1024 * 1024 + 1], "exceeds"),
        ("array", b"[1,2,3]".to_vec(), "AdmissionReview"),
    ];
    for (name, body, reason) in cases {
        for path in ["/mutate/pods", "/validate/learnerspaces"] {
            let (status, text) = post(&server, path, body.clone()).await;
            assert_eq!(status, 400, "{name} on {path}: {text}");
            assert_eq!(
                text.trim_end().lines().count(),
                1,
                "one-line reason: {text}"
            );
            assert!(text.contains(reason), "{name}: {text}");
        }
    }

    // A well-formed review of an object that is not a pod is denied, with its uid.
    let mut not_a_pod = good.clone();
    not_a_pod["request"]["object"]["spec"] = json!("nonsense");
    let response = review(&server, "/mutate/pods", &not_a_pod).await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("object: ")
    );

    let client = server.client();
    let get = client
        .get(server.webhook_url("/mutate/pods"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let missing = client
        .post(server.webhook_url("/mutate/nodes"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Still serving.
    assert_eq!(
        review(&server, "/mutate/pods", &good).await["allowed"],
        true
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let server = Server::start().await;
    let old_ca = server.cert_dir.join("ca.crt");
    let old_pem = std::fs::read(&old_ca).unwrap();
    let good: Value = serde_json::from_str(&fixture("examples/admission-review-pod.json")).unwrap();
    review(&server, "/mutate/pods", &good).await;

    // A new CA and certificate, written where the old ones were (as a Secret
    // update or cert-manager renewal does). Sleep past the file-time granularity.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let rotated = devenv_manager::tls::generate(&["localhost".to_string()]).unwrap();
    let staging = tempfile::tempdir().unwrap();
    rotated.write(staging.path()).unwrap();
    for file in ["tls.key", "tls.crt", "ca.crt"] {
        std::fs::copy(staging.path().join(file), server.cert_dir.join(file)).unwrap();
    }

    let new_client = client_trusting(&server.cert_dir.join("ca.crt"));
    let response = new_client
        .post(server.webhook_url("/mutate/pods"))
        .body(good.to_string())
        .send()
        .await
        .expect("a new connection gets the new certificate");
    assert_eq!(response.status().as_u16(), 200);

    let old_path = staging.path().join("old-ca.crt");
    std::fs::write(&old_path, old_pem).unwrap();
    let old_client = client_trusting(&old_path);
    let refused = old_client
        .post(server.webhook_url("/mutate/pods"))
        .body(good.to_string())
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a client trusting only the old CA must not verify the new certificate"
    );
    server.stop().await;
}

#[tokio::test]
async fn probes_answer() {
    let server = Server::start().await;
    let base = format!("http://{}", server.metrics);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["webhook"]["state"], "ready");
    assert_eq!(
        reqwest::get(format!("{base}/nope"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    server.stop().await;
}
