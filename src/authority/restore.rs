//! Restore of a backup on a fresh host into a new data dir: unpacked and checked in a staging
//! directory, then put in place whole. A backup knows nothing that happened after it was taken;
//! the restore says so, and re-applies the revocations made since from a CRL (etcd's `ca.crl`
//! on any member lists every revocation in force), so that restoring never silently un-revokes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::backup::allowed;
use super::keyfile::Passphrase;
use super::{AuditAction, Authority, AuthorityError, BackupReport, DataDir, RevocationReason};
use crate::duration::rfc3339;
use crate::fsutil::{self, FsError};
use crate::policy::Policy;
use crate::store::{GenerationRecord, Store};

/// What a restore brought back, how recent it is, and what it re-applied from a CRL.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    #[serde(flatten)]
    pub backup: BackupReport,
    /// The newest event in the backup's audit trail: nothing after it is known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub latest_record: Option<OffsetDateTime>,
    pub recovered: Option<Recovered>,
    /// Admin tokens revoked and unused bootstrap tokens withdrawn (unless kept).
    pub tokens_withdrawn: Option<(u64, u64)>,
}

/// What a restore does about revocations made after the backup, which it cannot know.
#[derive(Clone, Copy, Debug)]
pub enum LaterRevocations<'a> {
    /// Re-apply them from this CRL (etcd's `ca.crl`).
    FromCrl(&'a Path),
    /// The operator accepts that they are undone.
    Undone,
}

/// Revocations re-applied from a CRL.
#[derive(Debug, Serialize)]
pub struct Recovered {
    pub crl_number: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub crl_this_update: OffsetDateTime,
    /// The generation that signed the CRL.
    pub generation: i64,
    /// Certificates the backup held as valid, revoked again.
    pub revoked_again: Vec<String>,
    pub already_revoked: usize,
    /// Revoked serials of certificates issued after the backup (it holds no record of them):
    /// kept revoked, so etcd's CRL keeps listing them.
    pub issued_after_backup: Vec<String>,
    /// The CRL was issued before the backup's newest record: it cannot hold what came after.
    pub older_than_backup: bool,
}

impl Authority {
    /// Restores a backup into `dir`, which must not hold a CA. Everything is unpacked and
    /// checked in a staging directory first (regular files only, every key where the store
    /// says, the CA opens, and with `passphrase` every trusted key opens and matches its
    /// certificate); nothing is left behind on failure.
    pub async fn restore(
        archive: &Path,
        dir: &Path,
        passphrase: Option<Passphrase>,
        later: LaterRevocations<'_>,
        keep_tokens: bool,
    ) -> Result<RestoreReport, AuthorityError> {
        let layout = DataDir::new(dir);
        if let Some(found) = layout.existing_ca_marker() {
            return Err(AuthorityError::AlreadyInitialised {
                dir: dir.to_path_buf(),
                found,
            });
        }
        let parent = fsutil::parent_of(dir);
        std::fs::create_dir_all(parent).map_err(|e| FsError::new("create directory", parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".etcd-ca-restore.")
            .tempdir_in(parent)
            .map_err(|e| FsError::new("create a staging directory in", parent, e))?;
        let staged = DataDir::new(staging.path());
        fsutil::create_private_dir(staging.path())?;
        fsutil::create_private_dir(&staged.ca_dir())?;

        let refuse = |reason: String| AuthorityError::Restore { reason };
        // What the tar reader says about a file that is not a tar archive ("numeric field was
        // not a number") names no cause a person can act on.
        let not_a_backup = |_: std::io::Error| {
            AuthorityError::Restore {
            reason: format!(
                "{} is not an etcd-ca backup, or a damaged one (not the whole archive `etcd-ca backup` writes)",
                archive.display()
            ),
        }
        };
        let file = std::fs::File::open(archive).map_err(|e| FsError::new("open", archive, e))?;
        let mut tar = tar::Archive::new(file);
        let mut names = Vec::new();
        for entry in tar.entries().map_err(not_a_backup)? {
            let mut entry = entry.map_err(not_a_backup)?;
            let name = entry
                .path()
                .map_err(not_a_backup)?
                .to_string_lossy()
                .into_owned();
            if !allowed(&name) {
                return Err(refuse(format!(
                    "the backup holds an unexpected file {name:?}"
                )));
            }
            let kind = entry.header().entry_type();
            if !kind.is_file() {
                return Err(refuse(format!(
                    "the backup holds {name:?} as a {kind:?} entry, not a regular file"
                )));
            }
            let mode = if name.ends_with(".key") || name == "etcd-ca.db" {
                fsutil::PRIVATE
            } else {
                fsutil::PUBLIC
            };
            // Copied as it is read: a database of any size passes through a small buffer.
            let target = staged.resolve(&name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .map_err(|e| FsError::new("create", &target, e))?;
            std::io::copy(&mut entry, &mut file).map_err(|e| FsError::new("write", &target, e))?;
            file.sync_all()
                .map_err(|e| FsError::new("fsync", &target, e))?;
            names.push(name);
        }
        if !names.iter().any(|n| n == "etcd-ca.db") {
            return Err(refuse("the backup holds no database".into()));
        }
        let policy = super::read_policy(&staged.policy())?;
        let store = Store::open(&staged.database()).await?;
        let checked = async {
            if let crate::store::Integrity::Damaged(problems) = store.integrity_check().await? {
                return Err(refuse(format!(
                    "the backed-up database is damaged: {}",
                    problems.join("; ")
                )));
            }
            let generations = store.generations().await?;
            for g in generations
                .iter()
                .filter(|g| g.state != crate::store::GenerationState::Retired)
            {
                // A backup of a shared database holds the sealed keys in its rows.
                if g.key_pem.is_some() {
                    continue;
                }
                // Keys live where `init` and `rotate start` put them, nowhere else.
                if g.key_file != DataDir::generation_key_file(g.id) {
                    return Err(refuse(format!(
                        "the database names {:?} as the key of CA generation {}; it must be {}",
                        g.key_file,
                        g.id,
                        DataDir::generation_key_file(g.id)
                    )));
                }
                if !staged.resolve(&g.key_file).is_file() {
                    return Err(refuse(format!(
                        "the key of CA generation {} is missing",
                        g.id
                    )));
                }
            }
            let (certificates, _) = store.certificate_counts().await?;
            let latest_record = store.latest_record().await?;
            let now = crate::clock::now();
            let recovered = match later {
                LaterRevocations::FromCrl(path) => Some(
                    reapply_crl(&store, &generations, &policy, path, latest_record).await?,
                ),
                LaterRevocations::Undone => None,
            };
            // CRLs published after the backup carry numbers it does not know: the next ones
            // start past any of them (numbers are seconds since 1970 from here on).
            store.raise_crl_numbers(now.unix_timestamp()).await?;
            let tokens_withdrawn = match keep_tokens {
                true => None,
                false => Some(store.withdraw_tokens(now).await?),
            };
            // The restored trail says where it came from and where its knowledge ends.
            let event = AuditAction::Restore.event(
                "etcd-ca restore",
                crate::clock::now(),
                None,
                None,
                format!(
                    "from {}; the backup knows nothing after {}; {}",
                    archive.display(),
                    latest_record.map_or_else(|| "its taking".into(), rfc3339),
                    match &recovered {
                        Some(r) => format!(
                            "{} revocations re-applied from a CRL, {} of certificates issued after it: {}",
                            r.revoked_again.len() + r.issued_after_backup.len(),
                            r.issued_after_backup.len(),
                            r.issued_after_backup.join(" ")
                        ),
                        None => "restored with --no-crl: later revocations are undone".into(),
                    }
                ),
            );
            store.record_audit(&event).await?;
            Ok((
                generations.len(),
                certificates,
                latest_record,
                recovered,
                tokens_withdrawn,
            ))
        }
        .await;
        store.close().await;
        let (generations, certificates, latest_record, recovered, tokens_withdrawn) = checked?;
        // The restored CA must open (and, given the passphrase, sign) before it is put in place.
        let restored = Authority::open(staging.path())
            .await?
            .with_passphrase(passphrase);
        let keys = match restored.passphrase.is_some() {
            true => restored.check_keys(),
            false => Ok(()),
        };
        restored.close().await;
        keys?;
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| FsError::new("replace", dir, e))?;
        }
        let staging = staging.keep();
        std::fs::rename(&staging, dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            FsError::new("move into place", dir, e)
        })?;
        fsutil::sync_dir(parent)?;
        Ok(RestoreReport {
            backup: BackupReport {
                file: archive.to_path_buf(),
                generations,
                certificates,
                files: names,
            },
            latest_record,
            recovered,
            tokens_withdrawn,
        })
    }
}

/// Re-applies the revocations of the CRL at `path` (DER or PEM, signed by one of this CA's
/// generations) to the staged store, and raises that generation's CRL counter past its number.
async fn reapply_crl(
    store: &Store,
    generations: &[GenerationRecord],
    policy: &Policy,
    path: &Path,
    latest_record: Option<OffsetDateTime>,
) -> Result<Recovered, AuthorityError> {
    let bytes = std::fs::read(path).map_err(|e| FsError::new("read", path, e))?;
    let refuse = |reason: String| AuthorityError::Restore { reason };
    let (der, crl) = crate::pki::crl_contents(&bytes)
        .map_err(|e| refuse(format!("{} is not a CRL: {e}", path.display())))?;
    let signer = generations
        .iter()
        .find(|g| {
            g.cert_der()
                .is_some_and(|ca| crate::pki::crl_issued_by(&der, &ca))
        })
        .ok_or_else(|| {
            refuse(format!(
                "{} was not signed by this CA (by none of its {} generations): give a ca.crl this CA published",
                path.display(),
                generations.len()
            ))
        })?;
    let revoked: Vec<(String, OffsetDateTime, String)> = crl
        .revoked
        .iter()
        .map(|(serial, at, code)| {
            (
                serial.clone(),
                *at,
                RevocationReason::from_code(*code).name().to_string(),
            )
        })
        .collect();
    let longest = super::to_time(policy.longest_lifetime());
    let now = crate::clock::now();
    let reapplied = store
        .reapply_revocations(&revoked, |at| at + longest, "etcd-ca restore", now)
        .await?;
    if let Some(number) = crl.number {
        store
            .raise_crl_number(signer.id, i64::try_from(number).unwrap_or(i64::MAX))
            .await?;
    }
    Ok(Recovered {
        crl_number: crl.number,
        crl_this_update: crl.this_update,
        generation: signer.id,
        revoked_again: reapplied.revoked_again,
        already_revoked: reapplied.already_revoked,
        issued_after_backup: reapplied.unknown,
        older_than_backup: latest_record.is_some_and(|at| crl.this_update < at),
    })
}
