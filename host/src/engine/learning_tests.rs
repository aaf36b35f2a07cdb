//! The healing loop learning from what healed and asking before it acts:
//! each attempt judged into the ledger, `order = "learned"`,
//! `min_success`, `mode = "propose"` with an operator's answer or none,
//! and an escalation that names its root cause. Real loops and tracker,
//! plugins in memory (see `tests.rs`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::{Error, Outcome, Recoverer, Recovery};
use serde_json::Value;

use super::tests::{escalated, heal, opened, resolved, Probe, Restart, Service};
use crate::engine::Refusal;
use crate::events::{Event, StepResult};
use crate::issues::{Answer, State};
use crate::ledger::Verdict;
use crate::plugins::memory::{Memory, Recorder};

fn service(up: bool, heals_on: u32) -> Arc<Service> {
    Arc::new(Service {
        up: AtomicBool::new(up),
        restarts: AtomicU32::new(0),
        heals_on,
    })
}

fn judged(event: &Event, recoverer: &str, verdict: Verdict) -> bool {
    matches!(event, Event::RecoveryJudged { recoverer: r, verdict: v, .. } if r == recoverer && *v == verdict)
}

fn proposed(event: &Event) -> bool {
    matches!(event, Event::RecoveryProposed { .. })
}

/// `[[target]] web` checked by `pid`, recovered by `restart` with
/// `recover` lines in its table and `extra` lines in the target's.
fn web(extra: &str, recover: &str) -> String {
    format!(
        "[[target]]\nname = \"web\"\n{extra}\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"restart\"\n{recover}\n"
    )
}

#[tokio::test]
async fn an_attempt_is_judged_healed_once_its_issue_has_stayed_resolved_for_stable_after() {
    let web_service = service(false, 1);
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let mut healing = heal(&web("stable_after = \"150ms\"", ""), package).await;
    let events = &mut healing.events;
    events
        .wait_for("the issue's end", |e| resolved(e, "pid.critical"))
        .await;
    assert_eq!(
        healing.engine.handle().outcomes(),
        Vec::new(),
        "no verdict before stable_after"
    );
    let verdict = events
        .wait_for("the verdict", |e| judged(e, "restart", Verdict::Healed))
        .await;
    let Event::RecoveryJudged {
        outcomes,
        time_to_healthy,
        attempt,
        ..
    } = verdict
    else {
        unreachable!()
    };
    assert_eq!((outcomes.tries, outcomes.healed, attempt), (1, 1, 1));
    assert!(time_to_healthy.is_some());
    let rows = healing.engine.handle().outcomes();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].target.as_str(),
            rows[0].kind.as_str(),
            rows[0].recoverer.as_str()
        ),
        ("web", "pid.critical", "restart")
    );
    assert!(rows[0].median_time_to_healthy_ms.is_some(), "{rows:?}");
    healing.stop().await;
}

#[tokio::test]
async fn a_recoverer_that_fails_is_judged_not_healed_at_once() {
    let web_service = service(false, 1);
    let failing = Recorder::new(crate::plugins::memory::RecorderReply::Fails(
        "systemctl: unit not found".to_owned(),
    ));
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &failing);
    let mut healing = heal(&web("max_attempts = 1", ""), package).await;
    let verdict = healing
        .events
        .wait_for("the verdict", |e| judged(e, "restart", Verdict::NotHealed))
        .await;
    let Event::RecoveryJudged { reason, .. } = verdict else {
        unreachable!()
    };
    assert_eq!(reason, "it failed: systemctl: unit not found");
    healing.stop().await;
}

#[tokio::test]
async fn learned_order_gives_each_recoverer_its_tries_then_runs_the_one_that_heals_first() {
    let web_service = service(false, 1);
    let noop = Recorder::default();
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("noop", &noop)
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let targets = "[[target]]\nname = \"web\"\norder = \"learned\"\nlearn_after = 1\nmax_attempts = 10\nstable_after = \"100ms\"\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"noop\"\n\n[[target.recover]]\nplugin = \"restart\"\n";
    let mut healing = heal(targets, package).await;
    let events = &mut healing.events;
    let learned = events
        .wait_for("a new order", |e| {
            matches!(e, Event::RecoveryOrderLearned { .. })
        })
        .await;
    let Event::RecoveryOrderLearned { order, reason, .. } = learned else {
        unreachable!()
    };
    assert_eq!(order, ["restart", "noop"], "the untried one gets its try");
    assert_eq!(reason, "restart healed 0 of 0, noop healed 0 of 1");
    events
        .wait_for("restart's verdict", |e| {
            judged(e, "restart", Verdict::Healed)
        })
        .await;
    // Down again: the one that healed goes first at once.
    web_service.up.store(false, Ordering::SeqCst);
    events
        .wait_for("the next issue", |e| opened(e, "pid.critical"))
        .await;
    let first = events
        .wait_for("the first recoverer run", |e| {
            matches!(e, Event::RecovererFinished { .. })
        })
        .await;
    let Event::RecovererFinished { recoverer, .. } = first else {
        unreachable!()
    };
    assert_eq!(recoverer, "restart");
    events
        .wait_for("healthy again", |e| resolved(e, "pid.critical"))
        .await;
    assert_eq!(noop.calls().len(), 1, "the one that never heals ran once");
    healing.stop().await;
}

#[tokio::test]
async fn a_recoverer_under_its_min_success_proposes_instead_of_acting() {
    // Restarts that never heal.
    let web_service = service(false, u32::MAX);
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let targets = web(
        "learn_after = 1\nmax_attempts = 10",
        "min_success = 0.5\npropose_for = \"1h\"",
    );
    let mut healing = heal(&targets, package).await;
    let events = &mut healing.events;
    let demoted = events
        .wait_for("the demotion", |e| {
            matches!(e, Event::RecovererDemoted { .. })
        })
        .await;
    let Event::RecovererDemoted {
        recoverer,
        healed,
        judged,
        demoted,
        ..
    } = demoted
    else {
        unreachable!()
    };
    assert_eq!(
        (recoverer.as_str(), healed, judged, demoted),
        ("restart", 0, 1, true)
    );
    let proposal = events.wait_for("the proposal", proposed).await;
    let Event::RecoveryProposed { issue, approve, .. } = proposal else {
        unreachable!()
    };
    let why = issue.proposal.expect("a proposal").why;
    assert_eq!(why, "it healed 0 of 1 attempts, under its min_success 0.5");
    assert_eq!(approve, "healer approve web/pid.critical");
    let restarts = web_service.restarts.load(Ordering::SeqCst);
    assert_eq!(
        restarts, 1,
        "one attempt, judged when the issue was due again"
    );
    events.checks("web", 5).await;
    assert_eq!(
        web_service.restarts.load(Ordering::SeqCst),
        restarts,
        "nothing runs while it asks"
    );
    assert_eq!(
        events.count(|e| matches!(e, Event::RecovererDemoted { .. })),
        1
    );
    healing.stop().await;
}

#[tokio::test]
async fn a_proposed_recovery_waits_and_runs_once_when_an_operator_approves_it() {
    let web_service = service(false, 1);
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let mut healing = heal(
        &web("", "mode = \"propose\"\nunit = \"web.service\""),
        package,
    )
    .await;
    let handle = healing.engine.handle();
    let events = &mut healing.events;
    let proposal = events.wait_for("the proposal", proposed).await;
    let Event::RecoveryProposed { issue, .. } = proposal else {
        unreachable!()
    };
    let proposal = issue.proposal.expect("a proposal");
    assert_eq!(proposal.action, r#"restart {"unit":"web.service"}"#);
    assert_eq!(proposal.why, r#"its mode is "propose""#);
    assert_eq!(issue.attempts, 0, "a proposal spends no attempt");
    events.checks("web", 5).await;
    assert_eq!(web_service.restarts.load(Ordering::SeqCst), 0);
    assert_eq!(events.count(proposed), 1, "proposed once");
    let view = healing.board.target("web").expect("on the board");
    assert!(view.issues[0].proposal.is_some(), "{view:?}");

    let approved = handle
        .answer(
            "web",
            "pid.critical",
            Answer::Approve,
            Duration::from_secs(5),
        )
        .await
        .expect("approved");
    assert!(approved.proposal.is_some_and(|p| p.approved));
    let events = &mut healing.events;
    let ran = events
        .wait_for("the approved recovery", |e| {
            matches!(e, Event::RecovererFinished { .. })
        })
        .await;
    let Event::RecovererFinished { result, .. } = ran else {
        unreachable!()
    };
    assert_eq!(result, StepResult::success("restart 1"));
    events
        .wait_for("healthy", |e| resolved(e, "pid.critical"))
        .await;
    assert_eq!(web_service.restarts.load(Ordering::SeqCst), 1);
    let again = handle
        .answer(
            "web",
            "pid.critical",
            Answer::Approve,
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(again, Err(Refusal::NothingToDo(_))),
        "nothing left to approve: {again:?}"
    );
    healing.stop().await;
}

#[tokio::test]
async fn a_rejected_proposal_runs_nothing_and_escalates() {
    let web_service = service(false, 1);
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let mut healing = heal(&web("", "mode = \"propose\""), package).await;
    let handle = healing.engine.handle();
    healing.events.wait_for("the proposal", proposed).await;
    let rejected = handle
        .answer(
            "web",
            "pid.critical",
            Answer::Reject,
            Duration::from_secs(5),
        )
        .await
        .expect("rejected");
    assert_eq!(rejected.state, State::Escalated);
    let escalation = healing
        .events
        .wait_for("the escalation", |e| escalated(e, "pid.critical"))
        .await;
    let Event::IssueEscalated { reason, .. } = escalation else {
        unreachable!()
    };
    assert_eq!(reason, "an operator rejected the proposal to run restart");
    healing.events.checks("web", 3).await;
    assert_eq!(web_service.restarts.load(Ordering::SeqCst), 0);
    healing.stop().await;
}

#[tokio::test]
async fn an_unanswered_proposal_expires_and_the_issue_escalates() {
    let web_service = service(false, 1);
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&web_service)))
        .recoverer_as("restart", &Restart(Arc::clone(&web_service)));
    let mut healing = heal(
        &web("", "mode = \"propose\"\npropose_for = \"150ms\""),
        package,
    )
    .await;
    healing.events.wait_for("the proposal", proposed).await;
    let escalation = healing
        .events
        .wait_for("the escalation", |e| escalated(e, "pid.critical"))
        .await;
    let Event::IssueEscalated { reason, issue, .. } = escalation else {
        unreachable!()
    };
    assert!(
        reason.starts_with("nobody answered the proposal to run restart made at "),
        "{reason}"
    );
    assert!(issue.proposal.is_none(), "{issue:?}");
    assert_eq!(web_service.restarts.load(Ordering::SeqCst), 0);
    healing.stop().await;
}

/// A recoverer of the app that takes the database down with it.
#[derive(Clone)]
struct BreaksDb(Arc<Service>);

impl Recoverer for BreaksDb {
    type Config = Value;
    const NAME: &'static str = "breaks-db";
    const DESCRIPTION: &'static str = "restarts the app, and the database goes down";

    fn new(_: Value) -> Result<Self, Error> {
        Err("a test's recoverer".into())
    }

    async fn recover(&mut self, _: &Recovery) -> Result<Outcome, Error> {
        self.0.up.store(false, Ordering::SeqCst);
        Ok(Outcome::done("restarted"))
    }
}

#[tokio::test]
async fn an_escalation_of_a_dependent_names_its_unhealthy_dependency_as_the_root_cause() {
    let db = service(true, u32::MAX);
    let app = service(false, u32::MAX);
    let package = Memory::new("service")
        .monitor_as("db-probe", &Probe(Arc::clone(&db)))
        .monitor_as("app-probe", &Probe(Arc::clone(&app)))
        .recoverer_as("breaks-db", &BreaksDb(Arc::clone(&db)));
    // app's verification waits long enough for db's loop to see db down.
    let targets = "[[target]]\nname = \"db\"\n[target.monitor]\nplugin = \"db-probe\"\n\n[[target]]\nname = \"app\"\ndepends_on = [\"db\"]\nmax_attempts = 1\ngrace = \"300ms\"\n[target.monitor]\nplugin = \"app-probe\"\n\n[[target.recover]]\nplugin = \"breaks-db\"\n";
    let mut healing = heal(targets, package).await;
    let escalation = healing
        .events
        .wait_for("app's escalation", |e| escalated(e, "app-probe.critical"))
        .await;
    let Event::IssueEscalated { reason, .. } = escalation else {
        unreachable!()
    };
    assert!(
        reason.starts_with(
            "still failing after 1 recovery attempts; root cause: db is not healthy (target.db.healthy = false from healer, "
        ),
        "{reason}"
    );
    healing.stop().await;
}
