//! The commands that talk to the running daemon through its API, at the
//! config's `[intake] bind` with its token: `healer status`, `history`,
//! `reset`, `pause`, `resume` and `reload`. Each prints a table or a
//! sentence for people, or with `--json` the API's own answer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use healer_plugin_sdk::Status;
use serde_json::Value;

use crate::api::Reloaded;
use crate::api::{Done, TargetRow};
use crate::config::Config;
use crate::history::Page;
use crate::issues::Answer;
use crate::one_line::OneLine;

/// The exit code of `healer status` when the daemon cannot be asked.
pub const UNREACHABLE: u8 = 4;

/// How a command reaches the daemon.
pub struct Daemon {
    address: SocketAddr,
    token: Option<String>,
}

impl Daemon {
    /// The daemon `config` describes: its listener and token (only the
    /// `[intake]` table is read).
    pub fn of(config: &std::path::Path) -> Result<Daemon, String> {
        let listener = Config::listener_only(config).map_err(|errors| errors.to_string())?;
        let Some((intake, token)) = listener else {
            return Err(format!(
                "{}: there is no [intake] table, so healer serves no API to ask (add `[intake]`, bind = \"127.0.0.1:8000\" by default)",
                config.display()
            ));
        };
        Ok(Daemon {
            address: intake.bind,
            token,
        })
    }

    /// One request; the answer's JSON when it is a success, else the
    /// error it names.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, String> {
        let timeout = Duration::from_secs(if path.ends_with("/reload") { 90 } else { 15 });
        let (status, text) = crate::intake::client::request(
            self.address,
            method,
            path,
            body,
            self.token.as_deref(),
            timeout,
        )?;
        let json: Value = serde_json::from_str(&text).map_err(|_| {
            format!(
                "healer at {} answered {status}: {}",
                self.address,
                text.trim()
            )
        })?;
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            let error = json["error"].as_str().unwrap_or(text.trim()).to_owned();
            let problems: Vec<String> = json["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(|p| format!("\n  {p}")))
                .collect();
            Err(format!("{error}{} (HTTP {status})", problems.concat()))
        }
    }
}

/// Says what went wrong on stderr; exit code 1.
pub(crate) fn fail(message: &str) -> ExitCode {
    eprintln!("healer: {message}");
    ExitCode::FAILURE
}

fn print_json(value: &Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `healer status`: every target, like `monit summary`; exits with the
/// worst target's status (0 OK, 1 WARNING, 3 UNKNOWN or not checked yet,
/// 2 CRITICAL, worst last), or 4 when the daemon cannot be asked.
pub fn status(daemon: &Daemon, json: bool) -> ExitCode {
    let (answer, rows): (_, Vec<TargetRow>) = match read_both(daemon, "/api/v1/targets") {
        Ok(read) => read,
        Err(code) => return code,
    };
    if json {
        print_json(&answer);
    } else {
        say!("{}", status_table(&rows));
        if let Some(line) = behind_line(daemon) {
            say!("{line}");
        }
        let fleet = daemon.call("GET", "/api/v1/fleet", None).ok();
        if let Some(view) = fleet.and_then(|v| serde_json::from_value(v).ok()) {
            say!("{}", fleet_line(&view));
        }
    }
    // The worst target's code: CRITICAL outranks UNKNOWN (not checked yet).
    let worst = rows
        .iter()
        .map(|row| row.view.status.unwrap_or(Status::Unknown))
        .max_by_key(|status| crate::board::rank(*status))
        .unwrap_or(Status::Ok);
    ExitCode::from(worst as u8)
}

/// `healer fleet`: the fleet as the daemon sees it. Exits 0 while the
/// member is in touch with etcd, 3 (UNKNOWN) when it is not (it acts on
/// no fleet target), 4 when the daemon cannot be asked or is in no fleet.
pub fn fleet(daemon: &Daemon, json: bool) -> ExitCode {
    let (answer, view): (_, crate::fleet::View) = match read_both(daemon, "/api/v1/fleet") {
        Ok(read) => read,
        Err(code) => return code,
    };
    if json {
        print_json(&answer);
    } else {
        say!("{}", fleet_line(&view));
        if !view.etcd.is_empty() {
            say!("  etcd {}", view.etcd);
        }
        for shard in &view.shards {
            say!(
                "  shard {:>4}  epoch {:>8}  owned {:>8}  {}",
                shard.shard,
                shard.epoch,
                short(Duration::from_millis(shard.owned_for_ms)),
                shard.targets.join(", ")
            );
        }
    }
    ExitCode::from(if view.coordinated { 0 } else { 3 })
}

/// `GET path` of the daemon, as JSON and as `T` (whose exit code needs
/// it, with `--json` too); an error is said on stderr and is the exit
/// code for a daemon that cannot be asked.
fn read_both<T: serde::de::DeserializeOwned>(
    daemon: &Daemon,
    path: &str,
) -> Result<(serde_json::Value, T), ExitCode> {
    let answer = daemon.call("GET", path, None).map_err(|err| {
        eprintln!("healer: {err}");
        ExitCode::from(UNREACHABLE)
    })?;
    let read = serde_json::from_value(answer.clone()).map_err(|err| {
        eprintln!("healer: unexpected answer from {path}: {err}");
        ExitCode::from(UNREACHABLE)
    })?;
    Ok((answer, read))
}

/// The fleet in one line, as `healer status` and `healer fleet` say it.
fn fleet_line(view: &crate::fleet::View) -> String {
    let targets: usize = view.shards.iter().map(|s| s.targets.len()).sum();
    let members = view.members.join(", ");
    match &view.trouble {
        None if view.coordinated => format!(
            "fleet: member {} of {} ({members}); owns {} of {} shards ({targets} targets); lease {} left",
            view.member,
            view.members.len(),
            view.shards.len(),
            view.shards_needed,
            short(Duration::from_millis(view.lease_left_ms))
        ),
        trouble => format!(
            "fleet: member {} is OUT OF TOUCH with etcd and acts on no fleet target: {}",
            view.member,
            crate::one_line::OneLine(trouble.as_deref().unwrap_or("not joined yet"))
        ),
    }
}

/// A line saying healer is behind its checks' schedules, while it is.
fn behind_line(daemon: &Daemon) -> Option<String> {
    let answer = daemon.call("GET", "/healthz", None).ok()?;
    let health: crate::api::Health = serde_json::from_value(answer).ok()?;
    let window = health.behind?;
    Some(format!(
        "healer is BEHIND: {} of {} checks in the last {} began late (the latest by {} ms); every target waits its turn",
        window.late,
        window.checks,
        humantime::format_duration(crate::board::LATE_WINDOW),
        window.latest_ms
    ))
}

fn status_table(rows: &[TargetRow]) -> String {
    // A target of several checks shows each below it, indented.
    let mut lines: Vec<[String; 5]> = Vec::new();
    for row in rows {
        let view = &row.view;
        let checked = row.age_ms.map_or("never".to_owned(), |ms| {
            format!("{} ago", short(Duration::from_millis(ms)))
        });
        let mut issues: Vec<String> = view
            .issues
            .iter()
            .map(|issue| {
                let held = view.held.iter().find(|held| held.kind == issue.kind);
                let attempts = match issue.attempts {
                    1 => "1 attempt".to_owned(),
                    n => format!("{n} attempts"),
                };
                let proposed = issue.proposal.as_ref().filter(|p| !p.approved).map(|p| {
                    format!(
                        "; PROPOSED {}: `healer approve {}/{}` before {}",
                        p.recoverer, view.name, issue.kind, p.expires_at
                    )
                });
                let proposed = proposed.unwrap_or_default();
                match held {
                    Some(held) => format!(
                        "{} {} ({attempts}; {}{proposed})",
                        issue.kind,
                        issue.state.as_str(),
                        held.describe()
                    ),
                    None => format!(
                        "{} {} ({attempts}{proposed})",
                        issue.kind,
                        issue.state.as_str()
                    ),
                }
            })
            .collect();
        if let Some(pause) = &view.paused {
            issues.push(format!("PAUSED until {}", pause.until));
        }
        let issues = if issues.is_empty() {
            "-".to_owned()
        } else {
            issues.join(", ")
        };
        // A plugin's summary (and kinds) can hold a newline or a
        // terminal's escape: shown escaped, one row per target.
        lines.push([
            view.name.clone(),
            view.status.map_or("-", Status::as_str).to_owned(),
            checked,
            OneLine(&issues).to_string(),
            OneLine(&view.summary).to_string(),
        ]);
        if view.checks.len() > 1 {
            for check in &view.checks {
                lines.push([
                    format!("  {}", check.name),
                    check.status.map_or("-", Status::as_str).to_owned(),
                    String::new(),
                    String::new(),
                    OneLine(&check.summary).to_string(),
                ]);
            }
        }
    }
    let width = |column: usize, header: &str| {
        lines
            .iter()
            .map(|line| line[column].chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let (name, status, checked, issues) = (
        width(0, "TARGET"),
        width(1, "STATUS"),
        width(2, "CHECKED"),
        width(3, "ISSUES"),
    );
    let mut out = format!(
        "{:name$}  {:status$}  {:>checked$}  {:issues$}  SUMMARY",
        "TARGET", "STATUS", "CHECKED", "ISSUES"
    );
    for [n, s, c, i, summary] in &lines {
        let _ = write!(
            out,
            "\n{n:name$}  {s:status$}  {c:>checked$}  {i:issues$}  {summary}"
        );
    }
    out
}

fn short(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=119_999 => format!("{:.1}s", duration.as_secs_f64()),
        _ => format!("{}m", duration.as_secs() / 60),
    }
}

/// A read of the API at `path`: its answer as `T`; or, with `json`, the
/// answer printed as it came (`None`); or the exit code of a failure,
/// said on stderr.
fn read<T: serde::de::DeserializeOwned>(
    daemon: &Daemon,
    path: &str,
    json: bool,
) -> Result<Option<T>, ExitCode> {
    let answer = daemon.call("GET", path, None).map_err(|err| fail(&err))?;
    if json {
        print_json(&answer);
        return Ok(None);
    }
    let endpoint = path.split('?').next().unwrap_or(path);
    serde_json::from_value(answer)
        .map(Some)
        .map_err(|err| fail(&format!("unexpected answer from {endpoint}: {err}")))
}

/// `healer facts [TARGET]`: what healer knows now, one fact a line (name,
/// value, writer, age, expiry), or the API's JSON.
pub fn facts(daemon: &Daemon, target: Option<&str>, json: bool) -> ExitCode {
    let path = match target {
        Some(target) => format!("/api/v1/facts?target={}", encode(target)),
        None => "/api/v1/facts".to_owned(),
    };
    let facts: Vec<crate::facts::Fact> = match read(daemon, &path, json) {
        Ok(Some(facts)) => facts,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    let now = crate::clock::Wall::now();
    for fact in &facts {
        let expires = fact.expires_at.map_or_else(
            || "-".to_owned(),
            |at| format!("in {}s", at.since(now).as_secs()),
        );
        say!(
            "{}  {}  from {}  {}s old  expires {}{}",
            OneLine(&fact.name()),
            OneLine(&fact.value.to_string()),
            OneLine(&fact.source.to_string()),
            now.since(fact.observed_at).as_secs(),
            expires,
            if fact.previous_run {
                "  (previous run)"
            } else {
                ""
            }
        );
    }
    if facts.is_empty() {
        say!("(no facts)");
    }
    ExitCode::SUCCESS
}

/// `healer history`: recent events, newest first.
pub fn history(
    daemon: &Daemon,
    target: Option<&str>,
    kind: Option<&str>,
    since: Option<&str>,
    limit: usize,
    json: bool,
) -> ExitCode {
    let mut query = vec![format!("limit={limit}")];
    for (key, value) in [("target", target), ("kind", kind), ("since", since)] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    let path = format!("/api/v1/history?{}", query.join("&"));
    let page: Page = match read(daemon, &path, json) {
        Ok(Some(page)) => page,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    for numbered in &page.events {
        let record = &numbered.record;
        say!(
            "{}  {:24} {:16} {}",
            record.at,
            record.event.name(),
            OneLine(record.event.subject().unwrap_or("-")).to_string(),
            OneLine(&crate::history::fields(&record.event))
        );
    }
    if page.events.is_empty() {
        say!("(no events)");
    }
    ExitCode::SUCCESS
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn done(answer: Result<Value, String>, json: bool) -> ExitCode {
    match answer {
        Ok(answer) if json => {
            print_json(&answer);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            match serde_json::from_value::<Done>(answer) {
                Ok(done) => say!("{}", done.message),
                Err(err) => return fail(&format!("unexpected answer: {err}")),
            }
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

/// `healer fact set NAME VALUE --for 1h`: an operator's note.
pub fn set_note(daemon: &Daemon, name: &str, value: &str, duration: &str, json: bool) -> ExitCode {
    let value = crate::facts::typed_value(value);
    let body = serde_json::json!({"name": name, "value": value, "for": duration}).to_string();
    match daemon.call("POST", "/api/v1/facts", Some(&body)) {
        Ok(answer) if json => {
            print_json(&answer);
            ExitCode::SUCCESS
        }
        Ok(answer) => match serde_json::from_value::<crate::facts::Fact>(answer) {
            Ok(fact) => {
                let until = fact
                    .expires_at
                    .map_or_else(String::new, |at| format!(" until {at}"));
                say!(
                    "{} = {} (operator){until}",
                    OneLine(&fact.name()),
                    OneLine(&fact.value.to_string())
                );
                ExitCode::SUCCESS
            }
            Err(err) => fail(&format!("unexpected answer from /api/v1/facts: {err}")),
        },
        Err(err) => fail(&format!("the note was not set: {err}")),
    }
}

/// `healer fact unset NAME`: takes back an operator's note.
pub fn unset_note(daemon: &Daemon, name: &str, json: bool) -> ExitCode {
    let body = serde_json::json!({ "name": name }).to_string();
    done(
        daemon.call("POST", "/api/v1/facts/unset", Some(&body)),
        json,
    )
}

/// `healer reset TARGET/KIND` (or `TARGET`: every escalated issue).
pub fn reset(daemon: &Daemon, issue: &str, json: bool) -> ExitCode {
    let id: Vec<String> = issue.trim_matches('/').split('/').map(encode).collect();
    let path = format!("/api/v1/issues/{}/reset", id.join("/"));
    done(daemon.call("POST", &path, Some("{}")), json)
}

/// `healer reset --plugin FILE`: the package's quarantine lifted.
pub fn reset_plugin(daemon: &Daemon, file: &str, json: bool) -> ExitCode {
    let name = std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    let path = format!("/api/v1/plugins/{}/reset", encode(&name));
    done(daemon.call("POST", &path, Some("{}")), json)
}

/// `healer approve TARGET/KIND` and `healer reject TARGET/KIND`.
pub fn answer(daemon: &Daemon, issue: &str, answer: Answer, json: bool) -> ExitCode {
    let verb = match answer {
        Answer::Approve => "approve",
        Answer::Reject => "reject",
    };
    let Some((target, kind)) = issue.trim_matches('/').split_once('/') else {
        return fail(&format!(
            "`healer {verb}` takes TARGET/KIND, e.g. web/process.not_running, not {issue:?} (`healer status` shows what is proposed)"
        ));
    };
    let path = format!("/api/v1/issues/{}/{}/{verb}", encode(target), encode(kind));
    done(daemon.call("POST", &path, Some("{}")), json)
}

/// `healer outcomes`: the ledger, one row per (target, kind, recoverer).
pub fn outcomes(daemon: &Daemon, json: bool) -> ExitCode {
    let rows: Vec<crate::ledger::Row> = match read(daemon, "/api/v1/outcomes", json) {
        Ok(Some(rows)) => rows,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    if rows.is_empty() {
        say!("(no attempt judged yet)");
        return ExitCode::SUCCESS;
    }
    say!("TARGET  KIND  RECOVERER  TRIES  HEALED  NOT_HEALED  UNKNOWN  MEDIAN_TO_HEALTHY  LAST");
    for row in &rows {
        let median = row
            .median_time_to_healthy_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        say!(
            "{}  {}  {}  {}  {}  {}  {}  {}  {}",
            OneLine(&row.target),
            OneLine(&row.kind),
            OneLine(&row.recoverer),
            row.tries,
            row.healed,
            row.not_healed,
            row.unknown,
            median,
            row.last_outcome.map_or("-", |verdict| verdict.as_str())
        );
    }
    ExitCode::SUCCESS
}

/// `healer pause TARGET --for 30m --reason ...`
pub fn pause(daemon: &Daemon, target: &str, duration: &str, reason: &str, json: bool) -> ExitCode {
    let body = serde_json::json!({"for": duration, "reason": reason}).to_string();
    let path = format!("/api/v1/targets/{}/pause", encode(target));
    done(daemon.call("POST", &path, Some(&body)), json)
}

/// `healer resume TARGET`
pub fn resume(daemon: &Daemon, target: &str, json: bool) -> ExitCode {
    let path = format!("/api/v1/targets/{}/resume", encode(target));
    done(daemon.call("POST", &path, Some("{}")), json)
}

/// `healer reload`: what changed, or why the new config was rejected.
pub fn reload(daemon: &Daemon, json: bool) -> ExitCode {
    let answer = match daemon.call("POST", "/api/v1/reload", Some("{}")) {
        Ok(answer) => answer,
        Err(err) => return fail(&format!("reload refused: {err}")),
    };
    if json {
        print_json(&answer);
        return ExitCode::SUCCESS;
    }
    if let Some(message) = answer.get("message").and_then(Value::as_str) {
        say!("{message}");
        return ExitCode::SUCCESS;
    }
    let reloaded: Reloaded = match serde_json::from_value(answer) {
        Ok(reloaded) => reloaded,
        Err(err) => return fail(&format!("unexpected answer from /api/v1/reload: {err}")),
    };
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    say!("reloaded");
    say!("  added      {}", list(&reloaded.added));
    say!("  removed    {}", list(&reloaded.removed));
    say!("  restarted  {}", list(&reloaded.changed));
    say!("  unchanged  {}", reloaded.unchanged);
    say!("  new plugin packages  {}", list(&reloaded.packages_added));
    for problem in &reloaded.plugin_problems {
        say!("  plugin package problem: {problem}");
    }
    if !reloaded.needs_restart.is_empty() {
        say!(
            "  changed, but applied only when healer restarts: {}",
            reloaded.needs_restart.join(", ")
        );
    }
    ExitCode::SUCCESS
}
