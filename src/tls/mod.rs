//! TLS for both HTTPS listeners: certificates (generated or loaded) and a
//! resolver that picks up rotated files. The server itself is
//! [`crate::server`].

mod certs;
mod resolver;

use std::path::PathBuf;

pub use certs::{
    CA_FILE, CERT_FILE, GeneratedCerts, KEY_FILE, default_dns_names, ensure, generate, load_certs,
    load_key, not_after, parse_certs, parse_key,
};
pub use resolver::ReloadingResolver;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    #[error("certificate and key do not form a usable pair: {0}")]
    Key(#[from] rustls::Error),
    #[error("{0}")]
    Generate(crate::certs::CertsError),
}

/// Installs ring as rustls' process-wide crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
