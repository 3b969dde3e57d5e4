//! The layout of a CA data dir, in one place.
//!
//! ```text
//! DIR/                  mode 0700
//!   etcd-ca.db          SQLite: generations, nodes, certificates, audit trail
//!   policy.toml         the policy this CA enforces
//!   ca/gen-N.crt        CA certificate of generation N
//!   ca/gen-N.key        its private key, mode 0600
//!   ca/rotation.lock    held while a rotation starts
//!   serve.lock          held by the one `etcd-ca serve` of this dir; holds its PID
//!   server/tls.crt      the server's own TLS certificate, reused across restarts
//!   server/tls.key      its key, sealed like the CA keys, mode 0600
//! ```

use std::path::{Path, PathBuf};

/// Why `serve` cannot take its data dir.
#[derive(Debug, thiserror::Error)]
pub enum ServeLockError {
    #[error("another etcd-ca serve (PID {pid}) is using {}; stop it first, or give this one another --data-dir", dir.display())]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths inside one data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("etcd-ca.db")
    }

    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.toml")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// Key file of a generation, relative to the data dir (as the store records it).
    pub fn generation_key_file(generation: i64) -> String {
        format!("ca/gen-{generation}.key")
    }

    pub fn generation_cert_file(generation: i64) -> String {
        format!("ca/gen-{generation}.crt")
    }

    /// Takes the data dir for one server: a second `serve` on the same dir is refused with the
    /// PID of the first. The kernel drops the lock when the process ends, however it ends.
    pub fn lock_for_server(&self) -> Result<std::fs::File, ServeLockError> {
        use std::io::{Read, Seek, Write};
        let path = self.root.join("serve.lock");
        let io = |source| ServeLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(ServeLockError::Held {
                    dir: self.root.clone(),
                    pid: holder.trim().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(file)
    }

    pub fn resolve(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The first file that shows this dir already holds a CA, if any.
    pub fn existing_ca_marker(&self) -> Option<PathBuf> {
        [self.database(), self.ca_dir(), self.policy()]
            .into_iter()
            .find(|p| p.exists())
    }
}
