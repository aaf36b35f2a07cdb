//! The `http` monitor. CRITICAL only on an answer (or the lack of one) from
//! the service: a status not accepted, a body that does not match, no answer
//! within the timeout, a connection refused, reset or closed unanswered, a
//! TLS certificate that is bad whatever this machine's clock and trust
//! (issued for another name, badly signed, malformed).
//! What healer itself could not do or judge (resolve the name, open a
//! socket, a certificate judged on this machine's clock or CA store, any
//! other TLS failure) is UNKNOWN.
//!
//! Each check opens a new connection: a pooled one would hide a server that
//! no longer accepts any. The URL is shown redacted ([`redact::url`]: its
//! password and the values of query parameters that name a secret).

use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use healer_plugin_sdk::{redact, tokio, Duration, Error, Monitor, Observation};
use regex::Regex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

use crate::plain::{Failure, Plain};

/// The most of a response body that is read (and matched by `body_regex`);
/// the rest is not read, so a huge answer cannot grow healer's memory.
pub const MAX_BODY: usize = 64 * 1024;

/// Adds what of `chunk` still fits in [`MAX_BODY`] to `body`.
pub fn keep_body(body: &mut Vec<u8>, chunk: &[u8]) {
    body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY.saturating_sub(body.len()))]);
}

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
    /// The URL as it may be shown: see [`redact::url`].
    shown_url: String,
    /// The URL's host, as the resolver sees it.
    host: String,
    /// The URL, parsed once (not once per check).
    url: reqwest::Url,
    /// The light path, for plain HTTP to an IP address.
    plain: Option<Plain>,
    config: Config,
}

impl Monitor for HttpMonitor {
    type Config = Config;
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str = "requests a URL: status code, latency, body regex";
    const SAMPLE_CONFIG: &'static str = r#"url = "http://127.0.0.1:8080/health"
method = "GET"                 # any HTTP method but CONNECT
headers = { Accept = "application/json" }
# body = '{"ping": true}'      # request body (default none)
expect_status = [200]          # accepted codes (default: any 2xx or 3xx)
# body_regex = '"status":\s*"ok"'  # the first 64 KiB of the body must match (default: not checked)
max_latency = "500ms"          # WARNING when slower (default: no limit)
timeout = "5s"                 # CRITICAL with no answer within this
tls_verify = true              # check the server's certificate
"#;

    fn new(config: Config) -> Result<Self, Error> {
        HttpMonitor::trusting(config, Vec::new())
    }

    /// A hung server is `http.timeout` after `timeout`.
    fn own_timeout(config: &Config) -> Option<Duration> {
        Some(config.timeout)
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let started = Instant::now();
        let answered = match &self.plain {
            Some(plain) => match plain.request(self.config.timeout.into()).await {
                // A redirect: asked again through the client that follows
                // it, as every request to this URL was before the light path.
                Ok(None) => self.request().await,
                Ok(Some(answered)) => Ok(answered),
                Err(failure) => Err(failure),
            },
            None => self.request().await,
        };
        let (code, body) = match answered {
            Ok(answered) => answered,
            Err(failure) => return Ok(self.failed(failure)),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let seen = |observation: Observation| {
            observation
                .metric("status_code", f64::from(code), "")
                .metric("latency", latency_ms, "ms")
                .metric("body_bytes", body.len() as f64, "B")
                .detail("status_code", code)
                .detail("url", self.shown_url.clone())
                .fact("http.answered", true)
                .fact("http.status_code", code)
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

impl HttpMonitor {
    /// The monitor, its client trusting `roots` besides this machine's CA
    /// store (only tests add any).
    fn trusting(config: Config, roots: Vec<reqwest::Certificate>) -> Result<Self, Error> {
        let method =
            reqwest::Method::from_bytes(config.method.to_uppercase().as_bytes()).map_err(|_| {
                format!(
                    "invalid value for `method`: {:?} is not an HTTP method",
                    config.method
                )
            })?;
        if method == reqwest::Method::CONNECT {
            return Err(
                "invalid value for `method`: CONNECT opens a tunnel, which a \
                        check cannot judge; use GET, HEAD or the method the service answers"
                    .into(),
            );
        }
        // The URL may hold a password or a token: errors never quote it.
        let url =
            reqwest::Url::parse(&config.url).map_err(|err| format!("invalid `url`: {err}"))?;
        let body_regex = match &config.body_regex {
            Some(text) => {
                Some(Regex::new(text).map_err(|err| format!("invalid `body_regex`: {err}"))?)
            }
            None => None,
        };
        let (client, lookup) = if roots.is_empty() {
            shared_client(config.tls_verify)?
        } else {
            client(config.tls_verify, roots)?
        };
        let plain = Plain::of(&url, &method, &config.headers, config.body.as_deref())?;
        Ok(HttpMonitor {
            plain,
            client,
            lookup,
            method,
            body_regex,
            shown_url: redact::url(url.as_str()),
            host: url.host_str().unwrap_or_default().to_owned(),
            url,
            config,
        })
    }

    /// One request through reqwest's client: the status code and at most
    /// [`MAX_BODY`] bytes of the body.
    async fn request(&self) -> Result<(u16, Vec<u8>), Failure> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .timeout(self.config.timeout.into());
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &self.config.body {
            request = request.body(body.clone());
        }
        let mut response = request.send().await.map_err(|err| self.failure(&err))?;
        let code = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => keep_body(&mut body, &chunk),
                Ok(None) => break,
                Err(err) => return Err(self.failure(&err)),
            }
        }
        Ok((code, body))
    }

    /// A request that got no (complete) answer: CRITICAL when the service
    /// refused, reset or did not answer in time, or presented a certificate
    /// that is bad whatever this machine's clock and trust; UNKNOWN when
    /// healer could not ask (DNS, local socket errors, any other TLS
    /// failure, ...) or judged the certificate on its own clock or CA store
    /// (expired, not valid yet, an unknown issuer, ...).
    fn failed(&self, failure: Failure) -> Observation {
        let (seen, kind) = match failure {
            Failure::Dns(why) => (Observation::unknown(why), "dns"),
            Failure::DnsTimedOut => {
                let why = format!(
                    "cannot resolve {}: no answer from DNS within {}",
                    self.host, self.config.timeout
                );
                (Observation::unknown(why), "dns")
            }
            Failure::TimedOut => {
                let why = format!("no answer within {}", self.config.timeout);
                (Observation::critical(why), "timeout")
            }
            Failure::Refused => (Observation::critical("connection refused"), "refused"),
            Failure::Certificate { error, local: None } => {
                let why = format!("the server's TLS certificate does not verify: {error}");
                (Observation::critical(why), "certificate")
            }
            Failure::Certificate {
                error,
                local: Some(what),
            } => {
                let why = format!("the TLS certificate of {} {what}: {error}", self.shown_url);
                (Observation::unknown(why), "certificate")
            }
            Failure::Closed(why) => {
                let why = format!("the connection was closed unanswered: {why}");
                (Observation::critical(why), "reset")
            }
            Failure::Connect(why) => (
                Observation::unknown(format!("cannot connect: {why}")),
                "connect",
            ),
            Failure::Other(why) => (
                Observation::unknown(format!("request failed: {why}")),
                "error",
            ),
        };
        seen.detail("error", kind)
            .detail("url", self.shown_url.clone())
    }

    /// What a reqwest error says about the service.
    fn failure(&self, err: &reqwest::Error) -> Failure {
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
        if let Some(dns) = dns {
            Failure::Dns(dns.to_string())
        } else if err.is_timeout() && self.lookup.resolving(&self.host) {
            Failure::DnsTimedOut
        } else if err.is_timeout() {
            Failure::TimedOut
        } else if io_kind(&[ConnectionRefused]) {
            Failure::Refused
        } else if let Some((bad, verdict)) = causes(err).find_map(bad_certificate) {
            let local = match verdict {
                Verdict::Server => None,
                Verdict::Local(what) => Some(what),
            };
            Failure::Certificate {
                error: bad.to_string(),
                local,
            }
        } else if closed || io_kind(&[ConnectionReset, ConnectionAborted]) {
            Failure::Closed(innermost(err))
        } else if err.is_connect() {
            Failure::Connect(innermost(err))
        } else {
            Failure::Other(innermost(err))
        }
    }
}

/// Whose evidence a certificate error is.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The server's certificate is bad whatever this machine's clock, CA
    /// store or revocation lists: CRITICAL.
    Server,
    /// Judged on this machine's own state (its clock, CA store, revocation
    /// lists) or healer's own verifier: UNKNOWN, as a wrong clock or a
    /// missing CA would make a good service look bad. What was found and how.
    Local(&'static str),
}

/// The certificate error in `err`, when the server's certificate was
/// refused, and whose evidence it is ([`Verdict`]). `None` for every other
/// TLS error (a protocol or local failure, a revocation status or list
/// healer cannot read, an algorithm healer does not support), which says
/// nothing about the service.
fn bad_certificate<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<(&'a rustls::CertificateError, Verdict)> {
    // rustls' error reaches reqwest inside io::Errors (one in another),
    // whose `source` skips the error they wrap: unwrap them.
    let mut inner = err;
    let tls = loop {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            break tls;
        }
        inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
    };
    let rustls::Error::InvalidCertificate(certificate) = tls else {
        return None;
    };
    Some((certificate, verdict(certificate)?))
}

/// Whose evidence `certificate` is; `None` when it says nothing about the
/// server's certificate.
fn verdict(certificate: &rustls::CertificateError) -> Option<Verdict> {
    use rustls::CertificateError as E;
    let local = |what| Some(Verdict::Local(what));
    match certificate {
        // The same on any machine: what the server presented is wrong.
        // (The platform verifier reqwest uses on Linux hands a wrong
        // purpose on as an opaque `Other` error: UNKNOWN, `connect`.)
        E::BadEncoding
        | E::BadSignature
        | E::NotValidForName
        | E::NotValidForNameContext { .. }
        | E::InvalidPurpose
        | E::InvalidPurposeContext { .. } => Some(Verdict::Server),
        // Validity dates are read on this machine's clock.
        E::Expired | E::ExpiredContext { .. } => {
            local("has expired (judged by this machine's clock)")
        }
        E::NotValidYet | E::NotValidYetContext { .. } => {
            local("is not valid yet (judged by this machine's clock)")
        }
        // The issuer is looked for in this machine's CA store.
        E::UnknownIssuer => {
            local("has an issuer this machine does not trust (judged by this machine's CA store)")
        }
        E::Revoked => local("is revoked (judged by this machine's revocation lists)"),
        E::UnhandledCriticalExtension => {
            local("has a critical extension healer's verifier does not handle")
        }
        E::InvalidOcspResponse => {
            local("has an OCSP response that was refused (judged by this machine's clock)")
        }
        E::ApplicationVerificationFailure => local("was refused by healer's own verifier"),
        _ => None,
    }
}

/// The system resolver, telling its failures apart from the service's and
/// whether a lookup was under way when a check timed out.
#[derive(Clone, Default)]
struct Lookup {
    /// Host names being resolved now, with how many lookups of each.
    under_way: Arc<Mutex<HashMap<String, usize>>>,
}

impl Lookup {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.under_way.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a lookup of `host` is under way (a request to it that
    /// timed out may have been waiting for DNS). Shared by every monitor
    /// of the client: while one lookup of a host hangs, every request to
    /// that host waits for DNS too; a request that timed out on its
    /// connection while another's lookup of the same host just began is
    /// judged UNKNOWN, the side that never acts.
    fn resolving(&self, host: &str) -> bool {
        self.lock().get(host).is_some_and(|n| *n > 0)
    }
}

/// Marks a lookup of one host under way until dropped.
struct LookupUnderWay(Lookup, String);

impl Drop for LookupUnderWay {
    fn drop(&mut self) {
        let mut under_way = self.0.lock();
        if let Some(n) = under_way.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                under_way.remove(&self.1);
            }
        }
    }
}

/// The client every monitor of this package with the same `tls_verify`
/// shares: one connection setup, one set of TLS roots, however many
/// targets (each client holds its own copy of the roots, which for 1,000
/// targets was most of healer's memory). Timeouts are set per request.
fn shared_client(tls_verify: bool) -> Result<(reqwest::Client, Lookup), Error> {
    static CLIENTS: OnceLock<Mutex<HashMap<bool, (reqwest::Client, Lookup)>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = clients.get(&tls_verify) {
        return Ok(shared.clone());
    }
    let made = client(tls_verify, Vec::new())?;
    clients.insert(tls_verify, made.clone());
    Ok(made)
}

/// A new client, trusting `roots` besides this machine's CA store.
fn client(
    tls_verify: bool,
    roots: Vec<reqwest::Certificate>,
) -> Result<(reqwest::Client, Lookup), Error> {
    let lookup = Lookup::default();
    let client = reqwest::Client::builder()
        .dns_resolver(lookup.clone())
        .tls_danger_accept_invalid_certs(!tls_verify)
        .tls_certs_merge(roots)
        // A new connection per check: an idle pooled one could answer
        // for a server that accepts no new connections any more.
        .pool_max_idle_per_host(0)
        // The service itself, never a proxy named in healer's environment
        // (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY): a proxy's failure would be
        // blamed on the service, and the light path never uses one either.
        .no_proxy()
        .user_agent(concat!("healer-http/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    Ok((client, lookup))
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
        let lookup = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            *lookup.lock().entry(host.clone()).or_insert(0) += 1;
            let marked = LookupUnderWay(lookup, host.clone());
            let found = tokio::net::lookup_host((host.as_str(), 0)).await;
            drop(marked);
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

/// The innermost cause of `err`; `err` itself (its URL redacted) when it
/// has none.
fn innermost(err: &reqwest::Error) -> String {
    match causes(err).last() {
        Some(cause) => cause.to_string(),
        None => {
            let text = err.to_string();
            match err.url() {
                Some(url) => text.replace(url.as_str(), &redact::url(url.as_str())),
                None => text,
            }
        }
    }
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
    use std::sync::atomic::Ordering;

    /// Reads a request's head, up to its blank line, byte by byte (no
    /// more, so a body is left to read).
    fn read_head(stream: &mut std::net::TcpStream) -> Vec<u8> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        head
    }

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
            read_head(&mut stream);
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
        check_trusting(config, &[])
    }

    /// One check, the client trusting `roots` (PEM) besides this machine's
    /// CA store.
    fn check_trusting(config: serde_json::Value, roots: &[&str]) -> Observation {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = roots
            .iter()
            .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .collect();
        let mut monitor =
            HttpMonitor::trusting(serde_json::from_value(config).unwrap(), roots).unwrap();
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
    fn a_connect_method_is_refused_with_what_to_use_instead() {
        let config = serde_json::json!({ "url": "http://127.0.0.1:1/", "method": "connect" });
        let refused = HttpMonitor::trusting(serde_json::from_value(config).unwrap(), Vec::new())
            .err()
            .expect("CONNECT is refused");
        assert!(refused
            .to_string()
            .starts_with("invalid value for `method`: CONNECT opens a tunnel"));
        assert!(refused.to_string().contains("use GET, HEAD"));
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

    /// A self-signed certificate (CN healer-test-server, for localhost and
    /// 127.0.0.1, valid from 2000 to 2100) and its key: made for these tests
    /// only (`openssl ca -selfsign`), trusted by nobody.
    const SELF_SIGNED_CERT: &str = r#"-----BEGIN CERTIFICATE-----
MIIBjDCCATGgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJoZWFsZXIt
dGVzdC1zZXJ2ZXIwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEmhlYWxlci10ZXN0LXNlcnZlcjBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABK5XjvUfJgx5Mw/wMpL4lG2gMadgR/zGW2bRfHzZJwLBAjHB52CBNEkw
GmXORCXFgOfUZTsTd9BjWVj2p/0iqDyjYDBeMAwGA1UdEwEB/wQCMAAwGgYDVR0R
BBMwEYIJbG9jYWxob3N0hwR/AAABMBMGA1UdJQQMMAoGCCsGAQUFBwMBMB0GA1Ud
DgQWBBSgjTt1uma+p+Fj+Ku1ICbZEisHzTAKBggqhkjOPQQDAgNJADBGAiEAuZIf
ZBOnrRmtEtmqUMJdKeCSGMFWZGn+RiZWBeZq/1cCIQCRl7tLdYBdNUm1QF4aRhSG
H45/SCTOViEvuD8Lsu6q8A==
-----END CERTIFICATE-----"#;
    const SELF_SIGNED_KEY: &str = r#"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHUeNqJ8sAslBpsJJ
4Lo52qDG0A1qeVUsBNlx3CJs8k6hRANCAASuV471HyYMeTMP8DKS+JRtoDGnYEf8
xltm0Xx82ScCwQIxwedggTRJMBplzkQlxYDn1GU7E3fQY1lY9qf9Iqg8
-----END PRIVATE KEY-----"#;

    /// A CA made for these tests only (CN healer-test-ca, valid from 2000 to
    /// 2100, `openssl ca -selfsign`), trusted only where a test says so.
    const TEST_CA: &str = r#"-----BEGIN CERTIFICATE-----
MIIBZjCCAQugAwIBAgIBATAKBggqhkjOPQQDAjAZMRcwFQYDVQQDDA5oZWFsZXIt
dGVzdC1jYTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowGTEXMBUG
A1UEAwwOaGVhbGVyLXRlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQX
7ncSpolWA1i2KXh4pBKERTP8JlntxPjsTd2A17oz8fOv3y0SsTBOtik8wNngu02x
eJoEObVqNCjKSPIshtzbo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQE
AwIBBjAdBgNVHQ4EFgQU4C9RrM9qvNGSEV8xIsgocyKso8QwCgYIKoZIzj0EAwID
SQAwRgIhAOOrIuiRzxTQqAD+eC6D7jltNXYI8YsqD4BRe5TO07tkAiEA0+WIyjJm
lZksuP7pUoqVm1eJB6/oT2BlZlk3tqpdRCw=
-----END CERTIFICATE-----"#;
    /// Issued by [`TEST_CA`] for `other.example` only (valid from 2000 to
    /// 2100), for a server: presented by 127.0.0.1, it is for another name.
    const OTHER_NAME_CERT: &str = r#"-----BEGIN CERTIFICATE-----
MIIBpDCCAUugAwIBAgIBAjAKBggqhkjOPQQDAjAZMRcwFQYDVQQDDA5oZWFsZXIt
dGVzdC1jYTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowHDEaMBgG
A1UEAwwRaGVhbGVyLXRlc3Qtb3RoZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AATdmSUhyUFrSQu1SgiYn7JUDkMlbki4VUQDOX+J2fxwlqWgLmI2iqNL1Y/5iK8/
NxPplncthuhXdmKN6p9oE7rPo38wfTAMBgNVHRMBAf8EAjAAMBgGA1UdEQQRMA+C
DW90aGVyLmV4YW1wbGUwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYEFCNq
V74OONVeqXp29thJeD3WAuqRMB8GA1UdIwQYMBaAFOAvUazParzRkhFfMSLIKHMi
rKPEMAoGCCqGSM49BAMCA0cAMEQCIGBxM1ehK07fUuR6MB4owzIp7OF/t+Q5PSCV
CdbKbwm7AiAy+rox2/kIJ66fKuHP47PIVCZuvjAtKHIz1KbDbCAcWQ==
-----END CERTIFICATE-----"#;
    /// Issued by [`TEST_CA`] for localhost and 127.0.0.1, for a server,
    /// valid in 2000 only: expired on any sane clock.
    const EXPIRED_CERT: &str = r#"-----BEGIN CERTIFICATE-----
MIIBqTCCAU6gAwIBAgIBAzAKBggqhkjOPQQDAjAZMRcwFQYDVQQDDA5oZWFsZXIt
dGVzdC1jYTAeFw0wMDAxMDEwMDAwMDBaFw0wMTAxMDEwMDAwMDBaMB4xHDAaBgNV
BAMME2hlYWxlci10ZXN0LWV4cGlyZWQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AATdmSUhyUFrSQu1SgiYn7JUDkMlbki4VUQDOX+J2fxwlqWgLmI2iqNL1Y/5iK8/
NxPplncthuhXdmKN6p9oE7rPo4GBMH8wDAYDVR0TAQH/BAIwADAaBgNVHREEEzAR
gglsb2NhbGhvc3SHBH8AAAEwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYE
FCNqV74OONVeqXp29thJeD3WAuqRMB8GA1UdIwQYMBaAFOAvUazParzRkhFfMSLI
KHMirKPEMAoGCCqGSM49BAMCA0kAMEYCIQCCDBb3GDZucupBZrhidN1l9Cc0WN07
rXxJFe3iRht/uQIhAPfjf2CvLTBD7ao8JFDvYGgrB8JeOFTekTUKNR4krzFc
-----END CERTIFICATE-----"#;
    /// The key of [`OTHER_NAME_CERT`] and [`EXPIRED_CERT`].
    const ISSUED_KEY: &str = r#"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgP11qanfmHxJsUn1j
Q1AssForI4o5rJSnvbuP1qIxLnWhRANCAATdmSUhyUFrSQu1SgiYn7JUDkMlbki4
VUQDOX+J2fxwlqWgLmI2iqNL1Y/5iK8/NxPplncthuhXdmKN6p9oE7rP
-----END PRIVATE KEY-----"#;

    /// An HTTPS server on 127.0.0.1 presenting `cert` (with `key`) that
    /// answers 200 to each request, on its own thread; its URL.
    fn tls_server(cert: &str, key: &str) -> String {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let config = std::sync::Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/health", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                // A client that refuses the certificate ends the handshake:
                // the read fails, and the next connection is served.
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                if head.ends_with(b"\r\n\r\n") {
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
        url
    }

    #[test]
    fn a_certificate_of_an_issuer_this_machine_does_not_trust_is_unknown_not_critical() {
        // Self-signed: its issuer is in no CA store. That is judged on this
        // machine's CA store, which may lack a CA the service rightly uses.
        let url = tls_server(SELF_SIGNED_CERT, SELF_SIGNED_KEY);
        let seen = check(serde_json::json!({ "url": url, "timeout": "3s" }));
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert_eq!(seen.details["error"], "certificate");
        let expected = format!(
            "the TLS certificate of {url} has an issuer this machine does not trust \
             (judged by this machine's CA store): "
        );
        assert!(seen.summary.starts_with(&expected), "{}", seen.summary);
        assert!(seen.summary.contains("UnknownIssuer"), "{}", seen.summary);
        // The same server, its certificate not checked: TLS itself works.
        let seen = check(serde_json::json!({ "url": url, "tls_verify": false, "timeout": "3s" }));
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
        // Trusting its certificate as a CA, the request is answered: the
        // issuer was all that was wrong.
        let seen = check_trusting(
            serde_json::json!({ "url": url, "timeout": "3s" }),
            &[SELF_SIGNED_CERT],
        );
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
    }

    #[test]
    fn an_expired_certificate_is_unknown_not_critical() {
        // Issued by a CA the client trusts, for 127.0.0.1, but valid in 2000
        // only: expired on this machine's clock, which may be wrong.
        let url = tls_server(EXPIRED_CERT, ISSUED_KEY);
        let seen = check_trusting(
            serde_json::json!({ "url": url, "timeout": "3s" }),
            &[TEST_CA],
        );
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert_eq!(seen.details["error"], "certificate");
        let expected =
            format!("the TLS certificate of {url} has expired (judged by this machine's clock): ");
        assert!(seen.summary.starts_with(&expected), "{}", seen.summary);
    }

    #[test]
    fn a_certificate_for_another_name_is_critical() {
        // Issued by a CA the client trusts, in date, but for other.example:
        // wrong on any machine.
        let url = tls_server(OTHER_NAME_CERT, ISSUED_KEY);
        let seen = check_trusting(
            serde_json::json!({ "url": url, "timeout": "3s" }),
            &[TEST_CA],
        );
        assert_eq!(seen.status, Status::Critical, "{}", seen.summary);
        assert_eq!(seen.details["error"], "certificate");
        assert!(
            seen.summary
                .starts_with("the server's TLS certificate does not verify: "),
            "{}",
            seen.summary
        );
        assert!(seen.summary.contains("other.example"), "{}", seen.summary);
    }

    #[test]
    fn a_tls_failure_that_is_no_certificate_error_is_unknown() {
        // HTTPS to a server that speaks plain HTTP (it answers 400 at once):
        // the handshake fails on a record that is no TLS, not on a
        // certificate.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/health", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            std::thread::sleep(std::time::Duration::from_secs(1));
        });
        let seen = check(serde_json::json!({ "url": url, "timeout": "3s" }));
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert_eq!(seen.details["error"], "connect", "{}", seen.summary);
    }

    #[test]
    fn certificate_errors_of_the_server_are_told_from_other_tls_errors() {
        use rustls::CertificateError as E;
        // As hyper-rustls and reqwest hand it on: an io::Error in another.
        let in_io = |error: rustls::Error| {
            let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            std::io::Error::other(inner)
        };
        let local = |error: &E| matches!(verdict(error), Some(Verdict::Local(_)));
        for bad in [
            E::Expired,
            E::NotValidYet,
            E::UnknownIssuer,
            E::NotValidForName,
            E::BadSignature,
            E::Revoked,
        ] {
            let err = in_io(rustls::Error::InvalidCertificate(bad.clone()));
            assert_eq!(bad_certificate(&err).map(|(e, _)| e), Some(&bad));
            let err = rustls::Error::InvalidCertificate(bad.clone());
            assert_eq!(bad_certificate(&err).map(|(e, _)| e), Some(&bad));
        }
        // Judged on this machine's clock, CA store or revocation lists, or
        // by healer's own verifier: no evidence about the server.
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1));
        for judged in [
            E::Expired,
            E::ExpiredContext {
                time: now,
                not_after: now,
            },
            E::NotValidYet,
            E::NotValidYetContext {
                time: now,
                not_before: now,
            },
            E::UnknownIssuer,
            E::Revoked,
            E::UnhandledCriticalExtension,
            E::InvalidOcspResponse,
            E::ApplicationVerificationFailure,
        ] {
            assert!(local(&judged), "{judged:?}");
        }
        // Wrong whatever this machine's state.
        for wrong in [
            E::BadEncoding,
            E::BadSignature,
            E::NotValidForName,
            E::InvalidPurpose,
        ] {
            assert_eq!(verdict(&wrong), Some(Verdict::Server), "{wrong:?}");
        }
        for other in [
            rustls::Error::InvalidCertificate(E::UnknownRevocationStatus),
            rustls::Error::General("no CA certificates".into()),
            rustls::Error::NoCertificatesPresented,
        ] {
            assert_eq!(bad_certificate(&in_io(other.clone())), None, "{other}");
        }
        let local = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(bad_certificate(&local), None);
    }

    #[test]
    fn a_url_is_shown_without_its_password_and_secret_query_values() {
        let shown = |url: &str| redact::url(reqwest::Url::parse(url).unwrap().as_str());
        assert_eq!(
            shown("https://healer:pa55word@example.com/health"),
            "https://healer:<redacted>@example.com/health"
        );
        assert_eq!(
            shown("https://t0ken-only@example.com/"),
            "https://<redacted>@example.com/"
        );
        assert_eq!(
            shown("https://example.com/h?access_token=abc&page=2&API_KEY=xyz&X-Amz-Signature=s1g&passwd=p&auth=a&client_secret=c&credentials=k&password=q"),
            "https://example.com/h?access_token=<redacted>&page=2&API_KEY=<redacted>&X-Amz-Signature=<redacted>&passwd=<redacted>&auth=<redacted>&client_secret=<redacted>&credentials=<redacted>&password=<redacted>"
        );
        // Encoded names are read decoded; other parameters stay as written.
        assert_eq!(
            shown("http://example.com/?%74oken=abc&q=a%20b&flag&empty="),
            "http://example.com/?%74oken=<redacted>&q=a%20b&flag&empty="
        );
        assert_eq!(
            shown("http://example.com/health"),
            "http://example.com/health"
        );
    }

    #[test]
    fn no_secret_of_the_url_appears_in_an_observation() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = check(serde_json::json!({
            "url": format!("http://healer:pa55word@127.0.0.1:{port}/?token=t0ken-value"),
        }));
        let answered = check(serde_json::json!({
            "url": server(answer("503 Service Unavailable", b""))
                .replace("http://", "http://healer:pa55word@")
                + "?api_key=t0ken-value&page=1",
        }));
        for seen in [refused, answered] {
            let shown = format!("{} {}", seen.summary, seen.details);
            assert!(!shown.contains("pa55word"), "{shown}");
            assert!(!shown.contains("t0ken-value"), "{shown}");
            let url = seen.details["url"].as_str().unwrap();
            assert!(
                url.starts_with("http://healer:<redacted>@127.0.0.1:"),
                "{url}"
            );
            assert!(url.contains("=<redacted>"), "{url}");
        }
    }

    /// A server on 127.0.0.1 that answers `answer` to one connection and
    /// hands on the request it read (head and a Content-Length body); its
    /// port.
    fn recording_server(answer: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = read_head(&mut stream);
            let head = String::from_utf8_lossy(&request).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).unwrap();
            request.extend_from_slice(&body);
            let _ = stream.write_all(answer.as_bytes());
            let _ = sender.send(String::from_utf8_lossy(&request).into_owned());
        });
        (port, received)
    }

    #[test]
    fn both_paths_send_the_method_target_headers_and_body_of_the_config() {
        // 127.0.0.1 takes the light path; `localhost` goes through reqwest.
        for host in ["127.0.0.1", "localhost"] {
            let (port, received) =
                recording_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            let seen = check(serde_json::json!({
                "url": format!("http://{host}:{port}/health?deep=1"),
                "method": "post",
                "headers": { "X-Probe": "healer" },
                "body": "ping",
            }));
            assert_eq!(seen.status, Status::Ok, "{host}: {}", seen.summary);
            let request = received
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            let lower = request.to_lowercase();
            assert!(
                request.starts_with("POST /health?deep=1 HTTP/1.1\r\n"),
                "{host}: {request}"
            );
            for line in [
                format!("host: {host}:{port}\r\n"),
                "x-probe: healer\r\n".to_owned(),
                "content-length: 4\r\n".to_owned(),
                "accept: */*\r\n".to_owned(),
                format!("user-agent: healer-http/{}\r\n", env!("CARGO_PKG_VERSION")),
            ] {
                assert!(lower.contains(&line), "{host}: no {line:?} in {request}");
            }
            assert!(request.ends_with("\r\n\r\nping"), "{host}: {request}");
        }
    }

    #[test]
    fn a_redirect_is_followed_on_both_paths() {
        for host in ["127.0.0.1", "localhost"] {
            let (target, reached) =
                recording_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            let redirect: &'static str = Box::leak(
                format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/moved\r\ncontent-length: 0\r\n\r\n"
                )
                .into_boxed_str(),
            );
            // The light path hands a redirect to reqwest, which asks the
            // same URL again: the redirecting server answers every time.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    read_head(&mut stream);
                    let _ = stream.write_all(redirect.as_bytes());
                }
            });
            let seen = check(serde_json::json!({
                "url": format!("http://{host}:{port}/"),
                "expect_status": [200],
            }));
            assert_eq!(seen.status, Status::Ok, "{host}: {}", seen.summary);
            assert_eq!(seen.details["status_code"], 200, "{host}");
            let request = reached
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            assert!(request.starts_with("GET /moved "), "{host}: {request}");
        }
    }

    #[test]
    fn a_connection_closed_unanswered_is_critical_on_both_paths() {
        for host in ["127.0.0.1", "localhost"] {
            // Accepts and closes at once, before or after the request.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    drop(stream);
                }
            });
            for _ in 0..20 {
                let seen = check(serde_json::json!({ "url": format!("http://{host}:{port}/") }));
                assert_eq!(seen.status, Status::Critical, "{host}: {}", seen.summary);
                assert_eq!(seen.details["error"], "reset", "{host}");
            }
        }
    }

    #[test]
    fn each_check_opens_a_new_connection() {
        // A server that answers each connection once and keeps it open:
        // a pooled connection would be reused and the second accept never
        // happen.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                read_head(&mut stream);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                open.push(stream);
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut monitor =
            HttpMonitor::new(serde_json::from_value(serde_json::json!({ "url": url })).unwrap())
                .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..3 {
            let seen = runtime.block_on(monitor.check()).unwrap();
            assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
