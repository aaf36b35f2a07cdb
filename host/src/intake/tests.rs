//! The intake's workflows as whoever posts anomalies sees them: the real
//! reflex map, storm control and event stream, with workflow steps that
//! are recoverers living in memory (`plugins::memory`), so no package is
//! built. Reports go to [`Intake::report`], the function `/anomaly` calls.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Intake, Reply, Saved, Suppressed};
use crate::config::Config;
use crate::events::witness::Witness;
use crate::events::{Event, StepResult};
use crate::plugins::memory::{self, Memory, Recorder, RecorderReply};

/// An intake with two workflows: `restart_api` (notify, then restart)
/// and `page` (page, which may fail, then notify), `settings` in its
/// `[intake]`.
fn config(settings: &str) -> Config {
    let text = format!(
        r#"
[intake]
{settings}

[workflow.restart_api]
steps = [
  {{ plugin = "notify", channel = "ops" }},
  {{ plugin = "restart" }},
]

[workflow.page]
steps = [
  {{ plugin = "page", continue_on_error = true }},
  {{ plugin = "notify", channel = "pager" }},
]

[[reflex]]
match = "api.*.high"
workflow = "restart_api"
params = {{ service = "api", api_token = "s3cret-0123456789" }}

[[reflex]]
match = "disk.*"
workflow = "page"
"#
    );
    Config::parse(Path::new("/healer-test/healer.toml"), text).unwrap_or_else(|err| panic!("{err}"))
}

/// The steps' recoverers, as the test sees them.
#[derive(Default)]
struct Steps {
    notify: Recorder,
    restart: Recorder,
    page: Recorder,
}

async fn intake(settings: &str, steps: &Steps) -> (Arc<Intake>, Witness) {
    let config = config(settings);
    let catalog = memory::catalog([Memory::new("steps")
        .recoverer_as("notify", &steps.notify)
        .recoverer_as("restart", &steps.restart)
        .recoverer_as("page", &steps.page)
        .package()]);
    let problems = catalog.check_config(&config).await;
    assert!(problems.is_empty(), "{problems:?}");
    let (events, witness) = Witness::stream();
    let intake = Intake::build(&config, &catalog, events, Saved::default(), None)
        .await
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    (intake, witness)
}

fn finished(event: &Event) -> bool {
    matches!(event, Event::WorkflowFinished { .. })
}

fn details() -> Value {
    json!({"latency_ms": 5000, "region": "us-east-1"})
}

#[tokio::test]
async fn an_anomaly_matching_a_reflex_runs_its_workflows_steps_in_order_with_details_and_params() {
    let steps = Steps::default();
    let (intake, mut events) = intake("", &steps).await;
    let answer = intake.report("api.coinbase.high", details(), false);
    assert_eq!(
        answer,
        Reply::Started {
            anomaly: "api.coinbase.high".into(),
            run_id: "run-1".into(),
            workflow: "restart_api".into(),
            reflex: "api.*.high".into(),
            attempt: 1,
        }
    );
    let started = events
        .wait_for("the workflow's start", |e| {
            matches!(e, Event::WorkflowStarted { .. })
        })
        .await;
    let Event::WorkflowStarted { run, .. } = started else {
        unreachable!()
    };
    assert_eq!(run.details.to_value(), details());
    assert_eq!(
        run.params.to_value()["api_token"],
        healer_plugin_sdk::redact::REDACTED,
        "the record keeps no secret"
    );
    let step_of = |event: &Event| match event {
        Event::WorkflowStep {
            step,
            plugin,
            result,
            ..
        } => Some((*step, plugin.clone(), result.succeeded())),
        _ => None,
    };
    let first = events
        .wait_for("step 1", |e| matches!(e, Event::WorkflowStep { .. }))
        .await;
    let second = events
        .wait_for("step 2", |e| matches!(e, Event::WorkflowStep { .. }))
        .await;
    assert_eq!(step_of(&first), Some((1, "notify".into(), true)));
    assert_eq!(step_of(&second), Some((2, "restart".into(), true)));
    let end = events.wait_for("the workflow's end", finished).await;
    assert!(matches!(
        end,
        Event::WorkflowFinished {
            succeeded: true,
            error: None,
            ..
        }
    ));
    for recorder in [&steps.notify, &steps.restart] {
        let calls = recorder.calls();
        assert_eq!(calls.len(), 1);
        let recovery = &calls[0];
        assert_eq!(recovery.target, "api.coinbase.high");
        assert_eq!(recovery.finding.kind, "api.coinbase.high");
        assert_eq!(recovery.finding.details, details());
        assert_eq!(recovery.attempt, 1);
        assert_eq!(
            recovery.params,
            json!({"service": "api", "api_token": "s3cret-0123456789"}),
            "the steps get the params whole"
        );
    }
    assert!(steps.page.calls().is_empty());
}

#[tokio::test]
async fn an_anomaly_no_reflex_matches_runs_nothing_and_says_so_once() {
    let steps = Steps::default();
    let (intake, mut events) = intake("", &steps).await;
    for _ in 0..3 {
        let answer = intake.report("cpu.high", details(), false);
        assert_eq!(
            answer,
            Reply::NoReflex {
                anomaly: "cpu.high".into(),
                reason: "no reflex matches \"cpu.high\" (2 reflexes)".into(),
            }
        );
    }
    events
        .wait_for(
            "the record",
            |e| matches!(e, Event::NoReflex { anomaly, .. } if anomaly == "cpu.high"),
        )
        .await;
    assert_eq!(
        events.count(|e| matches!(e, Event::NoReflex { .. })),
        1,
        "repeats within 10 s are counted, not recorded"
    );
    assert_eq!(intake.drain(std::time::Duration::ZERO).await, 0);
    assert!(steps.notify.calls().is_empty());
}

#[tokio::test]
async fn a_failing_step_ends_its_workflow_as_failed() {
    let steps = Steps::default();
    steps
        .notify
        .then([RecorderReply::Fails("chat service unavailable".into())]);
    let (intake, mut events) = intake("", &steps).await;
    assert!(intake
        .report("api.coinbase.high", details(), false)
        .acted_on());
    let end = events.wait_for("the workflow's end", finished).await;
    let Event::WorkflowFinished {
        succeeded, error, ..
    } = end
    else {
        unreachable!()
    };
    assert!(!succeeded);
    assert_eq!(
        error.as_deref(),
        Some("step 1 (notify) failed: chat service unavailable")
    );
    assert!(steps.restart.calls().is_empty(), "step 2 never ran");
}

#[tokio::test]
async fn a_step_that_may_continue_on_error_is_followed_by_the_next() {
    let steps = Steps::default();
    steps
        .page
        .then([RecorderReply::Fails("pager rejected".into())]);
    let (intake, mut events) = intake("", &steps).await;
    assert!(intake.report("disk.full", details(), false).acted_on());
    let first = events
        .wait_for("step 1", |e| matches!(e, Event::WorkflowStep { .. }))
        .await;
    assert!(matches!(
        first,
        Event::WorkflowStep { result: StepResult::Failed { ref error }, .. } if error == "pager rejected"
    ));
    let end = events.wait_for("the workflow's end", finished).await;
    assert!(matches!(
        end,
        Event::WorkflowFinished {
            succeeded: true,
            ..
        }
    ));
    assert_eq!(steps.notify.calls().len(), 1);
}

#[tokio::test]
async fn a_step_past_its_deadline_times_out_and_fails_the_workflow() {
    let steps = Steps::default();
    steps.notify.then([RecorderReply::Hangs]);
    let (intake, mut events) = intake("step_timeout = \"50ms\"", &steps).await;
    assert!(intake
        .report("api.coinbase.high", details(), false)
        .acted_on());
    let step = events
        .wait_for("step 1", |e| matches!(e, Event::WorkflowStep { .. }))
        .await;
    assert!(
        matches!(step, Event::WorkflowStep { result: StepResult::TimedOut { after }, .. }
            if after == healer_plugin_sdk::Duration::from_millis(50)),
        "{step:?}"
    );
    let end = events.wait_for("the workflow's end", finished).await;
    assert!(matches!(
        end,
        Event::WorkflowFinished {
            succeeded: false,
            ..
        }
    ));
    assert!(steps.restart.calls().is_empty());
}

#[tokio::test]
async fn a_storm_of_one_anomaly_starts_one_run_and_counts_the_rest() {
    let steps = Steps::default();
    let (intake, mut events) = intake("", &steps).await;
    // Reported back to back: the first run has not begun to run yet.
    let answers: Vec<Reply> = (0..100)
        .map(|_| intake.report("api.coinbase.high", details(), false))
        .collect();
    assert!(answers[0].acted_on());
    for answer in &answers[1..] {
        assert!(
            matches!(
                answer,
                Reply::Suppressed {
                    reason: "running",
                    ..
                }
            ),
            "{answer:?}"
        );
    }
    assert!(matches!(
        answers[99],
        Reply::Suppressed { suppressed: 99, .. }
    ));
    events.wait_for("the workflow's end", finished).await;
    assert_eq!(steps.restart.calls().len(), 1);
}

#[tokio::test]
async fn a_report_within_the_cooldown_of_its_last_run_is_counted_not_run() {
    let steps = Steps::default();
    let (intake, mut events) = intake("cooldown = \"1h\"", &steps).await;
    assert!(intake
        .report("api.coinbase.high", details(), false)
        .acted_on());
    events.wait_for("the workflow's end", finished).await;
    let again = intake.report("api.coinbase.high", details(), false);
    assert!(
        matches!(
            again,
            Reply::Suppressed {
                reason: "cooldown",
                suppressed: 1,
                ..
            }
        ),
        "{again:?}"
    );
    events
        .wait_for("the suppression", |e| {
            matches!(
                e,
                Event::AnomalySuppressed {
                    reason: Suppressed::Cooldown,
                    ..
                }
            )
        })
        .await;
    // Another anomaly of the same reflex has a cooldown of its own.
    assert!(intake
        .report("api.kraken.high", details(), false)
        .acted_on());
}

#[tokio::test]
async fn an_anomaly_that_keeps_coming_back_is_escalated_after_max_attempts() {
    let steps = Steps::default();
    let (intake, mut events) = intake("cooldown = \"0s\"\nmax_attempts = 2", &steps).await;
    for attempt in 1..=2 {
        let answer = intake.report("api.coinbase.high", details(), false);
        assert!(
            matches!(answer, Reply::Started { attempt: a, .. } if a == attempt),
            "{answer:?}"
        );
        events.wait_for("the workflow's end", finished).await;
    }
    for _ in 0..2 {
        let answer = intake.report("api.coinbase.high", details(), false);
        assert!(
            matches!(
                answer,
                Reply::Suppressed {
                    reason: "attempts exhausted",
                    ..
                }
            ),
            "{answer:?}"
        );
    }
    let escalated = events
        .wait_for("the escalation", |e| {
            matches!(e, Event::AnomalyEscalated { .. })
        })
        .await;
    assert!(matches!(
        escalated,
        Event::AnomalyEscalated { attempts: 2, .. }
    ));
    events
        .wait_for("the next report counted", |e| {
            matches!(
                e,
                Event::AnomalySuppressed {
                    reason: Suppressed::AttemptsExhausted,
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        events.count(|e| matches!(e, Event::AnomalyEscalated { .. })),
        1,
        "escalated once"
    );
    assert_eq!(steps.restart.calls().len(), 2);
}

#[tokio::test]
async fn runs_per_minute_are_limited_across_all_anomalies() {
    let steps = Steps::default();
    let (intake, mut events) = intake("max_runs_per_minute = 2", &steps).await;
    let answers: Vec<Reply> = ["api.a.high", "api.b.high", "disk.full"]
        .iter()
        .map(|name| intake.report(name, details(), false))
        .collect();
    assert!(answers[0].acted_on() && answers[1].acted_on());
    assert!(
        matches!(
            answers[2],
            Reply::Suppressed {
                reason: "rate limited",
                ..
            }
        ),
        "{:?}",
        answers[2]
    );
    for _ in 0..2 {
        events.wait_for("a workflow's end", finished).await;
    }
    assert!(steps.page.calls().is_empty());
}

#[tokio::test]
async fn the_kill_switch_records_what_would_run_and_runs_nothing() {
    let steps = Steps::default();
    let (intake, mut events) = intake("actions = false", &steps).await;
    let answer = intake.report("api.coinbase.high", details(), false);
    assert!(
        matches!(answer, Reply::WouldRun { attempt: 1, .. }),
        "{answer:?}"
    );
    events
        .wait_for("the record", |e| matches!(e, Event::WouldRun { .. }))
        .await;
    assert_eq!(intake.drain(std::time::Duration::ZERO).await, 0);
    assert!(steps.notify.calls().is_empty() && steps.restart.calls().is_empty());
    assert_eq!(
        events.count(|e| matches!(e, Event::WorkflowStarted { .. })),
        0
    );
}

#[tokio::test]
async fn a_dry_run_shows_the_workflow_with_secrets_redacted_and_changes_nothing() {
    let steps = Steps::default();
    let (intake, mut events) = intake("cooldown = \"1h\"", &steps).await;
    let answer = intake.report("api.coinbase.high", details(), true);
    let Reply::DryRun {
        reflex,
        workflow,
        params,
        steps: shown,
        ..
    } = answer
    else {
        panic!("{answer:?}")
    };
    assert_eq!(
        (reflex.as_str(), workflow.as_str()),
        ("api.*.high", "restart_api")
    );
    assert_eq!(
        params,
        json!({"service": "api", "api_token": healer_plugin_sdk::redact::REDACTED})
    );
    let plugins: Vec<&str> = shown.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(plugins, ["notify", "restart"]);
    assert_eq!(shown[0].config, json!({"channel": "ops"}));
    // Nothing ran, and the cooldown did not start: a real report acts.
    assert!(intake
        .report("api.coinbase.high", details(), false)
        .acted_on());
    events.wait_for("the workflow's end", finished).await;
    assert_eq!(steps.restart.calls().len(), 1);
}
