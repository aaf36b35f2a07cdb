//! The `http` monitor. CRITICAL only on an answer (or the lack of one) from
//! the service: a status not accepted, a body that does not match, no answer
//! within the timeout, a connection refused, reset or closed unanswered.
//! What healer itself could not do (resolve the name, open a socket, set up
//! TLS) is UNKNOWN.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use healer_plugin_sdk::{tokio, Duration, Error, Monitor, Observation};
use regex::Regex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

/// The most of a response body that is read (and matched by `body_regex`);
/// the rest is not read, so a huge answer cannot grow healer's memory.
pub const MAX_BODY: usize = 64 * 1024;

/// Options of the `http` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    /// Accepted status codes; empty means any 2xx or 3xx.
    #[serde(default)]
    expect_status: Vec<u16>,
    body_regex: Option<String>,
    /// WARNING when the answer takes longer than this.
    max_latency: Option<Duration>,
    #[serde(default = "default_timeout")]
    timeout: Duration,
    #[serde(default = "yes")]
    tls_verify: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn yes() -> bool {
    true
}

/// Requests one URL per check.
pub struct HttpMonitor {
    client: reqwest::Client,
    lookup: Lookup,
    method: reqwest::Method,
    body_regex: Option<Regex>,
    config: Config,
}

impl Monitor for HttpMonitor {
    type Config = Config;
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str = "requests a URL: status code, latency, body regex";
    const SAMPLE_CONFIG: &'static str = r#"url = "http://127.0.0.1:8080/health"
method = "GET"                 # any HTTP method
headers = { Accept = "application/json" }
# body = '{"ping": true}'      # request body (default none)
expect_status = [200]          # accepted codes (default: any 2xx or 3xx)
# body_regex = '"status":\s*"ok"'  # the first 64 KiB of the body must match (default: not checked)
max_latency = "500ms"          # WARNING when slower (default: no limit)
timeout = "5s"                 # CRITICAL with no answer within this
tls_verify = true              # check the server's certificate
"#;

    fn new(config: Config) -> Result<Self, Error> {
        let method = reqwest::Method::from_bytes(config.method.to_uppercase().as_bytes())
            .map_err(|_| format!("invalid `method` {:?}", config.method))?;
        reqwest::Url::parse(&config.url)
            .map_err(|err| format!("invalid `url` {:?}: {err}", config.url))?;
        let body_regex = match &config.body_regex {
            Some(text) => {
                Some(Regex::new(text).map_err(|err| format!("invalid `body_regex`: {err}"))?)
            }
            None => None,
        };
        let lookup = Lookup::default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout.into())
            .dns_resolver(lookup.clone())
            .tls_danger_accept_invalid_certs(!config.tls_verify)
            .user_agent(concat!("healer-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(HttpMonitor {
            client,
            lookup,
            method,
            body_regex,
            config,
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let mut request = self.client.request(self.method.clone(), &self.config.url);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &self.config.body {
            request = request.body(body.clone());
        }
        let started = Instant::now();
        self.lookup.under_way.store(false, Ordering::Relaxed);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Ok(failed(&self.config, &self.lookup, &err)),
        };
        let code = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY - body.len())])
                }
                Ok(None) => break,
                Err(err) => return Ok(failed(&self.config, &self.lookup, &err)),
            }
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let seen = |observation: Observation| {
            observation
                .metric("status_code", f64::from(code), "")
                .metric("latency", latency_ms, "ms")
                .metric("body_bytes", body.len() as f64, "B")
                .detail("status_code", code)
                .detail("url", self.config.url.clone())
        };
        let expected = if self.config.expect_status.is_empty() {
            (200..400).contains(&code)
        } else {
            self.config.expect_status.contains(&code)
        };
        if !expected {
            return Ok(seen(Observation::critical(format!(
                "answered {code} in {latency_ms:.0} ms"
            ))));
        }
        if let Some(regex) = &self.body_regex {
            if !regex.is_match(&String::from_utf8_lossy(&body)) {
                return Ok(seen(Observation::critical(format!(
                    "answered {code} but the body does not match /{regex}/"
                )))
                .detail("error", "body_mismatch"));
            }
        }
        if let Some(limit) = self.config.max_latency {
            if latency_ms > limit.as_secs_f64() * 1000.0 {
                return Ok(seen(Observation::warning(format!(
                    "answered {code} in {latency_ms:.0} ms, slower than {limit}"
                )))
                .detail("error", "slow"));
            }
        }
        Ok(seen(Observation::ok(format!(
            "answered {code} in {latency_ms:.0} ms"
        ))))
    }
}

/// A request that got no (complete) answer: CRITICAL when the service
/// refused, reset or did not answer in time, UNKNOWN when healer could not
/// ask (DNS, local socket errors, TLS set-up, ...).
fn failed(config: &Config, lookup: &Lookup, err: &reqwest::Error) -> Observation {
    let io_kind = |kinds: &[std::io::ErrorKind]| {
        causes(err)
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|e| kinds.contains(&e.kind()))
    };
    let dns = causes(err).find_map(|e| e.downcast_ref::<LookupFailed>());
    let closed = causes(err)
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .any(hyper::Error::is_incomplete_message);
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    let (seen, kind) = if let Some(dns) = dns {
        (Observation::unknown(dns.to_string()), "dns")
    } else if err.is_timeout() && lookup.under_way.load(Ordering::Relaxed) {
        let host = reqwest::Url::parse(&config.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let why = format!(
            "cannot resolve {host}: no answer from DNS within {}",
            config.timeout
        );
        (Observation::unknown(why), "dns")
    } else if err.is_timeout() {
        let why = format!("no answer within {}", config.timeout);
        (Observation::critical(why), "timeout")
    } else if io_kind(&[ConnectionRefused]) {
        (Observation::critical("connection refused"), "refused")
    } else if closed || io_kind(&[ConnectionReset, ConnectionAborted]) {
        let why = format!("the connection was closed unanswered: {}", innermost(err));
        (Observation::critical(why), "reset")
    } else if err.is_connect() {
        let why = format!("cannot connect: {}", innermost(err));
        (Observation::unknown(why), "connect")
    } else {
        let why = format!("request failed: {}", innermost(err));
        (Observation::unknown(why), "error")
    };
    seen.detail("error", kind).detail("url", config.url.clone())
}

/// The system resolver, telling its failures apart from the service's and
/// whether a lookup was under way when a check timed out.
#[derive(Clone, Default)]
struct Lookup {
    under_way: Arc<AtomicBool>,
}

/// A name that did not resolve: no evidence about the service.
#[derive(Debug)]
struct LookupFailed(String);

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LookupFailed {}

impl Resolve for Lookup {
    fn resolve(&self, name: Name) -> Resolving {
        let under_way = Arc::clone(&self.under_way);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            under_way.store(true, Ordering::Relaxed);
            let found = tokio::net::lookup_host((host.as_str(), 0)).await;
            under_way.store(false, Ordering::Relaxed);
            let addrs: Vec<SocketAddr> = match found {
                Ok(addrs) => addrs.collect(),
                Err(err) => {
                    let why = format!("cannot resolve {host}: {err}");
                    return Err(Box::new(LookupFailed(why)) as _);
                }
            };
            if addrs.is_empty() {
                let why = format!("cannot resolve {host}: no address");
                return Err(Box::new(LookupFailed(why)) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn innermost(err: &reqwest::Error) -> String {
    causes(err)
        .last()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

/// The chain of errors under `err`.
fn causes<'a>(
    err: &'a reqwest::Error,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(err.source(), |e| (*e).source())
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Status;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// What a one-connection test server does with its request.
    enum Serve {
        Answer(Vec<u8>),
        Close,
        Hang,
    }

    /// A server on 127.0.0.1 that handles one connection; its URL.
    fn server(serve: Serve) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            match serve {
                Serve::Answer(bytes) => {
                    let _ = stream.write_all(&bytes);
                }
                Serve::Close => drop(stream),
                Serve::Hang => std::thread::sleep(std::time::Duration::from_secs(5)),
            }
        });
        url
    }

    fn check(config: serde_json::Value) -> Observation {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut monitor = HttpMonitor::new(serde_json::from_value(config).unwrap()).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(monitor.check())
            .unwrap()
    }

    fn answer(status: &str, body: &[u8]) -> Serve {
        let mut bytes = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Serve::Answer(bytes)
    }

    #[test]
    fn an_unaccepted_status_is_critical() {
        let seen =
            check(serde_json::json!({ "url": server(answer("503 Service Unavailable", b"")) }));
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(seen.details["status_code"], 503);
    }

    #[test]
    fn a_refused_connection_is_critical() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let seen = check(serde_json::json!({ "url": format!("http://127.0.0.1:{port}/") }));
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(seen.summary, "connection refused");
    }

    #[test]
    fn a_connection_closed_unanswered_is_critical() {
        let seen = check(serde_json::json!({ "url": server(Serve::Close) }));
        assert_eq!(seen.status, Status::Critical, "{}", seen.summary);
        assert_eq!(seen.details["error"], "reset");
    }

    #[test]
    fn no_answer_within_the_timeout_is_critical() {
        let seen = check(serde_json::json!({ "url": server(Serve::Hang), "timeout": "300ms" }));
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(seen.summary, "no answer within 300ms");
    }

    #[test]
    fn a_name_that_does_not_resolve_is_unknown_not_critical() {
        let seen =
            check(serde_json::json!({ "url": "http://healer-test.invalid/", "timeout": "3s" }));
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(
            seen.summary
                .starts_with("cannot resolve healer-test.invalid"),
            "{}",
            seen.summary
        );
        assert_eq!(seen.details["error"], "dns");
    }

    #[test]
    fn a_local_socket_error_is_unknown_not_critical() {
        // Connecting to the broadcast address fails in this host's own
        // network stack (EACCES or ENETUNREACH), not at any service.
        let seen =
            check(serde_json::json!({ "url": "http://255.255.255.255:9/", "timeout": "3s" }));
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(
            seen.summary.starts_with("cannot connect: "),
            "{}",
            seen.summary
        );
    }

    #[test]
    fn only_the_first_64_kib_of_the_body_are_read() {
        let mut body = vec![b'x'; 1024 * 1024];
        body.extend_from_slice(b"status: ok");
        let seen = check(serde_json::json!({
            "url": server(answer("200 OK", &body)),
            "body_regex": "status: ok",
        }));
        assert_eq!(seen.metric_value("body_bytes"), Some(MAX_BODY as f64));
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(seen.details["error"], "body_mismatch");
        let seen = check(serde_json::json!({
            "url": server(answer("200 OK", b"{\"status\": \"ok\"}")),
            "body_regex": "ok",
        }));
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
    }
}
