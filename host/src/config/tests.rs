use super::*;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(Path::new("healer.toml"), text.to_owned())
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

const MINIMAL: &str = r#"
[[target]]
name = "web"
[target.monitor]
plugin = "http"
url = "http://127.0.0.1:8080/"
"#;

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    let web = &config.targets[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.policy.interval, Duration::from_secs(5));
    assert_eq!(web.policy.max_attempts, 3);
    assert_eq!((web.policy.fail_after, web.policy.resolve_after), (1, 1));
    assert_eq!(web.checks[0].monitor.plugin, "http");
    assert_eq!(
        web.checks[0].monitor.config,
        serde_json::json!({"url": "http://127.0.0.1:8080/"})
    );
    assert!(config.healer.enabled);
    assert_eq!(config.healer.plugins_dir, Path::new("plugins"));
}

#[test]
fn targets_override_the_healer_defaults() {
    let text = format!("[healer]\ninterval = \"2s\"\nmax_attempts = 5\n{MINIMAL}interval = 1\n");
    // `interval = 1` above lands in the monitor table; put it on the target:
    let text = text.replace("name = \"web\"", "name = \"web\"\ntimeout = \"250ms\"");
    let config = parse(&text).unwrap();
    let policy = config.targets[0].policy;
    assert_eq!(policy.interval, Duration::from_secs(2));
    assert_eq!(policy.timeout, Duration::from_millis(250));
    assert_eq!(policy.max_attempts, 5);
}

#[test]
fn paths_are_relative_to_the_config_file() {
    let config = Config::parse(
        Path::new("/etc/healer/healer.toml"),
        "[healer]\nplugins_dir = \"lib\"\n".to_owned(),
    )
    .unwrap();
    assert_eq!(config.healer.plugins_dir, Path::new("/etc/healer/lib"));
    assert_eq!(
        config.healer.log_file,
        Path::new("/etc/healer/logs/healer.log")
    );
}

#[test]
fn an_unknown_key_names_line_and_column_and_suggests_the_right_one() {
    let errors = parse("[healer]\nintervall = \"5s\"\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("healer.toml:2:1: unknown field `intervall`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].ends_with("(did you mean \"interval\"?)"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_bad_duration_says_what_a_duration_looks_like() {
    let errors = parse("[healer]\ninterval = \"soon\"\n").unwrap_err();
    assert!(
        errors[0].starts_with("healer.toml:2:12: invalid duration \"soon\""),
        "{}",
        errors[0]
    );
}

#[test]
fn a_target_without_a_monitor_is_refused() {
    let errors = parse("[[target]]\nname = \"x\"\n").unwrap_err();
    assert!(
        errors[0].contains("missing field `monitor`"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_plugin_table_without_a_plugin_name_is_refused() {
    let errors =
        parse("[[target]]\nname = \"x\"\n[target.monitor]\nurl = \"http://x\"\n").unwrap_err();
    assert_eq!(errors, ["healer.toml:3:1: this monitor names no plugin: add `plugin = \"NAME\"` (`healer plugins` lists them)"]);
}

#[test]
fn duplicate_target_names_point_at_both() {
    let text = format!("{MINIMAL}{MINIMAL}");
    let errors = parse(&text).unwrap_err();
    assert_eq!(errors, ["healer.toml:8:1: a second target is named \"web\" (the first is at line 2); names must be unique"]);
}

#[test]
fn unknown_dependencies_and_cycles_are_refused() {
    let text = r#"
[[target]]
name = "app"
depends_on = ["dbb"]
monitor = { plugin = "http" }

[[target]]
name = "db"
depends_on = ["cache"]
monitor = { plugin = "process" }

[[target]]
name = "cache"
depends_on = ["db"]
monitor = { plugin = "process" }
"#;
    let errors = parse(text).unwrap_err();
    assert_eq!(
        errors,
        [
            "healer.toml:2:1: target \"app\" depends on \"dbb\", which is not a target (did you mean \"db\"?)",
            "healer.toml:7:1: depends_on forms a cycle: db -> cache -> db",
        ]
    );
}

#[test]
fn recoverers_select_findings_by_glob() {
    let text = format!("{MINIMAL}[[target.recover]]\nplugin = \"command\"\non = [\"process.*\", \"http.status_5xx\"]\nargv = [\"true\"]\n");
    let config = parse(&text).unwrap();
    let recoverer = &config.targets[0].recoverers[0];
    assert!(recoverer.handles("process.not_running", false));
    assert!(recoverer.handles("http.status_5xx", false));
    assert!(!recoverer.handles("http.timeout", false));
    assert_eq!(
        recoverer.plugin.config,
        serde_json::json!({"argv": ["true"]})
    );
}

#[test]
fn a_recoverer_without_on_handles_every_finding_but_unknown_ones() {
    let text = format!("{MINIMAL}[[target.recover]]\nplugin = \"command\"\n");
    let config = parse(&text).unwrap();
    let recoverer = &config.targets[0].recoverers[0];
    assert!(recoverer.handles("anything.at_all", false));
    assert!(!recoverer.handles("process.unknown", true));
}

#[test]
fn only_a_glob_naming_an_unknown_kind_acts_on_unknown() {
    let text = format!(
        "{MINIMAL}[[target.recover]]\nplugin = \"command\"\non = [\"process.*\", \"*.unknown\"]\n"
    );
    let config = parse(&text).unwrap();
    let recoverer = &config.targets[0].recoverers[0];
    assert!(recoverer.handles("process.unknown", true));
    assert!(recoverer.handles("nagios.unknown", true));
    let narrow =
        format!("{MINIMAL}[[target.recover]]\nplugin = \"command\"\non = [\"process.*\"]\n");
    let config = parse(&narrow).unwrap();
    assert!(
        !config.targets[0].recoverers[0].handles("process.unknown", true),
        "`process.*` does not name an UNKNOWN kind"
    );
}

#[test]
fn a_bad_glob_is_refused_at_its_line() {
    let text = format!("{MINIMAL}[[target.recover]]\nplugin = \"command\"\non = [\"process.[\"]\n");
    let errors = parse(&text).unwrap_err();
    assert!(
        errors[0].starts_with("healer.toml:9:1: `on` pattern \"process.[\" is not a valid glob"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_recoverers_gates_are_read_and_kept_out_of_its_plugin_config() {
    let text = format!(
        "{MINIMAL}[[target.recover]]\nplugin = \"command\"\nwhen = [\"target.db.healthy\"]\nunless = [\"system.load.one > 8\"]\n"
    );
    let config = parse(&text).unwrap();
    let recoverer = &config.targets[0].recoverers[0];
    assert_eq!(recoverer.when[0].to_string(), "target.db.healthy");
    assert_eq!(recoverer.unless[0].fact, "system.load.one");
    assert!(recoverer.plugin.config.get("when").is_none());
    assert!(recoverer.plugin.config.get("unless").is_none());
}

#[test]
fn a_gate_that_cannot_be_read_is_refused_at_its_line() {
    let text = format!(
        "{MINIMAL}[[target.recover]]\nplugin = \"command\"\nwhen = [\"target.db.healthy == yes\"]\n"
    );
    let errors = parse(&text).unwrap_err();
    assert!(
        errors[0].starts_with("healer.toml:9:1: `when`: \"yes\" is not a value; write true, false, a number or a quoted text"),
        "{}",
        errors[0]
    );
}

#[test]
fn zero_attempts_or_interval_are_refused() {
    let errors = parse("[healer]\nmax_attempts = 0\ninterval = \"0s\"\n").unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = "[[target]]\nname = \"a b\"\nmonitor = { url = 1 }\n[[target]]\nname = \"c\"\ndepends_on = [\"zz\"]\nmonitor = { plugin = \"x\" }\n";
    let errors = parse(text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn plugin_errors_point_at_the_offending_key() {
    let config = parse(MINIMAL).unwrap();
    let monitor = &config.targets[0].checks[0].monitor;
    let err = config.plugin_error(
        monitor,
        "unknown field `url`, expected one of `urls`, `timeout`",
    );
    assert_eq!(err.at.map(|at| at.line), Some(6));
    assert!(
        err.message.ends_with("(did you mean \"urls\"?)"),
        "{}",
        err.message
    );
}

#[test]
fn toml_tables_become_json_objects() {
    let json = plugin_table_to_json("url = \"http://x\"\ntimeout = 2\n# comment\n").unwrap();
    assert_eq!(json, serde_json::json!({"url": "http://x", "timeout": 2}));
}

#[test]
fn a_targets_own_pacing_is_checked_like_the_defaults() {
    let text = "\n[[target]]\nname = \"web\"\nescalated_interval = \"0s\"\nbackoff = \"10m\"\nmonitor = { plugin = \"http\" }\n";
    let errors = parse(text).unwrap_err();
    assert_eq!(
        errors,
        ["healer.toml:4:1: target \"web\": escalated_interval must be longer than zero",]
    );
}

#[test]
fn an_inherited_problem_is_blamed_on_healer_once() {
    let target = |name: &str| {
        format!("\n[[target]]\nname = \"{name}\"\nmonitor = {{ plugin = \"http\" }}\n")
    };
    let text = format!(
        "[healer]\nescalated_interval = \"0s\"\n{}{}",
        target("web"),
        target("api")
    );
    let errors = parse(&text).unwrap_err();
    assert_eq!(
        errors,
        ["healer.toml:1:1: [healer] escalated_interval must be longer than zero"]
    );
}

#[test]
fn an_absurd_duration_is_refused_at_its_line() {
    for written in ["\"1e30s\"", "1e30"] {
        let text = format!("{MINIMAL}[healer]\ninterval = {written}\n");
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("healer.toml:8:12: invalid duration"),
            "{written}: {errors:?}"
        );
    }
}

#[test]
fn a_reflex_map_cut_short_is_blamed_on_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reflex_map.yml"),
        "anomalies:\n  - name: \"api_latency.coinbase.high\"\n    workflow",
    )
    .unwrap();
    let text = "[intake]\nreflex_map = \"reflex_map.yml\"\n";
    let errors = Config::parse(&dir.path().join("healer.toml"), text.to_owned()).unwrap_err();
    let shown = errors.to_string();
    assert!(
        shown.contains("reflex_map.yml:3:1: could not find expected ':'"),
        "{shown}"
    );
}

#[test]
fn an_error_quoting_a_key_with_a_newline_is_one_line() {
    let errors = parse("[healer]\n\"inter\\nval\" = \"5s\"\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("healer.toml:2:1: unknown field `inter\\nval`"),
        "{}",
        errors[0]
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("map.yml"), "\"anoma\\nlies\": []\n").unwrap();
    let text = "[intake]\nreflex_map = \"map.yml\"\n";
    let errors = Config::parse(&dir.path().join("healer.toml"), text.to_owned()).unwrap_err();
    let shown = errors.to_string();
    assert!(
        shown.contains("map.yml:1:1: unknown field `anoma\\nlies`, expected `anomalies`"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1, "{shown}");
}

const TWO_CHECKS: &str = r#"
[[target]]
name = "nginx"
interval = "2s"

[[target.monitor]]
plugin = "process"
pidfile = "/run/nginx.pid"
[[target.monitor.diagnose]]
plugin = "process"

[[target.monitor]]
plugin = "http"
url = "http://127.0.0.1/"
interval = "5s"
deadline = "3s"
[[target.monitor.diagnose]]
plugin = "http"
"#;

#[test]
fn a_target_may_have_several_checks_each_with_its_own_schedule_and_diagnosers() {
    let config = parse(TWO_CHECKS).unwrap();
    let checks = &config.targets[0].checks;
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (checks[0].name.as_str(), checks[1].name.as_str()),
        ("process", "http")
    );
    assert_eq!(checks[0].interval, Duration::from_secs(2), "the target's");
    assert_eq!(
        checks[0].deadline,
        Duration::from_secs(10),
        "the target's timeout"
    );
    assert_eq!(checks[1].interval, Duration::from_secs(5));
    assert_eq!(checks[1].deadline, Duration::from_secs(3));
    assert_eq!(checks[0].diagnosers[0].plugin, "process");
    assert_eq!(checks[1].diagnosers[0].plugin, "http");
    // healer's keys are not the plugin's.
    assert_eq!(
        checks[1].monitor.config,
        serde_json::json!({"url": "http://127.0.0.1/"})
    );
    assert_eq!(config.targets[0].monitors(), "process+http");
}

#[test]
fn a_second_check_by_the_same_plugin_is_numbered() {
    let text = TWO_CHECKS.replace(
        "plugin = \"process\"\npidfile",
        "plugin = \"http\"\npidfile",
    );
    let config = parse(&text).unwrap();
    let names: Vec<&str> = config.targets[0]
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["http", "http-2"]);
}

#[test]
fn target_diagnosers_beside_several_monitors_are_refused_at_their_line() {
    let text = format!("{TWO_CHECKS}\n[[target.diagnose]]\nplugin = \"process\"\n");
    let errors = parse(&text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("healer.toml:20:"), "{errors:?}");
    assert!(
        errors[0].contains("[[target.monitor.diagnose]]"),
        "{errors:?}"
    );
}

#[test]
fn a_checks_bad_interval_or_deadline_is_refused_at_its_key() {
    let text = TWO_CHECKS.replace("deadline = \"3s\"", "deadline = \"0s\"");
    let errors = parse(&text).unwrap_err();
    assert!(errors[0].starts_with("healer.toml:16:"), "{errors:?}");
    assert!(
        errors[0].contains("`deadline` must be longer than zero"),
        "{errors:?}"
    );
    let text = TWO_CHECKS.replace("interval = \"5s\"", "interval = \"soon\"");
    let errors = parse(&text).unwrap_err();
    assert!(errors[0].starts_with("healer.toml:15:"), "{errors:?}");
    assert!(errors[0].contains("`interval`"), "{errors:?}");
}

#[test]
fn more_checks_than_a_target_may_have_are_refused() {
    let mut text = "[[target]]\nname = \"many\"\n".to_owned();
    for _ in 0..=MAX_CHECKS {
        text.push_str("[[target.monitor]]\nplugin = \"http\"\n");
    }
    let errors = parse(&text).unwrap_err();
    assert!(errors[0].contains("at most 16"), "{errors:?}");
}
