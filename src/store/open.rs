//! Which database a store is on: [`StoreConfig`] (a SQLite file or a PostgreSQL URL), opening
//! and closing, write transactions, and the few operations whose form differs by backend
//! (copies for backup, giving space back, the integrity check).

use std::path::{Path, PathBuf};

use super::*;

/// Where the store keeps its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded default: one SQLite file in the data dir.
    Sqlite(PathBuf),
    /// A PostgreSQL database several servers share (`postgres://user@host:port/db`).
    Postgres(String),
}

impl StoreConfig {
    /// A `postgres://` or `postgresql://` URL, else the SQLite file `default`.
    pub fn from_url_or(url: Option<&str>, default: PathBuf) -> Result<Self, StoreError> {
        match url {
            None => Ok(StoreConfig::Sqlite(default)),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(StoreConfig::Postgres(u.to_string()))
            }
            Some(u) => Err(StoreError::Config(format!(
                "--database takes a URL that starts with postgres:// (the value given {}); without it the CA uses the SQLite file in its data dir",
                match u.split_once("://") {
                    Some((scheme, _)) => format!("starts with {scheme}://"),
                    // It may hold a password: never printed.
                    None => "has no scheme".to_string(),
                }
            ))),
        }
    }

    /// The database for messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite(path) => path.display().to_string(),
            StoreConfig::Postgres(url) => super::postgres::redact(url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreConfig::Postgres(_))
    }
}

/// Whether opening may change the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Apply what is missing (SQLite always; PostgreSQL with `etcd-ca migrate` or
    /// `serve --migrate`).
    Apply,
    /// Refuse a database that lacks a migration; write nothing (a read-only standby).
    Check,
}

impl Store {
    /// Creates the SQLite database file and applies every migration.
    pub async fn create(path: &Path) -> Result<Self, StoreError> {
        sqlite::open(path, true).await
    }

    /// Opens an existing SQLite database, applying any migrations a newer etcd-ca added.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        sqlite::open(path, false).await
    }

    /// Opens the configured database. A SQLite file must exist unless `create`; PostgreSQL
    /// is migrated only when `migrations` says so.
    pub async fn open_config(
        config: &StoreConfig,
        create: bool,
        migrations: Migrations,
    ) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Sqlite(path) => sqlite::open(path, create).await,
            StoreConfig::Postgres(url) => postgres::open(url, migrations).await,
        }
    }

    pub(super) fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// The database for messages: the SQLite file, or the PostgreSQL URL without password.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Closes every connection (on SQLite, checkpointing the WAL so the file is whole on its
    /// own).
    pub async fn close(&self) {
        self.closing.send_replace(true);
        match &self.pool {
            Pool::Sqlite(p) => sqlite::close(p).await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// A transaction that writes after it reads, serialised with every other such transaction
    /// on the database (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory
    /// lock, across every server sharing the database).
    pub(super) async fn write_transaction(&self) -> Result<Tx, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => sqlite::write_transaction(p).await,
            Pool::Postgres(p) => postgres::write_transaction(p).await,
        }
    }

    /// A read-only transaction that sees one point in time throughout (a copy's source).
    pub(super) async fn read_snapshot(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => {
                let mut tx = Tx::Postgres(p.begin().await?);
                tx.execute(Sql::new(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                ))
                .await?;
                tx
            }
        })
    }

    /// A consistent copy of the whole store as a new SQLite file at `path`. SQLite: copied in
    /// steps of short read transactions, so the WAL keeps being checkpointed meanwhile (see
    /// [`live_copy`]); PostgreSQL: every table read in one repeatable-read
    /// transaction (its MVCC keeps writers going).
    /// Returns how many certificates the copy holds.
    pub async fn backup_into(&self, path: &Path) -> Result<i64, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => {
                live_copy::live_sqlite_copy(self, path, live_copy::STEP, async || {}).await
            }
            Pool::Postgres(_) => copy::to_new_sqlite(self, path).await,
        }
    }

    /// Gives up to 1,000 free pages back to the file system (SQLite's incremental vacuum;
    /// nothing in a database created before auto-vacuum was set, where they are reused
    /// instead). PostgreSQL's autovacuum does this on its own.
    pub async fn reclaim_space(&self) -> Result<(), StoreError> {
        if self.backend() == Backend::Sqlite {
            self.pool
                .execute(Sql::new("PRAGMA incremental_vacuum(1000)"))
                .await?;
        }
        Ok(())
    }

    /// SQLite's own consistency check of the whole file. PostgreSQL checks its pages as it
    /// reads them: nothing to run there.
    pub async fn integrity_check(&self) -> Result<Integrity, StoreError> {
        if self.backend() == Backend::Postgres {
            return Ok(Integrity::Sound);
        }
        let rows: Vec<String> = self
            .pool
            .scalars(Sql::new("PRAGMA integrity_check"))
            .await?;
        Ok(if rows.len() == 1 && rows[0] == "ok" {
            Integrity::Sound
        } else {
            Integrity::Damaged(rows)
        })
    }
}
