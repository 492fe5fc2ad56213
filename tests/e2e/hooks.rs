//! The subcommands the chart's hooks run (docs/helm.md), against real
//! servers:
//!
//! - `devenv-manager check` (the `helm test` Pod) against a manager serving
//!   on ephemeral ports with the shared bed as its cluster: it passes, and a
//!   CA that did not sign the certificate, or a wrong endpoint, fails it
//!   with a message that names the probe;
//! - `devenv-manager unregister` (the pre-delete hook) deletes both
//!   `devenv-manager` webhook configurations, and counts missing ones as
//!   deleted. A bed of its own: the name is fixed, and the deploy tests
//!   install configurations of that name on the shared bed.

use std::time::Duration;

use devenv_manager::check::{self, CheckError, Targets};
use devenv_manager::cluster::Source;
use devenv_manager::config::Config;
use devenv_manager::webhook::registration::{self, CONFIGURATION_NAME, Endpoint};
use devenv_manager::webhook::unregister;
use devenv_testbed as testbed;
use devenv_testbed::server::Server;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::Api;

fn targets(server: &Server) -> Targets {
    Targets {
        webhook: format!("https://localhost:{}", server.webhook.port()),
        api: format!("https://localhost:{}", server.api.port()),
        metrics: format!("http://{}", server.metrics),
        ca: server.cert_dir.join("ca.crt"),
        learnerspace_namespace: "aivo-system".to_string(),
        timeout: Duration::from_secs(60),
        pod_namespace: None,
    }
}

#[tokio::test]
async fn check_passes_against_a_running_manager_and_names_what_fails() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let mut config = Config::default();
    config.devenv.namespaces = vec![bed.temp_namespace("check").await];
    let server =
        Server::start_with_cluster(config, Source::Config(Box::new(bed.kube_config()))).await;

    let passed = check::run(&targets(&server)).await.unwrap();
    let probes: Vec<&str> = passed
        .iter()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(probes, ["webhook", "pod API", "metrics"], "{passed:?}");
    assert!(passed[1].ends_with("serving, connected, pod cache synced"));

    // Only the given CA is trusted (and a failure is not retried past the
    // timeout).
    let other = devenv_manager::tls::generate(&["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("ca.crt");
    std::fs::write(&stranger, other.ca_pem).unwrap();
    let mut wrong_ca = targets(&server);
    wrong_ca.ca = stranger;
    wrong_ca.timeout = Duration::ZERO;
    let error = check::run(&wrong_ca).await.unwrap_err();
    assert!(
        matches!(
            error,
            CheckError::Unreachable {
                what: "webhook",
                ..
            }
        ) && error.to_string().contains("invalid peer certificate"),
        "{error}"
    );

    // The metrics probe pointed at the pod API: not the Prometheus text.
    let mut wrong_port = targets(&server);
    wrong_port.metrics = format!("https://localhost:{}", server.api.port());
    wrong_port.timeout = Duration::ZERO;
    let error = check::run(&wrong_port).await.unwrap_err().to_string();
    assert!(error.starts_with("metrics: "), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn unregister_deletes_both_webhook_configurations() {
    let Some(bed) = testbed::start().await else {
        return;
    };
    let admin = bed.client().await;
    let (mutating, validating) = registration::configurations(
        &Config::default(),
        &Endpoint::Url("https://127.0.0.1:9".to_string()),
        None,
    );
    testbed::register_webhooks(&admin, &mutating, &validating).await;

    let lines = unregister::delete_configurations(admin.clone())
        .await
        .unwrap();
    assert_eq!(
        lines,
        [
            "MutatingWebhookConfiguration devenv-manager deleted",
            "ValidatingWebhookConfiguration devenv-manager deleted"
        ]
    );
    let mutating_api: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let validating_api: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    assert!(
        mutating_api
            .get_opt(CONFIGURATION_NAME)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        validating_api
            .get_opt(CONFIGURATION_NAME)
            .await
            .unwrap()
            .is_none()
    );

    // Again (Helm 4 deletes them itself; a hook may run twice): nothing to do.
    let again = unregister::delete_configurations(admin).await.unwrap();
    assert!(
        again.iter().all(|l| l.ends_with("was already gone")),
        "{again:?}"
    );
}
