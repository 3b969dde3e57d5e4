//! What is PostgreSQL's own: connecting (a URL, its password never in a message), migrations
//! applied only when asked (so a server can start on a read-only standby), write transactions
//! serialised across every server by an advisory lock, issuance in its own transaction (no
//! group committer: several servers insert at once, each under the constraints), and telling
//! a database that is down or read-only from a fault.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory lock every read-then-write transaction takes (any constant: only etcd-ca's
/// own transactions take it). "etcd-ca" in ASCII.
const WRITE_LOCK: i64 = 0x0065_7463_642d_6361;

/// How long a request waits for a connection before the store reports the database
/// unavailable (a 503), rather than hanging while PostgreSQL is down (the pool retries the
/// connection until then). A client with several servers then tries the next one at once.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The URL without its password.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

pub(super) async fn open(url: &str, migrations: Migrations) -> Result<Store, StoreError> {
    let database = redact(url);
    let options: PgConnectOptions = url.parse().map_err(|source| StoreError::Open {
        database: database.clone(),
        source,
    })?;
    // One connection first: its error says why (refused, password, no such database), where
    // the pool would only say it timed out.
    {
        use sqlx::{ConnectOptions, Connection};
        let probe = options.connect().await.map_err(|source| StoreError::Open {
            database: database.clone(),
            source,
        })?;
        let _ = probe.close().await;
    }
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.application_name("etcd-ca"))
        .await
        .map_err(|source| StoreError::Open {
            database: database.clone(),
            source,
        })?;
    let result = match migrations {
        Migrations::Apply => MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                database: database.clone(),
                source,
            }),
        Migrations::Check => check_migrated(&pool, &database).await,
    };
    if let Err(e) = result {
        pool.close().await;
        return Err(e);
    }
    let (closing, _) = tokio::sync::watch::channel(false);
    Ok(Store {
        pool: Pool::Postgres(pool),
        committer: None,
        closing: std::sync::Arc::new(closing),
        description: database,
        removals: Default::default(),
        wal: Default::default(),
    })
}

/// Refuses a database that lacks one of this version's migrations, writing nothing.
async fn check_migrated(pool: &PgPool, database: &str) -> Result<(), StoreError> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(v) => v,
        // undefined_table: nothing was ever migrated.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::NotMigrated {
            database: database.to_string(),
            missing,
        })
    }
}

pub(super) async fn write_transaction(pool: &PgPool) -> Result<Tx, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(Tx::Postgres(tx))
}

/// Records issued certificates, their nodes and audit events in one transaction. Servers
/// issue at once without a lock: serials are a primary key, node rows and current
/// certificates are upserts; a deadlock between two (PostgreSQL aborts one) is retried.
pub(super) async fn record_issues(pool: &PgPool, issues: &[IssueRecord]) -> Result<(), StoreError> {
    let nodes: Vec<_> = issues.iter().map(|i| (&i.node, i.cert.issued_at)).collect();
    let certs: Vec<_> = issues.iter().map(|i| &i.cert).collect();
    let events: Vec<_> = issues.iter().map(|i| &i.event).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let mut tx = Tx::Postgres(pool.begin().await?);
            upsert_nodes(&mut tx, &nodes).await?;
            insert_certificates(&mut tx, &certs).await?;
            insert_audits(&mut tx, &events).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Err(StoreError::Sql(sqlx::Error::Database(e)))
                if attempt < 3 && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
            {
                tracing::debug!(error = %e, attempt, "issuance transaction retried");
            }
            other => return other,
        }
    }
}

/// Whether a PostgreSQL error means the database cannot take writes or cannot be reached
/// (a 503 for the caller) rather than a fault.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // read_only_sql_transaction: a standby.
            Some("25006") => StoreError::ReadOnly,
            // admin_shutdown, crash_shutdown, cannot_connect_now, connection exceptions.
            Some("57P01" | "57P02" | "57P03") => StoreError::Unavailable(e.to_string()),
            Some(c) if c.starts_with("08") => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Sql(e),
        },
        _ => StoreError::Sql(e),
    }
}
