//! The seed's `reflex_map.yml` (`anomalies: [{name, workflow, params}]`),
//! read as `healer check` reads it: `Config::parse` of a config whose
//! `[intake] reflex_map` names it; then anomaly names matched against
//! every reflex, as a report is.
//!
//! Input: the map's text, written to the file the config names (a map
//! that is not UTF-8 is an error like any other).
//!
//! Invariants: no panic; every error is one line and points into the map
//! (or the config) within its lines; a reflex's origin is `file:line`; a
//! reflex whose pattern has no glob characters matches its own name.

#![no_main]

use healer::config::Config;
use healer_fuzz::{assert_one_line, scratch};
use libfuzzer_sys::fuzz_target;

/// The seed's workflows (`[[reflex]]` entries are the config target's: a
/// glob each is a regex built, the cost of most runs here).
const CONFIG: &str = r#"
[intake]
reflex_map = "map.yml"

[workflow.record_action]
steps = [{ plugin = "command", argv = ["true"] }]

[workflow.run_coinbase_health_check_and_clear_cache]
steps = [{ plugin = "command", argv = ["true"] }]
"#;

/// Names as anomalies are reported, each matched against every reflex.
const NAMES: &[&str] = &[
    "api_latency.coinbase.high",
    "api_latency.kraken.high",
    "disk.root.full",
    "HighErrorRate",
    "a",
    "x/y:z-1_2",
];

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let map = dir.join("map.yml");
    std::fs::write(&map, data).expect("the map is written");
    let config_path = dir.join("reflex_map.toml");
    let map_lines = data.split(|&b| b == b'\n').count();
    let config = match Config::parse(&config_path, CONFIG.to_owned()) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors.0 {
                assert_one_line(&error.to_string(), "a reflex map error");
                assert!(error.file == map, "an error in the fixed config: {error}");
                if let Some(at) = error.at {
                    assert!(
                        at.line >= 1 && at.line <= map_lines,
                        "{error} is beyond the map's {map_lines} lines"
                    );
                }
            }
            return;
        }
    };
    let map_shown = map.display().to_string();
    for reflex in &config.reflexes {
        let (file, line) = reflex
            .origin
            .rsplit_once(':')
            .expect("an origin is file:line");
        assert!(line.parse::<usize>().is_ok(), "origin {:?}", reflex.origin);
        if file == map_shown {
            assert!(line.parse::<usize>().unwrap_or(0) <= map_lines);
        }
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
    }
    let own: Vec<&str> = config.reflexes.iter().map(|r| r.pattern.as_str()).collect();
    for name in NAMES.iter().chain(&own) {
        let _ = config.reflexes.iter().position(|r| r.matches(name));
    }
});
