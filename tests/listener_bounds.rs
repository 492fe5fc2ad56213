//! Every listener bounds what a client can hold, tried as an attacker would:
//! connections that send nothing, a bare HTTP/2 preface, a full listener,
//! bodies over the in-flight budget, oversized bodies written before the
//! answer is read, and malformed reviews that must fail closed.
//!
//! Deadlines are set short here; the tests check that the server closes or
//! refuses, never how fast (the patience values only stop a hung test).

use std::time::Duration;

use devenv_manager::config::Config;
use devenv_testbed::fixture;
use devenv_testbed::server::{Server, read_until_closed, tls_connect};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const PATIENCE: Duration = Duration::from_secs(30);
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame: length 0, type 4, flags 0, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn short_deadlines() -> Config {
    let mut config = Config::default();
    for limits in [
        &mut config.webhook.limits,
        &mut config.api.limits,
        &mut config.metrics.limits,
    ] {
        limits.request_header_timeout_seconds = 0.5;
        limits.idle_timeout_seconds = 0.5;
        limits.handshake_timeout_seconds = 0.5;
    }
    config
}

fn ca(server: &Server) -> std::path::PathBuf {
    server.cert_dir.join("ca.crt")
}

#[tokio::test]
async fn idle_connections_are_closed_on_every_listener() {
    let server = Server::start_with(short_deadlines()).await;
    // TLS done, then nothing: webhook and pod API, both protocols.
    for addr in [server.webhook, server.api] {
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let mut tls = tls_connect(addr, &ca(&server), alpn).await;
            read_until_closed(&mut tls, PATIENCE).await;
        }
    }
    // Only the HTTP/2 preface and SETTINGS, never a stream.
    for addr in [server.webhook, server.api] {
        let mut tls = tls_connect(addr, &ca(&server), b"h2").await;
        tls.write_all(HTTP2_PREFACE).await.unwrap();
        tls.write_all(EMPTY_SETTINGS).await.unwrap();
        let seen = read_until_closed(&mut tls, PATIENCE).await;
        // The server spoke HTTP/2 (its SETTINGS) before closing.
        assert!(
            seen.len() >= 9 && seen[3] == 4,
            "no SETTINGS frame: {seen:?}"
        );
    }
    // Plain TCP to the probes and metrics port, nothing sent.
    let mut tcp = tokio::net::TcpStream::connect(server.metrics)
        .await
        .unwrap();
    read_until_closed(&mut tcp, PATIENCE).await;
    // A TCP connection to a TLS port that never starts the handshake.
    let mut tcp = tokio::net::TcpStream::connect(server.webhook)
        .await
        .unwrap();
    read_until_closed(&mut tcp, PATIENCE).await;

    for (listener, reason) in [
        ("webhook", "request-header-timeout"),
        ("api", "request-header-timeout"),
        ("metrics", "request-header-timeout"),
        ("webhook", "handshake-timeout"),
    ] {
        closed_for(&server, listener, reason).await;
    }
    server.stop().await;
}

/// Waits until a connection of `listener` is counted as closed for
/// `reason`. The count is written just after the socket is closed, so a
/// client that saw the close may look a moment before it is there.
async fn closed_for(server: &Server, listener: &str, reason: &str) {
    let line =
        format!("listener_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}}");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.metrics_text().await;
        if metrics.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{line} missing:\n{metrics}");
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_once_idle() {
    let mut config = short_deadlines();
    // The idle deadline first: hyper's own request-head timer would
    // otherwise close the idle connection at the same moment, as the peer.
    config.metrics.limits.request_header_timeout_seconds = 30.0;
    let server = Server::start_with(config).await;
    let mut tcp = tokio::net::TcpStream::connect(server.metrics)
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut tcp, PATIENCE).await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    closed_for(&server, "metrics", "idle-timeout").await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_listener_closes_new_connections_at_once() {
    let mut config = Config::default();
    config.metrics.limits.max_connections = 2;
    let server = Server::start_with(config).await;
    // Two held connections (each proven accepted by an answer)...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(server.metrics)
            .await
            .unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(tcp);
    }
    // ...so a third is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(server.metrics)
        .await
        .unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let seen = read_until_closed(&mut third, PATIENCE).await;
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
    drop(held);
    server.stop().await;
}

fn pod_review() -> Value {
    serde_json::from_str(&fixture("examples/admission-review-pod.json")).unwrap()
}

fn learnerspace_review() -> Value {
    serde_json::from_str(&fixture("examples/admission-review-learnerspace.json")).unwrap()
}

async fn post(server: &Server, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    server.post(path, body).await
}

#[tokio::test]
async fn malformed_objects_fail_closed_on_both_webhooks() {
    let server = Server::start().await;
    for (path, good) in [
        ("/mutate/pods", pod_review()),
        ("/validate/learnerspaces", learnerspace_review()),
    ] {
        let mut cases: Vec<(&str, Value, &str)> = Vec::new();
        for (name, object) in [
            ("null", json!(null)),
            ("array", json!([])),
            ("string", json!("pod")),
        ] {
            let mut review = good.clone();
            review["request"]["object"] = object;
            cases.push((name, review, "request.object"));
        }
        let mut missing = good.clone();
        missing["request"].as_object_mut().unwrap().remove("object");
        cases.push(("missing", missing, "request.object is missing"));
        // On UPDATE the old object is needed too.
        let mut update = good.clone();
        update["request"]["operation"] = json!("UPDATE");
        update["request"]["oldObject"] = json!(null);
        cases.push((
            "UPDATE, oldObject null",
            update.clone(),
            "request.oldObject",
        ));
        update["request"]["oldObject"] = json!([1]);
        cases.push((
            "UPDATE, oldObject array",
            update,
            "request.oldObject is not",
        ));

        for (name, review, reason) in cases {
            let (status, text) = post(&server, path, review.to_string()).await;
            assert_eq!(status, 400, "{name} on {path}: {text}");
            assert!(text.contains(reason), "{name} on {path}: {text}");
            assert!(!text.contains("\"allowed\":true"), "{name}: {text}");
        }
    }
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "admission_refused_requests_total{webhook=\"mutate-pods\",reason=\"bad-object\"} 6"
        ),
        "{metrics}"
    );
    server.stop().await;
}

/// What an HTTP/1.1 client that writes its whole request before reading
/// (Python's `http.client`, for one) gets back.
async fn write_all_then_read(server: &Server, head: String, body: &[u8]) -> String {
    let mut tls = tls_connect(server.webhook, &ca(server), b"http/1.1").await;
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body)
        .await
        .expect("the whole body is accepted");
    tls.flush().await.unwrap();
    let seen = read_until_closed(&mut tls, PATIENCE).await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn an_oversized_body_gets_a_400_the_client_can_read() {
    let server = Server::start().await;
    let body = vec![b' '; 4 * 1024 * 1024];
    let declared = format!(
        "POST /mutate/pods HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = write_all_then_read(&server, declared, &body).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body exceeds"), "{answer}");

    // Chunked: the limit is found while reading, not from a header.
    let mut chunked = Vec::new();
    for piece in body.chunks(256 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /validate/learnerspaces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
    let answer = write_all_then_read(&server, head, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body exceeds"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_budget_get_503_while_a_normal_review_is_answered() {
    let mut config = Config::default();
    config.webhook.max_body_bytes_in_flight = "4Mi".into();
    config.webhook.body_budget_wait_seconds = 0.2;
    let server = Server::start_with(config).await;

    // A client that declares 3 MiB and sends 1 KiB of it holds 3 MiB.
    let mut holder = tls_connect(server.webhook, &ca(&server), b"http/1.1").await;
    holder
        .write_all(
            format!(
                "POST /mutate/pods HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                3 * 1024 * 1024
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    holder.write_all(&[b' '; 1024]).await.unwrap();
    holder.flush().await.unwrap();

    // 2 MiB more does not fit in what is left: 503 with Retry-After (tried
    // until the holder's reservation is in place).
    let two_mib = format!("{}{}", " ".repeat(2 * 1024 * 1024 - 2), "{}");
    let mut refused = None;
    for _ in 0..100 {
        let response = server
            .client()
            .post(server.webhook_url("/mutate/pods"))
            .header("content-type", "application/json")
            .body(two_mib.clone())
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a body over the budget is refused");
    assert_eq!(refused.headers()["retry-after"], "1");
    let text = refused.text().await.unwrap();
    assert!(text.contains("too many request bodies in flight"), "{text}");

    // A normal review still fits and is decided.
    let (status, text) = post(&server, "/mutate/pods", pod_review().to_string()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["allowed"], true);

    // Once the holder goes, the budget is whole again.
    drop(holder);
    let mut answered = false;
    for _ in 0..100 {
        let (status, _) = post(&server, "/mutate/pods", two_mib.clone()).await;
        if status == 400 {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "the 2 MiB body is read (and refused as not JSON) once there is room"
    );
    server.stop().await;
}
