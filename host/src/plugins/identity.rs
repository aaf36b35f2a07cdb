//! Which file a package is, and whether it may be trusted: a package file
//! is opened once without following a symlink, and everything after (the
//! trust checks, its sha256, the probe's verdict, the real load through
//! `/proc/self/fd/N`) concerns that open file, so the file checked is the
//! file loaded.
//!
//! Trust: the plugins directory and each package (a symlink's target and
//! the directory holding it too) must be owned by root or by healer's own
//! user, and writable by nobody else (group or others). A sticky directory
//! is no exception: the sticky bit stops others replacing what they do not
//! own, not adding packages of their own. A symlink is checked by its own
//! owner (`lstat`) as well as by its target, and so is every further link
//! on the way and the directory holding it: a link another user made to a
//! root-owned file is still that user's choice of what healer runs.

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
        stat_of(path) == Some(self.stat())
    }

    /// Takes `path`'s current device, inode, size and mtime (the sha256
    /// stays as it was), so [`Identity::still_at`] holds until it changes.
    pub fn restat(&mut self, path: &Path) {
        if let Some(stat) = stat_of(path) {
            (self.dev, self.inode, self.size, self.mtime_ns) =
                (stat.dev, stat.inode, stat.size, stat.mtime_ns);
        }
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: self.dev,
            inode: self.inode,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// What of a file's metadata tells whether it is still the same file.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    dev: u64,
    inode: u64,
    size: u64,
    /// Nanoseconds since the epoch.
    mtime_ns: i128,
}

/// Device, inode, size and mtime of `path` itself (not followed).
fn stat_of(path: &Path) -> Option<Stat> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(Stat {
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        mtime_ns: mtime_ns(&meta),
    })
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
    check_links(entry, &meta)?;
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

/// How many symlinks [`check_links`] follows, as the kernel does (40).
const MAX_LINKS: usize = 40;

/// Every symlink from `entry` (whose `lstat` is `meta`) to the file it
/// leads to: each owned by root or healer's user (a symlink's own mode
/// means nothing), and each after the first in a directory nobody else may
/// write to (the first is in the plugins directory, checked already). A
/// link to nothing is left to the caller, which names it dangling.
fn check_links(entry: &Path, meta: &Metadata) -> Result<(), String> {
    check_owner(meta, "the symlink itself")?;
    let mut link = entry.to_owned();
    for _ in 0..MAX_LINKS {
        let next = std::fs::read_link(&link)
            .map_err(|err| format!("is a symlink that cannot be read: {err}"))?;
        // A relative link is relative to its own directory; `join` keeps an
        // absolute one as it is.
        let next = match link.parent() {
            Some(dir) => dir.join(next),
            None => next,
        };
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => {
                return Err(format!(
                    "links to {}, which cannot be examined: {err}",
                    next.display()
                ))
            }
        };
        if !meta.file_type().is_symlink() {
            return Ok(());
        }
        let hop = |err: String| format!("links through the symlink {}: {err}", next.display());
        check_owner(&meta, "that symlink").map_err(hop)?;
        if let Some(dir) = next.parent() {
            let dir_meta = std::fs::metadata(dir)
                .map_err(|err| hop(format!("its directory cannot be examined: {err}")))?;
            check_owner_and_mode(&dir_meta, "its directory").map_err(hop)?;
        }
        link = next;
    }
    Err(format!(
        "is a chain of more than {MAX_LINKS} symlinks: refused (link to the package file itself)"
    ))
}

/// Owned by root or healer's user.
fn check_owner(meta: &Metadata, what: &str) -> Result<(), String> {
    let own = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != own {
        return Err(format!(
            "{what} is owned by uid {}, not root or healer's own user (uid {own}): refused (chown it to root, or remove it)",
            meta.uid()
        ));
    }
    Ok(())
}

/// Owned by root or healer's user; writable by neither group nor others,
/// a sticky directory included.
fn check_owner_and_mode(meta: &Metadata, what: &str) -> Result<(), String> {
    check_owner(meta, what)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        let sticky = if meta.is_dir() && mode & 0o1000 != 0 {
            "; the sticky bit still lets them add a package"
        } else {
            ""
        };
        return Err(format!(
            "{what} is writable by {who} (mode {mode:04o}{sticky}), so anyone could replace or add code healer runs as its user: refused (chmod go-w)"
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
    fn a_world_writable_directory_is_refused_sticky_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&plugins).unwrap_err().contains("mode 0777"));
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = check_dir(&plugins).unwrap_err();
        assert!(
            err.starts_with(
                "the plugins directory is writable by group and others (mode 1777; the sticky bit still lets them add a package)"
            ),
            "{err}"
        );
        assert!(err.ends_with("refused (chmod go-w)"), "{err}");
        std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_dir(&plugins).is_ok());
    }

    #[test]
    fn a_symlink_into_a_sticky_world_writable_directory_is_refused() {
        let plugins = tempfile::tempdir().unwrap();
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let target = file_with_mode(shared.path(), "real.so", 0o755);
        let link = plugins.path().join("0.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = resolve(&link).unwrap_err();
        assert!(
            err.contains("the directory it links into is writable by group and others (mode 1777;"),
            "{err}"
        );
    }

    /// A symlink owned by `uid` (by `lchown`, not its target's).
    fn symlink_owned_by(target: &Path, link: &Path, uid: u32) {
        std::os::unix::fs::symlink(target, link).unwrap();
        std::os::unix::fs::lchown(link, Some(uid), None).unwrap();
        assert_eq!(std::fs::symlink_metadata(link).unwrap().uid(), uid);
    }

    #[test]
    fn a_symlink_another_user_made_to_a_root_owned_file_is_refused() {
        let plugins = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = file_with_mode(elsewhere.path(), "fixture.so", 0o755);
        let link = plugins.path().join("0.so");
        symlink_owned_by(&target, &link, 65534);
        let err = resolve(&link).unwrap_err();
        assert!(
            err.starts_with(
                "the symlink itself is owned by uid 65534, not root or healer's own user"
            ),
            "{err}"
        );
        assert!(err.ends_with("(chown it to root, or remove it)"), "{err}");

        // The same link made by root leads to the file, which is trusted.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            resolve(&link).unwrap(),
            std::fs::canonicalize(&target).unwrap()
        );
    }

    #[test]
    fn every_symlink_on_the_way_is_checked_by_its_owner_and_its_directory() {
        let plugins = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = file_with_mode(elsewhere.path(), "fixture.so", 0o755);
        // 0.so -> elsewhere/hop.so (another user's) -> fixture.so
        let hop = elsewhere.path().join("hop.so");
        symlink_owned_by(Path::new("fixture.so"), &hop, 65534);
        let link = plugins.path().join("0.so");
        std::os::unix::fs::symlink(&hop, &link).unwrap();
        let err = resolve(&link).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "links through the symlink {}: that symlink is owned by uid 65534",
                hop.display()
            )),
            "{err}"
        );

        // Root's own hop, but in a directory others may write to.
        std::fs::remove_file(&hop).unwrap();
        std::os::unix::fs::symlink("fixture.so", &hop).unwrap();
        assert_eq!(
            resolve(&link).unwrap(),
            std::fs::canonicalize(&target).unwrap()
        );
        let open_dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let far_hop = open_dir.path().join("hop.so");
        std::os::unix::fs::symlink(&target, &far_hop).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&far_hop, &link).unwrap();
        let err = resolve(&link).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "links through the symlink {}: its directory is writable by group and others (mode 1777;",
                far_hop.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_loop_of_symlinks_is_refused() {
        let plugins = tempfile::tempdir().unwrap();
        let a = plugins.path().join("a.so");
        let b = plugins.path().join("b.so");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = resolve(&a).unwrap_err();
        assert!(err.contains("more than 40 symlinks"), "{err}");
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
