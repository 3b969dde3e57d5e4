//! The databases the store's tests run on: a SQLite file in a temporary directory, or a
//! database of its own on one PostgreSQL server the test process starts (`initdb` as an
//! unprivileged user, port 55431; see `tests/it/postgres_server.rs`). `on_both_backends!`
//! runs a test body once on each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::*;

#[path = "../../tests/it/postgres_server.rs"]
#[allow(dead_code)]
mod postgres_server;

/// The port of the unit tests' PostgreSQL (no other test uses it).
const PORT: u16 = 55431;

static SERVER: OnceLock<postgres_server::PgServer> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Keeps a test's database alive: the SQLite file's directory.
pub(super) struct Keep(Option<tempfile::TempDir>);

impl Keep {
    /// The SQLite file's directory (none on PostgreSQL).
    pub(super) fn path(&self) -> Option<&std::path::Path> {
        self.0.as_ref().map(|d| d.path())
    }
}

/// An empty, migrated store on `backend`.
pub(super) async fn empty_store(backend: Backend) -> (Store, Keep) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::create(&dir.path().join("ca.db")).await.unwrap();
            (store, Keep(Some(dir)))
        }
        Backend::Postgres => {
            let server = SERVER.get_or_init(|| postgres_server::PgServer::start(PORT));
            let db = format!(
                "unit{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            );
            server.create_database(&db);
            let config = StoreConfig::Postgres(server.url(&db));
            let store = Store::open_config(&config, false, Migrations::Apply)
                .await
                .unwrap();
            (store, Keep(None))
        }
    }
}

/// Runs each test body (an `async fn` taking the backend) as two tests, `sqlite` and
/// `postgres`, in a module named after the test.
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn body($backend: $crate::store::sql::Backend) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body($crate::store::sql::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    body($crate::store::sql::Backend::Postgres).await
                }
            }
        )*
    };
}
pub(super) use on_both_backends;
