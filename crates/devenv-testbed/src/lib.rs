//! Integration-test bed: a real etcd and kube-apiserver started for `cargo test`,
//! in the spirit of controller-runtime's envtest.
//!
//! ```ignore
//! mod testbed;
//!
//! #[tokio::test]
//! async fn something() {
//!     let Some(bed) = testbed::shared().await else { return };
//!     let client = bed.client().await;
//!     let ns = bed.temp_namespace("something").await;
//!     // ...
//! }
//! ```
//!
//! Where the servers come from:
//! - `DEVENV_E2E_KUBECONFIG=<file>`: nothing is started; every test talks to that
//!   cluster as the kubeconfig's user and `bed.real_cluster` is true.
//! - otherwise the binaries in `$DEVENV_TESTBED_BIN` or `<crate>/.testbed/bin`,
//!   built by `scripts/testbed.sh`. When they are missing the first test that
//!   needs them runs that script (once per process, one process at a time,
//!   its progress on stderr); `DEVENV_TESTBED_BUILD=0` opts out, and a test
//!   then prints one `skipping` line and returns, unless
//!   `DEVENV_REQUIRE_TESTBED=1` makes that a failure.
//! - `DEVENV_TESTBED_KEEP=1` keeps the bed's directory (logs, certificates,
//!   audit log, kubeconfig) after the test process exits.
//!
//! The local bed has no controller-manager, scheduler or kubelet: namespaces are
//! never finalized, pods never run and no `default` service account appears by
//! itself (`temp_namespace` creates one so that pods pass admission). Tests
//! that need pods to run use [`node::shared`]: a real one-node cluster.

// Each integration test binary compiles its own copy of this module and uses
// only part of it.
#![allow(dead_code)]

pub mod manager;
pub mod node;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::sync::OnceCell;

/// Issuer of service-account tokens, as in a kubeadm cluster.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Verbs the audit policy records, and that [`TestBed::count_writes`] counts.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;
/// A free port picked by binding to port 0 can be taken by someone else before
/// the server binds it; starting again with new ports is then the cure.
const START_ATTEMPTS: usize = 3;

/// Runs `"$0" "$@"` and kills it once its own stdin reaches end-of-file, which
/// happens when the test process closes our end of the pipe: explicitly
/// (`stop_apiserver`, drop) or by exiting in any way, including a panic, an abort
/// or SIGKILL. Without it, a server started for a `static` bed (whose `Drop` never
/// runs) would outlive the test process.
///
/// The server gets /dev/null as stdin (background jobs do), so the watcher reads
/// the pipe through fd 3. The wrapper exits with the server's status, which lets
/// the harness notice a server that died by itself. When the watcher killed the
/// server (status 137) and `DEVENV_TESTBED_CLEANUP` names a directory, it is
/// removed: that is how the shared bed, which is never dropped, cleans up. Both
/// wrappers of a bed do it, so the last to finish removes what the other server
/// may still have written.
const WRAPPER: &str = r#"exec 3<&0
"$0" "$@" 3<&- &
server=$!
{ read -r _ <&3; kill -9 "$server" 2>/dev/null; } &
watcher=$!
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
if [ "$status" -eq 137 ] && [ -n "$DEVENV_TESTBED_CLEANUP" ]; then
  rm -rf "$DEVENV_TESTBED_CLEANUP"
fi
exit "$status""#;

/// A Kubernetes API server for tests: a local etcd + kube-apiserver, or the
/// cluster named by `DEVENV_E2E_KUBECONFIG`.
/// Polls `check` until it returns Some, for up to 60 s; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One access check: API group, resource, verb, namespace (None: cluster-wide).
pub type Access<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

/// A service-account identity for a component under test.
pub struct Identity {
    pub client: Client,
    /// The same identity as a client configuration.
    pub config: kube::Config,
    pub username: String,
    pub kubeconfig: PathBuf,
}

pub struct TestBed {
    /// True when the tests run against a real cluster (`DEVENV_E2E_KUBECONFIG`),
    /// which has a kubelet, a controller-manager and so on; false for the local
    /// bed, which has only the API server.
    pub real_cluster: bool,
    config: kube::Config,
    server_url: String,
    kubeconfig_path: PathBuf,
    local: Option<Local>,
    /// The directory of a [`node`] cluster.
    node_dir: Option<PathBuf>,
}

/// The processes and files of a local bed.
///
/// Fields drop in declaration order: the servers die before `tempdir` removes
/// their files.
struct Local {
    apiserver: Server,
    etcd: Server,
    dir: PathBuf,
    audit_log: PathBuf,
    /// Owned by dedicated beds only; the shared bed's wrappers remove its
    /// directory at process exit instead.
    tempdir: Option<tempfile::TempDir>,
}

static SHARED: OnceCell<Result<TestBed, String>> = OnceCell::const_new();

/// The API server shared by all tests of this test binary, started on first use;
/// `None` (after printing a `skipping` line) when the test bed is not built.
///
/// Each `#[tokio::test]` runs on its own runtime, and a `kube::Client` spawns a
/// worker task on the runtime that creates it, so a client stored here would die
/// with the first test's runtime. The bed therefore keeps only the
/// runtime-independent `kube::Config` and the child processes (std, not tokio),
/// and [`TestBed::client`] builds a fresh client for the calling test.
pub async fn shared() -> Option<&'static TestBed> {
    let target = target(false)?;
    let bed = SHARED
        .get_or_init(|| async move {
            match target {
                Target::Cluster(kubeconfig) => TestBed::from_kubeconfig(&kubeconfig).await,
                Target::Local(bin) => TestBed::start_local(&bin, true).await,
            }
        })
        .await;
    match bed {
        Ok(bed) => Some(bed),
        Err(e) => panic!("the shared test bed failed to start: {e}"),
    }
}

/// A dedicated local bed for a test that stops or breaks its API server; drop
/// stops it and removes its files. `None` (after printing a `skipping` line) when
/// the bed is not built or when the tests run against a real cluster.
pub async fn start() -> Option<TestBed> {
    let Target::Local(bin) = target(true)? else {
        unreachable!("target(true) never returns a cluster")
    };
    match TestBed::start_local(&bin, false).await {
        Ok(bed) => Some(bed),
        Err(e) => panic!("a dedicated test bed failed to start: {e}"),
    }
}

/// Prints the single line that says why the current test returns early.
pub fn skip(reason: &str) {
    // libtest runs each test on a thread named after it, and #[tokio::test]
    // polls the test body on that thread.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    uncaptured(&format!("skipping {test}: {reason}"));
}

/// Writes a line to stderr past libtest's output capture (which only intercepts
/// `eprintln!`), so that it shows in a normal `cargo test` run.
fn uncaptured(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

enum Target {
    Cluster(PathBuf),
    Local(PathBuf),
}

/// Where the tests get their API server from; `None` after printing why a test
/// must skip.
fn target(need_local: bool) -> Option<Target> {
    if let Some(kubeconfig) = std::env::var_os("DEVENV_E2E_KUBECONFIG") {
        if need_local {
            skip("needs a local test bed, but DEVENV_E2E_KUBECONFIG is set");
            return None;
        }
        return Some(Target::Cluster(kubeconfig.into()));
    }
    let bin = bin_dir();
    let built = |bin: &Path| bin.join("kube-apiserver").is_file() && bin.join("etcd").is_file();
    if !built(&bin) {
        build_test_bed(&bin);
    }
    if built(&bin) {
        return Some(Target::Local(bin));
    }
    if std::env::var("DEVENV_REQUIRE_TESTBED").as_deref() == Ok("1") {
        panic!(
            "DEVENV_REQUIRE_TESTBED=1 but {} lacks kube-apiserver or etcd: \
             run scripts/testbed.sh or set DEVENV_TESTBED_BIN",
            bin.display()
        );
    }
    skip("test bed not built (run scripts/testbed.sh)");
    None
}

/// Where the test bed's binaries are: `$DEVENV_TESTBED_BIN` or
/// `<crate>/.testbed/bin`.
fn bin_dir() -> PathBuf {
    std::env::var_os("DEVENV_TESTBED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".testbed/bin"))
}

/// Runs `scripts/testbed.sh` (the API server, etcd and the node's pieces)
/// unless `DEVENV_TESTBED_BUILD=0`: at most once per test process, and one
/// process at a time (`flock` on a file beside the binaries), so that test
/// binaries run in parallel build it once. Its progress goes to stderr, past
/// the test harness's capture. A failed build is reported by the caller,
/// which finds the binaries still missing.
fn build_test_bed(bin: &Path) {
    static BUILD: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    if std::env::var("DEVENV_TESTBED_BUILD").as_deref() == Ok("0") {
        return;
    }
    let mut tried = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if *tried {
        return;
    }
    *tried = true;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh");
    let lock = bin.with_file_name(".build.lock");
    if let Some(parent) = lock.parent() {
        let _ = fs::create_dir_all(parent);
    }
    uncaptured(&format!(
        "testbed: building the test bed with {} (once; several minutes on a fresh \
         machine; DEVENV_TESTBED_BUILD=0 skips this)",
        script.display()
    ));
    let started = Instant::now();
    let status = Command::new("flock")
        .arg(&lock)
        .arg("bash")
        .arg(&script)
        .env("DEVENV_TESTBED_BIN", bin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => uncaptured(&format!(
            "testbed: built in {:.0}s",
            started.elapsed().as_secs_f64()
        )),
        Ok(status) => uncaptured(&format!("testbed: {} failed ({status})", script.display())),
        Err(e) => uncaptured(&format!("testbed: cannot run {}: {e}", script.display())),
    }
}

impl TestBed {
    async fn from_kubeconfig(path: &Path) -> Result<TestBed, String> {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| format!("reading DEVENV_E2E_KUBECONFIG {}: {e}", path.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("loading DEVENV_E2E_KUBECONFIG {}: {e}", path.display()))?;
        let server_url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        Ok(TestBed {
            real_cluster: true,
            config,
            server_url,
            kubeconfig_path: path.to_owned(),
            local: None,
            node_dir: None,
        })
    }

    async fn start_local(bin: &Path, shared: bool) -> Result<TestBed, String> {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start_local(bin, shared).await {
                Ok(bed) => return Ok(bed),
                Err(e) if e.port_clash => errors.push(e.message),
                Err(e) => return Err(e.message),
            }
        }
        Err(errors.join("\n---- next attempt ----\n"))
    }

    async fn try_start_local(bin: &Path, shared: bool) -> Result<TestBed, StartError> {
        let started = Instant::now();
        let tempdir = tempfile::Builder::new()
            .prefix("devenv-testbed-")
            .tempdir()
            .map_err(|e| StartError::from(format!("creating the test bed directory: {e}")))?;
        let dir = tempdir.path().to_owned();
        let keep = std::env::var("DEVENV_TESTBED_KEEP").as_deref() == Ok("1");
        // The shared bed is never dropped: its wrappers remove the directory when
        // the test process exits. A dedicated bed removes it on drop.
        let (tempdir, cleanup) = match (keep, shared) {
            (true, _) => {
                let _kept = tempdir.keep();
                (None, None)
            }
            (false, true) => (None, Some(tempdir.keep())),
            (false, false) => (Some(tempdir), None),
        };
        if keep {
            uncaptured(&format!("testbed: keeping {}", dir.display()));
        }
        let cleanup = cleanup.as_deref();

        let [etcd_client, etcd_peer, apiserver_port] = free_ports()?;
        let files = write_files(&dir, apiserver_port)?;

        let etcd_url = |port: u16| format!("http://127.0.0.1:{port}");
        // On an early return the servers drop, and so die, before `tempdir`.
        let mut etcd = Server::spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=testbed".to_owned(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={}", etcd_url(etcd_client)),
                format!("--advertise-client-urls={}", etcd_url(etcd_client)),
                format!("--listen-peer-urls={}", etcd_url(etcd_peer)),
                format!("--initial-advertise-peer-urls={}", etcd_url(etcd_peer)),
                format!("--initial-cluster=testbed={}", etcd_url(etcd_peer)),
                // Nothing here must survive a crash, and fsync is most of etcd's
                // write latency.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &dir.join("etcd.log"),
            cleanup,
        )?;
        wait_for_etcd(&mut etcd, etcd_client).await?;

        let path = |p: &Path| p.display().to_string();
        let apiserver = Server::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={}", etcd_url(etcd_client)),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                // The endpoint reconciler refuses a loopback address, and nothing
                // here routes to the `kubernetes` service anyway.
                "--endpoint-reconciler-type=none".to_owned(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", dir.display()),
                format!("--tls-cert-file={}", path(&files.serving_cert)),
                format!("--tls-private-key-file={}", path(&files.serving_key)),
                format!("--client-ca-file={}", path(&files.client_ca)),
                "--authorization-mode=RBAC".to_owned(),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", path(&files.sa_public_key)),
                format!("--service-account-signing-key-file={}", path(&files.sa_key)),
                format!("--api-audiences={SA_ISSUER}"),
                "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
                "--allow-privileged=true".to_owned(),
                // The default admission plugins stay on: they include
                // MutatingAdmissionWebhook and ValidatingAdmissionWebhook.
                format!("--audit-policy-file={}", path(&files.audit_policy)),
                format!("--audit-log-path={}", path(&files.audit_log)),
                "--audit-log-format=json".to_owned(),
                // Blocking (the default, spelled out): each event is written as
                // its request finishes; batch mode would hold events back for
                // seconds and make `count_writes` lag.
                "--audit-log-mode=blocking".to_owned(),
                "--audit-log-maxsize=0".to_owned(),
                "--profiling=false".to_owned(),
            ],
            &dir.join("kube-apiserver.log"),
            cleanup,
        )?;
        let mut local = Local {
            apiserver,
            etcd,
            dir: dir.clone(),
            audit_log: files.audit_log.clone(),
            tempdir,
        };

        let kubeconfig = Kubeconfig::read_from(&files.kubeconfig)
            .map_err(|e| StartError::from(format!("reading the admin kubeconfig: {e}")))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| StartError::from(format!("loading the admin kubeconfig: {e}")))?;
        wait_for_apiserver(&mut local.apiserver, &config).await?;
        eprintln!(
            "testbed: kube-apiserver ready at https://127.0.0.1:{apiserver_port} after {:.1}s (files in {})",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(TestBed {
            real_cluster: false,
            config,
            server_url: format!("https://127.0.0.1:{apiserver_port}"),
            kubeconfig_path: files.kubeconfig,
            local: Some(local),
            node_dir: None,
        })
    }

    /// Configuration for an admin client (system:masters on the local bed).
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A new admin client, bound to the calling test's tokio runtime.
    pub async fn client(&self) -> Client {
        Client::try_from(self.kube_config()).expect("building a client for the test bed")
    }

    /// A new client that authenticates with `token` (e.g. from [`TestBed::token`])
    /// instead of the admin credentials.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut config = self.kube_config();
        config.auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        Client::try_from(config).expect("building a token client for the test bed")
    }

    /// An admin kubeconfig file, e.g. for `KUBECONFIG` of a `devenv-manager`
    /// process under test.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The API server's URL, e.g. `https://127.0.0.1:38211`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The local bed's directory (logs, certificates, kubeconfig, audit log).
    pub fn dir(&self) -> Option<&Path> {
        self.local
            .as_ref()
            .map(|l| l.dir.as_path())
            .or(self.node_dir.as_deref())
    }

    /// The JSON-lines audit log of write requests; `None` on a real cluster.
    pub fn audit_log_path(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.audit_log.as_path())
    }

    /// How many write requests (create, update, patch, delete, deletecollection;
    /// allowed or denied) `username` has made so far, according to the audit log.
    /// The user is the effective one: the impersonated user if any.
    ///
    /// The API server writes an event just after it has sent the response, so a
    /// request the test has just seen complete may not be counted yet: use
    /// [`TestBed::count_writes_settled`] for an exact count.
    ///
    /// Panics on a real cluster; check [`TestBed::audit_log_path`] first.
    pub fn count_writes(&self, username: &str) -> usize {
        let path = self
            .audit_log_path()
            .expect("count_writes needs the local test bed's audit log");
        audit_events(path)
            .filter(|e| is_write(e) && effective_user(e) == Some(username))
            .count()
    }

    /// Like [`TestBed::count_writes`], but first waits until every request that
    /// completed before this call is in the audit log. It does so with a marker:
    /// a dry-run ConfigMap create by the admin user (which therefore counts as an
    /// admin write) whose event it waits for.
    pub async fn count_writes_settled(&self, username: &str) -> usize {
        self.settle_audit_log().await;
        self.count_writes(username)
    }

    /// The write requests of `username` per resource (`namespaces`,
    /// `leases`...), once the audit log has caught up.
    pub async fn writes_by_resource_settled(
        &self,
        username: &str,
    ) -> std::collections::BTreeMap<String, usize> {
        self.settle_audit_log().await;
        let path = self
            .audit_log_path()
            .expect("needs the local test bed's audit log");
        let mut counts = std::collections::BTreeMap::new();
        for event in
            audit_events(path).filter(|e| is_write(e) && effective_user(e) == Some(username))
        {
            let resource = event["objectRef"]["resource"].as_str().unwrap_or("?");
            let subresource = event["objectRef"]["subresource"].as_str();
            let key = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// Waits until every request completed before this call is in the audit log.
    async fn settle_audit_log(&self) {
        let path = self
            .audit_log_path()
            .expect("settling needs the local test bed's audit log");
        let marker = unique_name("audit-marker");
        let configmap = ConfigMap {
            metadata: ObjectMeta {
                name: Some(marker.clone()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        Api::<ConfigMap>::namespaced(self.client().await, "default")
            .create(&pp, &configmap)
            .await
            .expect("creating the audit marker (dry run)");
        let found = poll(Duration::from_secs(10), || {
            audit_events(path).any(|e| {
                e["stage"] == "ResponseComplete" && e["objectRef"]["name"] == marker.as_str()
            })
        })
        .await;
        assert!(
            found,
            "audit marker {marker} never reached {}",
            path.display()
        );
    }

    /// Stops the API server of a dedicated bed (from [`start`]) and waits until it
    /// is gone, e.g. to test what happens when it is unreachable; etcd keeps
    /// running.
    pub fn stop_apiserver(&mut self) {
        self.local
            .as_mut()
            .expect("stop_apiserver needs a local test bed")
            .apiserver
            .stop();
    }

    /// Creates a namespace named `<prefix>-<unique suffix>` (a valid DNS-1123
    /// label) and returns its name. On the local bed it also creates the
    /// `default` service account, which the ServiceAccount admission plugin
    /// requires of pods and which no controller-manager creates here.
    pub async fn temp_namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("devenv-manager/test-bed".to_owned(), "temp".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        if !self.real_cluster {
            self.create_service_account(&name, "default").await;
        }
        name
    }

    /// Creates namespace `name` unless it exists.
    pub async fn ensure_namespace(&self, name: &str) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
        {
            Ok(_) => {}
            Err(e) if is_already_exists(&e) => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }

    /// Best-effort delete of a namespace. Without a controller-manager (local
    /// bed) it stays Terminating, which no test should mind.
    pub async fn delete_namespace(&self, name: &str) {
        let _ = Api::<Namespace>::all(self.client().await)
            .delete(name, &DeleteParams::default())
            .await;
    }

    /// Creates service account `ns/name` unless it exists, and returns it.
    pub async fn create_service_account(&self, ns: &str, name: &str) -> ServiceAccount {
        let api = Api::<ServiceAccount>::namespaced(self.client().await, ns);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(created) => created,
            Err(e) if is_already_exists(&e) => api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("getting service account {ns}/{name}: {e}")),
            Err(e) => panic!("creating service account {ns}/{name}: {e}"),
        }
    }

    /// Service account `ns/name` bound to cluster-admin, as a deployment of
    /// devenv-manager might run: its client, its username (to count its writes
    /// in the audit log) and a kubeconfig file with its token (for a
    /// `devenv-manager` process under test).
    pub async fn cluster_admin(&self, ns: &str, name: &str) -> Identity {
        use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
        self.create_service_account(ns, name).await;
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{ns}-{name}")),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "cluster-admin".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(ns.into()),
                api_group: None,
            }]),
        };
        match Api::<ClusterRoleBinding>::all(self.client().await)
            .create(&PostParams::default(), &binding)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("binding {ns}/{name} to cluster-admin: {e}"),
        }
        let token = self.token(ns, name, SA_ISSUER, 86_400).await;
        let mut kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig_path).expect("admin kubeconfig");
        for named in &mut kubeconfig.auth_infos {
            named.auth_info = Some(AuthInfo {
                token: Some(token.clone().into()),
                ..AuthInfo::default()
            });
        }
        let dir = self
            .dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("kubeconfig-{ns}-{name}.json"));
        fs::write(
            &path,
            serde_json::to_vec(&kubeconfig).expect("kubeconfig JSON"),
        )
        .expect("writing kubeconfig");
        let mut config = self.kube_config();
        config.auth_info = AuthInfo {
            token: Some(token.clone().into()),
            ..AuthInfo::default()
        };
        Identity {
            config,
            client: self.client_with_token(&token).await,
            username: format!("system:serviceaccount:{ns}:{name}"),
            kubeconfig: path,
        }
    }

    /// Waits until service account `ns/name` holds every access in `checks`.
    /// RBAC is read from an informer cache, so fresh grants take a moment;
    /// asked with SubjectAccessReviews as the admin, so the identity itself
    /// spends nothing (no TokenReview, no audit entry of its own).
    pub async fn wait_for_access(&self, ns: &str, name: &str, checks: &[Access<'_>]) {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let admin = self.client().await;
        let user = format!("system:serviceaccount:{ns}:{name}");
        eventually(&format!("the RBAC of {user} in force"), || async {
            for (group, resource, verb, namespace) in checks {
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(user.clone()),
                        groups: Some(vec![
                            "system:serviceaccounts".into(),
                            format!("system:serviceaccounts:{ns}"),
                        ]),
                        resource_attributes: Some(ResourceAttributes {
                            group: Some(group.to_string()),
                            resource: Some(resource.to_string()),
                            verb: Some(verb.to_string()),
                            namespace: namespace.map(String::from),
                            ..ResourceAttributes::default()
                        }),
                        ..SubjectAccessReviewSpec::default()
                    },
                    ..SubjectAccessReview::default()
                };
                let allowed = Api::<SubjectAccessReview>::all(admin.clone())
                    .create(&PostParams::default(), &review)
                    .await
                    .ok()
                    .and_then(|r| r.status)
                    .is_some_and(|s| s.allowed);
                if !allowed {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// A token for service account `ns/sa`, bound to `audience`, from the
    /// TokenRequest API (what a projected service-account token volume holds).
    /// The API server raises `expiration_seconds` to at least 600.
    pub async fn token(
        &self,
        ns: &str,
        sa: &str,
        audience: &str,
        expiration_seconds: i64,
    ) -> String {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                expiration_seconds: Some(expiration_seconds),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        Api::<ServiceAccount>::namespaced(self.client().await, ns)
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("requesting a token for {ns}/{sa}: {e}"))
            .status
            .and_then(|status| status.token)
            .unwrap_or_else(|| panic!("TokenRequest for {ns}/{sa} returned no token"))
    }
}

/// A started server wrapped by [`WRAPPER`]; closing `stdin` kills it.
struct Server {
    name: &'static str,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Server {
    fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Server, StartError> {
        let out = File::create(log)
            .map_err(|e| StartError::from(format!("creating {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| StartError::from(format!("duplicating {}: {e}", log.display())))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        if let Some(dir) = cleanup {
            command.env("DEVENV_TESTBED_CLEANUP", dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| StartError::from(format!("starting {}: {e}", program.display())))?;
        Ok(Server {
            name,
            stdin: child.stdin.take(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// An error with the end of the log if the server has exited.
    fn check_running(&mut self) -> Result<(), StartError> {
        let status: Option<ExitStatus> = match &mut self.child {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        };
        match status {
            None => Ok(()),
            Some(status) => Err(self.failure(&format!("exited ({status})"))),
        }
    }

    fn failure(&self, what: &str) -> StartError {
        let tail = log_tail(&self.log);
        StartError {
            // Go servers report a taken port as "bind: address already in use".
            port_clash: tail.contains("address already in use"),
            message: format!(
                "{} {what}; last lines of {}:\n{tail}",
                self.name,
                self.log.display()
            ),
        }
    }

    /// Kills the server (via its wrapper) and waits for it to be gone.
    fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct StartError {
    message: String,
    port_clash: bool,
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError {
            message,
            port_clash: false,
        }
    }
}

/// Three distinct free loopback ports: all are held at once so that none is
/// handed out twice, then released for the servers to bind.
fn free_ports() -> Result<[u16; 3], StartError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| StartError::from(format!("finding a free port: {e}")))
    };
    let (a, _la) = bind()?;
    let (b, _lb) = bind()?;
    let (c, _lc) = bind()?;
    Ok([a, b, c])
}

async fn wait_for_etcd(etcd: &mut Server, port: u16) -> Result<(), StartError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + ETCD_READY_TIMEOUT;
    loop {
        etcd.check_running()?;
        // The API server retries etcd by itself; accepting connections is enough
        // to know etcd got its ports.
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(etcd.failure(&format!(
                "did not listen on {addr} within {ETCD_READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn wait_for_apiserver(
    apiserver: &mut Server,
    config: &kube::Config,
) -> Result<(), StartError> {
    let client = Client::try_from(config.clone())
        .map_err(|e| StartError::from(format!("building a client: {e}")))?;
    let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
    let mut last;
    loop {
        apiserver.check_running()?;
        // kube has no plain GET helper, and `list` builds a GET of the path
        // ("/readyz?") without naming the `http` crate.
        let request = kube::core::Request::new("/readyz")
            .list(&ListParams::default())
            .map_err(|e| StartError::from(format!("building the /readyz request: {e}")))?;
        match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "/readyz timed out".to_owned(),
        }
        if Instant::now() > deadline {
            return Err(apiserver.failure(&format!(
                "was not ready within {APISERVER_READY_TIMEOUT:?} (last /readyz: {last})"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

struct Files {
    serving_cert: PathBuf,
    serving_key: PathBuf,
    client_ca: PathBuf,
    sa_key: PathBuf,
    sa_public_key: PathBuf,
    audit_policy: PathBuf,
    audit_log: PathBuf,
    kubeconfig: PathBuf,
}

/// Writes the certificates, keys, audit policy and admin kubeconfig into `dir`.
fn write_files(dir: &Path, apiserver_port: u16) -> Result<Files, StartError> {
    write_files_inner(dir, apiserver_port)
        .map_err(|e| StartError::from(format!("writing the test bed's files: {e}")))
}

fn write_files_inner(dir: &Path, apiserver_port: u16) -> Result<Files, Box<dyn std::error::Error>> {
    let write = |name: &str, contents: &str| -> std::io::Result<PathBuf> {
        let path = dir.join(name);
        fs::write(&path, contents)?;
        Ok(path)
    };

    // Separate CAs for the serving certificate and for client certificates, as
    // in a real cluster.
    let serving_ca = certificate_authority("testbed serving CA")?;
    let serving_key = KeyPair::generate()?;
    let serving = leaf_params(
        "kube-apiserver",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let serving_cert = serving.signed_by(&serving_key, &serving_ca)?;

    let client_ca = certificate_authority("testbed client CA")?;
    let admin_key = KeyPair::generate()?;
    let mut admin = leaf_params("admin", &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    // The API server maps O to groups; system:masters passes every authorizer.
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    let admin_cert = admin.signed_by(&admin_key, &client_ca)?;

    // ECDSA P-256. The API server signs with the PKCS#8 private key but reads
    // only public keys (or PKCS#1/SEC1 private keys) for verifying.
    let sa_key = KeyPair::generate()?;

    let audit_policy = serde_json::json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            { "level": "Metadata", "verbs": WRITE_VERBS },
            { "level": "None" },
        ],
    });

    let files = Files {
        serving_cert: write("serving.crt", &serving_cert.pem())?,
        serving_key: write("serving.key", &serving_key.serialize_pem())?,
        client_ca: write("client-ca.crt", &client_ca.pem())?,
        sa_key: write("service-account.key", &sa_key.serialize_pem())?,
        sa_public_key: write("service-account.pub", &sa_key.public_key_pem())?,
        audit_policy: write("audit-policy.json", &audit_policy.to_string())?,
        audit_log: dir.join("audit.log"),
        kubeconfig: dir.join("admin.kubeconfig"),
    };
    let serving_ca_path = write("serving-ca.crt", &serving_ca.pem())?;
    let admin_cert_path = write("admin.crt", &admin_cert.pem())?;
    let admin_key_path = write("admin.key", &admin_key.serialize_pem())?;

    // JSON is YAML, so this is a valid kubeconfig for kube-rs and kubectl alike.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testbed",
            "cluster": {
                "server": format!("https://127.0.0.1:{apiserver_port}"),
                "certificate-authority": serving_ca_path,
            },
        }],
        "users": [{
            "name": "admin",
            "user": {
                "client-certificate": admin_cert_path,
                "client-key": admin_key_path,
            },
        }],
        "contexts": [{
            "name": "testbed",
            "context": { "cluster": "testbed", "user": "admin", "namespace": "default" },
        }],
        "current-context": "testbed",
    });
    fs::write(
        &files.kubeconfig,
        serde_json::to_string_pretty(&kubeconfig)?,
    )?;
    Ok(files)
}

fn certificate_authority(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

fn leaf_params(
    common_name: &str,
    subject_alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let sans: Vec<String> = subject_alt_names.iter().map(|&s| s.to_owned()).collect();
    // `new` turns IP literals into IP SANs and the rest into DNS SANs.
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    set_validity(&mut params);
    Ok(params)
}

/// Valid from an hour ago (clock skew) for 30 days: far longer than any test run.
fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
}

/// The audit log's events; lines that do not parse (e.g. one being written) are
/// skipped.
fn audit_events(path: &Path) -> impl Iterator<Item = serde_json::Value> {
    let lines = File::open(path)
        .map(|f| BufReader::new(f).lines())
        .into_iter()
        .flatten();
    lines
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
}

fn is_write(event: &serde_json::Value) -> bool {
    event["stage"] == "ResponseComplete"
        && event["verb"]
            .as_str()
            .is_some_and(|verb| WRITE_VERBS.contains(&verb))
}

fn effective_user(event: &serde_json::Value) -> Option<&str> {
    event["impersonatedUser"]["username"]
        .as_str()
        .or_else(|| event["user"]["username"].as_str())
}

/// `<prefix>-<suffix>`: a valid DNS-1123 label, unique across processes (time
/// and pid) and within one (counter), so tests can share a real cluster too.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let suffix = format!(
        "{:03x}{:04x}{:x}",
        std::process::id() & 0xfff,
        nanos & 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(62 - suffix.len());
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

fn is_already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
async fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
