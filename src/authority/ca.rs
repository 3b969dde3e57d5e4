//! CA material: creating a new CA certificate, adopting an existing one (kubeadm, cfssl), and
//! turning a CA certificate plus its key into an rcgen `Issuer` that reproduces the CA's subject
//! byte for byte (clients find the issuer by comparing raw names).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::X509Name;

use super::{signer, AuthorityError, Fault};
use crate::duration::rfc3339;
use crate::pki::{self, KeyType};

/// A CA certificate with its key, ready to be stored as a generation.
pub struct CaMaterial {
    pub cert_der: Vec<u8>,
    pub key: KeyPair,
    pub key_type: KeyType,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A random serial: 16 bytes, positive, no leading zero byte (126 bits of entropy).
pub fn random_serial() -> Result<[u8; 16], AuthorityError> {
    let mut bytes = pki::random_bytes::<16>().map_err(|_| Fault::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

/// The first byte of every leaf serial: positive, not zero, and below every [`random_serial`]
/// (0x40 and up), so a store's leaves issued before this layout sort apart from the new ones.
const ORDERED_SERIAL_MARK: u8 = 0x01;

/// A leaf certificate's serial: 16 bytes, [`ORDERED_SERIAL_MARK`], then the issuing time in
/// seconds since 1970 (5 bytes, big-endian), then 80 random bits.
///
/// Serials issued later sort later, so each issuance adds to the end of the serial's index
/// instead of to a random page of it: on a store of a million certificates a random serial
/// dirtied one more scattered page per commit, for every checkpoint to write back. The time
/// it tells is in the certificate already (notBefore); 80 bits keep serials unguessable and
/// apart within one second.
pub fn ordered_serial(now: OffsetDateTime) -> Result<[u8; 16], AuthorityError> {
    let mut bytes = pki::random_bytes::<16>().map_err(|_| Fault::Random)?;
    // Before 1970 counts as 0; 40 bits of seconds outlast `OffsetDateTime` (year 9999).
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    bytes[0] = ORDERED_SERIAL_MARK;
    bytes[1..6].copy_from_slice(&seconds.to_be_bytes()[3..]);
    Ok(bytes)
}

/// A new self-signed CA: CA:TRUE (leaves only below it), keyCertSign + cRLSign, no EKU.
pub fn create(
    common_name: &str,
    key_type: KeyType,
    validity: Duration,
    backdate: Duration,
    now: OffsetDateTime,
) -> Result<CaMaterial, AuthorityError> {
    let key = key_type.generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = now - to_time(backdate);
    params.not_after = now + to_time(validity);
    let cert_der = signer::self_sign(&params, &key)?;
    Ok(CaMaterial {
        cert_der,
        key,
        key_type,
        not_before: params.not_before,
        not_after: params.not_after,
    })
}

/// An endorsement: a certificate for a new CA's exact name and key, signed by the CA that signs
/// now, valid as long as both are. A client that pinned the old CA accepts the new one through
/// it, and only through it. Standard verifiers never use it to widen trust: the old CA's path
/// length is 0, so nothing chains through it.
pub fn endorse(
    new_cert_der: &[u8],
    new_key: &KeyPair,
    issuer: &Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
) -> Result<Vec<u8>, AuthorityError> {
    let new_cert = pki::parse_certificate(new_cert_der)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(new_cert.subject())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = new_cert.validity().not_before.to_datetime();
    params.not_after = new_cert
        .validity()
        .not_after
        .to_datetime()
        .min(issuer_not_after);
    signer::sign_certificate(&params, new_key, issuer, "an endorsement")
}

/// Adopts an existing CA (its certificate and key, as PEM). Returns the material and notes for
/// the operator about anything unusual that does not prevent adoption.
pub fn import(
    cert_pem: &str,
    key_pem: &str,
    now: OffsetDateTime,
) -> Result<(CaMaterial, Vec<String>), AuthorityError> {
    let refuse = |reason: String| AuthorityError::Import { reason };
    let ders = pki::pem_certificates(cert_pem)?;
    if ders.len() != 1 {
        return Err(refuse(format!(
            "the certificate file holds {} certificates; give exactly the CA certificate",
            ders.len()
        )));
    }
    let der = ders.into_iter().next().unwrap_or_default();
    let cert = pki::parse_certificate(&der)?;
    let mut notes = Vec::new();

    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(refuse(
            "the certificate is not a CA (basicConstraints CA:TRUE is missing)".into(),
        ));
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(refuse(
                "the certificate's keyUsage does not allow keyCertSign".into(),
            ));
        }
        if !ku.value.crl_sign() {
            notes.push(
                "the CA's keyUsage lacks cRLSign: strict CRL checkers may reject its CRLs \
                 (etcd only matches serial numbers, so revocation still works there)"
                    .into(),
            );
        }
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if !(eku.value.any || (eku.value.server_auth && eku.value.client_auth)) {
            notes.push(
                "the CA carries an extendedKeyUsage without serverAuth and clientAuth; Go \
                 (and so etcd) will refuse leaves for the missing purposes"
                    .into(),
            );
        }
    }
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= now {
        return Err(refuse(format!(
            "the CA certificate expired at {}",
            rfc3339(not_after)
        )));
    }
    if not_after - now < time::Duration::days(365) {
        notes.push(format!(
            "the CA certificate expires at {}, in less than a year: plan a rotation",
            rfc3339(not_after)
        ));
    }
    let key_type = KeyType::of_spki(cert.public_key())?;
    let key = pki::load_private_key(key_pem, key_type)?;
    if !pki::key_matches_certificate(&key, &cert) {
        return Err(refuse(
            "the private key does not belong to the certificate".into(),
        ));
    }
    check_issuer_reproduces_subject(&der, &cert, &key)?;
    Ok((
        CaMaterial {
            cert_der: der.clone(),
            key,
            key_type,
            not_before,
            not_after,
        },
        notes,
    ))
}

/// An rcgen issuer for a CA certificate: its exact subject, its subject key identifier (so
/// leaves' authority key identifier matches), and no key-usage gate (checked at adoption).
pub fn issuer(
    cert: &X509Certificate<'_>,
    key: KeyPair,
) -> Result<(Issuer<'static, KeyPair>, Option<Vec<u8>>), AuthorityError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(cert.subject())?;
    params.key_usages = Vec::new();
    let key_id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        });
    if let Some(id) = &key_id {
        params.key_identifier_method = KeyIdMethod::PreSpecified(id.clone());
    }
    Ok((Issuer::new(params, key), key_id))
}

/// Rebuilds an X.509 name with the same attribute types and string types.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, AuthorityError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let unsupported = |what: String| AuthorityError::Import {
        reason: format!("the CA subject {name} cannot be reproduced: {what}"),
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("empty or multi-valued RDN".into()));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("attribute type OID too large".into()))?
            .collect();
        let data = attr.attr_value().data;
        let text = std::str::from_utf8(data)
            .map_err(|_| unsupported("attribute value is not UTF-8".into()))?;
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_string()),
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| unsupported("invalid PrintableString".into()))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| unsupported("invalid IA5String".into()))?,
            ),
            other => return Err(unsupported(format!("string type {other}"))),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Signs a throwaway leaf and checks that clients will chain it to this CA: same raw name as
/// the CA's subject, signature verifying with the CA's public key.
fn check_issuer_reproduces_subject(
    der: &[u8],
    cert: &X509Certificate<'_>,
    key: &KeyPair,
) -> Result<(), AuthorityError> {
    let probe_key = KeyType::EcdsaP256.generate()?;
    let own_key =
        pki::load_private_key(&key.serialize_pem(), KeyType::of_spki(cert.public_key())?)?;
    let (issuer, _) = issuer(cert, own_key)?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let probe = signer::sign_certificate(&params, &probe_key, &issuer, "a test certificate")?;
    let probe = pki::parse_certificate(&probe)?;
    let ca = pki::parse_certificate(der)?;
    if probe.issuer().as_raw() != ca.subject().as_raw() {
        return Err(AuthorityError::Import {
            reason: format!(
                "certificates signed with this CA would not name it exactly as its subject ({})",
                ca.subject()
            ),
        });
    }
    probe
        .verify_signature(Some(ca.public_key()))
        .map_err(|e| AuthorityError::Import {
            reason: format!("a test signature does not verify with the CA's public key: {e}"),
        })
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}
