//! The checks a certificate passes before it replaces one etcd is using: it parses, chains to
//! the trust bundle, belongs to the key on disk, carries the same SANs and EKUs as the one it
//! replaces, and is valid now. A corrupt, truncated or foreign answer is never installed.

use time::OffsetDateTime;

use crate::pki;

/// Why a certificate was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallRefusal {
    #[error("not a certificate: {0}")]
    Malformed(String),
    #[error("expected exactly one certificate, got {0}")]
    Count(usize),
    #[error("not issued by a CA in the trust bundle")]
    NotChained,
    #[error("does not belong to the private key on disk")]
    KeyMismatch,
    #[error("its SANs changed from {old:?} to {new:?}")]
    SansChanged { old: Vec<String>, new: Vec<String> },
    #[error("its extended key usages changed from {old:?} to {new:?}")]
    EkusChanged { old: Vec<String>, new: Vec<String> },
    #[error("not valid yet (from {0})")]
    NotYetValid(String),
    #[error("already expired (at {0})")]
    Expired(String),
}

/// What the replaced certificate carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub sans: Vec<String>,
    pub extended_key_usages: Vec<String>,
}

impl Expected {
    /// What `der` carries, for comparing its successor with it.
    pub fn of(der: &[u8]) -> Result<Self, InstallRefusal> {
        let cert =
            pki::parse_certificate(der).map_err(|e| InstallRefusal::Malformed(e.to_string()))?;
        Ok(Self {
            sans: sorted(pki::certificate_sans(&cert)),
            extended_key_usages: sorted(pki::certificate_ekus(&cert)),
        })
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Clock skew tolerated between the CA and this host for a fresh certificate.
const SKEW: time::Duration = time::Duration::minutes(5);

/// Checks `pem_text` (one certificate) against the key's SubjectPublicKeyInfo, the trust bundle
/// (CA certificates, DER) and, for a renewal, what the old certificate carried. Returns its DER.
pub fn check_certificate(
    pem_text: &str,
    key_spki: &[u8],
    bundle: &[Vec<u8>],
    expected: Option<&Expected>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, InstallRefusal> {
    let ders =
        pki::pem_certificates(pem_text).map_err(|e| InstallRefusal::Malformed(e.to_string()))?;
    if ders.len() != 1 {
        return Err(InstallRefusal::Count(ders.len()));
    }
    let der = ders.into_iter().next().unwrap_or_default();
    let cert =
        pki::parse_certificate(&der).map_err(|e| InstallRefusal::Malformed(e.to_string()))?;
    if !bundle.iter().any(|ca_der| pki::is_issued_by(&cert, ca_der)) {
        return Err(InstallRefusal::NotChained);
    }
    if cert.public_key().raw != key_spki {
        return Err(InstallRefusal::KeyMismatch);
    }
    if let Some(expected) = expected {
        let got = Expected::of(&der)?;
        if got.sans != expected.sans {
            return Err(InstallRefusal::SansChanged {
                old: expected.sans.clone(),
                new: got.sans,
            });
        }
        if got.extended_key_usages != expected.extended_key_usages {
            return Err(InstallRefusal::EkusChanged {
                old: expected.extended_key_usages.clone(),
                new: got.extended_key_usages,
            });
        }
    }
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if not_before > now + SKEW {
        return Err(InstallRefusal::NotYetValid(crate::duration::rfc3339(
            not_before,
        )));
    }
    if not_after <= now {
        return Err(InstallRefusal::Expired(crate::duration::rfc3339(not_after)));
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        PublicKeyData,
    };

    struct Ca {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn new_ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(
        ca: &Ca,
        key: &KeyPair,
        sans: &[&str],
        ekus: &[ExtendedKeyUsagePurpose],
        days: i64,
    ) -> String {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = ekus.to_vec();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        params.signed_by(key, &ca.issuer).unwrap().pem()
    }

    const BOTH: [ExtendedKeyUsagePurpose; 2] = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];

    #[test]
    fn a_good_renewal_passes_and_every_fault_is_refused() {
        let ca = new_ca();
        let key = KeyPair::generate().unwrap();
        let spki = key.subject_public_key_info();
        let bundle = vec![ca.der.clone()];
        let now = OffsetDateTime::now_utc();
        let old = leaf(&ca, &key, &["10.0.0.1", "n1.example"], &BOTH, 30);
        let expected = Expected::of(&pki::pem_certificates(&old).unwrap()[0]).unwrap();
        let check = |pem: &str| check_certificate(pem, &spki, &bundle, Some(&expected), now);

        let new = leaf(&ca, &key, &["n1.example", "10.0.0.1"], &BOTH, 30);
        assert!(
            check(&new).is_ok(),
            "same names in another order are the same names"
        );

        // Truncated or corrupted answers.
        let truncated = &new[..new.len() / 2];
        assert!(matches!(
            check(truncated),
            Err(InstallRefusal::Malformed(_))
        ));
        assert!(check("").is_err());
        let mut der = pki::pem_certificates(&new).unwrap().remove(0);
        let middle = der.len() / 2;
        der[middle] ^= 0xff;
        let flipped = pki::certificate_pem(&der);
        assert!(
            check(&flipped).is_err(),
            "a flipped byte breaks parsing or the signature"
        );

        // Two certificates, a foreign CA, another key, other names, other usages, expired.
        assert_eq!(check(&format!("{new}{new}")), Err(InstallRefusal::Count(2)));
        let foreign = new_ca();
        assert_eq!(
            check(&leaf(
                &foreign,
                &key,
                &["10.0.0.1", "n1.example"],
                &BOTH,
                30
            )),
            Err(InstallRefusal::NotChained)
        );
        let other_key = KeyPair::generate().unwrap();
        assert_eq!(
            check(&leaf(
                &ca,
                &other_key,
                &["10.0.0.1", "n1.example"],
                &BOTH,
                30
            )),
            Err(InstallRefusal::KeyMismatch)
        );
        assert!(matches!(
            check(&leaf(&ca, &key, &["10.0.0.1"], &BOTH, 30)),
            Err(InstallRefusal::SansChanged { .. })
        ));
        assert!(matches!(
            check(&leaf(
                &ca,
                &key,
                &["10.0.0.1", "n1.example"],
                &[ExtendedKeyUsagePurpose::ServerAuth],
                30
            )),
            Err(InstallRefusal::EkusChanged { .. })
        ));
        assert!(matches!(
            check(&leaf(&ca, &key, &["10.0.0.1", "n1.example"], &BOTH, -1)),
            Err(InstallRefusal::Expired(_))
        ));
    }
}
