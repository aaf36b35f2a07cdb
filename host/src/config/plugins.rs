//! `[plugins]`: where packages run and what their workers may use, with
//! per-package overrides and SHA-256 pins under `[plugins.package."FILE"]`
//! (the file's name in the plugins directory), and each worker's sandbox:
//! the user it runs as, the capabilities it keeps, the paths it may reach
//! (Landlock) and the variables of healer's environment it is handed.
//!
//! Users and groups are looked up when the config is read, so an unknown
//! name is an error at its line, not a worker that fails to start.
//!
//! Every default of `[plugins]` is declared here ([`Isolation`],
//! [`WorkerLimits`]); the plugin code that runs workers reads them from
//! this module, never the other way round.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;

use healer_plugin_sdk::Duration;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Where a package's plugins run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In a `healer worker` process of its own: a crash, a hang or a leak
    /// in plugin code ends that process, never healer.
    #[default]
    Process,
    /// Loaded into healer itself: no hop per call, and no protection.
    InProcess,
}

impl Isolation {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::InProcess => "in-process",
        }
    }
}

/// What a worker may use, and how much crashing it is allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerLimits {
    /// Address space of the worker, in bytes (RLIMIT_AS); 0 for none.
    pub memory: u64,
    /// Crashes within `crash_window` that quarantine the package.
    pub crash_limit: u32,
    /// See `crash_limit`.
    pub crash_window: std::time::Duration,
    /// A worker that has not answered a ping for this long is stuck.
    pub stuck_after: std::time::Duration,
    /// At most this many worker processes serve the package at once.
    pub workers: usize,
    /// Targets one worker serves before the next starts (up to `workers`).
    pub targets_per_worker: usize,
}

/// How many worker processes a package may have by default: one per CPU
/// (at most 8), so that thousands of targets are not bound by one thread.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

impl Default for WorkerLimits {
    fn default() -> WorkerLimits {
        WorkerLimits {
            memory: 1 << 30,
            crash_limit: 3,
            crash_window: std::time::Duration::from_secs(600),
            stuck_after: std::time::Duration::from_secs(5),
            workers: default_workers(),
            targets_per_worker: 1000,
        }
    }
}

/// `[plugins]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    /// Where packages run unless their own table says otherwise.
    pub isolation: Isolation,
    /// The address space a worker may use (RLIMIT_AS), e.g. `"1GiB"`.
    pub memory_limit: Size,
    /// Worker crashes within `crash_window` that quarantine a package.
    pub crash_limit: u32,
    /// See `crash_limit`.
    pub crash_window: Duration,
    /// A worker that misses its heartbeat this long (or leaves what healer
    /// sends it unread this long) is stuck: killed and restarted.
    pub stuck_after: Duration,
    /// At most this many worker processes per package (default: one per
    /// CPU, at most 8); a package's targets go to its first worker, then,
    /// `targets_per_worker` at a time, to the others in turn.
    pub workers: usize,
    /// See `workers`.
    pub targets_per_worker: usize,
    /// The user every worker runs as, unless its package's table says.
    pub user: Option<Spanned<User>>,
    /// The group every worker runs as (with `user`).
    pub group: Option<Spanned<Group>>,
    /// The capabilities a worker running as root keeps.
    pub capabilities: Option<Spanned<Capabilities>>,
    /// Per-package settings, by file name.
    pub package: BTreeMap<String, PackageSettings>,
}

impl Default for Plugins {
    fn default() -> Plugins {
        let limits = WorkerLimits::default();
        Plugins {
            isolation: Isolation::Process,
            memory_limit: Size(limits.memory),
            crash_limit: limits.crash_limit,
            crash_window: Duration(limits.crash_window),
            stuck_after: Duration(limits.stuck_after),
            workers: limits.workers,
            targets_per_worker: limits.targets_per_worker,
            user: None,
            group: None,
            capabilities: None,
            package: BTreeMap::new(),
        }
    }
}

/// `[plugins.package."FILE"]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSettings {
    /// Overrides `[plugins] isolation`.
    pub isolation: Option<Isolation>,
    /// The file must have this SHA-256 (lowercase hex) or it is refused.
    pub sha256: Option<String>,
    /// Overrides `[plugins] memory_limit`.
    pub memory_limit: Option<Size>,
    /// Overrides `[plugins] user`.
    pub user: Option<Spanned<User>>,
    /// Overrides `[plugins] group`.
    pub group: Option<Spanned<Group>>,
    /// Overrides `[plugins] capabilities`.
    pub capabilities: Option<Spanned<Capabilities>>,
    /// Paths the worker may read (and run) below; with `read_write`, the
    /// worker may reach nothing else (Landlock) but what every worker needs.
    pub read_only: Option<Spanned<Vec<PathBuf>>>,
    /// Paths the worker may read, write, create and remove below.
    pub read_write: Option<Spanned<Vec<PathBuf>>>,
    /// Variables of healer's environment its workers are handed, besides
    /// the allowlist every worker gets (a webhook's `hmac_secret_env`).
    pub env: Option<Spanned<Vec<String>>>,
}

/// What one package file runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct PackagePolicy {
    pub isolation: Isolation,
    pub sha256: Option<String>,
    pub limits: WorkerLimits,
    /// What its workers (and its probe) confine themselves to.
    pub sandbox: Sandbox,
    /// Variables of healer's environment its workers are handed.
    pub env: Vec<String>,
}

/// What a worker (and a probe) confines itself to before it loads its
/// package: handed to `healer worker` as JSON (a worker's in its
/// assignment, a probe's as `--sandbox`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// The user it becomes; `None`: it stays healer's own user (root).
    pub account: Option<Account>,
    /// The capabilities kept (bit n for capability n) by a worker that
    /// stays root: its bounding, permitted and effective sets. A worker
    /// that becomes another user keeps none.
    pub capabilities: u64,
    /// Landlock: below these it may read and run; `None` for both: no
    /// Landlock rules at all.
    pub read_only: Option<Vec<PathBuf>>,
    /// Landlock: below these it may read, write, create and remove.
    pub read_write: Option<Vec<PathBuf>>,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox {
            account: None,
            capabilities: Capabilities::default().0,
            read_only: None,
            read_write: None,
        }
    }
}

impl Sandbox {
    /// Whether Landlock rules apply.
    pub fn landlocked(&self) -> bool {
        self.read_only.is_some() || self.read_write.is_some()
    }
}

/// A user from the user database, with the groups it is a member of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The group it runs as: `group`, or the user's own.
    pub gid: u32,
    /// Its supplementary groups (as `initgroups` would set them).
    pub groups: Vec<u32>,
}

/// `user = "NAME"`: a user looked up when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<User, D::Error> {
        let name = String::deserialize(d)?;
        match nix::unistd::User::from_name(&name) {
            Ok(Some(user)) => Ok(User {
                name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            Ok(None) => Err(serde::de::Error::custom(format!(
                "no user named {name:?} on this machine (`getent passwd {name}` finds none); create it, or name another"
            ))),
            Err(err) => Err(serde::de::Error::custom(format!(
                "cannot look up user {name:?}: {err}"
            ))),
        }
    }
}

/// `group = "NAME"`: a group looked up when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

impl<'de> Deserialize<'de> for Group {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Group, D::Error> {
        let name = String::deserialize(d)?;
        match nix::unistd::Group::from_name(&name) {
            Ok(Some(group)) => Ok(Group {
                name,
                gid: group.gid.as_raw(),
            }),
            Ok(None) => Err(serde::de::Error::custom(format!(
                "no group named {name:?} on this machine (`getent group {name}` finds none)"
            ))),
            Err(err) => Err(serde::de::Error::custom(format!(
                "cannot look up group {name:?}: {err}"
            ))),
        }
    }
}

/// `capabilities = ["CAP_NET_BIND_SERVICE", ...]` (or `["all"]`): the
/// capabilities a root worker keeps, bit n for capability n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities(pub u64);

/// Dropped from a root worker unless its `capabilities` keep them: no
/// service a recovery restarts needs them, and each turns plugin code
/// into kernel code, lifts the machine's security policy or reads other
/// processes' memory: loading kernel modules, raw I/O ports and
/// `/dev/mem`, rebooting or `kexec`, changing or bypassing an LSM's policy
/// (AppArmor, SELinux), and tracing or inspecting other processes —
/// `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN`, `CAP_PERFMON`, `CAP_BPF` and
/// `CAP_CHECKPOINT_RESTORE` each let a root worker read healer's own
/// `/proc/PID/environ` (the intake token, HMAC secrets) and memory, which
/// its cleared environment is meant to keep from it.
pub const DROPPED_BY_DEFAULT: [caps::Capability; 10] = [
    caps::Capability::CAP_SYS_MODULE,
    caps::Capability::CAP_SYS_RAWIO,
    caps::Capability::CAP_SYS_BOOT,
    caps::Capability::CAP_MAC_ADMIN,
    caps::Capability::CAP_MAC_OVERRIDE,
    caps::Capability::CAP_SYS_PTRACE,
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_PERFMON,
    caps::Capability::CAP_BPF,
    caps::Capability::CAP_CHECKPOINT_RESTORE,
];

impl Default for Capabilities {
    fn default() -> Capabilities {
        Capabilities(
            DROPPED_BY_DEFAULT
                .iter()
                .fold(u64::MAX, |kept, cap| kept & !cap.bitmask()),
        )
    }
}

impl Capabilities {
    /// Reads `["CAP_KILL", "net_bind_service"]`, or `["all"]`.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Capabilities, String> {
        let mut kept = 0u64;
        for name in names {
            let name = name.as_ref();
            if name.eq_ignore_ascii_case("all") {
                if names.len() > 1 {
                    return Err("\"all\" keeps every capability: give it alone".to_owned());
                }
                return Ok(Capabilities(u64::MAX));
            }
            let cap: caps::Capability = caps::to_canonical(name).parse().map_err(|_| {
                format!(
                    "{name:?} is not a capability (see capabilities(7): e.g. \"CAP_NET_BIND_SERVICE\"; or [\"all\"])"
                )
            })?;
            kept |= cap.bitmask();
        }
        Ok(Capabilities(kept))
    }
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Capabilities, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Capabilities::parse(&names).map_err(serde::de::Error::custom)
    }
}

/// The groups `user` is a member of, `gid` among them.
fn groups_of(user: &User, gid: u32) -> Vec<u32> {
    let gid = nix::unistd::Gid::from_raw(gid);
    CString::new(user.name.as_str())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, gid).ok())
        .map_or_else(
            || vec![gid.as_raw()],
            |groups| groups.into_iter().map(|g| g.as_raw()).collect(),
        )
}

/// A problem in `[plugins]`: where (a byte offset in the file, when known)
/// and what.
pub type PluginsProblem = (Option<usize>, String);

impl Plugins {
    /// The settings for the package file named `file_name`.
    pub fn policy(&self, file_name: &str) -> PackagePolicy {
        let own = self.package.get(file_name);
        let user = own
            .and_then(|p| p.user.as_ref())
            .or(self.user.as_ref())
            .map(Spanned::get_ref);
        let group = own
            .and_then(|p| p.group.as_ref())
            .or(self.group.as_ref())
            .map(Spanned::get_ref);
        let account = user.filter(|user| user.uid != 0).map(|user| {
            let gid = group.map_or(user.gid, |group| group.gid);
            Account {
                name: user.name.clone(),
                uid: user.uid,
                gid,
                groups: groups_of(user, gid),
            }
        });
        let capabilities = match account {
            Some(_) => 0,
            None => {
                own.and_then(|p| p.capabilities.as_ref())
                    .or(self.capabilities.as_ref())
                    .map_or_else(Capabilities::default, |caps| *caps.get_ref())
                    .0
            }
        };
        let paths = |list: Option<&Spanned<Vec<PathBuf>>>| list.map(|l| l.get_ref().clone());
        PackagePolicy {
            isolation: own.and_then(|p| p.isolation).unwrap_or(self.isolation),
            sha256: own.and_then(|p| p.sha256.clone()),
            limits: WorkerLimits {
                memory: own
                    .and_then(|p| p.memory_limit)
                    .unwrap_or(self.memory_limit)
                    .0,
                crash_limit: self.crash_limit,
                crash_window: self.crash_window.0,
                stuck_after: self.stuck_after.0,
                workers: self.workers,
                targets_per_worker: self.targets_per_worker,
            },
            sandbox: Sandbox {
                account,
                capabilities,
                read_only: paths(own.and_then(|p| p.read_only.as_ref())),
                read_write: paths(own.and_then(|p| p.read_write.as_ref())),
            },
            env: own
                .and_then(|p| p.env.as_ref())
                .map(|env| env.get_ref().clone())
                .unwrap_or_default(),
        }
    }

    /// What is wrong with these settings, one line each, where known.
    pub fn problems(&self) -> Vec<PluginsProblem> {
        let mut problems: Vec<PluginsProblem> = Vec::new();
        if self.crash_limit == 0 {
            problems.push((None, "[plugins] crash_limit must be at least 1".to_owned()));
        }
        if self.workers == 0 || self.workers > 64 {
            problems.push((
                None,
                format!(
                    "[plugins] workers must be 1 to 64 (worker processes per package), not {}",
                    self.workers
                ),
            ));
        }
        if self.targets_per_worker == 0 {
            problems.push((
                None,
                "[plugins] targets_per_worker must be at least 1".to_owned(),
            ));
        }
        for (key, value) in [
            ("crash_window", self.crash_window),
            ("stuck_after", self.stuck_after),
        ] {
            if value.is_zero() {
                problems.push((None, format!("[plugins] {key} must be longer than zero")));
            }
        }
        let memory = std::iter::once(("[plugins]".to_owned(), self.memory_limit)).chain(
            self.package.iter().filter_map(|(file, p)| {
                Some((format!("[plugins.package.{file:?}]"), p.memory_limit?))
            }),
        );
        for (table, size) in memory {
            if size.0 != 0 && size.0 < MIN_MEMORY {
                problems.push((None, format!(
                    "{table} memory_limit of {} bytes is too small for a worker to start (at least 64MiB, or 0 for no limit)",
                    size.0
                )));
            }
        }
        for (file, settings) in &self.package {
            if let Some(sha) = &settings.sha256 {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push((None, format!(
                        "[plugins.package.{file:?}] sha256 must be 64 hex digits (as `healer plugins` or `sha256sum` prints it), not {sha:?}"
                    )));
                }
            }
        }
        self.sandbox_problems(&mut problems);
        problems
    }

    /// The sandbox keys that contradict each other or their isolation.
    fn sandbox_problems(&self, problems: &mut Vec<PluginsProblem>) {
        let tables = std::iter::once(("[plugins]".to_owned(), None)).chain(
            self.package
                .iter()
                .map(|(file, own)| (format!("[plugins.package.{file:?}]"), Some(own))),
        );
        for (table, own) in tables {
            let user = own.map_or(self.user.as_ref(), |own| {
                own.user.as_ref().or(self.user.as_ref())
            });
            let group = own.map_or(self.group.as_ref(), |own| own.group.as_ref());
            let capabilities =
                own.map_or(self.capabilities.as_ref(), |own| own.capabilities.as_ref());
            if let (Some(group), None) = (group, user) {
                problems.push((Some(group.span().start), format!(
                    "{table} group {:?} needs a `user` to go with it (a worker that stays root keeps root's groups)",
                    group.get_ref().name
                )));
            }
            if let (Some(caps), Some(user)) = (capabilities, user) {
                if user.get_ref().uid != 0 {
                    problems.push((Some(caps.span().start), format!(
                        "{table} capabilities: a worker that runs as user {:?} keeps no capabilities; remove `capabilities`, or the `user`",
                        user.get_ref().name
                    )));
                }
            }
            let isolation = own.and_then(|own| own.isolation).unwrap_or(self.isolation);
            if isolation == Isolation::InProcess {
                let keys = [
                    (
                        "user",
                        own.map_or(self.user.as_ref(), |o| o.user.as_ref())
                            .map(|s| s.span().start),
                    ),
                    ("group", group.map(|s| s.span().start)),
                    ("capabilities", capabilities.map(|s| s.span().start)),
                    (
                        "read_only",
                        own.and_then(|o| o.read_only.as_ref())
                            .map(|s| s.span().start),
                    ),
                    (
                        "read_write",
                        own.and_then(|o| o.read_write.as_ref())
                            .map(|s| s.span().start),
                    ),
                    (
                        "env",
                        own.and_then(|o| o.env.as_ref()).map(|s| s.span().start),
                    ),
                ];
                for (key, at) in keys {
                    if let Some(at) = at {
                        problems.push((Some(at), format!(
                            "{table} {key} confines a plugin worker, but this package runs inside healer (isolation = \"in-process\"); remove one of them"
                        )));
                    }
                }
            }
            let Some(own) = own else { continue };
            for (key, list) in [
                ("read_only", &own.read_only),
                ("read_write", &own.read_write),
            ] {
                let Some(list) = list else { continue };
                for path in list.get_ref() {
                    if !path.is_absolute() {
                        problems.push((Some(list.span().start), format!(
                            "{table} {key}: {} is not an absolute path (a worker's rules are not relative to anything)",
                            path.display()
                        )));
                    }
                }
            }
            if let Some(env) = &own.env {
                for name in env.get_ref() {
                    if name.is_empty() || name.contains(['=', '\0']) {
                        problems.push((
                            Some(env.span().start),
                            format!(
                                "{table} env: {name:?} is not the name of an environment variable"
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// The smallest address space a worker starts in.
const MIN_MEMORY: u64 = 64 << 20;

/// A size in bytes, written as a number of bytes or with a binary unit:
/// `"512MiB"`, `"1GiB"` (`K`, `M`, `G` and `KB`, `MB`, `GB` mean the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// Parses `"512MiB"`, `"1 GiB"`, `"1048576"`.
    pub fn parse(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size (write e.g. \"512MiB\" or \"1GiB\")"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => {
                return Err(format!(
                    "{other:?} is not a size unit (use KiB, MiB, GiB or TiB)"
                ))
            }
        };
        number
            .checked_mul(1 << shift)
            .map(Size)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(bytes) => Ok(Size(bytes)),
            Written::Text(text) => Size::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_with_binary_units() {
        assert_eq!(Size::parse("512MiB"), Ok(Size(512 << 20)));
        assert_eq!(Size::parse("1 GiB"), Ok(Size(1 << 30)));
        assert_eq!(Size::parse("1g"), Ok(Size(1 << 30)));
        assert_eq!(Size::parse("4096"), Ok(Size(4096)));
        assert!(Size::parse("lots").unwrap_err().contains("not a size"));
        assert!(Size::parse("5 parsecs")
            .unwrap_err()
            .contains("not a size unit"));
    }

    #[test]
    fn a_package_table_overrides_the_defaults() {
        let plugins: Plugins = toml::from_str(
            "isolation = \"process\"\nmemory_limit = \"256MiB\"\n[package.\"libx.so\"]\nisolation = \"in-process\"\nsha256 = \"ab\"\n",
        )
        .unwrap();
        let own = plugins.policy("libx.so");
        assert_eq!(own.isolation, Isolation::InProcess);
        assert_eq!(own.sha256.as_deref(), Some("ab"));
        assert_eq!(plugins.policy("liby.so").isolation, Isolation::Process);
        assert_eq!(plugins.policy("liby.so").limits.memory, 256 << 20);
        assert!(plugins.problems()[0]
            .1
            .contains("sha256 must be 64 hex digits"));
    }

    #[test]
    fn a_package_run_as_a_user_keeps_no_capabilities_and_root_keeps_all_but_ten() {
        let plugins: Plugins = toml::from_str(
            "[package.\"a.so\"]\nuser = \"nobody\"\nread_only = [\"/var/log\"]\n\
             [package.\"b.so\"]\ncapabilities = [\"CAP_KILL\", \"net_bind_service\"]\nenv = [\"SECRET\"]\n",
        )
        .unwrap();
        assert!(plugins.problems().is_empty(), "{:?}", plugins.problems());
        let nobody = plugins.policy("a.so").sandbox;
        let account = nobody.account.clone().unwrap();
        assert_eq!((account.name.as_str(), account.uid), ("nobody", 65534));
        assert!(account.groups.contains(&account.gid));
        assert_eq!(nobody.capabilities, 0);
        assert_eq!(nobody.read_only, Some(vec![PathBuf::from("/var/log")]));
        assert!(nobody.landlocked());
        let named = plugins.policy("b.so");
        assert_eq!(named.sandbox.capabilities, (1 << 5) | (1 << 10));
        assert_eq!(named.env, ["SECRET"]);
        assert!(!named.sandbox.landlocked());
        let default = plugins.policy("c.so").sandbox;
        assert_eq!(default.account, None);
        // Modules, raw I/O, boot, the LSM's policy; ptrace, sys_admin,
        // perfmon, bpf, checkpoint_restore.
        let dropped = [16, 17, 22, 32, 33, 19, 21, 38, 39, 40]
            .iter()
            .fold(0u64, |mask, cap| mask | 1 << cap);
        assert_eq!(default.capabilities, !dropped);
        assert_eq!(Capabilities::parse(&["all"]), Ok(Capabilities(u64::MAX)));
    }

    #[test]
    fn sandbox_keys_that_contradict_each_other_are_refused_where_written() {
        let text = "[package.\"a.so\"]\ngroup = \"root\"\n\
                    [package.\"b.so\"]\nisolation = \"in-process\"\nread_write = [\"/tmp\"]\n\
                    [package.\"c.so\"]\nuser = \"nobody\"\ncapabilities = [\"CAP_KILL\"]\n";
        let plugins: Plugins = toml::from_str(text).unwrap();
        let problems = plugins.problems();
        let line_of = |at: Option<usize>| text[..at.unwrap()].lines().count();
        let messages: Vec<(usize, &str)> = problems
            .iter()
            .map(|(at, m)| (line_of(*at), m.as_str()))
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0].1.contains("group \"root\" needs a `user`"),
            "{messages:?}"
        );
        assert_eq!(messages[0].0, 2);
        assert!(messages[1]
            .1
            .contains("read_write confines a plugin worker, but this package runs inside healer"));
        assert_eq!(messages[1].0, 5);
        assert!(messages[2].1.contains("keeps no capabilities"));
        assert_eq!(messages[2].0, 8);
        let unknown = toml::from_str::<Plugins>("user = \"no-such-user-19\"\n").unwrap_err();
        assert!(
            unknown
                .message()
                .contains("no user named \"no-such-user-19\""),
            "{unknown}"
        );
    }
}
