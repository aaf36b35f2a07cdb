//! The store fails, healing does not: with the database made read-only
//! (immutable) or its disk full (a tiny tmpfs filled to the last byte),
//! healer says so in one event naming the file and the cause, keeps
//! restarting a killed process from memory, and once the database can be
//! written again catches up: the events of that time are in the store.
//!
//! Both need root (chattr +i, mount), as CI runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use healer_e2e::{
    fast_config, is_alive, plugins_dir_with, read_pid, signal, store_file, store_number,
    supervised_target, wait_until, Daemon, Event, STORE_WRITES_WITHIN,
};

const LIMIT: Duration = Duration::from_secs(30);

fn service_pid(dir: &Path) -> Option<u32> {
    read_pid(&dir.join("service.pid")).filter(|&pid| is_alive(pid))
}

/// Kills the service and waits until healer has started a new one and
/// seen it healthy.
fn kill_and_see_it_restarted(daemon: &mut Daemon, dir: &Path) {
    let resolved = |daemon: &Daemon| daemon.count(|e| matches!(e, Event::IssueResolved { .. }));
    let before = resolved(daemon);
    let old = wait_until("the service runs", LIMIT, || service_pid(dir));
    signal(old, "KILL");
    wait_until("healer restarts the service", LIMIT, || {
        service_pid(dir).filter(|&pid| pid != old)
    });
    wait_until("healer sees it healthy again", LIMIT, || {
        (resolved(daemon) > before).then_some(())
    });
    assert!(daemon.is_running());
}

fn resolutions_stored(dir: &Path) -> i64 {
    store_number(
        dir,
        "SELECT COUNT(*) FROM events WHERE event = 'issue_resolved' AND subject = 'service'",
    )
    .unwrap_or(-1)
}

/// Runs a command that must succeed.
fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed ({status})");
}

/// Every file of the database, to make immutable (and mutable again).
fn database_files(dir: &Path) -> Vec<PathBuf> {
    let file = store_file(dir);
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", file.display())))
        .filter(|path| path.exists())
        .collect()
}

struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Immutable {
        for file in &files {
            run("chattr", &["+i", file.to_str().unwrap()]);
        }
        Immutable(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = Command::new("chattr")
                .args(["-i", file.to_str().unwrap()])
                .status();
        }
    }
}

/// What both tests share: healer keeps a service alive; `break_it` makes
/// the database unwritable; the service is killed twice and healer
/// restarts it both times, from memory; `mend` makes the database
/// writable again and the store catches up: once healer is stopped, the
/// database holds all three starts. Returns the cause the one
/// `store_degraded` event gave.
fn heals_through_a_store_outage(
    dir: &Path,
    break_it: impl FnOnce(),
    mend: impl FnOnce(),
) -> String {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let config = fast_config(dir, plugins.path(), &supervised_target(dir, 120));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("the first start", LIMIT, |e| {
        matches!(e, Event::IssueResolved { .. })
    });
    std::thread::sleep(STORE_WRITES_WITHIN);

    break_it();
    kill_and_see_it_restarted(&mut daemon, dir);
    let degraded = daemon.wait_for("the store says it cannot write", LIMIT, |e| {
        matches!(e, Event::StoreDegraded { .. })
    });
    kill_and_see_it_restarted(&mut daemon, dir);

    mend();
    let recovered = daemon.wait_for("the store writes again", LIMIT, |e| {
        matches!(e, Event::StoreRecovered { .. })
    });
    assert_eq!(
        daemon.count(|e| matches!(e, Event::StoreDegraded { .. })),
        1,
        "one event, not one per retry"
    );
    assert!(daemon.is_running());
    assert!(daemon.stop(), "healer stops cleanly");

    assert_eq!(resolutions_stored(dir), 3, "the missed events are stored");
    let Event::StoreRecovered { written, .. } = recovered else {
        unreachable!()
    };
    assert!(written > 0, "it caught up: {written}");
    let Event::StoreDegraded { file, error } = degraded else {
        unreachable!()
    };
    assert_eq!(file, store_file(dir));
    error
}

#[test]
fn a_read_only_database_costs_one_event_and_the_store_catches_up() {
    // In the build directory, on a file system that has `chattr +i`.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let immutable = std::cell::RefCell::new(None);

    let error = heals_through_a_store_outage(
        dir.path(),
        || *immutable.borrow_mut() = Some(Immutable::set(database_files(dir.path()))),
        || drop(immutable.borrow_mut().take()),
    );

    assert!(
        error.contains("cannot be written: Operation not permitted"),
        "the cause: {error}"
    );
}

/// A tmpfs of `size` mounted at `at`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                at.to_str().unwrap(),
            ],
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", self.0.to_str().unwrap()])
            .status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte).is_ok() {
        byte[0] = 0;
    }
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_costs_one_event_and_the_store_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(&dir.path().join("state"), "4m");
    let filler = dir.path().join("state").join("filler");

    let error = heals_through_a_store_outage(
        dir.path(),
        || fill(&filler),
        || std::fs::remove_file(&filler).unwrap(),
    );

    assert!(
        error.contains("full"),
        "the cause names the full disk: {error}"
    );
}

#[test]
fn a_corrupt_database_is_moved_aside_and_healing_starts_on_a_new_one() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        store_file(dir.path()),
        "this is not a database\n".repeat(512),
    )
    .unwrap();
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &supervised_target(dir.path(), 120),
    );

    let mut daemon = Daemon::start(&config);
    let moved = daemon.wait_for("the corrupt file moved aside", LIMIT, |e| {
        matches!(e, Event::StoreMovedAside { .. })
    });
    daemon.wait_for("the first start", LIMIT, |e| {
        matches!(e, Event::IssueResolved { .. })
    });
    assert!(daemon.stop());
    assert_eq!(
        resolutions_stored(dir.path()),
        1,
        "the new database holds the first start"
    );

    let Event::StoreMovedAside {
        file,
        moved_to,
        error,
    } = moved
    else {
        unreachable!()
    };
    assert_eq!(file, store_file(dir.path()));
    assert!(error.contains("not a database"), "{error}");
    assert!(
        std::fs::read_to_string(&moved_to).unwrap() == "this is not a database\n".repeat(512),
        "kept as it was, at {}",
        moved_to.display()
    );
}

#[test]
fn a_database_that_cannot_be_written_at_start_is_still_read() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let body = healer_e2e::hopeless_target(dir.path(), "1s", r#"["true"]"#);
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "attempt 2 finished",
        LIMIT,
        |e| matches!(e, Event::AttemptFinished { issue, .. } if issue.attempts == 2),
    );
    assert!(daemon.stop());

    // The database and its directory: not even a new write-ahead log can
    // be created.
    let mut files = database_files(dir.path());
    files.push(dir.path().join("state"));
    let _immutable = Immutable::set(files);
    let mut daemon = Daemon::start(&config);
    let next = wait_until("the next attempt after the restart", LIMIT, || {
        healer_e2e::after_start(&daemon.records(), 2)
            .into_iter()
            .find_map(|e| match e {
                Event::AttemptStarted { issue, .. } => Some(issue.attempts),
                _ => None,
            })
    });

    assert_eq!(next, 3, "carried on from the read-only database");
    // Said at start, before the `started` event (the first run had none).
    let said = match daemon.wait_for("the store says it cannot write", LIMIT, |e| {
        matches!(e, Event::StoreDegraded { .. })
    }) {
        Event::StoreDegraded { error, .. } => error,
        _ => unreachable!(),
    };
    assert!(
        said.contains("cannot be written: Operation not permitted")
            && said.contains("the saved state was read"),
        "{said}"
    );
    assert!(daemon.is_running());
}

#[test]
fn a_second_healer_on_the_same_state_dir_is_refused() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &supervised_target(dir.path(), 120),
    );
    let mut first = Daemon::start(&config);
    first.wait_for("the first healer runs", LIMIT, |e| {
        matches!(e, Event::Started { .. })
    });

    let second = healer_e2e::run_healer(&["run", "--config", config.to_str().unwrap()], LIMIT);

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by another healer (pid {})", first.pid())),
        "{stderr}"
    );
    assert!(first.is_running());
}
