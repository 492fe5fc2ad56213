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
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .unwrap();
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .unwrap();
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
