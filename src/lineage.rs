//! Which CA certificates a pin vouches for, across CA rotations.
//!
//! A client pins CA certificates by fingerprint (an agent: the bundle it installed; an admin:
//! `--ca-fingerprint`). When a rotation introduces a new generation, the generation that signed
//! until then *endorses* it: it certifies the new CA's exact name and key. The CA server presents
//! every generation's certificate and every endorsement after its own certificate, so a client
//! whose pin predates one or more rotations walks the endorsements from its pin to the CA that
//! signs now. It trusts nothing else: every step is a signature by a CA it already trusts.
//!
//! Pure: certificates and the time in, trusted CA certificates out.

use time::OffsetDateTime;
use x509_parser::prelude::X509Certificate;

use crate::pki;

/// The CA certificates (DER) among `presented` that `pins` vouch for: the pinned certificates
/// themselves, and every CA certificate reachable from them by endorsements (a CA certificate
/// signed by one already trusted, valid at `now`). A certificate is returned once.
pub fn vouched_for(pins: &[String], presented: &[Vec<u8>], now: OffsetDateTime) -> Vec<Vec<u8>> {
    let parsed: Vec<(&Vec<u8>, X509Certificate<'_>)> = presented
        .iter()
        .filter_map(|der| Some((der, pki::parse_certificate(der).ok()?)))
        .filter(|(_, cert)| is_ca(cert))
        .collect();
    let mut trusted: Vec<usize> = parsed
        .iter()
        .enumerate()
        .filter(|(_, (der, _))| pins.contains(&pki::fingerprint(der)))
        .map(|(i, _)| i)
        .collect();
    // Each pass trusts the certificates signed by one already trusted; at most one pass per
    // certificate.
    loop {
        let endorsed: Vec<usize> = parsed
            .iter()
            .enumerate()
            .filter(|(i, _)| !trusted.contains(i))
            .filter(|(_, (_, cert))| {
                cert.validity().is_valid_at(now.into())
                    && trusted.iter().any(|t| {
                        let signer = &parsed[*t].1;
                        signer.subject().as_raw() == cert.issuer().as_raw()
                            && cert.verify_signature(Some(signer.public_key())).is_ok()
                    })
            })
            .map(|(i, _)| i)
            .collect();
        if endorsed.is_empty() {
            break;
        }
        trusted.extend(endorsed);
    }
    trusted.sort_unstable();
    trusted.into_iter().map(|i| parsed[i].0.clone()).collect()
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
    }

    /// A self-signed CA, its key, and an endorsement of it by `by` (if given).
    fn generation(name: &str, by: Option<&Issuer<'_, KeyPair>>) -> (Vec<u8>, KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params(name).self_signed(&key).unwrap().der().to_vec();
        let endorsement = by
            .map(|issuer| {
                ca_params(name)
                    .signed_by(&key, issuer)
                    .unwrap()
                    .der()
                    .to_vec()
            })
            .unwrap_or_default();
        (cert, key, endorsement)
    }

    #[test]
    fn a_pin_follows_endorsements_across_two_rotations_and_nothing_else() {
        let (g1, k1, _) = generation("ca generation 1", None);
        let i1 = Issuer::new(ca_params("ca generation 1"), k1);
        let (g2, k2, e2) = generation("ca generation 2", Some(&i1));
        let i2 = Issuer::new(ca_params("ca generation 2"), k2);
        let (g3, _, e3) = generation("ca generation 3", Some(&i2));
        // A CA with the same name as generation 3 that nobody endorsed.
        let (impostor, _, _) = generation("ca generation 3", None);
        let presented = vec![
            g3.clone(),
            impostor.clone(),
            g2.clone(),
            g1.clone(),
            e2.clone(),
            e3.clone(),
        ];
        let pin = vec![pki::fingerprint(&g1)];
        let trusted = vouched_for(&pin, &presented, now());
        assert!(trusted.contains(&g1));
        assert!(trusted.contains(&e2) && trusted.contains(&e3));
        assert!(
            !trusted.contains(&impostor),
            "an unendorsed CA is not trusted"
        );
        // Without the middle endorsement, generation 3 is out of reach.
        let broken = vec![g3, g1.clone(), e3.clone()];
        let trusted = vouched_for(&pin, &broken, now());
        assert_eq!(trusted, vec![g1]);
    }

    #[test]
    fn a_newer_pin_vouches_for_nothing_older() {
        let (g1, k1, _) = generation("ca generation 1", None);
        let i1 = Issuer::new(ca_params("ca generation 1"), k1);
        let (g2, _, e2) = generation("ca generation 2", Some(&i1));
        let trusted = vouched_for(&[pki::fingerprint(&g2)], &[g1, g2.clone(), e2], now());
        assert_eq!(trusted, vec![g2]);
    }
}
