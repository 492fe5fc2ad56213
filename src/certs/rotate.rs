//! Carries out one [`Step`] on the material: the Secret's next contents.

use jiff::Timestamp;

use super::issue::{self, Issued};
use super::material::Material;
use super::{CertsError, Lifetimes, Step};

/// The material after `step`. `current` is `None` only for [`Step::Create`].
pub fn apply(
    step: Step,
    current: Option<&Material>,
    names: &[String],
    lifetimes: &Lifetimes,
    now: Timestamp,
) -> Result<Material, CertsError> {
    let fresh = || -> Result<Material, CertsError> {
        let ca = issue::ca(now, lifetimes.ca)?;
        let serving = serving_from(&ca, names, lifetimes, now)?;
        assemble(&ca, &ca.cert_pem, &serving)
    };
    let Some(current) = current else {
        return fresh();
    };
    match step {
        Step::Create => fresh(),
        Step::AddCa => {
            let ca = issue::ca(now, lifetimes.ca)?;
            let bundle = format!("{}{}", ca.cert_pem, current.ca_pem);
            let serving = Issued {
                cert_pem: current.tls_pem.clone(),
                key_pem: current.tls_key_pem.clone(),
            };
            assemble(&ca, &bundle, &serving)
        }
        Step::Reissue(_) => {
            let signer = signer_of(current);
            let serving = serving_from(&signer, names, lifetimes, now)?;
            assemble(&signer, &current.ca_pem, &serving)
        }
        Step::DropOldCas => {
            let signer = signer_of(current);
            let serving = Issued {
                cert_pem: current.tls_pem.clone(),
                key_pem: current.tls_key_pem.clone(),
            };
            assemble(&signer, &signer.cert_pem, &serving)
        }
    }
}

fn signer_of(material: &Material) -> Issued {
    let der = material.signer().der.as_ref();
    Issued {
        cert_pem: pem::encode(&pem::Pem::new("CERTIFICATE", der)),
        key_pem: material.ca_key_pem.clone(),
    }
}

fn serving_from(
    ca: &Issued,
    names: &[String],
    lifetimes: &Lifetimes,
    now: Timestamp,
) -> Result<Issued, CertsError> {
    let ca_not_after = super::material::parse_bundle(ca.cert_pem.as_bytes())
        .ok()
        .and_then(|cas| cas.first().map(|c| c.not_after))
        .unwrap_or(now);
    issue::serving(ca, names, now, lifetimes.serving, ca_not_after)
}

/// Parses what was just issued, so that a step can never write material the
/// next pass would reject.
fn assemble(signer: &Issued, bundle: &str, serving: &Issued) -> Result<Material, CertsError> {
    let data = std::collections::BTreeMap::from([
        (
            super::material::CA_CERT_KEY.to_string(),
            bundle.as_bytes().to_vec(),
        ),
        (
            super::material::CA_KEY_KEY.to_string(),
            signer.key_pem.as_bytes().to_vec(),
        ),
        (
            super::material::TLS_CERT_KEY.to_string(),
            serving.cert_pem.as_bytes().to_vec(),
        ),
        (
            super::material::TLS_KEY_KEY.to_string(),
            serving.key_pem.as_bytes().to_vec(),
        ),
    ]);
    Material::from_data(&data)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::SignedDuration;

    /// Fresh material for `localhost`: a two-day CA, a one-day certificate.
    pub(crate) fn material() -> Material {
        let lifetimes = Lifetimes {
            ca: SignedDuration::from_hours(48),
            serving: SignedDuration::from_hours(24),
            overlap: SignedDuration::from_mins(1),
        };
        apply(
            Step::Create,
            None,
            &["localhost".into()],
            &lifetimes,
            Timestamp::now(),
        )
        .unwrap()
    }
}
