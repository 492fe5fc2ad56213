//! A small HTTPS load generator for the benchmarks: N keep-alive HTTP/1.1
//! connections over rustls, each sending requests back to back for a fixed
//! time, every latency recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub struct Load {
    pub port: u16,
    pub ca: Vec<u8>,
    pub path: String,
    pub method: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub concurrency: usize,
    pub duration: Duration,
}

pub struct LoadResult {
    pub ok: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  requests             {} ok, {} failed",
            self.ok, self.failed
        );
        println!("  throughput           {:.0} requests/s", self.rate());
        println!(
            "  latency              p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0))
        );
    }
}

fn connector(ca: &[u8]) -> TlsConnector {
    connector_for(ca, b"http/1.1")
}

/// A TLS client that trusts only `ca` and offers exactly `alpn`.
fn connector_for(ca: &[u8], alpn: &[u8]) -> TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A TLS connection to `127.0.0.1:port` offering `alpn`.
pub async fn tls_connect(
    port: u16,
    ca: &[u8],
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    Ok(connector_for(ca, alpn)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// One keep-alive HTTP/1.1 connection that posts JSON.
pub struct Client {
    sender: Sender,
}

impl Client {
    pub async fn connect(port: u16, ca: &[u8]) -> Result<Client, Error> {
        Ok(Client {
            sender: connect(port, &connector(ca)).await?,
        })
    }

    /// The status of a POST of `body` to `path`, its answer read whole.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<u16, Error> {
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_vec())))?;
        Ok(self.exchange(request).await?.0)
    }

    /// The status and body of a GET of `path` with `headers`.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(u16, Bytes), Error> {
        let mut request = hyper::Request::get(path).header("host", "localhost");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.exchange(request.body(Full::new(Bytes::new()))?).await
    }

    async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(
    port: u16,
    tls: &TlsConnector,
) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    load: &Load,
    body: &Bytes,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let mut request = hyper::Request::builder()
        .method(load.method)
        .uri(&load.path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (name, value) in &load.headers {
        request = request.header(name, value);
    }
    sender.ready().await?;
    let response = sender
        .send_request(request.body(Full::new(body.clone()))?)
        .await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// One request on a fresh connection; Ok when the answer is 200.
pub async fn one_request(
    port: u16,
    ca: &[u8],
    path: &str,
    body: &[u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let load = Load {
        port,
        ca: ca.to_vec(),
        path: path.to_string(),
        method: "POST",
        body: body.to_vec(),
        headers: vec![],
        concurrency: 1,
        duration: Duration::ZERO,
    };
    let mut sender = connect(port, &connector(ca)).await?;
    match send(&mut sender, &load, &Bytes::from(body.to_vec())).await? {
        200 => Ok(()),
        status => Err(format!("HTTP {status}").into()),
    }
}

pub async fn run(load: Load) -> LoadResult {
    let load = Arc::new(load);
    let tls = connector(&load.ca);
    let body = Bytes::from(load.body.clone());
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut workers = Vec::new();
    for _ in 0..load.concurrency {
        let (load, tls, body) = (load.clone(), tls.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(65_536);
            let mut failed = 0;
            let mut sender = match connect(load.port, &tls).await {
                Ok(sender) => sender,
                Err(_) => return (latencies, 1),
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                match send(&mut sender, &load, &body).await {
                    Ok(200) => latencies.push(t.elapsed()),
                    Ok(_) => failed += 1,
                    Err(_) => {
                        failed += 1;
                        match connect(load.port, &tls).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (l, f) = worker.await.expect("worker");
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    LoadResult {
        ok: latencies.len(),
        failed,
        elapsed,
        latencies,
    }
}

/// The common part of a load benchmark's report: what ran, how it went, and
/// the server's memory (VmRSS, VmHWM in KiB, from [`rss_kib`]).
pub fn print_report(
    title: &str,
    concurrency: usize,
    seconds: u64,
    result: &LoadResult,
    rss: Option<(u64, u64)>,
) {
    println!("{title}");
    println!("  concurrency          {concurrency}");
    println!("  duration             {seconds} s");
    result.print();
    if let Some((rss, hwm)) = rss {
        println!(
            "  server RSS           {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, all threads) a process has used so far, in
/// seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the `)` after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks:
    // 100 a second on every Linux that Rust's standard targets run.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// `cargo bench` passes `--bench`; `cargo test --benches` passes nothing, and
/// then a benchmark runs briefly, as a smoke test.
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Duration (s) and concurrency of a load run: `LOAD_SECONDS` (10, or 1 when
/// [`quick`]) and `LOAD_CONCURRENCY` (32).
pub fn run_settings() -> (u64, usize) {
    let seconds = if quick() {
        1
    } else {
        env_or("LOAD_SECONDS", 10)
    };
    (seconds, env_or("LOAD_CONCURRENCY", 32))
}

/// A knob of a benchmark, from the environment.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `devenv-manager serve` process under test and the ports it listens on.
pub struct Serve {
    pub child: std::process::Child,
    pub webhook: u16,
    pub api: u16,
    pub metrics: u16,
}

/// Starts `command` (a `devenv-manager serve` with its arguments and
/// environment) and reads its log until it says where it listens. The rest of
/// the log is drained (into `log`, when given) so the server never blocks on a
/// full pipe.
pub fn spawn_serve(mut command: std::process::Command, log: Option<std::path::PathBuf>) -> Serve {
    use std::io::{BufRead, BufReader, Write};
    let mut child = command
        .env("LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("devenv-manager runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = |entry: &serde_json::Value, key: &str| -> u16 {
        entry[key]
            .as_str()
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .unwrap_or(0)
    };
    let entry = loop {
        let line = lines
            .next()
            .expect("serve logs its addresses")
            .expect("log line");
        if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
            && entry.get("webhook_addr").is_some()
        {
            break entry;
        }
    };
    std::thread::spawn(move || {
        let mut file = log.and_then(|path| std::fs::File::create(path).ok());
        for line in lines.map_while(Result::ok) {
            if let Some(file) = file.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });
    Serve {
        webhook: port(&entry, "webhook_addr"),
        api: port(&entry, "api_addr"),
        metrics: port(&entry, "metrics_addr"),
        child,
    }
}

impl Serve {
    /// The body of a GET of `path` on the metrics port (empty when it cannot
    /// be had).
    pub fn probe(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return String::new();
        };
        let request = format!("GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n");
        let _ = stream.write_all(request.as_bytes());
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    /// One metric's value from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        self.probe("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGTERM, as Kubernetes stops a pod, and wait for the exit.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
