//! The operator's API, served on the intake's listener: reads under
//! `/api/v1/` (targets, issues, history, facts, outcomes, plugins), writes
//! that send commands to the engine (reset an issue, approve or reject a
//! proposed recovery, pause and resume a target, reload), `/healthz` (healer's own liveness), `/metrics` (Prometheus
//! text) and the dashboard at `/`.
//!
//! With a token configured every endpoint but `/healthz` needs it, as
//! `Authorization: Bearer <token>`, or, for a browser on the dashboard,
//! as the password of HTTP Basic authentication (any user name). Which
//! hosts and origins the listener serves is decided before these routes,
//! for the intake and the API alike (`intake::access`).
//!
//! Reads come from the board (each target's latest check and issues), the
//! recent history and the catalog; nothing here decides anything.

mod answers;
mod auth;
mod confirm;
mod dashboard;
mod drawing;

pub use answers::{Done, FileProblem, Health, IssueRow, PackageView, Plugins, Reloaded, TargetRow};
use auth::{authorize, refuse};
pub use confirm::{Confirming, NotChecked, AT_ONCE as CONFIRMS_AT_ONCE};

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::board::{Board, TargetView};
use crate::clock::Wall;
use crate::engine::{Handle, Refusal};
use crate::history::{Filter, Recent};
use crate::issues::{Answer, State as IssueState};
use crate::model::{Pause, StoreHealth, MAX_PAUSE};

/// How long a reset waits for the target's loop to take it.
const RESET_WITHIN: Duration = Duration::from_secs(5);

/// The largest body a write accepts.
const MAX_BODY: usize = 64 * 1024;

/// A reload asked for; the answer says what changed, or why not.
pub type ReloadRequest = oneshot::Sender<Result<Reloaded, Vec<String>>>;

/// What the API reads and whom it commands.
pub struct Api {
    pub board: Arc<Board>,
    pub engine: Handle,
    pub recent: Recent,
    pub plugins: RwLock<Plugins>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub token: Option<String>,
    pub store: Option<Arc<dyn StoreHealth>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// When healer started (for `/healthz`).
    pub started: Instant,
    /// The listener's `request_timeout`: a connection is cut when its
    /// answer takes longer, so a slow command answers before it.
    pub answer_within: Duration,
    /// The fleet this healer is a member of (`[fleet]`).
    pub fleet: Option<crate::fleet::Fleet>,
    /// How it checks a fleet target for another member (`confirm = K`).
    pub confirming: Option<Confirming>,
}

/// The API's routes, ready to merge into the intake's router.
pub fn router(api: Arc<Api>) -> Router {
    let guarded = Router::new()
        .route("/", get(dashboard::page))
        .route("/metrics", get(scrape))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/targets/{name}", get(target))
        .route("/api/v1/targets/{name}/timeline", get(timeline))
        .route("/api/v1/targets/{name}/pause", post(pause))
        .route("/api/v1/targets/{name}/resume", post(resume))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/fleet/confirm", post(confirm_check))
        .route("/api/v1/issues", get(issues))
        .route("/api/v1/issues/{*id}", post(on_issue))
        .route("/api/v1/history", get(history))
        .route("/api/v1/facts", get(facts).post(set_note))
        .route("/api/v1/facts/unset", post(unset_note))
        .route("/api/v1/outcomes", get(outcomes))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/plugins/{file}/reset", post(reset_plugin))
        .route("/api/v1/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&api), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .with_state(api)
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it, else the
/// Prometheus text format.
async fn scrape(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = crate::metrics::Format::accepted(accept);
    let text = api.metrics.render(
        &api.board.targets(),
        api.store.as_deref(),
        api.engine.facts_held(),
        &api.board.lateness,
        api.fleet.as_ref().map(|fleet| fleet.view()).as_ref(),
        format,
    );
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

/// healer's own liveness: every target's loop has made progress in time
/// and the store can write.
pub fn health(api: &Api) -> Health {
    let stalled: Vec<String> = api
        .board
        .stalled(Instant::now())
        .into_iter()
        .map(|(name, late)| {
            format!(
                "{name} (late by {})",
                humantime::format_duration(Duration::from_secs(late.as_secs().max(1)))
            )
        })
        .collect();
    let store_writable = api.store.as_ref().map(|store| !store.degraded());
    let healthy = stalled.is_empty() && store_writable != Some(false);
    let behind = api.board.lateness.behind();
    let status = match (healthy, behind) {
        (false, _) => "stalled",
        (true, Some(_)) => "behind",
        (true, None) => "ok",
    };
    Health {
        status: status.to_owned(),
        behind,
        stalled,
        store_writable,
        store_lag_ms: api
            .store
            .as_ref()
            .map(|store| u64::try_from(store.lag().as_millis()).unwrap_or(u64::MAX)),
        targets: api.board.targets().len(),
        uptime_s: api.started.elapsed().as_secs(),
    }
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let health = health(&api);
    // Behind is slower than configured, not broken: the watchdog stays fed.
    let status = if health.status != "stalled" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

fn row(view: TargetView, now: Wall) -> TargetRow {
    TargetRow {
        age_ms: view
            .last_check
            .map(|at| u64::try_from(now.since(at).as_millis()).unwrap_or(u64::MAX)),
        view: shown(view, now),
    }
}

/// A view as shown: a pause only while it holds.
fn shown(mut view: TargetView, now: Wall) -> TargetView {
    if view.paused.as_ref().is_some_and(|p| !p.holds(now)) {
        view.paused = None;
    }
    view
}

async fn targets(State(api): State<Arc<Api>>) -> Json<Vec<TargetRow>> {
    let now = Wall::now();
    Json(
        api.board
            .targets()
            .into_iter()
            .map(|view| row(view, now))
            .collect(),
    )
}

/// What a fleet route answers on a healer that is in none.
const NOT_IN_A_FLEET: &str = "this healer is not in a fleet (its config has no [fleet] table)";

/// The fleet as this member sees it: members, the shards it owns with
/// their epochs, its lease's time left.
async fn fleet(State(api): State<Arc<Api>>) -> Response {
    match &api.fleet {
        Some(fleet) => Json(fleet.view()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, NOT_IN_A_FLEET.to_owned()),
    }
}

/// `POST /api/v1/fleet/confirm {"target": NAME}`: another member asks
/// what this one sees of a fleet target.
async fn confirm_check(State(api): State<Arc<Api>>, body: axum::body::Bytes) -> Response {
    #[derive(Deserialize)]
    struct Asked {
        target: String,
    }
    let Some(confirming) = &api.confirming else {
        return refuse(StatusCode::NOT_FOUND, NOT_IN_A_FLEET.to_owned());
    };
    let asked: Asked = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"target\": \"NAME\"}}: {err}"),
            )
        }
    };
    match confirming.check(&asked.target).await {
        Ok(seen) => Json(seen).into_response(),
        Err(NotChecked::Unknown(why)) => refuse(StatusCode::NOT_FOUND, why),
        Err(NotChecked::Busy) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} confirmations are being checked here; ask again",
                confirm::AT_ONCE
            ),
        ),
        Err(NotChecked::Failed(why)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

async fn target(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.board.target(&name) {
        Some(view) => Json(row(view, Wall::now())).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no target named {name:?} (GET /api/v1/targets lists them)"),
        ),
    }
}

/// `?state=escalated&target=db`
#[derive(Debug, Default, Deserialize)]
struct IssueFilter {
    state: Option<String>,
    target: Option<String>,
}

#[derive(Deserialize)]
struct FactFilter {
    /// `db` for `target.db`, or a subject as written (`system`).
    target: Option<String>,
}

/// `GET /api/v1/facts[?target=NAME]`: every fact that holds now, by name.
async fn facts(
    State(api): State<Arc<Api>>,
    Query(filter): Query<FactFilter>,
) -> Json<Vec<crate::facts::Fact>> {
    let subject = filter.target.map(|target| format!("target.{target}"));
    Json(api.engine.facts(subject.as_deref()))
}

/// The body of `POST /api/v1/facts`: an operator's note.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    name: String,
    value: serde_json::Value,
    #[serde(rename = "for", default = "an_hour")]
    duration: String,
}

fn an_hour() -> String {
    "1h".to_owned()
}

/// `healer fact set`: an operator's note, `SUBJECT.note.KEY`, for a while.
async fn set_note(State(api): State<Arc<Api>>, body: axum::body::Bytes) -> Response {
    const EXPECTED: &str =
        "expected {\"name\": \"target.db.note.KEY\", \"value\": true, \"for\": \"1h\"}";
    let body: NoteBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, format!("{EXPECTED}: {err}")),
    };
    let value = match body.value {
        serde_json::Value::Bool(truth) => crate::facts::Value::Bool(truth),
        serde_json::Value::Number(number) => match number.as_f64() {
            Some(number) => crate::facts::Value::Number(number),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the value is not a number healer can hold",
                )
            }
        },
        serde_json::Value::String(text) => crate::facts::Value::Text(text),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "a note's value is a truth, a number or a text",
            )
        }
    };
    let ttl = match healer_plugin_sdk::Duration::parse(&body.duration) {
        Ok(ttl) => ttl.into(),
        Err(err) => return refuse(StatusCode::BAD_REQUEST, format!("`for`: {err}")),
    };
    match api.engine.set_note(&body.name, value, ttl) {
        Ok(fact) => Json(fact).into_response(),
        Err(why) => refuse(StatusCode::UNPROCESSABLE_ENTITY, why),
    }
}

/// The body of `POST /api/v1/facts/unset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsetBody {
    name: String,
}

/// `healer fact unset`: takes back an operator's note.
async fn unset_note(State(api): State<Arc<Api>>, body: axum::body::Bytes) -> Response {
    let body: UnsetBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"name\": \"target.db.note.KEY\"}}: {err}"),
            )
        }
    };
    match api.engine.unset_note(&body.name) {
        Ok(()) => Json(Done {
            message: format!("{} taken back", body.name),
            issues: Vec::new(),
            pause: None,
        })
        .into_response(),
        Err(why) => refuse(StatusCode::CONFLICT, why),
    }
}

/// Every open issue, newest first.
pub fn open_issues(board: &Board) -> Vec<IssueRow> {
    let now = Wall::now();
    let mut rows: Vec<IssueRow> = board
        .targets()
        .into_iter()
        .flat_map(|view| {
            let paused = view.paused.as_ref().is_some_and(|p| p.holds(now));
            let held = view.held;
            view.issues.into_iter().map(move |issue| IssueRow {
                id: format!("{}/{}", view.name, issue.kind),
                target: view.name.clone(),
                held: held.iter().find(|held| held.kind == issue.kind).cloned(),
                issue,
                paused,
            })
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.issue.opened_at));
    rows
}

async fn issues(State(api): State<Arc<Api>>, Query(filter): Query<IssueFilter>) -> Response {
    let state = match filter.state.as_deref() {
        None => None,
        Some(text) => match IssueState::parse(text) {
            Some(state) => Some(state),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("state={text:?}: expected open, recovering or escalated"),
                )
            }
        },
    };
    let rows: Vec<IssueRow> = open_issues(&api.board)
        .into_iter()
        .filter(|row| state.is_none_or(|state| row.issue.state == state))
        .filter(|row| filter.target.as_ref().is_none_or(|t| row.target == *t))
        .collect();
    Json(rows).into_response()
}

/// `?target=db&kind=issue&since=2026-11-23T10:00:00Z|1h&limit=50&before=123`
#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    target: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
}

async fn history(State(api): State<Arc<Api>>, Query(query): Query<HistoryQuery>) -> Response {
    let since = match query.since.as_deref().map(parse_since) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(err)) => return refuse(StatusCode::BAD_REQUEST, err),
    };
    let filter = Filter {
        target: query.target,
        kind: query.kind,
        since,
        limit: query.limit,
        before: query.before,
    };
    Json(api.recent.page(&filter)).into_response()
}

/// A moment given as RFC 3339 (`2026-11-23T10:00:00Z`) or as an age
/// (`30m`: that long ago).
pub fn parse_since(text: &str) -> Result<Wall, String> {
    if let Ok(age) = humantime::parse_duration(text) {
        let now = Wall::now();
        let millis = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        return Ok(Wall::from_millis(now.millis().saturating_sub(millis)));
    }
    humantime::parse_rfc3339_weak(text)
        .map(Wall::from)
        .map_err(|_| {
            format!("since={text:?}: expected a time (2026-11-23T10:00:00Z) or an age (30m, 2h)")
        })
}

async fn plugins(State(api): State<Arc<Api>>) -> Json<Plugins> {
    let plugins = api.plugins.read().unwrap_or_else(|p| p.into_inner()).now();
    Json(plugins)
}

/// `GET /api/v1/targets/{name}/timeline`: the target's last hour (status
/// changes as segments, the mean check duration of each minute).
async fn timeline(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.board.timeline(&name, Wall::now()) {
        Some(timeline) => Json(timeline).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no target named {name:?} (GET /api/v1/targets lists them)"),
        ),
    }
}

/// `POST /api/v1/plugins/{file}/reset`: lifts the quarantine of the
/// package in `file` (its file name in the plugins directory).
async fn reset_plugin(State(api): State<Arc<Api>>, Path(file): Path<String>) -> Response {
    let file: String = file.chars().take(256).collect();
    let lifted = api
        .plugins
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lift_quarantine(&file);
    match lifted {
        Ok(()) => Json(Done {
            message: format!(
                "plugin package {file}: quarantine lifted; its worker starts on next use"
            ),
            issues: Vec::new(),
            pause: None,
        })
        .into_response(),
        Err(refusal) => {
            let status = match refusal {
                crate::plugins::Unquarantined::NoSuchPackage(_) => StatusCode::NOT_FOUND,
                crate::plugins::Unquarantined::Refused(_) => StatusCode::CONFLICT,
            };
            refuse(status, refusal.to_string())
        }
    }
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::NoSuchTarget(_) => StatusCode::NOT_FOUND,
        Refusal::NothingToDo(_) => StatusCode::CONFLICT,
        Refusal::Crowded(_) => StatusCode::SERVICE_UNAVAILABLE,
        // Taken, and carried out when the loop is free.
        Refusal::Busy(_) => {
            return (
                StatusCode::ACCEPTED,
                Json(Done {
                    message: refusal.to_string(),
                    issues: Vec::new(),
                    pause: None,
                }),
            )
                .into_response()
        }
    };
    refuse(status, refusal.to_string())
}

/// `POST /api/v1/issues/{target}/{kind}/reset` (or `{target}/reset`: every
/// escalated issue of the target).
/// The ledger: per (target, kind, recoverer), what its attempts came to.
async fn outcomes(State(api): State<Arc<Api>>) -> Json<Vec<crate::ledger::Row>> {
    Json(api.engine.outcomes())
}

/// `POST /api/v1/issues/<target>[/<kind>]/reset`, and
/// `.../<target>/<kind>/approve` or `/reject` for a proposal.
async fn on_issue(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    for (suffix, answer) in [("/approve", Answer::Approve), ("/reject", Answer::Reject)] {
        if let Some(id) = id.strip_suffix(suffix) {
            let Some((target, kind)) = id.split_once('/') else {
                return refuse(
                    StatusCode::NOT_FOUND,
                    format!("expected POST /api/v1/issues/<target>/<kind>{suffix}"),
                );
            };
            return match api.engine.answer(target, kind, answer, RESET_WITHIN).await {
                Ok(issue) => Json(Done {
                    message: match answer {
                        Answer::Approve => {
                            format!("approved: {target}/{kind} is checked and recovered now")
                        }
                        Answer::Reject => {
                            format!("rejected: {target}/{kind} is escalated")
                        }
                    },
                    issues: vec![issue],
                    pause: None,
                })
                .into_response(),
                Err(refusal) => refused(refusal),
            };
        }
    }
    let Some(id) = id.strip_suffix("/reset") else {
        return refuse(
            StatusCode::NOT_FOUND,
            "expected POST /api/v1/issues/<target>/<kind>/reset, /approve or /reject",
        );
    };
    let (target, kind) = match id.split_once('/') {
        Some((target, kind)) => (target, Some(kind.to_owned())),
        None => (id, None),
    };
    match api.engine.reset(target, kind, RESET_WITHIN).await {
        Ok(issues) => Json(Done {
            message: format!(
                "reset {} issue(s) of {target}: recovery starts over",
                issues.len()
            ),
            issues,
            pause: None,
        })
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// The body of a pause: `{"for": "30m", "reason": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(rename = "for")]
    duration: String,
    #[serde(default)]
    reason: String,
}

async fn pause(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: PauseBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"for\": \"30m\", \"reason\": \"...\"}}: {err}"),
            )
        }
    };
    let duration = match humantime::parse_duration(&body.duration) {
        Ok(d) if !d.is_zero() && d <= MAX_PAUSE => d,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "for={:?}: expected a duration from 1s to 30days, e.g. 30m",
                    body.duration
                ),
            )
        }
    };
    let reason: String = body.reason.chars().take(500).collect();
    let now = Wall::now();
    let pause = Pause {
        until: now + duration,
        reason: if reason.trim().is_empty() {
            "maintenance".to_owned()
        } else {
            reason
        },
        since: now,
    };
    match api.engine.pause(&name, pause.clone()) {
        Ok(()) => Json(Done {
            message: format!(
                "{name} paused until {} (checks go on, recoveries do not)",
                pause.until
            ),
            issues: Vec::new(),
            pause: Some(pause),
        })
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

async fn resume(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.engine.resume(&name) {
        Ok(was) => Json(Done {
            message: if was {
                format!("{name} resumed: recoveries act again")
            } else {
                format!("{name} was not paused")
            },
            issues: Vec::new(),
            pause: None,
        })
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

async fn reload(State(api): State<Arc<Api>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.reload.send(reply).await.is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "healer is stopping");
    }
    // Within the connection's own deadline (the reload goes on after it).
    let within = api.answer_within.mul_f64(0.8);
    match tokio::time::timeout(within, answer).await {
        Ok(Ok(Ok(reloaded))) => Json(reloaded).into_response(),
        Ok(Ok(Err(problems))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": "the new config was rejected; the running config carries on",
                "problems": problems,
            })),
        )
            .into_response(),
        _ => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "message": "the reload is still running (a target it restarts is finishing a check or recovery); its outcome will be in the history: healer history --kind config",
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
