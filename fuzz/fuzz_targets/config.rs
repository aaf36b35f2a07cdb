//! `healer.toml`: `Config::parse`, what `healer check`, `healer run` and
//! a reload run on the file before any plugin is loaded (TOML, the schema,
//! pacing, targets and their dependencies, recoverers' `on` globs,
//! `[intake]`, `[[reflex]]`, workflows, `[[alert]]`, `[store]`,
//! `[plugins]`, and the seed's reflex map when `reflex_map` names one: the
//! scratch directory holds `reflex_map.yml`, the seed's).
//!
//! Input: the file's text (a file that is not UTF-8 is refused before).
//!
//! Invariants: no panic; every error is one line, `file:line:column:
//! message`, within the file it names; the errors come in file order; in
//! a config that passed, a reflex whose pattern has no glob characters
//! matches its own name, and a plugin's error points into the file.

#![no_main]

use std::path::Path;

use healer::config::{Config, ConfigErrors};
use healer_fuzz::{assert_one_line, scratch, SEED_REFLEX_MAP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = scratch();
    let path = dir.join("healer.toml");
    if !dir.join("reflex_map.yml").exists() {
        std::fs::write(dir.join("reflex_map.yml"), SEED_REFLEX_MAP).expect("the seed's map");
    }
    if names_a_file_not_to_read(text, dir) {
        return;
    }
    let lines = text.split('\n').count();
    match Config::parse(&path, text.to_owned()) {
        Err(errors) => check_errors(&errors, &path, lines),
        Ok(config) => {
            for reflex in &config.reflexes {
                if !reflex
                    .pattern
                    .contains(['*', '?', '[', ']', '{', '}', '\\'])
                {
                    assert!(
                        reflex.matches(&reflex.pattern),
                        "reflex {:?} does not match its own name",
                        reflex.pattern
                    );
                }
                let _ = reflex.matches("api_latency.coinbase.high");
            }
            for target in &config.targets {
                let plugins = target
                    .check_plugins()
                    .chain(target.recoverers.iter().map(|r| &r.plugin));
                for plugin in plugins {
                    for message in [
                        "unknown field `x`, expected one of `url`, `timeout`",
                        "invalid value for `interval`: not a duration",
                        "missing field `url`",
                    ] {
                        let error = config.plugin_error(plugin, message);
                        let at = error.at.expect("a plugin's error has a place");
                        assert!(at.line <= lines, "{error} is beyond the file");
                        assert_one_line(&error.to_string(), "a plugin's error");
                    }
                }
                for recoverer in &target.recoverers {
                    let _ = recoverer.handles("process.not_running", false);
                    let _ = recoverer.handles("process.unknown", true);
                }
            }
        }
    }
});

/// Every error is one line, in the config or its reflex map, in file order.
fn check_errors(errors: &ConfigErrors, path: &Path, lines: usize) {
    assert!(!errors.0.is_empty(), "a refused config says why");
    for error in &errors.0 {
        assert_one_line(&error.to_string(), "a config error");
        if error.file == path {
            if let Some(at) = error.at {
                assert!(
                    at.line >= 1 && at.line <= lines && at.column >= 1,
                    "{error} is beyond the file's {lines} lines"
                );
            }
        }
    }
    let order: Vec<_> = errors
        .0
        .iter()
        .map(|e| (e.file.clone(), e.at.map(|at| (at.line, at.column))))
        .collect();
    assert!(order.is_sorted(), "errors out of file order");
    assert_eq!(
        errors.to_string().lines().count(),
        errors.0.len(),
        "one line per error"
    );
}

/// Whether the config names, as `reflex_map` or `token_file`, anything
/// but a directory, a missing or a small regular file: reading a device
/// or a FIFO an operator names is the operator's choice, not this
/// target's subject.
fn names_a_file_not_to_read(text: &str, dir: &Path) -> bool {
    if !text.contains("reflex_map") && !text.contains("token_file") {
        return false;
    }
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    let Some(intake) = table.get("intake").and_then(toml::Value::as_table) else {
        return false;
    };
    ["reflex_map", "token_file"].iter().any(|key| {
        let Some(name) = intake.get(*key).and_then(toml::Value::as_str) else {
            return false;
        };
        match std::fs::metadata(dir.join(name)) {
            Ok(meta) => !(meta.is_file() || meta.is_dir()) || meta.len() > 1 << 20,
            Err(_) => false,
        }
    })
}
