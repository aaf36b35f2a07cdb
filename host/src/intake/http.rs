//! The intake's HTTP listener (axum, on hyper with bounded connections):
//! its own endpoints `POST /anomaly` and `POST /alertmanager`, and the
//! operator's API merged in (`crate::api`: `/healthz`, `/api/v1/...`,
//! `/metrics`, `/`). Before any of them, `access.rs` refuses a request
//! naming another host (421) and a write from another site (403). Input
//! rules: JSON only (415), bodies up to 64 KiB (413), schema errors are
//! 400 with a JSON error naming the field, with a token configured every
//! write endpoint requires it (401), and a report refused while recording
//! is behind is 503 with `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::access::{self, Hosts, TokenRefusal};
use super::guard::{Connections, Guarded};
use super::{Intake, Reply};

/// The largest body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// The most a connection buffers for a request head (hyper's read buffer).
const MAX_HEAD: usize = 16 * 1024;
/// The longest anomaly name accepted.
const MAX_NAME: usize = 200;

/// Binds the intake's address; a failure names it.
pub async fn listen(intake: &Intake) -> Result<TcpListener, String> {
    let bind = intake.settings.bind;
    TcpListener::bind(bind)
        .await
        .map_err(|err| format!("[intake] cannot listen on {bind}: {err}"))
}

/// Serves the intake, and the operator's API `api`, on `listener` until
/// `shutdown` changes.
pub async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    api: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    // The address bound (the port the system chose, for port 0).
    let address: SocketAddr = listener.local_addr().unwrap_or(intake.settings.bind);
    let app = Router::new()
        .route("/anomaly", post(anomaly))
        .route("/alertmanager", post(alertmanager))
        .with_state(Arc::clone(&intake))
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /anomaly, POST /alertmanager, GET /healthz, GET /api/v1/{targets,issues,history,plugins}, GET /metrics, GET /",
                None,
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Hosts::new(&intake.settings)),
            access::admit,
        ));
    info!(address = %address, "intake listening");
    let settings = &intake.settings;
    let request_timeout: std::time::Duration = settings.request_timeout.into();
    let connections = Connections::new(settings.max_connections);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut evictions: u64 = 0;
    // Refusals are recorded by this tick, not by the requests refused.
    let mut say = tokio::time::interval(std::time::Duration::from_secs(1));
    say.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
            _ = say.tick() => {
                intake.say_refusals(false);
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors (EMFILE) or the like: the connection
                // waits in the kernel's backlog; try again shortly.
                debug!(error = %err, "intake: cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (slot, evicted) = connections.admit();
        if evicted > 0 {
            evictions += evicted as u64;
            if evictions == 1 || evictions.is_multiple_of(1000) {
                warn!(
                    max_connections = settings.max_connections,
                    evicted_so_far = evictions,
                    "intake: too many connections; the oldest are closed to make room"
                );
            }
        }
        let io = TokioIo::new(Guarded::new(stream, slot, request_timeout));
        let service = TowerToHyperService::new(app.clone());
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(request_timeout)
            .max_buf_size(MAX_HEAD)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("intake: connections still open at shutdown were closed");
    }
    intake.say_refusals(true);
}

/// Every refusal: what is wrong, and the field when one is to blame.
#[derive(Serialize)]
struct Refusal<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = Refusal {
        error: message,
        field,
    };
    let mut response = (status, Json(body)).into_response();
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        close_after(&mut response);
    }
    response
}

/// A refusal while recording is behind: 503, try again after a while.
fn busy(mut response: Response) -> Response {
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(super::backlog::RETRY_AFTER_SECS),
    );
    response
}

/// The rest of the body was never read: the connection cannot carry
/// another request, so it ends with this answer.
fn close_after(response: &mut Response) {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
}

/// The checks every write endpoint makes; the body's bytes when they pass.
async fn accept(intake: &Intake, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    if let Some(token) = &intake.token {
        if let Err(refusal) = access::check_token(headers, token, false) {
            let message = match refusal {
                TokenRefusal::Missing => "this endpoint needs `Authorization: Bearer <token>`",
                TokenRefusal::Wrong => "wrong token",
            };
            let mut response = error(StatusCode::UNAUTHORIZED, message, None);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return Err(response);
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        let message =
            format!("send JSON with `Content-Type: application/json` (got {content_type:?})");
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message, None));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {} KiB", MAX_BODY / 1024),
            None,
        )
    };
    if declared.is_some_and(|length| length > MAX_BODY) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|err| {
        let err = err.into_inner();
        if err.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else if timed_out(&*err) {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within request_timeout",
                None,
            )
        } else {
            let mut response = error(
                StatusCode::BAD_REQUEST,
                &format!("the body cannot be read: {err}"),
                None,
            );
            close_after(&mut response);
            response
        }
    })
}

/// A body refused with 400: what is wrong with it, and the field to blame
/// when one is.
#[derive(Debug, PartialEq)]
pub struct BadRequest {
    pub message: String,
    pub field: Option<&'static str>,
}

impl BadRequest {
    fn new(message: impl Into<String>, field: Option<&'static str>) -> BadRequest {
        BadRequest {
            message: message.into(),
            field,
        }
    }

    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.message, self.field)
    }
}

/// A body that passed [`accept`]'s checks, as JSON.
fn json(body: &[u8]) -> Result<Value, BadRequest> {
    serde_json::from_slice(body)
        .map_err(|err| BadRequest::new(format!("the body is not valid JSON: {err}"), None))
}

/// Whether the connection's deadline (an `io::Error` of kind `TimedOut`
/// from the guard) is what ended a body, anywhere in the chain of causes.
fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// `?dry_run=true` or `?dry_run=false`; anything else is refused.
fn dry_run(query: Option<&str>) -> Result<bool, String> {
    let mut dry = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "dry_run" {
            dry = match value {
                "true" => true,
                "false" => false,
                other => {
                    return Err(format!(
                        "`dry_run` must be true or false, not {:?}",
                        other.chars().take(40).collect::<String>()
                    ))
                }
            };
        }
    }
    Ok(dry)
}

/// An `/anomaly` report as its body and query string give it.
#[derive(Debug, PartialEq)]
pub struct AnomalyReport {
    pub name: String,
    pub details: Value,
    pub dry_run: bool,
}

/// Reads an `/anomaly` request's body (at most [`MAX_BODY`] bytes, once
/// the token, content type and size are checked) and query string: the
/// seed's `{"name": ..., "details": {...}}` and `?dry_run=`.
pub fn read_anomaly(body: &[u8], query: Option<&str>) -> Result<AnomalyReport, BadRequest> {
    let Value::Object(mut object) = json(body)? else {
        return Err(BadRequest::new(
            "the body must be a JSON object: {\"name\": \"...\", \"details\": {...}}",
            None,
        ));
    };
    let name =
        match object.remove("name") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(BadRequest::new("`name` must be a string", Some("name"))),
            None => return Err(BadRequest::new(
                "`name` is missing: {\"name\": \"api_latency.coinbase.high\", \"details\": {...}}",
                Some("name"),
            )),
        };
    check_name(&name).map_err(|message| BadRequest::new(message, Some("name")))?;
    let details = match object.remove("details") {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(details @ Value::Object(_)) => details,
        Some(_) => {
            return Err(BadRequest::new(
                "`details` must be a JSON object",
                Some("details"),
            ))
        }
    };
    let dry_run = dry_run(query).map_err(|message| BadRequest::new(message, Some("dry_run")))?;
    Ok(AnomalyReport {
        name,
        details,
        dry_run,
    })
}

async fn anomaly(
    State(intake): State<Arc<Intake>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let report = match accept(&intake, &headers, body).await {
        Ok(body) => match read_anomaly(&body, query.as_deref()) {
            Ok(report) => report,
            Err(bad) => return bad.into_response(),
        },
        Err(response) => return response,
    };
    if !report.dry_run {
        match intake.first_in_fleet(&report.name).await {
            Ok(true) => {}
            Ok(false) => {
                let answer = Reply::Duplicate {
                    anomaly: report.name.clone(),
                    duplicate: true,
                    reason: format!(
                        "another member of the fleet runs {:?} within its cooldown",
                        report.name
                    ),
                };
                return Json(answer).into_response();
            }
            Err(why) => return fleet_cannot_tell(&why),
        }
    }
    let answer = intake.report(&report.name, report.details, report.dry_run);
    if answer.acted_on() {
        intake.acted_in_fleet(&report.name);
    }
    match answer {
        Reply::Started { .. } => (StatusCode::ACCEPTED, Json(answer)).into_response(),
        Reply::Refused { .. } => busy(Json(answer).into_response()),
        _ => Json(answer).into_response(),
    }
}

/// An anomaly name (or Alertmanager alertname) healer accepts.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("`name` must be 1 to {MAX_NAME} characters"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:-/".contains(*c)))
    {
        Some(bad) => Err(format!(
            "`name` may hold A-Z a-z 0-9 . _ : - / only, not {bad:?}"
        )),
        None => Ok(()),
    }
}

/// An Alertmanager webhook payload, as far as the group goes: its alerts
/// are read one by one (`alertmanager.rs`).
#[derive(Debug, PartialEq)]
pub struct AlertmanagerPayload {
    /// The receiver that sent it (part of an alert's fleet-wide key).
    pub receiver: String,
    pub alerts: Vec<Value>,
    /// `truncatedAlerts`: alerts Alertmanager left out of the group.
    pub truncated: u64,
}

/// Reads an `/alertmanager` request's body (at most [`MAX_BODY`] bytes,
/// once the token, content type and size are checked).
pub fn read_alertmanager(body: &[u8]) -> Result<AlertmanagerPayload, BadRequest> {
    let mut payload = json(body)?;
    let truncated = payload
        .get("truncatedAlerts")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let receiver = payload
        .get("receiver")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect();
    match payload.get_mut("alerts").map(Value::take) {
        Some(Value::Array(alerts)) => Ok(AlertmanagerPayload {
            receiver,
            alerts,
            truncated,
        }),
        _ => Err(BadRequest::new(
            "`alerts` is missing: this is not an Alertmanager webhook payload",
            Some("alerts"),
        )),
    }
}

/// A report refused because the fleet cannot tell whether another member
/// acts on it (etcd unreachable): 503, so its sender tries again.
fn fleet_cannot_tell(why: &str) -> Response {
    busy(error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the fleet cannot tell whether another member acts on this report ({why}); nothing was done, send it again"),
        None,
    ))
}

/// Alertmanager's webhook: see `alertmanager.rs`.
async fn alertmanager(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let payload = match accept(&intake, &headers, body).await {
        Ok(body) => match read_alertmanager(&body) {
            Ok(payload) => payload,
            Err(bad) => return bad.into_response(),
        },
        Err(response) => return response,
    };
    let answer = match intake.alertmanager_payload(payload).await {
        Ok(answer) => answer,
        Err(why) => return fleet_cannot_tell(&why),
    };
    // Alertmanager sends the group again after a 5xx; what was acted on
    // is then a duplicate, what was refused is acted on.
    if answer.refused > 0 {
        busy(Json(answer).into_response())
    } else {
        Json(answer).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_numbers_read_back_from_its_record_as_they_were() {
        let body = br#"{"name": "api.slow", "details": {"latency_ms": 233333333.66666666666669}}"#;
        let report = read_anomaly(body, None).unwrap();
        let recorded = crate::events::bounded(&report.details);
        assert_eq!(recorded.to_value(), report.details);
        assert_eq!(crate::events::Json::encode(&recorded.to_value()), recorded);
    }
}
