//! The dashboard at `/`: one server-rendered HTML page with healer's
//! health, every target (status, age of its last check, issues, pause),
//! the open and escalated issues with their attempts and any recovery
//! proposed (with the command that approves it), what healer knows (the
//! facts), what worked (the ledger of outcomes), recent history and the
//! plugin packages with their workers' health. No script, no external
//! asset (the machine may have no internet): the page refreshes itself
//! every 5 seconds with a `<meta>` tag, and reads well on a phone.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use healer_plugin_sdk::Status;

use super::drawing::class;
use super::{health, open_issues, Api};
use crate::clock::Wall;
use crate::history::Filter;

/// History rows shown.
const HISTORY_ROWS: usize = 30;

/// Facts shown (`healer facts` lists them all).
const FACT_ROWS: usize = 50;

/// Ledger rows shown (`healer outcomes` lists them all).
const OUTCOME_ROWS: usize = 50;

pub(super) async fn page(State(api): State<Arc<Api>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&api),
    )
        .into_response()
}

fn render(api: &Api) -> String {
    let now = Wall::now();
    let health = health(api);
    let targets = api.board.targets();
    let timelines = api.board.timelines(now);
    let issues = open_issues(&api.board);
    let plugins = api.plugins.read().unwrap_or_else(|p| p.into_inner()).now();
    let history = api.recent.page(&Filter {
        limit: Some(HISTORY_ROWS),
        ..Filter::default()
    });
    let worst = targets
        .iter()
        .filter_map(|t| t.status)
        .max_by_key(|s| crate::board::rank(*s))
        .unwrap_or(Status::Ok);

    let mut html = String::with_capacity(16 * 1024);
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<header><h1>healer</h1><span class=\"badge {}\">{}</span> <span class=\"muted\">{} targets · {} open issues · healer {} · up {}</span></header>",
        class(worst),
        worst.as_str(),
        targets.len(),
        issues.len(),
        escape(&health.status),
        humantime::format_duration(std::time::Duration::from_secs(health.uptime_s)),
    );
    if !health.stalled.is_empty() || health.store_writable == Some(false) {
        let _ = write!(
            html,
            "<p class=\"alert\">healer itself is not well: {}{}</p>",
            escape(&health.stalled.join(", ")),
            if health.store_writable == Some(false) {
                " the store cannot write"
            } else {
                ""
            }
        );
    }

    html.push_str("<section><h2>Targets</h2><div class=\"scroll\"><table id=\"targets\"><thead><tr><th>target</th><th>status</th><th>last check</th><th>summary</th><th>issues</th><th>last hour</th></tr></thead><tbody>");
    for view in &targets {
        let status = view.status.map_or("UNCHECKED", Status::as_str);
        let age = view.last_check.map_or("never".to_owned(), |at| {
            format!("{} ago", age(now.since(at)))
        });
        let paused = match &view.paused {
            Some(pause) if pause.holds(now) => format!(
                " <span class=\"badge paused\" title=\"{}\">paused until {}</span>",
                escape(&pause.reason),
                pause.until
            ),
            _ => String::new(),
        };
        let _ = write!(
            html,
            "<tr class=\"target\" data-target=\"{name}\" data-status=\"{status}\"><td><b>{name}</b><br><span class=\"muted\">{monitor}</span></td><td><span class=\"badge {class}\">{status}</span>{paused}</td><td class=\"age\" data-label=\"checked\">{age}</td><td class=\"text\">{summary}</td><td data-label=\"issues\">{issues}</td><td class=\"hour\">{hour}</td></tr>",
            hour = timelines.get(&view.name).map_or_else(String::new, super::drawing::last_hour),
            name = escape(&view.name),
            monitor = escape(&view.monitor),
            class = view.status.map_or("unchecked", class),
            summary = escape(&view.summary),
            issues = view.issues.len(),
        );
    }
    html.push_str("</tbody></table></div></section>");

    html.push_str("<section><h2>Open issues</h2>");
    if issues.is_empty() {
        html.push_str("<p class=\"muted\">None.</p>");
    } else {
        html.push_str("<div class=\"scroll\"><table id=\"issues\"><thead><tr><th>issue</th><th>state</th><th>attempts</th><th>summary</th><th>opened</th></tr></thead><tbody>");
        for row in &issues {
            let proposal = row.issue.proposal.as_ref().filter(|p| !p.approved);
            let (badge, proposed) = match proposal {
                Some(p) => (
                    " <span class=\"badge proposed\">proposed</span>".to_owned(),
                    format!(
                        "<div class=\"proposal\">Proposed, not run: <code>{}</code> ({}). Approve: <code>healer approve {}/{}</code> (or reject) before {}</div>",
                        escape(&p.action),
                        escape(&p.why),
                        escape(&row.target),
                        escape(&row.issue.kind),
                        p.expires_at
                    ),
                ),
                None => (String::new(), String::new()),
            };
            let _ = write!(
                html,
                "<tr class=\"issue\" data-issue=\"{id}\" data-state=\"{state}\"{proposed_attr}><td><b>{target}</b><br>{kind}</td><td><span class=\"badge {state}\">{state}</span>{badge}{paused}{held}</td><td data-label=\"attempts\">{attempts}</td><td class=\"text\">{summary}{proposed}</td><td class=\"age\" data-label=\"opened\">{opened} ago</td></tr>",
                proposed_attr = if proposal.is_some() { " data-proposed=\"yes\"" } else { "" },
                id = escape(&row.id),
                target = escape(&row.target),
                kind = escape(&row.issue.kind),
                state = row.issue.state.as_str(),
                paused = if row.paused { " <span class=\"badge paused\">paused</span>" } else { "" },
                held = row.held.as_ref().map_or(String::new(), |held| format!(
                    " <span class=\"badge held\" title=\"{}\">held: waiting for {}</span>",
                    escape(&held.describe()),
                    escape(&held.dependency)
                )),
                attempts = row.issue.attempts,
                summary = escape(&row.issue.summary),
                opened = age(now.since(row.issue.opened_at)),
            );
        }
        html.push_str("</tbody></table></div><p class=\"muted\">Reset an escalated issue: <code>healer reset TARGET/KIND</code></p>");
    }
    html.push_str("</section>");
    knows(&mut html, api, now);
    worked(&mut html, api);

    html.push_str("<section><h2>Recent history</h2><div class=\"scroll\"><table id=\"history\"><thead><tr><th>when</th><th>event</th><th>about</th><th>details</th></tr></thead><tbody>");
    for numbered in &history.events {
        let record = &numbered.record;
        let _ = write!(
            html,
            "<tr><td class=\"age\">{} ago</td><td>{}</td><td>{}</td><td class=\"details text\">{}</td></tr>",
            age(now.since(record.at)),
            record.event.name(),
            escape(record.event.subject().unwrap_or("")),
            escape(&details(&record.event)),
        );
    }
    html.push_str("</tbody></table></div></section>");

    html.push_str("<section><h2>Plugins</h2><div class=\"scroll\"><table id=\"plugins\"><thead><tr><th>package</th><th>runs</th><th>worker</th><th>plugins</th></tr></thead><tbody>");
    for package in &plugins.packages {
        let worker = match &package.worker {
            None => "in healer".to_owned(),
            Some(w) if w.quarantined.is_some() => format!(
                "<span class=\"badge critical\">quarantined</span> {}",
                escape(w.quarantined.as_deref().unwrap_or(""))
            ),
            Some(w) => {
                let pid = w
                    .pid
                    .map_or("not started".to_owned(), |pid| format!("pid {pid}"));
                let crashes = match &w.last_crash {
                    Some(last) if w.recent_crashes > 0 => format!(
                        " · <span class=\"badge warning\">{} recent crashes</span> {}",
                        w.recent_crashes,
                        escape(last)
                    ),
                    _ => String::new(),
                };
                format!("{pid}{crashes}")
            }
        };
        let _ = write!(
            html,
            "<tr><td><b>{}</b> {}<br><span class=\"muted\">{}</span></td><td data-label=\"runs\">{}</td><td data-label=\"worker\">{}</td><td class=\"text\">{}</td></tr>",
            escape(&package.name),
            escape(&package.version),
            escape(&package.file),
            escape(&package.isolation),
            worker,
            escape(&package.plugins.join(", ")),
        );
    }
    for problem in plugins.errors.iter().chain(&plugins.warnings) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"text\" colspan=\"3\"><span class=\"badge warning\">problem</span> {}</td></tr>",
            escape(&problem.file),
            escape(&problem.reason)
        );
    }
    html.push_str("</tbody></table></div></section>");
    let _ = write!(
        html,
        "<footer class=\"muted\">Rendered {now}; refreshes every 5 s. JSON: <a href=\"/api/v1/targets\">targets</a> · <a href=\"/api/v1/issues\">issues</a> · <a href=\"/api/v1/history\">history</a> · <a href=\"/api/v1/facts\">facts</a> · <a href=\"/api/v1/outcomes\">outcomes</a> · <a href=\"/api/v1/plugins\">plugins</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a></footer></body></html>"
    );
    html
}

/// "What healer knows": the facts that hold now, the first
/// [`FACT_ROWS`] by name.
fn knows(html: &mut String, api: &Api, now: Wall) {
    let facts = api.engine.facts(None);
    html.push_str("<section><h2>What healer knows</h2>");
    if facts.is_empty() {
        html.push_str("<p class=\"muted\">No facts.</p></section>");
        return;
    }
    html.push_str("<div class=\"scroll\"><table id=\"facts\"><thead><tr><th>fact</th><th>value</th><th>from</th><th>age</th></tr></thead><tbody>");
    for fact in facts.iter().take(FACT_ROWS) {
        let _ = write!(
            html,
            "<tr class=\"fact\" data-fact=\"{name}\"><td class=\"details\">{name}</td><td data-label=\"value\">{value}{previous}</td><td data-label=\"from\">{source}</td><td class=\"age\" data-label=\"age\">{age}</td></tr>",
            name = escape(&fact.name()),
            value = escape(&fact.value.to_string()),
            previous = if fact.previous_run { " <span class=\"muted\">(previous run)</span>" } else { "" },
            source = escape(&fact.source.to_string()),
            age = age(now.since(fact.observed_at)),
        );
    }
    html.push_str("</tbody></table></div>");
    if facts.len() > FACT_ROWS {
        let _ = write!(
            html,
            "<p class=\"muted\">{} more: <code>healer facts</code></p>",
            facts.len() - FACT_ROWS
        );
    }
    html.push_str("</section>");
}

/// "What worked": the ledger of outcomes, the first [`OUTCOME_ROWS`].
fn worked(html: &mut String, api: &Api) {
    let rows = api.engine.outcomes();
    html.push_str("<section><h2>What worked</h2>");
    if rows.is_empty() {
        html.push_str("<p class=\"muted\">No attempt judged yet.</p></section>");
        return;
    }
    html.push_str("<div class=\"scroll\"><table id=\"outcomes\"><thead><tr><th>target and kind</th><th>recoverer</th><th>healed</th><th>median to healthy</th><th>last</th></tr></thead><tbody>");
    for row in rows.iter().take(OUTCOME_ROWS) {
        let last = row.last_outcome.map_or("-", |verdict| verdict.as_str());
        let _ = write!(
            html,
            "<tr class=\"outcome\" data-recoverer=\"{recoverer}\"><td><b>{target}</b><br>{kind}</td><td>{recoverer}</td><td data-label=\"healed\">{healed} of {tries}</td><td data-label=\"median\">{median}</td><td data-label=\"last\"><span class=\"badge {last}\">{last}</span></td></tr>",
            target = escape(&row.target),
            kind = escape(&row.kind),
            recoverer = escape(&row.recoverer),
            healed = row.healed,
            tries = row.tries,
            median = row
                .median_time_to_healthy_ms
                .map_or_else(|| "-".to_owned(), |ms| age(std::time::Duration::from_millis(ms))),
        );
    }
    html.push_str("</tbody></table></div></section>");
}

/// An event's fields, as the dashboard's history shows them: at most 240
/// bytes.
fn details(event: &crate::events::Event) -> String {
    let mut text = crate::history::fields(event);
    if text.len() > 240 {
        let cut = (0..=240)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn age(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{} ms", duration.as_millis()),
        1..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// Text as HTML: the five characters that matter escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>healer</title>
<style>
:root { color-scheme: light dark; --ok:#1a7f37; --warning:#9a6700; --critical:#cf222e; --unknown:#6e7781; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 12px; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; }
h1 { font-size: 1.4em; margin: 0 8px 0 0; }
h2 { font-size: 1.1em; margin: 20px 0 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-weight: 600; font-size: .9em; }
.scroll { overflow-x: auto; }
.muted { opacity: .7; font-size: .9em; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: .85em; font-weight: 600; color: #fff; background: var(--unknown); white-space: nowrap; }
.badge.ok { background: var(--ok); } .badge.warning, .badge.recovering, .badge.paused, .badge.held { background: var(--warning); }
.badge.critical, .badge.escalated, .badge.not_healed { background: var(--critical); } .badge.open, .badge.proposed { background: #0969da; }
.badge.healed { background: var(--ok); }
.proposal { margin-top: 4px; }
.alert { background: var(--critical); color: #fff; padding: 8px; border-radius: 6px; }
.details { font-family: ui-monospace, monospace; font-size: .8em; word-break: break-word; }
footer { margin-top: 24px; }
.age { white-space: nowrap; }
svg.timeline, svg.sparkline { display: block; width: 100%; max-width: 240px; height: 18px; }
svg.sparkline { height: 22px; margin-top: 4px; }
svg .lane { fill: #8882; }
svg .seg.ok { fill: var(--ok); } svg .seg.warning { fill: var(--warning); } svg .seg.critical { fill: var(--critical); }
svg .seg.unknown { fill: none; stroke: var(--unknown); stroke-width: 1.5; }
svg.sparkline polyline { fill: none; stroke: currentColor; stroke-width: 1.2; } svg.sparkline circle { fill: currentColor; }
td.hour { min-width: 160px; } .said { font-size: .75em; }
/* A phone: each row becomes a card, its summary on a line of its own. */
@media (max-width: 600px) {
  body { font-size: 14px; padding: 8px; }
  table, tbody { display: block; }
  thead { display: none; }
  tr { display: flex; flex-wrap: wrap; align-items: baseline; gap: 2px 10px; padding: 8px 0; border-bottom: 1px solid #8884; }
  td { border: none; padding: 0; overflow-wrap: anywhere; }
  td.text, td.hour { flex-basis: 100%; }
  td[data-label]::before { content: attr(data-label) " "; opacity: .7; }
}
</style></head><body>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_shows_an_issue_by_its_fields_without_its_timestamps() {
        let at = Wall::from_millis(1_700_000_000_000);
        let issue = crate::issues::Issue::saved(
            "process.not_running".to_owned(),
            crate::issues::State::Escalated,
            Status::Critical,
            "not running".to_owned(),
            2,
            [at, at],
            [Some(at), None],
        );
        let text = details(&crate::events::Event::IssueEscalated {
            target: "web".to_owned(),
            issue,
            reason: "still failing".to_owned(),
        });
        assert_eq!(
            text.trim_end(),
            "attempts=2 kind=process.not_running severity=CRITICAL state=escalated summary=not running reason=still failing"
        );
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape("<b class=\"x\">&'"),
            "&lt;b class=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
