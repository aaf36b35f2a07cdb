//! `[fleet]`: the etcd cluster a fleet of healers shares, this healer's
//! name in it and the lease that says it is alive. Only targets with
//! `fleet = true` need it; a config without `[fleet]` is one machine.

use healer_plugin_sdk::Duration;
use serde::Deserialize;

/// The shortest lease etcd grants with its default election timeout
/// (1 s): it raises a shorter TTL to ⌈1.5 × election timeout⌉.
pub const LEASE_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(2);

/// `[fleet]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// etcd's client URLs (`http://10.0.0.1:2379`), any member of the
    /// cluster; at least one.
    pub etcd: Vec<String>,
    /// This healer's name in the fleet, unique in it; the host name by
    /// default.
    #[serde(default = "host_name")]
    pub member: String,
    /// How long etcd keeps this member's shards after its last renewal
    /// (renewed every fifth of it). A member that has heard nothing
    /// back for this long stops acting on its shards.
    #[serde(default = "default_lease")]
    pub lease: Duration,
    /// Where the other members reach this one to confirm a check from
    /// here (`confirm = K`): its API's URL, `http://ADDRESS:PORT`, as
    /// they can route to it. Without it, this member answers nobody's
    /// confirmations.
    #[serde(default)]
    pub advertise: Option<String>,
}

fn default_lease() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

/// The machine's host name (`member`'s default).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "healer".to_owned())
}

impl Fleet {
    /// What is wrong with it, each a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.etcd.is_empty() {
            problems.push("[fleet] etcd must name at least one client URL of the etcd cluster (etcd = [\"http://127.0.0.1:2379\"])".to_owned());
        }
        for url in &self.etcd {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                problems.push(format!(
                    "[fleet] etcd URL {url:?} is not a URL; write it as http://HOST:PORT"
                ));
            }
        }
        if let Some(url) = &self.advertise {
            if !url.starts_with("http://") {
                problems.push(format!(
                    "[fleet] advertise {url:?} is not this member's API URL; write it as http://ADDRESS:PORT"
                ));
            }
        }
        if self.member.is_empty()
            || self.member.len() > 64
            || !self
                .member
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push(format!(
                "[fleet] member {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                self.member
            ));
        }
        if self.lease.0 < LEASE_AT_LEAST {
            problems.push(format!(
                "[fleet] lease must be at least {} (etcd raises a shorter one)",
                Duration(LEASE_AT_LEAST)
            ));
        }
        problems
    }
}
