//! The layout of a CA data dir, in one place.
//!
//! ```text
//! DIR/                  mode 0700
//!   etcd-ca.db          SQLite: generations, nodes, certificates, audit trail
//!   policy.toml         the policy this CA enforces
//!   ca/gen-N.crt        CA certificate of generation N
//!   ca/gen-N.key        its private key, mode 0600
//! ```

use std::path::{Path, PathBuf};

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
