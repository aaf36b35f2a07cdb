//! Unit tests of the facts: namespaces, quotas, only changes counted,
//! retraction and expiry, and gates that never read absence as false.

use super::*;

fn at(secs: u64) -> Wall {
    Wall::from_millis(1_800_000_000_000 + secs * 1000)
}

fn plugin(name: &str) -> Source {
    Source {
        writer: name.to_owned(),
        package: Some(format!("libhealer_plugin_{name}.so")),
        version: Some("1.0.0".to_owned()),
    }
}

fn values(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[test]
fn a_new_fact_and_a_new_value_are_changes_and_the_same_value_is_not() {
    let mut facts = Facts::default();
    let healer = Source::healer();
    let first = facts.publish(
        "target.db",
        &healer,
        values(&[("healthy", Value::Bool(false))]),
        None,
        at(0),
    );
    assert!(matches!(
        &first.changes[..],
        [Change::Changed { was: None, .. }]
    ));
    let same = facts.publish(
        "target.db",
        &healer,
        values(&[("healthy", Value::Bool(false))]),
        None,
        at(5),
    );
    assert!(same.changes.is_empty(), "{same:?}");
    assert_eq!(
        facts.read("target.db.healthy", at(6)).unwrap().observed_at,
        at(5)
    );
    let changed = facts.publish(
        "target.db",
        &healer,
        values(&[("healthy", Value::Bool(true))]),
        None,
        at(9),
    );
    assert!(matches!(
        &changed.changes[..],
        [Change::Changed {
            was: Some(Value::Bool(false)),
            ..
        }]
    ));
}

#[test]
fn a_plugin_writes_only_its_own_namespace() {
    let mut facts = Facts::default();
    let published = facts.publish(
        "target.web",
        &plugin("http"),
        values(&[
            ("http.status", Value::Number(200.0)),
            ("process.pid", Value::Number(1.0)),
            ("healthy", Value::Bool(true)),
        ]),
        Some(Duration::from_secs(10)),
        at(0),
    );
    assert_eq!(published.changes.len(), 1);
    let (dropped, reason) = published.dropped.expect("two dropped");
    assert_eq!(dropped, 2);
    assert!(
        reason.contains("http writes only its own keys (http.*)"),
        "{reason}"
    );
    assert!(facts.read("target.web.healthy", at(1)).is_none());
}

#[test]
fn a_flood_of_keys_is_cut_at_the_writers_quota_and_counted_once() {
    let mut facts = Facts::default();
    let flood: Vec<(String, Value)> = (0..100_000)
        .map(|i| (format!("flood.k{i}"), Value::Number(f64::from(i))))
        .collect();
    let published = facts.publish("target.x", &plugin("flood"), flood, None, at(0));
    assert_eq!(published.changes.len(), KEYS_PER_WRITER);
    assert_eq!(published.dropped.unwrap().0, 100_000 - KEYS_PER_WRITER);
    assert_eq!(facts.len(), KEYS_PER_WRITER);
}

#[test]
fn too_long_a_value_is_dropped() {
    let mut facts = Facts::default();
    let long = Value::Text("x".repeat(VALUE_BYTES + 1));
    let published = facts.publish(
        "target.x",
        &plugin("p"),
        values(&[("p.long", long)]),
        None,
        at(0),
    );
    assert!(published.changes.is_empty());
    assert_eq!(published.dropped.unwrap().0, 1);
}

#[test]
fn another_writers_fact_is_not_overwritten() {
    let mut facts = Facts::default();
    let mut operator = Source::healer();
    operator.writer = OPERATOR.to_owned();
    facts.publish(
        "system",
        &operator,
        values(&[("note.why", Value::Text("disk swap".into()))]),
        None,
        at(0),
    );
    let mut other = operator.clone();
    other.writer = "note".to_owned();
    let published = facts.publish(
        "system",
        &other,
        values(&[("note.why", Value::Text("mine".into()))]),
        None,
        at(1),
    );
    assert!(published.changes.is_empty());
    assert_eq!(
        facts.read("system.note.why", at(2)).unwrap().value,
        Value::Text("disk swap".into())
    );
}

#[test]
fn a_fact_expires_at_its_time_and_is_not_read_after() {
    let mut facts = Facts::default();
    facts.publish(
        "target.db",
        &plugin("process"),
        values(&[("process.pid", Value::Number(42.0))]),
        Some(Duration::from_secs(10)),
        at(0),
    );
    assert!(facts.read("target.db.process.pid", at(9)).is_some());
    assert!(
        facts.read("target.db.process.pid", at(10)).is_none(),
        "not read once expired"
    );
    assert!(facts.expire(at(5)).is_empty());
    let expired = facts.expire(at(10));
    assert!(matches!(&expired[..], [Change::Expired { .. }]));
    assert!(facts.is_empty());
}

#[test]
fn a_writers_facts_are_retracted_with_its_check_or_its_worker() {
    let mut facts = Facts::default();
    facts.publish(
        "target.db",
        &plugin("process"),
        values(&[("process.pid", Value::Number(42.0))]),
        None,
        at(0),
    );
    facts.publish(
        "target.db",
        &Source::healer(),
        values(&[("healthy", Value::Bool(true))]),
        None,
        at(0),
    );
    let gone = facts.retract("target.db", Some("process"), Retraction::Unknown);
    assert!(matches!(
        &gone[..],
        [Change::Retracted {
            why: Retraction::Unknown,
            ..
        }]
    ));
    assert!(
        facts.read("target.db.healthy", at(1)).is_some(),
        "healer's stays"
    );
    facts.publish(
        "target.web",
        &plugin("process"),
        values(&[("process.pid", Value::Number(7.0))]),
        None,
        at(0),
    );
    let gone = facts.worker_ended("libhealer_plugin_process.so");
    assert_eq!(gone.len(), 1);
    let gone = facts.retract("target.db", None, Retraction::TargetRemoved);
    assert_eq!(gone.len(), 1);
    assert!(facts.is_empty());
}

#[test]
fn a_workers_end_takes_back_every_fact_of_its_package_about_every_subject_and_is_counted() {
    let mut facts = Facts::default();
    for subject in ["target.db", "target.web"] {
        facts.publish(
            subject,
            &plugin("process"),
            values(&[("process.pid", Value::Number(7.0))]),
            None,
            at(0),
        );
    }
    facts.publish(
        "target.db",
        &plugin("http"),
        values(&[("http.status", Value::Number(200.0))]),
        None,
        at(0),
    );
    facts.publish(
        "target.db",
        &Source::healer(),
        values(&[("healthy", Value::Bool(true))]),
        None,
        at(0),
    );
    assert_eq!(facts.worker_ends("libhealer_plugin_process.so"), 0);
    let gone = facts.worker_ended("libhealer_plugin_process.so");
    let names: Vec<String> = gone
        .iter()
        .map(|change| match change {
            Change::Retracted {
                fact,
                why: Retraction::WorkerEnded,
            } => fact.name(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["target.db.process.pid", "target.web.process.pid"]);
    assert_eq!(facts.worker_ends("libhealer_plugin_process.so"), 1);
    assert_eq!(facts.worker_ends("libhealer_plugin_http.so"), 0);
    assert!(facts.read("target.db.http.status", at(1)).is_some());
    assert!(facts.read("target.db.healthy", at(1)).is_some());
    // A second end with nothing left to take back is still counted.
    assert!(facts.worker_ended("libhealer_plugin_process.so").is_empty());
    assert_eq!(facts.worker_ends("libhealer_plugin_process.so"), 2);
}

#[test]
fn facts_from_before_a_restart_are_kept_until_they_expire_and_marked() {
    let mut before = Facts::default();
    before.publish(
        "target.db",
        &plugin("process"),
        values(&[("process.pid", Value::Number(42.0))]),
        Some(Duration::from_secs(60)),
        at(0),
    );
    before.publish(
        "target.db",
        &plugin("process"),
        values(&[("process.start", Value::Number(1.0))]),
        Some(Duration::from_secs(5)),
        at(0),
    );
    let saved = before.all(None, at(0));
    let mut after = Facts::default();
    // Each gets its time to live again from the restart: the store keeps
    // a fact as last changed, not as last refreshed.
    assert_eq!(after.restore(saved, at(100)), 2);
    let pid = after.read("target.db.process.pid", at(100)).unwrap();
    assert!(pid.previous_run);
    assert!(after.read("target.db.process.start", at(104)).is_some());
    assert!(after.read("target.db.process.start", at(105)).is_none());
    // A gate does not act on what the previous run knew.
    let gate = Gate::parse("target.db.process.pid == 42").unwrap();
    assert!(
        matches!(gate.read(&after, at(100)), Reading::Unknown(ref said) if said.contains("before healer restarted")),
        "{:?}",
        gate.read(&after, at(100))
    );
    after.publish(
        "target.db",
        &plugin("process"),
        values(&[("process.pid", Value::Number(42.0))]),
        Some(Duration::from_secs(60)),
        at(101),
    );
    assert!(
        !after
            .read("target.db.process.pid", at(101))
            .unwrap()
            .previous_run,
        "rewritten"
    );
}

#[test]
fn a_gate_reads_true_false_or_unknown_and_cites_the_fact() {
    let mut facts = Facts::default();
    facts.publish(
        "target.db",
        &Source::healer(),
        values(&[("healthy", Value::Bool(false))]),
        None,
        at(0),
    );
    facts.publish(
        "system",
        &plugin("system"),
        values(&[("system.disk_used", Value::Number(93.0))]),
        None,
        at(0),
    );
    let healthy = Gate::parse("target.db.healthy == true").unwrap();
    assert_eq!(
        healthy.read(&facts, at(12)),
        Reading::False("target.db.healthy = false from healer, 12 s old".to_owned())
    );
    assert_eq!(
        Gate::parse("target.db.healthy")
            .unwrap()
            .read(&facts, at(12)),
        healthy.read(&facts, at(12)),
        "a bare name is NAME == true"
    );
    let full = Gate::parse("system.system.disk_used >= 90").unwrap();
    assert!(matches!(full.read(&facts, at(1)), Reading::True(_)));
    let missing = Gate::parse("target.cache.healthy == true").unwrap();
    assert_eq!(
        missing.read(&facts, at(1)),
        Reading::Unknown("target.cache.healthy is not known".to_owned())
    );
    // A truth compared with a text is not an answer either way.
    let text = Gate::parse("target.db.healthy != \"up\"").unwrap();
    assert!(
        matches!(text.read(&facts, at(1)), Reading::Unknown(_)),
        "false != \"up\""
    );
    let no_op = Gate::parse("target.db.healthy=true").unwrap_err();
    assert!(no_op.contains("names no fact"), "{no_op}");
}

#[test]
fn a_gate_that_cannot_be_read_says_what_to_write() {
    let no_fact = Gate::parse("== true").unwrap_err();
    assert!(no_fact.contains("names no fact"), "{no_fact}");
    let order_on_text = Gate::parse("target.db.version > \"2\"").unwrap_err();
    assert!(
        order_on_text.contains("compare numbers only"),
        "{order_on_text}"
    );
    let bad_value = Gate::parse("target.db.healthy == yes").unwrap_err();
    assert!(
        bad_value.contains("true, false, a number or a quoted text"),
        "{bad_value}"
    );
}

#[test]
fn the_bound_grows_with_the_targets_so_ten_thousand_targets_keep_their_plugins_facts() {
    let mut facts = Facts::default();
    let healer = Source::healer();
    let http = plugin("http");
    let publish_all = |facts: &mut Facts, targets: usize| -> usize {
        let mut dropped = 0;
        for i in 0..targets {
            let subject = format!("target.t{i}");
            for key in ["healthy", "down", "checked"] {
                facts.publish(
                    &subject,
                    &healer,
                    values(&[(key, Value::Bool(true))]),
                    None,
                    at(0),
                );
            }
            let out = facts.publish(
                &subject,
                &http,
                values(&[("http.answered", Value::Bool(true))]),
                None,
                at(0),
            );
            dropped += out.dropped.map_or(0, |(count, _)| count);
        }
        dropped
    };
    // A fixed bound: healer's own facts of 10,000 targets fill it, and
    // the plugin's are refused.
    assert!(publish_all(&mut facts, 10_000) > 0);

    let mut facts = Facts::default();
    facts.make_room_for(10_000);
    assert_eq!(facts.limit(), MAX_FACTS + 10_000 * FACTS_PER_TARGET);
    assert_eq!(publish_all(&mut facts, 10_000), 0);
}
