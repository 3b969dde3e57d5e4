//! A real PostgreSQL server for tests: Debian's `postgresql` binaries, `initdb` into a temporary
//! directory as an unprivileged user (PostgreSQL refuses to run as root), listening on
//! 127.0.0.1 at a port the test chooses. Shared by the unit tests (`src/store`) and the
//! integration tests. The server is stopped by PID when dropped, and dies with the thread that
//! started it (`PR_SET_PDEATHSIG`) if the test process dies first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user PostgreSQL runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// fsync on (the benchmark), or off (tests, which never crash the machine).
    durable: bool,
}

/// The directory of Debian's PostgreSQL binaries (the newest installed).
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not installed ({root:?}: {e}); scripts/test installs it")
        })
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let version = versions
        .last()
        .expect("no PostgreSQL version under /usr/lib/postgresql");
    root.join(version.to_string()).join("bin")
}

fn running_as_root() -> bool {
    // SAFETY-free: geteuid has no preconditions; read through /proc to avoid libc.
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}

/// A command run as the unprivileged user (when root), dying with the thread that spawns it.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    if running_as_root() {
        cmd.args([
            "--reuid",
            UNPRIVILEGED,
            "--regid",
            "nogroup",
            "--clear-groups",
        ]);
    }
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
    cmd
}

fn id_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

impl PgServer {
    /// initdb and start a server on 127.0.0.1:`port`; returns once it accepts connections.
    /// Without fsync: tests never crash the machine, and they run faster.
    pub fn start(port: u16) -> PgServer {
        Self::start_with(port, false)
    }

    /// A server with PostgreSQL's durable defaults (fsync on): what the benchmark measures.
    #[allow(dead_code)] // the benchmarks include this file
    pub fn start_durable(port: u16) -> PgServer {
        Self::start_with(port, true)
    }

    fn start_with(port: u16, durable: bool) -> PgServer {
        remove_stale();
        // Named after this process: only the directories of processes that are gone are stale.
        let dir = tempfile::Builder::new()
            .prefix(&format!("etcd-ca-pg-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        if running_as_root() {
            let (uid, gid) = id_of(UNPRIVILEGED);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let bin = bin_dir();
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "etcdca",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            port,
            child: None,
            durable,
        };
        server.launch();
        server.psql("postgres", "SELECT 1");
        server
    }

    /// Starts the server process (again, after [`PgServer::stop`]).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let bin = bin_dir();
        let port = self.port.to_string();
        let socket_dir = self.dir.path().to_path_buf();
        let fsync = if self.durable {
            "fsync=on"
        } else {
            "fsync=off"
        };
        // Spawned from a thread that lives as long as the process: the server gets SIGKILL
        // when its parent thread ends (PR_SET_PDEATHSIG), i.e. when the test process exits.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = command(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port, "-c", "listen_addresses=127.0.0.1", "-k"])
                .arg(&socket_dir)
                .args([
                    "-c",
                    fsync,
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("postgres starts");
            tx.send(child).unwrap();
            loop {
                std::thread::park();
            }
        });
        self.child = Some(rx.recv().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening comes a moment before accepting logins.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_psql("postgres", "SELECT 1") {
            assert!(Instant::now() < deadline, "postgres does not accept logins");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: clients are disconnected), by PID.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://etcdca@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database.
    pub fn create_database(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// `psql` on database `db` running `sql` (unaligned, tuples only, stopping at an error).
    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new(bin_dir().join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "etcdca", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .stdin(Stdio::null());
        cmd
    }

    fn try_psql(&self, db: &str, sql: &str) -> bool {
        self.psql_command(db, sql)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Runs SQL with psql and returns its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_command(db, sql).output().expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Removes the directories of servers whose test process is gone (one that died, or the unit
/// tests' shared server, which lives until its process exits). A directory of a live process,
/// even one still being initialised, is never touched.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(owner) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("etcd-ca-pg-"))
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
        else {
            continue;
        };
        if !Path::new("/proc").join(&owner).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
