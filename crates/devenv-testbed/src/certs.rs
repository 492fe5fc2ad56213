//! The local bed's certificates, keys, audit policy and admin kubeconfig.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::WRITE_VERBS;
use crate::local::StartError;

pub(crate) struct Files {
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) client_ca: PathBuf,
    pub(crate) sa_key: PathBuf,
    pub(crate) sa_public_key: PathBuf,
    pub(crate) audit_policy: PathBuf,
    pub(crate) audit_log: PathBuf,
    pub(crate) kubeconfig: PathBuf,
}

/// Writes the certificates, keys, audit policy and admin kubeconfig into `dir`.
pub(crate) fn write_files(dir: &Path, apiserver_port: u16) -> Result<Files, StartError> {
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
