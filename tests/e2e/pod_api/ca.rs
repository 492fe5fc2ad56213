//! CA distribution: the `devenv-manager-ca` ConfigMap is published, put
//! back and rotated.

use devenv_testbed::eventually;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::{Fixture, call};

#[tokio::test]
async fn the_ca_configmap_is_published_put_back_and_rotated() {
    let Some(f) = Fixture::new("podapi-ca").await else {
        return;
    };
    let configmaps = Api::<ConfigMap>::namespaced(f.admin.clone(), &f.ns);
    let ca_file = f.server.cert_dir.join("ca.crt");
    let published = |expected: String| {
        let configmaps = configmaps.clone();
        move || {
            let (configmaps, expected) = (configmaps.clone(), expected.clone());
            async move {
                let cm = configmaps.get_opt("devenv-manager-ca").await.ok()??;
                (cm.data?.get("ca.crt")? == &expected).then_some(())
            }
        }
    };

    let ca = std::fs::read_to_string(&ca_file).unwrap();
    eventually("the CA ConfigMap is published", published(ca.clone())).await;

    configmaps
        .delete("devenv-manager-ca", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted CA ConfigMap is put back",
        published(ca.clone()),
    )
    .await;

    let edited = json!({"data": {"ca.crt": "tampered"}});
    configmaps
        .patch(
            "devenv-manager-ca",
            &PatchParams::default(),
            &Patch::Merge(&edited),
        )
        .await
        .unwrap();
    eventually("the edited CA ConfigMap is put back", published(ca.clone())).await;

    // Rotation: a new CA and serving certificate in the certificate directory.
    let names = devenv_manager::tls::default_dns_names("devenv-manager", "devenv-system");
    devenv_manager::tls::generate(&names)
        .unwrap()
        .write(&f.server.cert_dir)
        .unwrap();
    let rotated = std::fs::read_to_string(&ca_file).unwrap();
    assert_ne!(rotated, ca);
    eventually("the CA ConfigMap follows the rotation", published(rotated)).await;
    // And the API serves the new certificate: a client trusting only the new
    // CA gets through.
    let answer = call(&f.server, "GET", "/api/v1/health", None).await;
    assert_eq!(answer.status, 200);
    f.stop().await;
}
