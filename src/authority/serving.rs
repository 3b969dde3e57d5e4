//! The CA server's own TLS certificate: issued by the signing generation, kept in the data dir
//! (`server/tls.crt`, and `server/tls.key` sealed like the CA keys) and reused across restarts
//! while it is recorded as valid, was issued by the signing generation for exactly the names the
//! server listens under, and is not yet due for renewal (at 2/3 of its lifetime, like the
//! agents' certificates). Otherwise, or when asked to, a new one is issued and kept.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use rcgen::KeyPair;
use time::OffsetDateTime;

use super::{Authority, AuthorityError, Fault, NodeIdentity, Origin, SERVER_NODE};
use crate::fsutil::{self, FsError};
use crate::names::{NodeName, San};
use crate::pki::{self, KeyType};
use crate::store::CertificateStatus;

/// The server's certificate chain (its own first, then the CA lineage) and key.
pub struct ServingIdentity {
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub serial: String,
    /// When it should be replaced.
    pub renew_at: OffsetDateTime,
}

const CERT_FILE: &str = "server/tls.crt";
const KEY_FILE: &str = "server/tls.key";

impl Authority {
    /// The kept serving certificate when it is still right for `sans` at `now`, else a new one.
    pub async fn serving_identity(
        &self,
        sans: &[San],
        now: OffsetDateTime,
    ) -> Result<ServingIdentity, AuthorityError> {
        match self.kept_serving_identity(sans, now).await {
            Ok(Some(kept)) => return Ok(kept),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reuse the kept server certificate; issuing a new one")
            }
        }
        self.new_serving_identity(sans, now).await
    }

    /// Issues a new serving certificate for `sans` with a fresh key and keeps it.
    pub async fn new_serving_identity(
        &self,
        sans: &[San],
        now: OffsetDateTime,
    ) -> Result<ServingIdentity, AuthorityError> {
        // SERVER_NODE is a constant valid node name (a unit test parses it).
        #[allow(clippy::expect_used)]
        let node: NodeName = SERVER_NODE
            .parse()
            .expect("SERVER_NODE is a valid node name");
        let identity = NodeIdentity::from_sans(node.clone(), sans);
        let key = KeyType::EcdsaP256.generate()?;
        let grant = self.policy.server_grant(
            node,
            sans.to_vec(),
            KeyType::EcdsaP256,
            now,
            self.active_generation()?.not_after,
        );
        let issued = self
            .sign_and_record(&grant, &identity, &key, Origin::issue(SERVER_NODE), now)
            .await?;
        // Kept for the next start; a server that cannot keep it still serves with it.
        if let Err(e) = self.keep_serving(&issued.certificate_pem, &key) {
            tracing::warn!(error = %e, "cannot keep the server certificate for the next start");
        }
        self.serving_from(&issued.certificate_pem, &key, issued.not_after, now)
    }

    fn serving_from(
        &self,
        certificate_pem: &str,
        key: &KeyPair,
        not_after: OffsetDateTime,
        issued_at: OffsetDateTime,
    ) -> Result<ServingIdentity, AuthorityError> {
        let mut chain = pki::pem_certificates(certificate_pem)?;
        let leaf = chain.first().cloned().unwrap_or_default();
        let serial = pki::serial_hex(&pki::parse_certificate(&leaf)?);
        chain.extend(self.lineage()?);
        Ok(ServingIdentity {
            chain,
            key_der: key.serialize_der(),
            serial,
            renew_at: issued_at + (not_after - issued_at) * 2 / 3,
        })
    }

    fn keep_serving(&self, certificate_pem: &str, key: &KeyPair) -> Result<(), AuthorityError> {
        let dir = self.dir.resolve("server");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| FsError::new("create directory", &dir, e))?;
        let key_text = self.key_protection()?.key_file_text(key)?;
        // The key first: a certificate on disk always has its key next to it.
        fsutil::write_atomic(
            &self.dir.resolve(KEY_FILE),
            key_text.as_bytes(),
            fsutil::PRIVATE,
        )?;
        fsutil::write_atomic(
            &self.dir.resolve(CERT_FILE),
            certificate_pem.as_bytes(),
            fsutil::PUBLIC,
        )?;
        Ok(())
    }

    /// The kept certificate, if there is one and it is still right; `Ok(None)` when there is
    /// none or it has to be replaced.
    async fn kept_serving_identity(
        &self,
        sans: &[San],
        now: OffsetDateTime,
    ) -> Result<Option<ServingIdentity>, AuthorityError> {
        let cert_path = self.dir.resolve(CERT_FILE);
        let key_path = self.dir.resolve(KEY_FILE);
        let Ok(cert_pem) = std::fs::read_to_string(&cert_path) else {
            return Ok(None);
        };
        let der = pki::pem_certificates(&cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| Fault::Corrupt {
                what: format!("{} holds no certificate", cert_path.display()),
            })?;
        let serial = pki::serial_hex(&pki::parse_certificate(&der)?);
        let Some(record) = self.store.certificate(&serial, now).await? else {
            return Ok(None);
        };
        let mut wanted: Vec<String> = sans.iter().map(San::to_string).collect();
        let mut recorded = record.sans.clone();
        wanted.sort();
        recorded.sort();
        let renew_at = record.issued_at + (record.not_after - record.issued_at) * 2 / 3;
        if record.node != SERVER_NODE
            || record.status != CertificateStatus::Valid
            || record.ca_generation != self.active_generation()?.id
            || recorded != wanted
            || now >= renew_at
        {
            return Ok(None);
        }
        let mode = std::fs::metadata(&key_path)
            .map_err(|e| FsError::new("read", &key_path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Fault::KeyFilePermissions {
                path: key_path,
                mode: mode & 0o777,
            }
            .into());
        }
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|e| FsError::new("read", &key_path, e))?;
        let key_pem = super::keyfile::open(&key_text, self.passphrase.as_ref())?;
        let key = pki::load_private_key(&key_pem, KeyType::EcdsaP256)?;
        if !pki::key_matches_certificate(&key, &pki::parse_certificate(&der)?) {
            return Ok(None);
        }
        self.serving_from(&record.pem, &key, record.not_after, record.issued_at)
            .map(Some)
    }
}
