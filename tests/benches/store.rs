//! The store's figures for `docs/PERFORMANCE.md`:
//!
//! 1. **Throughput**: events per second from `emit` to committed in SQLite
//!    (the dispatcher thread, the store's projection and its writer thread,
//!    batched transactions, WAL), for a realistic mix of issue events.
//! 2. **A real daemon** with 1,000 targets checked every second whose
//!    status flips every 10 checks, run with the store and without it: the
//!    check latency (the monitor call, and the lateness of each check
//!    against its 1 s schedule), healer's CPU, and what the history grows
//!    by, from which the size of one day of history is computed.
//!
//! Run with `cargo bench -p healer-e2e --bench store`.

use std::path::Path;
use std::time::{Duration, Instant};

use healer::clock::Wall;
use healer::events::{Event, Events, StepResult};
use healer::issues::{Issue, State};
use healer::store::{Settings, Store};
use healer_e2e::{plugins_dir_with, read_records, Daemon};
use healer_plugin_sdk::Status;

const EVENTS: usize = 500_000;
const CHUNK: usize = 50_000;
const TARGETS: usize = 1_000;
const WARM_UP: Duration = Duration::from_secs(15);
const WINDOW: Duration = Duration::from_secs(60);

/// The events of one incident of one target: status change, issue opened,
/// attempt started, recoverer finished, attempt finished, status change,
/// resolved.
fn incident(target: usize, n: usize) -> [Event; 7] {
    let target = format!("target-{target:04}");
    let issue = |state: State, attempts: u32| {
        Issue::saved(
            "http.status_5xx".into(),
            state,
            Status::Critical,
            "GET http://127.0.0.1:8080/health answered 503 in 3 ms".into(),
            attempts,
            [Wall::now(), Wall::now()],
            [None, None],
        )
    };
    let checked = |status, was| Event::Checked {
        target: target.clone(),
        check: String::new(),
        status,
        was: Some(was),
        summary: format!(
            "answered {} in 3 ms (check {n})",
            if status == Status::Ok { 200 } else { 503 }
        ),
        pushed: false,
        took_us: 1_200,
    };
    [
        checked(Status::Critical, Status::Ok),
        Event::IssueOpened {
            target: target.clone(),
            issue: issue(State::Open, 0),
        },
        Event::AttemptStarted {
            target: target.clone(),
            issue: issue(State::Recovering, 1),
            max_attempts: 3,
        },
        Event::RecovererFinished {
            target: target.clone(),
            kind: "http.status_5xx".into(),
            attempt: 1,
            recoverer: "service-restart".into(),
            result: StepResult::Succeeded {
                summary: "ran `systemctl restart web.service`".into(),
            },
        },
        Event::AttemptFinished {
            target: target.clone(),
            issue: issue(State::Recovering, 1),
            recovered: true,
        },
        checked(Status::Ok, Status::Critical),
        Event::IssueResolved {
            target: target.clone(),
            issue: issue(State::Resolved, 1),
        },
    ]
}

fn file_size(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// Emits `EVENTS` events and waits until all are committed; events/s and
/// bytes per stored event.
fn throughput() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("healer.db");
    let (events, inbox) = Events::channel(false);
    let settings = Settings {
        file: file.clone(),
        keep_for: Duration::from_secs(14 * 86_400),
        keep_events: 10_000_000,
        forget_anomalies_after: Duration::from_secs(600),
    };
    let (store, _) = Store::open(settings, events.clone());
    inbox.start(vec![store.subscriber()]);
    let mut batch = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS / 7 {
        batch.extend(incident(n % TARGETS, n));
    }
    let count = batch.len();
    // Bursts smaller than what the store holds in memory: the figure is
    // what it sustains, not how much a burst can outrun it.
    let started = Instant::now();
    let mut events_left = batch.into_iter();
    loop {
        let mut sent = 0;
        for event in events_left.by_ref().take(CHUNK) {
            events.emit(event);
            sent += 1;
        }
        if sent == 0 {
            break;
        }
        assert!(events.sync(Duration::from_secs(60)), "not written in time");
    }
    let took = started.elapsed();
    assert!(
        events.finish(Duration::from_secs(120)),
        "not closed in time"
    );
    let conn = rusqlite::Connection::open(&file).unwrap();
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as usize, count, "every event is in the history");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    (
        count as f64 / took.as_secs_f64(),
        file_size(&file) as f64 / count as f64,
    )
}

struct Run {
    took_p50_us: u64,
    took_p99_us: u64,
    late_p50_ms: u64,
    late_p99_ms: u64,
    cpu_percent: f64,
    rss_mb: f64,
    history_per_s: f64,
    bytes_per_event: f64,
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after ")".
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The real daemon over `TARGETS` flapping targets, with or without the
/// store.
fn daemon(store: bool) -> Run {
    let plugins = plugins_dir_with(&["healer-fixture-typical"]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[healer]\ninterval = \"1s\"\nescalated_interval = \"1s\"\nplugins_dir = \"{}\"\nlog_file = \"healer.log\"\n\
         event_log = \"events.jsonl\"\nstate_dir = \"state\"\nlog_level = \"warn\"\n\n[store]\nenabled = {store}\n",
        plugins.path().display()
    );
    for n in 0..TARGETS {
        config.push_str(&format!(
            "\n[[target]]\nname = \"t{n:04}\"\nmonitor = {{ plugin = \"flapping\", every = 10 }}\n"
        ));
    }
    std::fs::write(dir.path().join("healer.toml"), config).unwrap();
    let daemon = Daemon::start(&dir.path().join("healer.toml"));
    let pid = daemon.pid();
    std::thread::sleep(WARM_UP);
    let db = dir.path().join("state").join("healer.db");
    let from = Wall::now();
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let cpu = cpu_ticks(pid) - cpu_before;
    let elapsed = started.elapsed();
    let to = Wall::now();
    let rss = rss_mb(pid);
    drop(daemon);

    let records = read_records(&dir.path().join("events.jsonl"));
    let mut took = Vec::new();
    let mut last: std::collections::HashMap<String, Wall> = Default::default();
    let mut late = Vec::new();
    let mut history = 0.0;
    for record in records.iter().filter(|r| r.at >= from && r.at <= to) {
        if !record.event.is_routine() {
            history += 1.0;
        }
        if let Event::Checked {
            target, took_us, ..
        } = &record.event
        {
            took.push(*took_us);
            if let Some(before) = last.insert(target.clone(), record.at) {
                let gap = record.at.since(before).as_millis() as u64;
                late.push(gap.saturating_sub(1_000));
            }
        }
    }
    took.sort_unstable();
    late.sort_unstable();
    let ticks = clock_ticks_per_second();
    let (bytes_per_event, _) = if store {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        (file_size(&db) as f64 / rows as f64, rows)
    } else {
        (0.0, 0)
    };
    Run {
        took_p50_us: percentile(&took, 0.5),
        took_p99_us: percentile(&took, 0.99),
        late_p50_ms: percentile(&late, 0.5),
        late_p99_ms: percentile(&late, 0.99),
        cpu_percent: cpu as f64 / ticks / elapsed.as_secs_f64() * 100.0,
        rss_mb: rss,
        history_per_s: history / elapsed.as_secs_f64(),
        bytes_per_event,
    }
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() {
    // `HEALER_BENCH=throughput` or `=daemon` runs only that part.
    let part = std::env::var("HEALER_BENCH").unwrap_or_default();
    if part != "daemon" {
        throughput_rounds();
    }
    if part != "throughput" {
        daemon_rounds();
    }
}

fn throughput_rounds() {
    println!("store throughput: {EVENTS} events (7-event incidents over {TARGETS} targets), emit to committed");
    for round in 1..=3 {
        let (per_second, bytes) = throughput();
        println!("  round {round}: {per_second:>9.0} events/s   {bytes:.0} bytes per stored event");
    }
}

fn daemon_rounds() {
    println!("\nhealer run, {TARGETS} targets at 1 s, each flipping OK/CRITICAL every 10 checks, {}s window", WINDOW.as_secs());
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>10} {:>8}",
        "store",
        "check p50",
        "check p99",
        "late p50",
        "late p99",
        "cpu %",
        "RSS MB",
        "history/s",
        "B/event"
    );
    for store in [true, false, true, false] {
        let run = daemon(store);
        println!(
            "{:<14} {:>7}us {:>7}us {:>7}ms {:>7}ms {:>7.1} {:>7.1} {:>10.1} {:>8.0}",
            if store { "on" } else { "off" },
            run.took_p50_us,
            run.took_p99_us,
            run.late_p50_ms,
            run.late_p99_ms,
            run.cpu_percent,
            run.rss_mb,
            run.history_per_s,
            run.bytes_per_event
        );
    }
}
