//! A consistent copy of a live SQLite store without one long read transaction: what a backup
//! of a SQLite CA writes.
//!
//! `VACUUM INTO` reads the whole database in one transaction, and while any read transaction
//! is open the WAL cannot start over: on a million-row store the copy takes seconds, and the
//! WAL grows by everything committed meanwhile. Here the target file is attached to one of the
//! store's connections and SQLite moves the rows itself (`INSERT INTO t.x SELECT ... FROM x`),
//! in steps:
//!
//! 1. the two large, append-only tables, certificates (by `seq`) and audit events (by id), a
//!    few thousand rows per statement, each statement its own short transaction; their
//!    secondary indexes are built once, after (a sort instead of scattered inserts);
//! 2. then one transaction reads what was appended since, every small table whole, and, if
//!    anything was revoked meanwhile (the revocation epoch moved), every revocation again.
//!
//! After they are recorded, certificates change only by revocation, and rows are removed only
//! by retention, which waits for the copy ([`Store::pause_removals`]): the file is the store as
//! that last transaction saw it. The target is a scratch file (no journal, no fsync): the
//! caller streams it and throws it away.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::sql::Sql;
use super::*;

/// Rows per step of the large tables.
pub(super) const STEP: i64 = 10_000;

/// The longest a copy waits between steps for the WAL to start over.
const WAL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The large, append-only tables and the key they grow by.
const LARGE: [(&str, &str); 2] = [("certificates", "seq"), ("audit_events", "id")];

/// Every other table, parents first, copied whole in the last pass; `nodes` and
/// `ca_generations` were copied before the large tables too (their rows name them) and are
/// brought up to date by key. `current_certificates` is rebuilt by the target's triggers as
/// certificates arrive; `revocation_epoch` is copied last, over what those triggers counted.
/// Both files have this version's schema (the source was migrated when opened, the target is
/// created by the same migrations), so `SELECT *` lists the same columns in the same order.
const UPSERTED: [(&str, &str); 2] = [("ca_generations", "id"), ("nodes", "name")];
const SMALL: [&str; 7] = [
    "tokens",
    "node_reports",
    "restart_lease",
    "external_revocations",
    "settings",
    "published_crls",
    "failed_attempts",
];

/// Copies `from` into a new SQLite file at `path`; how many certificates the copy holds.
/// `between` runs after each step (tests change the source there).
pub(super) async fn live_sqlite_copy<F: AsyncFnMut()>(
    from: &Store,
    path: &Path,
    step: i64,
    mut between: F,
) -> Result<i64, StoreError> {
    let _removals_wait = from.pause_removals().await;
    // The schema, written by the usual migrations; then the large tables without their
    // secondary indexes, kept to be built after the rows are in.
    let scratch = Store::create(path).await?;
    // (`seq`'s own index stays: each step starts after the largest copied.)
    let deferred = scratch
        .pool
        .fetch_all(Sql::new(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
                AND tbl_name IN ('certificates', 'audit_events')
                AND name <> 'certificates_by_seq'",
        ))
        .await?;
    let mut indexes = Vec::with_capacity(deferred.len());
    for index in &deferred {
        let name: String = index.col("name")?;
        indexes.push(index.col::<String>("sql")?);
        scratch
            .pool
            .execute(Sql::new(format!("DROP INDEX {name}")))
            .await?;
    }
    scratch.close().await;

    let Pool::Sqlite(pool) = &from.pool else {
        return Err(StoreError::Config(
            "a live copy reads a SQLite store".into(),
        ));
    };
    let mut conn = pool.acquire().await?;
    let copied = copy_on(&mut conn, path, step, &indexes, &from.wal, &mut between).await;
    // Detached on every path: the connection goes back to the pool as it came, or is closed.
    let detached = sqlx::query("DETACH DATABASE t").execute(&mut *conn).await;
    let restored = sqlx::query("PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await;
    if copied.is_err() || detached.is_err() || restored.is_err() {
        let _ = conn.close().await;
    }
    copied
}

async fn copy_on<F: AsyncFnMut()>(
    conn: &mut sqlx::SqliteConnection,
    path: &Path,
    step: i64,
    indexes: &[String],
    wal: &super::sqlite::WalProgress,
    between: &mut F,
) -> Result<i64, StoreError> {
    let run = async |conn: &mut sqlx::SqliteConnection, sql: Sql| -> Result<u64, StoreError> {
        Ok(super::sql::execute_on_sqlite(conn, sql).await?)
    };
    run(
        conn,
        Sql::new("ATTACH DATABASE $1 AS t").bind(path.to_string_lossy().into_owned()),
    )
    .await?;
    run(conn, Sql::new("PRAGMA t.journal_mode = OFF")).await?;
    run(conn, Sql::new("PRAGMA t.synchronous = OFF")).await?;
    // Building an index sorts every row's key: in temporary files, not in the server's
    // memory (the pool's connections otherwise keep temporary data in memory).
    run(conn, Sql::new("PRAGMA temp_store = FILE")).await?;
    // A step may copy a certificate of a node registered after the nodes were copied: the
    // last pass copies the nodes again, and the rows are checked against each other then.
    run(conn, Sql::new("PRAGMA foreign_keys = OFF")).await?;
    let epoch_before: i64 = sqlx::query_scalar("SELECT epoch FROM revocation_epoch WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    for (table, _) in UPSERTED {
        run(
            conn,
            Sql::new(format!("INSERT INTO t.{table} SELECT * FROM {table}")),
        )
        .await?;
    }
    // The large tables, a step at a time, each step one short transaction.
    // The steps stop at the rows there were when the copy began (whatever is appended
    // meanwhile is the last pass's: a copy ends even if rows arrive faster than it steps).
    let mut until = [0_i64; 2];
    for ((table, key), until) in LARGE.iter().zip(until.iter_mut()) {
        *until = sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(format!(
            "SELECT MAX({key}) FROM {table}"
        )))
        .fetch_one(&mut *conn)
        .await?
        .unwrap_or(0);
    }
    let mut after = [0_i64; 2];
    loop {
        let mut full = false;
        let commits = wal.commits.load(Ordering::Acquire);
        let restarts = wal.restarts.load(Ordering::Acquire);
        for (((table, key), after), until) in LARGE.iter().zip(after.iter_mut()).zip(until) {
            if *after >= until {
                continue;
            }
            let n = run(
                conn,
                Sql::new(format!(
                    "INSERT INTO t.{table} SELECT * FROM {table} WHERE {key} > $1 AND {key} <= $2
                      ORDER BY {key} LIMIT $3"
                ))
                .bind(*after)
                .bind(until)
                .bind(step),
            )
            .await?;
            if n == 0 {
                // Nothing left up to `until` (cannot happen while removals wait; never loop).
                *after = until;
                continue;
            }
            let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT MAX({key}) FROM t.{table}"
            )))
            .fetch_one(&mut *conn)
            .await?;
            *after = last.unwrap_or(0);
            full |= *after < until;
        }
        between().await;
        if !full {
            break;
        }
        // While a step reads, the WAL cannot start over; if anything was committed meanwhile,
        // wait (a moment, at most a second) for the checkpointer and the committer to start
        // it over before the next step reads again. Back-to-back reads would let it grow for
        // the whole copy, as `VACUUM INTO`'s one read does.
        if wal.commits.load(Ordering::Acquire) != commits {
            let deadline = std::time::Instant::now() + WAL_WAIT;
            while wal.restarts.load(Ordering::Acquire) == restarts
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
    for index in indexes {
        run(conn, Sql::new(attached(index))).await?;
    }
    // The last pass, in one transaction: short, since only the tail is left to read.
    run(conn, Sql::new("BEGIN")).await?;
    let last = async |conn: &mut sqlx::SqliteConnection| -> Result<(), StoreError> {
        for (table, key) in UPSERTED {
            let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}') WHERE name <> '{key}'"
            )))
            .fetch_all(&mut *conn)
            .await?;
            let set: Vec<String> = columns
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            run(
                conn,
                Sql::new(format!(
                    "INSERT INTO t.{table} SELECT * FROM {table} WHERE TRUE
                     ON CONFLICT ({key}) DO UPDATE SET {}",
                    set.join(", ")
                )),
            )
            .await?;
        }
        for ((table, key), after) in LARGE.iter().zip(after) {
            run(
                conn,
                Sql::new(format!(
                    "INSERT INTO t.{table} SELECT * FROM {table} WHERE {key} > $1 ORDER BY {key}"
                ))
                .bind(after),
            )
            .await?;
        }
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM revocation_epoch WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        if epoch != epoch_before {
            run(
                conn,
                Sql::new(
                    "UPDATE t.certificates SET status = 'revoked', revoked_at = r.revoked_at,
                            revocation_reason = r.revocation_reason
                       FROM (SELECT serial, revoked_at, revocation_reason FROM certificates
                              WHERE status = 'revoked') AS r
                      WHERE t.certificates.serial = r.serial
                        AND t.certificates.status <> 'revoked'",
                ),
            )
            .await?;
        }
        for table in SMALL {
            run(
                conn,
                Sql::new(format!("INSERT INTO t.{table} SELECT * FROM {table}")),
            )
            .await?;
        }
        run(
            conn,
            Sql::new("UPDATE t.revocation_epoch SET epoch = $1 WHERE id = 1").bind(epoch),
        )
        .await?;
        let dangling: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM t.pragma_foreign_key_check")
                .fetch_all(&mut *conn)
                .await?;
        if let Some((table,)) = dangling.first() {
            return Err(StoreError::Corrupt {
                table: "backup copy",
                detail: format!(
                    "{} rows name a missing parent (first in {table})",
                    dangling.len()
                ),
            });
        }
        Ok(())
    };
    match last(conn).await {
        Ok(()) => {
            run(conn, Sql::new("COMMIT")).await?;
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM t.certificates")
                .fetch_one(&mut *conn)
                .await?)
        }
        Err(e) => {
            let _ = run(conn, Sql::new("ROLLBACK")).await;
            Err(e)
        }
    }
}

/// An index's `CREATE` statement made to create it in the attached database `t`.
fn attached(create: &str) -> String {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = create.strip_prefix(prefix) {
            return format!("{prefix}t.{rest}");
        }
    }
    create.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::retention::Cutoffs;
    use crate::store::sql::Backend;
    use crate::store::tests::{at, event, identity, issue, store_with_generation, wal_restarts};

    /// Every row of `table`, in key order, as SQL literals (any column type compares).
    async fn dump(store: &Store, table: &str) -> String {
        let columns: Vec<String> = store
            .pool
            .scalars(Sql::new(format!(
                "SELECT 'quote(' || name || ')' FROM pragma_table_info('{table}')"
            )))
            .await
            .unwrap();
        store
            .pool
            .scalar(Sql::new(format!(
                "SELECT json_group_array(json_array({})) FROM (SELECT * FROM {table} ORDER BY 1)",
                columns.join(", ")
            )))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_copy_in_steps_is_the_store_as_its_last_pass_saw_it() {
        let (store, _keep) = store_with_generation(Backend::Sqlite).await;
        let first: Vec<IssueRecord> = (0..23).map(|i| issue(&format!("{i:02x}"))).collect();
        store.record_issues(first).await.unwrap();
        let report = |node: &str, at_: i64| NodeReport {
            node: node.into(),
            installed_bundle: vec!["sha256:00".into()],
            running_bundle: vec![],
            certificates: Default::default(),
            reported_at: at(at_),
            details: "{}".into(),
        };
        store.upsert_node_report(&report("n1", 1)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");

        // Between steps the store changes as a live one does: a certificate issued, one
        // copied already revoked, a report replaced, and retention tries to remove rows.
        let mut steps = 0;
        let mut removal = None;
        let counted = live_sqlite_copy(&store, &path, 4, async || {
            steps += 1;
            if steps == 2 {
                let mut late = issue("f0");
                late.node = identity("n2", "10.0.0.2");
                late.cert.node = "n2".parse().unwrap();
                late.event = event("f0", "n2");
                store.record_issues(vec![late]).await.unwrap();
                store
                    .revoke("01", "keyCompromise", &event("01", "n1"))
                    .await
                    .unwrap();
                store.upsert_node_report(&report("n1", 2)).await.unwrap();
                let waiting = store.clone();
                let everything = Cutoffs {
                    certificates: at(1_000_000),
                    tokens: at(1_000_000),
                    audit_events: at(1_000_000),
                };
                removal = Some(tokio::spawn(async move {
                    waiting.remove_batch(everything, at(1_000_000), 100).await
                }));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Some(removal) = &removal {
                // Checked while the copy runs (once it returns, retention may go at once).
                assert!(!removal.is_finished(), "retention waits for the copy");
            }
        })
        .await
        .unwrap();
        assert!(
            steps >= 6,
            "23 rows 4 at a time, then the tail: {steps} steps"
        );
        assert_eq!(
            counted, 24,
            "the count is the copy's, the one issued mid-copy included"
        );
        let removal = removal.unwrap();
        // Retention goes ahead once the copy is done; it removes none of what is compared.
        let removed = removal.await.unwrap().unwrap();
        assert!(removed.certificates > 0, "{removed:?}");

        let copy = Store::open(&path).await.unwrap();
        for table in [
            "ca_generations",
            "nodes",
            "node_reports",
            "current_certificates",
            "revocation_epoch",
        ] {
            assert_eq!(
                dump(&copy, table).await,
                dump(&store, table).await,
                "{table}"
            );
        }
        // What retention removed after the copy is still in it: every certificate, the one
        // issued mid-copy included, the revocation made mid-copy, every audit event.
        assert_eq!(copy.certificate_counts().await.unwrap().0, 24);
        let certificates = dump(&copy, "certificates").await;
        assert!(
            certificates.contains("[\"'01'\",\"1\",\"'peer'\""),
            "{certificates}"
        );
        let revoked = copy.certificate("01", at(20)).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(at(10)), "{revoked:?}");
        assert!(copy.certificate("f0", at(20)).await.unwrap().is_some());
        let events: i64 = copy
            .pool
            .scalar(Sql::new("SELECT COUNT(*) FROM audit_events"))
            .await
            .unwrap();
        assert_eq!(events, 23 + 1 + 1, "issued, issued mid-copy, revoked");
        assert!(store.certificate_counts().await.unwrap().0 < 24);
        copy.close().await;
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_between_the_steps_while_issuance_goes_on() {
        let (store, keep) = store_with_generation(Backend::Sqlite).await;
        let db = keep.path().unwrap().join("ca.db");
        for batch in 0..10 {
            let issues = (0..300)
                .map(|i| issue(&format!("{batch:02x}{i:04x}")))
                .collect();
            store.record_issues(issues).await.unwrap();
        }
        let copying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer = {
            let (store, copying) = (store.clone(), copying.clone());
            tokio::spawn(async move {
                let mut written = 0_u32;
                while copying.load(Ordering::Acquire) {
                    store
                        .record_issues(vec![issue(&format!("ff{written:06x}"))])
                        .await
                        .unwrap();
                    written += 1;
                }
                written
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let before = wal_restarts(&db);
        let dir = tempfile::tempdir().unwrap();
        let mut steps = 0;
        live_sqlite_copy(&store, &dir.path().join("copy.db"), 100, async || {
            steps += 1
        })
        .await
        .unwrap();
        let restarts = wal_restarts(&db) - before;
        copying.store(false, Ordering::Release);
        let written = writer.await.unwrap();
        assert!(
            restarts * 2 >= steps,
            "the WAL started over {restarts} times in {steps} steps ({written} issued meanwhile)"
        );
        store.close().await;
    }
}
