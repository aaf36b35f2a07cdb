//! The example monitor says CRITICAL only when the file is missing: any
//! other error is UNKNOWN (healer could not look, which is no evidence).

use healer_plugin_example::FileExists;
use healer_plugin_sdk::{Monitor, Observation, Status};

fn check(path: &std::path::Path) -> Observation {
    let config = serde_json::from_value(serde_json::json!({ "path": path })).unwrap();
    let mut monitor = FileExists::new(config).unwrap();
    healer_plugin_sdk::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(monitor.check())
        .unwrap()
}

#[test]
fn a_present_file_is_ok_and_a_missing_one_critical() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("present");
    std::fs::write(&file, "12345").unwrap();
    assert_eq!(check(&file).status, Status::Ok);
    assert_eq!(check(&dir.path().join("absent")).status, Status::Critical);
}

#[test]
fn a_file_that_cannot_be_looked_at_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    // A path through a file (ENOTDIR), like EACCES or EMFILE.
    let seen = check(&file.join("inside"));
    assert_eq!(seen.status, Status::Unknown);
    assert!(seen.summary.contains("Not a directory"), "{}", seen.summary);
}
