//! Backup of a whole CA: database, policy, CA certificates and (sealed) keys in one tar file,
//! taken online and streamed (`restore` brings it back).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::AuditAction;
use super::{Authority, AuthorityError, Fault};
use crate::fsutil::{self, FsError};

/// Where an archive is written: a file being staged, or an unnamed one.
trait Archive: Send + 'static {
    fn file(&mut self) -> &mut std::fs::File;
}

impl Archive for fsutil::AtomicFile {
    fn file(&mut self) -> &mut std::fs::File {
        fsutil::AtomicFile::file(self)
    }
}

impl Archive for std::fs::File {
    fn file(&mut self) -> &mut std::fs::File {
        self
    }
}

/// What a backup holds.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub generations: usize,
    pub certificates: i64,
    pub files: Vec<String>,
}

/// Names a backup may contain (nothing else is ever written on restore).
pub(super) fn allowed(name: &str) -> bool {
    name == "etcd-ca.db"
        || name == "policy.toml"
        || name.strip_prefix("ca/gen-").is_some_and(|rest| {
            let (number, ext) = rest.split_once('.').unwrap_or(("", ""));
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && (ext == "crt" || ext == "key")
        })
}

/// What an archive taken by [`Authority::backup_archive`] holds, besides its bytes.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub generations: usize,
    pub certificates: i64,
    pub files: Vec<String>,
    /// The archive's size.
    pub bytes: u64,
}

/// The names of the files in a backup archive, in order (what a remote backup reports), read
/// entry by entry.
pub fn archive_names(archive: impl Read) -> Result<Vec<String>, AuthorityError> {
    let not_a_backup = |e: std::io::Error| AuthorityError::Restore {
        reason: format!("the backup received is not an archive: {e}"),
    };
    let mut tar = tar::Archive::new(archive);
    let mut names = Vec::new();
    for entry in tar.entries().map_err(not_a_backup)? {
        let entry = entry.map_err(not_a_backup)?;
        let path = entry.path().map_err(not_a_backup)?;
        names.push(path.to_string_lossy().into_owned());
    }
    Ok(names)
}

impl Authority {
    /// Writes a consistent copy of this (possibly running) CA to `out` (mode 0600), replacing
    /// it only once the whole archive is written.
    pub async fn backup(
        &self,
        out: &Path,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<BackupReport, AuthorityError> {
        let staged = fsutil::AtomicFile::create(out, fsutil::PRIVATE)?;
        let (mut staged, summary) = self.write_backup(staged, actor, now).await?;
        staged
            .file()
            .flush()
            .map_err(|e| FsError::new("write", out, e))?;
        staged.commit()?;
        Ok(BackupReport {
            file: out.to_path_buf(),
            generations: summary.generations,
            certificates: summary.certificates,
            files: summary.files,
        })
    }

    /// A consistent copy of this (possibly running) CA as one tar archive in an unnamed file
    /// (mode 0600, in the data dir, gone once closed), read from its start: what the API
    /// streams to an admin. Recorded in the audit trail as taken by `actor`.
    pub async fn backup_archive(
        &self,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(std::fs::File, BackupSummary), AuthorityError> {
        let root = self.dir.root();
        let file =
            tempfile::tempfile_in(root).map_err(|e| FsError::new("create a file in", root, e))?;
        let (mut file, summary) = self.write_backup(file, actor, now).await?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| FsError::new("read back", root, e))?;
        Ok((file, summary))
    }

    /// Writes the archive into `out`: the database (an online copy staged in the data dir,
    /// which only its owner can read), the policy, and every CA certificate and sealed key,
    /// each streamed from its file (memory stays flat whatever the database's size).
    async fn write_backup<W: Archive>(
        &self,
        mut out: W,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(W, BackupSummary), AuthorityError> {
        let root = self.dir.root();
        let staging = tempfile::Builder::new()
            .prefix(".backup.")
            .tempdir_in(root)
            .map_err(|e| FsError::new("create a staging directory in", root, e))?;
        let db_copy = staging.path().join("etcd-ca.db");
        // The count printed and audited is the copy's, not the live store's a moment later.
        let certificates = self.store.backup_into(&db_copy).await?;

        let mut files = vec![
            ("etcd-ca.db".to_string(), db_copy),
            ("policy.toml".to_string(), self.dir.policy()),
        ];
        // On a shared database the generations' certificates come from their rows (this
        // server's dir may hold none) and their sealed keys are in the database copy.
        let ca_dir = if self.store.holds_keys() {
            let ca_dir = staging.path().join("ca");
            fsutil::create_private_dir(&ca_dir)?;
            for g in self.generations() {
                let path = ca_dir.join(format!("gen-{}.crt", g.id));
                fsutil::write_new(&path, g.cert_pem.as_bytes(), fsutil::PUBLIC)?;
            }
            ca_dir
        } else {
            self.dir.ca_dir()
        };
        let mut entries: Vec<String> = std::fs::read_dir(&ca_dir)
            .map_err(|e| FsError::new("read", &ca_dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .map(|n| format!("ca/{n}"))
            .filter(|n| allowed(n))
            .collect();
        entries.sort();
        let in_ca_dir = |name: &str| ca_dir.join(name.trim_start_matches("ca/"));
        files.extend(entries.into_iter().map(|n| (n.clone(), in_ca_dir(&n))));

        // Copying a large database is seconds of blocking I/O: off the async workers.
        let archived = tokio::task::spawn_blocking(move || {
            let written = {
                let mut tar = tar::Builder::new(out.file());
                for (name, path) in &files {
                    tar.append_path_with_name(path, name)
                        .map_err(|e| FsError::new("archive", path, e))?;
                }
                tar.finish()
                    .map_err(|e| FsError::new("archive", &files[0].1, e))?;
                drop(tar);
                out.file()
                    .stream_position()
                    .map_err(|e| FsError::new("archive", &files[0].1, e))?
            };
            drop(staging);
            Ok::<_, FsError>((out, files, written))
        })
        .await;
        let (out, files, bytes) = match archived {
            Ok(done) => done?,
            Err(e) => {
                return Err(Fault::Fs(FsError::new(
                    "archive",
                    root,
                    std::io::Error::other(e.to_string()),
                ))
                .into())
            }
        };
        let event = AuditAction::Backup.event(
            actor,
            now,
            None,
            None,
            format!("{bytes} bytes, {certificates} certificates"),
        );
        self.store.record_audit(&event).await?;
        Ok((
            out,
            BackupSummary {
                generations: self.generations().len(),
                certificates,
                files: files.into_iter().map(|(n, _)| n).collect(),
                bytes,
            },
        ))
    }
}
