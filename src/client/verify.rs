//! Server certificate verification by pinned CA fingerprints, across CA rotations.

use super::*;

/// Trusts a server whose chain includes a CA with a pinned fingerprint, or a CA a pinned one
/// endorsed across rotations, and whose certificate such a CA signed for the name we dialed.
#[derive(Debug)]
pub(super) struct PinnedCaVerifier {
    pub(super) pins: Vec<String>,
    pub(super) provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: Vec<Vec<u8>> = intermediates.iter().map(|c| c.to_vec()).collect();
        let at = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let vouched = crate::lineage::vouched_for(&self.pins, &presented, at);
        if vouched.is_empty() {
            let cas: Vec<String> = presented
                .iter()
                .filter(|der| pki::parse_certificate(der).is_ok_and(|c| c.is_ca()))
                .map(|der| pki::fingerprint(der))
                .collect();
            return Err(rustls::Error::General(match cas.as_slice() {
                [] => "it presents no CA certificate, so not the pinned one".to_string(),
                _ => format!(
                    "it presents CA {}: not the pinned one nor one it endorsed",
                    cas.join(", ")
                ),
            }));
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(vouched.into_iter().map(CertificateDer::from));
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    crate::pki::signature_checks!(provider.signature_verification_algorithms);
}
