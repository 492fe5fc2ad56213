//! Issuing certificates with rcgen: a CA, and a serving certificate signed
//! by a CA whose key is kept. Both are backdated by [`super::CLOCK_SKEW`].

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use sha2::{Digest, Sha256};

use super::CertsError;

/// A certificate and its private key, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn offset(at: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn validity(params: &mut CertificateParams, now: Timestamp, not_after: Timestamp) {
    params.not_before = offset(now - super::CLOCK_SKEW);
    params.not_after = offset(not_after);
}

/// A CA valid for `lifetime` from `now`. Its name carries the issue time and
/// a digest of its key, so that two CAs in one bundle (during a rotation)
/// never share a subject: a serving certificate's issuer names exactly one.
pub fn ca(now: Timestamp, lifetime: SignedDuration) -> Result<Issued, CertsError> {
    let key = KeyPair::generate()?;
    let digest = Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("devenv-manager CA {now} {}", hex::encode(&digest[..4])),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(
        &mut params,
        now,
        now.saturating_add(lifetime).unwrap_or(now),
    );
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `names` (IP addresses become IP SANs), signed by
/// `ca`, valid for `lifetime` but never past `not_after_cap` (its CA's end).
pub fn serving(
    ca: &Issued,
    names: &[String],
    now: Timestamp,
    lifetime: SignedDuration,
    not_after_cap: Timestamp,
) -> Result<Issued, CertsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    let common_name = names
        .first()
        .map(String::as_str)
        .unwrap_or("devenv-manager");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let not_after = now
        .saturating_add(lifetime)
        .unwrap_or(now)
        .min(not_after_cap);
    validity(&mut params, now, not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
