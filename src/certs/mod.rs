//! Self-managed certificates (`certs.mode: self-managed`): the Lease holder
//! keeps a CA, its key and the serving certificate in Secret
//! `devenv-manager-tls`, renews them ahead of expiry with a CA overlap, and
//! writes the CA bundle into its own webhook configurations; every replica
//! serves from that Secret.
//!
//! [`material`] parses the Secret, [`schedule`] decides the next step (pure),
//! [`rotate`] carries a step out on the material (pure but for fresh keys),
//! [`issue`] makes certificates.

pub mod files;
pub mod inject;
pub mod issue;
pub mod keeper;
pub mod material;
pub mod metrics;
pub mod rotate;
pub mod run;
pub mod schedule;
pub mod serving;
pub mod settings;
pub mod startup;

use jiff::SignedDuration;

pub use material::{Cert, Material};
pub use schedule::{Lifetimes, Plan, Reason, Step, plan};
pub use settings::{CertsConfig, CertsMode, Source};

pub const SECRET_NAME: &str = "devenv-manager-tls";

/// How far `notBefore` is set back, for peers whose clock is a little behind.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("Secret {SECRET_NAME}: {key} {reason}")]
    Material { key: &'static str, reason: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
}
