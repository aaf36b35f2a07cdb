//! A target's checks: `[target.monitor]` (one) or `[[target.monitor]]`
//! (several), each a monitor with its own `interval`, `deadline` and
//! diagnosers (`[[target.monitor.diagnose]]`). A service watched by pidfile
//! and by HTTP is one target with two checks, one issue tracker and one
//! recovery at a time, as Monit's `check process ... if failed port`.
//!
//! healer's own keys in a monitor's table are `plugin`, `interval`,
//! `deadline` and `diagnose`; the rest is the plugin's config.

use std::fmt;

use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::Duration;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{Checker, PluginUse, Policy};

/// The most checks one target may have.
pub const MAX_CHECKS: usize = 16;

/// One check of a target: a monitor, how often and how long it runs, and
/// the diagnosers that read its observations.
#[derive(Clone, Debug)]
pub struct Check {
    /// Unique in its target: the monitor's plugin name, with `-2`, `-3`
    /// for a second and third check by the same plugin.
    pub name: String,
    /// The monitor.
    pub monitor: PluginUse,
    /// Its diagnosers, in order.
    pub diagnosers: Vec<PluginUse>,
    /// How often it runs (the target's `interval` unless it has its own).
    pub interval: Duration,
    /// Its deadline, and each of its diagnosers' (the target's `timeout`
    /// unless it has its own `deadline`).
    pub deadline: Duration,
}

impl Check {
    /// Whether `other` is the same check configured the same way.
    pub fn same_as(&self, other: &Check) -> bool {
        self.name == other.name
            && self.interval == other.interval
            && self.deadline == other.deadline
            && self.monitor.same_as(&other.monitor)
            && self.diagnosers.len() == other.diagnosers.len()
            && self
                .diagnosers
                .iter()
                .zip(&other.diagnosers)
                .all(|(a, b)| a.same_as(b))
    }
}

/// `target.monitor` as written: one table or an array of them.
pub(super) enum RawMonitors {
    One(RawMonitor),
    Many(Vec<Spanned<RawMonitor>>),
}

/// One monitor's table, its nested diagnosers apart (their spans kept).
pub(super) struct RawMonitor {
    table: toml::Table,
    diagnose: Vec<Spanned<toml::Table>>,
}

impl<'de> Deserialize<'de> for RawMonitors {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Monitors;
        impl<'de> Visitor<'de> for Monitors {
            type Value = RawMonitors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a monitor table ([target.monitor]) or an array of them ([[target.monitor]])",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawMonitors, A::Error> {
                monitor_from(map).map(RawMonitors::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMonitors, A::Error> {
                let mut monitors = Vec::new();
                while let Some(monitor) = seq.next_element()? {
                    monitors.push(monitor);
                }
                Ok(RawMonitors::Many(monitors))
            }
        }
        deserializer.deserialize_any(Monitors)
    }
}

impl<'de> Deserialize<'de> for RawMonitor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Monitor;
        impl<'de> Visitor<'de> for Monitor {
            type Value = RawMonitor;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a monitor table")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawMonitor, A::Error> {
                monitor_from(map)
            }
        }
        deserializer.deserialize_map(Monitor)
    }
}

/// A monitor's keys; `diagnose` read as spanned tables (straight from the
/// TOML deserializer, which alone knows where they are written).
fn monitor_from<'de, A: MapAccess<'de>>(mut map: A) -> Result<RawMonitor, A::Error> {
    let mut table = toml::Table::new();
    let mut diagnose = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        if key == "diagnose" {
            diagnose = map.next_value::<Vec<Spanned<toml::Table>>>().map_err(|err| {
                de::Error::custom(format!(
                    "`diagnose` in a monitor is a list of diagnoser tables ([[target.monitor.diagnose]]): {err}"
                ))
            })?;
        } else {
            let value = map.next_value::<toml::Value>()?;
            table.insert(key, value);
        }
    }
    Ok(RawMonitor { table, diagnose })
}

impl Checker<'_> {
    /// A target's checks; `diagnose` are its `[[target.diagnose]]` tables,
    /// which belong to its one monitor (several monitors each name their
    /// own). `None` when any check is wrong (each error said).
    pub(super) fn checks(
        &mut self,
        target: &str,
        monitors: Spanned<RawMonitors>,
        diagnose: Vec<Spanned<toml::Table>>,
        policy: &Policy,
    ) -> Option<Vec<Check>> {
        let span = monitors.span();
        let monitors = match monitors.into_inner() {
            RawMonitors::One(monitor) => vec![Spanned::new(span.clone(), monitor)],
            RawMonitors::Many(monitors) => monitors,
        };
        if monitors.is_empty() {
            self.error(span.start, format!("target {target:?} has no monitor: add a [[target.monitor]] table with `plugin = \"NAME\"`"));
            return None;
        }
        if monitors.len() > MAX_CHECKS {
            self.error(
                span.start,
                format!(
                    "target {target:?} has {} monitors; one target may have at most {MAX_CHECKS}",
                    monitors.len()
                ),
            );
            return None;
        }
        if monitors.len() > 1 {
            if let Some(first) = diagnose.first() {
                self.error(first.span().start, format!("target {target:?} has {} monitors: put each diagnoser under the monitor whose observations it reads, as [[target.monitor.diagnose]] after that [[target.monitor]]", monitors.len()));
                return None;
            }
        }
        let mut outer = Some(diagnose);
        let mut checks = Vec::new();
        let mut failed = false;
        for monitor in monitors {
            match self.check(target, monitor, outer.take().unwrap_or_default(), policy) {
                Some(check) => checks.push(check),
                None => failed = true,
            }
        }
        if failed {
            return None;
        }
        // Names: the plugin's, numbered from the second of the same plugin.
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for check in &mut checks {
            let count = seen.entry(check.monitor.plugin.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                check.name = format!("{}-{count}", check.monitor.plugin);
            }
        }
        Some(checks)
    }

    fn check(
        &mut self,
        target: &str,
        monitor: Spanned<RawMonitor>,
        outer: Vec<Spanned<toml::Table>>,
        policy: &Policy,
    ) -> Option<Check> {
        let span = monitor.span();
        let RawMonitor {
            mut table,
            diagnose,
        } = monitor.into_inner();
        let mut own = |table: &mut toml::Table, key: &str, default: Duration| {
            let value = table.remove(key)?;
            let at = self.source.key_in_table(span.clone(), key);
            let parsed = value
                .try_into::<Duration>()
                .map_err(|err| err.message().trim().to_owned())
                .and_then(|duration| {
                    if duration.is_zero() {
                        Err("must be longer than zero".to_owned())
                    } else {
                        Ok(duration)
                    }
                });
            Some(match parsed {
                Ok(duration) => Ok(duration),
                Err(problem) => {
                    self.push(
                        at,
                        format!(
                            "target {target:?}: the check's `{key}` {problem} (e.g. {key} = \"{default}\")"
                        ),
                    );
                    Err(())
                }
            })
        };
        let interval = own(&mut table, "interval", policy.interval).unwrap_or(Ok(policy.interval));
        let deadline = own(&mut table, "deadline", policy.timeout).unwrap_or(Ok(policy.timeout));
        let monitor = self.plugin_use(PluginKind::Monitor, Spanned::new(span, table), false);
        let diagnosers: Vec<_> = outer
            .into_iter()
            .chain(diagnose)
            .map(|t| self.plugin_use(PluginKind::Diagnoser, t, false))
            .collect();
        let monitor = monitor?;
        Some(Check {
            name: monitor.plugin.clone(),
            monitor,
            diagnosers: diagnosers.into_iter().collect::<Option<Vec<_>>>()?,
            interval: interval.ok()?,
            deadline: deadline.ok()?,
        })
    }
}
