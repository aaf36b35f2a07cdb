//! What healer runs, and what it sends, is clean: a command sees none of
//! healer's secrets, leaves no process behind when it times out, cannot
//! grow healer's memory by printing; a pidfile healer may not read is
//! UNKNOWN and never recovered; a webhook follows no redirect and its
//! signature cannot be replayed.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, plugins_dir_with, post_json, rss, wait_for_port, wait_until, Answer,
    Daemon, Event, Receiver,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(30);

/// The system PATH every command gets (docs/CONFIG.md).
const FIXED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A target whose process never runs and whose recovery is `argv`.
fn never_running(dir: &Path, argv: &str, extra: &str) -> String {
    format!(
        "\n[[target]]\nname = \"svc\"\nmax_attempts = 1\nmonitor = {{ plugin = \"process\", pidfile = \"{}/never.pid\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = {argv}\n{extra}\n",
        dir.display()
    )
}

fn attempt_finished(daemon: &mut Daemon) -> Event {
    daemon.wait_for("the recovery attempt ends", LIMIT, |e| {
        matches!(e, Event::AttemptFinished { .. })
    })
}

#[test]
fn a_command_sees_none_of_healers_secrets() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-command",
        "healer-plugin-webhook",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env.txt");
    let n8n = Receiver::start(Answer::Status(200));
    let port = free_port();
    let body = format!(
        "{}\n[intake]\nbind = \"127.0.0.1:{port}\"\ntoken_env = \"HEALER_TEST_TOKEN\"\n\n[workflow.notify]\nsteps = [{{ plugin = \"webhook\", url = \"{}\", hmac_secret_env = \"HOOK_SECRET\" }}]\n\n{WEBHOOK_GETS_ITS_SECRET}",
        never_running(
            dir.path(),
            &format!(r#"["sh", "-c", "env > {}"]"#, seen.display()),
            ""
        ),
        n8n.url("/hook")
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start_under(
        &config,
        &[
            "env",
            "HEALER_TEST_TOKEN=tok-s3cret-1-long-enough",
            "HOOK_SECRET=hmac-s3cret-2",
            "SOME_OTHER=inherited-3",
        ],
    );
    wait_for_port(port, LIMIT);
    attempt_finished(&mut daemon);

    let env = std::fs::read_to_string(&seen).unwrap();
    for secret in ["tok-s3cret-1-long-enough", "hmac-s3cret-2", "inherited-3"] {
        assert!(!env.contains(secret), "{secret} reached the child:\n{env}");
    }
    assert!(
        env.lines().any(|l| l == format!("PATH={FIXED_PATH}")),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "HEALER_TARGET=svc"), "{env}");
    assert!(
        env.lines().any(|l| l.starts_with("HEALER_DETAILS_FILE=")),
        "{env}"
    );
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
                .unwrap_or(false)
        })
        .filter(|&pid| healer_e2e::is_alive(pid))
        .collect()
}

#[test]
fn a_command_that_times_out_leaves_no_process_behind() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let marker = "1000.25";
    let body = never_running(
        dir.path(),
        &format!(r#"["sh", "-c", "sleep {marker} & sleep {marker}"]"#),
        "timeout = \"500ms\"",
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    // sh and its two sleeps (dash keeps its shell; both carry the marker).
    wait_until("the command runs", LIMIT, || {
        (processes_with(marker).len() >= 2).then_some(())
    });
    attempt_finished(&mut daemon);

    wait_until(
        "the whole process group is gone",
        Duration::from_secs(5),
        || processes_with(marker).is_empty().then_some(()),
    );
    let failed = daemon.wait_for("the recoverer's verdict", LIMIT, |e| {
        matches!(e, Event::RecovererFinished { .. })
    });
    let Event::RecovererFinished { result, .. } = failed else {
        unreachable!()
    };
    assert!(!result.succeeded(), "{result:?}");
}

#[test]
fn a_command_printing_100_mb_does_not_grow_healers_memory() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let body = never_running(
        dir.path(),
        // Waits a second (healer's memory is measured meanwhile), then
        // 100 MB on stderr, the stream healer reads for error messages.
        r#"["sh", "-c", "sleep 1; head -c 100000000 /dev/zero | tr '\\000' x >&2; echo >&2; echo done >&2; exit 3"]"#,
        "timeout = \"60s\"",
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    daemon.wait_for("healer runs", LIMIT, |e| matches!(e, Event::Started { .. }));
    let before = rss(daemon.pid());
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak), Arc::clone(&done), daemon.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let finished = daemon.wait_for("the recoverer's verdict", Duration::from_secs(60), |e| {
        matches!(e, Event::RecovererFinished { .. })
    });
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "healer RSS before {} KiB, peak +{} KiB",
        before >> 10,
        grown >> 10
    );
    assert!(grown < 10 * 1024 * 1024, "RSS grew by {} KiB", grown >> 10);
    let Event::RecovererFinished { result, .. } = finished else {
        unreachable!()
    };
    let error = result.error().unwrap_or_default();
    assert!(
        error.contains("done"),
        "the last stderr line is kept: {error}"
    );
}

#[test]
fn a_pidfile_healer_may_not_read_is_unknown_and_never_recovered() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let mut service = Command::new("sleep").arg("600").spawn().unwrap();
    let pidfile = dir.path().join("service.pid");
    let recovered = dir.path().join("recovered");
    std::fs::write(&pidfile, service.id().to_string()).unwrap();
    let body = format!(
        "\n[[target]]\nname = \"svc\"\nmonitor = {{ plugin = \"process\", pidfile = \"{}\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = [\"touch\", \"{}\"]\n",
        pidfile.display(),
        recovered.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    // healer runs as `nobody`, who may not read a mode 000 pidfile.
    let chmod = |path: &Path, mode: &str| {
        assert!(Command::new("chmod")
            .arg(mode)
            .arg(path)
            .status()
            .unwrap()
            .success());
    };
    chmod(dir.path(), "0777");
    chmod(plugins.path(), "0755");
    chmod(&config, "0644");
    chmod(&pidfile, "000");
    let mut daemon = Daemon::start_under(
        &config,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
    );

    let unknown = daemon.wait_for("the check says it cannot tell", LIMIT, |e| {
        matches!(
            e,
            Event::Checked {
                status: Status::Unknown,
                ..
            }
        )
    });
    daemon.wait_for("nothing may act on it", LIMIT, |e| {
        matches!(e, Event::RecoveryWithheld { .. })
    });
    std::thread::sleep(Duration::from_secs(1)); // ten more checks

    let Event::Checked { summary, .. } = unknown else {
        unreachable!()
    };
    assert!(summary.contains("Permission denied"), "{summary}");
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { .. })),
        0,
        "no recovery on UNKNOWN"
    );
    assert!(!recovered.exists(), "the recoverer never ran");
    assert!(
        !daemon
            .records()
            .iter()
            .any(|r| matches!(&r.event, Event::IssueOpened { issue, .. } if issue.kind != "process.unknown")),
        "no finding but UNKNOWN"
    );
    let _ = service.kill();
    let _ = service.wait();
}

/// The webhook's worker is handed `HOOK_SECRET` (its `hmac_secret_env`);
/// no other worker, and no command, sees it.
const WEBHOOK_GETS_ITS_SECRET: &str =
    "[plugins.package.\"libhealer_plugin_webhook.so\"]\nenv = [\"HOOK_SECRET\"]\n";

fn webhook_workflow(dir: &Path, url: &str, extra: &str) -> (Daemon, u16, tempfile::TempDir) {
    let plugins = plugins_dir_with(&["healer-plugin-webhook"]);
    let port = free_port();
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\n[[reflex]]\nmatch = \"x.*\"\nworkflow = \"hook\"\n\
         [workflow.hook]\nsteps = [{{ plugin = \"webhook\", url = \"{url}\", retries = 0{extra} }}]\n\n\
         {WEBHOOK_GETS_ITS_SECRET}"
    );
    let config = fast_config(dir, plugins.path(), &body);
    let daemon = Daemon::start_under(&config, &["env", "HOOK_SECRET=hmac-s3cret"]);
    wait_for_port(port, LIMIT);
    (daemon, port, plugins)
}

#[test]
fn a_webhook_redirect_is_a_failure_and_nothing_reaches_the_second_server() {
    let dir = tempfile::tempdir().unwrap();
    let second = Receiver::start(Answer::Status(200));
    let first = Receiver::start(Answer::RedirectTo(second.port));
    let (mut daemon, port, _plugins) = webhook_workflow(dir.path(), &first.url("/hook"), "");

    let (_, answer) = post_json(port, "/anomaly", r#"{"name": "x.y"}"#);
    let finished = daemon.wait_for("the workflow ends", LIMIT, |e| {
        matches!(e, Event::WorkflowFinished { .. })
    });
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(answer["status"], "started", "{answer}");
    let Event::WorkflowFinished {
        succeeded, error, ..
    } = finished
    else {
        unreachable!()
    };
    let error = error.unwrap_or_default();
    assert!(!succeeded);
    assert!(
        error.contains("302") && error.contains(&format!("127.0.0.1:{}/elsewhere", second.port)),
        "the failure names the Location: {error}"
    );
    assert_eq!(first.requests().len(), 1);
    assert!(
        second.requests().is_empty(),
        "the redirect was not followed"
    );
}

/// The verification rule of plugins/webhook/README.md: the signature is
/// HMAC-SHA256 over "<timestamp>.<body>", and the timestamp must be within
/// five minutes of the receiver's clock.
fn verify(secret: &str, head: &str, body: &str, now_unix: u64) -> Result<(), String> {
    use hmac::{KeyInit, Mac};
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .ok_or_else(|| format!("no {name} header"))
    };
    let timestamp = header("X-Healer-Timestamp")?;
    let signature = header("X-Healer-Signature")?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if expected != signature {
        return Err(format!("bad signature {signature}"));
    }
    let sent: u64 = timestamp.parse().map_err(|_| "bad timestamp".to_owned())?;
    if now_unix.abs_diff(sent) > 300 {
        return Err(format!("stale: sent at {sent}, now {now_unix}"));
    }
    Ok(())
}

#[test]
fn a_signed_webhook_request_replayed_ten_minutes_later_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let n8n = Receiver::start(Answer::Status(200));
    let (_daemon, port, _plugins) = webhook_workflow(
        dir.path(),
        &n8n.url("/hook"),
        ", hmac_secret_env = \"HOOK_SECRET\"",
    );

    let (_, answer) = post_json(port, "/anomaly", r#"{"name": "x.y"}"#);
    wait_until("the webhook arrives", LIMIT, || {
        (n8n.requests().len() == 1).then_some(())
    });

    assert_eq!(answer["status"], "started", "{answer}");
    let (head, body) = n8n.requests().remove(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(verify("hmac-s3cret", &head, &body, now), Ok(()), "{head}");
    assert!(
        verify("hmac-s3cret", &head, &body, now + 600).is_err(),
        "a replay 10 minutes later must fail"
    );
    assert!(verify("wrong", &head, &body, now).is_err());
}
