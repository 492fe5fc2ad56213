//! Load benchmark of the running webhook: the release binary, started as a
//! user would, hammered over TLS keep-alive from this same machine.
//!
//!     cargo bench --bench webhook_load
//!     LOAD_SECONDS=20 LOAD_CONCURRENCY=64 cargo bench --bench webhook_load
//!
//! Prints requests/s, latency percentiles, peak RSS of the server, and the
//! time from process start to the first answered review. Targets (docs/performance.md):
//! 20,000 reviews/s at concurrency 32 with p99 under 2 ms, RSS under 15 MB,
//! first review under 50 ms.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use devenv_testbed::load;

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");

/// Starts `serve` in `dir`; returns the child, the webhook port and the
/// time until it answered its first review.
fn start(dir: &Path, body: &[u8]) -> (load::Serve, Duration) {
    let started = Instant::now();
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .current_dir(dir)
        .env("WEBHOOK_BIND", "127.0.0.1:0")
        .env("API_BIND", "127.0.0.1:0")
        .env("METRICS_BIND", "127.0.0.1:0");
    let server = load::spawn_serve(command, None);
    let ca = std::fs::read(dir.join("certs/ca.crt")).expect("CA written");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        while load::one_request(server.webhook, &ca, "/mutate/pods", body)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    (server, started.elapsed())
}

fn main() {
    let (seconds, concurrency) = load::run_settings();
    let body = {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pod-create-devenv.json"
        ))
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::to_vec(&value).unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let (cold, cold_start) = start(dir.path(), &body);
    cold.stop();
    // Second start: certificates exist, as in a cluster with a Secret.
    let (server, warm_start) = start(dir.path(), &body);
    let port = server.webhook;
    let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(load::run(load::Load {
        port,
        ca: ca.clone(),
        path: "/mutate/pods".into(),
        method: "POST",
        body: body.clone(),
        headers: vec![],
        concurrency,
        duration: Duration::from_secs(seconds),
    }));
    let rss = load::rss_kib(server.child.id());
    server.stop();
    if load::quick() {
        assert!(
            result.ok > 0 && result.failed == 0,
            "{} ok, {} failed",
            result.ok,
            result.failed
        );
    }

    let title = format!(
        "webhook load: POST /mutate/pods, {} byte devenv-pod review, TLS 1.3 keep-alive, HTTP/1.1",
        body.len()
    );
    load::print_report(&title, concurrency, seconds, &result, rss);
    println!(
        "  start to 1st review  {:.1} ms (generating certificates: {:.1} ms)",
        warm_start.as_secs_f64() * 1e3,
        cold_start.as_secs_f64() * 1e3
    );
}
