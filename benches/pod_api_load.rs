//! Load benchmark of the pod API: `GET /api/v1/pods` with a warm token cache
//! over TLS keep-alive, against the release binary started as a user would,
//! talking to a real kube-apiserver (a dedicated test bed started here).
//!
//!     cargo bench --bench pod_api_load
//!     LOAD_SECONDS=20 LOAD_CONCURRENCY=64 cargo bench --bench pod_api_load
//!     # at scale: 1,000 developers with 5 pods of about 5 KB each
//!     LOAD_DEVELOPERS=1000 LOAD_PODS=5 LOAD_POD_BYTES=5000 cargo bench --bench pod_api_load
//!
//! Prints requests/s, latency percentiles, peak RSS of the server, and how
//! many TokenReviews the run cost. Targets (docs/performance.md): at least 5,000
//! requests/s at concurrency 32, p99 under 10 ms, at most one TokenReview per
//! token per minute. Needs the test bed binaries (`scripts/testbed.sh`).
//!
//! The per-developer rate limit (default 20 requests/s) is raised for the run:
//! the benchmark measures the server, not the limit.

use std::process::Command;
use std::time::Duration;

use devenv_testbed as testbed;
use devenv_testbed::load;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");
const AUDIENCE: &str = "devenv-manager";

fn main() {
    let (seconds, concurrency) = load::run_settings();
    let pods_of_developer: usize = load::env_or("LOAD_PODS", 5);
    // The caller (alice) and as many others as asked; each pod padded with
    // an annotation to about LOAD_POD_BYTES (a realistic pod is ~5 KB).
    let developers: usize = load::env_or("LOAD_DEVELOPERS", 2).max(1);
    let pod_bytes: usize = load::env_or("LOAD_POD_BYTES", 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // A dedicated API server with one devenv namespace: the developer's pods
    // and as many of others', which the list must filter out.
    let Some(bed) = runtime.block_on(testbed::start()) else {
        return;
    };
    let (ns, token) = runtime.block_on(async {
        use futures::StreamExt;
        let ns = bed.temp_namespace("bench").await;
        let pods = Api::<Pod>::namespaced(bed.client().await, &ns);
        let names: Vec<String> = std::iter::once("alice".to_string())
            .chain((1..developers).map(|i| format!("dev{i:05}")))
            .collect();
        let padding = "x".repeat(pod_bytes.saturating_sub(600));
        let started = std::time::Instant::now();
        let bed = &bed;
        futures::stream::iter(names.iter())
            .for_each_concurrent(16, |developer| {
                let (pods, ns, padding) = (pods.clone(), ns.clone(), padding.clone());
                async move {
                    let sa = format!("devenv-{developer}");
                    bed.create_service_account(&ns, &sa).await;
                    for i in 0..pods_of_developer {
                        let pod: Pod = serde_json::from_value(serde_json::json!({
                            "metadata": {"name": format!("{developer}-{i}"), "labels": {"developer": developer},
                                         "annotations": {"bench/padding": padding}},
                            "spec": {"serviceAccountName": sa, "containers": [{"name": "main", "image": "busybox"}]}
                        }))
                        .unwrap();
                        pods.create(&PostParams::default(), &pod).await.unwrap();
                    }
                }
            })
            .await;
        eprintln!(
            "created {} pods of {developers} developers in {:.1?}",
            developers * pods_of_developer,
            started.elapsed()
        );
        let token = bed.token(&ns, "devenv-alice", AUDIENCE, 3600).await;
        (ns, token)
    });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api:\n  bind: 127.0.0.1:0\n  developerRequestsPerSecond: 1000000\n  developerBurst: 1000000\n\
             devenv:\n  namespaces: [{ns}]\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("WEBHOOK_BIND", "127.0.0.1:0")
        .env("METRICS_BIND", "127.0.0.1:0")
        .env("KUBECONFIG", bed.kubeconfig_path());
    // The access log stays on: one JSON line per request, as in production.
    let server = load::spawn_serve(command, None);
    let api_port = server.api;
    let ca = std::fs::read(dir.path().join("certs/ca.crt")).expect("CA written");
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {token}")),
        ("x-auth-type".to_string(), "k8s-sa".to_string()),
    ];

    let metrics = |name: &str| server.metric(name);
    // The developer's list of their pods, by `concurrency` clients.
    let list = |concurrency, duration| load::Load {
        port: api_port,
        ca: ca.clone(),
        path: "/api/v1/pods".into(),
        method: "GET",
        body: vec![],
        headers: headers.clone(),
        concurrency,
        duration,
    };

    // Warm up: the cluster connection, the pod cache, and the token cache
    // (one TokenReview). Retried until the list has the developer's pods.
    runtime.block_on(async {
        loop {
            let warm = load::run(list(1, Duration::from_millis(200))).await;
            if warm.ok > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let reviews_before = metrics("tokenreview_requests_total");

    // The load, and meanwhile one of the caller's pods changed again and
    // again: how long each change takes to show through the API.
    let pods = runtime.block_on(bed.client());
    let pods = Api::<Pod>::namespaced(pods, &ns);
    let watched = ChangeProbe {
        pods: &pods,
        port: api_port,
        ca: &ca,
        headers: &headers,
        path: format!("/api/v1/pods/{ns}/alice-0"),
    };
    let (result, under_load) = runtime.block_on(async {
        let load = load::run(list(concurrency, Duration::from_secs(seconds)));
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        tokio::join!(load, watched.changes_until(deadline))
    });
    let rss = load::rss_kib(server.child.id());
    let idle = runtime.block_on(
        watched.changes_until(std::time::Instant::now() + Duration::from_secs(seconds.min(5))),
    );
    let reviews = metrics("tokenreview_requests_total");
    let hits = metrics("tokenreview_cache_hits_total");
    server.stop();

    let title = format!(
        "pod API load: GET /api/v1/pods ({pods_of_developer} of the caller's pods among {} of {developers} developers{}), one token, TLS 1.3 keep-alive, HTTP/1.1",
        developers * pods_of_developer,
        if pod_bytes > 0 {
            format!(", ~{pod_bytes} bytes each")
        } else {
            String::new()
        }
    );
    load::print_report(&title, concurrency, seconds, &result, rss);
    println!(
        "  TokenReviews         {} in total ({} during the run), {hits} cache hits",
        reviews,
        reviews - reviews_before
    );
    print_changes("during the load", &under_load);
    print_changes("idle", &idle);
    if load::quick() {
        // Run by `cargo test`: every request answered, every change shown.
        assert!(
            result.ok > 0 && result.failed == 0,
            "{} ok, {} failed",
            result.ok,
            result.failed
        );
        assert!(!under_load.is_empty() && !idle.is_empty());
    }
}

/// Changes one pod through the API server and times how long the pod API
/// takes to show each (its resourceVersion), polling every millisecond.
struct ChangeProbe<'a> {
    pods: &'a Api<Pod>,
    port: u16,
    ca: &'a [u8],
    headers: &'a [(String, String)],
    path: String,
}

impl ChangeProbe<'_> {
    /// The delay of each change, one change every 100 ms until `deadline`.
    async fn changes_until(&self, deadline: std::time::Instant) -> Vec<Duration> {
        use kube::api::{Patch, PatchParams};
        let mut client = load::Client::connect(self.port, self.ca)
            .await
            .expect("a connection for the change probe");
        let mut delays = Vec::new();
        let mut round = 0u64;
        while std::time::Instant::now() < deadline {
            round += 1;
            let patch =
                serde_json::json!({"metadata": {"labels": {"bench/change": round.to_string()}}});
            let changed = self
                .pods
                .patch("alice-0", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("changing the pod");
            let version = changed
                .metadata
                .resource_version
                .expect("a resourceVersion");
            let since = std::time::Instant::now();
            loop {
                let (status, body) = client
                    .get(&self.path, self.headers)
                    .await
                    .expect("GET the pod");
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                let shown: serde_json::Value =
                    serde_json::from_slice(&body).expect("a pod summary");
                if shown["resourceVersion"] == version.as_str() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            delays.push(since.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        delays.sort_unstable();
        delays
    }
}

fn print_changes(when: &str, delays: &[Duration]) {
    let result = load::LoadResult {
        ok: delays.len(),
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: delays.to_vec(),
    };
    let ms = |p: f64| result.percentile(p).as_secs_f64() * 1e3;
    println!(
        "  pod change to API    {when}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} changes; API server watch included)",
        ms(0.5),
        ms(0.99),
        ms(1.0),
        delays.len()
    );
}
