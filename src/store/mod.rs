//! The store: every SQL statement etcd-ca runs, over one SQLite database.
//!
//! It records CA generations, registered nodes, issued certificates and the audit trail. It
//! knows nothing of policy, signing or HTTP; callers hand it finished records. The database runs
//! in WAL mode with `synchronous = FULL`, so a committed write survives a crash, and a
//! certificate and its audit event are written in one transaction.
//!
//! - this file: the [`Store`] handle and its queries;
//! - [`records`]: the records callers hand in and get back;
//! - `rotation`, `tokens`: the queries of CA generations and rotation, and of tokens;
//! - `retention`: removing, in batches, what nothing needs any more;
//! - `recovery`: what a restore re-applies from a CRL newer than its backup;
//! - `rows`: turning records into rows and rows into records;
//! - `sqlite`: what is SQLite's own: opening (PRAGMAs, migrations), the group committer and the
//!   WAL checkpointer, the integrity check, immediate write transactions;
//! - `live_copy`: a SQLite backup's copy, in steps of short read transactions;
//! - `copy`: every record copied from one store to another (PostgreSQL backups, moves).

mod copy;
mod crls;
#[cfg(test)]
mod listing_tests;
mod live_copy;
mod open;
mod postgres;
mod records;
mod recovery;
mod retention;
mod rotation;
mod rows;
mod sql;
mod sqlite;
#[cfg(test)]
mod test_db;
#[cfg(test)]
mod tests;
mod tokens;

pub use copy::{copy_all, Copied, CopyExtras};
pub use open::{Migrations, StoreConfig};
pub use records::*;
pub use recovery::Reapplied;
pub use retention::{Cutoffs, Removed};
use rows::*;
use sql::{Backend, DbRow, Pool, Sql, Tx};
use sqlite::PendingIssue;

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::names::{NodeIdentity, NodeName};

/// True when a newer certificate of the same node and profile is current (one primary-key read
/// of `current_certificates`, kept by triggers; see migration 0007).
macro_rules! superseded {
    () => {
        "EXISTS (SELECT 1 FROM current_certificates AS cur
                  WHERE cur.node = certificates.node
                    AND cur.profile = certificates.profile
                    AND cur.seq > certificates.seq)"
    };
}

/// True when the certificate's CA generation is retired.
macro_rules! ca_retired {
    () => {
        "EXISTS (SELECT 1 FROM ca_generations AS g
                  WHERE g.id = certificates.ca_generation AND g.state = 'retired')"
    };
}

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
                    revocation_reason, issued_at, renewed_from, ",
            superseded!(),
            " AS superseded, ",
            ca_retired!(),
            " AS ca_retired",
            $extra,
            " FROM certificates ",
            $tail
        )
    };
}

/// The most certificates one page of a listing holds.
pub const MAX_PAGE: u32 = 1000;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {database}: {source}")]
    Open {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate database {database}: {source}")]
    Migrate {
        database: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database {database} lacks migration(s) {missing:?} of this version of etcd-ca: run `etcd-ca migrate --database URL` once (or start one server with --migrate)")]
    NotMigrated { database: String, missing: Vec<i64> },
    #[error("{0}")]
    Config(String),
    #[error("database error: {0}")]
    Sql(sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("the database is read-only (a standby): it serves reads, writes go to the primary")]
    ReadOnly,
    #[error("the database is closed (the server is shutting down)")]
    Closed,
    #[error("serial {0} is already recorded")]
    SerialTaken(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            sqlx::Error::Database(db) if is_serial_taken(db.as_ref()) => {
                StoreError::SerialTaken(db.message().to_string())
            }
            e => postgres::classify(e),
        }
    }
}

/// A certificate's serial (its primary key) that another certificate holds: SQLite names the
/// column, PostgreSQL the constraint.
fn is_serial_taken(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.kind() == sqlx::error::ErrorKind::UniqueViolation
        && (e.constraint() == Some("certificates_pkey")
            || e.message().contains("certificates.serial"))
}

/// The statement of one page of [`Store::certificates`]: only the filters given, so that
/// each one can seek its index.
fn certificates_query(filter: &CertificateFilter, now: OffsetDateTime) -> Sql {
    certificates_query_after("", filter, now)
}

/// [`certificates_query`] after `prefix` (`EXPLAIN QUERY PLAN` in a test).
fn certificates_query_after(
    prefix: &'static str,
    filter: &CertificateFilter,
    now: OffsetDateTime,
) -> Sql {
    let mut sql = Sql::new(prefix);
    sql.push(select_certificates!("WHERE TRUE"));
    if let Some(node) = &filter.node {
        sql.push(" AND node = ").push_bind(node.clone());
    }
    if let Some(profile) = &filter.profile {
        sql.push(" AND profile = ").push_bind(profile.clone());
    }
    let status = filter.status.or(filter.state.map(|s| match s {
        CertificateState::Revoked => CertificateStatus::Revoked,
        CertificateState::Expired => CertificateStatus::Expired,
        _ => CertificateStatus::Valid,
    }));
    match status {
        None => {}
        Some(CertificateStatus::Revoked) => {
            sql.push(" AND status = 'revoked'");
        }
        Some(CertificateStatus::Valid) => {
            sql.push(" AND status = 'valid' AND not_after > ")
                .push_bind(ts(now));
        }
        Some(CertificateStatus::Expired) => {
            sql.push(" AND status = 'valid' AND not_after <= ")
                .push_bind(ts(now));
        }
    }
    match filter.state {
        Some(CertificateState::Valid) => {
            sql.push(concat!(
                " AND NOT ",
                superseded!(),
                " AND NOT ",
                ca_retired!()
            ));
        }
        Some(CertificateState::Superseded) => {
            sql.push(concat!(" AND ", superseded!(), " AND NOT ", ca_retired!()));
        }
        Some(CertificateState::Retired) => {
            sql.push(concat!(" AND ", ca_retired!()));
        }
        _ => {}
    }
    if let Some(before) = filter.expiring_before {
        sql.push(" AND status = 'valid' AND not_after > ")
            .push_bind(ts(now))
            .push(" AND not_after <= ")
            .push_bind(ts(before));
    }
    if let Some(after) = &filter.after {
        sql.push(" AND (not_after, serial) > (")
            .push_bind(ts(after.not_after))
            .push(", ")
            .push_bind(after.serial.clone())
            .push(")");
    }
    sql.push(" ORDER BY not_after, serial LIMIT ")
        .push_bind(i64::from(
            filter.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE + 1),
        ));
    sql
}

/// Marks a valid certificate revoked at `at` for `reason`; false when it is not a valid one.
async fn mark_revoked(
    tx: &mut Tx,
    serial: &str,
    at: OffsetDateTime,
    reason: &str,
) -> Result<bool, StoreError> {
    let updated = tx.execute(Sql::new(
        "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2
         WHERE serial = $3 AND status = 'valid'",
    ).bind(ts(at)).bind(reason).bind(serial))
    .await?;
    Ok(updated == 1)
}

/// The database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// On SQLite, issued certificates go through the group committer.
    committer: Option<tokio::sync::mpsc::Sender<PendingIssue>>,
    /// Set by [`Store::close`]: the committer gives its connection back to the pool.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// The database for messages (no password).
    description: String,
    /// Held shared by live copies, exclusively by retention's removals (see
    /// [`Store::pause_removals`]).
    removals: Arc<tokio::sync::RwLock<()>>,
    /// On SQLite, what the committer has committed and checkpointed.
    wal: Arc<sqlite::WalProgress>,
}

impl Store {
    /// How many tokens exist, and how many were used.
    pub async fn token_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = self
            .pool
            .fetch_one(Sql::new(
                "SELECT COUNT(*) AS n, COUNT(used_at) AS used FROM tokens",
            ))
            .await?;
        Ok((row.col("n")?, row.col("used")?))
    }

    /// Certificates recorded, and how many distinct serials they have.
    pub async fn certificate_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = self
            .pool
            .fetch_one(Sql::new(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT serial) AS d FROM certificates",
            ))
            .await?;
        Ok((row.col("n")?, row.col("d")?))
    }

    /// The registered identity of a node, if any.
    pub async fn node(&self, name: &NodeName) -> Result<Option<NodeIdentity>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                Sql::new("SELECT ips, dns_names FROM nodes WHERE name = $1").bind(name.as_str()),
            )
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
        sql.push_list(serials.iter().map(String::as_str));
        let rows = self.pool.fetch_all(sql).await?;
        rows.iter()
            .map(|row| {
                let cert = certificate_from_row(row, now)?;
                let registered: Option<String> = row.col("ips")?;
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

    /// The dates and revocation of the recorded certificates among `serials` (in no order).
    pub async fn certificate_dates(
        &self,
        serials: &[String],
    ) -> Result<Vec<CertificateDates>, StoreError> {
        if serials.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(
            "SELECT serial, ca_generation, not_before, not_after, issued_at, revoked_at
               FROM certificates WHERE serial IN ",
        );
        sql.push_list(serials.iter().map(String::as_str));
        let rows: Vec<(String, i64, i64, i64, i64, Option<i64>)> = self
            .pool
            .fetch_packed(
                sql,
                &[
                    "serial",
                    "ca_generation",
                    "not_before",
                    "not_after",
                    "issued_at",
                    "revoked_at",
                ],
            )
            .await?;
        let ts_of = |t: i64| from_ts("certificates", t);
        rows.into_iter()
            .map(
                |(serial, ca_generation, not_before, not_after, issued_at, revoked_at)| {
                    Ok(CertificateDates {
                        serial,
                        ca_generation,
                        not_before: ts_of(not_before)?,
                        not_after: ts_of(not_after)?,
                        issued_at: ts_of(issued_at)?,
                        revoked_at: revoked_at.map(ts_of).transpose()?,
                    })
                },
            )
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
        let (Some(committer), Pool::Sqlite(_)) = (&self.committer, &self.pool) else {
            return match &self.pool {
                Pool::Postgres(p) => postgres::record_issues(p, &issues).await,
                Pool::Sqlite(_) => Err(StoreError::Closed),
            };
        };
        let (done, committed) = tokio::sync::oneshot::channel();
        let pending = PendingIssue { issues, done };
        committer
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
        let row = self
            .pool
            .fetch_optional(Sql::new(select_certificates!("WHERE serial = $1")).bind(serial))
            .await?;
        row.map(|r| certificate_from_row(&r, now)).transpose()
    }

    /// One page of the certificates matching the filter, soonest expiry first (then by
    /// serial), starting after `filter.after`: at most `filter.limit` (at most one more than
    /// [`MAX_PAGE`], so a caller can tell whether another page follows).
    /// Every filter seeks an index (`tests::every_listing_seeks_an_index`).
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = self.pool.fetch_all(certificates_query(filter, now)).await?;
        rows.iter()
            .map(|row| certificate_from_row(row, now))
            .collect()
    }

    /// Marks a certificate revoked and records the audit event, in one transaction.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: &str,
        event: &AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.write_transaction().await?;
        let updated = mark_revoked(&mut tx, serial, event.at, reason).await?;
        if updated {
            insert_audit(&mut tx, event).await?;
        }
        let row = tx
            .fetch_optional(Sql::new(select_certificates!("WHERE serial = $1")).bind(serial))
            .await?;
        tx.commit().await?;
        Ok(match row {
            None => RevokeOutcome::NotFound,
            Some(row) => {
                let record = Box::new(certificate_from_row(&row, event.at)?);
                if updated {
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
        let rows = match generation {
            Some(generation) => {
                self.pool
                    .fetch_all(
                        Sql::new(
                            "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE status = 'revoked' AND not_after > $1 AND ca_generation = $2
                 ORDER BY revoked_at, serial",
                        )
                        .bind(ts(now))
                        .bind(generation),
                    )
                    .await?
            }
            // etcd's CRL also lists what a restore re-applied without a certificate record.
            None => {
                self.pool
                    .fetch_all(
                        Sql::new(
                            "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE status = 'revoked' AND not_after > $1
                 UNION ALL
                 SELECT serial, revoked_at, reason FROM external_revocations
                 WHERE keep_until > $1
                 ORDER BY revoked_at, serial",
                        )
                        .bind(ts(now)),
                    )
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok(RevokedEntry {
                    serial: row.col("serial")?,
                    revoked_at: from_ts("certificates", row.col("revoked_at")?)?,
                    reason: row.col("revocation_reason")?,
                })
            })
            .collect()
    }

    /// A number that grows with every revocation (kept by a trigger): the CRL is rebuilt when
    /// it changes. One row's read.
    pub async fn revocation_epoch(&self) -> Result<i64, StoreError> {
        Ok(self
            .pool
            .scalar(Sql::new("SELECT epoch FROM revocation_epoch WHERE id = 1"))
            .await?)
    }

    /// For each profile, when the first of its current certificates expires (of those that
    /// have not yet): one row per profile.
    pub async fn soonest_expiry_by_profile(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        let rows = self
            .pool
            .fetch_all(
                Sql::new(
                    "SELECT profile, MIN(not_after) AS not_after FROM current_certificates
             WHERE not_after > $1 GROUP BY profile ORDER BY profile",
                )
                .bind(ts(now)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.col("profile")?,
                    from_ts("current_certificates", r.col("not_after")?)?,
                ))
            })
            .collect()
    }

    /// Each node and profile's current certificate that has not expired yet, in node order:
    /// what `/metrics` and rotation status read (the small table, not the history).
    pub async fn current_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<CurrentCertificate>, StoreError> {
        let rows: Vec<(String, String, String, i64, i64)> = self
            .pool
            .fetch_packed(
                Sql::new(
                    "SELECT node, profile, serial, not_after, ca_generation FROM current_certificates
                      WHERE not_after > $1",
                )
                .bind(ts(now)),
                &["node", "profile", "serial", "not_after", "ca_generation"],
            )
            .await?;
        let mut current = rows
            .into_iter()
            .map(|(node, profile, serial, not_after, ca_generation)| {
                Ok(CurrentCertificate {
                    node,
                    profile,
                    serial,
                    not_after: from_ts("current_certificates", not_after)?,
                    ca_generation,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        current.sort_by(|a, b| (&a.node, &a.profile).cmp(&(&b.node, &b.profile)));
        Ok(current)
    }

    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The most recent audit events, oldest first.
    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = self
            .pool
            .fetch_all(
                Sql::new(
                    "SELECT at, actor, action, node, serial, detail FROM
               (SELECT * FROM audit_events ORDER BY id DESC LIMIT $1) AS recent ORDER BY id",
                )
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    at: from_ts("audit_events", row.col("at")?)?,
                    actor: row.col("actor")?,
                    action: row.col("action")?,
                    node: row.col("node")?,
                    serial: row.col("serial")?,
                    detail: row.col("detail")?,
                })
            })
            .collect()
    }
}
