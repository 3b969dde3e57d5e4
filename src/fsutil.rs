//! File writes that never leave a half-written file behind.
//!
//! etcd re-reads certificates and CRLs on every handshake, so a reader must see either the old
//! file or the new one: write to a temporary file in the same directory, fsync it, rename it
//! over the target and fsync the directory. Private keys are created with mode 0600 from the
//! start, never chmod-ed afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Mode for private keys.
pub const PRIVATE: u32 = 0o600;
/// Mode for certificates, bundles and CRLs.
pub const PUBLIC: u32 = 0o644;

/// Atomically replaces (or creates) `path` with `contents` and the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    write_all_atomic(&[(path, contents, mode)])
}

/// Replaces several files (a certificate, its key, the trust bundle) so that a failure leaves
/// all of them as they were: every new file is written and fsynced next to its target before
/// the first rename, then the renames follow one another. etcd re-reads a certificate and its
/// key on every handshake; it can see a mismatched pair only between two renames, never while
/// a slow or failing write is under way.
pub fn write_all_atomic(files: &[(&Path, &[u8], u32)]) -> Result<(), FsError> {
    let staged = files
        .iter()
        .map(|&(path, contents, mode)| stage(path, contents, mode).map(|tmp| (path, tmp)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dirs: Vec<&Path> = Vec::new();
    for (path, tmp) in staged {
        tmp.persist(path)
            .map_err(|e| FsError::new("rename into place", path, e.error))?;
        let dir = parent_of(path);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().try_for_each(sync_dir)
}

/// A temporary file next to `path` holding `contents` with `mode`, fsynced; removed if dropped.
fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<tempfile::NamedTempFile, FsError> {
    let mut staged = AtomicFile::create(path, mode)?;
    staged
        .file()
        .write_all(contents)
        .map_err(|e| FsError::new("write", staged.tmp.path(), e))?;
    staged
        .file()
        .sync_all()
        .map_err(|e| FsError::new("fsync", staged.tmp.path(), e))?;
    Ok(staged.tmp)
}

/// A file written in place of `path` a piece at a time (a streamed download, an archive): it
/// replaces `path` only at [`AtomicFile::commit`], fsynced; dropped before that, it is removed
/// and `path` is untouched.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: std::path::PathBuf,
}

impl AtomicFile {
    /// An empty file with `mode` next to `path`.
    pub fn create(path: &Path, mode: u32) -> Result<Self, FsError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(parent_of(path))
            .map_err(|e| FsError::new("create a temporary file next to", path, e))?;
        // The umask may have narrowed the mode; set it exactly.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("set permissions on", tmp.path(), e))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Where it is staged until [`Self::commit`].
    pub fn staged_path(&self) -> &Path {
        self.tmp.path()
    }

    /// fsyncs the file, renames it over `path` and fsyncs the directory.
    pub fn commit(self) -> Result<(), FsError> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| FsError::new("fsync", self.tmp.path(), e))?;
        self.tmp
            .persist(&self.path)
            .map_err(|e| FsError::new("rename into place", &self.path, e.error))?;
        sync_dir(parent_of(&self.path))
    }
}

/// Creates a new file with `mode`, refusing to overwrite anything, and fsyncs it.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| FsError::new("create", path, e))?;
    file.write_all(contents)
        .map_err(|e| FsError::new("write", path, e))?;
    file.sync_all().map_err(|e| FsError::new("fsync", path, e))
}

/// Creates a directory (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(path: &Path) -> Result<(), FsError> {
    fs::create_dir_all(path).map_err(|e| FsError::new("create directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| FsError::new("set permissions on", path, e))
}

/// fsyncs a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("fsync directory", dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_content_with_the_requested_mode_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        write_atomic(&path, b"one", PRIVATE).unwrap();
        write_atomic(&path, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_that_cannot_be_written_leaves_every_file_of_the_set_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("peer.key");
        let cert = dir.path().join("peer.crt");
        write_all_atomic(&[(&key, b"old key", PRIVATE), (&cert, b"old cert", PUBLIC)]).unwrap();
        // The third target's directory does not exist: it fails after the first two are staged.
        let missing = dir.path().join("missing").join("ca.crt");
        let err = write_all_atomic(&[
            (&key, b"new key", PRIVATE),
            (&cert, b"new cert", PUBLIC),
            (&missing, b"bundle", PUBLIC),
        ])
        .unwrap_err();
        assert_eq!(err.path, missing);
        assert_eq!(fs::read(&key).unwrap(), b"old key");
        assert_eq!(fs::read(&cert).unwrap(), b"old cert");
        // No staged temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);

        write_all_atomic(&[(&key, b"new key", PRIVATE), (&cert, b"new cert", PUBLIC)]).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"new key");
        assert_eq!(fs::read(&cert).unwrap(), b"new cert");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        write_new(&path, b"k", PRIVATE).unwrap();
        assert!(write_new(&path, b"other", PRIVATE).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"k");
    }
}
