//! Everything the authority can refuse or fail with, one variant per cause (the API maps
//! each to its status in `api::error`).

use super::*;

/// Everything the authority refuses (the caller's to change) or fails with ([`Fault`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{} already holds a CA ({} exists); nothing was changed", dir.display(), found.display())]
    AlreadyInitialised { dir: PathBuf, found: PathBuf },
    #[error("{} is not empty and holds no CA; choose an empty or new directory", dir.display())]
    DirNotEmpty { dir: PathBuf },
    #[error("{} holds no CA (no etcd-ca.db); create one with `etcd-ca init --data-dir {}`", dir.display(), dir.display())]
    NotInitialised { dir: PathBuf },
    #[error("the CA in {} was moved to the database {to}: use --database URL (this SQLite copy is kept only as it was)", dir.display())]
    Moved { dir: PathBuf, to: String },
    #[error("a new policy was published for the servers on this database; this server signs nothing until it is restarted with it (another server may be)")]
    PolicyChanged,
    #[error("a CA key kept in a shared database must be sealed with a passphrase: give --passphrase-file FILE (a new file gets a random passphrase), not --insecure-unencrypted-key; `migrate --from-sqlite` seals an unencrypted key with it on the way")]
    UnsealedKeyInDatabase,
    #[error("the database {database} holds no CA; create one with `etcd-ca init --database URL --data-dir DIR`, or move a SQLite CA there with `etcd-ca migrate --database URL --from-sqlite DIR`")]
    DatabaseNotInitialised { database: String },
    #[error("the database {database} already holds a CA (generation {generation}); start more servers on it with `etcd-ca serve --database URL`")]
    DatabaseInitialised { database: String, generation: i64 },
    #[error("the policy in {} (sha256 {file_sha256}) is not the one the servers on this database sign under (sha256 {database_sha256}); remove the file to take the database's, or publish this one with `etcd-ca migrate --database URL --policy {}` and restart every server", path.display(), path.display())]
    PolicyMismatch {
        path: PathBuf,
        file_sha256: String,
        database_sha256: String,
    },
    #[error("cannot adopt the CA: {reason}")]
    Import { reason: String },
    #[error("cannot restore: {reason}")]
    Restore { reason: String },
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
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Not the caller's doing: the CA's own data, keys, disk or randomness failed.
    #[error(transparent)]
    Fault(#[from] Fault),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl AuthorityError {
    /// The node and the serial a refusal is about, when it names them (for the audit trail's
    /// columns).
    pub fn subject(&self) -> (Option<&str>, Option<&str>) {
        use AuthorityError as E;
        match self {
            E::AlreadyRevoked { serial, .. }
            | E::UnknownSerial { serial }
            | E::ClientCertificateRevoked { serial }
            | E::ClientCertificateUnknown { serial } => (None, Some(serial)),
            E::NodeMismatch { asked: node, .. }
            | E::NodeReserved { node }
            | E::NodeNamesRequired { node, .. }
            | E::MemberCertificateRequired { node, .. } => (Some(node), None),
            _ => (None, None),
        }
    }
}

/// An internal fault: nothing the caller sent caused it, and nothing it can change fixes it.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
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
    #[error("signing {what} failed: {source}")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the serving certificate cannot be used for TLS: {0}")]
    ServingTls(String),
    #[error("the system random number generator failed")]
    Random,
    #[error("CA key: {0}")]
    Passphrase(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        AuthorityError::Fault(Fault::Store(e))
    }
}

impl From<FsError> for AuthorityError {
    fn from(e: FsError) -> Self {
        AuthorityError::Fault(Fault::Fs(e))
    }
}
