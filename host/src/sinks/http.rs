//! How a sink speaks HTTP: one client per sink (rustls with ring, a
//! deadline per request, redirects never followed), one POST retried with
//! capped exponential backoff, and an answer read at most 4 KiB. URLs and
//! headers are parsed by the config's own checks ([`crate::config::http`]),
//! so `healer check` and the running sink agree on what is valid.

use std::collections::BTreeMap;
use std::time::Duration;

use healer_plugin_sdk::redact;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use tokio::sync::oneshot;

use crate::config::http::{check_url, header};

/// The longest wait between two tries of one delivery.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The most of an answer that is read (the rest is dropped unread).
const MAX_ANSWER: usize = 4096;

/// The most of an answer an error quotes.
const QUOTED_ANSWER: usize = 200;

/// Where a sink POSTs, and how.
pub struct Endpoint {
    url: Url,
    /// The URL as events and logs show it: credentials redacted.
    shown: String,
    client: reqwest::Client,
    headers: HeaderMap,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

/// How a delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Posted {
    /// Requests made.
    pub tries: u32,
    /// Why it failed in the end; `None` when it was accepted.
    pub error: Option<String>,
}

/// How one request failed.
struct Failure {
    message: String,
    /// Worth trying again (no connection, a timeout, 408, 429, 5xx).
    retry: bool,
}

/// The settings of an [`Endpoint`].
pub struct Settings<'a> {
    pub url: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl Endpoint {
    /// A client for `settings.url` (checked by the config already).
    pub fn new(settings: &Settings<'_>) -> Result<Endpoint, String> {
        let url = check_url(settings.url).map_err(|err| format!("`url` {err}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in settings.headers {
            let (name, value) = header(name, value).map_err(|err| format!("`headers`: {err}"))?;
            headers.insert(name, value);
        }
        // reqwest is built without a default crypto provider; the first
        // sink installs ring's for the process (later calls find it set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("healer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {}", innermost(&err)))?;
        Ok(Endpoint {
            shown: redact::text(url.as_str()),
            url,
            client,
            headers,
            timeout: settings.timeout,
            retries: settings.retries,
            backoff: settings.backoff,
        })
    }

    /// The URL with `segments` appended to its path (Alertmanager's
    /// `api/v2/alerts` to a base URL); unchanged when it ends with them.
    pub fn join(mut self, segments: &[&str]) -> Endpoint {
        let ends_with = self
            .url
            .path_segments()
            .map(|path| path.filter(|s| !s.is_empty()).collect::<Vec<_>>())
            .is_some_and(|path| path.ends_with(segments));
        if !ends_with {
            if let Ok(mut path) = self.url.path_segments_mut() {
                path.pop_if_empty().extend(segments);
            }
            self.shown = redact::text(self.url.as_str());
        }
        self
    }

    /// The URL, as it may be shown.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// POSTs JSON, built anew by `body` for each try, until it is taken
    /// (2xx), fails in a way another try cannot mend (a redirect, another
    /// 4xx), or the retries are used up; the waits between tries double
    /// from the backoff up to [`MAX_BACKOFF`]. A message on `stop` during
    /// a wait ends it early: a newer state of the alert replaced this one.
    pub async fn post(
        &self,
        body: &(dyn Fn() -> Vec<u8> + Send + Sync),
        stop: &mut oneshot::Receiver<()>,
    ) -> Posted {
        let mut wait = self.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match self.once(body()).await {
                Ok(()) => return Posted { tries, error: None },
                Err(failure) => failure,
            };
            let error = Some(format!("POST {} {}", self.shown, failure.message));
            if !failure.retry || tries > self.retries {
                return Posted { tries, error };
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = &mut *stop => {
                    return Posted {
                        tries,
                        error: error.map(|e| format!("{e}; no further tries: a newer state of the alert replaced this one")),
                    };
                }
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    async fn once(&self, body: Vec<u8>) -> Result<(), Failure> {
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            // After the content type: a configured one replaces it.
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => {
                let message = if err.is_timeout() {
                    format!(
                        "got no answer within {}",
                        humantime::format_duration(self.timeout)
                    )
                } else if err.is_connect() {
                    format!("cannot connect: {}", innermost(&err))
                } else {
                    format!("failed: {}", innermost(&err))
                };
                return Err(Failure {
                    message,
                    retry: true,
                });
            }
        };
        let status = response.status();
        if status.is_redirection() {
            // Following it would send the alert somewhere nobody
            // configured: fail, and say where it pointed.
            let to = response
                .headers()
                .get(LOCATION)
                .map(|location| self.location(location))
                .unwrap_or_else(|| "nowhere (no Location)".to_owned());
            return Err(Failure {
                message: format!(
                    "answered {status}, a redirect to {to}: redirects are not followed; give the final URL"
                ),
                retry: false,
            });
        }
        let answer = read_bounded(&mut response).await;
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let quoted = quote(&answer);
        Err(Failure {
            message: if quoted.is_empty() {
                format!("answered {status}")
            } else {
                format!("answered {status}: {quoted}")
            },
            retry,
        })
    }

    /// A Location header as it may be shown: absolute, credentials
    /// redacted, at most 300 bytes.
    fn location(&self, location: &HeaderValue) -> String {
        let text = String::from_utf8_lossy(location.as_bytes());
        let absolute = self
            .url
            .join(&text)
            .map_or_else(|_| text.into_owned(), String::from);
        cut(&redact::text(&absolute), 300)
    }
}

/// At most [`MAX_ANSWER`] bytes of the answer's body; a failure to read
/// it (the deadline passed) leaves what was read.
async fn read_bounded(response: &mut reqwest::Response) -> Vec<u8> {
    let mut answer = Vec::new();
    while answer.len() < MAX_ANSWER {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER - answer.len();
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    answer
}

/// The start of an answer as one line of text for an error.
fn quote(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(line.trim(), QUOTED_ANSWER)
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The innermost cause of `err` (reqwest's own message names the URL,
/// which may hold a password).
fn innermost(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, err) {
        "request failed".to_owned()
    } else {
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanagers_path_is_appended_to_a_base_url_once() {
        let headers = BTreeMap::new();
        let endpoint = |url: &str| {
            Endpoint::new(&Settings {
                url,
                headers: &headers,
                timeout: Duration::from_secs(1),
                retries: 0,
                backoff: Duration::from_secs(1),
            })
            .unwrap()
            .join(&["api", "v2", "alerts"])
        };
        assert_eq!(
            endpoint("http://127.0.0.1:9093").shown(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            endpoint("http://u:pw@127.0.0.1:9093/am/").shown(),
            "http://<redacted>@127.0.0.1:9093/am/api/v2/alerts"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9093/api/v2/alerts").shown(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
    }

    #[test]
    fn an_answer_is_quoted_on_one_line_and_cut() {
        assert_eq!(quote(b"bad\nrequest\r\n"), "bad request");
        assert_eq!(quote(&[b'x'; 1000]).len(), QUOTED_ANSWER);
        assert_eq!(cut("ééé", 3), "é");
    }
}
