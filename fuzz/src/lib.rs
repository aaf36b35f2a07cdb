//! What healer's fuzz targets share: the intake they report to (built from
//! a config as the daemon builds it), the events it records, and the
//! checks every target makes of what healer would show a person.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use healer::config::Config;
use healer::events::{Events, Record, Subscriber};
use healer::intake::{Intake, Saved};
use healer::plugins::Catalog;

/// The intake's config: the seed's reflex map and the sample config's
/// reflex, besides globs of every shape. `actions = false` (the kill
/// switch): a report that would act is recorded as `would_run`, through
/// the same storm control and Alertmanager dedup, without a workflow run.
const INTAKE_CONFIG: &str = r#"
[intake]
reflex_map = "reflex_map.yml"
actions = false
cooldown = "60s"
max_attempts = 3
max_runs_per_minute = 60

[[reflex]]
match = "disk.*.full"
workflow = "record_action"
params = { note = "see `healer explain disk.root.full`" }

[[reflex]]
match = "svc.{web,db}.[0-9]*"
workflow = "record_action"
max_runs_per_minute = 1

[[reflex]]
match = "HighErrorRate"
workflow = "record_action"

[[reflex]]
match = "Disk?ull"
workflow = "record_action"

[workflow.record_action]
steps = [{ plugin = "command", argv = ["true"] }]

[workflow.run_coinbase_health_check_and_clear_cache]
steps = [{ plugin = "command", argv = ["true"] }]
"#;

/// The seed's reflex map (`config/reflex_map.yml`).
pub const SEED_REFLEX_MAP: &str = include_str!("../../config/reflex_map.yml");

/// A directory of this process's own for config files and reflex maps.
/// libFuzzer ends a run with `exit`, so nothing removes it then: those of
/// runs that ended are removed here, when the next one starts.
pub fn scratch() -> &'static Path {
    const PREFIX: &str = "healer-fuzz-";
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let temp = std::env::temp_dir();
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = temp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

/// Events as the store keeps them, collected for the target to check.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<Record>>>);

impl Subscriber for Recorded {
    fn deliver(&mut self, record: &Record) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record.clone());
    }
}

impl Recorded {
    /// Every event emitted so far (delivered first), each checked to read
    /// back from the JSON line the store and the event log write, as the
    /// same line.
    pub fn take(&self, events: &Events) -> Vec<Record> {
        assert!(events.sync(Duration::from_secs(10)), "events not delivered");
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for record in &taken {
            let line = serde_json::to_string(record).expect("an event encodes");
            let back: Record = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("{line} does not read back: {err}"));
            // The line, not the value: what is never kept (a workflow
            // running now) is not in it.
            let again = serde_json::to_string(&back).expect("an event encodes");
            assert_eq!(again, line, "an event changed on its way through JSON");
        }
        taken
    }
}

/// The intake config, parsed once as `healer check` parses it. The
/// workflows lose their steps: no plugin runs in a fuzz target, and with
/// none the intake needs no recoverer from a plugin package.
fn intake_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir = scratch();
        std::fs::write(dir.join("reflex_map.yml"), SEED_REFLEX_MAP).expect("the seed's map");
        let mut config = Config::parse(&dir.join("intake.toml"), INTAKE_CONFIG.to_owned())
            .unwrap_or_else(|errors| panic!("the intake config: {errors}"));
        for workflow in config.workflows.values_mut() {
            workflow.steps.clear();
        }
        config
    })
}

/// A fresh intake (no state from an earlier input: a crash replays), and
/// the events it records.
pub fn intake() -> (Arc<Intake>, Events, Recorded) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static STREAM: OnceLock<(Events, Recorded)> = OnceLock::new();
    let (events, recorded) = STREAM.get_or_init(|| {
        let recorded = Recorded::default();
        let (events, inbox) = Events::channel(false);
        inbox.start(vec![Box::new(recorded.clone())]);
        (events, recorded)
    });
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    });
    let built = runtime.block_on(Intake::build(
        intake_config(),
        &Catalog::default(),
        events.clone(),
        Saved::default(),
        None,
    ));
    let intake = built.unwrap_or_else(|errors| panic!("the intake: {}", errors.join("; ")));
    // Nothing left over from an input before.
    recorded.take(events);
    (intake, events.clone(), recorded.clone())
}

/// `text`, shown to a person (an HTTP error, a `healer check` line), is
/// one line.
pub fn assert_one_line(text: &str, what: &str) {
    assert!(
        !text.contains(['\n', '\r']),
        "{what} is not one line: {text:?}"
    );
}
