//! `devenv-manager serve` in the test process, wired to a [`Node`]: the API
//! server calls its webhooks (registered exactly as `devenv-manager
//! webhook-config` prints them), and pods reach its pod API on the host's
//! side of the node's link, which is the `managerUrl` the webhook injects.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_manager::serve::{self, Running};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::eventually;
use crate::node::Node;

pub struct Manager {
    /// What pods use: `https://{host_ip}:{port}` (the injected
    /// `DEVENV_MANAGER_URL`).
    pub api_url: String,
    pub api: SocketAddr,
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
    /// The CA of its serving certificate.
    pub ca_file: PathBuf,
    pub config: Config,
    webhook_names: String,
    client: kube::Client,
    shutdown: CancellationToken,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Manager {
    /// Starts a manager with the node's admin credentials, `tweak` applied to
    /// its configuration (devenv namespaces, operator namespace...), and
    /// registers its webhooks; returns once the API server calls them for
    /// pods in the first devenv namespace.
    pub async fn start(node: &Node, tweak: impl FnOnce(&mut Config)) -> Manager {
        // The operator always runs; without its CRD it would retry forever
        // (and a deployment from deploy/ always has it).
        crate::manifests::install_crd(node.bed.client().await).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_dir = dir.path().join("certs");
        // The pod API's port is part of the URL the webhook injects, so it is
        // chosen before the server starts.
        let api: SocketAddr = {
            let probe = TcpListener::bind((node.host_ip.as_str(), 0)).expect("a free port");
            probe.local_addr().unwrap()
        };
        let mut config = Config::default();
        config.webhook.bind = "127.0.0.1:0".parse().unwrap();
        config.metrics.bind = "127.0.0.1:0".parse().unwrap();
        config.api.bind = api;
        config.webhook.cert_dir = cert_dir.clone();
        config.api.cert_dir = cert_dir.clone();
        config.devenv.manager_url = format!("https://{api}");
        tweak(&mut config);
        let names: Vec<String> = ["localhost", "127.0.0.1", node.host_ip.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        devenv_manager::tls::generate(&names)
            .expect("certificates")
            .write(&cert_dir)
            .expect("writing certificates");

        let shutdown = CancellationToken::new();
        let options = serve::Options {
            cluster: Source::Config(Box::new(node.bed.kube_config())),
            identity: node.unique("node-manager"),
            in_pod: false,
        };
        let running = serve::start(config.clone(), shutdown.clone(), options)
            .await
            .expect("devenv-manager serve starts");
        let client = node.bed.client().await;
        let webhook_names = node.unique("devenv-manager");
        let manager = Manager {
            api_url: config.devenv.manager_url.clone(),
            api: running.api_addr,
            webhook: running.webhook_addr,
            metrics: running.metrics_addr,
            ca_file: cert_dir.join("ca.crt"),
            config,
            webhook_names,
            client,
            shutdown,
            running: Some(running),
            _dir: dir,
        };
        manager.register(node).await;
        manager
    }

    async fn register(&self, node: &Node) {
        let config_file = self._dir.path().join("config.yaml");
        std::fs::write(
            &config_file,
            devenv_manager::yaml::to_yaml(&self.config).unwrap(),
        )
        .unwrap();
        let output = Command::new(&node.binaries.manager)
            .args(["webhook-config", "--config"])
            .arg(&config_file)
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args([
                "--url",
                &format!("https://127.0.0.1:{}", self.webhook.port()),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "webhook-config: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let docs: Vec<serde_json::Value> =
            devenv_manager::yaml::from_yaml_stream(&String::from_utf8_lossy(&output.stdout))
                .unwrap();
        let mut mutating: MutatingWebhookConfiguration =
            serde_json::from_value(docs[0].clone()).unwrap();
        mutating.metadata.name = Some(self.webhook_names.clone());
        let mut validating: ValidatingWebhookConfiguration =
            serde_json::from_value(docs[1].clone()).unwrap();
        validating.metadata.name = Some(self.webhook_names.clone());
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .expect("registering the mutating webhook");
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .expect("registering the validating webhook");

        // The API server picks configurations up asynchronously: wait until a
        // dry-run devenv pod comes back injected.
        let ns = self.config.devenv.namespaces[0].clone();
        node.bed.ensure_namespace(&ns).await;
        node.bed.create_service_account(&ns, "devenv-probe").await;
        let probe: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "webhook-probe"},
            "spec": {
                "serviceAccountName": "devenv-probe",
                "containers": [{"name": "c", "image": crate::node::BUSYBOX}],
            },
        }))
        .unwrap();
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        eventually("the API server calling the webhook", || async {
            let pod = pods.create(&dry, &probe).await.ok()?;
            pod.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("developer"))
                .then_some(())
        })
        .await;
    }

    /// Waits until this manager's CA is published in every devenv namespace
    /// (pods that start before it would find no `ca.crt` in their volume).
    /// Its own CA, not just a `devenv-manager-ca`: a fixed namespace such as
    /// `devenv` may still hold the CA of a manager an earlier test ran.
    pub async fn wait_for_ca_configmaps(&self) {
        let ours = std::fs::read_to_string(&self.ca_file).expect("CA file");
        for ns in &self.config.devenv.namespaces {
            let api = Api::<ConfigMap>::namespaced(self.client.clone(), ns);
            eventually(&format!("our devenv-manager-ca in {ns}"), || async {
                let published = api.get_opt("devenv-manager-ca").await.ok()??;
                (published.data?.get("ca.crt")? == &ours).then_some(())
            })
            .await;
        }
    }

    /// A client of the pod API that trusts its CA.
    pub fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).expect("CA file");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }

    /// Unregisters the webhooks and stops the server.
    pub async fn stop(mut self) {
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.webhook_names, &dp)
            .await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.webhook_names, &dp)
            .await;
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.wait().await;
        }
    }
}
