//! Abuse benchmark: the release binary on its default settings, attacked as a
//! tenant inside the cluster could, while an honest client keeps sending
//! ordinary reviews.
//!
//!     cargo bench --bench abuse
//!     ABUSE_STREAMS=256 ABUSE_REQUESTS=512 ABUSE_IDLE=2000 cargo bench --bench abuse
//!
//! (a) 2 HTTP/2 connections x 256 streams, 512 requests, each a 3 MiB review
//!     (once with an object that is not a pod, once a valid devenv pod):
//!     peak RSS, and what every request got (200, 400, 503 or no answer);
//! (b) 2,000 idle connections across :8443 (TLS done, then silence), :8080
//!     (only the HTTP/2 preface) and :9090 (plain TCP): how many the server
//!     accepted, how long until it had closed every one, RSS meanwhile;
//! (c) (a) and (b) at once.
//! In every phase an honest client (its own thread and connection, opened
//! before the attack) sends 5 KB devenv-pod reviews one after another; its
//! latency percentiles and failures are printed.
//!
//! Targets (docs/performance.md): peak RSS under 128 MiB in (a), under 64 MiB in (b);
//! every request answered; idle connections closed within the deadline
//! (requestHeaderTimeoutSeconds, 10 s) + 2 s; honest p99 under 50 ms.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use devenv_testbed::load;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");
const MIB: usize = 1024 * 1024;

struct Settings {
    connections: usize,
    streams: usize,
    requests: usize,
    idle: usize,
}

impl Settings {
    fn from_env() -> Self {
        let quick = load::quick();
        Settings {
            connections: 2,
            streams: load::env_or("ABUSE_STREAMS", if quick { 16 } else { 256 }),
            requests: load::env_or("ABUSE_REQUESTS", if quick { 32 } else { 512 }),
            idle: load::env_or("ABUSE_IDLE", if quick { 60 } else { 2000 }),
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let honest_body = honest_review();
    let not_a_pod = big_review(false);
    let valid_pod = big_review(true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "abuse: release binary, default settings, a fresh server per phase; attacker, honest client and server on one 2-core host"
    );
    // ABUSE_PHASES=c runs only (c), and so on.
    let phases: String = load::env_or("ABUSE_PHASES", "abc".to_string());
    for (title, body) in [
        (
            "(a) 3 MiB reviews of an object that is not a pod",
            &not_a_pod,
        ),
        ("(a) 3 MiB reviews of a valid devenv pod", &valid_pod),
    ] {
        if !phases.contains('a') {
            break;
        }
        let server = Target::start(&runtime, &honest_body);
        let phase = server.phase(&honest_body);
        let streams = runtime.block_on(stream_flood(&settings, server.ports.0, &server.ca, body));
        phase.finish(title, &settings, Some(streams), None);
        server.stop(&runtime, &honest_body);
    }
    if phases.contains('b') {
        let server = Target::start(&runtime, &honest_body);
        let phase = server.phase(&honest_body);
        let idle = runtime.block_on(idle_flood(settings.idle, server.ports, &server.ca));
        phase.finish(
            "(b) idle connections on :8443, :8080, :9090",
            &settings,
            None,
            Some(idle),
        );
        server.stop(&runtime, &honest_body);
    }
    if phases.contains('c') {
        let server = Target::start(&runtime, &honest_body);
        let phase = server.phase(&honest_body);
        let (streams, idle) = runtime.block_on(async {
            tokio::join!(
                stream_flood(&settings, server.ports.0, &server.ca, &valid_pod),
                idle_flood(settings.idle, server.ports, &server.ca)
            )
        });
        phase.finish(
            "(c) (a) and (b) at once",
            &settings,
            Some(streams),
            Some(idle),
        );
        server.stop(&runtime, &honest_body);
    }
}

/// A `devenv-manager serve` on default settings, answering reviews.
struct Target {
    serve: load::Serve,
    ports: (u16, u16, u16),
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Target {
    fn start(runtime: &tokio::runtime::Runtime, honest_body: &[u8]) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .current_dir(dir.path())
            .env("WEBHOOK_BIND", "127.0.0.1:0")
            .env("API_BIND", "127.0.0.1:0")
            .env("METRICS_BIND", "127.0.0.1:0");
        let serve = load::spawn_serve(command, None);
        let ca = std::fs::read(dir.path().join("certs/ca.crt")).expect("CA written");
        runtime.block_on(async {
            while load::one_request(serve.webhook, &ca, "/mutate/pods", honest_body)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let idle = load::rss_kib(serve.child.id()).map_or(0, |(rss, _)| rss);
        println!("\n  fresh server RSS     {:.1} MiB", mib(idle));
        Target {
            ports: (serve.webhook, serve.api, serve.metrics),
            serve,
            ca,
            _dir: dir,
        }
    }

    fn phase(&self, honest_body: &[u8]) -> Phase {
        Phase::start(self.serve.child.id(), self.ports.0, &self.ca, honest_body)
    }

    /// Checks the server still answers, reports what it holds, stops it.
    fn stop(self, runtime: &tokio::runtime::Runtime, honest_body: &[u8]) {
        let alive = runtime.block_on(load::one_request(
            self.ports.0,
            &self.ca,
            "/mutate/pods",
            honest_body,
        ));
        let after = load::rss_kib(self.serve.child.id()).map_or(0, |(rss, _)| rss);
        if load::quick() {
            assert!(alive.is_ok(), "the server stopped answering: {alive:?}");
        }
        println!(
            "  after the attack     {}, RSS {:.1} MiB",
            if alive.is_ok() {
                "alive"
            } else {
                "NOT ANSWERING"
            },
            mib(after)
        );
        self.serve.stop();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The 5 KB devenv-pod review of the webhook benchmarks.
fn honest_review() -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pod-create-devenv.json"
    ))
    .unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    serde_json::to_vec(&value).unwrap()
}

/// A review just under 3 MiB: a devenv pod with a huge annotation, or an
/// object whose `spec` is a huge string (not a pod: denied).
fn big_review(valid: bool) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&honest_review()).unwrap();
    let filler = "x".repeat(3 * MIB - 16 * 1024);
    if valid {
        review["request"]["object"]["metadata"]["annotations"] = json!({ "filler": filler });
    } else {
        review["request"]["object"]["spec"] = json!(filler);
    }
    serde_json::to_vec(&review).unwrap()
}

/// Samples the server's RSS and runs the honest client, for one phase.
struct Phase {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
    honest: std::thread::JoinHandle<(Vec<Duration>, usize)>,
    started: Instant,
}

impl Phase {
    fn start(pid: u32, port: u16, ca: &[u8], body: &[u8]) -> Phase {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(load::rss_kib(pid).map_or(0, |(rss, _)| rss));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            })
        };
        // The honest client connects before the attack starts, as an API
        // server's keep-alive connection would be there already.
        let (connected, ready) = std::sync::mpsc::channel();
        let honest = {
            let (stop, ca, body) = (stop.clone(), ca.to_vec(), body.to_vec());
            std::thread::spawn(move || honest_client(port, &ca, &body, &stop, connected))
        };
        let _ = ready.recv();
        Phase {
            stop,
            sampler,
            honest,
            started: Instant::now(),
        }
    }

    fn finish(
        self,
        title: &str,
        settings: &Settings,
        streams: Option<Statuses>,
        idle: Option<Idle>,
    ) {
        let elapsed = self.started.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.join().unwrap();
        let (mut latencies, failed) = self.honest.join().unwrap();
        latencies.sort_unstable();
        println!("\n{title}");
        println!("  duration             {:.1} s", elapsed.as_secs_f64());
        if let Some(s) = streams {
            println!(
                "  attack               {} connections x {} streams, {} requests of {:.2} MiB",
                settings.connections,
                settings.streams,
                settings.requests,
                s.body_bytes as f64 / MIB as f64
            );
            println!(
                "  answers              200: {}, 400: {}, 503: {}, other: {}, no answer: {}; connections refused: {}",
                s.ok, s.bad_request, s.busy, s.other, s.unanswered, s.refused_connections
            );
        }
        if let Some(i) = &idle {
            println!(
                "  idle connections     {} opened, {} accepted, {} refused at once, {} never closed {:?}",
                i.opened, i.accepted, i.refused, i.open_at_end, i.open_by_port
            );
            println!(
                "  all closed after     {:.1} s (deadline 10 s + 2 s allowed)",
                i.all_closed_after.as_secs_f64()
            );
        }
        println!("  server peak RSS      {:.1} MiB", mib(peak));
        let ms = |p: f64| {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let i = ((latencies.len() - 1) as f64 * p).round() as usize;
            latencies[i].as_secs_f64() * 1e3
        };
        println!(
            "  honest reviews       {} ok, {} failed; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            failed,
            ms(0.5),
            ms(0.99),
            ms(1.0)
        );
        if load::quick() {
            // Run by `cargo test`: the bounds held if the honest client was
            // answered throughout and no idle connection outlived its deadline.
            assert!(
                !latencies.is_empty() && failed == 0,
                "{title}: honest reviews {} ok, {failed} failed",
                latencies.len()
            );
            if let Some(i) = idle {
                assert_eq!(i.open_at_end, 0, "{title}: idle connections never closed");
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection, reviews back to back until `stop`.
fn honest_client(
    port: u16,
    ca: &[u8],
    body: &[u8],
    stop: &AtomicBool,
    connected: std::sync::mpsc::Sender<()>,
) -> (Vec<Duration>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut latencies = Vec::new();
        let mut failed = 0;
        let mut sender = load::Client::connect(port, ca)
            .await
            .expect("honest connection");
        let _ = connected.send(());
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match sender.post("/mutate/pods", body).await {
                Ok(200) => latencies.push(started.elapsed()),
                _ => {
                    failed += 1;
                    if let Ok(fresh) = load::Client::connect(port, ca).await {
                        sender = fresh;
                    }
                }
            }
            // About a hundred reviews a second: an honest API server.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (latencies, failed)
    })
}

#[derive(Default)]
struct Statuses {
    ok: usize,
    bad_request: usize,
    busy: usize,
    other: usize,
    unanswered: usize,
    /// Attack connections the server closed at accept (a full listener);
    /// their requests were never sent.
    refused_connections: usize,
    body_bytes: usize,
}

/// `h2load -n REQUESTS -c 2 -m STREAMS`: HTTP/2 connections, each with up
/// to STREAMS requests in flight (the server's stream limit applies).
async fn stream_flood(settings: &Settings, port: u16, ca: &[u8], body: &[u8]) -> Statuses {
    let body = Bytes::from(body.to_vec());
    let per_connection = settings.requests.div_ceil(settings.connections);
    let mut tasks = Vec::new();
    let mut refused_connections = 0;
    for _ in 0..settings.connections {
        let Ok(sender) = h2_connect(port, ca).await else {
            refused_connections += 1;
            continue;
        };
        for _ in 0..per_connection {
            let (mut sender, body) = (sender.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let request = hyper::Request::post("https://localhost/mutate/pods")
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap();
                sender.ready().await.ok()?;
                let response = sender.send_request(request).await.ok()?;
                let status = response.status().as_u16();
                response.into_body().collect().await.ok()?;
                Some(status)
            }));
        }
    }
    let mut s = Statuses {
        refused_connections,
        body_bytes: body.len(),
        ..Statuses::default()
    };
    for task in tasks {
        match task.await.ok().flatten() {
            Some(200) => s.ok += 1,
            Some(400) => s.bad_request += 1,
            Some(503) => s.busy += 1,
            Some(_) => s.other += 1,
            None => s.unanswered += 1,
        }
    }
    s
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_connect(
    port: u16,
    ca: &[u8],
) -> Result<H2Sender, Box<dyn std::error::Error + Send + Sync>> {
    let tls = load::tls_connect(port, ca, b"h2").await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    // One request first, so the server's SETTINGS (its stream limit) are
    // known before the flood: a client that opens streams past the limit
    // before it has read them gets them refused (REFUSED_STREAM), as with
    // any HTTP/2 server.
    let probe = hyper::Request::post("https://localhost/mutate/pods")
        .body(Full::new(Bytes::from_static(b"{}")))?;
    sender.ready().await?;
    sender
        .send_request(probe)
        .await?
        .into_body()
        .collect()
        .await?;
    Ok(sender)
}

struct Idle {
    opened: usize,
    accepted: usize,
    refused: usize,
    open_at_end: usize,
    /// Of those never closed, how many per port (webhook, api, metrics).
    open_by_port: [usize; 3],
    all_closed_after: Duration,
}

/// Opens `n` connections spread over the three ports, sends each what an
/// idle attacker would, and waits until the server has closed them all.
async fn idle_flood(n: usize, (webhook, api, metrics): (u16, u16, u16), ca: &[u8]) -> Idle {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let ca = ca.to_vec();
        tasks.push(tokio::spawn(async move {
            // Some(true): accepted and later closed by the server; Some(false):
            // closed at once; None: still open when we gave up.
            let patience = Duration::from_secs(60);
            let mut buf = [0u8; 4096];
            match i % 3 {
                0 => {
                    let Ok(mut tls) = load::tls_connect(webhook, &ca, b"http/1.1").await else {
                        return (Some(false), started.elapsed());
                    };
                    let answered = tokio::time::timeout(patience, tls.read(&mut buf)).await;
                    (answered.ok().map(|_| true), started.elapsed())
                }
                1 => {
                    let Ok(mut tls) = load::tls_connect(api, &ca, b"h2").await else {
                        return (Some(false), started.elapsed());
                    };
                    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    let closed = tokio::time::timeout(patience, async {
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    (closed.ok().map(|_| true), started.elapsed())
                }
                _ => {
                    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", metrics)).await
                    else {
                        return (Some(false), started.elapsed());
                    };
                    let opened = Instant::now();
                    let closed = tokio::time::timeout(patience, tcp.read(&mut buf)).await;
                    // Closed within a moment of connecting: refused, not served.
                    let refused = opened.elapsed() < Duration::from_millis(500);
                    (closed.ok().map(|_| !refused), started.elapsed())
                }
            }
        }));
    }
    let mut idle = Idle {
        opened: n,
        accepted: 0,
        refused: 0,
        open_at_end: 0,
        open_by_port: [0; 3],
        all_closed_after: Duration::ZERO,
    };
    for (i, task) in tasks.into_iter().enumerate() {
        let (outcome, at) = task.await.unwrap_or((None, Duration::ZERO));
        match outcome {
            Some(true) => idle.accepted += 1,
            Some(false) => idle.refused += 1,
            None => {
                idle.open_at_end += 1;
                idle.open_by_port[i % 3] += 1;
            }
        }
        idle.all_closed_after = idle.all_closed_after.max(at);
    }
    idle
}
