//! The example's diagnoser and recoverer, as plain Rust: `file.missing`
//! for a missing file, `file.too_large` only for a file too large at every
//! one of `for_checks` checks in a row (history oldest first), and a
//! restore that copies the known-good file, or says which copy failed.

use healer_plugin_example::{FileSize, RestoreFile};
use healer_plugin_sdk::{Diagnoser, Finding, Observation, Recoverer, Recovery};
use serde_json::json;

fn sized(bytes: u64) -> Observation {
    Observation::ok("present").metric("size", bytes as f64, "B")
}

fn kinds(findings: Vec<Finding>) -> Vec<String> {
    findings.into_iter().map(|f| f.kind).collect()
}

fn diagnoser() -> FileSize {
    let config = serde_json::from_value(json!({"max_size": "1kB", "for_checks": 3})).unwrap();
    FileSize::new(config).unwrap()
}

#[test]
fn a_missing_file_is_file_missing() {
    let found = diagnoser().diagnose(&Observation::critical("missing"), &[]);

    assert_eq!(kinds(found), ["file.missing"]);
}

#[test]
fn a_file_too_large_at_each_of_the_last_three_checks_is_too_large_and_not_before() {
    let mut diagnoser = diagnoser();
    let big = sized(5_000);

    let after_two = diagnoser.diagnose(&big, std::slice::from_ref(&big));
    let after_a_small_one = diagnoser.diagnose(&big, &[big.clone(), sized(10), big.clone()]);
    let after_three = diagnoser.diagnose(&big, &[sized(10), big.clone(), big.clone()]);

    assert!(after_two.is_empty());
    assert!(after_a_small_one.is_empty(), "the newest are at the end");
    assert_eq!(kinds(after_three), ["file.too_large"]);
}

fn recovery() -> Recovery {
    Recovery {
        target: "report".into(),
        finding: Finding::critical("file.missing", "missing"),
        attempt: 1,
        params: json!({"from": "/etc/shadow"}),
        fence: None,
    }
}

fn restore(from: &std::path::Path, to: &std::path::Path) -> Result<String, String> {
    let config = serde_json::from_value(json!({"from": from, "to": to})).unwrap();
    let mut recoverer = RestoreFile::new(config).map_err(|e| e.to_string())?;
    healer_plugin_sdk::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(recoverer.recover(&recovery()))
        .map(|outcome| outcome.summary)
        .map_err(|e| e.to_string())
}

#[test]
fn a_restore_copies_the_known_good_file_whatever_the_params_say() {
    let dir = tempfile::tempdir().unwrap();
    let (good, lost) = (dir.path().join("good.csv"), dir.path().join("report.csv"));
    std::fs::write(&good, "id,total\n1,42\n").unwrap();

    let said = restore(&good, &lost).unwrap();

    assert_eq!(std::fs::read_to_string(&lost).unwrap(), "id,total\n1,42\n");
    assert!(said.starts_with("restored "), "{said}");
}

#[test]
fn a_restore_without_its_good_copy_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");

    let err = restore(&good, &dir.path().join("report.csv")).unwrap_err();

    assert!(
        err.starts_with(&format!("cannot copy {}", good.display())),
        "{err}"
    );
}

#[test]
fn a_restore_from_the_file_itself_is_refused() {
    let path = std::path::Path::new("/srv/app/report.csv");

    let err = restore(path, path).unwrap_err();

    assert_eq!(
        err,
        "`from` and `to` are the same file: /srv/app/report.csv"
    );
}
