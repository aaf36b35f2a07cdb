//! The `http` monitor.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Instant;

use healer_plugin_sdk::{Duration, Error, Monitor, Observation};
use regex::Regex;
use serde::Deserialize;

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
# body_regex = '"status":\s*"ok"'  # the body must match (default: not checked)
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
        let client = reqwest::Client::builder()
            .timeout(config.timeout.into())
            .tls_danger_accept_invalid_certs(!config.tls_verify)
            .user_agent(concat!("healer-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(HttpMonitor {
            client,
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
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Ok(failed(&self.config, &err)),
        };
        let code = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return Ok(failed(&self.config, &err)),
        };
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

/// A request that got no (complete) answer.
fn failed(config: &Config, err: &reqwest::Error) -> Observation {
    let refused = causes(err)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    let (kind, summary) = if err.is_timeout() {
        ("timeout", format!("no answer within {}", config.timeout))
    } else if refused {
        ("refused", "connection refused".to_owned())
    } else if err.is_connect() {
        ("connect", format!("cannot connect: {}", innermost(err)))
    } else {
        ("error", format!("request failed: {}", innermost(err)))
    };
    Observation::critical(summary)
        .detail("error", kind)
        .detail("url", config.url.clone())
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
