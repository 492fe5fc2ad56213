//! A certificate resolver that re-reads `tls.crt`/`tls.key` when they change,
//! so a rotated Secret (cert-manager, `kubectl create secret`) takes effect on
//! the next connection without a restart or a dropped connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{CERT_FILE, KEY_FILE, TlsError, load_certs, load_key, not_after};

#[derive(Debug)]
pub struct ReloadingResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification stamps of the loaded files; a change triggers a reload.
    loaded: Mutex<Stamp>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl ReloadingResolver {
    pub fn new(cert_dir: &Path) -> Result<Self, TlsError> {
        let cert_path = cert_dir.join(CERT_FILE);
        let key_path = cert_dir.join(KEY_FILE);
        let stamp = stamp(&cert_path, &key_path);
        let key = load(&cert_path, &key_path)?;
        Ok(ReloadingResolver {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(stamp),
        })
    }

    /// Reloads when the files changed. Called once per accepted connection:
    /// two `stat` calls are far cheaper than a TLS handshake. A failed reload
    /// (half-written files during a rotation) keeps the previous certificate
    /// and is retried on the next connection.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.cert_path, &self.key_path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == now {
            return Ok(false);
        }
        let key = load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *loaded = now;
        Ok(true)
    }

    /// `notAfter` of the certificate being served, in Unix seconds.
    pub fn expiry(&self) -> Option<i64> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current.cert.first().and_then(not_after)
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(certs, key, &provider)?)
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
