//! The store: every SQL statement etcd-ca runs, over one SQLite database.
//!
//! It records CA generations, registered nodes, issued certificates and the audit trail. It
//! knows nothing of policy, signing or HTTP; callers hand it finished records. The database runs
//! in WAL mode with `synchronous = FULL`, so a committed write survives a crash, and a
//! certificate and its audit event are written in one transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::names::{NodeIdentity, NodeName};

/// A `SELECT` of every certificate column (then any `$extra` columns) followed by `$tail`, as
/// one static string.
macro_rules! select_certificates {
    ($tail:literal) => {
        select_certificates!("", $tail)
    };
    ($extra:literal, $tail:literal) => {
        concat!(
            "SELECT serial, ca_generation, profile, node, subject, common_name, sans, key_type,
                    public_key_sha256, not_before, not_after, pem, status, revoked_at,
                    revocation_reason, issued_at, renewed_from,
                    EXISTS (SELECT 1 FROM certificates AS newer
                             WHERE newer.node = certificates.node
                               AND newer.profile = certificates.profile
                               AND newer.status = 'valid'
                               AND newer.rowid > certificates.rowid) AS superseded,
                    EXISTS (SELECT 1 FROM ca_generations AS g
                             WHERE g.id = certificates.ca_generation
                               AND g.state = 'retired') AS ca_retired",
            $extra,
            " FROM certificates ",
            $tail
        )
    };
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate database {}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("the database is closed (the server is shutting down)")]
    Closed,
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

    fn of(status: CertificateStatus, ca_retired: bool, superseded: bool) -> Self {
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
}

/// What a revocation did.
#[derive(Clone, Debug)]
pub enum RevokeOutcome {
    Revoked(Box<CertificateRecord>),
    AlreadyRevoked(Box<CertificateRecord>),
    NotFound,
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
    fn as_str(self) -> &'static str {
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

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Issued certificates go through the group committer.
    committer: tokio::sync::mpsc::Sender<PendingIssue>,
    /// Set by [`Store::close`]: the committer gives its connection back to the pool.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

/// An issued certificate to record: the node identity it was issued for, the certificate, and
/// its audit event.
#[derive(Clone, Debug)]
pub struct IssueRecord {
    pub node: NodeIdentity,
    pub cert: NewCertificate,
    pub event: AuditEvent,
}

/// Issued certificates waiting for their group commit (recorded all or none), and who to tell
/// when they are durable.
#[derive(Debug)]
struct PendingIssue {
    issues: Vec<IssueRecord>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// The most writes one group commit takes.
const MAX_GROUP: usize = 512;

/// Group commit: takes every issued certificate waiting at that moment, writes them all in one
/// transaction (one fsync), then answers each. While one group commits, the next one gathers.
///
/// The committer keeps one connection, busy or idle, until [`Store::close`]: SQLite drops a
/// connection's page cache whenever another connection wrote, so taking whichever connection
/// the pool has free would re-read the index pages for every commit (`cargo bench --bench
/// store`: a lone issuance's commit took 290-325 µs that way, 167-193 µs on its own
/// connection, in alternating runs). After each commit it nudges the checkpointer; when the
/// checkpointer has caught up, it copies the few pages committed since, on its own connection,
/// so that its next group starts the WAL over (see [`checkpoint_loop`]).
async fn commit_loop(
    pool: SqlitePool,
    mut pending: tokio::sync::mpsc::Receiver<PendingIssue>,
    nudge_checkpointer: tokio::sync::mpsc::Sender<()>,
    checkpoint_caught_up: Arc<AtomicBool>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut writer: Option<PoolConnection<Sqlite>> = None;
    loop {
        let first = match pending.try_recv() {
            Ok(first) => first,
            Err(TryRecvError::Empty) => {
                let arrived = if writer.is_some() {
                    tokio::select! {
                        arrived = pending.recv() => arrived,
                        _ = closing.changed() => {
                            writer = None;
                            pending.recv().await
                        }
                    }
                } else {
                    pending.recv().await
                };
                match arrived {
                    Some(first) => first,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut conn = match writer.take() {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => conn,
                Err(e) => {
                    let reason = e.to_string();
                    for p in group {
                        let _ = p.done.send(Err(StoreError::Unavailable(reason.clone())));
                    }
                    continue;
                }
            },
        };
        if checkpoint_caught_up.swap(false, Ordering::AcqRel) {
            finish_checkpoint(&mut conn).await;
        }
        let started = std::time::Instant::now();
        let committed = commit_group(&mut conn, &group).await;
        let failed = committed.is_err();
        tracing::trace!(
            size = group.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match committed {
            Ok(()) => {
                for p in group {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(p) = group.pop() {
                    let _ = p.done.send(Err(e));
                }
            }
            Err(_) => {
                // One bad write must not fail its neighbours: commit them one by one.
                for p in group {
                    let result = commit_group(&mut conn, std::slice::from_ref(&p)).await;
                    let _ = p.done.send(result);
                }
            }
        }
        // After a failure the connection may still be inside the group's transaction (a
        // ROLLBACK can fail too, on a full disk): a fresh one takes the next group.
        if failed {
            let _ = conn.close().await;
        } else if !*closing.borrow() {
            writer = Some(conn);
        }
        // A nudge already waiting covers this commit too.
        let _ = nudge_checkpointer.try_send(());
    }
}

/// How long the checkpointer lets commits pile up before it copies the WAL back into the
/// database: the pages a burst rewrote many times (the last leaf of each table and index) are
/// copied once.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(100);

/// With no nudge, the checkpointer still runs this often, for writes outside the committer.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// Copies the WAL back into the database file, off the commit path.
///
/// Every connection runs with `wal_autocheckpoint = 0`: with SQLite's default the commit that
/// crosses 1,000 WAL pages copies them all and syncs the database file, holding up every
/// caller in its group for several milliseconds. Here a PASSIVE checkpoint runs on its own
/// connection beside the committer, 100 ms after a commit. That alone would let the WAL grow
/// for ever under steady load (SQLite starts the WAL over only when a write begins with every
/// page already copied, and on another connection that moment never comes while commits
/// arrive every millisecond), and appending to a growing file makes every fsync dearer than
/// rewriting one. So once a checkpoint has copied all it saw, the committer copies the few
/// pages committed since (a short checkpoint of its own before its next group) and that group
/// starts the WAL over. Ends with the committer.
async fn checkpoint_loop(
    pool: SqlitePool,
    mut nudges: tokio::sync::mpsc::Receiver<()>,
    caught_up: Arc<AtomicBool>,
) {
    loop {
        match tokio::time::timeout(CHECKPOINT_IDLE, nudges.recv()).await {
            Ok(None) => break,
            Ok(Some(())) => tokio::time::sleep(CHECKPOINT_DELAY).await,
            Err(_idle) => {}
        }
        if pool.is_closed() {
            break;
        }
        match passive_checkpoint(&pool, "checkpoint").await {
            Ok(true) => caught_up.store(true, Ordering::Release),
            Ok(false) => {}
            Err(e) if pool.is_closed() => {
                tracing::debug!(error = %e, "checkpointer stops: the database is closed");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
        }
    }
}

/// The committer's short checkpoint: copies what was committed since the checkpointer's.
async fn finish_checkpoint(conn: &mut SqliteConnection) {
    if let Err(e) = passive_checkpoint(&mut *conn, "committer's checkpoint").await {
        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
    }
}

/// Runs a PASSIVE checkpoint, traced as `what`; true when it copied every page in the WAL.
async fn passive_checkpoint<'c>(
    on: impl sqlx::Executor<'c, Database = Sqlite>,
    what: &'static str,
) -> Result<bool, sqlx::Error> {
    let started = std::time::Instant::now();
    let (busy, wal_pages, copied) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(on)
            .await?;
    tracing::trace!(
        busy,
        wal_pages,
        copied,
        micros = started.elapsed().as_micros() as u64,
        "{what}"
    );
    Ok(wal_pages > 0 && copied == wal_pages)
}

/// Writes a group in one transaction (one fsync), sent to SQLite's thread as one script:
/// `BEGIN`, the multi-row inserts, `COMMIT`. Each hand-over to that thread costs a wake-up that
/// waits for a core on a busy machine, and the group's commit latency is what a waiting caller
/// feels, so there is exactly one. If any statement fails the transaction is rolled back.
async fn commit_group(
    conn: &mut SqliteConnection,
    group: &[PendingIssue],
) -> Result<(), StoreError> {
    let issues = || group.iter().flat_map(|p| &p.issues);
    let nodes: Vec<_> = issues().map(|i| (&i.node, i.cert.issued_at)).collect();
    let certs: Vec<_> = issues().map(|i| &i.cert).collect();
    let events: Vec<_> = issues().map(|i| &i.event).collect();
    let mut sql = Sql::new("BEGIN IMMEDIATE;\n");
    push_node_upserts(&mut sql, &nodes);
    push_certificate_inserts(&mut sql, &certs);
    push_audit_inserts(&mut sql, &events);
    sql.push("COMMIT;");
    match sql.build().execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // Nothing of the group may stay; "no transaction is active" here is fine too.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e.into())
        }
    }
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(table: &'static str, secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

impl Store {
    /// Creates the database file and applies every migration.
    pub async fn create(path: &Path) -> Result<Self, StoreError> {
        Self::connect(path, true).await
    }

    /// Opens an existing database, applying any migrations a newer etcd-ca added.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::connect(path, false).await
    }

    async fn connect(path: &Path, create: bool) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoints run in `checkpoint_loop`, never inside a commit.
            .pragma("wal_autocheckpoint", "0")
            // A group commit's multi-row inserts keep a statement journal; a large group's
            // spilled to a file in /var/tmp (created and deleted per commit) with the default.
            .pragma("temp_store", "MEMORY");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file, not a socket: nothing to probe before each use (the probe is one
            // more round trip to SQLite's thread for every read).
            .test_before_acquire(false)
            // A connection given back inside a transaction (a COMMIT that failed, say on a full
            // disk) would keep the write lock, and every later write would wait and fail
            // "database is locked" until a restart: close it instead (closing rolls back).
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        let (committer, pending) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        let (nudge, nudges) = tokio::sync::mpsc::channel(1);
        let caught_up = Arc::new(AtomicBool::new(false));
        let (closing, closing_seen) = tokio::sync::watch::channel(false);
        tokio::spawn(commit_loop(
            pool.clone(),
            pending,
            nudge,
            caught_up.clone(),
            closing_seen,
        ));
        tokio::spawn(checkpoint_loop(pool.clone(), nudges, caught_up));
        Ok(Self {
            pool,
            committer,
            closing: Arc::new(closing),
        })
    }

    /// A consistent copy of the live database at `path` (SQLite `VACUUM INTO`: one read
    /// transaction, so writers keep going and the copy is a single point in time).
    pub async fn backup_into(&self, path: &Path) -> Result<(), StoreError> {
        let target = path.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// SQLite's own consistency check: "ok" when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.join("; "))
    }

    /// How many tokens exist, and how many were used.
    pub async fn token_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, COUNT(used_at) AS used FROM tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("n")?, row.try_get("used")?))
    }

    /// Certificates recorded, and how many distinct serials they have.
    pub async fn certificate_counts(&self) -> Result<(i64, i64), StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n, COUNT(DISTINCT serial) AS d FROM certificates")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.try_get("n")?, row.try_get("d")?))
    }

    /// Closes every connection, checkpointing the WAL so the file is whole on its own.
    pub async fn close(&self) {
        self.closing.send_replace(true);
        self.pool.close().await;
    }

    pub async fn insert_generation(&self, g: &GenerationRecord) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_generation(&mut tx, g).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every CA generation, oldest first.
    pub async fn generations(&self) -> Result<Vec<GenerationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
                    not_after, activated_at, retired_at, created_at, endorsement_pem
             FROM ca_generations ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(generation_from_row).collect()
    }

    /// A rotation step: moves generations between states in one transaction with its audit
    /// event, each `(id, from, to)` in order (at most one generation is active at a time), and
    /// only if each is still in state `from`. Returns false, changing nothing, when another step
    /// got there first (compare-and-set: of two concurrent steps exactly one wins).
    pub async fn set_generation_states(
        &self,
        changes: &[(i64, GenerationState, GenerationState)],
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        for (id, from, to) in changes {
            let updated = sqlx::query(
                "UPDATE ca_generations SET state = ?1,
                   activated_at = CASE WHEN ?1 = 'active' THEN ?2 ELSE activated_at END,
                   retired_at = CASE WHEN ?1 = 'retired' THEN ?2 ELSE retired_at END
                 WHERE id = ?3 AND state = ?4",
            )
            .bind(to.as_str())
            .bind(ts(event.at))
            .bind(id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A transaction that holds the write lock from its first statement. SQLite's default
    /// (deferred) transaction that reads and then writes fails at once with "database is
    /// locked" (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out) when another writer
    /// committed in between; every read-then-write here (compare-and-set steps, leases, token
    /// use, revocation) therefore starts immediate and waits its turn instead.
    async fn write_transaction(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Stores the generation a rotation starts, with its audit event, only if no rotation is in
    /// progress (no `next` generation) and its id follows the last one. Returns false, changing
    /// nothing, when another start got there first.
    pub async fn add_generation(
        &self,
        g: &GenerationRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let (in_progress, last): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state = 'next'), COALESCE(MAX(id), 0) FROM ca_generations",
        )
        .fetch_one(&mut *tx)
        .await?;
        if in_progress != 0 || g.id != last + 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_generation(&mut tx, g).await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What an agent last reported.
    pub async fn upsert_node_report(&self, report: &NodeReport) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO node_reports (node, installed_bundle, running_bundle, certificates, reported_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (node) DO UPDATE SET installed_bundle = excluded.installed_bundle,
               running_bundle = excluded.running_bundle, certificates = excluded.certificates,
               reported_at = excluded.reported_at",
        )
        .bind(&report.node)
        .bind(to_json(&report.installed_bundle))
        .bind(to_json(&report.running_bundle))
        .bind(to_json(&report.certificates))
        .bind(ts(report.reported_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn node_reports(&self) -> Result<Vec<NodeReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, installed_bundle, running_bundle, certificates, reported_at
             FROM node_reports ORDER BY node",
        )
        .fetch_all(&self.pool)
        .await?;
        let corrupt = |detail: String| StoreError::Corrupt {
            table: "node_reports",
            detail,
        };
        rows.iter()
            .map(|r| {
                let json = |c: &str| -> Result<String, StoreError> { Ok(r.try_get(c)?) };
                Ok(NodeReport {
                    node: r.try_get("node")?,
                    installed_bundle: serde_json::from_str(&json("installed_bundle")?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    running_bundle: serde_json::from_str(&json("running_bundle")?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    certificates: serde_json::from_str(&json("certificates")?)
                        .map_err(|e| corrupt(e.to_string()))?,
                    reported_at: from_ts("node_reports", r.try_get("reported_at")?)?,
                })
            })
            .collect()
    }

    /// For each node and profile, the generation that signed its newest valid certificate
    /// (newest by insertion order: several may be issued within one second).
    pub async fn signing_generations(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.node, c.profile, c.ca_generation FROM certificates c
             WHERE c.rowid = (SELECT MAX(d.rowid) FROM certificates d
                              WHERE d.node = c.node AND d.profile = c.profile
                                AND d.status = 'valid' AND d.not_after > ?1)
             ORDER BY c.node, c.profile",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("node")?,
                    r.try_get("profile")?,
                    r.try_get("ca_generation")?,
                ))
            })
            .collect()
    }

    /// Takes the restart lease for `node` until `expires_at`, if it is free, expired or already
    /// held by `node`. Returns who holds it afterwards.
    pub async fn take_restart_lease(
        &self,
        node: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "INSERT INTO restart_lease (id, node, expires_at) VALUES (1, ?1, ?3)
             ON CONFLICT (id) DO UPDATE SET node = ?1, expires_at = ?3
             WHERE restart_lease.node = ?1 OR restart_lease.expires_at <= ?2",
        )
        .bind(node)
        .bind(ts(now))
        .bind(ts(expires_at))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT node, expires_at FROM restart_lease WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            row.try_get("node")?,
            from_ts("restart_lease", row.try_get("expires_at")?)?,
        ))
    }

    /// Gives the lease back if `node` holds it.
    pub async fn release_restart_lease(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM restart_lease WHERE id = 1 AND node = ?")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds the restart lease now, if anyone.
    pub async fn restart_lease(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        let row = sqlx::query(
            "SELECT node, expires_at FROM restart_lease WHERE id = 1 AND expires_at > ?",
        )
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("node")?,
                from_ts("restart_lease", r.try_get("expires_at")?)?,
            ))
        })
        .transpose()
    }

    /// The registered identity of a node, if any.
    pub async fn node(&self, name: &NodeName) -> Result<Option<NodeIdentity>, StoreError> {
        let row = sqlx::query("SELECT ips, dns_names FROM nodes WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| node_from_row(&row, name.clone())).transpose()
    }

    /// The certificates with these serials (those that exist, in no particular order), each
    /// with its node's registered identity when there is one: one read for a whole node.
    pub async fn certificates_by_serial(
        &self,
        serials: &[String],
        now: OffsetDateTime,
    ) -> Result<Vec<(CertificateRecord, Option<NodeIdentity>)>, StoreError> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(select_certificates!(
            ", nodes.ips, nodes.dns_names",
            "LEFT JOIN nodes ON nodes.name = certificates.node WHERE serial IN "
        ));
        sql.push("(");
        let mut list = sql.separated(", ");
        for serial in serials {
            list.push_bind(serial.as_str());
        }
        list.push_unseparated(")");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let cert = certificate_from_row(row, now)?;
                let registered: Option<String> = row.try_get("ips")?;
                let identity = match registered {
                    Some(_) => {
                        let name = cert.node.parse().map_err(|e: crate::names::NameError| {
                            StoreError::Corrupt {
                                table: "certificates",
                                detail: e.to_string(),
                            }
                        })?;
                        Some(node_from_row(row, name)?)
                    }
                    None => None,
                };
                Ok((cert, identity))
            })
            .collect()
    }

    /// Records an issued certificate, the node identity it was issued for and the audit event,
    /// in one transaction (shared with whatever else is being issued at that moment: group
    /// commit). Returns only once the transaction is durable.
    pub async fn record_issue(
        &self,
        node: &NodeIdentity,
        cert: &NewCertificate,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.record_issues(vec![IssueRecord {
            node: node.clone(),
            cert: cert.clone(),
            event: event.clone(),
        }])
        .await
    }

    /// Records several issued certificates all or none (a node renewing its certificates
    /// together), through the same group commit as [`Store::record_issue`].
    pub async fn record_issues(&self, issues: Vec<IssueRecord>) -> Result<(), StoreError> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let pending = PendingIssue { issues, done };
        self.committer
            .send(pending)
            .await
            .map_err(|_| StoreError::Closed)?;
        committed.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn certificate(
        &self,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let row = sqlx::query(select_certificates!("WHERE serial = ?"))
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| certificate_from_row(&r, now)).transpose()
    }

    /// Certificates matching the filter, soonest expiry first.
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        // The state's validity part in SQL, the refinement (superseded, retired) after.
        let status = filter
            .status
            .or(filter.state.map(|s| match s {
                CertificateState::Revoked => CertificateStatus::Revoked,
                CertificateState::Expired => CertificateStatus::Expired,
                _ => CertificateStatus::Valid,
            }))
            .map(|s| s.as_str());
        let rows = sqlx::query(select_certificates!(
            "WHERE (?1 IS NULL OR node = ?1)
               AND (?2 IS NULL OR profile = ?2)
               AND (?3 IS NULL
                    OR (?3 = 'revoked' AND status = 'revoked')
                    OR (?3 = 'valid' AND status = 'valid' AND not_after > ?4)
                    OR (?3 = 'expired' AND status = 'valid' AND not_after <= ?4))
               AND (?5 IS NULL OR (status = 'valid' AND not_after > ?4 AND not_after <= ?5))
             ORDER BY not_after, serial"
        ))
        .bind(filter.node.as_deref())
        .bind(filter.profile.as_deref())
        .bind(status)
        .bind(ts(now))
        .bind(filter.expiring_before.map(ts))
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = certificate_from_row(row, now)?;
            if filter.state.is_none_or(|s| s == record.state) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Marks a certificate revoked and records the audit event, in one transaction.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: &str,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.write_transaction().await?;
        let updated = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
             WHERE serial = ? AND status = 'valid'",
        )
        .bind(ts(event.at))
        .bind(reason)
        .bind(serial)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 1 {
            insert_audit(&mut tx, event).await?;
        }
        let row = sqlx::query(select_certificates!("WHERE serial = ?"))
            .bind(serial)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(match row {
            None => RevokeOutcome::NotFound,
            Some(row) => {
                let record = Box::new(certificate_from_row(&row, event.at)?);
                if updated == 1 {
                    RevokeOutcome::Revoked(record)
                } else {
                    RevokeOutcome::AlreadyRevoked(record)
                }
            }
        })
    }

    /// Revoked certificates that have not expired yet, of every generation: what etcd's CRL
    /// must list.
    pub async fn revoked_unexpired(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        self.revoked_unexpired_issued_by(None, now).await
    }

    /// Revoked certificates that have not expired yet and that `generation` issued: what that
    /// generation's own CRL lists.
    pub async fn revoked_unexpired_of_generation(
        &self,
        generation: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        self.revoked_unexpired_issued_by(Some(generation), now)
            .await
    }

    async fn revoked_unexpired_issued_by(
        &self,
        generation: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates
             WHERE status = 'revoked' AND not_after > ?1
               AND (?2 IS NULL OR ca_generation = ?2)
             ORDER BY revoked_at, serial",
        )
        .bind(ts(now))
        .bind(generation)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RevokedEntry {
                    serial: row.try_get("serial")?,
                    revoked_at: from_ts("certificates", row.try_get("revoked_at")?)?,
                    reason: row.try_get("revocation_reason")?,
                })
            })
            .collect()
    }

    /// The next CRL number of a generation (monotonic, starting at 1).
    pub async fn next_crl_number(&self, generation: i64) -> Result<i64, StoreError> {
        let number: i64 = sqlx::query_scalar(
            "UPDATE ca_generations SET crl_number = crl_number + 1 WHERE id = ? RETURNING crl_number",
        )
        .bind(generation)
        .fetch_one(&self.pool)
        .await?;
        Ok(number)
    }

    /// Stores a token (and registers the node a bootstrap token is bound to) with its audit event.
    pub async fn insert_token(
        &self,
        token: &TokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        if let Some(identity) = &token.identity {
            upsert_node(&mut tx, identity, token.created_at).await?;
        }
        sqlx::query(
            "INSERT INTO tokens (id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                                 allow_privileged_common_name, created_by, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(token.kind.as_str())
        .bind(&token.secret_sha256)
        .bind(token.identity.as_ref().map(|i| i.name.as_str()))
        .bind(to_json(&token.identity.as_ref().map(|i| &i.ips)))
        .bind(to_json(&token.identity.as_ref().map(|i| &i.dns_names)))
        .bind(to_json(&token.profiles))
        .bind(&token.common_name)
        .bind(token.allow_privileged_common_name)
        .bind(&token.created_by)
        .bind(ts(token.created_at))
        .bind(token.expires_at.map(ts))
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                    allow_privileged_common_name, created_by, created_at, expires_at, used_at,
                    request_sha256, issued_serials, revoked_at
             FROM tokens WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    /// Every admin token, oldest first.
    pub async fn admin_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                    allow_privileged_common_name, created_by, created_at, expires_at, used_at,
                    request_sha256, issued_serials, revoked_at
             FROM tokens WHERE kind = 'admin' ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes an admin token with its audit event. False when there is no such admin token
    /// or it was already revoked (nothing written).
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND kind = 'admin' AND revoked_at IS NULL",
        )
        .bind(ts(event.at))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoked != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Changes whenever an admin token is revoked (by any process).
    pub async fn admin_token_revocations(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(revoked_at) AS n, COALESCE(MAX(revoked_at), 0) AS latest
             FROM tokens WHERE kind = 'admin'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("latest")?))
    }

    /// Consumes a bootstrap token and records the certificates it paid for, in one transaction.
    /// Returns false (and writes nothing) when the token was already used.
    pub async fn complete_enrollment(&self, e: &EnrollmentRecord<'_>) -> Result<bool, StoreError> {
        let serials: BTreeMap<&str, &str> = e
            .certificates
            .iter()
            .map(|c| (c.profile.as_str(), c.serial.as_str()))
            .collect();
        let mut tx = self.write_transaction().await?;
        let consumed = sqlx::query(
            "UPDATE tokens SET used_at = ?, request_sha256 = ?, issued_serials = ?
             WHERE id = ? AND used_at IS NULL",
        )
        .bind(ts(e.at))
        .bind(e.request_sha256)
        .bind(to_json(&serials))
        .bind(e.token_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if consumed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        upsert_node(&mut tx, e.identity, e.at).await?;
        insert_certificates(&mut tx, &e.certificates.iter().collect::<Vec<_>>()).await?;
        for event in e.events {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A value that changes whenever a certificate is revoked: the CRL is rebuilt when it does.
    pub async fn revocation_epoch(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(revoked_at), 0) AS latest
             FROM certificates WHERE status = 'revoked'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("latest")?))
    }

    /// For each node and profile, when its last valid certificate expires.
    pub async fn expiry_by_node_and_profile(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, profile, MAX(not_after) AS not_after FROM certificates
             WHERE status = 'valid' AND not_after > ? GROUP BY node, profile ORDER BY node, profile",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("node")?,
                    r.try_get("profile")?,
                    from_ts("certificates", r.try_get("not_after")?)?,
                ))
            })
            .collect()
    }

    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The most recent audit events, oldest first.
    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, node, serial, detail FROM
               (SELECT * FROM audit_events ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    at: from_ts("audit_events", row.try_get("at")?)?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    node: row.try_get("node")?,
                    serial: row.try_get("serial")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}

/// The most rows one multi-row INSERT carries (a certificate row binds 14 values; SQLite
/// allows 32,766).
const ROWS_PER_INSERT: usize = 64;

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;
type Sql = sqlx::QueryBuilder<Sqlite>;

async fn insert_generation(tx: &mut Tx<'_>, g: &GenerationRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ca_generations
           (id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
            not_after, created_at, activated_at, endorsement_pem)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(g.id)
    .bind(g.state.as_str())
    .bind(&g.key_type)
    .bind(&g.cert_pem)
    .bind(&g.fingerprint)
    .bind(&g.key_file)
    .bind(g.imported)
    .bind(ts(g.not_before))
    .bind(ts(g.not_after))
    .bind(ts(g.created_at))
    .bind(g.activated_at.map(ts))
    .bind(&g.endorsement_pem)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_audit(tx: &mut Tx<'_>, event: &AuditEvent) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_audit_inserts(&mut sql, &[event]);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

async fn upsert_node(
    tx: &mut Tx<'_>,
    node: &NodeIdentity,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_node_upserts(&mut sql, &[(node, at)]);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

async fn insert_certificates(tx: &mut Tx<'_>, certs: &[&NewCertificate]) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_certificate_inserts(&mut sql, certs);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

/// Appends statements that add audit events, one per [`ROWS_PER_INSERT`] rows.
fn push_audit_inserts(sql: &mut Sql, events: &[&AuditEvent]) {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        sql.push("INSERT INTO audit_events (at, actor, action, node, serial, detail) ");
        sql.push_values(chunk, |mut row, event| {
            row.push_bind(ts(event.at))
                .push_bind(&event.actor)
                .push_bind(&event.action)
                .push_bind(&event.node)
                .push_bind(&event.serial)
                .push_bind(&event.detail);
        });
        sql.push(";\n");
    }
}

/// Appends statements that register nodes or update their names, one per [`ROWS_PER_INSERT`]
/// rows. A node whose names did not change is left alone; rows apply in order, so the last
/// identity wins.
fn push_node_upserts(sql: &mut Sql, nodes: &[(&NodeIdentity, OffsetDateTime)]) {
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        sql.push("INSERT INTO nodes (name, ips, dns_names, created_at, updated_at) ");
        sql.push_values(chunk, |mut row, (node, at)| {
            row.push_bind(node.name.as_str())
                .push_bind(to_json(&node.ips))
                .push_bind(to_json(&node.dns_names))
                .push_bind(ts(*at))
                .push_bind(ts(*at));
        });
        sql.push(
            " ON CONFLICT (name) DO UPDATE SET
               ips = excluded.ips, dns_names = excluded.dns_names, updated_at = excluded.updated_at
             WHERE ips != excluded.ips OR dns_names != excluded.dns_names;\n",
        );
    }
}

/// Appends statements that record certificates, one per [`ROWS_PER_INSERT`] rows.
fn push_certificate_inserts(sql: &mut Sql, certs: &[&NewCertificate]) {
    for chunk in certs.chunks(ROWS_PER_INSERT) {
        sql.push(
            "INSERT INTO certificates
               (serial, ca_generation, profile, node, subject, common_name, sans, key_type,
                public_key_sha256, not_before, not_after, pem, status, issued_at, renewed_from) ",
        );
        sql.push_values(chunk, |mut row, cert| {
            row.push_bind(&cert.serial)
                .push_bind(cert.ca_generation)
                .push_bind(&cert.profile)
                .push_bind(cert.node.as_str())
                .push_bind(&cert.subject)
                .push_bind(&cert.common_name)
                .push_bind(to_json(&cert.sans))
                .push_bind(&cert.key_type)
                .push_bind(&cert.public_key_sha256)
                .push_bind(ts(cert.not_before))
                .push_bind(ts(cert.not_after))
                .push_bind(&cert.pem)
                .push_bind("valid")
                .push_bind(ts(cert.issued_at))
                .push_bind(&cert.renewed_from);
        });
        sql.push(";\n");
    }
}

/// JSON for a column. Serialising vectors of strings and addresses cannot fail.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "tokens",
        detail,
    };
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "admin" => TokenKind::Admin,
        "bootstrap" => TokenKind::Bootstrap,
        other => return Err(corrupt(format!("unknown kind {other:?}"))),
    };
    let json = |column: &str| -> Result<String, StoreError> { Ok(row.try_get(column)?) };
    let node: Option<String> = row.try_get("node")?;
    let identity = match node {
        Some(name) => Some(NodeIdentity::new(
            name.parse()
                .map_err(|e: crate::names::NameError| corrupt(e.to_string()))?,
            serde_json::from_str::<Option<Vec<_>>>(&json("ips")?)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default(),
            serde_json::from_str::<Option<Vec<_>>>(&json("dns_names")?)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default(),
        )),
        None => None,
    };
    let issued: Option<String> = row.try_get("issued_serials")?;
    let optional_time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(|t| from_ts("tokens", t))
            .transpose()
    };
    Ok(TokenRecord {
        id: row.try_get("id")?,
        kind,
        secret_sha256: row.try_get("secret_sha256")?,
        identity,
        profiles: serde_json::from_str(&json("profiles")?).map_err(|e| corrupt(e.to_string()))?,
        common_name: row.try_get("common_name")?,
        allow_privileged_common_name: row.try_get("allow_privileged_common_name")?,
        created_by: row.try_get("created_by")?,
        created_at: from_ts("tokens", row.try_get("created_at")?)?,
        expires_at: optional_time("expires_at")?,
        used_at: optional_time("used_at")?,
        request_sha256: row.try_get("request_sha256")?,
        issued_serials: match issued {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => BTreeMap::new(),
        },
        revoked_at: optional_time("revoked_at")?,
    })
}

fn generation_from_row(row: &SqliteRow) -> Result<GenerationRecord, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(GenerationRecord {
        id: row.try_get("id")?,
        state: state.parse().map_err(|detail| StoreError::Corrupt {
            table: "ca_generations",
            detail,
        })?,
        key_type: row.try_get("key_type")?,
        cert_pem: row.try_get("cert_pem")?,
        fingerprint: row.try_get("fingerprint")?,
        key_file: row.try_get("key_file")?,
        imported: row.try_get("imported")?,
        not_before: from_ts("ca_generations", row.try_get("not_before")?)?,
        not_after: from_ts("ca_generations", row.try_get("not_after")?)?,
        activated_at: row
            .try_get::<Option<i64>, _>("activated_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        retired_at: row
            .try_get::<Option<i64>, _>("retired_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        created_at: from_ts("ca_generations", row.try_get("created_at")?)?,
        endorsement_pem: row.try_get("endorsement_pem")?,
    })
}

/// A node's registered identity from a row with its `ips` and `dns_names` columns.
fn node_from_row(row: &SqliteRow, name: NodeName) -> Result<NodeIdentity, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "nodes",
        detail,
    };
    let ips: String = row.try_get("ips")?;
    let dns: String = row.try_get("dns_names")?;
    Ok(NodeIdentity::new(
        name,
        serde_json::from_str(&ips).map_err(|e| corrupt(e.to_string()))?,
        serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
    ))
}

fn certificate_from_row(
    row: &SqliteRow,
    now: OffsetDateTime,
) -> Result<CertificateRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "certificates",
        detail,
    };
    let stored_status: String = row.try_get("status")?;
    let not_after = from_ts("certificates", row.try_get("not_after")?)?;
    let status = match stored_status.as_str() {
        "revoked" => CertificateStatus::Revoked,
        "valid" if not_after <= now => CertificateStatus::Expired,
        "valid" => CertificateStatus::Valid,
        other => return Err(corrupt(format!("unknown status {other:?}"))),
    };
    let state = CertificateState::of(
        status,
        row.try_get("ca_retired")?,
        row.try_get("superseded")?,
    );
    let sans: String = row.try_get("sans")?;
    Ok(CertificateRecord {
        serial: row.try_get("serial")?,
        ca_generation: row.try_get("ca_generation")?,
        profile: row.try_get("profile")?,
        node: row.try_get("node")?,
        subject: row.try_get("subject")?,
        common_name: row.try_get("common_name")?,
        sans: serde_json::from_str(&sans).map_err(|e| corrupt(e.to_string()))?,
        key_type: row.try_get("key_type")?,
        public_key_sha256: row.try_get("public_key_sha256")?,
        not_before: from_ts("certificates", row.try_get("not_before")?)?,
        not_after,
        status,
        state,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(|t| from_ts("certificates", t))
            .transpose()?,
        revocation_reason: row.try_get("revocation_reason")?,
        issued_at: from_ts("certificates", row.try_get("issued_at")?)?,
        renewed_from: row.try_get("renewed_from")?,
        pem: row.try_get("pem")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    async fn store_with_generation(dir: &Path) -> Store {
        let store = Store::create(&dir.join("ca.db")).await.unwrap();
        let generation = GenerationRecord {
            id: 1,
            state: GenerationState::Active,
            key_type: "ecdsa-p256".into(),
            cert_pem: "not parsed here".into(),
            fingerprint: "sha256:00".into(),
            key_file: "ca/gen-1.key".into(),
            imported: false,
            not_before: at(0),
            not_after: at(86_400 * 3650),
            activated_at: Some(at(0)),
            retired_at: None,
            created_at: at(0),
            endorsement_pem: None,
        };
        store.insert_generation(&generation).await.unwrap();
        store
    }

    fn identity(name: &str, ip: &str) -> NodeIdentity {
        NodeIdentity::new(name.parse().unwrap(), vec![ip.parse().unwrap()], vec![])
    }

    fn certificate(serial: &str, node: &str, renewed_from: Option<&str>) -> NewCertificate {
        NewCertificate {
            serial: serial.into(),
            ca_generation: 1,
            profile: "peer".into(),
            node: node.parse().unwrap(),
            subject: "CN=etcd-peer".into(),
            common_name: "etcd-peer".into(),
            sans: vec!["IP:10.0.0.1".into()],
            key_type: "ecdsa-p256".into(),
            public_key_sha256: "ab".repeat(32),
            not_before: at(0),
            not_after: at(86_400),
            pem: "-----BEGIN CERTIFICATE-----\nnot \"parsed\" here\n-----END CERTIFICATE-----\n"
                .into(),
            issued_at: at(10),
            renewed_from: renewed_from.map(str::to_string),
        }
    }

    /// A peer certificate of node n1 with its identity and audit event, ready to record.
    fn issue(serial: &str) -> IssueRecord {
        IssueRecord {
            node: identity("n1", "10.0.0.1"),
            cert: certificate(serial, "n1", None),
            event: event(serial, "n1"),
        }
    }

    fn event(serial: &str, node: &str) -> AuditEvent {
        AuditEvent {
            at: at(10),
            actor: "admin:ops".into(),
            action: "issue".into(),
            node: Some(node.into()),
            serial: Some(serial.into()),
            detail: "profile peer, CN etcd-peer".into(),
        }
    }

    #[tokio::test]
    async fn concurrent_issues_are_each_recorded_with_every_column_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let node = format!("n{}", i % 5);
                    let cert = certificate(&format!("{i:032x}"), &node, None);
                    let event = event(&cert.serial, &node);
                    store
                        .record_issue(&identity(&node, "10.0.0.1"), &cert, &event)
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.certificate_counts().await.unwrap().0, 40);
        let stored = store
            .certificate(&format!("{:032x}", 7), at(20))
            .await
            .unwrap()
            .unwrap();
        let expected = certificate(&format!("{:032x}", 7), "n2", None);
        assert_eq!(stored.pem, expected.pem, "quotes and newlines survive");
        assert_eq!(stored.sans, expected.sans);
        assert_eq!(stored.node, "n2");
        assert_eq!(stored.not_after, expected.not_after);
        assert_eq!(stored.issued_at, expected.issued_at);
        assert_eq!(stored.renewed_from, None);
        assert_eq!(stored.status, CertificateStatus::Valid);
        let audit = store.audit_events(100).await.unwrap();
        assert_eq!(audit.iter().filter(|e| e.action == "issue").count(), 40);
        store.close().await;
    }

    #[tokio::test]
    async fn a_node_s_certificates_and_identity_come_back_in_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        for (serial, node, ip) in [
            ("a1", "n1", "10.0.0.1"),
            ("a2", "n1", "10.0.0.1"),
            ("b1", "n2", "10.0.0.2"),
        ] {
            store
                .record_issue(
                    &identity(node, ip),
                    &certificate(serial, node, None),
                    &event(serial, node),
                )
                .await
                .unwrap();
        }
        let wanted = ["a1", "a2", "b1", "ffff"].map(String::from);
        let mut found = store.certificates_by_serial(&wanted, at(20)).await.unwrap();
        found.sort_by(|a, b| a.0.serial.cmp(&b.0.serial));
        let serials: Vec<&str> = found.iter().map(|(c, _)| c.serial.as_str()).collect();
        assert_eq!(serials, ["a1", "a2", "b1"], "an unknown serial is left out");
        for (cert, registered) in &found {
            let expected = if cert.node == "n1" {
                identity("n1", "10.0.0.1")
            } else {
                identity("n2", "10.0.0.2")
            };
            assert_eq!(registered.as_ref(), Some(&expected));
        }
        assert!(store
            .certificates_by_serial(&[], at(20))
            .await
            .unwrap()
            .is_empty());
        store.close().await;
    }

    /// The WAL header's checkpoint sequence number: SQLite adds one each time it starts the WAL
    /// over from its beginning.
    fn wal_restarts(db: &Path) -> u32 {
        let header = std::fs::read(db.with_extension("db-wal")).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_load_and_commits_never_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ca.db");
        let store = store_with_generation(dir.path()).await;
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0, "commits must not run checkpoints");
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            temp_store, 2,
            "statement journals stay in memory, not in /var/tmp"
        );
        let before = wal_restarts(&db);
        // Sixteen writers with no pause between commits for 1.5 s: the committer is never idle,
        // so only the checkpointer's hand-over to the committer can start the WAL over.
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut written = 0;
                    while std::time::Instant::now() < deadline {
                        let serial = format!("{w:02x}{written:06x}");
                        let node = format!("n{w}");
                        let cert = certificate(&serial, &node, None);
                        store
                            .record_issue(
                                &identity(&node, "10.0.0.1"),
                                &cert,
                                &event(&serial, &node),
                            )
                            .await
                            .unwrap();
                        written += 1;
                    }
                    written
                })
            })
            .collect();
        let mut written = 0;
        for writer in writers {
            written += writer.await.unwrap();
        }
        let restarts = wal_restarts(&db) - before;
        assert!(
            restarts >= 3,
            "the WAL started over {restarts} times during 1.5 s of steady load ({written} writes)"
        );
        assert_eq!(store.certificate_counts().await.unwrap().0, written);
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        store.close().await;
    }

    #[tokio::test]
    async fn one_bad_write_in_a_group_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        let first = certificate("aa", "n1", None);
        store
            .record_issue(&identity("n1", "10.0.0.1"), &first, &event("aa", "n1"))
            .await
            .unwrap();
        // Sent together so they share groups: the duplicate serial must not sink the others.
        let serials: Vec<String> = (0..30)
            .map(|i| {
                if i == 15 {
                    "aa".into()
                } else {
                    format!("{i:02x}")
                }
            })
            .collect();
        let writes: Vec<_> = serials
            .iter()
            .map(|serial| {
                let (store, serial) = (store.clone(), serial.clone());
                tokio::spawn(async move {
                    let cert = certificate(&serial, "n1", Some("aa"));
                    let event = event(&serial, "n1");
                    store
                        .record_issue(&identity("n1", "10.0.0.1"), &cert, &event)
                        .await
                })
            })
            .collect();
        for (i, write) in writes.into_iter().enumerate() {
            let result = write.await.unwrap();
            assert_eq!(result.is_err(), i == 15, "write {i}: {result:?}");
        }
        assert_eq!(store.certificate_counts().await.unwrap().0, 30);
        let renewed = store.certificate("0c", at(20)).await.unwrap().unwrap();
        assert_eq!(renewed.renewed_from.as_deref(), Some("aa"));
        store.close().await;
    }

    #[tokio::test]
    async fn the_committer_keeps_its_connection_while_idle_and_gives_it_back_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        store.record_issues(vec![issue("01")]).await.unwrap();
        // Idle now: the committer still holds its connection (the checkpointer may hold
        // another for a moment), so the next commit finds its page cache warm.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let in_use = store.pool.size() as usize - store.pool.num_idle();
            assert!(in_use >= 1, "the idle committer gave its connection back");
        }
        // Closing does not wait for it forever: the committer hands it back.
        tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .expect("close waited on the committer's connection");
        assert_eq!(store.pool.size(), 0);
        let late = tokio::time::timeout(
            Duration::from_secs(5),
            store.record_issues(vec![issue("02")]),
        )
        .await
        .expect("a write after close is answered");
        assert!(late.is_err(), "a write after close is refused");
    }

    #[tokio::test]
    async fn issues_recorded_together_are_recorded_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        store.record_issues(vec![issue("01")]).await.unwrap();
        let (before, _) = store.certificate_counts().await.unwrap();
        let batch = vec![issue("02"), issue("01"), issue("03")];
        assert!(store.record_issues(batch).await.is_err());
        assert_eq!(store.certificate_counts().await.unwrap().0, before);
        assert!(store.certificate("02", at(20)).await.unwrap().is_none());
        store
            .record_issues(vec![issue("02"), issue("03")])
            .await
            .unwrap();
        assert_eq!(store.certificate_counts().await.unwrap().0, before + 2);
        store.close().await;
    }

    #[tokio::test]
    async fn a_node_keeps_its_latest_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        let n1 = identity("n1", "10.0.0.1");
        store
            .record_issue(&n1, &certificate("01", "n1", None), &event("01", "n1"))
            .await
            .unwrap();
        assert_eq!(store.node(&n1.name).await.unwrap(), Some(n1.clone()));
        let moved = identity("n1", "10.0.0.9");
        store
            .record_issue(&moved, &certificate("02", "n1", None), &event("02", "n1"))
            .await
            .unwrap();
        assert_eq!(store.node(&n1.name).await.unwrap(), Some(moved));
        store.close().await;
    }

    #[tokio::test]
    async fn each_generation_lists_only_the_revocations_it_issued_and_counts_its_own_crls() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_generation(dir.path()).await;
        let next = GenerationRecord {
            id: 2,
            state: GenerationState::Next,
            fingerprint: "sha256:02".into(),
            key_file: "ca/gen-2.key".into(),
            activated_at: None,
            ..store.generations().await.unwrap().remove(0)
        };
        store.insert_generation(&next).await.unwrap();
        let mut by_second = certificate("02", "n1", None);
        by_second.ca_generation = 2;
        let mut expired = certificate("03", "n1", None);
        expired.not_after = at(15);
        for cert in [certificate("01", "n1", None), by_second, expired] {
            let event = event(&cert.serial, "n1");
            store
                .record_issue(&identity("n1", "10.0.0.1"), &cert, &event)
                .await
                .unwrap();
        }
        for serial in ["01", "02", "03"] {
            store
                .revoke(serial, "keyCompromise", &event(serial, "n1"))
                .await
                .unwrap();
        }
        let serials = |entries: Vec<RevokedEntry>| -> Vec<String> {
            entries.into_iter().map(|e| e.serial).collect()
        };
        let now = at(20);
        assert_eq!(
            serials(store.revoked_unexpired(now).await.unwrap()),
            ["01", "02"]
        );
        assert_eq!(
            serials(store.revoked_unexpired_of_generation(1, now).await.unwrap()),
            ["01"],
            "the expired one is left out, and so is generation 2's"
        );
        assert_eq!(
            serials(store.revoked_unexpired_of_generation(2, now).await.unwrap()),
            ["02"]
        );
        assert!(store
            .revoked_unexpired_of_generation(3, now)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.next_crl_number(1).await.unwrap(), 1);
        assert_eq!(store.next_crl_number(1).await.unwrap(), 2);
        assert_eq!(
            store.next_crl_number(2).await.unwrap(),
            1,
            "one counter per issuer"
        );
        store.close().await;
    }
}
