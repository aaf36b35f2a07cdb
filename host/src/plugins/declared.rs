//! The checks of a target against what its plugins declare about their
//! configs (`healer_plugin_sdk::ffi::Declared`), made by `healer check`
//! and by every load of a config (start, reload) once the plugins have
//! accepted their configs:
//!
//! - a recoverer's `on` glob must match a finding kind the target can
//!   have: one its diagnosers declare, or one healer makes itself from an
//!   observation no diagnoser read (`<monitor plugin>.warning`,
//!   `.critical`, `.unknown`). A typo there would pass every other check
//!   and leave the issue to be escalated at once. Checked only when every
//!   diagnoser of the target declares its kinds: otherwise any kind may
//!   come, and nothing can be refused.
//! - a monitor's own timeout must be below its check's deadline: else
//!   healer's deadline fires first, and a hung service is UNKNOWN (which
//!   healer never acts on) instead of the monitor's CRITICAL.
//!
//! Each check is a function of the uses it concerns, not of a whole
//! target, so a target with several checks calls them per check.

use std::collections::BTreeSet;
use std::time::Duration;

use globset::Glob;
use healer_plugin_sdk::ffi::Declared;

use crate::config::{did_you_mean, Config, ConfigError, PluginUse, RecovererUse};

/// Every target of `config` checked against what its plugins declared
/// (`declared` of a plugin use: `None` for one that refused its config,
/// whose error is said already).
pub fn check_targets<'a>(
    config: &'a Config,
    declared: impl Fn(&'a PluginUse) -> Option<&'a Declared>,
) -> Vec<ConfigError> {
    // Every kind any target's plugins declare: a glob matching one of them
    // is no typo, also on a target that cannot have it (one recoverer
    // list shared by several targets).
    let mut anywhere = BTreeSet::new();
    for target in &config.targets {
        for check in &target.checks {
            anywhere.extend(
                HEALERS_OWN
                    .iter()
                    .map(|own| format!("{}.{own}", check.monitor.plugin)),
            );
            for diagnoser in &check.diagnosers {
                if let Some(kinds) = declared(diagnoser).and_then(|d| d.kinds.as_ref()) {
                    anywhere.extend(kinds.iter().cloned());
                }
            }
        }
    }
    let mut errors = Vec::new();
    for target in &config.targets {
        // Each check's monitor against the check's own deadline.
        let mut refused = false;
        for check in &target.checks {
            match declared(&check.monitor) {
                Some(monitor) => errors.extend(own_timeout_too_long(
                    config,
                    &target.name,
                    &check.monitor,
                    monitor,
                    (
                        check.deadline.into(),
                        check.deadline != target.policy.timeout,
                    ),
                )),
                None => refused = true,
            }
        }
        if refused {
            continue;
        }
        // The kinds of all its checks together: any check's issue may be
        // any recoverer's.
        let monitors: Vec<&PluginUse> = target.checks.iter().map(|c| &c.monitor).collect();
        let diagnosers: Option<Vec<(&PluginUse, &Declared)>> = target
            .checks
            .iter()
            .flat_map(|check| &check.diagnosers)
            .map(|diagnoser| Some((diagnoser, declared(diagnoser)?)))
            .collect();
        if let Some(diagnosers) = diagnosers {
            errors.extend(unmatched_on_globs(
                config,
                &target.name,
                (&monitors, &diagnosers),
                &target.recoverers,
                &anywhere,
            ));
        }
    }
    errors
}

/// The most kinds an error lists; the rest are counted.
const KINDS_SHOWN: usize = 16;

/// The kinds healer itself makes of an observation no diagnoser read.
const HEALERS_OWN: [&str; 3] = ["warning", "critical", "unknown"];

/// The `on` globs of `recoverers` that match none of the finding kinds
/// the target of `monitors` and `diagnosers` can have, nor any kind
/// another target's plugins declare (`anywhere`): typos, one error each
/// at the line of its `on`. Nothing when a diagnoser does not declare its
/// kinds.
pub fn unmatched_on_globs(
    config: &Config,
    target: &str,
    (monitors, diagnosers): (&[&PluginUse], &[(&PluginUse, &Declared)]),
    recoverers: &[RecovererUse],
    anywhere: &BTreeSet<String>,
) -> Vec<ConfigError> {
    let Some(kinds) = target_kinds(monitors, diagnosers) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for recoverer in recoverers {
        for pattern in &recoverer.on {
            // The config checked every glob; one that does not compile
            // here is left to that check.
            let Ok(glob) = Glob::new(pattern) else {
                continue;
            };
            let matcher = glob.compile_matcher();
            if kinds
                .iter()
                .chain(anywhere)
                .any(|kind| matcher.is_match(kind))
            {
                continue;
            }
            let hint = did_you_mean(pattern, kinds.iter().map(String::as_str))
                .map(|guess| format!("; did you mean \"{guess}\"?"))
                .unwrap_or_default();
            errors.push(ConfigError {
                file: config.path.clone(),
                at: Some(config.key_location(&recoverer.plugin, "on")),
                message: format!(
                    "target {target:?}: recoverer {:?}: `on` glob {pattern:?} matches none of the finding kinds this target can have ({}){hint}",
                    recoverer.plugin.plugin,
                    listed(&kinds),
                ),
            });
        }
    }
    errors
}

/// Every finding kind a target can have, or `None` when a diagnoser does
/// not say.
fn target_kinds(
    monitors: &[&PluginUse],
    diagnosers: &[(&PluginUse, &Declared)],
) -> Option<BTreeSet<String>> {
    let mut kinds = BTreeSet::new();
    for monitor in monitors {
        kinds.extend(
            HEALERS_OWN
                .iter()
                .map(|status| format!("{}.{status}", monitor.plugin)),
        );
    }
    for (_, declared) in diagnosers {
        kinds.extend(declared.kinds.as_ref()?.iter().cloned());
    }
    Some(kinds)
}

/// `kinds` for one line: at most [`KINDS_SHOWN`], then how many more.
fn listed(kinds: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = kinds.iter().take(KINDS_SHOWN).map(String::as_str).collect();
    match kinds.len().saturating_sub(KINDS_SHOWN) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

/// The `monitor` of `target` when its own timeout (what it `declared`) is
/// not below `deadline`, the deadline of its checks: an error at the
/// line of its table saying both and what to set.
pub fn own_timeout_too_long(
    config: &Config,
    target: &str,
    monitor: &PluginUse,
    declared: &Declared,
    (deadline, check_has_its_own): (Duration, bool),
) -> Option<ConfigError> {
    let own = declared.own_timeout()?;
    if own < deadline {
        return None;
    }
    let (own, deadline) = (shown(own), shown(deadline));
    let (whose, key) = if check_has_its_own {
        ("this check's deadline (deadline", "its `deadline`")
    } else {
        (
            "the target's check deadline (timeout",
            "the target's `timeout`",
        )
    };
    Some(ConfigError {
        file: config.path.clone(),
        at: Some(monitor.at),
        message: format!(
            "target {target:?}: monitor {:?}: its own timeout ({own}) is not below {whose} = \"{deadline}\"), so healer's deadline fires first and a hung service is UNKNOWN, never recovered; lower the monitor's `timeout` below {deadline}, or raise {key} above {own}",
            monitor.plugin,
        ),
    })
}

/// A duration as configs write it (`1s`, `1500ms`).
fn shown(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(recover_on: &str) -> Config {
        let text = format!(
            r#"
[healer]
timeout = "1s"

[[target]]
name = "app"
[target.monitor]
plugin = "logscan"
path = "/var/log/app.log"
[[target.diagnose]]
plugin = "logscan"
patterns = [{{ regex = "No space", kind = "disk.filling" }}]
[[target.recover]]
plugin = "command"
on = {recover_on}
argv = ["true"]
"#
        );
        Config::parse(Path::new("healer.toml"), text).unwrap()
    }

    fn kinds(kinds: &[&str]) -> Declared {
        Declared {
            kinds: Some(kinds.iter().map(|kind| (*kind).to_owned()).collect()),
            own_timeout_ms: None,
        }
    }

    fn check(config: &Config, declared: &Declared) -> Vec<String> {
        let target = &config.targets[0];
        let diagnosers = [(&target.checks[0].diagnosers[0], declared)];
        unmatched_on_globs(
            config,
            &target.name,
            (&[&target.checks[0].monitor], &diagnosers),
            &target.recoverers,
            &BTreeSet::new(),
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn a_glob_matching_no_declared_kind_is_refused_at_its_line_with_a_suggestion() {
        let config = config(r#"["disk.filing"]"#);
        let errors = check(&config, &kinds(&["disk.filling"]));
        assert_eq!(errors, [
            "healer.toml:15:1: target \"app\": recoverer \"command\": `on` glob \"disk.filing\" matches none of the finding kinds this target can have (disk.filling, logscan.critical, logscan.unknown, logscan.warning); did you mean \"disk.filling\"?"
        ]);
    }

    #[test]
    fn globs_matching_a_declared_kind_or_one_healer_makes_pass() {
        for on in [
            r#"["disk.filling"]"#,
            r#"["disk.*"]"#,
            r#"["*"]"#,
            r#"["logscan.critical", "*.unknown"]"#,
        ] {
            let config = config(on);
            assert_eq!(
                check(&config, &kinds(&["disk.filling"])),
                Vec::<String>::new(),
                "{on}"
            );
        }
    }

    #[test]
    fn nothing_is_checked_while_a_diagnoser_does_not_declare() {
        let config = config(r#"["disk.filing"]"#);
        assert!(check(&config, &Declared::default()).is_empty());
    }

    #[test]
    fn each_glob_that_matches_nothing_is_its_own_error() {
        let config = config(r#"["disk.filling", "nothing.like.it", "zzz"]"#);
        let errors = check(&config, &kinds(&["disk.filling"]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("\"nothing.like.it\""), "{}", errors[0]);
        assert!(!errors[0].contains("did you mean"), "{}", errors[0]);
    }

    #[test]
    fn a_long_list_of_kinds_is_cut_and_counted() {
        let many: Vec<String> = (0..40).map(|n| format!("k.n{n:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let config = config(r#"["zzz.zzz"]"#);
        let errors = check(&config, &kinds(&many));
        assert!(errors[0].contains(", and 27 more)"), "{}", errors[0]);
    }

    #[test]
    fn a_monitor_timeout_at_or_above_the_deadline_is_refused_with_both_values() {
        let config = config(r#"["*"]"#);
        let monitor = &config.targets[0].checks[0].monitor;
        let declared = |ms| Declared {
            kinds: None,
            own_timeout_ms: Some(ms),
        };
        let second = Duration::from_secs(1);
        let refused =
            own_timeout_too_long(&config, "app", monitor, &declared(5000), (second, false))
                .expect("refused")
                .to_string();
        assert_eq!(
            refused,
            "healer.toml:7:1: target \"app\": monitor \"logscan\": its own timeout (5s) is not below the target's check deadline (timeout = \"1s\"), so healer's deadline fires first and a hung service is UNKNOWN, never recovered; lower the monitor's `timeout` below 1s, or raise the target's `timeout` above 5s"
        );
        assert!(
            own_timeout_too_long(&config, "app", monitor, &declared(1000), (second, false))
                .is_some()
        );
        assert!(
            own_timeout_too_long(&config, "app", monitor, &declared(999), (second, false))
                .is_none()
        );
        assert!(own_timeout_too_long(
            &config,
            "app",
            monitor,
            &Declared::default(),
            (second, false)
        )
        .is_none());
    }
}
