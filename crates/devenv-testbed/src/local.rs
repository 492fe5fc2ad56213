//! The local bed: etcd and kube-apiserver as child processes of the test
//! process, with the files they need (see [`crate::certs`]).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::write_files;
use crate::{POLL_INTERVAL, SA_ISSUER, Sizing, TestBed, log_tail, uncaptured};

const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
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

/// The processes and files of a local bed.
///
/// Fields drop in declaration order: the servers die before `tempdir` removes
/// their files.
pub(crate) struct Local {
    pub(crate) apiserver: Server,
    /// Only held: it dies with the bed, after the API server.
    _etcd: Server,
    pub(crate) dir: PathBuf,
    pub(crate) audit_log: PathBuf,
    /// Owned by dedicated beds only; the shared bed's wrappers remove its
    /// directory at process exit instead.
    _tempdir: Option<tempfile::TempDir>,
}

impl TestBed {
    pub(crate) async fn start_local(
        bin: &Path,
        shared: bool,
        sizing: &Sizing,
    ) -> Result<TestBed, String> {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start_local(bin, shared, sizing).await {
                Ok(bed) => return Ok(bed),
                Err(e) if e.port_clash => errors.push(e.message),
                Err(e) => return Err(e.message),
            }
        }
        Err(errors.join("\n---- next attempt ----\n"))
    }

    async fn try_start_local(
        bin: &Path,
        shared: bool,
        sizing: &Sizing,
    ) -> Result<TestBed, StartError> {
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
            ]
            .into_iter()
            .chain(sizing.etcd_args())
            .collect::<Vec<_>>(),
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
            ]
            .into_iter()
            .chain(sizing.apiserver_args())
            .collect::<Vec<_>>(),
            &dir.join("kube-apiserver.log"),
            cleanup,
        )?;
        let mut local = Local {
            apiserver,
            _etcd: etcd,
            dir: dir.clone(),
            audit_log: files.audit_log.clone(),
            _tempdir: tempdir,
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
}

/// A started server wrapped by [`WRAPPER`]; closing `stdin` kills it.
pub(crate) struct Server {
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
    pub(crate) fn stop(&mut self) {
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

pub(crate) struct StartError {
    pub(crate) message: String,
    pub(crate) port_clash: bool,
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
