//! The certificate a TLS listener serves, swapped without a restart or a
//! dropped connection. Two sources feed it:
//! - files (`certs.mode: files`): `tls.crt`/`tls.key` are re-read when they
//!   change, so a rotated Secret (cert-manager, `kubectl create secret`)
//!   takes effect on the next connection;
//! - memory (`certs.mode: self-managed`): the watch on Secret
//!   `devenv-manager-tls` installs each new pair. Until the first one, the
//!   resolver has nothing and handshakes fail (and `/readyz` says why).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{
    CERT_FILE, KEY_FILE, TlsError, load_certs, load_key, not_after, parse_certs, parse_key,
};

#[derive(Debug)]
pub struct ReloadingResolver {
    files: Option<Files>,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// Set by [`ReloadingResolver::install`], taken by the next refresh.
    installed: AtomicBool,
}

#[derive(Debug)]
struct Files {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Modification stamps of the loaded files; a change triggers a reload.
    loaded: Mutex<Stamp>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl ReloadingResolver {
    /// Serves `tls.crt`/`tls.key` of `cert_dir`, which must be readable now.
    pub fn new(cert_dir: &Path) -> Result<Self, TlsError> {
        let cert_path = cert_dir.join(CERT_FILE);
        let key_path = cert_dir.join(KEY_FILE);
        let stamp = stamp(&cert_path, &key_path);
        let key = load(&cert_path, &key_path)?;
        Ok(ReloadingResolver {
            files: Some(Files {
                cert_path,
                key_path,
                loaded: Mutex::new(stamp),
            }),
            current: RwLock::new(Some(Arc::new(key))),
            installed: AtomicBool::new(false),
        })
    }

    /// Serves nothing until a pair is installed.
    pub fn in_memory() -> Self {
        ReloadingResolver {
            files: None,
            current: RwLock::new(None),
            installed: AtomicBool::new(false),
        }
    }

    /// Serves this chain and key from the next handshake on; `origin` names
    /// them in errors. Returns false when they are the ones already served.
    pub fn install(
        &self,
        chain_pem: &[u8],
        key_pem: &[u8],
        origin: &str,
    ) -> Result<bool, TlsError> {
        let certs = parse_certs(chain_pem, Path::new(&format!("{origin}/{CERT_FILE}")))?;
        if self.current().is_some_and(|c| c.cert == certs) {
            return Ok(false);
        }
        let key = parse_key(key_pem, Path::new(&format!("{origin}/{KEY_FILE}")))?;
        let provider = rustls::crypto::ring::default_provider();
        let pair = CertifiedKey::from_der(certs, key, &provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pair));
        self.installed.store(true, Ordering::Release);
        Ok(true)
    }

    /// Whether the certificate changed since the last call. Called once per
    /// accepted connection: for files, two `stat` calls are far cheaper than
    /// a TLS handshake. A failed reload (half-written files during a
    /// rotation) keeps the previous certificate and is retried on the next
    /// connection.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let installed = self.installed.swap(false, Ordering::AcqRel);
        let Some(files) = &self.files else {
            return Ok(installed);
        };
        let now = stamp(&files.cert_path, &files.key_path);
        let mut loaded = files.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == now {
            return Ok(installed);
        }
        let key = load(&files.cert_path, &files.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
        *loaded = now;
        Ok(true)
    }

    /// Whether there is no certificate to serve yet.
    pub fn is_empty(&self) -> bool {
        self.current().is_none()
    }

    /// `notAfter` of the certificate being served, in Unix seconds.
    pub fn expiry(&self) -> Option<i64> {
        self.current()?.cert.first().and_then(not_after)
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_serves_nothing_until_installed_then_reports_the_change_once() {
        crate::tls::install_crypto_provider();
        let resolver = ReloadingResolver::in_memory();
        assert!(resolver.current().is_none());
        assert!(!resolver.refresh().unwrap());
        let certs = crate::tls::generate(&["localhost".into()]).unwrap();
        let installed = resolver.install(
            certs.cert_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            "secret",
        );
        assert!(installed.unwrap());
        assert!(resolver.expiry().is_some());
        assert!(resolver.refresh().unwrap());
        assert!(!resolver.refresh().unwrap());
        let again = resolver.install(
            certs.cert_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            "secret",
        );
        assert!(!again.unwrap(), "the same pair is no change");
    }

    #[test]
    fn a_bad_pair_is_refused_and_names_its_origin() {
        let resolver = ReloadingResolver::in_memory();
        let err = resolver
            .install(b"junk", b"junk", "Secret devenv-system/devenv-manager-tls")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Secret devenv-system/devenv-manager-tls/tls.crt"),
            "{err}"
        );
        assert!(resolver.current().is_none());
    }
}
