//! What is SQLite's own: opening the file (WAL, `synchronous = FULL`, busy timeout,
//! migrations), the group committer that records issued certificates in one transaction per
//! group, the checkpointer that keeps WAL checkpoints off the commit path, the scratch file a
//! backup is copied into, the integrity check, and write transactions that take the lock up
//! front.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Issued certificates waiting for their group commit (recorded all or none), and who to tell
/// when they are durable.
#[derive(Debug)]
pub(super) struct PendingIssue {
    pub(super) issues: Vec<IssueRecord>,
    pub(super) done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
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
    progress: Arc<WalProgress>,
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
            progress.restarts.fetch_add(1, Ordering::Release);
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
        progress.commits.fetch_add(1, Ordering::Release);
        // A nudge already waiting covers this commit too.
        let _ = nudge_checkpointer.try_send(());
    }
}

/// What the committer has done, for a reader that must let the WAL start over (a live copy).
#[derive(Debug, Default)]
pub(super) struct WalProgress {
    /// Groups committed.
    pub(super) commits: std::sync::atomic::AtomicU64,
    /// Committer's checkpoints: after each, its next group starts the WAL over.
    pub(super) restarts: std::sync::atomic::AtomicU64,
}

/// How long the checkpointer lets commits pile up before it copies the WAL back into the
/// database. Short, so that each checkpoint writes back few pages: on a store of a million
/// certificates the pages a burst dirties lie scattered over the indexes keyed by node, and a
/// commit that syncs the WAL while a checkpoint syncs the database waits behind the
/// checkpoint's writes on the same disk. With a 100 ms delay a checkpoint there wrote back 400
/// pages in 3.5 ms (13 ms at worst), and issuance p99 at c=1 was 2.2x the empty store's (a
/// one-connection client, serials in time order); at 5 ms, 1.3-1.5x there, and 0.9-1.2x in
/// `scripts/bench --scale` with the current-certificates table's serial index gone too. The
/// price: a page every commit rewrites (the last leaf of each table) is copied more often.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(5);

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
        match catch_up(&pool).await {
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

/// How long a checkpoint may take for the committer's to follow it: the committer's copies
/// what was committed meanwhile and syncs the database file while a caller waits.
const CAUGHT_UP_WITHIN: Duration = Duration::from_millis(2);

/// At most this many checkpoints in a row try to get that short.
const CATCH_UP_ROUNDS: usize = 6;

/// Checkpoints until one copies every page it saw within [`CAUGHT_UP_WITHIN`]; true then.
/// On a large database a checkpoint of 100 ms of commits writes hundreds of scattered pages
/// (random serials and node names land all over their indexes) and takes 10-20 ms; the
/// commits made meanwhile would cost the committer as long. Each further round copies only
/// what the last one let pile up, so they shrink until one is short.
async fn catch_up(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    for _ in 0..CATCH_UP_ROUNDS {
        let started = std::time::Instant::now();
        if !passive_checkpoint(pool, "checkpoint").await? {
            return Ok(false);
        }
        if started.elapsed() <= CAUGHT_UP_WITHIN {
            return Ok(true);
        }
    }
    Ok(false)
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
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        push_node_upsert(&mut sql, chunk);
        sql.push(";\n");
    }
    for chunk in certs.chunks(ROWS_PER_INSERT) {
        push_certificate_insert(&mut sql, chunk, Backend::Sqlite);
        sql.push(";\n");
    }
    for chunk in events.chunks(ROWS_PER_INSERT) {
        push_audit_insert(&mut sql, chunk);
        sql.push(";\n");
    }
    sql.push("COMMIT;");
    match sql::execute_on_sqlite(&mut *conn, sql).await {
        Ok(_) => Ok(()),
        Err(e) => {
            // Nothing of the group may stay; "no transaction is active" here is fine too.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e.into())
        }
    }
}

pub(super) async fn open(path: &Path, create: bool) -> Result<Store, StoreError> {
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
    // Pages freed by retention go back to the file system a batch at a time
    // ([`Store::reclaim_space`]). Set only on a new file: the pragma rewrites the header of
    // an existing one (and has no effect there without a VACUUM), so older stores reuse
    // freed pages for new rows instead.
    let options = if create {
        options.auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
    } else {
        options
    };
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
            database: path.display().to_string(),
            source,
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            database: path.display().to_string(),
            source,
        })?;
    let (committer, pending) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
    let (nudge, nudges) = tokio::sync::mpsc::channel(1);
    let caught_up = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(WalProgress::default());
    let (closing, closing_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(commit_loop(
        pool.clone(),
        pending,
        nudge,
        caught_up.clone(),
        closing_seen,
        progress.clone(),
    ));
    tokio::spawn(checkpoint_loop(pool.clone(), nudges, caught_up));
    Ok(Store {
        pool: Pool::Sqlite(pool),
        committer: Some(committer),
        closing: Arc::new(closing),
        description: path.display().to_string(),
        removals: Default::default(),
        wal: progress,
    })
}

/// Closes every connection, checkpointing the WAL so the file is whole on its own.
pub(super) async fn close(pool: &SqlitePool) {
    pool.close().await;
    // The last connection to close removes the WAL, but only when it gets the file's
    // exclusive lock at that moment; under load the pool's last close now and then did not
    // (an empty `-wal` and a `-shm` stayed behind, seen in CI). A lone connection opened
    // and closed after every other one is gone finishes the job.
    let options = pool.connect_options();
    let wal = format!("{}-wal", options.get_filename().display());
    if Path::new(&wal).exists() {
        use sqlx::{ConnectOptions, Connection};
        match options.as_ref().clone().connect().await {
            Ok(conn) => {
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, "closing the WAL's last connection failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not reopen to remove the WAL"),
        }
    }
}

/// A transaction that holds the write lock from its first statement. SQLite's default
/// (deferred) transaction that reads and then writes fails at once with "database is
/// locked" (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out) when another writer
/// committed in between; every read-then-write here (compare-and-set steps, leases, token
/// use, revocation) therefore starts immediate and waits its turn instead.
pub(super) async fn write_transaction(pool: &SqlitePool) -> Result<Tx, StoreError> {
    Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?))
}
