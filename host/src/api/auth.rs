//! Who may call the API: with a token configured every route but
//! `/healthz` needs it (`Authorization: Bearer`, or the password of HTTP
//! Basic for a browser on the dashboard), checked by the one token check
//! the intake shares ([`check_token`]); writes must send JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::Api;
use crate::intake::{check_token, is_write, TokenRefusal};

/// Every refusal: what is wrong.
#[derive(Serialize)]
struct Refused {
    error: String,
}

pub(super) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(Refused {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Lets a request through when no token is configured, or it carries it
/// (checked by the intake's one token check). A write must be JSON
/// (`Content-Type: application/json`: a web page cannot send that across
/// origins without a preflight, which is never granted) and takes the
/// token only as `Bearer` (a browser's remembered Basic login is good for
/// reading). Host and Origin were checked before, for the whole listener
/// (`intake::access`).
pub(super) async fn authorize(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let write = is_write(request.method());
    if write {
        if let Some(refusal) = not_json(&headers) {
            return refusal;
        }
    }
    let Some(token) = &api.token else {
        return next.run(request).await;
    };
    match check_token(&headers, token, !write) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let message = match refusal {
                TokenRefusal::Missing => "this endpoint needs the token: `Authorization: Bearer <token>` (or, in a browser, the token as the password)",
                TokenRefusal::Wrong => "wrong token",
            };
            let mut response = refuse(StatusCode::UNAUTHORIZED, message);
            let challenge = if request.uri().path() == "/" {
                "Basic realm=\"healer\""
            } else {
                "Bearer"
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            response
        }
    }
}

/// The refusal of a write that is not JSON; `None` for one that may go on.
fn not_json(headers: &HeaderMap) -> Option<Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    (!json).then(|| {
        refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a write needs `Content-Type: application/json` (the body may be {})",
        )
    })
}
