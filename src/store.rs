//! The store: every SQL statement etcd-ca runs, over one SQLite database.
//!
//! It records CA generations, registered nodes, issued certificates and the audit trail. It
//! knows nothing of policy, signing or HTTP; callers hand it finished records. The database runs
//! in WAL mode with `synchronous = FULL`, so a committed write survives a crash, and a
//! certificate and its audit event are written in one transaction.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::names::{NodeIdentity, NodeName};

/// A `SELECT` of every certificate column followed by `$tail`, as one static string.
macro_rules! select_certificates {
    ($tail:literal) => {
        concat!(
            "SELECT serial, ca_generation, profile, node, subject, common_name, sans, key_type,
                    public_key_sha256, not_before, not_after, pem, status, revoked_at,
                    revocation_reason, issued_at, renewed_from
             FROM certificates ",
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
    fn as_str(self) -> &'static str {
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

/// A CA generation as stored.
#[derive(Clone, Debug)]
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
}

/// A new CA generation to record.
#[derive(Clone, Debug)]
pub struct NewGeneration {
    pub id: i64,
    pub state: GenerationState,
    pub key_type: String,
    pub cert_pem: String,
    pub fingerprint: String,
    pub key_file: String,
    pub imported: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Whether a certificate may still be used; `expired` is derived from `not_after` when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
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
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
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
        Ok(Self { pool })
    }

    /// Closes every connection, checkpointing the WAL so the file is whole on its own.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn insert_generation(
        &self,
        g: &NewGeneration,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ca_generations
               (id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
                not_after, created_at, activated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(ts(at))
        .bind((g.state == GenerationState::Active).then_some(ts(at)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every CA generation, oldest first.
    pub async fn generations(&self) -> Result<Vec<GenerationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
                    not_after
             FROM ca_generations ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(generation_from_row).collect()
    }

    /// The registered identity of a node, if any.
    pub async fn node(&self, name: &NodeName) -> Result<Option<NodeIdentity>, StoreError> {
        let row = sqlx::query("SELECT name, ips, dns_names FROM nodes WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let corrupt = |detail: String| StoreError::Corrupt {
                table: "nodes",
                detail,
            };
            let ips: String = row.try_get("ips")?;
            let dns: String = row.try_get("dns_names")?;
            Ok(NodeIdentity::new(
                name.clone(),
                serde_json::from_str(&ips).map_err(|e| corrupt(e.to_string()))?,
                serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
            ))
        })
        .transpose()
    }

    /// Records an issued certificate, the node identity it was issued for and the audit event,
    /// in one transaction. Returns only once the transaction is durable.
    pub async fn record_issue(
        &self,
        node: &NodeIdentity,
        cert: &NewCertificate,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let ips = serde_json::to_string(&node.ips).unwrap_or_else(|_| "[]".into());
        let dns = serde_json::to_string(&node.dns_names).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO nodes (name, ips, dns_names, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET
               ips = excluded.ips, dns_names = excluded.dns_names, updated_at = excluded.updated_at
             WHERE ips != excluded.ips OR dns_names != excluded.dns_names",
        )
        .bind(node.name.as_str())
        .bind(&ips)
        .bind(&dns)
        .bind(ts(cert.issued_at))
        .bind(ts(cert.issued_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO certificates
               (serial, ca_generation, profile, node, subject, common_name, sans, key_type,
                public_key_sha256, not_before, not_after, pem, status, issued_at, renewed_from)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'valid', ?, ?)",
        )
        .bind(&cert.serial)
        .bind(cert.ca_generation)
        .bind(&cert.profile)
        .bind(cert.node.as_str())
        .bind(&cert.subject)
        .bind(&cert.common_name)
        .bind(serde_json::to_string(&cert.sans).unwrap_or_else(|_| "[]".into()))
        .bind(&cert.key_type)
        .bind(&cert.public_key_sha256)
        .bind(ts(cert.not_before))
        .bind(ts(cert.not_after))
        .bind(&cert.pem)
        .bind(ts(cert.issued_at))
        .bind(&cert.renewed_from)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
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
        let status = filter.status.map(|s| s.as_str());
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
        rows.iter().map(|r| certificate_from_row(r, now)).collect()
    }

    /// Marks a certificate revoked and records the audit event, in one transaction.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: &str,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
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

    /// Revoked certificates that have not expired yet: what a CRL must list.
    pub async fn revoked_unexpired(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates
             WHERE status = 'revoked' AND not_after > ? ORDER BY revoked_at, serial",
        )
        .bind(ts(now))
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

    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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

async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, node, serial, detail)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(ts(event.at))
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.node)
    .bind(&event.serial)
    .bind(&event.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    })
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
