//! The records the store takes and gives back: CA generations, certificates, tokens, audit
//! events, node reports. Plain data; no SQL.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;

use crate::names::{NodeIdentity, NodeName};

/// What a database's own consistency check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Integrity {
    Sound,
    /// The problems it reported.
    Damaged(Vec<String>),
}

/// Lifecycle state of a CA generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    Next,
    Active,
    Retired,
}

impl GenerationState {
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationState::Next => "next",
            GenerationState::Active => "active",
            GenerationState::Retired => "retired",
        }
    }
}

impl FromStr for GenerationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(Self::Next),
            "active" => Ok(Self::Active),
            "retired" => Ok(Self::Retired),
            other => Err(format!("unknown generation state {other:?}")),
        }
    }
}

/// A CA generation, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationRecord {
    pub id: i64,
    pub state: GenerationState,
    pub key_type: String,
    pub cert_pem: String,
    pub fingerprint: String,
    pub key_file: String,
    pub imported: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// When it started signing (a generation in `next` that has this set is retiring).
    pub activated_at: Option<OffsetDateTime>,
    pub retired_at: Option<OffsetDateTime>,
    /// When it was created (by `init` or `ca rotate start`).
    pub created_at: OffsetDateTime,
    /// For a generation a rotation introduced: its CA name and key certified by the generation
    /// that signed when it was created (PEM). Clients pinned to the old CA follow it.
    pub endorsement_pem: Option<String>,
    /// The generation's key (sealed with the passphrase) when the database holds it: on
    /// PostgreSQL, so that every server sharing the database can sign. None: the file
    /// `key_file` in the data dir holds it.
    pub key_pem: Option<String>,
}

impl GenerationRecord {
    /// The generation's CA certificate, DER.
    pub fn cert_der(&self) -> Option<Vec<u8>> {
        crate::pki::pem_certificates(&self.cert_pem)
            .ok()?
            .into_iter()
            .next()
    }
}

/// Whether a certificate may still be used; `expired` is derived from `not_after` when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateStatus {
    Valid,
    Revoked,
    Expired,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Valid => "valid",
            CertificateStatus::Revoked => "revoked",
            CertificateStatus::Expired => "expired",
        }
    }
}

/// Where a certificate stands, as an operator reads it: [`CertificateStatus`] refined by what
/// came after it. Revoked and expired come first; a certificate whose CA generation is retired is
/// `retired` (nothing trusts it any more); one for which a newer certificate of the same node and
/// profile exists is `superseded`; else `valid` (the one in use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateState {
    Valid,
    Superseded,
    Retired,
    Revoked,
    Expired,
}

impl CertificateState {
    pub const ALL: [CertificateState; 5] = [
        Self::Valid,
        Self::Superseded,
        Self::Retired,
        Self::Revoked,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Superseded => "superseded",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub(super) fn of(status: CertificateStatus, ca_retired: bool, superseded: bool) -> Self {
        match status {
            CertificateStatus::Revoked => Self::Revoked,
            CertificateStatus::Expired => Self::Expired,
            CertificateStatus::Valid if ca_retired => Self::Retired,
            CertificateStatus::Valid if superseded => Self::Superseded,
            CertificateStatus::Valid => Self::Valid,
        }
    }
}

impl FromStr for CertificateState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (known: {})",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

impl FromStr for CertificateStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(Self::Valid),
            "revoked" => Ok(Self::Revoked),
            "expired" => Ok(Self::Expired),
            other => Err(format!(
                "unknown status {other:?} (known: valid, revoked, expired)"
            )),
        }
    }
}

/// An issued certificate as stored.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CertificateRecord {
    pub serial: String,
    pub ca_generation: i64,
    pub profile: String,
    pub node: String,
    pub subject: String,
    pub common_name: String,
    pub sans: Vec<String>,
    pub key_type: String,
    pub public_key_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub status: CertificateStatus,
    /// What `list` shows: the status refined by later certificates and retired generations.
    pub state: CertificateState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub renewed_from: Option<String>,
    pub pem: String,
}

/// A certificate about to be handed out.
#[derive(Clone, Debug)]
pub struct NewCertificate {
    pub serial: String,
    pub ca_generation: i64,
    pub profile: String,
    pub node: NodeName,
    pub subject: String,
    pub common_name: String,
    pub sans: Vec<String>,
    pub key_type: String,
    pub public_key_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub pem: String,
    pub issued_at: OffsetDateTime,
    pub renewed_from: Option<String>,
}

/// One line of the audit trail.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub node: Option<String>,
    pub serial: Option<String>,
    pub detail: String,
}

/// Which certificates to list.
#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    pub node: Option<String>,
    pub profile: Option<String>,
    pub status: Option<CertificateStatus>,
    /// Only certificates in this state (see [`CertificateState`]).
    pub state: Option<CertificateState>,
    /// Only valid certificates (not revoked, not yet expired) that expire before this moment.
    pub expiring_before: Option<OffsetDateTime>,
    /// Start after this certificate (the last of the previous page).
    pub after: Option<CertificateCursor>,
    /// At most this many (at most [`super::MAX_PAGE`], which is also the default).
    pub limit: Option<u32>,
}

/// Where a page of certificates ends: listings run in (expiry, serial) order, so a page starts
/// right after the last certificate of the one before, whatever was added meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateCursor {
    pub not_after: OffsetDateTime,
    pub serial: String,
}

impl CertificateCursor {
    /// The cursor after `record`.
    pub fn after(record: &CertificateRecord) -> Self {
        Self {
            not_after: record.not_after,
            serial: record.serial.clone(),
        }
    }
}

impl std::fmt::Display for CertificateCursor {
    /// `UNIXSECONDS.SERIAL`, what the API's `after` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.not_after.unix_timestamp(), self.serial)
    }
}

impl FromStr for CertificateCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a page cursor (expected the `next` of a previous page)");
        let (seconds, serial) = s.split_once('.').ok_or_else(bad)?;
        let seconds: i64 = seconds.parse().map_err(|_| bad())?;
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            not_after: OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| bad())?,
            serial: serial.to_ascii_lowercase(),
        })
    }
}

/// What a revocation did.
#[derive(Clone, Debug)]
pub enum RevokeOutcome {
    Revoked(Box<CertificateRecord>),
    AlreadyRevoked(Box<CertificateRecord>),
    NotFound,
}

/// A node and profile's current certificate, as `current_certificates` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentCertificate {
    pub node: String,
    pub profile: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub ca_generation: i64,
}

/// What rotation status needs of an agent's report: its bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    pub node: String,
    /// Fingerprints of the CAs in the bundle the agent installed.
    pub installed_bundle: Vec<String>,
    /// Fingerprints of the CAs etcd was started with.
    pub running_bundle: Vec<String>,
    pub reported_at: OffsetDateTime,
}

/// What the fleet needs of an agent's report: not the bundles rotation status reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetReport {
    pub node: String,
    /// Profile -> serial installed.
    pub certificates: BTreeMap<String, String>,
    pub reported_at: OffsetDateTime,
    /// The agent's health and what its member serves (JSON, as [`NodeReport::details`]).
    pub details: String,
}

/// What the fleet needs of a certificate to mark it (no PEM, no later-certificate lookups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateDates {
    pub serial: String,
    pub ca_generation: i64,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub issued_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A CRL as published for one scope (`etcd`, or `generation:N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedCrl {
    pub scope: String,
    /// The generation that signed it.
    pub generation: i64,
    pub number: i64,
    /// The revocation epoch it reflects.
    pub epoch: i64,
    pub this_update: OffsetDateTime,
    pub der: Vec<u8>,
}

/// A revoked certificate as a CRL lists it.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    pub serial: String,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<String>,
}

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Bearer token for the admin API.
    Admin,
    /// Single-use token a node enrolls with.
    Bootstrap,
}

impl TokenKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Bootstrap => "bootstrap",
        }
    }
}

/// A token as stored: the hash of its secret, never the secret.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub secret_sha256: Vec<u8>,
    /// The node identity a bootstrap token is bound to.
    pub identity: Option<NodeIdentity>,
    pub profiles: Vec<String>,
    pub common_name: Option<String>,
    pub allow_privileged_common_name: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub used_at: Option<OffsetDateTime>,
    pub request_sha256: Option<String>,
    pub issued_serials: BTreeMap<String, String>,
    /// When an admin revoked it (admin tokens).
    pub revoked_at: Option<OffsetDateTime>,
}

/// What an agent reports about its node: the bundle it installed, the bundle etcd was last
/// restarted with, and its certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub installed_bundle: Vec<String>,
    pub running_bundle: Vec<String>,
    pub certificates: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
    /// The agent's health and what its member serves: JSON the API reads and writes (the
    /// store keeps it as given).
    #[serde(default)]
    pub details: String,
}

/// A completed enrollment to record: the token is consumed, the certificates stored.
#[derive(Clone, Debug)]
pub struct EnrollmentRecord<'a> {
    pub token_id: &'a str,
    pub request_sha256: &'a str,
    pub identity: &'a NodeIdentity,
    pub certificates: &'a [NewCertificate],
    pub events: &'a [AuditEvent],
    pub at: OffsetDateTime,
}

/// An issued certificate to record: the node identity it was issued for, the certificate, and
/// its audit event.
#[derive(Clone, Debug)]
pub struct IssueRecord {
    pub node: NodeIdentity,
    pub cert: NewCertificate,
    pub event: AuditEvent,
}
