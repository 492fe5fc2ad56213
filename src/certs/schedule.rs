//! The renewal schedule: given the time, the Secret's material and the CA
//! bundles the API server and clients currently hold, which one step comes
//! next. Pure, so that every stage of a rotation is tested without a cluster,
//! and so that a leader that dies mid-rotation leaves a state the next one
//! reads the same way: every step is one write of the Secret.
//!
//! A CA rotation, one step per pass:
//! 1. [`Step::AddCa`]: a new CA becomes the signer (first in `ca.crt`); the old
//!    one stays in the bundle, and the serving certificate is not touched.
//! 2. The bundle is written into every target (the webhook configurations and
//!    the CA ConfigMaps) by the injector, outside this schedule.
//! 3. [`Step::Reissue`] with [`Reason::NewCa`]: once every target carries the
//!    new CA and the overlap has passed since it was issued (clients that read
//!    a mounted copy, such as a kubelet-synced ConfigMap, lag behind the API).
//! 4. [`Step::DropOldCas`]: once the new serving certificate is older than
//!    the overlap (every replica has had time to load it).

use jiff::{SignedDuration, Timestamp};

use super::material::{Cert, Material};

/// How long certificates live and how long a rotation keeps both CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: SignedDuration,
    pub serving: SignedDuration,
    pub overlap: SignedDuration,
}

/// Why a serving certificate is issued again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Two thirds of its life have passed.
    Due,
    /// Expired, or signed by no CA of the bundle: it serves nobody now.
    Unusable,
    /// Its names are not the ones configured.
    Names,
    /// A new CA is the signer and every target trusts it.
    NewCa,
}

/// One write of the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No usable material (absent, unparsable, or its CA expired): a new CA
    /// and serving certificate.
    Create,
    /// Starts a CA rotation.
    AddCa,
    /// A new serving certificate from the signer.
    Reissue(Reason),
    /// Ends a CA rotation.
    DropOldCas,
}

/// The next step, if any, and when to look again when nothing else happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub step: Option<Step>,
    pub recheck_at: Timestamp,
}

/// How soon to look again while waiting for targets to carry a new CA (the
/// injector writes them; their watches usually wake the loop first).
const TARGET_POLL: SignedDuration = SignedDuration::from_secs(2);

/// Decides the next step. `names` are the serving certificate's wanted names;
/// `trusted_everywhere` says whether every target's bundle carries a CA.
pub fn plan(
    now: Timestamp,
    material: Option<&Material>,
    names: &[String],
    trusted_everywhere: impl Fn(&Cert) -> bool,
    lifetimes: &Lifetimes,
) -> Plan {
    let step = |step| Plan {
        step: Some(step),
        recheck_at: now,
    };
    let wait_until = |at: Timestamp| Plan {
        step: None,
        recheck_at: at.max(now),
    };
    let Some(material) = material else {
        return step(Step::Create);
    };
    let signer = material.signer();
    let serving = &material.serving;
    if now >= signer.not_after {
        return step(Step::Create);
    }
    let serving_trusted = material.cas.iter().any(|ca| serving.signed_by(ca));
    if now >= serving.not_after || !serving_trusted {
        return step(Step::Reissue(Reason::Unusable));
    }

    if !serving.signed_by(signer) {
        // Mid-rotation, stage 3: switch once every client can verify it.
        let switch_at = signer.issued_at() + lifetimes.overlap;
        if !trusted_everywhere(signer) {
            return wait_until(now + TARGET_POLL);
        }
        if now < switch_at {
            return wait_until(switch_at);
        }
        return step(Step::Reissue(Reason::NewCa));
    }
    if material.cas.len() > 1 {
        // Stage 4: every replica has had the overlap to load the new certificate.
        let drop_at = serving.issued_at() + lifetimes.overlap;
        if now < drop_at {
            return wait_until(drop_at);
        }
        return step(Step::DropOldCas);
    }
    if !same_names(&serving.names, names) {
        return step(Step::Reissue(Reason::Names));
    }
    if now >= signer.renew_at() {
        return step(Step::AddCa);
    }
    if now >= serving.renew_at() {
        return step(Step::Reissue(Reason::Due));
    }
    wait_until(signer.renew_at().min(serving.renew_at()))
}

fn same_names(have: &[String], want: &[String]) -> bool {
    have.len() == want.len() && want.iter().all(|w| have.contains(w))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
