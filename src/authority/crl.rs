//! Certificate revocation lists, two kinds built from the same records:
//!
//! - **etcd's CRL** ([`Authority::current_crl`], `GET /v1/crl`): every revoked, unexpired
//!   certificate of any generation, signed by the active generation. etcd matches serials only
//!   and checks neither the signature nor the issuer, so this one file also covers certificates
//!   of a retiring generation during a rotation.
//! - **one CRL per trusted generation** ([`Authority::current_generation_crl`],
//!   `GET /v1/crl?generation=N` or `?ca=sha256:HEX`): signed by that generation's own key and
//!   listing only what it issued, which is what RFC 5280 checkers (`openssl verify -crl_check`)
//!   need for a certificate of a generation that no longer signs.
//!
//! Each CRL takes its number from its issuer's counter in the store, so the numbers of one issuer
//! never go back, whichever process (the server, `etcd-ca crl`) built the previous one. The
//! server keeps the last CRL of each kind and rebuilds it only after a revocation, when half its
//! lifetime passed, or when the generations changed; what it built is published in the store
//! (one row per kind, replaced only by a higher number), so a restarted server, or another
//! process on the same database, serves the same bytes. Whether a revocation happened is a number
//! kept in memory: the store's revocation epoch as last read, after this process revoked, or
//! by the server's follower (every 2 s, for revocations made elsewhere). So a cached CRL, the
//! answer to nearly every request, costs a lookup and no read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use super::{to_time, Authority, AuthorityError, Fault, RevocationReason, Signer};
use crate::store::{GenerationState, PublishedCrl, RevokedEntry, StoreError};

/// The CA generation whose own CRL is asked for: by number, or by the `sha256:` fingerprint of
/// its CA certificate (what an agent knows from its trust bundle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlIssuer {
    Generation(i64),
    Fingerprint(String),
}

impl CrlIssuer {
    /// A `sha256:` and 64 hex digits fingerprint (any case), or None when `text` is not one.
    pub fn fingerprint(text: &str) -> Option<Self> {
        text.starts_with("sha256:")
            .then(|| crate::pki::parse_fingerprint(text))
            .flatten()
            .map(Self::Fingerprint)
    }
}

impl std::fmt::Display for CrlIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrlIssuer::Generation(id) => write!(f, "CA generation {id}"),
            CrlIssuer::Fingerprint(fp) => write!(f, "the CA {fp}"),
        }
    }
}

/// Which CRL a cache entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Scope {
    /// etcd's: every generation's revocations, signed by the active generation.
    Etcd,
    /// One generation's revocations, signed by that generation.
    Generation(i64),
}

impl Scope {
    /// How the store names it.
    fn key(self) -> String {
        match self {
            Scope::Etcd => "etcd".into(),
            Scope::Generation(id) => format!("generation:{id}"),
        }
    }
}

/// The last CRL built, and the revocation epoch it reflects.
struct CachedCrl {
    der: Arc<Vec<u8>>,
    epoch: i64,
    built_at: OffsetDateTime,
}

/// The last CRL built of each kind, and the revocation epoch last read.
pub(super) struct CrlCache {
    built: tokio::sync::Mutex<HashMap<Scope, CachedCrl>>,
    /// The store's revocation epoch as last read; [`UNKNOWN`] until read or after a revocation.
    epoch: AtomicI64,
}

const UNKNOWN: i64 = -1;

impl Default for CrlCache {
    fn default() -> Self {
        Self {
            built: Default::default(),
            epoch: AtomicI64::new(UNKNOWN),
        }
    }
}

impl CrlCache {
    /// Forgets every CRL (the generations changed: signers, and what is trusted, may differ).
    pub(super) async fn clear(&self) {
        self.built.lock().await.clear();
    }

    /// The store's revocation epoch, as just read.
    pub(super) fn saw_revocations(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// This process revoked: the next CRL request reads the epoch again.
    pub(super) fn forget_revocations(&self) {
        self.epoch.store(UNKNOWN, Ordering::Release);
    }
}

impl Authority {
    /// etcd's CRL, rebuilt only when a revocation happened or half its lifetime passed.
    pub async fn current_crl(&self, now: OffsetDateTime) -> Result<Arc<Vec<u8>>, AuthorityError> {
        self.cached_crl(Scope::Etcd, now).await
    }

    /// A trusted generation's own CRL, rebuilt like [`Self::current_crl`].
    pub async fn current_generation_crl(
        &self,
        issuer: &CrlIssuer,
        now: OffsetDateTime,
    ) -> Result<Arc<Vec<u8>>, AuthorityError> {
        let generation = self.trusted_generation_id(issuer)?;
        self.cached_crl(Scope::Generation(generation), now).await
    }

    /// A DER CRL signed by the active generation listing every revoked, unexpired certificate.
    /// etcd matches serials only; a leaf's serial holds 80 random bits after its issuing time
    /// (see [`super::ca::ordered_serial`]), so serials are unique across generations.
    pub async fn crl_der(&self, now: OffsetDateTime) -> Result<Vec<u8>, AuthorityError> {
        self.build_crl(Scope::Etcd, now).await
    }

    /// A DER CRL signed by a trusted generation listing the revoked, unexpired certificates it
    /// issued.
    pub async fn generation_crl_der(
        &self,
        issuer: &CrlIssuer,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, AuthorityError> {
        let generation = self.trusted_generation_id(issuer)?;
        self.build_crl(Scope::Generation(generation), now).await
    }

    /// The id of the trusted (not retired) generation `issuer` names.
    fn trusted_generation_id(&self, issuer: &CrlIssuer) -> Result<i64, AuthorityError> {
        self.current()
            .records
            .iter()
            .filter(|g| g.state != GenerationState::Retired)
            .find(|g| match issuer {
                CrlIssuer::Generation(id) => g.id == *id,
                CrlIssuer::Fingerprint(fp) => g.fingerprint.eq_ignore_ascii_case(fp),
            })
            .map(|g| g.id)
            .ok_or_else(|| AuthorityError::UnknownGeneration {
                issuer: issuer.clone(),
            })
    }

    async fn cached_crl(
        &self,
        scope: Scope,
        now: OffsetDateTime,
    ) -> Result<Arc<Vec<u8>>, AuthorityError> {
        match self.fresh_crl(scope, now).await {
            // The database cannot be reached: the last CRL built is still what etcd needs
            // (it lists every revocation this server knows of), until its nextUpdate.
            Err(AuthorityError::Fault(Fault::Store(
                e @ (StoreError::Unavailable(_) | StoreError::Closed),
            ))) => {
                let cache = self.crl_cache.built.lock().await;
                match cache.get(&scope) {
                    Some(cached) if now - cached.built_at < to_time(self.policy.crl_lifetime) => {
                        tracing::warn!(error = %e, "database unavailable: serving the last CRL");
                        Ok(cached.der.clone())
                    }
                    _ => Err(Fault::Store(e).into()),
                }
            }
            other => other,
        }
    }

    async fn fresh_crl(
        &self,
        scope: Scope,
        now: OffsetDateTime,
    ) -> Result<Arc<Vec<u8>>, AuthorityError> {
        let mut epoch = self.crl_cache.epoch.load(Ordering::Acquire);
        if epoch == UNKNOWN {
            epoch = self.store.revocation_epoch().await?;
            self.crl_cache.saw_revocations(epoch);
        }
        let mut cache = self.crl_cache.built.lock().await;
        if let Some(cached) = cache.get(&scope) {
            let fresh = now - cached.built_at < to_time(self.policy.crl_lifetime / 2);
            // A CRL another server built may reflect revocations this one has not seen yet.
            if cached.epoch >= epoch && fresh {
                return Ok(cached.der.clone());
            }
        }
        // The one published on the database if it is still the right one (or newer than what
        // this process knows), else a new one: decided and built under the store's write lock,
        // so of several servers asking at once one builds and the others serve its bytes.
        let half_life = to_time(self.policy.crl_lifetime / 2);
        let signer = match scope {
            Scope::Etcd => self.signer()?,
            Scope::Generation(id) => self.generation_signer(id)?,
        };
        let revoked = match scope {
            Scope::Etcd => self.store.revoked_unexpired(now).await?,
            Scope::Generation(id) => self.store.revoked_unexpired_of_generation(id, now).await?,
        };
        let generation = signer.generation;
        let key = scope.key();
        let published = self
            .store
            .crl_once(
                &key,
                generation,
                |crl| {
                    crl.epoch >= epoch
                        && crl.generation == generation
                        && now - crl.this_update < half_life
                },
                |number| -> Result<PublishedCrl, AuthorityError> {
                    Ok(PublishedCrl {
                        scope: key.clone(),
                        generation,
                        number,
                        epoch,
                        this_update: now,
                        der: self.sign_crl(&signer, revoked, number, now)?,
                    })
                },
            )
            .await;
        let published = match published {
            Ok(published) => published,
            // A server on a read-only standby cannot build one: it serves what the primary's
            // servers published, unchanged (not cached: the next request looks again).
            Err(AuthorityError::Fault(Fault::Store(StoreError::ReadOnly))) => {
                return match self.store.published_crl(&key).await? {
                    Some(stored) => Ok(Arc::new(stored.der)),
                    None => Err(Fault::Store(StoreError::ReadOnly).into()),
                };
            }
            Err(e) => return Err(e),
        };
        let epoch = epoch.max(published.epoch);
        let der = Arc::new(published.der);
        cache.insert(
            scope,
            CachedCrl {
                der: der.clone(),
                epoch,
                built_at: published.this_update,
            },
        );
        Ok(der)
    }

    async fn build_crl(
        &self,
        scope: Scope,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, AuthorityError> {
        Ok(self.build_numbered_crl(scope, now).await?.0)
    }

    /// A new CRL of `scope` and its number.
    async fn build_numbered_crl(
        &self,
        scope: Scope,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, i64), AuthorityError> {
        let (signer, revoked) = match scope {
            Scope::Etcd => (self.signer()?, self.store.revoked_unexpired(now).await?),
            Scope::Generation(id) => (
                self.generation_signer(id)?,
                self.store.revoked_unexpired_of_generation(id, now).await?,
            ),
        };
        let crl_number = self.store.next_crl_number(signer.generation).await?;
        Ok((
            self.sign_crl(&signer, revoked, crl_number, now)?,
            crl_number,
        ))
    }

    fn sign_crl(
        &self,
        signer: &Signer,
        revoked: Vec<RevokedEntry>,
        crl_number: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, AuthorityError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for entry in revoked {
            let serial = hex::decode(&entry.serial).map_err(|_| AuthorityError::InvalidSerial {
                text: entry.serial.clone(),
            })?;
            let reason = entry
                .reason
                .as_deref()
                .and_then(|r| r.parse::<RevocationReason>().ok())
                .unwrap_or(RevocationReason::Unspecified);
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: entry.revoked_at,
                reason_code: Some(reason.to_rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + to_time(self.policy.crl_lifetime),
            crl_number: SerialNumber::from(crl_number.max(1) as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: match &signer.key_id {
                Some(id) => KeyIdMethod::PreSpecified(id.clone()),
                None => KeyIdMethod::Sha256,
            },
        };
        super::signer::sign_crl(&params, &signer.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_needs_the_prefix_and_64_hex_digits() {
        let hex = "AB".repeat(32);
        assert_eq!(
            CrlIssuer::fingerprint(&format!("sha256:{hex}")),
            Some(CrlIssuer::Fingerprint(format!(
                "sha256:{}",
                hex.to_ascii_lowercase()
            )))
        );
        assert_eq!(CrlIssuer::fingerprint(&hex), None);
        assert_eq!(
            CrlIssuer::fingerprint(&format!("sha256:{}", &hex[1..])),
            None
        );
        assert_eq!(
            CrlIssuer::fingerprint(&format!("sha256:{}x", &hex[1..])),
            None
        );
        assert_eq!(CrlIssuer::fingerprint("sha256:"), None);
    }
}
