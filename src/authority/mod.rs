//! The authority: the only code that signs.
//!
//! It owns a CA data dir ([`DataDir`]): the CA generations and their keys, the policy and the
//! store. Every certificate goes `request -> policy -> Grant -> sign -> store -> caller`: nothing
//! is signed that policy did not grant, and nothing is handed out before it is recorded.

mod backup;
mod ca;
mod crl;
mod datadir;
pub mod keyfile;
pub mod rotation;
mod serving;
mod tokens;

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

pub use backup::{archive_names, BackupReport, BackupSummary};
pub use crl::CrlIssuer;
pub use datadir::{DataDir, ServeLockError};
pub use serving::ServingIdentity;

use crate::duration::{rfc3339, HumanDuration};
use crate::fsutil::{self, FsError};
use crate::names::{DnsName, NodeIdentity, NodeName, San};
use crate::pki::{self, KeyType, PkiError, VerifiedCsr};
use crate::policy::{
    ExtendedKeyUsage, Grant, KeyUsage, Policy, PolicyError, Renewal, Request, ADMIN_PROFILE,
};
use crate::store::{
    AuditEvent, CertificateFilter, CertificateRecord, CertificateStatus, EnrollmentRecord,
    GenerationRecord, GenerationState, IssueRecord, NewCertificate, RevokeOutcome, Store,
    StoreError, TokenKind, TokenRecord,
};

/// Everything that can go wrong in the authority.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{} already holds a CA ({} exists); nothing was changed", dir.display(), found.display())]
    AlreadyInitialised { dir: PathBuf, found: PathBuf },
    #[error("{} is not empty and holds no CA; choose an empty or new directory", dir.display())]
    DirNotEmpty { dir: PathBuf },
    #[error("{} holds no CA (no etcd-ca.db); create one with `etcd-ca init --data-dir {}`", dir.display(), dir.display())]
    NotInitialised { dir: PathBuf },
    #[error("cannot adopt the CA: {reason}")]
    Import { reason: String },
    #[error("cannot restore: {reason}")]
    Restore { reason: String },
    #[error("the CA key {} is readable by other users (mode {mode:o}); run chmod 600 on it", path.display())]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("the data dir has no active CA generation")]
    NoActiveGeneration,
    #[error("the rotation is under way but its new CA generation is missing from the database")]
    NoNextGeneration,
    #[error("stored data is corrupt: {what}")]
    Corrupt { what: String },
    #[error("{} does not belong to the CA generation {generation} certificate", path.display())]
    KeyMismatch { path: PathBuf, generation: i64 },
    #[error("invalid serial {text:?}: expected hexadecimal digits (colons allowed)")]
    InvalidSerial { text: String },
    #[error("no certificate with serial {serial}")]
    UnknownSerial { serial: String },
    #[error("{issuer} is unknown or retired: only trusted CA generations publish a CRL")]
    UnknownGeneration { issuer: CrlIssuer },
    #[error("{count} other certificates listed for renewal; a node renews at most {max} at once")]
    TooManySerials { count: usize, max: usize },
    #[error("certificate {serial} is already revoked (since {})", rfc3339(*revoked_at))]
    AlreadyRevoked {
        serial: String,
        revoked_at: OffsetDateTime,
    },
    #[error("unknown revocation reason {text:?} (known: {})", RevocationReason::NAMES.join(", "))]
    UnknownReason { text: String },
    #[error("the token is not valid")]
    TokenInvalid,
    #[error("the token expired at {}; create a new one with `etcd-ca token create`", rfc3339(*expired_at))]
    TokenExpired { expired_at: OffsetDateTime },
    #[error("the token was already used (with different CSRs); create a new one")]
    TokenUsed,
    #[error("the token does not allow profile {profile} (it allows: {})", allowed.join(", "))]
    TokenProfileNotAllowed {
        profile: String,
        allowed: Vec<String>,
    },
    #[error("token lifetime {ttl} is too long (at most {max})")]
    TokenTtlTooLong { ttl: String, max: String },
    #[error("this token is for node {token_node}, not {asked}: create a token for {asked}, or run the agent with --node {token_node}")]
    NodeMismatch { asked: String, token_node: String },
    #[error("no admin token {id} to revoke (unknown, or revoked already)")]
    AdminTokenUnknown { id: String },
    #[error("node name {node} is reserved for the CA server's own certificate")]
    NodeReserved { node: String },
    #[error("only a member's certificate (server or peer) may {action}; this is a {profile} certificate of node {node}")]
    MemberCertificateRequired {
        action: &'static str,
        profile: String,
        node: String,
    },
    #[error("a token needs at least one profile")]
    TokenWithoutProfiles,
    #[error("the request holds no CSR; send one per profile")]
    NoCsrs,
    #[error("CSR for profile {profile}: {source}")]
    Csr {
        profile: String,
        #[source]
        source: PkiError,
    },
    #[error("no client certificate was presented")]
    ClientCertificateRequired,
    #[error("the client certificate was not issued by a CA this server trusts")]
    ClientCertificateUntrusted,
    #[error("the client certificate expired at {}; renewal needs a valid certificate, so enroll again with a new token", rfc3339(*not_after))]
    ClientCertificateExpired { not_after: OffsetDateTime },
    #[error("the client certificate {serial} was revoked")]
    ClientCertificateRevoked { serial: String },
    #[error("the client certificate {serial} is not one this CA recorded")]
    ClientCertificateUnknown { serial: String },
    #[error("admin access needs an admin token or a client certificate of the admin profile")]
    AdminRequired,
    #[error("node {node} has no registered names and none were given: a {profile} certificate carries the node's addresses; give --ip (and --dns)")]
    NodeNamesRequired { node: String, profile: String },
    #[error("the admin token given is {why}: create one with `etcd-ca admin-token create` on the CA host")]
    AdminTokenInvalid { why: &'static str },
    #[error("cannot {step} now: the rotation is {phase} (see `etcd-ca ca rotate status`)")]
    RotationPhase {
        step: &'static str,
        phase: rotation::Phase,
    },
    #[error("cannot {step} yet, these nodes have not converged: {}; wait, or pass --force", nodes.join("; "))]
    NotConverged {
        step: &'static str,
        nodes: Vec<String>,
    },
    #[error("the restart lease is held by {holder} until {}", rfc3339(*until))]
    LeaseHeld {
        holder: String,
        until: OffsetDateTime,
    },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the system random number generator failed")]
    Random,
    #[error("CA key: {0}")]
    Passphrase(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// RFC 5280 revocation reasons an operator may give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const NAMES: [&'static str; 7] = [
        "unspecified",
        "keyCompromise",
        "caCompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "privilegeWithdrawn",
    ];
    const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    pub fn name(self) -> &'static str {
        let index = Self::ALL.iter().position(|r| *r == self).unwrap_or(0);
        Self::NAMES[index]
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = AuthorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|r| r.name().to_ascii_lowercase() == wanted)
            .ok_or_else(|| AuthorityError::UnknownReason {
                text: s.to_string(),
            })
    }
}

/// How to create a CA data dir.
pub struct InitOptions {
    pub key_type: KeyType,
    pub validity: Duration,
    pub common_name: String,
    /// The policy to install (its path for error messages, and its text).
    pub policy: Option<(PathBuf, String)>,
    /// An existing CA to adopt: certificate PEM and key PEM.
    pub import: Option<(String, String)>,
    /// How the CA key is kept on disk.
    pub key_protection: KeyProtection,
}

/// How CA keys are kept on disk.
#[derive(Clone, Debug)]
pub enum KeyProtection {
    /// Sealed with a passphrase (PBKDF2 with this many iterations, then AES-256-GCM).
    Passphrase(keyfile::Passphrase, u32),
    /// Plain PKCS#8, readable by whoever can read the file: only on explicit request.
    Unencrypted,
}

impl KeyProtection {
    /// The key file's text for a key.
    fn key_file_text(&self, key: &KeyPair) -> Result<zeroize::Zeroizing<String>, AuthorityError> {
        match self {
            KeyProtection::Passphrase(passphrase, iterations) => Ok(zeroize::Zeroizing::new(
                keyfile::seal(key.serialized_der(), passphrase, *iterations)?,
            )),
            KeyProtection::Unencrypted => Ok(zeroize::Zeroizing::new(key.serialize_pem())),
        }
    }
}

/// What `init` created.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub fingerprint: String,
    pub subject: String,
    pub key_type: String,
    pub imported: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub notes: Vec<String>,
}

/// An offline issuance request (from the admin CLI on the CA host).
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub profile: String,
    pub node: NodeName,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<DnsName>,
    pub common_name: Option<String>,
    pub lifetime: Option<Duration>,
    pub key_type: KeyType,
    pub allow_privileged_common_name: bool,
}

/// A certificate that has been signed and recorded.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub profile: String,
    pub node: String,
    pub common_name: String,
    pub sans: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub certificate_pem: String,
}

impl IssuedCertificate {
    fn from_record(record: &CertificateRecord) -> Self {
        Self {
            serial: record.serial.clone(),
            profile: record.profile.clone(),
            node: record.node.clone(),
            common_name: record.common_name.clone(),
            sans: record.sans.clone(),
            not_before: record.not_before,
            not_after: record.not_after,
            certificate_pem: record.pem.clone(),
        }
    }
}

/// A bootstrap token to create: the node identity it is bound to and what it may enroll.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub node: NodeName,
    pub ips: Vec<IpAddr>,
    pub dns_names: Vec<DnsName>,
    pub profiles: Vec<String>,
    pub common_name: Option<String>,
    pub ttl: Duration,
    pub allow_privileged_common_name: bool,
}

/// A token just created. `token` is the secret: shown once, never stored.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    pub node: Option<String>,
    pub profiles: Vec<String>,
}

/// The public id of a token, when the text is shaped like one (for attempt limits).
pub fn token_id(text: &str) -> Option<&str> {
    tokens::parse(text).map(|(id, _)| id)
}

/// The most certificates a node renews beside the one it presents, in one request.
pub const MAX_SERIALS_PER_NODE: usize = 16;

/// The longest a bootstrap token may live: it is a boot-time credential.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an enrollment returns: one certificate per profile and the trust bundle.
#[derive(Clone, Debug, Serialize)]
pub struct Enrollment {
    pub node: String,
    pub certificates: BTreeMap<String, IssuedCertificate>,
    pub trust_bundle: String,
    /// True when this answers a retry of an enrollment that already succeeded.
    pub replayed: bool,
}

/// An admin token as `admin-token list` shows it: never its secret.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AdminTokenView {
    pub id: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Who is calling the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminActor(pub String);

/// A certificate together with the private key generated for it (offline issue only).
pub struct IssuedWithKey {
    pub certificate: IssuedCertificate,
    pub key_pem: String,
}

/// The signing half of a generation, loaded on first use.
struct Signer {
    generation: i64,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's subject key identifier; leaves and CRLs name it as their authority key id.
    key_id: Option<Vec<u8>>,
}

/// A signed certificate, not yet recorded (and so not yet handed out).
struct Signed {
    record: IssueRecord,
    issued: IssuedCertificate,
}

/// Why a certificate is being signed, for the record and the audit trail.
struct Origin<'a> {
    action: &'a str,
    actor: &'a str,
    renewed_from: Option<String>,
}

impl<'a> Origin<'a> {
    fn issue(actor: &'a str) -> Self {
        Self {
            action: "issue",
            actor,
            renewed_from: None,
        }
    }
}

/// An open CA data dir.
pub struct Authority {
    dir: DataDir,
    store: Store,
    policy: Policy,
    /// Replaced as a whole when a rotation step (possibly by another process) changes them.
    generations: std::sync::RwLock<Arc<Generations>>,
    /// Opens sealed CA keys (and seals new ones).
    passphrase: Option<keyfile::Passphrase>,
    /// Admin tokens verified recently, by the SHA-256 of their text: a busy admin client does
    /// not cost a database read per request.
    /// Each entry holds until when it may be trusted: 30 s, or the token's expiry if sooner.
    /// Admin tokens seen lately: the actor, until when the entry is trusted (monotonic), and the
    /// token's own expiry (checked against the clock at every use).
    admin_cache: std::sync::Mutex<HashMap<Vec<u8>, CachedAdmin>>,
    crl_cache: crl::CrlCache,
    /// The admin token revocations last seen in the store (see `follow_admin_revocations`).
    admin_revocations: std::sync::Mutex<Option<(i64, i64)>>,
    /// Woken when this process changed what agents watch (generations, revocations), so the
    /// server publishes it at once instead of at its next poll.
    changed: tokio::sync::Notify,
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
            .ok_or(AuthorityError::NoActiveGeneration)
    }
}

impl Authority {
    /// Refuses a dir that cannot become a new CA: one that holds a CA, or anything else.
    pub fn check_new_dir(dir: &Path) -> Result<(), AuthorityError> {
        if let Some(found) = DataDir::new(dir).existing_ca_marker() {
            return Err(AuthorityError::AlreadyInitialised {
                dir: dir.to_path_buf(),
                found,
            });
        }
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| FsError::new("read", dir, e))?;
            if entries.next().is_some() {
                return Err(AuthorityError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Creates a new CA data dir. Everything is built in a staging directory next to `dir` and
    /// renamed into place at the end, so a failure leaves nothing behind.
    pub async fn init(
        dir: &Path,
        options: InitOptions,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<InitReport, AuthorityError> {
        Self::check_new_dir(dir)?;
        let dir_exists = dir.exists();
        let (policy_path, policy_text) = options.policy.unwrap_or_else(|| {
            (
                PathBuf::from("(built-in policies/etcd.toml)"),
                crate::policy::DEFAULT_POLICY.to_string(),
            )
        });
        let policy = Policy::parse(&policy_text, &policy_path)?;

        let (material, notes, imported) = match &options.import {
            Some((cert_pem, key_pem)) => {
                let (material, notes) = ca::import(cert_pem, key_pem, now)?;
                (material, notes, true)
            }
            None => {
                let common_name = format!("{} generation 1", options.common_name);
                let material = ca::create(
                    &common_name,
                    options.key_type,
                    options.validity,
                    policy.backdate,
                    now,
                )?;
                (material, Vec::new(), false)
            }
        };

        let parent = fsutil::parent_of(dir);
        std::fs::create_dir_all(parent).map_err(|e| FsError::new("create directory", parent, e))?;
        let staging_name = format!(
            ".{}.init-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "etcd-ca".into()),
            hex::encode(&ca::random_serial()?[..6])
        );
        let staging = parent.join(staging_name);
        let key_text = options.key_protection.key_file_text(&material.key)?;
        let result = Self::populate(
            &DataDir::new(&staging),
            &material,
            &key_text,
            imported,
            &policy_text,
            actor,
            now,
        )
        .await;
        let result = result.and_then(|()| {
            if dir_exists {
                std::fs::remove_dir(dir).map_err(|e| FsError::new("replace", dir, e))?;
            }
            std::fs::rename(&staging, dir).map_err(|e| FsError::new("move into place", dir, e))?;
            fsutil::sync_dir(parent)?;
            Ok(())
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let cert = pki::parse_certificate(&material.cert_der)?;
        Ok(InitReport {
            data_dir: dir.to_path_buf(),
            fingerprint: pki::fingerprint(&material.cert_der),
            subject: cert.subject().to_string(),
            key_type: material.key_type.to_string(),
            imported,
            not_after: material.not_after,
            notes,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn populate(
        layout: &DataDir,
        material: &ca::CaMaterial,
        key_text: &str,
        imported: bool,
        policy_text: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        fsutil::create_private_dir(layout.root())?;
        fsutil::create_private_dir(&layout.ca_dir())?;
        let key_file = DataDir::generation_key_file(1);
        let cert_file = DataDir::generation_cert_file(1);
        fsutil::write_new(
            &layout.resolve(&key_file),
            key_text.as_bytes(),
            fsutil::PRIVATE,
        )?;
        let cert_pem = pki::certificate_pem(&material.cert_der);
        fsutil::write_new(
            &layout.resolve(&cert_file),
            cert_pem.as_bytes(),
            fsutil::PUBLIC,
        )?;
        fsutil::write_new(&layout.policy(), policy_text.as_bytes(), fsutil::PUBLIC)?;
        let store = Store::create(&layout.database()).await?;
        let fingerprint = pki::fingerprint(&material.cert_der);
        let result = async {
            store
                .insert_generation(&GenerationRecord {
                    id: 1,
                    state: GenerationState::Active,
                    key_type: material.key_type.to_string(),
                    cert_pem,
                    fingerprint: fingerprint.clone(),
                    key_file,
                    imported,
                    not_before: material.not_before,
                    not_after: material.not_after,
                    activated_at: Some(now),
                    retired_at: None,
                    created_at: now,
                    endorsement_pem: None,
                })
                .await?;
            store
                .record_audit(&AuditEvent {
                    at: now,
                    actor: actor.to_string(),
                    action: if imported { "ca.import" } else { "ca.init" }.into(),
                    node: None,
                    serial: None,
                    detail: format!("generation 1, {fingerprint}"),
                })
                .await
        }
        .await;
        store.close().await;
        result?;
        fsutil::sync_dir(layout.root())?;
        Ok(())
    }

    /// Opens an existing data dir. The CA key is read only when something is signed.
    pub async fn open(dir: &Path) -> Result<Self, AuthorityError> {
        let layout = DataDir::new(dir);
        if !layout.database().exists() {
            return Err(AuthorityError::NotInitialised {
                dir: dir.to_path_buf(),
            });
        }
        let policy = Policy::load(&layout.policy())?;
        let store = Store::open(&layout.database()).await?;
        let generations = match store.generations().await {
            Ok(g) => g,
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        };
        let authority = Self {
            dir: layout,
            store,
            policy,
            generations: std::sync::RwLock::new(Generations::new(generations)),
            passphrase: None,
            admin_cache: std::sync::Mutex::new(HashMap::new()),
            crl_cache: crl::CrlCache::default(),
            admin_revocations: std::sync::Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        };
        if authority.active_generation().is_err() {
            authority.close().await;
            return Err(AuthorityError::NoActiveGeneration);
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
        let path = self.dir.resolve(&active.key_file);
        let text = std::fs::read_to_string(&path).map_err(|e| FsError::new("read", &path, e))?;
        if !keyfile::is_sealed(&text) {
            return Ok(KeyProtection::Unencrypted);
        }
        let passphrase = self.passphrase.clone().ok_or_else(|| {
            AuthorityError::Passphrase(
                "the CA keys are encrypted: give the passphrase with --passphrase-file or ETCD_CA_PASSPHRASE".into(),
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
        let (revoked, latest) = self.store.revocation_epoch().await?;
        ctx.update(format!("revoked:{revoked}:{latest};").as_bytes());
        Ok(hex::encode(&ctx.finish().as_ref()[..16]))
    }

    /// Re-reads the generations from the store (a rotation step may have run in another
    /// process). Returns true when they changed; the signer and the CRL follow the new state.
    pub async fn reload_generations(&self) -> Result<bool, AuthorityError> {
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

    /// The active generation's signer.
    fn signer(&self) -> Result<Arc<Signer>, AuthorityError> {
        let id = self.current().active()?.id;
        self.generation_signer(id)
    }

    /// Opens the key of every trusted generation (permissions, passphrase, and that it belongs
    /// to its certificate).
    pub fn check_keys(&self) -> Result<(), AuthorityError> {
        for id in self.current().signers.keys() {
            self.generation_signer(*id)?;
        }
        Ok(())
    }

    /// The signer of a trusted (not retired) generation, its key loaded on first use.
    fn generation_signer(&self, id: i64) -> Result<Arc<Signer>, AuthorityError> {
        let generations = self.current();
        let unknown = || AuthorityError::UnknownGeneration {
            issuer: CrlIssuer::Generation(id),
        };
        let slot = generations.signers.get(&id).ok_or_else(unknown)?;
        if let Some(signer) = slot.get() {
            return Ok(signer.clone());
        }
        let record = generations
            .records
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(unknown)?;
        let signer = self.load_signer(record)?;
        // Another thread may have won the race; either signer is the same generation.
        Ok(slot.get_or_init(|| Arc::new(signer)).clone())
    }

    /// Reads a generation's key: refused when others can read the file, opened with the
    /// passphrase, and checked against the generation's certificate.
    fn load_signer(&self, generation: &GenerationRecord) -> Result<Signer, AuthorityError> {
        let key_path = self.dir.resolve(&generation.key_file);
        let metadata =
            std::fs::metadata(&key_path).map_err(|e| FsError::new("read", &key_path, e))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthorityError::KeyFilePermissions {
                path: key_path,
                mode,
            });
        }
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|e| FsError::new("read", &key_path, e))?;
        let key_pem = keyfile::open(&key_text, self.passphrase.as_ref())?;
        let key_type: KeyType =
            generation
                .key_type
                .parse()
                .map_err(|e: String| AuthorityError::Corrupt {
                    what: format!("the key type of CA generation {}: {e}", generation.id),
                })?;
        let key = pki::load_private_key(&key_pem, key_type)?;
        let der = generation.cert_der().unwrap_or_default();
        let cert = pki::parse_certificate(&der)?;
        if !pki::key_matches_certificate(&key, &cert) {
            return Err(AuthorityError::KeyMismatch {
                path: key_path,
                generation: generation.id,
            });
        }
        let (issuer, key_id) = ca::issuer(&cert, key)?;
        Ok(Signer {
            generation: generation.id,
            issuer,
            key_id,
        })
    }

    /// The identity a request is issued for: the names it gives, or the node's registered names.
    async fn resolve_identity(
        &self,
        node: &NodeName,
        ips: &[IpAddr],
        dns_names: &[DnsName],
    ) -> Result<NodeIdentity, AuthorityError> {
        if ips.is_empty() && dns_names.is_empty() {
            if let Some(registered) = self.store.node(node).await? {
                return Ok(registered);
            }
        }
        Ok(NodeIdentity::new(
            node.clone(),
            ips.to_vec(),
            dns_names.to_vec(),
        ))
    }

    /// Issues a certificate with a key generated here (offline issue on the CA host).
    pub async fn issue_with_new_key(
        &self,
        request: &IssueRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey, AuthorityError> {
        reserved(&request.node)?;
        let identity = self
            .resolve_identity(&request.node, &request.ips, &request.dns_names)
            .await?;
        // A profile that carries the node's names is useless without any (a peer certificate
        // without the member's address is refused by every other member).
        let profile = self.policy.profile(&request.profile)?;
        if (profile.include_node_ips || profile.include_node_dns_names)
            && identity.ips.is_empty()
            && identity.dns_names.is_empty()
        {
            return Err(AuthorityError::NodeNamesRequired {
                node: request.node.to_string(),
                profile: request.profile.clone(),
            });
        }
        let grant = self.policy.evaluate(
            &Request {
                profile: &request.profile,
                node: &identity,
                common_name: request.common_name.as_deref(),
                requested_sans: &[],
                lifetime: request.lifetime,
                key_type: request.key_type,
                allow_privileged_common_name: request.allow_privileged_common_name,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let key = grant.key_type().generate()?;
        let certificate = self
            .sign_and_record(&grant, &identity, &key, Origin::issue(actor), now)
            .await?;
        Ok(IssuedWithKey {
            certificate,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs what the grant says for `public_key`. Nothing is handed out until it is recorded.
    fn sign(
        &self,
        grant: &Grant,
        public_key: &impl PublicKeyData,
        now: OffsetDateTime,
        renewed_from: Option<String>,
    ) -> Result<(NewCertificate, IssuedCertificate), AuthorityError> {
        let signer = self.signer()?;
        let serial = ca::random_serial()?;
        let params = certificate_params(grant, &serial, signer.key_id.is_some())?;
        let cert = params
            .signed_by(public_key, &signer.issuer)
            .map_err(|e| AuthorityError::Sign(e.to_string()))?;
        let pem = pki::certificate_pem(cert.der());
        let serial_hex = hex::encode(serial);
        let sans: Vec<String> = grant.sans().iter().map(|s| s.to_string()).collect();
        let record = NewCertificate {
            serial: serial_hex.clone(),
            ca_generation: signer.generation,
            profile: grant.profile().to_string(),
            node: grant.node().clone(),
            subject: format!("CN={}", grant.common_name()),
            common_name: grant.common_name().to_string(),
            sans: sans.clone(),
            key_type: grant.key_type().to_string(),
            public_key_sha256: pki::sha256_hex(&public_key.subject_public_key_info()),
            not_before: grant.not_before(),
            not_after: grant.not_after(),
            pem: pem.clone(),
            issued_at: now,
            renewed_from,
        };
        let issued = IssuedCertificate {
            serial: serial_hex,
            profile: record.profile.clone(),
            node: grant.node().to_string(),
            common_name: record.common_name.clone(),
            sans,
            not_before: grant.not_before(),
            not_after: grant.not_after(),
            certificate_pem: pem,
        };
        Ok((record, issued))
    }

    /// Signs, records with its audit event, and only then returns the certificate.
    async fn sign_and_record(
        &self,
        grant: &Grant,
        identity: &NodeIdentity,
        public_key: &impl PublicKeyData,
        origin: Origin<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let signed = self.sign_for_record(grant, identity, public_key, origin, now)?;
        self.record_one(signed).await
    }

    /// Signs and prepares the record and audit event; nothing is handed out before
    /// [`Authority::record`] made it durable.
    fn sign_for_record(
        &self,
        grant: &Grant,
        identity: &NodeIdentity,
        public_key: &impl PublicKeyData,
        origin: Origin<'_>,
        now: OffsetDateTime,
    ) -> Result<Signed, AuthorityError> {
        let Origin {
            action,
            actor,
            renewed_from,
        } = origin;
        let (cert, issued) = self.sign(grant, public_key, now, renewed_from)?;
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: action.into(),
            node: Some(issued.node.clone()),
            serial: Some(issued.serial.clone()),
            detail: format!("profile {}, CN {}", issued.profile, issued.common_name),
        };
        Ok(Signed {
            record: IssueRecord {
                node: identity.clone(),
                cert,
                event,
            },
            issued,
        })
    }

    /// Records one signed certificate; returns it once durable.
    async fn record_one(&self, signed: Signed) -> Result<IssuedCertificate, AuthorityError> {
        let issued = signed.issued.clone();
        self.record(vec![signed]).await?;
        Ok(issued)
    }

    /// Records signed certificates, all or none, in one group commit; returns them once durable.
    async fn record(&self, signed: Vec<Signed>) -> Result<Vec<IssuedCertificate>, AuthorityError> {
        let (records, issued): (Vec<_>, Vec<_>) =
            signed.into_iter().map(|s| (s.record, s.issued)).unzip();
        let actions: Vec<String> = records.iter().map(|r| r.event.action.clone()).collect();
        self.store.record_issues(records).await?;
        for (issued, action) in issued.iter().zip(actions) {
            tracing::info!(action, serial = %issued.serial, profile = %issued.profile, node = %issued.node, not_after = %rfc3339(issued.not_after), "issued certificate");
        }
        Ok(issued)
    }

    /// Creates a single-use bootstrap token bound to a node identity and profiles. Every rule
    /// the enrollment will face is checked now, so a token that could never work is refused.
    pub async fn create_bootstrap_token(
        &self,
        request: &TokenRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CreatedToken, AuthorityError> {
        if request.profiles.is_empty() {
            return Err(AuthorityError::TokenWithoutProfiles);
        }
        reserved(&request.node)?;
        if request.ttl > MAX_TOKEN_TTL {
            return Err(AuthorityError::TokenTtlTooLong {
                ttl: HumanDuration::from(request.ttl).to_string(),
                max: HumanDuration::from(MAX_TOKEN_TTL).to_string(),
            });
        }
        let identity = NodeIdentity::new(
            request.node.clone(),
            request.ips.clone(),
            request.dns_names.clone(),
        );
        let key_type = self
            .policy
            .allowed_key_types
            .first()
            .copied()
            .unwrap_or(KeyType::EcdsaP256);
        let issuer_not_after = self.active_generation()?.not_after;
        for profile in &request.profiles {
            self.policy.evaluate(
                &Request {
                    profile,
                    node: &identity,
                    common_name: self.token_common_name(profile, request.common_name.as_deref()),
                    requested_sans: &[],
                    lifetime: None,
                    key_type,
                    allow_privileged_common_name: request.allow_privileged_common_name,
                },
                now,
                issuer_not_after,
            )?;
        }
        let generated = tokens::generate()?;
        let expires_at = now + to_time(request.ttl);
        let record = TokenRecord {
            id: generated.id.clone(),
            kind: TokenKind::Bootstrap,
            secret_sha256: generated.secret_sha256,
            identity: Some(identity),
            profiles: request.profiles.clone(),
            common_name: request.common_name.clone(),
            allow_privileged_common_name: request.allow_privileged_common_name,
            created_by: actor.to_string(),
            created_at: now,
            expires_at: Some(expires_at),
            used_at: None,
            request_sha256: None,
            issued_serials: BTreeMap::new(),
            revoked_at: None,
        };
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "token.create".into(),
            node: Some(request.node.to_string()),
            serial: None,
            detail: format!(
                "token {} for profiles {} until {}",
                generated.id,
                request.profiles.join(","),
                rfc3339(expires_at)
            ),
        };
        self.store.insert_token(&record, &event).await?;
        Ok(CreatedToken {
            token: generated.text,
            id: generated.id,
            expires_at: Some(expires_at),
            node: Some(request.node.to_string()),
            profiles: request.profiles.clone(),
        })
    }

    /// The CN a token passes for a profile: only profiles whose CN comes from the request use it.
    fn token_common_name<'a>(
        &self,
        profile: &str,
        common_name: Option<&'a str>,
    ) -> Option<&'a str> {
        match self.policy.profile(profile) {
            Ok(p) if p.common_name == crate::policy::CommonNameRule::FromRequest => common_name,
            _ => None,
        }
    }

    /// Creates a bearer token for the admin API. It does not expire; it is shown once.
    pub async fn create_admin_token(
        &self,
        ttl: Option<std::time::Duration>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CreatedToken, AuthorityError> {
        let generated = tokens::generate()?;
        let expires_at = ttl.map(|t| now + to_time(t));
        let record = TokenRecord {
            id: generated.id.clone(),
            kind: TokenKind::Admin,
            secret_sha256: generated.secret_sha256,
            identity: None,
            profiles: Vec::new(),
            common_name: None,
            allow_privileged_common_name: false,
            created_by: actor.to_string(),
            created_at: now,
            expires_at,
            used_at: None,
            request_sha256: None,
            issued_serials: BTreeMap::new(),
            revoked_at: None,
        };
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "admin-token.create".into(),
            node: None,
            serial: None,
            detail: format!("admin token {}", generated.id),
        };
        self.store.insert_token(&record, &event).await?;
        Ok(CreatedToken {
            token: generated.text,
            id: generated.id,
            expires_at,
            node: None,
            profiles: Vec::new(),
        })
    }

    /// Looks a token up by its id and checks its secret in constant time.
    async fn find_token(&self, text: &str, kind: TokenKind) -> Result<TokenRecord, AuthorityError> {
        let (id, secret) = tokens::parse(text).ok_or(AuthorityError::TokenInvalid)?;
        let token = self
            .store
            .token(id)
            .await?
            .ok_or(AuthorityError::TokenInvalid)?;
        if token.kind != kind || !tokens::secret_matches(&token.secret_sha256, secret) {
            return Err(AuthorityError::TokenInvalid);
        }
        Ok(token)
    }

    /// The admin behind a bearer token.
    pub async fn authenticate_admin_token(&self, text: &str) -> Result<AdminActor, AuthorityError> {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(30);
        let key = ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
            .as_ref()
            .to_vec();
        let now = std::time::Instant::now();
        {
            // A poisoned lock only means a panic while updating the cache; entries stay whole.
            let cache = self.admin_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((actor, until, expires_at)) = cache.get(&key) {
                if now < *until && expires_at.is_none_or(|at| at > crate::clock::now()) {
                    return Ok(actor.clone());
                }
            }
        }
        match self.find_token(text, TokenKind::Admin).await {
            Ok(token)
                if token.revoked_at.is_some()
                    || token.expires_at.is_some_and(|at| at <= crate::clock::now()) =>
            {
                Err(AuthorityError::AdminTokenInvalid {
                    why: if token.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "expired"
                    },
                })
            }
            Ok(token) => {
                let actor = AdminActor(format!("admin-token:{}", token.id));
                let mut cache = self.admin_cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 1024 {
                    cache.clear();
                }
                // Trusted for FRESH at most, and never past the token's own expiry.
                cache.insert(key, (actor.clone(), now + FRESH, token.expires_at));
                Ok(actor)
            }
            Err(AuthorityError::TokenInvalid) => Err(AuthorityError::AdminTokenInvalid {
                why: "not a known admin token",
            }),
            Err(e) => Err(e),
        }
    }

    /// Every admin token (never its secret).
    pub async fn admin_tokens(&self) -> Result<Vec<AdminTokenView>, AuthorityError> {
        Ok(self
            .store
            .admin_tokens()
            .await?
            .into_iter()
            .map(|t| AdminTokenView {
                id: t.id,
                created_by: t.created_by,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
            .collect())
    }

    /// Revokes an admin token: refused from now on here, within the server's poll (2 s) on
    /// other servers (they forget their cache when a revocation appears in the store).
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "admin-token.revoke".into(),
            node: None,
            serial: None,
            detail: format!("admin token {id}"),
        };
        if !self.store.revoke_admin_token(id, &event).await? {
            return Err(AuthorityError::AdminTokenUnknown { id: id.to_string() });
        }
        self.forget_admin_tokens();
        Ok(())
    }

    /// Forgets the verified admin tokens when one was revoked since the last call (by any
    /// process): the next request of each checks the store again.
    pub async fn follow_admin_revocations(&self) -> Result<(), AuthorityError> {
        let epoch = self.store.admin_token_revocations().await?;
        let mut seen = self
            .admin_revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *seen != Some(epoch) {
            if seen.is_some() {
                self.forget_admin_tokens();
            }
            *seen = Some(epoch);
        }
        Ok(())
    }

    fn forget_admin_tokens(&self) {
        self.admin_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The admin behind a client certificate of the admin profile.
    pub async fn authenticate_admin_certificate(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<AdminActor, AuthorityError> {
        let record = self.verify_client_certificate(der, now).await?;
        if record.profile != ADMIN_PROFILE {
            return Err(AuthorityError::AdminRequired);
        }
        Ok(AdminActor(format!("admin-cert:{}", record.common_name)))
    }

    /// Enrolls a node: a bootstrap token and one CSR per profile become certificates. A retry
    /// of the same token with the same CSRs (a lost response) gets the same certificates back;
    /// any other reuse is refused. Nothing is recorded unless everything is valid. `node`, when
    /// given, is the node the caller believes it is: a token for another node is refused.
    pub async fn enroll(
        &self,
        token_text: &str,
        node: Option<&str>,
        csrs: &BTreeMap<String, String>,
        now: OffsetDateTime,
    ) -> Result<Enrollment, AuthorityError> {
        let token = self.find_token(token_text, TokenKind::Bootstrap).await?;
        let identity = token.identity.clone().ok_or(AuthorityError::TokenInvalid)?;
        if let Some(asked) = node.filter(|n| *n != identity.name.as_str()) {
            return Err(AuthorityError::NodeMismatch {
                asked: asked.to_string(),
                token_node: identity.name.to_string(),
            });
        }
        match token.expires_at {
            Some(expired_at) if expired_at <= now => {
                return Err(AuthorityError::TokenExpired { expired_at })
            }
            _ => {}
        }
        if csrs.is_empty() {
            return Err(AuthorityError::NoCsrs);
        }
        let mut verified = BTreeMap::new();
        for (profile, pem_text) in csrs {
            if !token.profiles.contains(profile) {
                return Err(AuthorityError::TokenProfileNotAllowed {
                    profile: profile.clone(),
                    allowed: token.profiles.clone(),
                });
            }
            let csr = VerifiedCsr::from_pem(pem_text).map_err(|source| AuthorityError::Csr {
                profile: profile.clone(),
                source,
            })?;
            verified.insert(profile.clone(), csr);
        }
        let request_sha256 = enrollment_digest(&verified);

        if token.used_at.is_some() {
            return self.replay_enrollment(&token, &request_sha256, now).await;
        }

        let issuer_not_after = self.active_generation()?.not_after;
        let mut records = Vec::new();
        let mut certificates = BTreeMap::new();
        for (profile, csr) in &verified {
            let grant = self.policy.evaluate(
                &Request {
                    profile,
                    node: &identity,
                    common_name: self.token_common_name(profile, token.common_name.as_deref()),
                    requested_sans: &csr.sans,
                    lifetime: None,
                    key_type: csr.key_type,
                    allow_privileged_common_name: token.allow_privileged_common_name,
                },
                now,
                issuer_not_after,
            )?;
            let public_key =
                rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key).map_err(|e| {
                    AuthorityError::Csr {
                        profile: profile.clone(),
                        source: PkiError::Csr(e.to_string()),
                    }
                })?;
            let (record, issued) = self.sign(&grant, &public_key, now, None)?;
            records.push(record);
            certificates.insert(profile.clone(), issued);
        }
        let actor = format!("token:{}", token.id);
        let events: Vec<AuditEvent> = certificates
            .values()
            .map(|c| AuditEvent {
                at: now,
                actor: actor.clone(),
                action: "enroll".into(),
                node: Some(c.node.clone()),
                serial: Some(c.serial.clone()),
                detail: format!("profile {}, CN {}", c.profile, c.common_name),
            })
            .collect();
        let consumed = self
            .store
            .complete_enrollment(&EnrollmentRecord {
                token_id: &token.id,
                request_sha256: &request_sha256,
                identity: &identity,
                certificates: &records,
                events: &events,
                at: now,
            })
            .await?;
        if !consumed {
            // Another request used the token between our read and our write.
            let token = self.find_token(token_text, TokenKind::Bootstrap).await?;
            return self.replay_enrollment(&token, &request_sha256, now).await;
        }
        for c in certificates.values() {
            tracing::info!(action = "enroll", serial = %c.serial, profile = %c.profile, node = %c.node, not_after = %rfc3339(c.not_after), "issued certificate");
        }
        Ok(Enrollment {
            node: identity.name.to_string(),
            certificates,
            trust_bundle: self.trust_bundle_pem(),
            replayed: false,
        })
    }

    async fn replay_enrollment(
        &self,
        token: &TokenRecord,
        request_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<Enrollment, AuthorityError> {
        if token.request_sha256.as_deref() != Some(request_sha256) {
            return Err(AuthorityError::TokenUsed);
        }
        let mut certificates = BTreeMap::new();
        for (profile, serial) in &token.issued_serials {
            let record = self
                .store
                .certificate(serial, now)
                .await?
                .ok_or(AuthorityError::TokenUsed)?;
            // A replay answers a lost response; certificates that expired or were revoked since
            // would help nobody, so the token counts as spent.
            if record.status != CertificateStatus::Valid {
                return Err(AuthorityError::TokenUsed);
            }
            certificates.insert(profile.clone(), IssuedCertificate::from_record(&record));
        }
        Ok(Enrollment {
            node: token
                .identity
                .as_ref()
                .map(|i| i.name.to_string())
                .unwrap_or_default(),
            certificates,
            trust_bundle: self.trust_bundle_pem(),
            replayed: true,
        })
    }

    /// The trusted (not retired) generation that issued `cert`, if any.
    fn issuing_generation(
        &self,
        cert: &x509_parser::prelude::X509Certificate<'_>,
    ) -> Option<GenerationRecord> {
        let current = self.current();
        let (id, _) = current
            .trusted
            .iter()
            .find(|(_, ca)| pki::is_issued_by(cert, ca))?;
        current.records.iter().find(|g| g.id == *id).cloned()
    }

    /// Checks a client certificate presented over mTLS: issued by a trusted generation, not
    /// expired, a serial this CA recorded (byte for byte), not revoked.
    pub async fn verify_client_certificate(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = self.presented_serial(der, now)?;
        let record = self.store.certificate(&serial, now).await?;
        recorded_as_presented(record, serial, der)
    }

    /// The serial of a presented client certificate that a trusted generation issued (its
    /// signature checked) and that has not expired; nothing read from the store yet.
    fn presented_serial(&self, der: &[u8], now: OffsetDateTime) -> Result<String, AuthorityError> {
        let cert =
            pki::parse_certificate(der).map_err(|_| AuthorityError::ClientCertificateUntrusted)?;
        if self.issuing_generation(&cert).is_none() {
            return Err(AuthorityError::ClientCertificateUntrusted);
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(AuthorityError::ClientCertificateExpired { not_after });
        }
        Ok(pki::serial_hex(&cert))
    }

    /// Renews the certificate presented over mTLS. The new certificate keeps the recorded
    /// identity; by default it reuses the public key, or takes the key of `csr` (re-key). Names
    /// in a CSR are ignored: nothing in a renewal request can widen a certificate.
    pub async fn renew(
        &self,
        presented: &[u8],
        csr: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let record = self.verify_client_certificate(presented, now).await?;
        let (public_key, key_type) = match csr {
            Some(pem_text) => {
                let csr =
                    VerifiedCsr::from_pem(pem_text).map_err(|source| AuthorityError::Csr {
                        profile: record.profile.clone(),
                        source,
                    })?;
                (csr.public_key, csr.key_type)
            }
            None => public_key_of(presented)?,
        };
        let actor = format!("cert:{}", record.serial);
        let signed = self
            .sign_renewal(&record, None, &public_key, key_type, &actor, now)
            .await?;
        self.record_one(signed).await
    }

    /// Signs the renewal of a certificate recorded as `record` for the key `public_key` (DER
    /// SubjectPublicKeyInfo), with its recorded identity: policy checked, nothing recorded yet.
    /// `identity` is the node's registered identity when the caller already read it.
    async fn sign_renewal(
        &self,
        record: &CertificateRecord,
        identity: Option<&NodeIdentity>,
        public_key: &[u8],
        key_type: KeyType,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Signed, AuthorityError> {
        let sans = record
            .sans
            .iter()
            .map(|s| San::parse_loose(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuthorityError::Corrupt {
                what: format!("a recorded SAN of certificate {}: {e}", record.serial),
            })?;
        let node: NodeName =
            record
                .node
                .parse()
                .map_err(|e: crate::names::NameError| AuthorityError::Corrupt {
                    what: format!("the node of certificate {}: {e}", record.serial),
                })?;
        let grant = self.policy.evaluate_renewal(
            &Renewal {
                profile: &record.profile,
                node: &node,
                common_name: &record.common_name,
                sans: &sans,
                key_type,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(public_key)
            .map_err(|e| AuthorityError::Sign(e.to_string()))?;
        let identity = match identity {
            Some(known) => known.clone(),
            None => self
                .store
                .node(&node)
                .await?
                .unwrap_or_else(|| NodeIdentity::new(node.clone(), Vec::new(), Vec::new())),
        };
        let origin = Origin {
            action: "renew",
            actor,
            renewed_from: Some(record.serial.clone()),
        };
        self.sign_for_record(&grant, &identity, &public_key, origin, now)
    }

    /// Renews the presented certificate and the node's other certificates listed by serial, each
    /// with its own recorded identity and key: one connection renews a whole node.
    pub async fn renew_node(
        &self,
        presented: &[u8],
        serials: &[String],
        now: OffsetDateTime,
    ) -> Result<Vec<IssuedCertificate>, AuthorityError> {
        let presented_serial = self.presented_serial(presented, now)?;
        // One read for the whole node: the presented certificate, the others listed, and the
        // node's registered identity. A malformed serial is reported only once the presented
        // certificate has passed, as before the reads were batched.
        let mut seen = std::collections::BTreeSet::from([presented_serial.clone()]);
        let listed: Vec<Result<String, AuthorityError>> = serials
            .iter()
            .map(|s| normalize_serial(s))
            .filter(|s| s.as_ref().map_or(true, |s| seen.insert(s.clone())))
            .collect();
        if listed.len() > MAX_SERIALS_PER_NODE {
            return Err(AuthorityError::TooManySerials {
                count: listed.len(),
                max: MAX_SERIALS_PER_NODE,
            });
        }
        let mut wanted = vec![presented_serial.clone()];
        wanted.extend(listed.iter().filter_map(|s| s.as_ref().ok().cloned()));
        let mut found: BTreeMap<String, (CertificateRecord, Option<NodeIdentity>)> = self
            .store
            .certificates_by_serial(&wanted, now)
            .await?
            .into_iter()
            .map(|(record, identity)| (record.serial.clone(), (record, identity)))
            .collect();
        let (record, registered) = match found.remove(&presented_serial) {
            Some((record, registered)) => (Some(record), registered),
            None => (None, None),
        };
        let record = recorded_as_presented(record, presented_serial, presented)?;
        let actor = format!("cert:{}", record.serial);
        let (public_key, key_type) = public_key_of(presented)?;
        // Every certificate of a node shares its identity.
        let identity = match registered {
            Some(identity) => identity,
            None => {
                let node: NodeName =
                    record.node.parse().map_err(|e: crate::names::NameError| {
                        AuthorityError::Corrupt {
                            what: format!("the node of certificate {}: {e}", record.serial),
                        }
                    })?;
                NodeIdentity::new(node, Vec::new(), Vec::new())
            }
        };
        // Signed first, then recorded together: one commit, and all or none.
        let mut renewed = vec![
            self.sign_renewal(&record, Some(&identity), &public_key, key_type, &actor, now)
                .await?,
        ];
        for serial in listed {
            let serial = serial?;
            let sibling = found
                .get(&serial)
                .map(|(sibling, _)| sibling)
                .filter(|c| c.node == record.node)
                .ok_or_else(|| AuthorityError::UnknownSerial {
                    serial: serial.clone(),
                })?;
            match sibling.status {
                CertificateStatus::Valid => {}
                CertificateStatus::Revoked => {
                    return Err(AuthorityError::ClientCertificateRevoked { serial })
                }
                CertificateStatus::Expired => {
                    return Err(AuthorityError::ClientCertificateExpired {
                        not_after: sibling.not_after,
                    })
                }
            }
            let der = pki::pem_certificates(&sibling.pem)?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (public_key, key_type) = public_key_of(&der)?;
            renewed.push(
                self.sign_renewal(sibling, Some(&identity), &public_key, key_type, &actor, now)
                    .await?,
            );
        }
        self.record(renewed).await
    }

    /// Signs a CSR for a node on an admin's word (the equivalent of `cfssl sign`): the node's
    /// names are the ones given, or else the CSR's; policy decides everything else.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_csr(
        &self,
        profile: &str,
        node: &NodeName,
        names: Option<(Vec<IpAddr>, Vec<DnsName>)>,
        csr_pem: &str,
        common_name: Option<&str>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        reserved(node)?;
        let csr = VerifiedCsr::from_pem(csr_pem).map_err(|source| AuthorityError::Csr {
            profile: profile.to_string(),
            source,
        })?;
        let (ips, dns) = names.unwrap_or_else(|| {
            let mut ips = Vec::new();
            let mut dns = Vec::new();
            for san in &csr.sans {
                match san {
                    San::Ip(ip) => ips.push(*ip),
                    San::Dns(d) => dns.push(d.clone()),
                }
            }
            (ips, dns)
        });
        let identity = NodeIdentity::new(node.clone(), ips, dns);
        let grant = self.policy.evaluate(
            &Request {
                profile,
                node: &identity,
                common_name: self.token_common_name(profile, common_name),
                requested_sans: &csr.sans,
                lifetime: None,
                key_type: csr.key_type,
                allow_privileged_common_name: false,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key).map_err(|e| {
            AuthorityError::Csr {
                profile: profile.to_string(),
                source: PkiError::Csr(e.to_string()),
            }
        })?;
        self.sign_and_record(&grant, &identity, &public_key, Origin::issue(actor), now)
            .await
    }

    /// Records a certificate this CA signed elsewhere (before it was adopted: kubeadm, cfssl) so
    /// it renews like one of ours. It must chain to a CA generation, be unexpired, carry only
    /// DNS and IP names the policy allows, and not be recorded yet.
    pub async fn adopt(
        &self,
        der: &[u8],
        profile: &str,
        node: &NodeName,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let refuse = |reason: String| AuthorityError::Import { reason };
        self.policy.profile(profile)?;
        let cert = pki::parse_certificate(der)?;
        if cert.is_ca() {
            return Err(refuse(
                "this is a CA certificate; adopt the leaf certificates it signed".into(),
            ));
        }
        let generation = self
            .issuing_generation(&cert)
            .ok_or_else(|| refuse("the certificate was not issued by this CA".into()))?;
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(refuse(format!(
                "the certificate expired at {}",
                rfc3339(not_after)
            )));
        }
        let serial = pki::serial_hex(&cert);
        if self.store.certificate(&serial, now).await?.is_some() {
            return Err(refuse(format!("certificate {serial} is already recorded")));
        }
        let sans = pki::certificate_sans(&cert)
            .iter()
            .map(|s| San::parse_loose(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(format!("unsupported name in the certificate: {e}")))?;
        let identity = NodeIdentity::from_sans(node.clone(), &sans);
        self.policy.check_identity(&identity)?;
        let key_type = KeyType::of_spki(cert.public_key())?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let pem = pki::certificate_pem(der);
        let record = NewCertificate {
            serial: serial.clone(),
            ca_generation: generation.id,
            profile: profile.to_string(),
            node: node.clone(),
            subject: cert.subject().to_string(),
            common_name: common_name.clone(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            key_type: key_type.to_string(),
            public_key_sha256: pki::sha256_hex(cert.public_key().raw),
            not_before: cert.validity().not_before.to_datetime(),
            not_after,
            pem: pem.clone(),
            issued_at: now,
            renewed_from: None,
        };
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "adopt".into(),
            node: Some(node.to_string()),
            serial: Some(serial.clone()),
            detail: format!("profile {profile}, subject {}", cert.subject()),
        };
        self.store.record_issue(&identity, &record, &event).await?;
        Ok(IssuedCertificate {
            serial,
            profile: profile.to_string(),
            node: node.to_string(),
            common_name,
            sans: record.sans,
            not_before: record.not_before,
            not_after,
            certificate_pem: pem,
        })
    }

    /// Records a summary line (of refusals not audited one by one) in the audit trail.
    pub async fn audit_summary(&self, action: &str, detail: &str, now: OffsetDateTime) {
        let event = AuditEvent {
            at: now,
            actor: "etcd-ca serve".to_string(),
            action: action.to_string(),
            node: None,
            serial: None,
            detail: detail.to_string(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "cannot record a summary in the audit trail");
        }
    }

    /// Records a refused request in the audit trail.
    pub async fn audit_refusal(
        &self,
        action: &str,
        actor: &str,
        error: &AuthorityError,
        now: OffsetDateTime,
    ) {
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: format!("{action}.refused"),
            node: None,
            serial: None,
            detail: error.to_string(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "cannot record a refusal in the audit trail");
        }
    }

    /// For each node and profile, when its last valid certificate expires.
    pub async fn expiry_by_node_and_profile(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, String, OffsetDateTime)>, AuthorityError> {
        Ok(self.store.expiry_by_node_and_profile(now).await?)
    }

    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>, AuthorityError> {
        Ok(self.store.certificates(filter, now).await?)
    }

    pub async fn certificate(
        &self,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = normalize_serial(serial)?;
        self.store
            .certificate(&serial, now)
            .await?
            .ok_or(AuthorityError::UnknownSerial { serial })
    }

    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = normalize_serial(serial)?;
        // The audit trail names the node whose certificate this is.
        let node = self
            .store
            .certificate(&serial, now)
            .await?
            .map(|record| record.node);
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "revoke".into(),
            node,
            serial: Some(serial.clone()),
            detail: format!("reason {}", reason.name()),
        };
        match self.store.revoke(&serial, reason.name(), &event).await? {
            RevokeOutcome::Revoked(record) => {
                tracing::info!(serial = %serial, reason = reason.name(), "revoked certificate");
                self.changed.notify_one();
                Ok(*record)
            }
            RevokeOutcome::AlreadyRevoked(record) => Err(AuthorityError::AlreadyRevoked {
                serial,
                revoked_at: record.revoked_at.unwrap_or(now),
            }),
            RevokeOutcome::NotFound => Err(AuthorityError::UnknownSerial { serial }),
        }
    }

    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>, AuthorityError> {
        Ok(self.store.audit_events(limit).await?)
    }
}

/// A recently seen admin token: its actor, until when the entry is trusted (monotonic), and the
/// token's own expiry.
type CachedAdmin = (AdminActor, std::time::Instant, Option<OffsetDateTime>);

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

/// The SubjectPublicKeyInfo (DER) of a certificate and its key type.
fn public_key_of(der: &[u8]) -> Result<(Vec<u8>, KeyType), AuthorityError> {
    let cert = pki::parse_certificate(der)?;
    let key_type = KeyType::of_spki(cert.public_key())?;
    Ok((cert.public_key().raw.to_vec(), key_type))
}

/// SHA-256 over the profiles and public keys of an enrollment: identifies a retry. Keys, not CSR
/// bytes, because ECDSA signatures are randomised: a node that re-signs a CSR for the same key
/// after a restart is making the same request.
fn enrollment_digest(csrs: &BTreeMap<String, VerifiedCsr>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (profile, csr) in csrs {
        ctx.update(&(profile.len() as u64).to_be_bytes());
        ctx.update(profile.as_bytes());
        ctx.update(&(csr.public_key.len() as u64).to_be_bytes());
        ctx.update(&csr.public_key);
    }
    hex::encode(ctx.finish())
}

/// Certificate parameters from a grant: everything comes from policy, nothing from rcgen's
/// defaults (its validity runs to 4096 and its serial is derived from the key).
fn certificate_params(
    grant: &Grant,
    serial: &[u8],
    issuer_has_key_id: bool,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, grant.common_name());
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = grant.not_before();
    params.not_after = grant.not_after();
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = issuer_has_key_id;
    params.subject_alt_names = grant
        .sans()
        .iter()
        .map(|san| match san {
            San::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| AuthorityError::Sign(e.to_string())),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = grant
        .key_usages()
        .iter()
        .map(|k| match k {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
        })
        .collect();
    params.extended_key_usages = grant
        .extended_key_usages()
        .iter()
        .map(|e| match e {
            ExtendedKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    Ok(params)
}

/// The record of a presented client certificate, checked against it: recorded, byte for byte
/// the certificate presented, not revoked.
fn recorded_as_presented(
    record: Option<CertificateRecord>,
    serial: String,
    der: &[u8],
) -> Result<CertificateRecord, AuthorityError> {
    let record = record.ok_or_else(|| AuthorityError::ClientCertificateUnknown {
        serial: serial.clone(),
    })?;
    let recorded = pki::pem_certificates(&record.pem)?;
    if recorded.first().map(Vec::as_slice) != Some(der) {
        return Err(AuthorityError::ClientCertificateUnknown { serial });
    }
    if record.status == CertificateStatus::Revoked {
        return Err(AuthorityError::ClientCertificateRevoked { serial });
    }
    Ok(record)
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
}
