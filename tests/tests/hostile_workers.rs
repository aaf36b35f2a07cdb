//! A plugin worker is an adversary: any package can speak the worker
//! protocol on its socket itself (the `healer-fixture-hostile-worker`
//! fixture does, copied as `libhostile_<mode>.so`) and answer with as much
//! as a frame holds. healer takes in no more than it bounds: one answer
//! with 20,000 finding kinds leaves the API quick, the target's issues
//! capped (with an event saying what was dropped) and SIGTERM prompt;
//! wrong-kind replies of 15 MiB and summaries of 4 MiB leave healer's
//! memory, its log and its store small. And a diagnoser that names its
//! finding anew at every check gets no more recoveries than the target's
//! `max_attempts` before it is escalated.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use healer_e2e::{
    fast_config, free_port, package_file, plugins_dir_with, rss, store_file, store_number,
    wait_for_port, Daemon, Event, Record,
};
use healer_plugin_sdk::Status;

/// The fixture package, copied under other names.
const FIXTURE: &str = "healer-fixture-hostile-worker";

use healer::issues::MAX_ISSUES_PER_TARGET;

/// How fast the API must answer, whatever a plugin sent.
const API_WITHIN: Duration = Duration::from_millis(100);

/// How long SIGTERM may take to stop healer.
const STOPS_WITHIN: Duration = Duration::from_secs(2);

/// The most memory healer may use, and the most its log and its store may
/// grow, whatever a plugin sent.
const RSS_AT_MOST: u64 = 64 << 20;
const GROWTH_AT_MOST: u64 = 5 << 20;

/// How far above its RSS at start healer may stay once the hostile answers
/// are dealt with: less than one 10 MiB answer (kept whole, by a read
/// buffer or an allocator's arena, it alone is over); what small blocks
/// left behind in the arenas came to 0.3 to 5.8 MB here.
const SETTLES_WITHIN: u64 = 10 << 20;

/// Far beyond any bound: past these, a test stops healer at once rather
/// than let it take the machine's memory or disk.
const RSS_GUARD: u64 = 1 << 30;
const DISK_GUARD: u64 = 512 << 20;

/// The longest any wait in these tests lasts.
const LIMIT: Duration = Duration::from_secs(60);

/// A plugins directory holding only the fixture, as `libhostile_<mode>.so`:
/// its worker then speaks the protocol itself, in that mode.
fn hostile_plugins(mode: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let to = dir.path().join(format!("libhostile_{mode}.so"));
    std::fs::copy(package_file(FIXTURE), &to).expect("the fixture is copied");
    dir
}

/// A target of the fixture's monitor, with its diagnoser when `diagnosed`
/// (then checks are `observe` calls: diagnosed in the worker), and `extra`
/// lines.
fn hostile_target(name: &str, diagnosed: bool, extra: &str) -> String {
    let diagnose = if diagnosed {
        "[[target.diagnose]]\nplugin = \"hostile-worker\"\n"
    } else {
        ""
    };
    format!(
        "\n[[target]]\nname = \"{name}\"\n{extra}\nmonitor = {{ plugin = \"hostile-worker\" }}\n{diagnose}"
    )
}

#[test]
fn an_answer_of_20000_finding_kinds_leaves_the_api_quick_the_issues_capped_and_sigterm_prompt() {
    let plugins = hostile_plugins("kinds");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\n{}",
        hostile_target("kinds", true, "")
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    let watch = Watch::start(daemon.pid(), dir.path());
    wait_for_port(port, LIMIT);
    let mut events = EventTail::new(&daemon.events);

    // The API, polled every 50 ms from the start until 5 s after the
    // hostile answer came in (and, when it stopped answering, until it
    // answers again, for up to 30 s: how long it was gone).
    let started = Instant::now();
    let mut answered_at: Option<Instant> = None;
    let (mut healthz, mut issues) = (Polls::default(), Polls::default());
    let mut most_issues_shown = 0;
    let polling = |answered_at: Option<Instant>, gone: bool| match answered_at {
        None => started.elapsed() < LIMIT,
        Some(at) => at.elapsed() < Duration::from_secs(if gone { 30 } else { 5 }),
    };
    while polling(
        answered_at,
        healthz.unanswered_since.is_some() || issues.unanswered_since.is_some(),
    ) {
        healthz.add(timed_get(port, "/healthz"));
        let polled = timed_get(port, "/api/v1/issues?target=kinds");
        most_issues_shown = most_issues_shown.max(polled.body.matches("\"id\":\"kinds/").count());
        issues.add(polled);
        if answered_at.is_none()
            && events.new_events().iter().any(|event| {
                matches!(event, Event::Checked { target, status: Status::Critical, .. } if target == "kinds")
            })
        {
            answered_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    healthz.end_of_polling();
    issues.end_of_polling();
    let answer_seen = answered_at.is_some();

    let (stopped, took) = stop_within(&mut daemon, Duration::from_secs(10));
    let peaks = watch.stop();
    let stored = store_number(
        dir.path(),
        "SELECT COUNT(*) FROM issues WHERE target = 'kinds'",
    )
    .unwrap_or(-1);
    let records = daemon.records();
    let opened = records
        .iter()
        .filter(|r| matches!(&r.event, Event::IssueOpened { target, .. } if target == "kinds"))
        .count();
    let escalated = records
        .iter()
        .filter(|r| matches!(&r.event, Event::IssueEscalated { target, .. } if target == "kinds"))
        .count();
    let dropping = events_naming_drops(&daemon.events, "kinds");
    println!(
        "20,000 kinds in one answer (answer seen: {answer_seen}):\n  \
         /healthz: {healthz}\n  /api/v1/issues: {issues}\n  \
         issues held: at most {most_issues_shown} shown by the API, {stored} in the store after the stop; \
         {opened} opened and {escalated} escalated events; events naming what was dropped: {}\n  \
         SIGTERM: {} after {took:?}\n  {peaks}",
        dropping.len(),
        if stopped { "stopped" } else { "did NOT stop (killed)" },
    );

    assert!(answer_seen, "the worker's answer was never taken in");
    assert!(
        healthz.worst <= API_WITHIN && healthz.all_ok(),
        "/healthz: {healthz}"
    );
    assert!(
        issues.worst <= API_WITHIN && issues.all_ok(),
        "/api/v1/issues: {issues}"
    );
    let held = most_issues_shown.max(usize::try_from(stored).unwrap_or(0));
    assert!(
        held <= MAX_ISSUES_PER_TARGET,
        "the target held {held} issues, more than {MAX_ISSUES_PER_TARGET}"
    );
    assert_eq!(
        dropping.len(),
        1,
        "one event names what was dropped, not one per check: {dropping:?}"
    );
    assert!(
        dropping[0].contains("healer takes 64 from one answer")
            && dropping[0].contains(&format!(
                "the target holds all the {MAX_ISSUES_PER_TARGET} open issues it may"
            )),
        "{}",
        dropping[0]
    );
    assert!(
        stopped && took <= STOPS_WITHIN,
        "SIGTERM: stopped {stopped} after {took:?}"
    );
}

#[test]
fn ten_wrong_kind_replies_of_15_mib_leave_healers_memory_log_and_store_small() {
    hostile_answers_leave_healer_small("wrong_kind", false);
}

#[test]
fn ten_observations_with_summaries_of_4_mib_leave_healers_memory_log_and_store_small() {
    hostile_answers_leave_healer_small("big_summary", true);
}

/// Details that parse into 16 times their text (`[0,0,…]`): 2 MiB of them
/// in a check, 64 findings of 16 KiB each in a diagnosis, and twice as
/// many diagnoses as asked for: healer parses none of what it would not
/// read (a check diagnosed in its worker), refuses the check whose details
/// are mostly values (UNKNOWN), refuses the answer with too many diagnoses
/// and parses at most 64 KiB of the findings' details of one answer.
#[test]
fn ten_checks_whose_details_parse_sixteenfold_leave_healers_memory_small_diagnosed_in_the_worker() {
    hostile_answers_leave_healer_small("big_details", true);
}

#[test]
fn ten_checks_whose_details_parse_sixteenfold_leave_healers_memory_small_diagnosed_by_healer() {
    hostile_answers_leave_healer_small("big_details", false);
}

/// Runs a target on a worker in `mode` (10 hostile answers, then OK) until
/// healer has taken in the OK, and holds healer's RSS, log and store to
/// their bounds, and its RSS once settled to near what it was at start.
fn hostile_answers_leave_healer_small(mode: &str, diagnosed: bool) {
    let plugins = hostile_plugins(mode);
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(
        dir.path(),
        plugins.path(),
        // Escalated (no recoverer here), its next checks still come fast.
        &hostile_target("bloated", diagnosed, "escalated_interval = \"100ms\""),
    );
    let mut daemon = Daemon::start(&config);
    let watch = Watch::start(daemon.pid(), dir.path());
    let mut events = EventTail::new(&daemon.events);
    let started = Instant::now();
    let (mut at_start, mut hostile, mut calm) = (None, 0, false);
    while !calm && started.elapsed() < LIMIT {
        for event in events.new_events() {
            match event {
                Event::Started { .. } => at_start = Some(Sizes::of(daemon.pid(), dir.path())),
                Event::Checked { target, status, .. } if target == "bloated" => {
                    if status == Status::Ok {
                        calm = true;
                    } else {
                        hostile += 1;
                    }
                }
                _ => {}
            }
        }
        if !daemon.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let settled = calm.then(|| {
        // The store writes in batches: give it time to write the last.
        std::thread::sleep(healer_e2e::STORE_WRITES_WITHIN);
        Sizes::of(daemon.pid(), dir.path())
    });
    let (stopped, took) = stop_within(&mut daemon, Duration::from_secs(20));
    let peaks = watch.stop();
    let after = Sizes::of(daemon.pid(), dir.path());
    // The log and the store began with this daemon: all they hold is
    // growth (a few kB of it from start-up).
    let (log_growth, store_growth) = (peaks.log.max(after.log), peaks.store.max(after.store));
    println!(
        "{mode}: {hostile} hostile checks taken in, the calm one {}; {}\n  \
         at start: {}\n  {peaks}\n  settled: {}\n  after the stop: {after}\n  \
         growth: log {}, store {}; stopped by SIGTERM: {stopped} after {took:?}",
        if calm {
            "too"
        } else {
            "NOT (within the limit)"
        },
        match peaks.guarded {
            Some(at) => format!("KILLED at the guard: {at}"),
            None => "not killed at the guard".to_owned(),
        },
        at_start
            .as_ref()
            .map_or_else(|| "not seen".to_owned(), |sizes| sizes.to_string()),
        settled
            .as_ref()
            .map_or_else(|| "not seen".to_owned(), |sizes| sizes.to_string()),
        mb(log_growth),
        mb(store_growth),
    );

    if let Some(at) = peaks.guarded {
        panic!("healer was killed at the guard ({at}) after {hostile} hostile checks");
    }
    assert!(
        calm,
        "healer never took in the OK after the hostile answers ({hostile} taken in)"
    );
    assert!(
        peaks.rss > 0 && peaks.rss < RSS_AT_MOST,
        "healer's RSS peaked at {}",
        mb(peaks.rss)
    );
    // What it read and dropped goes back: a large answer is not kept by
    // a read buffer or an allocator's arena once it is dealt with.
    let (start, settled) = (
        at_start.expect("healer's start was seen"),
        settled.expect("taken in calm"),
    );
    assert!(
        settled.rss < start.rss + SETTLES_WITHIN,
        "healer's RSS stayed at {} once the answers were dealt with, from {} at start",
        mb(settled.rss),
        mb(start.rss)
    );
    assert!(
        log_growth < GROWTH_AT_MOST,
        "the log grew {}",
        mb(log_growth)
    );
    assert!(
        store_growth < GROWTH_AT_MOST,
        "the store grew {}",
        mb(store_growth)
    );
}

#[test]
fn a_diagnoser_naming_its_finding_anew_every_check_gets_at_most_max_attempts_recoveries_then_escalates(
) {
    let plugins = plugins_dir_with(&[FIXTURE, "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("recoveries");
    let body = format!(
        r#"
[[target]]
name = "rotating"
max_attempts = 3
stable_after = "1h"
monitor = {{ plugin = "hostile-worker" }}
[[target.diagnose]]
plugin = "rotating"
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "echo ran >> {}"]
"#,
        ran.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the first check",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "rotating"),
    );
    // Well within `stable_after`: every recovery counts against the budget.
    let watched = Duration::from_secs(6);
    std::thread::sleep(watched);
    let recoveries = std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .count();
    let records = daemon.records();
    let of_target = |wanted: fn(&Event) -> Option<&str>| {
        records
            .iter()
            .filter_map(|r| wanted(&r.event))
            .filter(|target| *target == "rotating")
            .count()
    };
    let attempts = of_target(|e| match e {
        Event::AttemptStarted { target, .. } => Some(target),
        _ => None,
    });
    let opened = of_target(|e| match e {
        Event::IssueOpened { target, .. } => Some(target),
        _ => None,
    });
    let escalated = of_target(|e| match e {
        Event::IssueEscalated { target, .. } => Some(target),
        _ => None,
    });
    println!(
        "a kind per check, max_attempts = 3, stable_after = 1h: {recoveries} recoveries run in {watched:?} \
         ({attempts} attempts, {opened} issues opened, {escalated} escalated)"
    );

    assert!(daemon.is_running());
    assert!(
        recoveries <= 3,
        "{recoveries} recoveries of one target within stable_after, max_attempts = 3"
    );
    assert!(
        escalated >= 1,
        "the target was never escalated after its 3 attempts"
    );
}

/// Sends SIGTERM and waits up to `limit` for healer to exit (then kills
/// it); whether it exited by itself, and how long it took.
fn stop_within(daemon: &mut Daemon, limit: Duration) -> (bool, Duration) {
    if !daemon.is_running() {
        return (false, Duration::ZERO);
    }
    healer_e2e::signal(daemon.pid(), "TERM");
    let sent = Instant::now();
    while sent.elapsed() < limit {
        if !daemon.is_running() {
            return (true, sent.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = sent.elapsed();
    daemon.kill();
    (false, took)
}

/// One bounded GET: its status (0 when there was no answer in time), its
/// body and how long it took.
struct Polled {
    status: u16,
    body: String,
    started: Instant,
    took: Duration,
}

/// Every request is cut off after this: a slower answer is a failure, and
/// the poll goes on.
const POLL_LIMIT: Duration = Duration::from_secs(1);

fn timed_get(port: u16, path: &str) -> Polled {
    let started = Instant::now();
    let fetched = (|| -> std::io::Result<Vec<u8>> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = std::net::TcpStream::connect_timeout(&address, POLL_LIMIT)?;
        stream.set_write_timeout(Some(POLL_LIMIT))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 64 << 10];
        loop {
            let left = POLL_LIMIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut chunk)? {
                0 => return Ok(response),
                n => response.extend_from_slice(&chunk[..n]),
            }
        }
    })();
    let took = started.elapsed();
    let Ok(response) = fetched else {
        return Polled {
            status: 0,
            body: String::new(),
            started,
            took,
        };
    };
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    Polled {
        status,
        body,
        started,
        took,
    }
}

/// What the polls of one path saw.
#[derive(Default)]
struct Polls {
    count: usize,
    /// The slowest, at most [`POLL_LIMIT`].
    worst: Duration,
    /// Polls not answered within [`POLL_LIMIT`].
    unanswered: usize,
    /// Polls answered other than 200.
    not_ok: Vec<u16>,
    slow: usize,
    /// Since when no poll has been answered.
    unanswered_since: Option<Instant>,
    /// The longest time without an answer: how long the API was gone.
    longest_unanswered: Duration,
}

impl Polls {
    fn add(&mut self, polled: Polled) {
        self.count += 1;
        self.worst = self.worst.max(polled.took);
        if polled.took > API_WITHIN {
            self.slow += 1;
        }
        match polled.status {
            0 => {
                self.unanswered += 1;
                self.unanswered_since.get_or_insert(polled.started);
            }
            status => {
                if status != 200 {
                    self.not_ok.push(status);
                }
                self.end_of_polling();
            }
        }
    }

    /// Counts a time without answers that lasts until now.
    fn end_of_polling(&mut self) {
        if let Some(since) = self.unanswered_since.take() {
            self.longest_unanswered = self.longest_unanswered.max(since.elapsed());
        }
    }

    fn all_ok(&self) -> bool {
        self.count > 0 && self.unanswered == 0 && self.not_ok.is_empty()
    }
}

impl std::fmt::Display for Polls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} polls, worst {:?} (each cut off at {POLL_LIMIT:?}), {} slower than {API_WITHIN:?}, \
             {} unanswered, answered but not 200: {:?}; longest without an answer {:?}",
            self.count,
            self.worst,
            self.slow,
            self.unanswered,
            self.not_ok,
            self.longest_unanswered
        )
    }
}

/// The events appended to an event log since the last look: read from
/// where the last look ended, so a log of many megabytes is read once.
struct EventTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl EventTail {
    fn new(path: &Path) -> EventTail {
        EventTail {
            path: path.to_owned(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn new_events(&mut self) -> Vec<Event> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        let Ok(read) = file.read_to_end(&mut fresh) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        complete
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
            .map(|record| record.event)
            .collect()
    }
}

/// The `findings_dropped` events of `target`: what healer did not keep.
fn events_naming_drops(event_log: &Path, target: &str) -> Vec<String> {
    let text = std::fs::read_to_string(event_log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == target && event["event"] == "findings_dropped")
        .map(|event| event.to_string())
        .collect()
}

/// healer's RSS and the sizes of its log, its store (database and WAL)
/// and its event log, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Sizes {
    rss: u64,
    log: u64,
    store: u64,
    event_log: u64,
}

impl Sizes {
    fn of(pid: u32, dir: &Path) -> Sizes {
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
        let db = store_file(dir);
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        Sizes {
            rss: rss(pid),
            log: size(&dir.join("healer.log")),
            store: size(&db) + size(Path::new(&wal)),
            event_log: size(&dir.join("events.jsonl")),
        }
    }

    fn peak(&mut self, now: Sizes) {
        self.rss = self.rss.max(now.rss);
        self.log = self.log.max(now.log);
        self.store = self.store.max(now.store);
        self.event_log = self.event_log.max(now.event_log);
    }
}

impl std::fmt::Display for Sizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {}, log {}, store {}, event log {}",
            mb(self.rss),
            mb(self.log),
            mb(self.store),
            mb(self.event_log)
        )
    }
}

/// Samples healer's [`Sizes`] every 10 ms on a thread of its own, keeping
/// the peaks, until stopped; kills healer (SIGKILL) the moment its RSS
/// passes [`RSS_GUARD`] or its log or store [`DISK_GUARD`].
struct Watch {
    pid: u32,
    dir: PathBuf,
    seen: Arc<Mutex<Peaks>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The peaks a [`Watch`] saw, and the sizes it killed healer at, if it did.
#[derive(Clone, Copy, Default)]
struct Peaks {
    peaks: Sizes,
    guarded: Option<Sizes>,
}

impl std::ops::Deref for Peaks {
    type Target = Sizes;
    fn deref(&self) -> &Sizes {
        &self.peaks
    }
}

impl std::fmt::Display for Peaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peaks: {}", self.peaks)
    }
}

impl Peaks {
    /// Counts `now`; whether healer is past a guard (the first time).
    fn add(&mut self, now: Sizes) -> bool {
        self.peaks.peak(now);
        let past = now.rss > RSS_GUARD || now.log > DISK_GUARD || now.store > DISK_GUARD;
        if past && self.guarded.is_none() {
            self.guarded = Some(now);
            return true;
        }
        false
    }
}

impl Watch {
    fn start(pid: u32, dir: &Path) -> Watch {
        let seen = Arc::new(Mutex::new(Peaks::default()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (seen, done, dir) = (Arc::clone(&seen), Arc::clone(&done), dir.to_owned());
            move || {
                while !done.load(Ordering::Relaxed) {
                    let now = Sizes::of(pid, &dir);
                    if seen.lock().unwrap().add(now) {
                        // The daemon is the test's child, reaped only
                        // by the test: its pid is still its own.
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Watch {
            pid,
            dir: dir.to_owned(),
            seen,
            done,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Peaks {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut seen = *self.seen.lock().unwrap();
        // Once more: the sizes healer left behind.
        seen.peaks.peak(Sizes::of(self.pid, &self.dir));
        seen
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
