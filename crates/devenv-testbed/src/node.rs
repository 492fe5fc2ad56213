//! The test bed's node: a one-node cluster with a real kubelet, containerd,
//! kube-controller-manager, kube-scheduler, kube-proxy and kube-router,
//! started by `scripts/testbed-node.sh up` (docs/testbed-node.md).
//!
//! ```ignore
//! use devenv_testbed::{binaries, node};
//!
//! #[tokio::test]
//! async fn something() {
//!     let Some(node) = node::shared(binaries!()).await else { return };
//!     let ns = node.namespace("something").await;
//!     // pods run: node.wait_running(&ns, "p").await, node.exec(...)
//! }
//! ```
//!
//! One node per test process, shared by its tests and started on first use;
//! it goes (every process, container, mount, network namespace and cgroup)
//! when the test process exits in any way: the script tears it down when its
//! standard input, a pipe from this process, closes. The node runs images
//! imported from local archives only: `registry.k8s.io/pause:3.10`,
//! [`BUSYBOX`] (busybox and `netcheck`), [`WORKSPACE`] (that plus the
//! `devenv` binary under test) and [`MANAGER_IMAGE`] (the `devenv-manager`
//! and `devenv` binaries under test, as deploy/ names the image).
//!
//! Needs root and the pieces `scripts/testbed.sh` builds; without them a test
//! skips (or fails under `DEVENV_REQUIRE_TESTBED=1`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::Api;
use tokio::sync::OnceCell;

use crate::{Binaries, TestBed, eventually, repo_dir, skip, uncaptured, unique_name};

/// busybox (every applet in /bin) and /bin/netcheck.
pub const BUSYBOX: &str = "devenv-testbed/busybox:1";
/// [`BUSYBOX`] plus /usr/local/bin/devenv, the binary under test.
pub const WORKSPACE: &str = "devenv-testbed/workspace:1";
/// The release image deploy/kustomization.yaml names, holding the
/// `devenv-manager` and `devenv` binaries under test.
pub const MANAGER_IMAGE: &str = "registry.example.com/devenv-manager:0.1.0";

const START_TIMEOUT: Duration = Duration::from_secs(300);
const NODE_PIECES: [&str; 8] = [
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
    "kube-router",
    "cni/bridge",
    "cni/host-local",
];

pub struct Node {
    /// An admin's view of the cluster (`real_cluster` is true: it has a
    /// kubelet and a controller-manager).
    pub bed: TestBed,
    /// The cluster's directory: logs/, pki/, kubeconfigs, audit.log.
    pub dir: PathBuf,
    /// The node's name.
    pub name: String,
    /// The node's address (its side of the link to this host).
    pub node_ip: String,
    /// This host's side of the link: the API server's address, and where
    /// pods reach processes of the test (an in-process manager binds here).
    pub host_ip: String,
    pub pod_cidr: String,
    /// The binaries under test (its images hold them).
    pub binaries: Binaries,
    bin: PathBuf,
    /// Closing this pipe (at process exit) tears the cluster down.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

static NODE: OnceCell<Result<Node, String>> = OnceCell::const_new();

/// The node of this test process, started on first use with images of
/// `binaries` (from [`crate::binaries!`]); `None` (after a `skipping` line)
/// when it cannot run here.
pub async fn shared(binaries: Binaries) -> Option<&'static Node> {
    let bin = crate::bin_dir();
    if !NODE_PIECES.iter().all(|p| bin.join(p).is_file()) {
        crate::build_test_bed(&bin);
    }
    let missing: Vec<&str> = NODE_PIECES
        .iter()
        .copied()
        .filter(|p| !bin.join(p).is_file())
        .collect();
    let why_not = if std::env::var_os("DEVENV_E2E_KUBECONFIG").is_some() {
        Some("the node tests need the local test bed, but DEVENV_E2E_KUBECONFIG is set".to_owned())
    } else if !missing.is_empty() {
        Some(format!(
            "{} lacks {} (run scripts/testbed.sh)",
            bin.display(),
            missing.join(", ")
        ))
    } else if !is_root() {
        Some("the node needs root (network namespaces, cgroups, mounts)".to_owned())
    } else {
        None
    };
    if let Some(reason) = why_not {
        if std::env::var("DEVENV_REQUIRE_TESTBED").as_deref() == Ok("1") {
            panic!("DEVENV_REQUIRE_TESTBED=1 but {reason}");
        }
        skip(&reason);
        return None;
    }
    let node = NODE.get_or_init(|| Node::start(bin, binaries)).await;
    match node {
        Ok(node) => Some(node),
        Err(e) => panic!("the test bed's node failed to start: {e}"),
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

fn script() -> PathBuf {
    repo_dir().join("scripts/testbed-node.sh")
}

impl Node {
    async fn start(bin: PathBuf, binaries: Binaries) -> Result<Node, String> {
        let started = Instant::now();
        // Under the crate's .testbed/, not the shared temporary directory:
        // nothing but this bed touches it.
        let nodes = repo_dir().join(".testbed/nodes");
        fs::create_dir_all(&nodes).map_err(|e| format!("{}: {e}", nodes.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir_in(&nodes)
            .map_err(|e| format!("creating the node's directory: {e}"))?
            // The script removes it at teardown (unless DEVENV_TESTBED_KEEP).
            .keep();
        let images = dir.join("images");
        fs::create_dir_all(&images).map_err(|e| format!("{}: {e}", images.display()))?;
        let manager = &binaries.manager;
        let devenv = &binaries.devenv;
        let image = |name: &str, file: &str, options: &[&str], files: Vec<String>| {
            let output = Command::new("bash")
                .arg(script())
                .env("DEVENV_TESTBED_BIN", &bin)
                .arg("image")
                .arg(name)
                .arg(images.join(file))
                .args(options)
                .args(files)
                .output()
                .map_err(|e| format!("running {}: {e}", script().display()))?;
            if !output.status.success() {
                return Err(format!(
                    "building image {name}: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(())
        };
        image(
            MANAGER_IMAGE,
            "manager.tar",
            &[
                "--entrypoint",
                "/usr/local/bin/devenv-manager",
                "--user",
                "10001:10001",
            ],
            vec![
                format!("{}:/usr/local/bin/devenv-manager", manager.display()),
                format!("{}:/usr/local/bin/devenv", devenv.display()),
            ],
        )?;
        image(
            WORKSPACE,
            "workspace.tar",
            &["--base", "busybox"],
            vec![format!("{}:/usr/local/bin/devenv", devenv.display())],
        )?;

        let log_path = dir.with_extension("log");
        let log = fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new("bash");
        command
            .arg(script())
            .arg("up")
            .arg(&dir)
            .env("DEVENV_TESTBED_BIN", &bin)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        // Its own process group: a Ctrl-C of `cargo test` reaches the test
        // process, whose exit closes the pipe; the script then tears down in
        // order instead of dying half-way.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", script().display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        uncaptured(&format!(
            "testbed: starting the node (log {})",
            log_path.display()
        ));
        let ready = dir.join("ready");
        loop {
            if ready.is_file() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "scripts/testbed-node.sh up exited ({status}); end of {}:\n{}",
                    log_path.display(),
                    crate::log_tail(&log_path)
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the node was not ready within {START_TIMEOUT:?}; end of {}:\n{}",
                    log_path.display(),
                    crate::log_tail(&log_path)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let env = fs::read_to_string(&ready).map_err(|e| format!("{}: {e}", ready.display()))?;
        let value = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_owned)
                .ok_or_else(|| format!("{} lacks {key}", ready.display()))
        };
        let mut bed = TestBed::from_kubeconfig(&dir.join("admin.kubeconfig")).await?;
        bed.node_dir = Some(dir.clone());
        let node = Node {
            bed,
            name: value("node")?,
            node_ip: value("node_ip")?,
            host_ip: value("host_ip")?,
            pod_cidr: value("pod_cidr")?,
            binaries,
            dir,
            bin,
            _supervisor: Mutex::new((child, stdin)),
        };
        // Pods need the `default` service account of their namespace, which
        // the controller-manager creates.
        node.wait_for_service_account("default", "default").await;
        uncaptured(&format!(
            "testbed: node {} ready after {:.1}s (KUBECONFIG={})",
            node.name,
            started.elapsed().as_secs_f64(),
            node.kubeconfig().display()
        ));
        Ok(node)
    }

    pub fn kubeconfig(&self) -> &Path {
        self.bed.kubeconfig_path()
    }

    /// A new namespace `<prefix>-<suffix>`, once its `default` service
    /// account exists (pods are refused until then).
    pub async fn namespace(&self, prefix: &str) -> String {
        let ns = self.bed.temp_namespace(prefix).await;
        self.wait_for_service_account(&ns, "default").await;
        ns
    }

    pub async fn wait_for_service_account(&self, ns: &str, name: &str) {
        let api = Api::<ServiceAccount>::namespaced(self.bed.client().await, ns);
        eventually(&format!("service account {ns}/{name}"), || async {
            api.get_opt(name).await.ok().flatten().map(|_| ())
        })
        .await;
    }

    /// Runs the test bed's kubectl (the same Kubernetes release) as the admin.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// kubectl that must succeed (with `stdin` when given); its standard
    /// output.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = match stdin {
            Some(input) => self.kubectl_stdin(args, input),
            None => self.kubectl(args),
        };
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates `pod` in `ns` as the admin; panics naming the pod otherwise.
    pub async fn create_pod(&self, ns: &str, pod: &Pod) {
        Api::<Pod>::namespaced(self.bed.client().await, ns)
            .create(&kube::api::PostParams::default(), pod)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating pod {ns}/{}: {e}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                )
            });
    }

    /// Like [`Node::kubectl`] with `stdin` as standard input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .expect("writing kubectl's input");
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// `kubectl exec` of `command` in the first container of pod `ns/pod`:
    /// its exit code, standard output and standard error.
    pub async fn exec(&self, ns: &str, pod: &str, command: &[&str]) -> (i32, String, String) {
        let mut args = vec!["exec", "-n", ns, pod, "--"];
        args.extend_from_slice(command);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let kubectl = self.bin.join("kubectl");
        let kubeconfig = self.kubeconfig().to_owned();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(&args)
                .output()
        })
        .await
        .expect("exec task")
        .expect("running kubectl exec");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Waits until pod `ns/name` runs with every container ready; returns it.
    pub async fn wait_running(&self, ns: &str, name: &str) -> Pod {
        let api = Api::<Pod>::namespaced(self.bed.client().await, ns);
        let mut last = String::new();
        for _ in 0..1200 {
            match api.get_opt(name).await {
                Ok(Some(pod)) => {
                    let status = pod.status.clone().unwrap_or_default();
                    let ready = status
                        .conditions
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if status.phase.as_deref() == Some("Running") && ready {
                        return pod;
                    }
                    last = format!("{:?}", status);
                }
                Ok(None) => last = "not found".into(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pod {ns}/{name} never ran and became ready; last status: {last}\nkubectl describe:\n{}",
            String::from_utf8_lossy(&self.kubectl(&["describe", "pod", "-n", ns, name]).stdout)
        );
    }

    /// The IP of a running pod.
    pub async fn pod_ip(&self, ns: &str, name: &str) -> String {
        self.wait_running(ns, name)
            .await
            .status
            .and_then(|s| s.pod_ip)
            .unwrap_or_else(|| panic!("pod {ns}/{name} runs without an IP"))
    }

    /// Waits until pod `ns/name` is gone from the API.
    pub async fn wait_gone(&self, ns: &str, name: &str) {
        let api = Api::<Pod>::namespaced(self.bed.client().await, ns);
        eventually(&format!("pod {ns}/{name} gone"), || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }

    /// A name unique to this run, for objects outside temp namespaces.
    pub fn unique(&self, prefix: &str) -> String {
        unique_name(prefix)
    }
}
