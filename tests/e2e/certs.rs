//! Self-managed certificates against a real API server: the keeper creates
//! Secret `devenv-manager-tls`, fills the `caBundle` of both webhook
//! configurations, puts an emptied bundle back, and walks a whole CA
//! rotation, one fresh keeper per pass (as successive leaders would), with
//! the clock given to each pass.
//!
//! Each test has its own namespace and uniquely named webhook
//! configurations that select only that namespace.

use devenv_testbed as testbed;

use devenv_manager::certs::keeper::{Keeper, Settings};
use devenv_manager::certs::material::{Material, carries, same_certificates};
use devenv_manager::certs::serving::secret_data;
use devenv_manager::certs::{Lifetimes, Reason, SECRET_NAME, Step};
use devenv_manager::config::Config;
use devenv_manager::webhook::registration::{self, Endpoint};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const LIFETIMES: Lifetimes = Lifetimes {
    ca: SignedDuration::from_hours(24 * 365 * 5),
    serving: SignedDuration::from_hours(24 * 90),
    overlap: SignedDuration::from_mins(10),
};

struct Bed {
    client: kube::Client,
    settings: Settings,
}

impl Bed {
    /// A namespace for the Secret, and webhook configurations (no
    /// `caBundle`) that select only it and point nowhere.
    async fn new(bed: &testbed::TestBed, prefix: &str) -> Bed {
        let namespace = bed.temp_namespace(prefix).await;
        let client = bed.client().await;
        let mut config = Config::default();
        config.devenv.namespaces = vec![namespace.clone()];
        config.operator.namespace = namespace.clone();
        let endpoint = Endpoint::Url("https://127.0.0.1:9".into());
        let (mut mutating, mut validating) = registration::configurations(&config, &endpoint, None);
        let name = format!("devenv-manager-{namespace}");
        mutating.metadata.name = Some(name.clone());
        validating.metadata.name = Some(name.clone());
        testbed::register_webhooks(&client, &mutating, &validating).await;
        let settings = Settings {
            namespace,
            names: vec![
                "devenv-manager.devenv-system.svc".into(),
                "127.0.0.1".into(),
            ],
            lifetimes: LIFETIMES,
            ca_configmap_namespaces: vec![],
            webhook_configuration: name,
        };
        Bed { client, settings }
    }

    /// One pass by a keeper of its own (a new leader each time).
    async fn pass(&self, now: Timestamp) -> devenv_manager::certs::keeper::Pass {
        Keeper::new(
            self.client.clone(),
            self.settings.clone(),
            Default::default(),
        )
        .pass(now)
        .await
        .unwrap()
    }

    async fn secret(&self) -> Secret {
        Api::<Secret>::namespaced(self.client.clone(), &self.settings.namespace)
            .get(SECRET_NAME)
            .await
            .unwrap()
    }

    async fn material(&self) -> Material {
        Material::from_data(&secret_data(&self.secret().await)).unwrap()
    }

    /// The `caBundle` of every webhook of both configurations.
    async fn bundles(&self) -> Vec<Vec<u8>> {
        let name = &self.settings.webhook_configuration;
        let mutating = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .get(name)
            .await
            .unwrap();
        let validating = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .get(name)
            .await
            .unwrap();
        let mut bundles: Vec<Vec<u8>> = mutating
            .webhooks
            .iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle.clone().unwrap_or_default().0)
            .collect();
        bundles.extend(
            validating
                .webhooks
                .iter()
                .flatten()
                .map(|w| w.client_config.ca_bundle.clone().unwrap_or_default().0),
        );
        assert_eq!(bundles.len(), 2, "one webhook in each configuration");
        bundles
    }

    async fn assert_bundles_are(&self, material: &Material) {
        for bundle in self.bundles().await {
            assert!(
                same_certificates(&bundle, &material.cas),
                "a caBundle differs from the Secret's ca.crt"
            );
        }
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(seconds)
}

#[tokio::test]
async fn creates_the_secret_fills_both_bundles_and_puts_an_emptied_one_back() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let b = Bed::new(bed, "certs-create").await;
    let first = b.pass(at(0)).await;
    assert_eq!(first.step, Some(Step::Create));
    assert_eq!(
        first.injected,
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ]
    );
    assert_eq!(b.secret().await.type_.as_deref(), Some("kubernetes.io/tls"));
    let events = Api::<Event>::namespaced(b.client.clone(), &b.settings.namespace)
        .list(&Default::default())
        .await
        .unwrap();
    let renewed = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("CertificateRenewed"))
        .expect("an Event on the Secret");
    assert_eq!(
        renewed.regarding.as_ref().unwrap().name.as_deref(),
        Some(SECRET_NAME)
    );
    assert!(renewed.note.as_deref().unwrap().starts_with("create: "));
    let material = b.material().await;
    assert_eq!(material.cas.len(), 1);
    b.assert_bundles_are(&material).await;

    // Nothing due and nothing stale: no write at all.
    let second = b.pass(at(1)).await;
    assert_eq!(second.step, None);
    assert!(second.injected.is_empty());
    assert_eq!(b.material().await.tls_pem, material.tls_pem);

    // A GitOps sync (or a person) empties a bundle: the next pass restores it.
    Api::<ValidatingWebhookConfiguration>::all(b.client.clone())
        .patch(
            &b.settings.webhook_configuration,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let third = b.pass(at(2)).await;
    assert_eq!(third.step, None);
    assert_eq!(third.injected, ["ValidatingWebhookConfiguration"]);
    b.assert_bundles_are(&material).await;
}

#[tokio::test]
async fn an_unusable_secret_is_replaced() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let b = Bed::new(bed, "certs-junk").await;
    let junk = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET_NAME.into()),
            ..Default::default()
        },
        string_data: Some([("tls.crt".to_string(), "junk".to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(b.client.clone(), &b.settings.namespace)
        .create(&PostParams::default(), &junk)
        .await
        .unwrap();
    assert_eq!(b.pass(at(0)).await.step, Some(Step::Create));
    // A Secret's type is immutable: the one found keeps its own.
    assert_eq!(b.secret().await.type_.as_deref(), Some("Opaque"));
    let material = b.material().await;
    b.assert_bundles_are(&material).await;
}

/// Renewal under the same CA, then a CA rotation stage by stage, each pass
/// by a new keeper at a later instant: a leader lost between any two passes
/// leaves a state the next one completes.
#[tokio::test]
async fn renews_then_rotates_the_ca_with_an_overlap() {
    let Some(bed) = testbed::shared().await else {
        return;
    };
    let b = Bed::new(bed, "certs-rotate").await;
    let day = 86_400;
    b.pass(at(0)).await;
    let created = b.material().await;

    // Two thirds into the serving certificate's life: a new one, same CA.
    let renewed = b.pass(at(60 * day)).await;
    assert_eq!(renewed.step, Some(Step::Reissue(Reason::Due)));
    assert!(renewed.injected.is_empty(), "same CA, same bundle");
    let m = b.material().await;
    assert_eq!(m.cas, created.cas);
    assert_ne!(m.tls_pem, created.tls_pem);

    // Years later (nobody ran a pass: the manager was down), the serving
    // certificate has long expired: a new one at once.
    let ca_due = 5 * 365 * day * 2 / 3;
    assert_eq!(
        b.pass(at(ca_due - day)).await.step,
        Some(Step::Reissue(Reason::Unusable))
    );
    // A day later the CA is two thirds into its life: the new CA joins the
    // bundle, and both configurations get it in the same pass.
    let serving_before = b.material().await.tls_pem;
    let added = b.pass(at(ca_due)).await;
    assert_eq!(added.step, Some(Step::AddCa));
    assert_eq!(added.injected.len(), 2);
    let m = b.material().await;
    assert_eq!(m.cas.len(), 2);
    assert_eq!(m.cas[1], created.cas[0]);
    assert_eq!(m.tls_pem, serving_before, "serving unchanged until trusted");
    for bundle in b.bundles().await {
        assert!(carries(&bundle, &m.cas[0]) && carries(&bundle, &m.cas[1]));
    }

    // Within the overlap nothing happens; after it, the switch.
    assert_eq!(b.pass(at(ca_due + 60)).await.step, None);
    assert_eq!(
        b.pass(at(ca_due + 600)).await.step,
        Some(Step::Reissue(Reason::NewCa))
    );
    let switched = b.material().await;
    assert!(switched.serving.signed_by(switched.signer()));
    assert_eq!(switched.cas.len(), 2);

    // And once the replicas have had the overlap: the old CA goes, everywhere.
    assert_eq!(b.pass(at(ca_due + 700)).await.step, None);
    let dropped = b.pass(at(ca_due + 1200)).await;
    assert_eq!(dropped.step, Some(Step::DropOldCas));
    assert_eq!(dropped.injected.len(), 2);
    let done = b.material().await;
    assert_eq!(done.cas, vec![switched.signer().clone()]);
    b.assert_bundles_are(&done).await;
}

/// What one round of the load saw.
#[derive(Default, Debug)]
struct Admissions {
    admitted: usize,
    failed: Vec<String>,
}

/// One devenv pod and one LearnerSpace through the API server (dry runs:
/// admission runs, nothing is stored); every refusal or error is recorded.
async fn admit_both(client: &kube::Client, config: &Config, seen: &mut Admissions) {
    use k8s_openapi::api::core::v1::Pod;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ws", "namespace": config.devenv.namespaces[0]},
        "spec": {"serviceAccountName": "devenv-alice",
                 "containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    match Api::<Pod>::namespaced(client.clone(), &config.devenv.namespaces[0])
        .create(&dry, &pod)
        .await
    {
        Ok(pod)
            if pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("developer"))
                .map(String::as_str)
                == Some("alice") =>
        {
            seen.admitted += 1
        }
        Ok(_) => seen.failed.push("a devenv pod came back uninjected".into()),
        Err(e) => seen.failed.push(format!("devenv pod: {e}")),
    }
    let resource = testbed::manifests::learnerspaces();
    let space: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": "load", "namespace": config.operator.namespace},
        "spec": {"learnerId": "load.learner"},
    }))
    .unwrap();
    match Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &config.operator.namespace,
        &resource,
    )
    .create(&dry, &space)
    .await
    {
        Ok(_) => seen.admitted += 1,
        Err(e) => seen.failed.push(format!("LearnerSpace: {e}")),
    }
}

/// The certificate a server presents on `addr`, verified against `bundle`.
async fn presented(addr: std::net::SocketAddr, bundle: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, bundle).unwrap();
    let stream = testbed::server::tls_connect(addr, &ca, b"http/1.1").await;
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Two replicas in self-managed mode, registered by URL with no caBundle:
/// with lifetimes of seconds, the serving certificate is renewed several
/// times and the CA rotated while devenv pods and LearnerSpaces keep going
/// through the API server, and not one admission fails. Both replicas serve
/// the same certificate; the CA ConfigMap follows the bundle. A bed of its
/// own: the keeper writes the webhook configurations named devenv-manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_renew_and_rotate_under_load_without_a_failed_admission() {
    let Some(bed) = testbed::start().await else {
        return;
    };
    let admin = bed.client().await;
    testbed::manifests::install_crd(admin.clone()).await;
    let mut config = Config::default();
    config.devenv.namespaces = vec![bed.temp_namespace("rotate-devenv").await];
    config.operator.namespace = bed.temp_namespace("rotate-learners").await;
    config.certs.mode = devenv_manager::certs::CertsMode::SelfManaged;
    config.certs.namespace = bed.temp_namespace("rotate-manager").await;
    config.certs.ca_lifetime = "60s".into();
    config.certs.serving_lifetime = "15s".into();
    config.certs.rotation_overlap = "3s".into();
    bed.create_service_account(&config.devenv.namespaces[0], "devenv-alice")
        .await;

    let cluster = || devenv_manager::cluster::Source::Config(Box::new(bed.kube_config()));
    let first =
        testbed::server::Server::start_operator(config.clone(), cluster(), "rotate-a".into()).await;
    let second =
        testbed::server::Server::start_operator(config.clone(), cluster(), "rotate-b".into()).await;
    let endpoint = Endpoint::Url(format!("https://127.0.0.1:{}", first.webhook.port()));
    let (mutating, validating) = registration::configurations(&config, &endpoint, None);
    testbed::register_webhooks(&admin, &mutating, &validating).await;

    let secrets = Api::<Secret>::namespaced(admin.clone(), &config.certs.namespace);
    let material = || async {
        let secret = secrets.get_opt(SECRET_NAME).await.ok()??;
        Material::from_data(&secret_data(&secret)).ok()
    };
    // Warm-up: the first admission that passes (Secret made, bundles
    // filled, the API server's webhook client rebuilt).
    testbed::eventually("a first admission", || async {
        let mut seen = Admissions::default();
        admit_both(&admin, &config, &mut seen).await;
        (seen.failed.is_empty()).then_some(())
    })
    .await;
    let initial = material().await.expect("the Secret");

    // The load, until the CA has been replaced and the old one dropped.
    let mut seen = Admissions::default();
    let mut serving_seen = std::collections::BTreeSet::from([initial.tls_pem.clone()]);
    let started = std::time::Instant::now();
    let last = loop {
        admit_both(&admin, &config, &mut seen).await;
        if let Some(now) = material().await {
            serving_seen.insert(now.tls_pem.clone());
            if now.cas.len() == 1 && now.signer() != initial.signer() {
                break now;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(150),
            "no CA rotation within 150 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // A little more load on the new CA alone.
    for _ in 0..20 {
        admit_both(&admin, &config, &mut seen).await;
    }
    eprintln!(
        "rotation under load: {} admissions, {} failed, {} serving certificates, {:?}",
        seen.admitted,
        seen.failed.len(),
        serving_seen.len(),
        started.elapsed()
    );
    assert!(
        seen.failed.is_empty(),
        "failed admissions: {:#?}",
        seen.failed
    );
    assert!(seen.admitted > 100, "only {} admissions", seen.admitted);
    assert!(
        serving_seen.len() >= 3,
        "the serving certificate was renewed (then switched): {} seen",
        serving_seen.len()
    );

    // Both replicas serve the Secret's certificate.
    testbed::eventually("both replicas serve the new certificate", || async {
        let a = presented(first.webhook, &last.ca_pem).await;
        let b = presented(second.webhook, &last.ca_pem).await;
        (a == b && a == last.serving.der.to_vec()).then_some(())
    })
    .await;
    // The CA ConfigMap follows the bundle.
    let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        admin.clone(),
        &config.devenv.namespaces[0],
    );
    testbed::eventually("the CA ConfigMap carries the new bundle", || async {
        let cm = configmaps.get_opt("devenv-manager-ca").await.ok()??;
        let pem = cm.data?.remove("ca.crt")?;
        same_certificates(pem.as_bytes(), &last.cas).then_some(())
    })
    .await;
    let metrics = first.metrics_text().await + &second.metrics_text().await;
    assert!(
        metrics.contains("certificate_renewals_total{step=\"add-ca\"} 1"),
        "{metrics}"
    );
    first.stop().await;
    second.stop().await;
}
