//! The `webhook` recoverer: POSTs `{"anomaly": {...}, "params": {...}}` as
//! JSON to a URL (an n8n webhook, or anything that speaks HTTP), optionally
//! signed with HMAC-SHA256 over a timestamp and the body (so a captured
//! request cannot be replayed later), retried with backoff; any 2xx answer
//! is success. Redirects are not followed: a 3xx is a failure naming where
//! it pointed. No secret (the HMAC secret, header values, a password in the
//! URL, its query string) ever appears in what the plugin reports.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use healer_plugin_sdk::{redact, Duration, Error, Outcome, Recoverer, Recovery};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use sha2::Sha256;

/// The header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Healer-Timestamp";

/// How far a receiver accepts a timestamp from its own clock (see [`verify`]).
pub const MAX_SKEW_SECS: u64 = 300;

/// Options of the `webhook` recoverer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Sign timestamp and body with HMAC-SHA256 using the secret in this environment variable...
    hmac_secret_env: Option<String>,
    /// ...or in this file (first line).
    hmac_secret_file: Option<PathBuf>,
    #[serde(default = "default_signature_header")]
    signature_header: String,
    #[serde(default = "default_timeout")]
    timeout: Duration,
    /// Further tries after a failure (so `retries = 2` is at most 3 requests).
    #[serde(default = "default_retries")]
    retries: u32,
    /// Wait before the first retry; doubles after each.
    #[serde(default = "default_backoff")]
    retry_backoff: Duration,
}

fn default_signature_header() -> String {
    "X-Healer-Signature".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_retries() -> u32 {
    2
}

fn default_backoff() -> Duration {
    Duration::from_millis(500)
}

/// Calls a webhook.
pub struct Webhook {
    config: Config,
    client: reqwest::Client,
    headers: HeaderMap,
    signature_header: HeaderName,
    secret: Option<Vec<u8>>,
    /// The URL as it may be shown: see [`shown_url`].
    shown_url: String,
    /// Every secret value, scrubbed from each message as a last resort.
    secrets: Vec<String>,
}

impl Recoverer for Webhook {
    type Config = Config;
    const NAME: &'static str = "webhook";
    const DESCRIPTION: &'static str =
        "POSTs {anomaly, params} as JSON to a URL (n8n); 2xx is success; HMAC signing, retries";
    const SAMPLE_CONFIG: &'static str = r#"url = "http://127.0.0.1:5678/webhook/healer"   # e.g. an n8n webhook; redirects are not followed
headers = { "X-Source" = "healer" }             # extra headers (default none)
# hmac_secret_env = "HEALER_WEBHOOK_SECRET"     # sign: X-Healer-Timestamp, and "sha256=<hex HMAC-SHA256 of timestamp.body>"
# hmac_secret_file = "/etc/healer/webhook.key"  # or read the secret from a file
signature_header = "X-Healer-Signature"
timeout = "5s"                                  # per request
retries = 2                                     # further tries after a failure
retry_backoff = "500ms"                         # before the first retry; doubles after each
"#;

    fn new(config: Config) -> Result<Self, Error> {
        // The URL may hold a password: errors describe it, never quote it.
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("invalid `url`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`url` must be http or https, not {:?}", url.scheme()).into());
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`headers`: {name:?} is not a valid header name"))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                format!("`headers`: the value of {name} is not a valid header value")
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let signature_header =
            HeaderName::from_bytes(config.signature_header.as_bytes()).map_err(|_| {
                format!(
                    "`signature_header`: {:?} is not a valid header name",
                    config.signature_header
                )
            })?;
        let secret = match (&config.hmac_secret_env, &config.hmac_secret_file) {
            (Some(_), Some(_)) => {
                return Err("give `hmac_secret_env` or `hmac_secret_file`, not both".into())
            }
            (Some(var), None) => {
                let secret = std::env::var(var).map_err(|_| {
                    format!("`hmac_secret_env`: the environment variable {var} is not set (a plugin worker sees only the variables its package's `env` names: add env = [\"{var}\"] under [plugins.package.\"libhealer_plugin_webhook.so\"])")
                })?;
                if secret.is_empty() {
                    return Err(empty_secret("hmac_secret_env", &format!("{var} is empty")));
                }
                Some(secret.into_bytes())
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("`hmac_secret_file` {}: {e}", path.display()))?;
                let secret = text.lines().next().unwrap_or("").trim();
                if secret.is_empty() {
                    let why = format!("the first line of {} is empty", path.display());
                    return Err(empty_secret("hmac_secret_file", &why));
                }
                Some(secret.as_bytes().to_vec())
            }
            (None, None) => None,
        };
        // Short header values are mostly not secrets ("healer", "1"), and
        // scrubbing them would garble messages; no message quotes a header.
        let mut secrets: Vec<String> = config
            .headers
            .values()
            .filter(|value| value.len() >= 8)
            .cloned()
            .collect();
        secrets.extend(
            secret
                .as_deref()
                .map(|s| String::from_utf8_lossy(s).into_owned()),
        );
        secrets.extend(url.password().map(str::to_owned));
        if url.password().is_none() && !url.username().is_empty() {
            secrets.push(url.username().to_owned());
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout.into())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("healer-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Webhook {
            shown_url: shown_url(&url),
            config,
            client,
            headers,
            signature_header,
            secret,
            secrets,
        })
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        let body = serde_json::to_vec(&payload(recovery))?;
        let mut wait: std::time::Duration = self.config.retry_backoff.into();
        let mut last_error = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            let mut request = self
                .client
                .post(&self.config.url)
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            // A fleet's claim on this recovery: every retry of it carries
            // the same key, and a later claim a higher one.
            if let Some(fence) = &recovery.fence {
                request = request.header("Idempotency-Key", fence.claim.to_string());
            }
            if let Some(secret) = &self.secret {
                let timestamp = unix_now();
                let signature = sign(secret, timestamp, &body)?;
                request = request
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(self.signature_header.clone(), signature);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let code = response.status().as_u16();
                    let done = format!("POST {} answered {code}", self.shown_url);
                    return Ok(Outcome::done(self.scrub(done))
                        .detail("status_code", code)
                        .detail("tries", attempt + 1));
                }
                Ok(response) if response.status().is_redirection() => {
                    // Following it would send the body (and its signature)
                    // somewhere nobody configured: fail, and say where.
                    let to = response
                        .headers()
                        .get(LOCATION)
                        .map(|location| self.location(location))
                        .unwrap_or_else(|| "no Location".to_owned());
                    let failed = format!(
                        "POST {} answered {}, a redirect to {to}: redirects are not followed",
                        self.shown_url,
                        response.status()
                    );
                    return Err(self.scrub(failed).into());
                }
                Ok(response) => last_error = format!("answered {}", response.status()),
                Err(err) if err.is_timeout() => {
                    last_error = format!("no answer within {}", self.config.timeout)
                }
                Err(err) if err.is_connect() => {
                    last_error = format!("cannot connect: {}", innermost(&err))
                }
                Err(err) => last_error = innermost(&err),
            }
        }
        let failed = format!(
            "POST {} failed after {} tries: {last_error}",
            self.shown_url,
            self.config.retries + 1
        );
        Err(self.scrub(failed).into())
    }
}

impl Webhook {
    /// A Location header as it may be shown: absolute, credentials
    /// redacted, at most 300 bytes.
    fn location(&self, location: &HeaderValue) -> String {
        let text = String::from_utf8_lossy(location.as_bytes());
        let shown = reqwest::Url::parse(&self.config.url)
            .and_then(|base| base.join(&text))
            .map_or_else(|_| text.into_owned(), |url| shown_url(&url));
        let mut end = shown.len().min(300);
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown[..end].to_owned()
    }

    /// `text` with every known secret replaced ([`redact::known`]: a last
    /// resort, as messages are built from redacted parts already).
    fn scrub(&self, text: String) -> String {
        redact::known(&text, &self.secrets)
    }
}

/// `url` without its query string and fragment (they may carry a token),
/// and with the password (or a lone user name, which may be a token)
/// redacted ([`redact::url`]): `http://user:<redacted>@host/path`.
fn shown_url(url: &reqwest::Url) -> String {
    let mut bare = url.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    redact::url(bare.as_str())
}

/// Refuses an empty HMAC secret: signing with it would look like
/// protection and be none.
fn empty_secret(field: &str, why: &str) -> Error {
    format!("`{field}`: the HMAC secret is empty ({why}); remove `{field}` or set a secret").into()
}

/// The innermost cause of `err` (reqwest's own message names the URL).
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What the webhook receives: the anomaly (or finding) and the parameters.
fn payload(recovery: &Recovery) -> serde_json::Value {
    let params = if recovery.params.is_null() {
        serde_json::json!({})
    } else {
        recovery.params.clone()
    };
    let details = if recovery.finding.details.is_null() {
        serde_json::json!({})
    } else {
        recovery.finding.details.clone()
    };
    serde_json::json!({
        "anomaly": {
            "name": recovery.finding.kind,
            "details": details,
            "target": recovery.target,
            "severity": recovery.finding.severity,
            "summary": recovery.finding.summary,
        },
        "params": params,
        "attempt": recovery.attempt,
    })
}

fn mac(secret: &[u8]) -> Result<Hmac<Sha256>, Error> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .map_err(|err| format!("cannot use the HMAC secret: {err}").into())
}

/// The signature header's value: `sha256=<hex of HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> Result<String, Error> {
    let mut mac = mac(secret)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// The receiver's rule (plugins/webhook/README.md): recompute the HMAC over
/// `"<timestamp>.<body>"`, compare in constant time, and refuse a timestamp
/// more than [`MAX_SKEW_SECS`] from `now` (Unix seconds), so a captured
/// request re-sent later fails.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: u64,
) -> Result<(), String> {
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("{TIMESTAMP_HEADER} is not a Unix time: {timestamp:?}"))?;
    if now.abs_diff(sent) > MAX_SKEW_SECS {
        return Err(format!(
            "{TIMESTAMP_HEADER} {sent} is more than {MAX_SKEW_SECS} s from now ({now})"
        ));
    }
    let tag = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or("the signature is not sha256=<hex>")?;
    let mut mac = mac(secret).map_err(|err| err.to_string())?;
    mac.update(timestamp.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| "the signature does not match".to_owned())
}

/// Installs rustls' `ring` provider for this package.
fn init() -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(())
}

healer_plugin_sdk::export_plugins! {
    init: init,
    recoverers: [Webhook],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// A request's head and body.
    type Request = (String, Vec<u8>);

    /// A test receiver on 127.0.0.1: answers every request with `answer`
    /// and keeps each request's head and body.
    struct Receiver {
        port: u16,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Receiver {
        fn start(answer: String) -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let kept = Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    if let Some(request) = read_request(&mut stream) {
                        kept.lock().unwrap().push(request);
                    }
                    let _ = stream.write_all(answer.as_bytes());
                }
            });
            Receiver { port, requests }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }
    }

    fn read_request(stream: &mut TcpStream) -> Option<Request> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length: usize = header(&head, "content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).ok()?;
        Some((head, body))
    }

    fn header(head: &str, name: &str) -> Option<String> {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    fn status(line: &str, extra: &str) -> String {
        format!("HTTP/1.1 {line}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n")
    }

    fn recovery() -> Recovery {
        Recovery {
            target: "api_latency.coinbase.high".into(),
            finding: healer_plugin_sdk::Finding::critical("api_latency.coinbase.high", "anomaly")
                .detail("latency_ms", 5000),
            attempt: 1,
            params: serde_json::json!({"service": "coinbase"}),
            fence: None,
        }
    }

    fn call(config: serde_json::Value) -> Result<Outcome, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut webhook = Webhook::new(serde_json::from_value(config).unwrap()).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(webhook.recover(&recovery()))
            .map_err(|err| err.to_string())
    }

    fn secret_file(dir: &tempfile::TempDir, secret: &str) -> PathBuf {
        let path = dir.path().join("webhook.key");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut rfc = mac(b"Jefe").unwrap();
        rfc.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(rfc.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut signed = mac(b"Jefe").unwrap();
        signed.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, b"{\"a\":1}").unwrap(),
            format!("sha256={}", hex::encode(signed.finalize().into_bytes()))
        );
    }

    #[test]
    fn a_signature_verifies_now_and_fails_when_replayed_ten_minutes_later() {
        let now = 1_700_000_000;
        let body = br#"{"anomaly":{}}"#;
        let signature = sign(b"s3cret", now, body).unwrap();
        let timestamp = now.to_string();
        assert_eq!(
            verify(b"s3cret", &timestamp, body, &signature, now + 60),
            Ok(())
        );
        let replayed = verify(b"s3cret", &timestamp, body, &signature, now + 600);
        assert!(replayed.unwrap_err().contains("more than 300 s"));
        assert!(verify(b"s3cret", &timestamp, b"{}", &signature, now).is_err());
        assert!(verify(b"other", &timestamp, body, &signature, now).is_err());
        // A fresh timestamp on the old signature does not verify either.
        let later = (now + 600).to_string();
        assert!(verify(b"s3cret", &later, body, &signature, now + 600).is_err());
    }

    #[test]
    fn a_signed_request_carries_a_timestamp_and_a_signature_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(status("200 OK", ""));
        let outcome = call(serde_json::json!({
            "url": receiver.url("/hook"),
            "hmac_secret_file": secret_file(&dir, "s3cret-key"),
        }))
        .unwrap();
        assert_eq!(
            outcome.summary,
            format!("POST {} answered 200", receiver.url("/hook"))
        );
        let (head, body) = receiver.requests().remove(0);
        let timestamp = header(&head, TIMESTAMP_HEADER).expect("a timestamp header");
        let signature = header(&head, "X-Healer-Signature").expect("a signature header");
        assert_eq!(
            verify(b"s3cret-key", &timestamp, &body, &signature, unix_now()),
            Ok(())
        );
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["anomaly"]["name"], "api_latency.coinbase.high");
        assert_eq!(sent["anomaly"]["details"]["latency_ms"], 5000);
        assert_eq!(sent["params"]["service"], "coinbase");
    }

    #[test]
    fn a_redirect_is_a_failure_naming_the_location_and_is_not_followed() {
        let second = Receiver::start(status("200 OK", ""));
        let location = format!("location: {}\r\n", second.url("/elsewhere"));
        let first = Receiver::start(status("302 Found", &location));
        let err = call(serde_json::json!({
            "url": first.url("/hook"),
            "retries": 2,
            "retry_backoff": "10ms",
        }))
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "POST {} answered 302 Found, a redirect to {}: redirects are not followed",
                first.url("/hook"),
                second.url("/elsewhere")
            )
        );
        assert_eq!(first.requests().len(), 1, "a redirect is not retried");
        assert!(second.requests().is_empty(), "the redirect was followed");
    }

    #[test]
    fn no_secret_appears_in_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = call(serde_json::json!({
            "url": format!("http://healer:pa55word@127.0.0.1:{closed}/hook"),
            "headers": {"Authorization": "Bearer t0ken-value"},
            "hmac_secret_file": secret_file(&dir, "hmac-s3cret"),
            "retries": 0,
        }))
        .unwrap_err();
        assert!(err.starts_with(&format!("POST http://healer:<redacted>@127.0.0.1:{closed}/hook failed after 1 tries: cannot connect")), "{err}");
        for secret in ["pa55word", "t0ken-value", "hmac-s3cret"] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }
        let receiver = Receiver::start(status("500 Internal Server Error", ""));
        let url = receiver
            .url("/hook")
            .replace("http://", "http://s3cret-token@");
        let err = call(serde_json::json!({ "url": url, "retries": 0 })).unwrap_err();
        assert!(err.contains("http://<redacted>@127.0.0.1"), "{err}");
        assert!(!err.contains("s3cret-token"), "{err}");
        assert!(err.ends_with("answered 500 Internal Server Error"), "{err}");
    }

    #[test]
    fn no_secret_appears_in_a_success_or_a_redirect() {
        let elsewhere = "http://user:l0cation-pass@127.0.0.1:9/x";
        let receiver = Receiver::start(status(
            "307 Temporary Redirect",
            &format!("location: {elsewhere}\r\n"),
        ));
        let url = receiver
            .url("/hook")
            .replace("http://", "http://healer:pa55word@");
        let err = call(serde_json::json!({ "url": url, "retries": 0 })).unwrap_err();
        assert!(err.contains("http://healer:<redacted>@127.0.0.1"), "{err}");
        assert!(
            err.contains("a redirect to http://user:<redacted>@127.0.0.1:9/x"),
            "{err}"
        );
        assert!(
            !err.contains("pa55word") && !err.contains("l0cation-pass"),
            "{err}"
        );
        let ok = Receiver::start(status("200 OK", ""));
        let url = ok
            .url("/hook")
            .replace("http://", "http://healer:pa55word@");
        let outcome = call(serde_json::json!({ "url": url })).unwrap();
        assert!(!outcome.summary.contains("pa55word"), "{}", outcome.summary);
    }

    #[test]
    fn the_url_is_shown_without_its_query_string() {
        let ok = Receiver::start(status("200 OK", ""));
        let url = ok
            .url("/hook?token=s3cret-token&source=healer")
            .replace("http://", "http://healer:pa55word@");
        let outcome = call(serde_json::json!({ "url": url })).unwrap();
        assert_eq!(
            outcome.summary,
            format!(
                "POST http://healer:<redacted>@127.0.0.1:{}/hook answered 200",
                ok.port
            )
        );
        // The request itself still carries the query.
        let (head, _) = ok.requests().remove(0);
        assert!(
            head.starts_with("POST /hook?token=s3cret-token&source=healer "),
            "{head}"
        );
        let failing = Receiver::start(status("500 Internal Server Error", ""));
        let err = call(serde_json::json!({
            "url": failing.url("/hook?sig=s3cret-token#frag"),
            "retries": 0,
        }))
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "POST http://127.0.0.1:{}/hook failed after 1 tries: answered 500 Internal Server Error",
                failing.port
            )
        );
        let redirect = Receiver::start(status(
            "302 Found",
            "location: http://127.0.0.1:9/elsewhere?key=l0cation-token\r\n",
        ));
        let err =
            call(serde_json::json!({ "url": redirect.url("/hook"), "retries": 0 })).unwrap_err();
        assert!(
            err.contains("a redirect to http://127.0.0.1:9/elsewhere: "),
            "{err}"
        );
        assert!(!err.contains("l0cation-token"), "{err}");
    }

    #[test]
    fn an_empty_hmac_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let new = |config: serde_json::Value| {
            Webhook::new(serde_json::from_value(config).unwrap())
                .err()
                .map(|err| err.to_string())
        };
        let path = secret_file(&dir, "  ");
        assert_eq!(
            new(serde_json::json!({ "url": "http://127.0.0.1:9/", "hmac_secret_file": path })),
            Some(format!(
                "`hmac_secret_file`: the HMAC secret is empty (the first line of {} is empty); \
                 remove `hmac_secret_file` or set a secret",
                path.display()
            ))
        );
        let path = secret_file(&dir, "s3cret");
        assert_eq!(
            new(serde_json::json!({ "url": "http://127.0.0.1:9/", "hmac_secret_file": path })),
            None
        );
    }

    /// Set (empty) in the copy of this test binary that
    /// [`an_empty_hmac_secret_in_the_environment_is_refused`] runs.
    const EMPTY_SECRET: &str = "HEALER_TEST_WEBHOOK_EMPTY_SECRET";

    #[test]
    fn an_empty_hmac_secret_in_the_environment_is_refused() {
        if !healer_plugin_sdk::testing::is_alone() {
            // Setting a variable here would race other tests' threads that
            // read the environment through libc (getenv in glibc's resolver,
            // ...): run this test alone in a copy of this binary whose
            // environment has it from the start.
            healer_plugin_sdk::testing::run_alone(
                &[],
                "tests::an_empty_hmac_secret_in_the_environment_is_refused",
                &[(EMPTY_SECRET, "")],
            );
            return;
        }
        let err = Webhook::new(
            serde_json::from_value(serde_json::json!({
                "url": "http://127.0.0.1:9/",
                "hmac_secret_env": EMPTY_SECRET,
            }))
            .unwrap(),
        )
        .err()
        .map(|err| err.to_string());
        assert_eq!(
            err,
            Some(
                "`hmac_secret_env`: the HMAC secret is empty (HEALER_TEST_WEBHOOK_EMPTY_SECRET \
                 is empty); remove `hmac_secret_env` or set a secret"
                    .to_owned()
            )
        );
    }

    #[test]
    fn an_invalid_url_is_refused_without_quoting_it() {
        let config = serde_json::json!({ "url": "http://user:pa55word@[::1" });
        let err = Webhook::new(serde_json::from_value(config).unwrap())
            .err()
            .unwrap();
        assert!(!err.to_string().contains("pa55word"), "{err}");
    }
}
