//! Unit tests of the issue tracker: each rule of `issues.rs` driven with
//! findings and a clock of the test's own.

use super::*;
use healer_plugin_sdk::Duration as HumanDuration;

fn policy() -> Policy {
    Policy {
        interval: HumanDuration::from_secs(5),
        timeout: HumanDuration::from_secs(1),
        max_attempts: 3,
        fail_after: 1,
        resolve_after: 1,
        stable_after: HumanDuration::from_secs(300),
        backoff: HumanDuration::from_secs(1),
        backoff_max: HumanDuration::from_secs(10),
        escalated_interval: HumanDuration::from_secs(60),
        grace: HumanDuration::from_millis(0),
        recovery_timeout: HumanDuration::from_secs(1),
        recovery_budget: None,
    }
}

fn down() -> Vec<Finding> {
    vec![Finding::critical("process.not_running", "gone")]
}

fn opened(transitions: &[Transition]) -> Option<u32> {
    transitions.iter().find_map(|t| match t {
        Transition::Opened(issue) => Some(issue.attempts),
        _ => None,
    })
}

/// What check `check` of a target of two checks (one source each) finds.
fn run_of(tracker: &mut Tracker, check: usize, found: &[Finding], now: Wall) -> Vec<Transition> {
    let lists = [found];
    let seen = Seen {
        check,
        first_source: check,
        lists: &lists,
    };
    tracker.observe_check(seen, now, true)
}

fn resolved(transitions: &[Transition]) -> bool {
    transitions
        .iter()
        .any(|t| matches!(t, Transition::Resolved(_)))
}

const TWO_CHECKS: Layout = Layout {
    checks: 2,
    sources: 2,
};

#[test]
fn a_check_that_never_found_an_issue_leaves_it_open() {
    let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
    let now = Wall::from_millis(1_000_000);
    assert_eq!(opened(&run_of(&mut tracker, 1, &down(), now)), Some(0));
    // The http check answers OK: it cannot tell the process is back.
    assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
    assert!(tracker.issue("process.not_running").is_some());
    // The check that found it finds it gone.
    assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
}

#[test]
fn a_kind_two_checks_found_resolves_when_both_find_it_gone() {
    let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
    let now = Wall::from_millis(1_000_000);
    run_of(&mut tracker, 0, &down(), now);
    run_of(&mut tracker, 1, &down(), now);
    assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
    assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
}

#[test]
fn a_restored_issue_resolves_when_every_check_finds_it_gone() {
    let now = Wall::from_millis(1_000_000);
    let mut before = Tracker::with_layout(policy(), TWO_CHECKS);
    run_of(&mut before, 1, &down(), now);
    let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
    tracker.restore(before.save(), now);
    assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
    assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
}

#[test]
fn a_restored_issue_claimed_by_its_check_resolves_while_another_cannot_tell() {
    let now = Wall::from_millis(1_000_000);
    let mut before = Tracker::with_layout(policy(), TWO_CHECKS);
    run_of(&mut before, 0, &down(), now);
    let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
    tracker.restore(before.save(), now);
    tracker.claim_restored(|kind| u64::from(kind.starts_with("process.")));
    // Check 1 cannot tell (UNKNOWN); check 0, whose kind it is, says gone.
    let unknown = [Finding::new(
        "nagios.unknown",
        Status::Unknown,
        "no check_disk",
    )];
    let lists = [&unknown[..]];
    let seen = Seen {
        check: 1,
        first_source: 1,
        lists: &lists,
    };
    tracker.observe_check(seen, now, false);
    assert!(resolved(&run_of(&mut tracker, 0, &[], now)));
}

#[test]
fn only_the_checks_that_found_an_issue_count_towards_resolve_after() {
    let policy = Policy {
        resolve_after: 2,
        ..policy()
    };
    let mut tracker = Tracker::with_layout(policy, TWO_CHECKS);
    let now = Wall::from_millis(1_000_000);
    run_of(&mut tracker, 0, &down(), now);
    assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
    // The other check cannot see it: its healthy runs do not count.
    assert!(!resolved(&run_of(&mut tracker, 1, &[], now)));
    assert!(!resolved(&run_of(&mut tracker, 1, &[], now)));
    assert!(resolved(&run_of(&mut tracker, 0, &[], now)));
}

#[test]
fn a_soft_finding_is_forgotten_only_by_the_check_that_found_it() {
    let mut tracker = Tracker::with_layout(
        Policy {
            fail_after: 2,
            ..policy()
        },
        TWO_CHECKS,
    );
    let now = Wall::from_millis(1_000_000);
    run_of(&mut tracker, 1, &down(), now);
    run_of(&mut tracker, 0, &[], now);
    // Still one failure behind it: the second opens the issue.
    assert_eq!(opened(&run_of(&mut tracker, 1, &down(), now)), Some(0));
}

#[test]
fn an_escalated_issue_is_written_without_a_next_attempt() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    let open = serde_json::to_value(tracker.issue("process.not_running")).unwrap();
    assert!(open.get("next_attempt_at").is_some(), "{open}");
    tracker.escalate("process.not_running", "test".to_owned(), now);
    let escalated = serde_json::to_value(tracker.issue("process.not_running")).unwrap();
    assert!(escalated.get("next_attempt_at").is_none(), "{escalated}");
    let back: Issue = serde_json::from_value(escalated).unwrap();
    assert_eq!(back.state, State::Escalated);
}

fn attempt(tracker: &mut Tracker, now: Wall) -> u32 {
    let n = tracker
        .attempt_started("process.not_running", now)
        .map_or(0, |issue| issue.attempts);
    tracker.attempt_finished("process.not_running", now);
    n
}

/// One diagnoser answering as many kinds as the target may hold, every
/// check, against another diagnoser's real finding on the same target.
#[test]
fn one_diagnosers_flood_cannot_crowd_out_another_diagnosers_finding() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    let flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
        .map(|i| Finding::critical(format!("hostile.k{i}"), "s"))
        .collect();
    let honest_quiet: Vec<Finding> = Vec::new();
    let transitions = tracker.observe_from(&[&flood, &honest_quiet], now, true);
    assert_eq!(
        tracker.issues().count(),
        MAX_ISSUES_PER_TARGET / 2,
        "its share"
    );
    assert!(
        transitions.iter().any(
            |t| matches!(t, Transition::LeftOut { source: 0, count, .. } if *count == MAX_ISSUES_PER_TARGET / 2)
        ),
        "{transitions:?}"
    );
    let later = now + Duration::from_secs(5);
    tracker.observe_from(&[&flood, &down()], later, true);
    assert!(
        tracker.issue("process.not_running").is_some(),
        "the other diagnoser's finding opens"
    );
}

#[test]
fn a_flood_naming_anothers_kind_past_its_share_does_not_claim_it() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    let mut flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
        .map(|i| Finding::critical(format!("hostile.k{i}"), "s"))
        .collect();
    flood.extend(down());
    tracker.observe_from(&[&flood, &down()], now, true);
    assert!(tracker.issue("process.not_running").is_some());
}

#[test]
fn a_flood_of_new_kinds_every_check_holds_only_its_share() {
    let mut tracker = Tracker::new(policy());
    let mut now = Wall::from_millis(1_000_000);
    for step in 0..6 {
        let flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
            .map(|i| Finding::critical(format!("hostile.s{step}.k{i}"), "s"))
            .collect();
        let honest = if step >= 2 { down() } else { Vec::new() };
        tracker.observe_from(&[&flood, &honest], now, true);
        assert!(tracker.issues().count() <= MAX_ISSUES_PER_TARGET);
        if step >= 2 {
            assert!(
                tracker.issue("process.not_running").is_some(),
                "step {step}: {} open",
                tracker.issues().count()
            );
        }
        now = now + Duration::from_secs(5);
    }
}

#[test]
fn soft_findings_coming_of_age_never_take_a_target_past_its_cap() {
    let mut tracker = Tracker::new(Policy {
        fail_after: 2,
        ..policy()
    });
    let now = Wall::from_millis(1_000_000);
    let mut soft: Vec<Finding> = Vec::new();
    for step in 0..6 {
        let mut findings: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET - 1)
            .map(|i| Finding::critical(format!("fresh.s{step}.k{i}"), "s"))
            .collect();
        findings.extend(soft.iter().cloned());
        findings.extend(
            tracker
                .issues()
                .map(|i| Finding::critical(i.kind.clone(), "s"))
                .collect::<Vec<_>>(),
        );
        tracker.observe(&findings, now, true);
        assert!(
            tracker.issues().count() <= MAX_ISSUES_PER_TARGET,
            "step {step}"
        );
        soft = findings[..MAX_ISSUES_PER_TARGET - 1].to_vec();
    }
}

#[test]
fn one_failed_check_opens_an_issue_by_default() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    let transitions = tracker.observe(&down(), now, true);
    assert_eq!(opened(&transitions), Some(0), "{transitions:?}");
    assert_eq!(tracker.due(now), ["process.not_running"]);
}

#[test]
fn fail_after_needs_that_many_consecutive_failures() {
    let mut tracker = Tracker::new(Policy {
        fail_after: 3,
        ..policy()
    });
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    tracker.observe(&[], now, true); // a blip resets the count
    tracker.observe(&down(), now, true);
    tracker.observe(&down(), now, true);
    assert!(!tracker.has_issues());
    let transitions = tracker.observe(&down(), now, true);
    assert!(opened(&transitions).is_some(), "{transitions:?}");
}

#[test]
fn attempts_back_off_exponentially_up_to_the_cap() {
    let tracker = Tracker::new(policy());
    let waits: Vec<u64> = (1..=6).map(|n| tracker.backoff(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
}

#[test]
fn exactly_max_attempts_then_escalation_and_nothing_more() {
    let mut tracker = Tracker::new(policy());
    let mut now = Wall::from_millis(1_000_000);
    let mut attempts = Vec::new();
    let mut escalated = false;
    for _ in 0..20 {
        for transition in tracker.observe(&down(), now, true) {
            escalated |=
                matches!(transition, Transition::Escalated { issue, .. } if issue.attempts == 3);
        }
        for _ in tracker.due(now) {
            attempts.push(attempt(&mut tracker, now));
        }
        now = now + Duration::from_secs(30);
    }
    assert_eq!(attempts, [1, 2, 3]);
    assert!(escalated);
    assert_eq!(
        tracker.issue("process.not_running").unwrap().state,
        State::Escalated
    );
}

#[test]
fn the_backoff_holds_the_next_attempt() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now);
    tracker.observe(&down(), now + Duration::from_millis(500), true);
    assert!(tracker.due(now + Duration::from_millis(500)).is_empty());
    assert_eq!(tracker.due(now + Duration::from_secs(1)).len(), 1);
}

#[test]
fn resolve_after_needs_that_many_healthy_checks() {
    let mut tracker = Tracker::new(Policy {
        resolve_after: 2,
        ..policy()
    });
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    assert!(tracker.observe(&[], now, true).is_empty());
    let transitions = tracker.observe(&[], now, true);
    assert!(
        matches!(&transitions[..], [Transition::Resolved(issue)] if issue.attempts == 0 && issue.state == State::Resolved),
        "{transitions:?}"
    );
    assert!(!tracker.has_issues());
}

#[test]
fn a_flapping_issue_keeps_its_attempt_count_until_stable() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now);
    attempt(&mut tracker, now);
    tracker.observe(&[], now, true); // resolved after 2 attempts
    let later = now + Duration::from_secs(60);
    assert_eq!(opened(&tracker.observe(&down(), later, true)), Some(2));
    assert_eq!(attempt(&mut tracker, later), 3);
    tracker.observe(&[], later, true);
    // Back again, attempts exhausted: escalated at once, no restart storm.
    let transitions = tracker.observe(&down(), later + Duration::from_secs(1), true);
    assert!(
        matches!(&transitions[1], Transition::Escalated { issue, .. } if issue.attempts == 3),
        "{transitions:?}"
    );
    assert!(tracker.due(later + Duration::from_secs(60)).is_empty());
}

#[test]
fn after_stable_after_the_count_starts_over() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now);
    tracker.observe(&[], now, true);
    let much_later = now + Duration::from_secs(301);
    let transitions = tracker.observe(&down(), much_later, true);
    assert_eq!(
        transitions[0],
        Transition::Forgotten {
            kind: "process.not_running".into(),
            full: false,
        }
    );
    assert_eq!(opened(&transitions), Some(0));
}

#[test]
fn an_inconclusive_check_never_resolves_an_issue() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    assert!(tracker.observe(&[], now, false).is_empty());
    assert!(tracker.has_issues());
    assert!(matches!(
        tracker.observe(&[], now, true)[0],
        Transition::Resolved(_)
    ));
}

#[test]
fn the_same_kind_twice_in_one_check_is_one_failure() {
    let mut tracker = Tracker::new(Policy {
        fail_after: 2,
        ..policy()
    });
    let twice = [down(), down()].concat();
    assert!(matches!(
        tracker.observe(&twice, Wall::from_millis(1_000_000), true)[0],
        Transition::Soft { failures: 1, .. }
    ));
}

#[test]
fn the_slow_cadence_needs_every_issue_escalated() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    let two = [Finding::critical("a.x", "a"), Finding::critical("b.y", "b")];
    tracker.observe(&two, now, true);
    tracker.escalate("a.x", "no recoverer".into(), now);
    assert!(!tracker.all_escalated());
    tracker.escalate("b.y", "no recoverer".into(), now);
    assert!(tracker.all_escalated());
}

#[test]
fn an_escalated_issue_resolves_when_healthy_again() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    assert!(tracker
        .escalate("process.not_running", "no recoverer".into(), now)
        .is_some());
    assert!(tracker.due(now).is_empty());
    assert!(matches!(
        tracker.observe(&[], now, true)[0],
        Transition::Resolved(_)
    ));
}

#[test]
fn a_restored_tracker_carries_on_with_attempts_backoff_and_escalation() {
    let now = Wall::from_millis(1_000_000);
    let mut before = Tracker::new(policy());
    before.observe(&down(), now, true);
    attempt(&mut before, now);
    attempt(&mut before, now);
    let saved: Vec<Issue> = before.issues().cloned().collect();
    assert_eq!(saved[0].next_attempt_at, now + Duration::from_secs(2));

    let mut after = Tracker::new(policy());
    assert_eq!(after.restore(saved, now + Duration::from_secs(1)), 1);
    assert!(
        after.due(now + Duration::from_secs(1)).is_empty(),
        "the backoff still holds"
    );
    let later = now + Duration::from_secs(2);
    assert_eq!(after.due(later), ["process.not_running"]);
    assert_eq!(attempt(&mut after, later), 3);
    let transitions = after.observe(&down(), later, true);
    assert!(
        matches!(&transitions[..], [Transition::Escalated { issue, .. }] if issue.escalated_at == Some(later)),
        "{transitions:?}"
    );

    let mut again = Tracker::new(policy());
    again.restore(after.issues().cloned().collect(), later);
    assert!(again.all_escalated());
    assert!(again.due(later + Duration::from_secs(3600)).is_empty());
}

#[test]
fn a_restored_resolved_issue_is_remembered_only_within_stable_after() {
    let now = Wall::from_millis(1_000_000);
    let mut before = Tracker::new(policy());
    before.observe(&down(), now, true);
    attempt(&mut before, now);
    let transitions = before.observe(&[], now, true);
    let Some(Transition::Resolved(resolved)) = transitions.into_iter().next() else {
        panic!("not resolved");
    };

    let mut soon = Tracker::new(policy());
    assert_eq!(
        soon.restore(vec![resolved.clone()], now + Duration::from_secs(60)),
        0
    );
    let back = soon.observe(&down(), now + Duration::from_secs(60), true);
    assert_eq!(
        opened(&back),
        Some(1),
        "the flap memory survived the restart"
    );

    let mut late = Tracker::new(policy());
    late.restore(vec![resolved], now + Duration::from_secs(301));
    let back = late.observe(&down(), now + Duration::from_secs(301), true);
    assert_eq!(opened(&back), Some(0));
}

#[test]
fn a_restored_open_issue_with_no_attempts_left_is_escalated() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    let saved = Issue::saved(
        "process.not_running".into(),
        State::Open,
        Status::Critical,
        "gone".into(),
        3,
        [now, now],
        [None, None],
    );
    tracker.restore(vec![saved], now);
    assert!(tracker.due(now).is_empty());
    let transitions = tracker.observe(&down(), now, true);
    assert!(
        matches!(&transitions[..], [Transition::Escalated { issue, .. }] if issue.attempts == 3),
        "{transitions:?}"
    );
}

#[test]
fn an_attempt_cut_short_by_a_crash_still_waits_its_backoff() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    tracker.attempt_started("process.not_running", now);
    // healer is killed here, before the attempt finishes.
    let saved: Vec<Issue> = tracker.issues().cloned().collect();
    let mut restarted = Tracker::new(policy());
    restarted.restore(saved, now);
    assert!(restarted.due(now + Duration::from_millis(500)).is_empty());
    assert_eq!(restarted.due(now + Duration::from_secs(1)).len(), 1);
}

#[test]
fn a_clock_set_back_holds_an_attempt_no_longer_than_the_longest_backoff() {
    let now = Wall::from_millis(10_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now); // the next is due 1 s later
    let set_back = Wall::from_millis(now.millis() - 3_600_000);
    tracker.observe(&down(), set_back, true);
    assert!(
        tracker.due(set_back).is_empty(),
        "the backoff is not skipped"
    );
    assert!(tracker.due(set_back + Duration::from_secs(9)).is_empty());
    assert_eq!(
        tracker.due(set_back + Duration::from_secs(10)).len(),
        1,
        "due after at most backoff_max (10 s), not an hour"
    );
}

#[test]
fn an_operator_reset_gives_an_escalated_issue_its_attempts_back() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    let kind = "process.not_running";
    tracker.escalate(kind, "nothing helps".into(), now);
    assert!(tracker.due(now).is_empty());
    let issue = tracker.reset(kind).expect("the issue is open");
    assert_eq!((issue.state, issue.attempts), (State::Open, 0));
    assert_eq!(tracker.due(now), vec![kind.to_owned()]);
    assert!(tracker.reset("no.such").is_none());
}

#[test]
fn a_saved_tracker_carries_its_issues_and_flap_memory_to_its_successor() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now);
    tracker.observe(&[], now, true); // resolved, remembered with 1 attempt
    let mut next = Tracker::new(policy());
    next.restore(tracker.save(), now);
    let back = next.observe(&down(), now, true);
    assert_eq!(opened(&back), Some(1), "the flap memory went along");
}

/// A diagnoser that names a new kind at every check.
fn rotating(i: u32) -> Vec<Finding> {
    vec![Finding::critical(format!("rotating.k{i}"), "again")]
}

/// Attempts every due issue the budget allows, as the engine does;
/// returns the attempts made and the budget escalations.
fn recover_due(tracker: &mut Tracker, now: Wall) -> (u32, Vec<Transition>) {
    let (mut attempts, mut escalated) = (0, Vec::new());
    for kind in tracker.due(now) {
        if tracker.within_budget(now) {
            tracker.attempt_started(&kind, now);
            tracker.attempt_finished(&kind, now);
            attempts += 1;
        } else {
            escalated.extend(tracker.escalate_over_budget(&kind, now));
        }
    }
    (attempts, escalated)
}

#[test]
fn a_target_gets_its_budget_of_attempts_however_its_kinds_are_named() {
    let mut tracker = Tracker::new(policy());
    let mut now = Wall::from_millis(1_000_000);
    let (mut attempts, mut escalations) = (0, 0);
    for i in 0..40 {
        tracker.observe(&rotating(i), now, true);
        let (made, escalated) = recover_due(&mut tracker, now);
        attempts += made;
        escalations += escalated
            .iter()
            .filter(|t| matches!(t, Transition::Escalated { reason, .. } if reason.contains("recovery budget")))
            .count();
        now = now + Duration::from_secs(2);
    }
    assert_eq!(attempts, 3, "max_attempts is the budget by default");
    assert_eq!(escalations, 37, "every later kind escalates at once");
    // Once the attempts are older than stable_after, the budget is back.
    let later = now + Duration::from_secs(300);
    tracker.observe(&rotating(99), later, true);
    assert_eq!(recover_due(&mut tracker, later).0, 1);
}

#[test]
fn the_budget_is_its_own_setting_shared_by_all_issues_oldest_first() {
    let mut tracker = Tracker::new(Policy {
        recovery_budget: Some(2),
        ..policy()
    });
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&[Finding::critical("z.late", "z")], now, true);
    let three = [
        Finding::critical("z.late", "z"),
        Finding::critical("a.x", "a"),
        Finding::critical("b.y", "b"),
    ];
    let later = now + Duration::from_secs(1);
    tracker.observe(&three, later, true);
    assert_eq!(tracker.due(later), ["z.late", "a.x", "b.y"], "oldest first");
    let (attempts, escalated) = recover_due(&mut tracker, later);
    assert_eq!(attempts, 2);
    assert!(
        matches!(&escalated[..], [Transition::Escalated { issue, .. }] if issue.kind == "b.y" && issue.attempts == 0),
        "{escalated:?}"
    );
}

#[test]
fn a_restart_does_not_hand_back_the_spent_budget() {
    let now = Wall::from_millis(1_000_000);
    let mut before = Tracker::new(policy());
    for i in 0..3 {
        let at = now + Duration::from_secs(u64::from(i) * 10);
        before.observe(&rotating(i), at, true);
        recover_due(&mut before, at);
    }
    // Each attempt is spent again at the latest moment it can have
    // begun (k0's when k0 resolved, 10 s in) and ages out 300 s after
    // that, not 300 s after the restart; the other two still hold.
    let mut after = Tracker::new(policy());
    after.restore(before.save(), now + Duration::from_secs(30));
    let later = now + Duration::from_secs(311);
    after.observe(&rotating(7), later, true);
    let (attempts, escalated) = recover_due(&mut after, later);
    assert_eq!(attempts, 1, "one of three came back, no more");
    after.observe(&rotating(8), later, true);
    assert_eq!(recover_due(&mut after, later).0, 0);
    assert!(escalated.is_empty());
}

#[test]
fn a_reload_hands_the_spent_budget_to_the_successor() {
    let budget_of_two = || {
        Tracker::new(Policy {
            recovery_budget: Some(2),
            ..policy()
        })
    };
    let now = Wall::from_millis(1_000_000);
    let mut before = budget_of_two();
    before.observe(&rotating(0), now, true);
    recover_due(&mut before, now);
    before.observe(&rotating(1), now, true);
    recover_due(&mut before, now);
    let mut after = budget_of_two();
    after.restore(before.save(), now);
    after.carry_spent(before.spent());
    after.observe(&rotating(2), now, true);
    assert_eq!(recover_due(&mut after, now).0, 0);
}

#[test]
fn a_clock_set_back_holds_the_budget_no_longer_than_stable_after() {
    let now = Wall::from_millis(100_000_000);
    let mut tracker = Tracker::new(policy());
    for i in 0..3 {
        tracker.observe(&rotating(i), now, true);
        recover_due(&mut tracker, now);
    }
    let set_back = Wall::from_millis(now.millis() - 86_400_000);
    let hour_later = set_back + Duration::from_secs(3600);
    tracker.observe(&rotating(9), hour_later, true);
    assert_eq!(recover_due(&mut tracker, hour_later).0, 1);
}

#[test]
fn what_restore_does_not_carry_on_is_let_go_at_the_next_check() {
    let now = Wall::from_millis(10_000_000);
    let old = Issue::saved(
        "old.resolved".into(),
        State::Resolved,
        Status::Ok,
        String::new(),
        1,
        [now, now],
        [None, Some(Wall::from_millis(1_000))],
    );
    let open: Vec<Issue> = (0..MAX_ISSUES_PER_TARGET + 2)
        .map(|i| {
            let at = Wall::from_millis(1_000 + i as u64);
            Issue::saved(
                format!("open.k{i}"),
                State::Open,
                Status::Critical,
                String::new(),
                0,
                [at, at],
                [None, None],
            )
        })
        .collect();
    let mut tracker = Tracker::new(policy());
    let restored = tracker.restore([vec![old], open].concat(), now);
    assert_eq!(restored, MAX_ISSUES_PER_TARGET);
    let transitions = tracker.observe(&[], now, false);
    let let_go: Vec<_> = transitions
        .iter()
        .filter_map(|t| match t {
            Transition::Forgotten { kind, .. } => Some(kind.as_str()),
            Transition::Dropped { issue, .. } => Some(issue.kind.as_str()),
            _ => None,
        })
        .collect();
    let newest = format!("open.k{}", MAX_ISSUES_PER_TARGET + 1);
    assert_eq!(let_go.len(), 3, "{let_go:?}");
    assert!(let_go.contains(&"old.resolved") && let_go.contains(&newest.as_str()));
    assert!(tracker.issue("open.k0").is_some(), "the oldest are kept");
}

#[test]
fn a_saved_attempt_count_from_a_damaged_row_costs_no_more_than_the_budget() {
    let now = Wall::from_millis(10_000_000);
    let damaged = Issue::saved(
        "process.not_running".into(),
        State::Escalated,
        Status::Critical,
        String::new(),
        u32::MAX,
        [now, now],
        [None, None],
    );
    let mut tracker = Tracker::new(policy());
    assert_eq!(tracker.restore(vec![damaged], now), 1);
    assert_eq!(tracker.spent().len(), 3);
}

#[test]
fn a_target_holds_at_most_its_cap_of_issues_and_says_what_it_left_out() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    let flood: Vec<Finding> = (0..20_000)
        .map(|i| Finding::critical(format!("flood.k{i}"), "s"))
        .collect();
    let transitions = tracker.observe(&flood, now, true);
    assert_eq!(tracker.issues().count(), MAX_ISSUES_PER_TARGET);
    let left_out: Vec<_> = transitions
        .iter()
        .filter_map(|t| match t {
            Transition::LeftOut { kinds, count, .. } => Some((kinds.len(), *count)),
            _ => None,
        })
        .collect();
    assert_eq!(left_out, [(5, 20_000 - MAX_ISSUES_PER_TARGET)]);
    // The issues already open go on; one of them resolving makes room.
    let mut fewer = flood[1..MAX_ISSUES_PER_TARGET].to_vec();
    fewer.push(Finding::critical("new.kind", "s"));
    tracker.observe(&fewer, now, true);
    assert!(tracker.issue("flood.k0").is_none());
    assert!(
        tracker.issue("new.kind").is_none(),
        "no room yet at that check"
    );
    tracker.observe(&fewer, now, true);
    assert!(tracker.issue("new.kind").is_some());
    assert_eq!(tracker.issues().count(), MAX_ISSUES_PER_TARGET);
}

#[test]
fn the_flap_memory_is_bounded_and_every_resolved_issue_is_forgotten_aloud() {
    let mut tracker = Tracker::new(Policy {
        recovery_budget: Some(u32::MAX),
        ..policy()
    });
    let now = Wall::from_millis(1_000_000);
    let mut transitions = Vec::new();
    let kinds = MAX_REMEMBERED as u32 + 100;
    for i in 0..kinds {
        let at = now + Duration::from_millis(u64::from(i));
        transitions.extend(tracker.observe(&rotating(i), at, true));
    }
    transitions.extend(tracker.observe(&[], now + Duration::from_secs(1), true));
    assert_eq!(tracker.remembered.len(), MAX_REMEMBERED);
    assert!(
        !tracker.remembered.contains_key("rotating.k0"),
        "the oldest went first"
    );
    // Every issue that resolved is forgotten in the end, and said so
    // (the store deletes its row then): none is left behind.
    transitions.extend(tracker.observe(&[], now + Duration::from_secs(3600), true));
    assert!(tracker.remembered.is_empty());
    let count = |wanted: fn(&Transition) -> bool| transitions.iter().filter(|t| wanted(t)).count();
    let resolved = count(|t| matches!(t, Transition::Resolved(_)));
    let forgotten = count(|t| matches!(t, Transition::Forgotten { .. }));
    assert_eq!((resolved, forgotten), (kinds as usize, kinds as usize));
}

#[test]
fn a_reset_of_no_open_issue_changes_nothing() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now);
    tracker.observe(&[], now, true); // resolved, remembered with 1 attempt
    assert!(tracker.reset("process.not_running").is_none());
    let back = tracker.observe(&down(), now, true);
    assert_eq!(opened(&back), Some(1), "the flap memory is still there");
}

#[test]
fn a_reset_keeps_the_backoff_of_the_attempt_that_just_ran() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    attempt(&mut tracker, now); // the next is due 1 s later
    let issue = tracker.reset("process.not_running").expect("open");
    assert_eq!(issue.attempts, 0);
    assert!(tracker.due(now).is_empty(), "the backoff still holds");
    assert_eq!(tracker.due(now + Duration::from_secs(1)).len(), 1);
}

fn verdicts_in(transitions: &[Transition]) -> Vec<(Verdict, String)> {
    transitions
        .iter()
        .filter_map(|t| match t {
            Transition::Judged {
                verdict, judging, ..
            } => Some((*verdict, judging.recoverer.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_attempt_is_judged_healed_after_stable_after_and_not_healed_when_its_issue_comes_back() {
    let mut tracker = Tracker::new(policy());
    let t0 = Wall::from_millis(1_000_000);
    tracker.observe(&down(), t0, true);
    tracker.attempt_started("process.not_running", t0);
    tracker.awaiting_verdict("process.not_running", "restart", t0);
    tracker.attempt_finished("process.not_running", t0);
    let resolved_at = t0 + Duration::from_secs(2);
    let healed = tracker.observe(&[], resolved_at, true);
    assert!(resolved(&healed));
    assert!(verdicts_in(&healed).is_empty(), "not before stable_after");
    // Saved and restored (a restart): the verdict still comes.
    let saved = tracker.save();
    assert_eq!(
        saved[0].judging.as_ref().and_then(|j| j.resolved_at),
        Some(resolved_at)
    );
    let mut tracker = Tracker::new(policy());
    tracker.restore(saved, resolved_at);
    let later = tracker.observe(&[], resolved_at + Duration::from_secs(301), true);
    assert_eq!(
        verdicts_in(&later),
        [(Verdict::Healed, "restart".to_owned())]
    );

    // Comes back within stable_after: not healed.
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), t0, true);
    tracker.attempt_started("process.not_running", t0);
    tracker.awaiting_verdict("process.not_running", "restart", t0);
    tracker.attempt_finished("process.not_running", t0);
    tracker.observe(&[], resolved_at, true);
    let back = tracker.observe(&down(), resolved_at + Duration::from_secs(10), true);
    assert_eq!(
        verdicts_in(&back),
        [(Verdict::NotHealed, "restart".to_owned())]
    );
}

#[test]
fn a_proposal_holds_its_issue_until_an_operator_approves_it_and_expires_into_an_escalation() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    let proposal = |expires_at| Proposal {
        recoverer: "restart".to_owned(),
        action: "restart {}".to_owned(),
        why: "its mode is \"propose\"".to_owned(),
        proposed_at: now,
        expires_at,
        approved: false,
    };
    assert!(tracker
        .propose(
            "process.not_running",
            proposal(now + Duration::from_secs(60))
        )
        .is_some());
    assert!(tracker.due(now).is_empty(), "it waits for an answer");
    assert!(
        tracker
            .propose("process.not_running", proposal(now))
            .is_none(),
        "one proposal at a time"
    );
    let (issue, escalated) = tracker
        .answer("process.not_running", Answer::Approve, now)
        .expect("a proposal to answer");
    assert!(issue.proposal.is_some_and(|p| p.approved) && escalated.is_none());
    assert_eq!(tracker.due(now), ["process.not_running"]);
    tracker.attempt_started("process.not_running", now);
    tracker.attempt_finished("process.not_running", now);
    assert!(tracker
        .issue("process.not_running")
        .unwrap()
        .proposal
        .is_none());

    // Proposed again, unanswered: escalated at its expiry, not before.
    let later = now + Duration::from_secs(5);
    tracker.propose(
        "process.not_running",
        proposal(later + Duration::from_secs(60)),
    );
    assert!(tracker.expire_proposals(later).is_empty());
    let expired = tracker.expire_proposals(later + Duration::from_secs(60));
    assert!(
        matches!(&expired[..], [Transition::Escalated { reason, .. }] if reason.starts_with("nobody answered the proposal to run restart")),
        "{expired:?}"
    );
    assert!(tracker
        .answer("process.not_running", Answer::Approve, later)
        .is_err());
}

fn proposed(now: Wall, expires_at: Wall) -> Proposal {
    Proposal {
        recoverer: "restart".to_owned(),
        action: "restart {}".to_owned(),
        why: "its mode is \"propose\"".to_owned(),
        proposed_at: now,
        expires_at,
        approved: false,
    }
}

#[test]
fn an_approval_is_spent_by_the_attempt_it_starts_even_if_healer_dies_during_it() {
    let mut tracker = Tracker::new(policy());
    let now = Wall::from_millis(1_000_000);
    tracker.observe(&down(), now, true);
    tracker.propose(
        "process.not_running",
        proposed(now, now + Duration::from_secs(60)),
    );
    tracker
        .answer("process.not_running", Answer::Approve, now)
        .expect("approved");
    let started = tracker
        .attempt_started("process.not_running", now)
        .expect("an attempt");
    assert!(
        started.proposal.is_none(),
        "what the store keeps: no approval left"
    );
    // healer dies here; after the restart nothing is approved.
    let mut restored = Tracker::new(policy());
    restored.restore(tracker.save(), now);
    let issue = restored.issue("process.not_running").expect("carried on");
    assert!(issue.proposal.is_none(), "{issue:?}");
}

#[test]
fn an_approved_proposal_that_cannot_run_expires_and_may_still_be_rejected() {
    let now = Wall::from_millis(1_000_000);
    let expires_at = now + Duration::from_secs(60);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    tracker.propose("process.not_running", proposed(now, expires_at));
    tracker
        .answer("process.not_running", Answer::Approve, now)
        .expect("approved");
    assert!(
        tracker
            .answer("process.not_running", Answer::Approve, now)
            .is_err(),
        "approved once"
    );
    let (rejected, escalated) = tracker
        .answer("process.not_running", Answer::Reject, now)
        .expect("an approval may be taken back");
    assert_eq!(rejected.state, State::Escalated);
    assert!(escalated.is_some());

    // Approved, then held (a gate, a pause) past its expiry: escalated.
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    tracker.propose("process.not_running", proposed(now, expires_at));
    tracker
        .answer("process.not_running", Answer::Approve, now)
        .expect("approved");
    assert_eq!(tracker.next_proposal_expiry(), Some(expires_at));
    let expired = tracker.expire_proposals(expires_at);
    assert!(
        matches!(&expired[..], [Transition::Escalated { reason, .. }] if reason.contains("could not run before it expired")),
        "{expired:?}"
    );
    // An answer after the expiry is refused.
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    tracker.propose("process.not_running", proposed(now, expires_at));
    let late = tracker.answer("process.not_running", Answer::Approve, expires_at);
    assert!(late.is_err_and(|why| why.contains("expired")));
}

#[test]
fn a_reset_takes_back_a_proposal_and_a_withdrawn_one_leaves_the_issue_due() {
    let now = Wall::from_millis(1_000_000);
    let mut tracker = Tracker::new(policy());
    tracker.observe(&down(), now, true);
    tracker.propose(
        "process.not_running",
        proposed(now, now + Duration::from_secs(60)),
    );
    assert!(tracker.due(now).is_empty());
    let withdrawn = tracker.withdraw("process.not_running").expect("withdrawn");
    assert!(withdrawn.proposal.is_none());
    assert_eq!(tracker.due(now), ["process.not_running"]);
    tracker.propose(
        "process.not_running",
        proposed(now, now + Duration::from_secs(60)),
    );
    let reset = tracker.reset("process.not_running").expect("reset");
    assert!(reset.proposal.is_none());
}
