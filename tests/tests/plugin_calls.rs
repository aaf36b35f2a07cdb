//! Calls into real plugin instances through the ABI, from a host running
//! its own Tokio runtime: results come back as host values, and panics,
//! hangs and bad configs come back as errors while the host carries on.

use std::time::Duration;

use healer::plugins::{load, Package};
use healer_e2e::package_file;
use healer_plugin_sdk::Status;
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

fn panicky() -> Package {
    load(&package_file("healer-fixture-panicky")).expect("the panicky package loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_constructor_is_an_error_value_and_the_host_goes_on() {
    let package = panicky();

    let err = timeout(LIMIT, package.new_monitor("panics-in-new", &json!({})))
        .await
        .unwrap()
        .err()
        .unwrap();

    assert!(
        err.starts_with("panicked at tests/fixtures/panicky/src/lib.rs:"),
        "{err}"
    );
    assert!(err.ends_with(": constructor exploded on purpose"), "{err}");
    let counter = package.new_monitor("counter", &json!({})).await.unwrap();
    assert_eq!(counter.check().await.unwrap().summary, "check 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_check_is_an_error_value_and_the_next_check_runs() {
    let package = panicky();
    let monitor = package
        .new_monitor("panics-in-check", &json!({}))
        .await
        .unwrap();

    for _ in 0..3 {
        let err = timeout(LIMIT, monitor.check()).await.unwrap().unwrap_err();
        assert!(err.ends_with(": check exploded on purpose"), "{err}");
    }
    let counter = package.new_monitor("counter", &json!({})).await.unwrap();
    assert_eq!(counter.check().await.unwrap().status, Status::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_check_times_out_and_the_package_keeps_serving_other_calls() {
    let package = panicky();
    let hung = package
        .new_monitor("hangs-in-check", &json!({}))
        .await
        .unwrap();
    let counter = package.new_monitor("counter", &json!({})).await.unwrap();

    for _ in 0..3 {
        assert!(timeout(Duration::from_millis(100), hung.check())
            .await
            .is_err());
    }
    // Timed-out checks were dropped (and aborted in the package), so the
    // hung instance can be called again and other instances are unaffected.
    for expected in 1..=3 {
        let seen = timeout(LIMIT, counter.check()).await.unwrap().unwrap();
        assert_eq!(seen.metric_value("checks"), Some(expected as f64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_observations_arrive_between_checks() {
    let package = panicky();
    let ticker = package.new_monitor("ticker", &json!({})).await.unwrap();

    let first = timeout(LIMIT, ticker.next_push())
        .await
        .unwrap()
        .expect("a push");
    let second = timeout(LIMIT, ticker.next_push())
        .await
        .unwrap()
        .expect("a push");

    assert_eq!(
        (first.status, first.summary.as_str()),
        (Status::Warning, "tick 1")
    );
    assert_eq!(second.summary, "tick 2");
    assert_eq!(ticker.check().await.unwrap().summary, "ticking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_only_monitor_reports_that_it_never_pushes() {
    let counter = panicky().new_monitor("counter", &json!({})).await.unwrap();

    assert_eq!(timeout(LIMIT, counter.next_push()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_monitor_checks_a_real_file() {
    let package = load(&package_file("healer-plugin-example")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flag");
    let monitor = package
        .new_monitor("file-exists", &json!({ "path": path }))
        .await
        .unwrap();

    let missing = monitor.check().await.unwrap();
    std::fs::write(&path, "12345").unwrap();
    let present = monitor.check().await.unwrap();

    assert_eq!(missing.status, Status::Critical);
    assert_eq!(missing.summary, "missing");
    assert_eq!(present.status, Status::Ok);
    assert_eq!(present.metric_value("size"), Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_plugin_config_is_refused_naming_the_field() {
    let package = load(&package_file("healer-plugin-example")).unwrap();

    let checked = package
        .check_config(
            healer::plugins::PluginKind::Monitor,
            "file-exists",
            &json!({"pth": "/x"}),
        )
        .await;
    let created = package
        .new_monitor("file-exists", &json!({"pth": "/x"}))
        .await
        .err();
    let unknown = package
        .new_monitor("no-such-plugin", &json!({}))
        .await
        .err();

    assert_eq!(
        checked,
        Err("unknown field `pth`, expected `path`".to_owned())
    );
    assert_eq!(
        created.as_deref(),
        Some("unknown field `pth`, expected `path`")
    );
    assert_eq!(
        unknown.as_deref(),
        Some("package healer-plugin-example has no monitor named \"no-such-plugin\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diagnoser_tells_how_much_history_it_reads_and_one_that_does_not_say_gets_all() {
    let http = load(&package_file("healer-plugin-http")).expect("the http package loads");
    let default = http.new_diagnoser("http", &json!({})).await.unwrap();
    assert_eq!(default.history_needed(), 0, "http.slow after 1 slow answer");
    let three = http
        .new_diagnoser("http", &json!({ "slow_for_samples": 3 }))
        .await
        .unwrap();
    assert_eq!(three.history_needed(), 2, "the 2 answers before the latest");
    // A diagnoser that keeps the SDK's default reads all the target keeps.
    let silent = panicky()
        .new_diagnoser("blocks-forever", &json!({}))
        .await
        .unwrap();
    assert_eq!(silent.history_needed(), usize::MAX);
}
