//! The example package driven the way healer drives it: through its
//! exported root module, configs as JSON, every call across the ABI
//! (`healer_plugin_sdk::testing::Host`), with no healer running.

use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::testing::Host;
use healer_plugin_sdk::{Finding, Recovery, Status};
use serde_json::json;

fn host() -> Host {
    Host::of(healer_plugin_example::healer_plugin_header()).expect("the package loads")
}

#[test]
fn the_host_sees_the_packages_three_plugins() {
    assert_eq!(
        host().plugins(),
        [
            (PluginKind::Monitor, "file-exists".to_owned()),
            (PluginKind::Diagnoser, "file-size".to_owned()),
            (PluginKind::Recoverer, "restore-file".to_owned()),
        ]
    );
}

#[test]
fn a_monitor_diagnoser_and_recoverer_answer_across_the_abi() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let (kept, lost) = (dir.path().join("kept"), dir.path().join("lost"));
    std::fs::write(&kept, "good copy").unwrap();
    let watching = json!({ "path": lost });

    let missing = host.check("file-exists", &watching).unwrap();
    let findings = host
        .diagnose("file-size", &json!({ "max_size": "1MiB" }), &missing, &[])
        .unwrap();
    let recovery = Recovery {
        target: "report".to_owned(),
        finding: findings[0].clone(),
        attempt: 1,
        params: json!({}),
        fence: None,
    };
    let outcome = host
        .recover(
            "restore-file",
            &json!({ "from": kept, "to": lost }),
            &recovery,
        )
        .unwrap();
    let present = host.check("file-exists", &watching).unwrap();

    assert_eq!(missing.status, Status::Critical);
    assert_eq!(
        findings.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(),
        ["file.missing"]
    );
    assert!(
        outcome.summary.starts_with("restored "),
        "{}",
        outcome.summary
    );
    assert_eq!(present.status, Status::Ok);
}

#[test]
fn a_config_the_plugin_refuses_is_an_error_as_healer_check_says_it() {
    let host = host();

    let unknown_key =
        host.check_config(PluginKind::Monitor, "file-exists", &json!({ "paht": "/x" }));
    let same_file = host.recover(
        "restore-file",
        &json!({ "from": "/a", "to": "/a" }),
        &Recovery {
            target: "t".to_owned(),
            finding: Finding::new("file.missing", Status::Critical, "gone"),
            attempt: 1,
            params: json!({}),
            fence: None,
        },
    );

    assert!(unknown_key.is_err_and(|why| why.contains("paht")));
    assert!(same_file.is_err_and(|why| why.contains("are the same file")));
}
