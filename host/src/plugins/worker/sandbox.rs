//! A worker's sandbox: what a `healer worker` (and a probe) may see and do,
//! set up before its package is loaded, so no library constructor and no
//! plugin call ever runs with more.
//!
//! - **Environment** ([`environment`]): a worker starts with an empty one
//!   plus [`ALLOWED`]: `PATH` fixed as the SDK's command runner sets it,
//!   `LANG`, `LC_ALL`, `TZ` and `TMPDIR` copied from healer's own when set,
//!   `HEALER_WORKER_PARENT`, `MALLOC_ARENA_MAX=2`, and the variables its
//!   package's `env` names. healer's secrets (the intake token's
//!   `token_env`, a webhook's HMAC secret, `NOTIFY_SOCKET`, anything else)
//!   never reach a worker that is not given them by name.
//! - **No new privileges** (`PR_SET_NO_NEW_PRIVS`), always: no program a
//!   plugin runs gains privileges through a set-user-ID bit or file
//!   capabilities. Every process a worker starts inherits it, the
//!   services a recovery starts included.
//! - **Capabilities** ([`confine`]): the bounding set is cut to what the
//!   config keeps (and the permitted and effective sets with it). A worker
//!   that runs as another `user` keeps none: its groups, then its group,
//!   then its user are set, and it is checked that root cannot be
//!   regained.
//! - **Landlock**, when its package has `read_only` or `read_write`: it may
//!   reach nothing else but [`ALWAYS_READ`] (what any worker needs to run
//!   and load its package), `/dev/null`, and its package file.
//!
//! What the kernel lacks (no Landlock, or an older Landlock ABI) is
//! returned as one note, which the probe reports at start; nothing is
//! skipped silently. A part that fails to apply fails the worker.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, ABI,
};

use super::parent::PARENT;
use crate::config::{Account, Sandbox};

/// Variables copied from healer's environment into every worker's, when
/// set (`PATH` is fixed instead).
pub const ALLOWED: [&str; 4] = ["LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Below these a Landlock-restricted worker may always read and run: the
/// dynamic linker's cache and the system's libraries and programs.
pub const ALWAYS_READ: [&str; 6] = [
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/dev/urandom",
];

/// What a Landlock-restricted worker may always write: the null device.
pub const ALWAYS_WRITE: [&str; 1] = ["/dev/null"];

/// The Landlock ABI whose filesystem rights healer handles (renaming
/// across directories, truncating, device ioctls: all of them up to
/// Linux 6.10's).
const HANDLED: ABI = ABI::V5;

/// A worker's whole environment: the allowlist, and `passed` (names) from
/// healer's own environment.
pub fn environment(passed: &[String]) -> Vec<(OsString, OsString)> {
    let mut env = vec![
        (
            OsString::from("PATH"),
            OsString::from(healer_plugin_sdk::command::PATH),
        ),
        (
            OsString::from(PARENT),
            OsString::from(std::process::id().to_string()),
        ),
        // glibc reserves 64 MiB of address space per thread arena; under
        // an RLIMIT_AS that would be the limit, not the plugin.
        (OsString::from("MALLOC_ARENA_MAX"), OsString::from("2")),
    ];
    let copied = ALLOWED
        .iter()
        .copied()
        .chain(passed.iter().map(String::as_str));
    for name in copied {
        if let Some(value) = std::env::var_os(name) {
            env.push((OsString::from(name), value));
        }
    }
    env
}

/// Confines this process (still single-threaded) as `sandbox` says;
/// `package` is the open package file it is about to load. Returns what
/// is not enforced, one note each.
pub fn confine(sandbox: &Sandbox, package: &File) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    nix::sys::prctl::set_no_new_privs().map_err(|err| format!("cannot set no_new_privs: {err}"))?;
    // The rules are made while the paths can still be opened as root.
    let rules = match sandbox.landlocked() {
        true => Some(landlock_rules(sandbox, package, &mut notes)?),
        false => None,
    };
    match &sandbox.account {
        Some(account) => become_user(account, &mut notes)?,
        None => {
            see_every_process(&mut notes);
            keep_capabilities(sandbox.capabilities, &mut notes)?;
        }
    }
    if let Some(rules) = rules {
        let status = rules
            .restrict_self()
            .map_err(|err| format!("cannot apply its Landlock rules: {err}"))?;
        if let Some(gap) = landlock_gap(&status.ruleset, status.landlock) {
            notes.push(gap);
        }
    }
    Ok(notes)
}

/// A root worker without `CAP_SYS_PTRACE` no longer sees other processes
/// in a `/proc` mounted with `hidepid` (a process monitor would find no
/// service running): it joins the mount's `gid=` group, which the kernel
/// lets see them all, as root saw them before its capabilities were cut.
fn see_every_process(notes: &mut Vec<String>) {
    let Some(gid) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|mounts| proc_group(&mounts))
    else {
        return;
    };
    let mut groups = nix::unistd::getgroups().unwrap_or_default();
    let gid = nix::unistd::Gid::from_raw(gid);
    if !groups.contains(&gid) {
        groups.push(gid);
        if let Err(err) = nix::unistd::setgroups(&groups) {
            notes.push(format!(
                "cannot join group {gid} of /proc (hidepid): other processes stay hidden from it: {err}"
            ));
        }
    }
}

/// The `gid=` of the `/proc` mount in `mountinfo`, when it hides
/// processes (`hidepid` other than 0 or `off`).
fn proc_group(mountinfo: &str) -> Option<u32> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mount_point = mount.split(' ').nth(4)?;
        let mut fs = fs.split(' ');
        let (kind, options) = (fs.next()?, fs.nth(1)?);
        if mount_point != "/proc" || kind != "proc" {
            return None;
        }
        let option = |name: &str| {
            options
                .split(',')
                .find_map(|option| option.strip_prefix(name)?.strip_prefix('='))
        };
        let hides = option("hidepid").is_some_and(|value| !matches!(value, "0" | "off"));
        hides.then(|| option("gid")?.parse().ok()).flatten()
    })
}

/// Cuts the capability bounding set to `kept` (bit n for capability n):
/// nothing this process runs can gain more, even as root. Without
/// CAP_SETPCAP it cannot be cut: a root healer that lacks it (a unit's
/// `CapabilityBoundingSet=`) gets a note; one that is not root has no
/// capability to bound (and none can be gained under no_new_privs).
fn bound_capabilities(kept: u64, notes: &mut Vec<String>) -> Result<(), String> {
    let may = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
        .unwrap_or(false);
    if !may {
        if nix::unistd::geteuid().is_root() {
            notes.push(
                "healer lacks CAP_SETPCAP, so the capability bounding set is not cut (what it keeps in its permitted and effective sets is)"
                    .to_owned(),
            );
        }
        return Ok(());
    }
    for cap in 0..64u32 {
        if kept & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP, n) takes plain integers and
        // touches only this thread's credentials.
        let dropped =
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if dropped != 0 {
            let err = io::Error::last_os_error();
            // Past the kernel's last capability: done.
            if err.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(format!(
                "cannot drop capability {cap} from its bounding set: {err}"
            ));
        }
    }
    Ok(())
}

/// A worker that stays root: its bounding, inheritable, permitted and
/// effective sets cut to `kept`.
fn keep_capabilities(kept: u64, notes: &mut Vec<String>) -> Result<(), String> {
    bound_capabilities(kept, notes)?;
    // Effective first: it may never hold more than permitted.
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Inheritable,
        caps::CapSet::Permitted,
    ] {
        let held = caps::read(None, set)
            .map_err(|err| format!("cannot read its {set:?} capabilities: {err}"))?;
        let keep: caps::CapsHashSet = held
            .iter()
            .copied()
            .filter(|cap| kept & cap.bitmask() != 0)
            .collect();
        if keep != held {
            caps::set(None, set, &keep)
                .map_err(|err| format!("cannot cut its {set:?} capabilities: {err}"))?;
        }
    }
    Ok(())
}

/// Becomes `account` for good: groups, group, user, each for the real,
/// effective and saved ids; then checks that root cannot come back.
fn become_user(account: &Account, notes: &mut Vec<String>) -> Result<(), String> {
    use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid, Gid, Uid};
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "cannot run as user {:?}: healer does not run as root",
            account.name
        ));
    }
    bound_capabilities(0, notes)?;
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    let groups: Vec<Gid> = account.groups.iter().copied().map(Gid::from_raw).collect();
    let named = |what: &str, err: nix::Error| {
        format!("cannot become user {:?}: {what}: {err}", account.name)
    };
    setgroups(&groups).map_err(|err| named("setgroups", err))?;
    setresgid(gid, gid, gid).map_err(|err| named("setresgid", err))?;
    setresuid(uid, uid, uid).map_err(|err| named("setresuid", err))?;
    let ids = getresuid().map_err(|err| named("getresuid", err))?;
    let gids = getresgid().map_err(|err| named("getresgid", err))?;
    let regained = nix::unistd::setuid(Uid::from_raw(0)).is_ok();
    let capable = caps::read(None, caps::CapSet::Permitted).map_or(true, |held| !held.is_empty());
    if [ids.real, ids.effective, ids.saved] != [uid; 3]
        || [gids.real, gids.effective, gids.saved] != [gid; 3]
        || regained
        || capable
    {
        return Err(format!(
            "became user {:?}, but could still regain root; refusing to load the package",
            account.name
        ));
    }
    Ok(())
}

/// The Landlock rules of `sandbox`, made but not applied.
fn landlock_rules(
    sandbox: &Sandbox,
    package: &File,
    notes: &mut Vec<String>,
) -> Result<RulesetCreated, String> {
    let failed = |err: landlock::RulesetError| format!("cannot make its Landlock rules: {err}");
    let mut rules = Ruleset::default()
        .handle_access(AccessFs::from_all(HANDLED))
        .map_err(failed)?
        .create()
        .map_err(failed)?
        .add_rule(PathBeneath::new(
            package,
            AccessFs::ReadFile | AccessFs::Execute,
        ))
        .map_err(failed)?;
    let read = AccessFs::from_read(HANDLED);
    let write = AccessFs::from_all(HANDLED);
    let always = ALWAYS_READ
        .iter()
        .map(|path| (Path::new(*path), read))
        .chain(ALWAYS_WRITE.iter().map(|path| (Path::new(*path), write)));
    for (path, access) in always {
        if let Some(rule) = rule(path, access) {
            rules = rules.add_rule(rule).map_err(failed)?;
        }
    }
    let configured = sandbox
        .read_only
        .iter()
        .flatten()
        .map(|path| (path, read))
        .chain(
            sandbox
                .read_write
                .iter()
                .flatten()
                .map(|path| (path, write)),
        );
    let mut missing: Vec<&PathBuf> = Vec::new();
    for (path, access) in configured {
        match rule(path, access) {
            Some(rule) => rules = rules.add_rule(rule).map_err(failed)?,
            None => missing.push(path),
        }
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        notes.push(format!(
            "{} cannot be opened (missing?), so nothing there is allowed",
            list.join(", ")
        ));
    }
    Ok(rules)
}

/// A rule giving `access` below `path` (only the rights a file can have,
/// when it is a file); `None` when it cannot be opened.
fn rule(path: &Path, access: BitFlags<AccessFs>) -> Option<PathBeneath<PathFd>> {
    let fd = PathFd::new(path).ok()?;
    let is_file = std::fs::metadata(path).is_ok_and(|meta| !meta.is_dir());
    let access = match is_file {
        true => access & AccessFs::from_file(HANDLED),
        false => access,
    };
    Some(PathBeneath::new(fd, access))
}

/// What this kernel's Landlock does not enforce of healer's rules, if
/// anything.
fn landlock_gap(ruleset: &RulesetStatus, landlock: LandlockStatus) -> Option<String> {
    if *ruleset == RulesetStatus::FullyEnforced {
        return None;
    }
    match landlock {
        LandlockStatus::Available { effective_abi, .. } if *ruleset != RulesetStatus::NotEnforced => {
            missing_rights(effective_abi)
        }
        LandlockStatus::NotEnabled => Some(
            "Landlock is built into this kernel but not enabled at boot (add it to the lsm= boot parameter): read_only and read_write are not enforced".to_owned(),
        ),
        _ => Some(
            "this kernel has no Landlock: read_only and read_write are not enforced".to_owned(),
        ),
    }
}

/// The rights of [`HANDLED`] a kernel of Landlock ABI `abi` cannot
/// restrict, in words.
fn missing_rights(abi: ABI) -> Option<String> {
    let missing: Vec<&str> = [
        (ABI::V2, "renaming or linking files between directories"),
        (ABI::V3, "truncating files"),
        (ABI::V5, "ioctl on devices"),
    ]
    .into_iter()
    .filter(|(since, _)| abi < *since)
    .map(|(_, right)| right)
    .collect();
    if abi == ABI::Unsupported {
        return Some(
            "this kernel has no Landlock: read_only and read_write are not enforced".to_owned(),
        );
    }
    (!missing.is_empty()).then(|| {
        format!(
            "this kernel's Landlock (ABI {abi}) cannot restrict {}: not enforced",
            missing.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_that_sees_every_process_is_read_from_the_proc_mount() {
        let hidden = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=invisible,gid=4242\n";
        assert_eq!(proc_group(hidden), Some(4242));
        let shown = "22 1 0:21 / /proc rw,relatime - proc proc rw\n";
        assert_eq!(proc_group(shown), None);
        let off = "22 1 0:21 / /proc rw - proc proc rw,hidepid=off,gid=7\n";
        assert_eq!(proc_group(off), None);
        let elsewhere = "30 1 0:40 / /tmp/p rw - proc proc rw,hidepid=2,gid=9\n";
        assert_eq!(proc_group(elsewhere), None);
    }

    #[test]
    fn the_environment_is_the_allowlist_and_the_names_passed() {
        std::env::set_var("HEALER_SANDBOX_TEST_SECRET", "s3cret");
        std::env::set_var("HEALER_SANDBOX_TEST_PASSED", "given");
        let env = environment(&["HEALER_SANDBOX_TEST_PASSED".to_owned()]);
        let names: Vec<&str> = env.iter().filter_map(|(name, _)| name.to_str()).collect();
        assert!(!names.contains(&"HEALER_SANDBOX_TEST_SECRET"), "{names:?}");
        assert!(names.contains(&"HEALER_SANDBOX_TEST_PASSED"), "{names:?}");
        for name in &names {
            assert!(
                [
                    "PATH",
                    "HEALER_WORKER_PARENT",
                    "MALLOC_ARENA_MAX",
                    "HEALER_SANDBOX_TEST_PASSED"
                ]
                .contains(name)
                    || ALLOWED.contains(name),
                "{name} is not on the allowlist"
            );
        }
    }

    #[test]
    fn what_an_older_landlock_cannot_restrict_is_named() {
        assert_eq!(missing_rights(ABI::from(5)), None);
        assert_eq!(missing_rights(ABI::from(7)), None);
        assert_eq!(
            missing_rights(ABI::from(3)).as_deref(),
            Some("this kernel's Landlock (ABI 3) cannot restrict ioctl on devices: not enforced")
        );
        let first = missing_rights(ABI::from(1)).unwrap();
        assert!(
            first.contains(
                "renaming or linking files between directories, truncating files, ioctl on devices"
            ),
            "{first}"
        );
        assert!(missing_rights(ABI::Unsupported)
            .unwrap()
            .contains("no Landlock: read_only and read_write are not enforced"));
    }

    #[test]
    fn no_landlock_at_all_is_said_in_one_line() {
        let gap = landlock_gap(&RulesetStatus::NotEnforced, LandlockStatus::NotImplemented);
        assert_eq!(
            gap.as_deref(),
            Some("this kernel has no Landlock: read_only and read_write are not enforced")
        );
        assert_eq!(
            landlock_gap(
                &RulesetStatus::FullyEnforced,
                LandlockStatus::Available {
                    effective_abi: ABI::from(7),
                    kernel_abi: None
                }
            ),
            None
        );
    }
}
