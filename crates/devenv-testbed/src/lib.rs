//! Test support of devenv-manager, shared by its integration tests and its
//! benchmarks (a path dev-dependency; never shipped):
//!
//! - this module: the integration-test bed, a real etcd and kube-apiserver
//!   started for `cargo test`, in the spirit of controller-runtime's envtest;
//! - [`node`]: a one-node cluster with a kubelet, for tests whose pods run,
//!   and [`manager`]: `devenv-manager serve` wired to it;
//! - [`server`]: `devenv-manager serve` in the test process, and HTTPS
//!   clients that trust it;
//! - [`load`]: the load generator of the benchmarks;
//! - [`manifests`]: the documents of `deploy/`, read as the tests need them.
//!
//! ```ignore
//! use devenv_testbed as testbed;
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
//! One bed per test process: every test of a binary that calls [`shared`]
//! gets the same API server, so tests must not assume they are alone on it
//! (unique names from [`TestBed::temp_namespace`] and [`unique_name`], audit
//! counts per user). A test that stops or breaks its API server takes a
//! dedicated one from [`start`].
//!
//! Where the servers come from:
//! - `DEVENV_E2E_KUBECONFIG=<file>`: nothing is started; every test talks to that
//!   cluster as the kubeconfig's user and `bed.real_cluster` is true.
//! - otherwise the binaries in `$DEVENV_TESTBED_BIN` or `<repository>/.testbed/bin`,
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

#![forbid(unsafe_code)]

mod audit;
pub use audit::Writes;
mod certs;
pub mod load;
mod local;
pub mod manager;
pub mod manifests;
pub mod node;
pub mod server;
pub mod typed;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

use local::Local;

/// Issuer of service-account tokens, as in a kubeadm cluster.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Verbs the audit policy records, and that [`TestBed::count_writes`] counts.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;

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

/// A Kubernetes API server for tests: a local etcd + kube-apiserver, or the
/// cluster named by `DEVENV_E2E_KUBECONFIG`.
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

static SHARED: OnceCell<Result<TestBed, String>> = OnceCell::const_new();

/// The API server shared by all tests of this test process, started on first use;
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
                Target::Local(bin) => TestBed::start_local(&bin, true, &Sizing::default()).await,
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
    start_sized(&Sizing::default()).await
}

/// A dedicated local bed whose servers are given `sizing` (see [`Sizing`]);
/// otherwise as [`start`].
pub async fn start_sized(sizing: &Sizing) -> Option<TestBed> {
    let Target::Local(bin) = target(true)? else {
        unreachable!("target(true) never returns a cluster")
    };
    match TestBed::start_local(&bin, false, sizing).await {
        Ok(bed) => Some(bed),
        Err(e) => panic!("a dedicated test bed failed to start: {e}"),
    }
}

/// What a dedicated bed's etcd and kube-apiserver are given beyond their
/// defaults, for a benchmark that stores more than the tests do. The default
/// is the servers' own defaults.
#[derive(Debug, Clone, Default)]
pub struct Sizing {
    /// etcd's `--quota-backend-bytes` (its default is 2 GiB; past it etcd
    /// refuses every write).
    pub etcd_quota_bytes: Option<u64>,
    /// kube-apiserver's `--max-requests-inflight` and
    /// `--max-mutating-requests-inflight` (defaults 400 and 200): with
    /// priority and fairness on, their sum is the server's concurrency,
    /// shared among the priority levels.
    pub max_requests_inflight: Option<(u32, u32)>,
}

impl Sizing {
    /// For a bed that holds about 150,000 objects written by clients a few
    /// dozen requests at a time: room in etcd for them and the revisions the
    /// API server has not compacted yet (every 5 minutes), and twice the
    /// default request concurrency, so that the servers' own limits are not
    /// what a benchmark measures.
    pub fn large() -> Sizing {
        Sizing {
            etcd_quota_bytes: Some(8 << 30),
            max_requests_inflight: Some((800, 400)),
        }
    }

    fn etcd_args(&self) -> Vec<String> {
        self.etcd_quota_bytes
            .map(|bytes| format!("--quota-backend-bytes={bytes}"))
            .into_iter()
            .collect()
    }

    fn apiserver_args(&self) -> Vec<String> {
        self.max_requests_inflight
            .map(|(all, mutating)| {
                vec![
                    format!("--max-requests-inflight={all}"),
                    format!("--max-mutating-requests-inflight={mutating}"),
                ]
            })
            .unwrap_or_default()
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
        .unwrap_or_else(|| repo_dir().join(".testbed/bin"))
}

/// The repository root: where `deploy/`, `scripts/` and `.testbed/` are.
pub fn repo_dir() -> &'static Path {
    // This crate is <repository>/crates/devenv-testbed. No `..` in the
    // result: some consumers (a PersistentVolume's hostPath) refuse it.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/devenv-testbed sits two levels below the repository root")
}

/// Creates both webhook configurations (as `webhook-config` prints them,
/// renamed or pointed elsewhere by the caller).
pub async fn register_webhooks(
    client: &Client,
    mutating: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    validating: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
) {
    Api::all(client.clone())
        .create(&PostParams::default(), mutating)
        .await
        .expect("creating the MutatingWebhookConfiguration");
    Api::all(client.clone())
        .create(&PostParams::default(), validating)
        .await
        .expect("creating the ValidatingWebhookConfiguration");
}

/// Where `scripts/helm.sh`'s `binary` (`helm` or `helm4`) is looked for:
/// `$env`, then `.testbed/bin/` of this repository (where the script builds
/// it), then the test bed's bin directory (`$DEVENV_TESTBED_BIN`).
pub fn helm_candidates(binary: &str, env: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os(env) {
        out.push(PathBuf::from(path));
    }
    out.push(repo_dir().join(".testbed/bin").join(binary));
    if let Some(bin) = std::env::var_os("DEVENV_TESTBED_BIN") {
        out.push(PathBuf::from(bin).join(binary));
    }
    out
}

/// The text of `name`, a path relative to the repository root.
pub fn fixture(name: &str) -> String {
    let path = repo_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The binaries under test. Only the tests and benches of the
/// devenv-manager package know where Cargo built them (`CARGO_BIN_EXE_*` is
/// set when those are compiled), so they hand them over with [`binaries!`].
#[derive(Debug, Clone)]
pub struct Binaries {
    pub manager: PathBuf,
    pub devenv: PathBuf,
}

/// The [`Binaries`] of the calling test or bench (expanded there, where
/// `CARGO_BIN_EXE_*` is set).
#[macro_export]
macro_rules! binaries {
    () => {
        $crate::Binaries {
            manager: ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_devenv-manager")),
            devenv: ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_devenv")),
        }
    };
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
    let script = repo_dir().join("scripts/testbed.sh");
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

/// `<prefix>-<suffix>`: a valid DNS-1123 label, unique across processes (time
/// and pid) and within one (counter), so tests can share a real cluster too.
pub fn unique_name(prefix: &str) -> String {
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
