//! Serving certificates: generation with rcgen (`certs generate`, and `serve`
//! when none exist) and loading from PEM files.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::certs::issue;

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// A CA and a serving certificate it signed, in PEM.
pub struct GeneratedCerts {
    pub ca_pem: String,
    /// Written only when asked ([`GeneratedCerts::write_ca_key`]): whoever
    /// holds it can sign certificates every client of the manager trusts.
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS names a serving certificate needs by default: the in-cluster
/// service names of the manager, and loopback for local use and tests.
pub fn default_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

/// How long `certs generate` makes them last.
const CA_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 3650);
const SERVING_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 365);

/// Generates a CA (10 years) and a serving certificate (1 year) for `names`;
/// names that parse as IP addresses become IP SANs.
pub fn generate(names: &[String]) -> Result<GeneratedCerts, TlsError> {
    let now = jiff::Timestamp::now();
    let ca = issue::ca(now, CA_LIFETIME).map_err(TlsError::Generate)?;
    let not_after = now + CA_LIFETIME;
    let serving =
        issue::serving(&ca, names, now, SERVING_LIFETIME, not_after).map_err(TlsError::Generate)?;
    Ok(GeneratedCerts {
        ca_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
    })
}

impl GeneratedCerts {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, each
    /// atomically (write then rename) so a reloading server never reads half a file.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |path: PathBuf| move |source| TlsError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        for (name, contents, mode) in [
            (KEY_FILE, &self.key_pem, 0o600),
            (CERT_FILE, &self.cert_pem, 0o644),
            (CA_FILE, &self.ca_pem, 0o644),
        ] {
            write_atomic(&dir.join(name), contents, mode).map_err(io(dir.join(name)))?;
        }
        Ok(())
    }

    /// Writes `ca.key` (mode 0600) into `dir`, for signing later certificates.
    pub fn write_ca_key(&self, dir: &Path) -> Result<(), TlsError> {
        let path = dir.join(crate::certs::material::CA_KEY_KEY);
        write_atomic(&path, &self.ca_key_pem, 0o600).map_err(|source| TlsError::Io { path, source })
    }
}

fn write_atomic(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read(path)?, path)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(&read(path)?, path)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })
}

/// Parses a PEM certificate chain; `origin` names it in errors (a file, or a
/// Secret's key).
pub fn parse_certs(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: origin.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(origin.into()));
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(origin.into()),
        source => TlsError::Pem {
            path: origin.into(),
            source,
        },
    })
}

/// The `notAfter` of a DER certificate, as Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Makes sure `dir` holds a serving certificate: generates one when `tls.crt`
/// or `tls.key` is absent. Returns true when it generated.
pub fn ensure(dir: &Path, names: &[String]) -> Result<bool, TlsError> {
    if dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists() {
        return Ok(false);
    }
    generate(names)?.write(dir)?;
    Ok(true)
}
