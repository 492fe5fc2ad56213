//! The certificate material kept in Secret `devenv-manager-tls`, parsed into
//! the facts the renewal schedule decides on. Parsing is strict: a Secret that
//! does not hold a usable CA, CA key and serving pair is reported with the key
//! at fault, and the schedule replaces it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::CertsError;

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// A parsed certificate: its DER and what the schedule reads from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cert {
    pub der: CertificateDer<'static>,
    /// Raw DER of the subject and issuer names: how a serving certificate is
    /// matched to the CA that signed it (each CA's name is unique).
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    /// Raw DER of the SubjectPublicKeyInfo, to match a CA to its key.
    pub public_key: Vec<u8>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// DNS and IP subject alternative names, as text.
    pub names: Vec<String>,
}

impl Cert {
    pub fn parse(der: CertificateDer<'static>) -> Result<Cert, String> {
        let (rest, parsed) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let time = |t: x509_parser::time::ASN1Time| {
            Timestamp::from_second(t.timestamp()).map_err(|e| e.to_string())
        };
        let names = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(name_text)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Cert {
            subject: parsed.subject().as_raw().to_vec(),
            issuer: parsed.issuer().as_raw().to_vec(),
            public_key: parsed.public_key().raw.to_vec(),
            not_before: time(parsed.validity().not_before)?,
            not_after: time(parsed.validity().not_after)?,
            names,
            der,
        })
    }

    /// When it was issued: `notBefore` is backdated by [`super::CLOCK_SKEW`]
    /// so that a peer whose clock is slightly behind accepts it at once.
    pub fn issued_at(&self) -> Timestamp {
        self.not_before
            .checked_add(super::CLOCK_SKEW)
            .unwrap_or(self.not_before)
            .min(self.not_after)
    }

    /// The instant two thirds into its life, when it is renewed.
    pub fn renew_at(&self) -> Timestamp {
        let issued = self.issued_at();
        let life = self.not_after.duration_since(issued);
        issued.checked_add(life * 2 / 3).unwrap_or(self.not_after)
    }

    pub fn signed_by(&self, ca: &Cert) -> bool {
        self.issuer == ca.subject
    }
}

fn name_text(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some(dns.to_string()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
            16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Every certificate of a PEM bundle, parsed.
pub fn parse_bundle(pem: &[u8]) -> Result<Vec<Cert>, String> {
    CertificateDer::pem_slice_iter(pem)
        .map(|der| {
            der.map_err(|e| e.to_string())
                .and_then(|der| Cert::parse(der.into_owned()))
        })
        .collect()
}

/// The contents of Secret `devenv-manager-tls`, checked.
#[derive(Clone, Debug)]
pub struct Material {
    /// `ca.crt`: the bundle clients trust. The first is the signer (its key
    /// is `ca.key`); the others are CAs being retired.
    pub cas: Vec<Cert>,
    pub ca_pem: String,
    pub ca_key_pem: String,
    /// `tls.crt`'s leaf.
    pub serving: Cert,
    pub tls_pem: String,
    pub tls_key_pem: String,
}

impl Material {
    /// Parses a Secret's `data`, naming the key at fault.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Material, CertsError> {
        let text = |key: &'static str| -> Result<String, CertsError> {
            let bytes = data.get(key).ok_or(CertsError::Material {
                key,
                reason: "missing".into(),
            })?;
            String::from_utf8(bytes.clone()).map_err(|_| CertsError::Material {
                key,
                reason: "not UTF-8 PEM".into(),
            })
        };
        let bad = |key: &'static str| move |reason: String| CertsError::Material { key, reason };
        let ca_pem = text(CA_CERT_KEY)?;
        let cas = parse_bundle(ca_pem.as_bytes()).map_err(bad(CA_CERT_KEY))?;
        let signer = cas
            .first()
            .ok_or_else(|| bad(CA_CERT_KEY)("no certificate".into()))?;
        let ca_key_pem = text(CA_KEY_KEY)?;
        if public_key_of(&ca_key_pem).map_err(bad(CA_KEY_KEY))? != signer.public_key {
            return Err(bad(CA_KEY_KEY)(
                "is not the key of the first certificate in ca.crt".into(),
            ));
        }
        let tls_pem = text(TLS_CERT_KEY)?;
        let serving = parse_bundle(tls_pem.as_bytes())
            .map_err(bad(TLS_CERT_KEY))?
            .into_iter()
            .next()
            .ok_or_else(|| bad(TLS_CERT_KEY)("no certificate".into()))?;
        let tls_key_pem = text(TLS_KEY_KEY)?;
        if public_key_of(&tls_key_pem).map_err(bad(TLS_KEY_KEY))? != serving.public_key {
            return Err(bad(TLS_KEY_KEY)("is not the key of tls.crt".into()));
        }
        Ok(Material {
            cas,
            ca_pem,
            ca_key_pem,
            serving,
            tls_pem,
            tls_key_pem,
        })
    }

    /// The Secret's `data`, in the four keys.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CA_CERT_KEY.to_string(), self.ca_pem.clone().into_bytes()),
            (CA_KEY_KEY.to_string(), self.ca_key_pem.clone().into_bytes()),
            (TLS_CERT_KEY.to_string(), self.tls_pem.clone().into_bytes()),
            (
                TLS_KEY_KEY.to_string(),
                self.tls_key_pem.clone().into_bytes(),
            ),
        ])
    }

    /// The CA whose key signs new serving certificates.
    pub fn signer(&self) -> &Cert {
        &self.cas[0]
    }
}

/// The SubjectPublicKeyInfo (DER) of a PEM private key.
fn public_key_of(key_pem: &str) -> Result<Vec<u8>, String> {
    // Checked as a PEM private key first so that the error names the format.
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
    Ok(rcgen::PublicKeyData::subject_public_key_info(&key))
}

/// Whether a PEM bundle found somewhere (a webhook configuration's
/// `caBundle`, a CA ConfigMap) holds exactly the certificates of `want`,
/// in any order and whatever the PEM's whitespace.
pub fn same_certificates(found: &[u8], want: &[Cert]) -> bool {
    match parse_bundle(found) {
        Ok(found) => {
            found.len() == want.len() && want.iter().all(|w| found.iter().any(|f| f.der == w.der))
        }
        Err(_) => false,
    }
}

/// Whether a PEM bundle found somewhere holds `cert`.
pub fn carries(found: &[u8], cert: &Cert) -> bool {
    parse_bundle(found).is_ok_and(|found| found.iter().any(|f| f.der == cert.der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::rotate::tests::material;

    fn refused(data: &BTreeMap<String, Vec<u8>>) -> String {
        Material::from_data(data).unwrap_err().to_string()
    }

    #[test]
    fn round_trips_through_secret_data() {
        let m = material();
        let back = Material::from_data(&m.to_data()).unwrap();
        assert_eq!(back.cas, m.cas);
        assert_eq!(back.serving, m.serving);
    }

    #[test]
    fn each_key_is_named_when_missing_or_wrong() {
        let m = material();
        for key in [CA_CERT_KEY, CA_KEY_KEY, TLS_CERT_KEY, TLS_KEY_KEY] {
            let mut data = m.to_data();
            data.remove(key);
            assert_eq!(
                refused(&data),
                format!("Secret devenv-manager-tls: {key} missing")
            );
            data.insert(key.to_string(), b"junk".to_vec());
            assert!(refused(&data).contains(key), "{}", refused(&data));
        }
    }

    #[test]
    fn keys_must_belong_to_their_certificates() {
        let (a, b) = (material(), material());
        let mut data = a.to_data();
        data.insert(CA_KEY_KEY.into(), b.ca_key_pem.clone().into_bytes());
        assert!(refused(&data).contains("ca.key is not the key"));
        let mut data = a.to_data();
        data.insert(TLS_KEY_KEY.into(), b.tls_key_pem.clone().into_bytes());
        assert!(refused(&data).contains("tls.key is not the key of tls.crt"));
    }

    #[test]
    fn bundles_compare_by_certificate_not_by_text() {
        let (a, b) = (material(), material());
        let both = format!("{}\n\n{}", b.ca_pem, a.ca_pem);
        let want = [a.cas[0].clone(), b.cas[0].clone()];
        assert!(same_certificates(both.as_bytes(), &want));
        assert!(!same_certificates(a.ca_pem.as_bytes(), &want));
        assert!(carries(both.as_bytes(), &a.cas[0]));
        assert!(!carries(b.ca_pem.as_bytes(), &a.cas[0]));
        assert!(!carries(b"not pem", &a.cas[0]));
    }
}
