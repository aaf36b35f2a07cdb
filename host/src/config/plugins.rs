//! `[plugins]`: where packages run and what their workers may use, with
//! per-package overrides and SHA-256 pins under `[plugins.package."FILE"]`
//! (the file's name in the plugins directory).

use std::collections::BTreeMap;

use healer_plugin_sdk::Duration;
use serde::Deserialize;

use crate::plugins::{Isolation, WorkerLimits};

/// `[plugins]`.
#[derive(Clone, Debug, Deserialize)]
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
    /// A worker that misses its heartbeat this long is stuck: killed and
    /// restarted.
    pub stuck_after: Duration,
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
            package: BTreeMap::new(),
        }
    }
}

/// `[plugins.package."FILE"]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSettings {
    /// Overrides `[plugins] isolation`.
    pub isolation: Option<Isolation>,
    /// The file must have this SHA-256 (lowercase hex) or it is refused.
    pub sha256: Option<String>,
    /// Overrides `[plugins] memory_limit`.
    pub memory_limit: Option<Size>,
}

/// What one package file runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct PackagePolicy {
    pub isolation: Isolation,
    pub sha256: Option<String>,
    pub limits: WorkerLimits,
}

impl Plugins {
    /// The settings for the package file named `file_name`.
    pub fn policy(&self, file_name: &str) -> PackagePolicy {
        let own = self.package.get(file_name);
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
            },
        }
    }

    /// What is wrong with these settings, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.crash_limit == 0 {
            problems.push("[plugins] crash_limit must be at least 1".to_owned());
        }
        for (key, value) in [
            ("crash_window", self.crash_window),
            ("stuck_after", self.stuck_after),
        ] {
            if value.is_zero() {
                problems.push(format!("[plugins] {key} must be longer than zero"));
            }
        }
        let memory = std::iter::once(("[plugins]".to_owned(), self.memory_limit)).chain(
            self.package.iter().filter_map(|(file, p)| {
                Some((format!("[plugins.package.{file:?}]"), p.memory_limit?))
            }),
        );
        for (table, size) in memory {
            if size.0 != 0 && size.0 < MIN_MEMORY {
                problems.push(format!(
                    "{table} memory_limit of {} bytes is too small for a worker to start (at least 64MiB, or 0 for no limit)",
                    size.0
                ));
            }
        }
        for (file, settings) in &self.package {
            if let Some(sha) = &settings.sha256 {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(format!(
                        "[plugins.package.{file:?}] sha256 must be 64 hex digits (as `healer plugins` or `sha256sum` prints it), not {sha:?}"
                    ));
                }
            }
        }
        problems
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
        assert!(plugins.problems()[0].contains("sha256 must be 64 hex digits"));
    }
}
