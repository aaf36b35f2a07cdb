//! Which file a package is, and whether it may be trusted: a package file
//! is opened once without following a symlink, and everything after (the
//! trust checks, its sha256, the probe's verdict, the real load through
//! `/proc/self/fd/N`) concerns that open file, so the file checked is the
//! file loaded.
//!
//! Trust: the plugins directory and each package (a symlink's target and
//! the directory holding it too) must be owned by root or by healer's own
//! user, and writable by nobody else (group or others); a directory that
//! others may write to is accepted only with the sticky bit, where they
//! cannot replace what they do not own.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A package file as it was when opened: what the probe and the loader
/// compare to be sure they saw the same file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// The file's SHA-256, lowercase hex.
    pub sha256: String,
}

impl Identity {
    /// Whether `path` still is this file by its metadata (no hashing):
    /// same device, inode, size and mtime.
    pub fn still_at(&self, path: &Path) -> bool {
        stat_of(path) == Some((self.dev, self.inode, self.size, self.mtime_ns))
    }

    /// Takes `path`'s current device, inode, size and mtime (the sha256
    /// stays as it was), so [`Identity::still_at`] holds until it changes.
    pub fn restat(&mut self, path: &Path) {
        if let Some((dev, inode, size, mtime_ns)) = stat_of(path) {
            (self.dev, self.inode, self.size, self.mtime_ns) = (dev, inode, size, mtime_ns);
        }
    }
}

/// Device, inode, size and mtime (ns) of `path` itself (not followed).
fn stat_of(path: &Path) -> Option<(u64, u64, u64, i128)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.size(), mtime_ns(&meta)))
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// A package file opened for checking and loading.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub identity: Identity,
}

/// Opens the package at `path` (a symlink is not followed: resolve it
/// first), checks that it is a regular file healer may trust, and reads
/// its identity.
pub fn open(path: &Path) -> Result<Opened, String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| format!("cannot be opened: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot be examined (fstat): {err}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    check_owner_and_mode(&meta, "the file")?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|err| format!("cannot be read: {err}"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let identity = Identity {
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        mtime_ns: mtime_ns(&meta),
        sha256: hex::encode(hasher.finalize()),
    };
    Ok(Opened { file, identity })
}

/// Checks the plugins directory itself.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir)
        .map_err(|err| format!("cannot read the plugins directory: {err}"))?;
    check_owner_and_mode(&meta, "the plugins directory")
}

/// Where a directory entry named `*.so` leads, checked for trust before
/// anything loads it: the file itself, or a symlink's final target (whose
/// directory is checked too). [`open`] checks the open file again.
pub fn resolve(entry: &Path) -> Result<PathBuf, String> {
    let meta =
        std::fs::symlink_metadata(entry).map_err(|err| format!("cannot be examined: {err}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a plugin package".to_owned());
    }
    if !meta.file_type().is_symlink() {
        if !meta.is_file() {
            return Err("is not a regular file".to_owned());
        }
        check_owner_and_mode(&meta, "the file")?;
        return Ok(entry.to_owned());
    }
    let target = std::fs::canonicalize(entry).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => "is a symlink to nothing (dangling)".to_owned(),
        _ => format!("is a symlink that cannot be resolved: {err}"),
    })?;
    if let Some(parent) = target.parent() {
        let meta = std::fs::metadata(parent).map_err(|err| {
            format!(
                "links to {}, whose directory cannot be examined: {err}",
                target.display()
            )
        })?;
        check_owner_and_mode(&meta, "the directory it links into")
            .map_err(|err| format!("links to {}: {err}", target.display()))?;
    }
    let meta = std::fs::metadata(&target).map_err(|err| {
        format!(
            "links to {}, which cannot be examined: {err}",
            target.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "links to {}, which is not a regular file",
            target.display()
        ));
    }
    check_owner_and_mode(&meta, "the file it links to")
        .map_err(|err| format!("links to {}: {err}", target.display()))?;
    Ok(target)
}

/// Owned by root or healer's user; writable by neither group nor others
/// (a sticky directory excepted).
fn check_owner_and_mode(meta: &Metadata, what: &str) -> Result<(), String> {
    let own = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != own {
        return Err(format!(
            "{what} is owned by uid {}, not root or healer's own user (uid {own}): refused",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(format!(
            "{what} is writable by {who} (mode {mode:04o}), so anyone could replace the code healer runs as its user: refused (chmod go-w)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"\x7fELF and more").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_file_anyone_may_write_is_refused_and_a_private_one_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let open_to_all = file_with_mode(dir.path(), "a.so", 0o666);
        let group_writable = file_with_mode(dir.path(), "b.so", 0o664);
        let private = file_with_mode(dir.path(), "c.so", 0o755);

        let err = open(&open_to_all).unwrap_err();
        assert!(
            err.contains("writable by group and others (mode 0666)"),
            "{err}"
        );
        let err = open(&group_writable).unwrap_err();
        assert!(err.contains("writable by its group (mode 0664)"), "{err}");
        let opened = open(&private).unwrap();
        assert_eq!(opened.identity.size, 13);
        assert_eq!(opened.identity.sha256.len(), 64);
    }

    #[test]
    fn a_symlink_is_never_followed_by_open_and_is_resolved_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_with_mode(dir.path(), "real.so", 0o755);
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open(&link).unwrap_err().contains("cannot be opened"));
        assert_eq!(
            resolve(&link).unwrap(),
            std::fs::canonicalize(&target).unwrap()
        );

        let dangling = dir.path().join("dangling.so");
        std::os::unix::fs::symlink(dir.path().join("gone.so"), &dangling).unwrap();
        assert!(resolve(&dangling).unwrap_err().contains("dangling"));

        let sub = dir.path().join("dir.so");
        std::fs::create_dir(&sub).unwrap();
        assert!(resolve(&sub).unwrap_err().contains("is a directory"));
    }

    #[test]
    fn a_world_writable_directory_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&plugins).unwrap_err().contains("mode 0777"));
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_dir(&plugins).is_ok());
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_dir(&plugins).is_ok());
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_mode(dir.path(), "theirs.so", 0o755);
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = open(&path).unwrap_err();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}
