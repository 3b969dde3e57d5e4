//! The authority: the only code that signs.
//!
//! It owns a CA data dir ([`DataDir`]): the CA generations and their keys, the policy and the
//! store. Every certificate goes `request -> policy -> Grant -> sign -> store -> caller`: nothing
//! is signed that policy did not grant, and nothing is handed out before it is recorded.
//!
//! This file holds the [`Authority`] handle (opening a data dir, the generations it follows);
//! the work is split by responsibility: `init` (a new CA), `signer` (keys, signing, recording),
//! `issue` (on an admin's word), `enroll` (bootstrap tokens), `renew` (mTLS renewal), `admin`
//! (admin authentication), `audit` (records, revocation, the audit trail), [`rotation`], `crl`,
//! `serving` (the server's own certificate), `backup`, and `types`/`error` for what goes in and
//! out.

mod admin;
mod audit;
mod backup;
mod ca;
mod crl;
mod datadir;
mod enroll;
mod error;
mod init;
mod issue;
pub mod keyfile;
mod renew;
mod restore;
mod retention;
pub mod rotation;
mod serving;
mod shared;
mod signer;
mod tokens;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use serde::Serialize;
use time::OffsetDateTime;

use admin::CachedAdmin;
pub use audit::AuditAction;
pub use backup::{archive_names, BackupReport, BackupSummary};
pub use crl::CrlIssuer;
pub use datadir::{DataDir, ServeLockError};
pub use error::{AuthorityError, Fault};
pub use restore::{LaterRevocations, Recovered, RestoreReport};
pub use retention::TidyReport;
pub use serving::ServingIdentity;
pub use shared::MoveReport;
use shared::{shared_policy, MOVED_SETTING, POLICY_SETTING};
use signer::{public_key_of, Origin, Signed, Signer};
pub use types::*;

use crate::duration::{rfc3339, HumanDuration};
use crate::fsutil::{self, FsError};
use crate::names::{DnsName, NodeIdentity, NodeName, San};
use crate::pki::{self, KeyType, PkiError, VerifiedCsr};
use crate::policy::{
    ExtendedKeyUsage, Grant, KeyUsage, Policy, PolicyError, Renewal, Request, ADMIN_PROFILE,
};
use crate::store::{
    AuditEvent, CertificateFilter, CertificateRecord, CertificateStatus, EnrollmentRecord,
    GenerationRecord, GenerationState, IssueRecord, Migrations, NewCertificate, RevokeOutcome,
    Store, StoreConfig, StoreError, TokenKind, TokenRecord,
};

/// An open CA data dir.
pub struct Authority {
    dir: DataDir,
    store: Store,
    policy: Policy,
    /// Replaced as a whole when a rotation step (possibly by another process) changes them.
    generations: std::sync::RwLock<Arc<Generations>>,
    /// Opens sealed CA keys (and seals new ones).
    passphrase: Option<keyfile::Passphrase>,
    /// Held while the generations are read and replaced: a reload that read before a rotation
    /// step committed must not store its older snapshot after one that read after it.
    reloading: tokio::sync::Mutex<()>,
    /// Admin tokens verified recently, by the SHA-256 of their text: a busy admin client does
    /// not cost a database read per request. Each entry holds the actor, until when it may be
    /// trusted (30 s, monotonic) and the token's own expiry (checked at every use).
    admin_cache: std::sync::Mutex<HashMap<Vec<u8>, CachedAdmin>>,
    crl_cache: crl::CrlCache,
    /// The admin token revocations last seen in the store (see `follow_admin_revocations`).
    admin_revocations: std::sync::Mutex<Option<(i64, i64)>>,
    /// Woken when this process changed what agents watch (generations, revocations), so the
    /// server publishes it at once instead of at its next poll.
    changed: tokio::sync::Notify,
    /// On a shared database: the SHA-256 of the policy this server signs under, and whether
    /// the database has recorded another since (this server then signs nothing until
    /// restarted: two servers never sign under two policies).
    shared_policy: Option<String>,
    policy_changed: std::sync::atomic::AtomicBool,
}

/// The CA generations as last read from the store, and their signers (a key is read on first
/// use).
struct Generations {
    records: Vec<GenerationRecord>,
    /// Each trusted (not retired) generation's id and CA certificate (DER), decoded once.
    trusted: Vec<(i64, Vec<u8>)>,
    /// One slot per trusted generation: the active one signs certificates and etcd's CRL, each
    /// trusted one signs its own CRL.
    signers: BTreeMap<i64, OnceLock<Arc<Signer>>>,
}

impl Generations {
    fn new(records: Vec<GenerationRecord>) -> Arc<Self> {
        let trusted = records
            .iter()
            .filter(|g| g.state != GenerationState::Retired)
            .filter_map(|g| Some((g.id, g.cert_der()?)))
            .collect();
        let signers = records
            .iter()
            .filter(|g| g.state != GenerationState::Retired)
            .map(|g| (g.id, OnceLock::new()))
            .collect();
        Arc::new(Self {
            records,
            trusted,
            signers,
        })
    }

    fn active(&self) -> Result<&GenerationRecord, AuthorityError> {
        self.records
            .iter()
            .find(|g| g.state == GenerationState::Active)
            .ok_or(Fault::NoActiveGeneration.into())
    }
}

impl Authority {
    /// Opens an existing data dir. The CA key is read only when something is signed.
    pub async fn open(dir: &Path) -> Result<Self, AuthorityError> {
        let layout = DataDir::new(dir);
        if !layout.database().exists() {
            return Err(AuthorityError::NotInitialised {
                dir: dir.to_path_buf(),
            });
        }
        let policy = read_policy(&layout.policy())?;
        let store = Store::open(&layout.database()).await?;
        Self::assemble(layout, store, |(layout, store)| async move {
            if let Some(to) = store.setting(MOVED_SETTING).await? {
                return Err(AuthorityError::Moved {
                    dir: layout.root().to_path_buf(),
                    to,
                });
            }
            Ok((policy, None))
        })
        .await
    }

    /// Opens a CA whose records (and sealed keys) are in a database several servers share;
    /// `dir` holds this server's own files (the policy, its serving certificate, its lock).
    /// The policy must be the one the database records (a dir without one takes it).
    pub async fn open_shared(
        dir: &Path,
        config: &StoreConfig,
        migrations: Migrations,
    ) -> Result<Self, AuthorityError> {
        let layout = DataDir::new(dir);
        let store = Store::open_config(config, false, migrations).await?;
        Self::assemble(layout, store, |(layout, store)| async move {
            let (policy, sha) = shared_policy(&layout, &store).await?;
            Ok((policy, Some(sha)))
        })
        .await
    }

    /// The authority over `store`, with the policy `policy` reads; the store is closed on
    /// failure.
    async fn assemble<F, Fut>(
        layout: DataDir,
        store: Store,
        policy: F,
    ) -> Result<Self, AuthorityError>
    where
        F: FnOnce((DataDir, Store)) -> Fut,
        Fut: std::future::Future<Output = Result<(Policy, Option<String>), AuthorityError>>,
    {
        let loaded = async {
            let generations = store.generations().await?;
            if generations.is_empty() && store.holds_keys() {
                return Err(AuthorityError::DatabaseNotInitialised {
                    database: store.describe(),
                });
            }
            let policy = policy((layout.clone(), store.clone())).await?;
            Ok((generations, policy))
        }
        .await;
        let (generations, (policy, shared_policy)) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let authority = Self {
            dir: layout,
            store,
            policy,
            generations: std::sync::RwLock::new(Generations::new(generations)),
            reloading: tokio::sync::Mutex::new(()),
            passphrase: None,
            admin_cache: std::sync::Mutex::new(HashMap::new()),
            crl_cache: crl::CrlCache::default(),
            admin_revocations: std::sync::Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            shared_policy,
            policy_changed: std::sync::atomic::AtomicBool::new(false),
        };
        if authority.active_generation().is_err() {
            authority.close().await;
            return Err(Fault::NoActiveGeneration.into());
        }
        Ok(authority)
    }

    /// The passphrase that opens the CA keys, for operations that sign.
    pub fn with_passphrase(mut self, passphrase: Option<keyfile::Passphrase>) -> Self {
        self.passphrase = passphrase;
        self
    }

    /// How new CA keys are kept: like the active one.
    fn key_protection(&self) -> Result<KeyProtection, AuthorityError> {
        let active = self.active_generation()?;
        let (text, _) = self.generation_key_text(&active)?;
        if !keyfile::is_sealed(&text) {
            return Ok(KeyProtection::Unencrypted);
        }
        let passphrase = self.passphrase.clone().ok_or_else(|| {
            Fault::Passphrase(
                "the CA keys are encrypted: give the passphrase with --passphrase-file, ETCD_CA_PASSPHRASE_FILE or ETCD_CA_PASSPHRASE".into(),
            )
        })?;
        keyfile::open(&text, Some(&passphrase))?;
        Ok(KeyProtection::Passphrase(
            passphrase,
            keyfile::DEFAULT_ITERATIONS,
        ))
    }

    /// Closes the database cleanly.
    pub async fn close(&self) {
        self.store.close().await;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    fn current(&self) -> Arc<Generations> {
        // A poisoned lock means a panic while swapping an Arc; the Arc itself is always whole.
        self.generations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn active_generation(&self) -> Result<GenerationRecord, AuthorityError> {
        self.current().active().cloned()
    }

    /// Every generation, oldest first.
    pub fn generations(&self) -> Vec<GenerationRecord> {
        self.current().records.clone()
    }

    /// Every trusted CA certificate (all generations not retired), PEM, oldest first.
    pub fn trust_bundle_pem(&self) -> String {
        self.current()
            .records
            .iter()
            .filter(|g| g.state != GenerationState::Retired)
            .map(|g| g.cert_pem.as_str())
            .collect()
    }

    /// Every generation's CA certificate, the active one first, then every endorsement (DER):
    /// what the server presents after its own certificate, so clients pinned to any earlier
    /// generation reach the active one (see [`crate::lineage`]).
    pub fn lineage(&self) -> Result<Vec<Vec<u8>>, AuthorityError> {
        let generations = self.current();
        let active = generations.active()?;
        let mut ders = pki::pem_certificates(&active.cert_pem)?;
        for g in generations.records.iter().filter(|g| g.id != active.id) {
            ders.extend(pki::pem_certificates(&g.cert_pem)?);
        }
        for g in generations.records.iter() {
            if let Some(pem) = &g.endorsement_pem {
                ders.extend(pki::pem_certificates(pem)?);
            }
        }
        Ok(ders)
    }

    /// `sha256:` fingerprint of the active CA certificate.
    pub fn fingerprint(&self) -> Result<String, AuthorityError> {
        Ok(self.active_generation()?.fingerprint)
    }

    /// Completes when this process changed what agents watch (see [`Self::watched_state`]).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A digest of what every agent acts on: the generations (trusted, signing, retired) and
    /// the revocations. It changes exactly when agents have something to fetch; the server
    /// publishes it to agents waiting for a change. The restart lease is not in it: only the
    /// few members waiting for the lease care, and they ask for it every few seconds, so a
    /// fleet is not woken at each step of a rolling restart.
    pub async fn watched_state(&self) -> Result<String, AuthorityError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for g in self.current().records.iter() {
            ctx.update(format!("{}:{}:{};", g.id, g.state.as_str(), g.fingerprint).as_bytes());
        }
        let revocations = self.store.revocation_epoch().await?;
        self.crl_cache.saw_revocations(revocations);
        ctx.update(format!("revoked:{revocations};").as_bytes());
        Ok(hex::encode(&ctx.finish().as_ref()[..16]))
    }

    /// Re-reads the generations from the store (a rotation step may have run in another
    /// process). Returns true when they changed; the signer and the CRL follow the new state.
    pub async fn reload_generations(&self) -> Result<bool, AuthorityError> {
        // Reads and stores in order: the last reload to finish read last.
        let _serial = self.reloading.lock().await;
        let fresh = self.store.generations().await?;
        if fresh == self.current().records {
            return Ok(false);
        }
        let generations = Generations::new(fresh);
        generations.active()?;
        *self.generations.write().unwrap_or_else(|e| e.into_inner()) = generations;
        self.crl_cache.clear().await;
        Ok(true)
    }
}

/// Reads and validates the policy file at `path` (policy itself reads no files).
fn read_policy(path: &Path) -> Result<Policy, AuthorityError> {
    let text = std::fs::read_to_string(path).map_err(|e| FsError::new("read", path, e))?;
    Ok(Policy::parse(&text, path)?)
}

/// The node of the CA server's own certificate: never an etcd node, so no token, issue or
/// signing request may name it.
pub const SERVER_NODE: &str = "etcd-ca-server";

fn reserved(node: &NodeName) -> Result<(), AuthorityError> {
    if node.as_str() == SERVER_NODE {
        return Err(AuthorityError::NodeReserved {
            node: node.to_string(),
        });
    }
    Ok(())
}

/// Lower-case hex without separators: how serials are stored and printed.
pub fn normalize_serial(text: &str) -> Result<String, AuthorityError> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if cleaned.is_empty() || cleaned.len() > 40 || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(AuthorityError::InvalidSerial {
            text: text.to_string(),
        });
    }
    Ok(cleaned)
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised() {
        assert_eq!(normalize_serial("AB:cd:01").unwrap(), "abcd01");
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial("").is_err());
    }

    #[test]
    fn reasons_parse_in_either_spelling() {
        assert_eq!(
            "key-compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            "keyCompromise".parse::<RevocationReason>().unwrap().name(),
            "keyCompromise"
        );
        assert!("stolen".parse::<RevocationReason>().is_err());
    }

    #[test]
    fn random_serials_are_positive_and_full_length() {
        for _ in 0..100 {
            let s = ca::random_serial().unwrap();
            assert!(s[0] >= 0x40 && s[0] < 0x80);
        }
        assert_ne!(ca::random_serial().unwrap(), ca::random_serial().unwrap());
    }

    #[test]
    fn leaf_serials_sort_by_issue_time_and_stay_positive() {
        let at = |seconds: i64| OffsetDateTime::from_unix_timestamp(seconds).unwrap();
        let now = at(1_796_000_123);
        let serial = ca::ordered_serial(now).unwrap();
        assert_eq!(&hex::encode(serial)[..12], "01006b0cc97b");
        // Positive and minimal in DER: a first byte below 0x80 and not zero.
        assert_eq!(serial[0], 0x01);
        // The rest is random: two serials of the same second differ there.
        assert_ne!(serial[6..], ca::ordered_serial(now).unwrap()[6..]);
        // Later sorts later, as the stored lower-case hex, across a byte boundary too.
        let mut earlier = hex::encode(ca::ordered_serial(at(0xff_ffff)).unwrap());
        let last_of_9999 = 253_402_300_799;
        for seconds in [0x100_0000, 1_796_000_123, 1_796_000_124, last_of_9999] {
            let later = hex::encode(ca::ordered_serial(at(seconds)).unwrap());
            assert!(earlier < later, "{earlier} !< {later}");
            earlier = later;
        }
        // Every serial issued before this layout (first byte 0x40 and up) sorts after.
        assert!(earlier < hex::encode(ca::random_serial().unwrap()));
        // A time before 1970 is clamped, never wrapped into a later serial.
        assert_eq!(ca::ordered_serial(at(-5)).unwrap()[1..6], [0; 5]);
    }
}
