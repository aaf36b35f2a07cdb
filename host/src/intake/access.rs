//! Who the listener serves, decided before any endpoint runs, for the
//! intake and the operator's API alike:
//!
//! - **Host.** A request must name this machine: the bind address (an IP
//!   literal), on loopback also `localhost`, `127.0.0.1` and `[::1]` (any
//!   IP literal when bound to `0.0.0.0`/`::`), or a name in `[intake]
//!   allowed_hosts`. Any other `Host` is 421 Misdirected Request. This is
//!   what defeats DNS rebinding: a page at `rebind.attacker.example` whose
//!   name now resolves to 127.0.0.1 still sends its own name. Only the
//!   name is compared, never the port: rebinding cannot change the name,
//!   and a tunnel or a proxy (`ssh -L 9000:127.0.0.1:8000`) legitimately
//!   changes the port. A request with no `Host` at all (HTTP/1.0 tools) is
//!   served: no browser sends one.
//! - **Writes** (every method but GET, HEAD and OPTIONS: the API's pause,
//!   resume, reset and reload, `/anomaly`, `/alertmanager`) are refused
//!   with 403 when they carry an `Origin` other than the listener's own
//!   (`http://<a name above>[:port]`, the port the request was sent to;
//!   `Origin: null` is foreign) or a `Sec-Fetch-Site` other than
//!   `same-origin` or `none`. Programs (the CLI, curl, Alertmanager) send
//!   neither and are served as before.
//! - **Reads** are not refused by `Origin`: they change nothing, a page of
//!   another site gets no CORS grant to read the answer, the Host rule
//!   stops rebinding, and every answer says `Cross-Origin-Resource-Policy:
//!   same-origin` and `X-Content-Type-Options: nosniff`, so a browser
//!   hands a foreign page not even an opaque copy. A link to the
//!   dashboard from another site still opens it.
//! - **The token** is checked by [`check_token`], the one check of both
//!   the intake and the API: a case-insensitive scheme (`Bearer`, and
//!   where allowed HTTP Basic with the token as the password) and one
//!   constant-time comparison.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::debug;

use crate::config::{HostName, Intake as Settings};

/// The most of a refused `Host` or `Origin` an answer repeats.
const SHOWN: usize = 100;

/// The names and addresses the listener answers to.
#[derive(Clone, Debug)]
pub struct Hosts {
    bind: SocketAddr,
    /// `allowed_hosts`, parsed.
    allowed: Vec<HostName>,
}

/// A `Host` header or the authority of an `Origin`: a host and maybe a port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: HostName,
    port: Option<u16>,
}

impl Authority {
    /// `name`, `name:port`, `192.0.2.7:8000`, `[::1]:8000`; `None` for
    /// anything else (user info, a bare IPv6 address, a bad port).
    fn parse(text: &str) -> Option<Authority> {
        let (host, port) = if text.starts_with('[') {
            let end = text.find(']')?;
            let (host, rest) = text.split_at(end + 1);
            if !rest.is_empty() && !rest.starts_with(':') {
                return None;
            }
            (host, rest.strip_prefix(':'))
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            // `host:` has an empty port, which means the default.
            None | Some("") => None,
            Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => Some(port.parse().ok()?),
            Some(_) => return None,
        };
        if host.is_empty() || (!host.starts_with('[') && host.contains(':')) {
            return None;
        }
        Some(Authority {
            host: HostName::parse(host).ok()?,
            port,
        })
    }
}

impl Hosts {
    /// What `[intake]` says: its bind address and `allowed_hosts` (checked
    /// by the config; an entry that does not parse is skipped).
    pub fn new(settings: &Settings) -> Hosts {
        Hosts {
            bind: settings.bind,
            allowed: settings
                .allowed_hosts
                .iter()
                .filter_map(|entry| HostName::parse(entry).ok())
                .collect(),
        }
    }

    /// Whether the listener answers to `host`.
    fn allows(&self, host: &HostName) -> bool {
        let bound = self.bind.ip();
        let loopback = bound.is_loopback() || bound.is_unspecified();
        match host {
            HostName::Ip(ip) => {
                *ip == bound
                    || (loopback && ip.is_loopback())
                    // Bound to every address: an IP literal cannot be
                    // rebound, whichever of the machine's it is.
                    || bound.is_unspecified()
                    || self.allowed.contains(host)
            }
            HostName::Name(name) => {
                (loopback && name == "localhost") || self.allowed.contains(host)
            }
        }
    }

    /// The names it answers to, for a refusal.
    fn listed(&self) -> String {
        let bound = self.bind.ip();
        let mut names: Vec<String> = Vec::new();
        if bound.is_unspecified() {
            names.push("any IP address of this machine".to_owned());
        } else {
            names.push(HostName::Ip(bound).to_string());
        }
        if bound.is_loopback() || bound.is_unspecified() {
            for name in ["localhost", "127.0.0.1", "[::1]"] {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        names.extend(self.allowed.iter().map(ToString::to_string));
        names.join(", ")
    }

    /// Whether `origin` is this listener's own, for a request sent to
    /// `host` (its `Host`, when it has one): an allowed name, and the port
    /// the request was sent to.
    fn own_origin(&self, origin: &str, host: Option<&Authority>) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        let default = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            // healer speaks plain HTTP; https is its name behind a proxy.
            "https" => 443,
            _ => return false,
        };
        let Some(authority) = Authority::parse(rest) else {
            return false;
        };
        let port = authority.port.unwrap_or(default);
        let sent_to = host.map_or(self.bind.port(), |host| host.port.unwrap_or(default));
        self.allows(&authority.host) && port == sent_to
    }
}

/// A refusal: one line of JSON, `{"error": ...}`.
fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `text`, cut to [`SHOWN`] characters.
fn shown(value: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let mut cut: String = text.chars().take(SHOWN).collect();
    if text.chars().count() > SHOWN {
        cut.push('…');
    }
    cut
}

/// The refusal of a request the listener must not serve; `None` when it
/// may go on.
fn refusal(
    hosts: &Hosts,
    method: &Method,
    uri_host: Option<&str>,
    headers: &HeaderMap,
) -> Option<Response> {
    let mut named = headers.get_all(header::HOST).iter();
    let host_header = named.next();
    if named.next().is_some() {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "the request has more than one Host header".to_owned(),
        ));
    }
    // An absolute-form target (`POST http://name/anomaly`) names a host too.
    let mut host = None;
    for value in uri_host
        .map(HeaderValue::from_str)
        .into_iter()
        .flatten()
        .chain(host_header.cloned())
    {
        let authority = value.to_str().ok().and_then(Authority::parse);
        match authority {
            Some(authority) if hosts.allows(&authority.host) => host = Some(authority),
            _ => {
                let shown = shown(&value);
                return Some(refuse(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "this listener does not answer to Host {shown:?}: it answers to {}; to reach it by that name, add the name to [intake] allowed_hosts",
                        hosts.listed()
                    ),
                ));
            }
        }
    }
    if !is_write(method) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = origin
            .to_str()
            .is_ok_and(|origin| hosts.own_origin(origin, host.as_ref()));
        if !own {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "a write from a page of another origin ({:?}) is refused: only pages of this listener, or programs that send no Origin (healer's commands, curl), may write",
                    shown(origin)
                ),
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let same = site
            .to_str()
            .is_ok_and(|s| s.eq_ignore_ascii_case("same-origin") || s.eq_ignore_ascii_case("none"));
        if !same {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "a write from a page of another origin (Sec-Fetch-Site: {:?}) is refused: only pages of this listener, or programs (healer's commands, curl), may write",
                    shown(site)
                ),
            ));
        }
    }
    None
}

/// Whether a request of `method` is a write: anything but GET, HEAD and
/// OPTIONS (which change nothing).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The listener's first layer: refuses what [`refusal`] refuses, and
/// tells browsers to keep every answer from other origins.
pub async fn admit(State(hosts): State<Arc<Hosts>>, request: Request, next: Next) -> Response {
    let uri_host = request.uri().authority().map(|a| a.as_str().to_owned());
    let mut response = match refusal(
        &hosts,
        request.method(),
        uri_host.as_deref(),
        request.headers(),
    ) {
        Some(refused) => {
            debug!(
                method = %request.method(),
                path = request.uri().path(),
                status = refused.status().as_u16(),
                "listener: request refused (Host or Origin)"
            );
            refused
        }
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Why a request's token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// It carries none (in a scheme accepted here).
    Missing,
    /// It carries another.
    Wrong,
}

/// Whether `headers` carry `token`: `Authorization: Bearer <token>`, or,
/// when `basic`, HTTP Basic with the token as the password (any user
/// name). Scheme names are case-insensitive. The comparison takes the
/// same time wherever the two differ and whatever their lengths: both are
/// hashed, and the digests compared in constant time.
pub fn check_token(headers: &HeaderMap, token: &str, basic: bool) -> Result<(), TokenRefusal> {
    let given = given_token(headers, basic).ok_or(TokenRefusal::Missing)?;
    let same: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into();
    if same {
        Ok(())
    } else {
        Err(TokenRefusal::Wrong)
    }
}

/// The token a request carries.
fn given_token(headers: &HeaderMap, basic: bool) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if !basic || !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A listener bound to `ip`:8000 that also answers to `allowed`.
    fn bound(ip: IpAddr, allowed: &[&str]) -> Hosts {
        Hosts {
            bind: SocketAddr::new(ip, 8000),
            allowed: allowed
                .iter()
                .map(|a| HostName::parse(a).expect("a test name"))
                .collect(),
        }
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn status(hosts: &Hosts, method: Method, pairs: &[(&str, &str)]) -> Option<u16> {
        refusal(hosts, &method, None, &request(pairs)).map(|r| r.status().as_u16())
    }

    #[test]
    fn a_loopback_listener_answers_to_its_address_localhost_and_loopback_literals_with_any_port() {
        let hosts = bound(LOOPBACK, &[]);
        for host in [
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.0.0.1:9000",
            "localhost",
            "LocalHost:8000",
            "localhost.:8000",
            "[::1]",
            "[::1]:8000",
        ] {
            assert_eq!(
                status(&hosts, Method::GET, &[("host", host)]),
                None,
                "{host}"
            );
        }
    }

    #[test]
    fn a_foreign_host_is_misdirected_whatever_its_port() {
        let hosts = bound(LOOPBACK, &[]);
        for host in [
            "rebind.attacker.example",
            "rebind.attacker.example:8000",
            "localhost.attacker.example",
            "192.0.2.7:8000",
            "2130706433",
            "user@127.0.0.1",
            "::1",
            "[::1]x",
            "[::1]:8000]",
            "",
            "127.0.0.1:80x",
        ] {
            assert_eq!(
                status(&hosts, Method::GET, &[("host", host)]),
                Some(421),
                "{host:?}"
            );
        }
    }

    #[test]
    fn a_request_with_no_host_is_served_and_two_hosts_are_refused() {
        let hosts = bound(LOOPBACK, &[]);
        assert_eq!(status(&hosts, Method::POST, &[]), None);
        assert_eq!(
            status(
                &hosts,
                Method::GET,
                &[("host", "127.0.0.1"), ("host", "evil.example")]
            ),
            Some(400)
        );
    }

    #[test]
    fn an_absolute_target_must_name_an_allowed_host_too() {
        let hosts = bound(LOOPBACK, &[]);
        let headers = request(&[("host", "127.0.0.1:8000")]);
        let refused = refusal(&hosts, &Method::GET, Some("evil.example"), &headers);
        assert_eq!(refused.map(|r| r.status().as_u16()), Some(421));
        assert!(refusal(&hosts, &Method::GET, Some("localhost:8000"), &headers).is_none());
    }

    #[test]
    fn configured_names_are_served_case_insensitively_and_localhost_only_on_loopback() {
        let lan: IpAddr = "192.0.2.10".parse().unwrap();
        let hosts = bound(lan, &["Healer.Example.com", "203.0.113.5"]);
        for host in [
            "healer.example.com",
            "HEALER.example.com:443",
            "192.0.2.10:8000",
            "203.0.113.5",
        ] {
            assert_eq!(
                status(&hosts, Method::GET, &[("host", host)]),
                None,
                "{host}"
            );
        }
        for host in ["localhost", "127.0.0.1", "[::1]", "other.example.com"] {
            assert_eq!(
                status(&hosts, Method::GET, &[("host", host)]),
                Some(421),
                "{host}"
            );
        }
    }

    #[test]
    fn a_listener_on_every_address_answers_to_ip_literals_and_localhost_but_not_to_names() {
        let hosts = bound("0.0.0.0".parse().unwrap(), &[]);
        for host in [
            "192.0.2.10:8000",
            "[2001:db8::1]:8000",
            "localhost",
            "127.0.0.1",
        ] {
            assert_eq!(
                status(&hosts, Method::GET, &[("host", host)]),
                None,
                "{host}"
            );
        }
        assert_eq!(
            status(&hosts, Method::GET, &[("host", "rebind.attacker.example")]),
            Some(421)
        );
    }

    #[test]
    fn an_ipv6_listener_answers_to_its_address_in_brackets() {
        let hosts = bound("2001:db8::5".parse().unwrap(), &[]);
        assert_eq!(
            status(&hosts, Method::GET, &[("host", "[2001:db8::5]:8000")]),
            None
        );
        assert_eq!(
            status(&hosts, Method::GET, &[("host", "[2001:db8::6]:8000")]),
            Some(421)
        );
    }

    #[test]
    fn a_write_from_a_foreign_origin_is_forbidden_and_its_own_origin_may_write() {
        let hosts = bound(LOOPBACK, &["healer.example.com"]);
        let host = ("host", "127.0.0.1:8000");
        for origin in [
            "http://evil.example",
            "http://evil.example:8000",
            "null",
            "http://127.0.0.1:3000",
            "http://localhost",
            "file://",
            "ftp://127.0.0.1:8000",
            "http://127.0.0.1:8000/path",
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                assert_eq!(
                    status(&hosts, method.clone(), &[host, ("origin", origin)]),
                    Some(403),
                    "{method} from {origin}"
                );
            }
        }
        for origin in [
            "http://127.0.0.1:8000",
            "http://localhost:8000",
            "HTTP://healer.example.com:8000",
            "http://[::1]:8000",
        ] {
            assert_eq!(
                status(&hosts, Method::POST, &[host, ("origin", origin)]),
                None,
                "{origin}"
            );
        }
        // Behind a proxy on the default ports.
        let proxied = [
            ("host", "healer.example.com"),
            ("origin", "https://healer.example.com"),
        ];
        assert_eq!(status(&hosts, Method::POST, &proxied), None);
        // No Host: the port is the bound one.
        assert_eq!(
            status(&hosts, Method::POST, &[("origin", "http://localhost:8000")]),
            None
        );
        assert_eq!(
            status(&hosts, Method::POST, &[("origin", "http://localhost:9000")]),
            Some(403)
        );
    }

    #[test]
    fn a_write_from_another_site_by_fetch_metadata_is_forbidden() {
        let hosts = bound(LOOPBACK, &[]);
        let host = ("host", "127.0.0.1:8000");
        for site in ["cross-site", "same-site", "Cross-Site", "bogus"] {
            assert_eq!(
                status(&hosts, Method::POST, &[host, ("sec-fetch-site", site)]),
                Some(403),
                "{site}"
            );
        }
        for site in ["same-origin", "none"] {
            assert_eq!(
                status(&hosts, Method::POST, &[host, ("sec-fetch-site", site)]),
                None,
                "{site}"
            );
        }
    }

    #[test]
    fn reads_are_not_refused_by_origin_or_fetch_metadata() {
        let hosts = bound(LOOPBACK, &[]);
        let pairs = [
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(status(&hosts, method, &pairs), None);
        }
    }

    #[tokio::test]
    async fn the_refusal_names_the_host_and_how_to_allow_it_on_one_line() {
        let hosts = bound(LOOPBACK, &[]);
        let response = refusal(
            &hosts,
            &Method::GET,
            None,
            &request(&[("host", "rebind.attacker.example")]),
        )
        .expect("refused");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("a body");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains('\n'), "{text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(error.contains("\"rebind.attacker.example\""), "{error}");
        assert!(error.contains("allowed_hosts"), "{error}");
        assert!(error.contains("localhost"), "{error}");
    }

    #[test]
    fn the_token_is_taken_as_bearer_in_any_case_and_as_basic_password_only_where_allowed() {
        let token = "0123456789abcdef";
        let bearer = |value: &str| request(&[("authorization", value)]);
        for value in [
            "Bearer 0123456789abcdef",
            "bearer 0123456789abcdef",
            "BEARER  0123456789abcdef ",
        ] {
            assert_eq!(check_token(&bearer(value), token, false), Ok(()), "{value}");
        }
        assert_eq!(
            check_token(&bearer("Bearer 0123456789abcdeF"), token, false),
            Err(TokenRefusal::Wrong)
        );
        assert_eq!(
            check_token(&bearer("Bearer 0123456789abcde"), token, false),
            Err(TokenRefusal::Wrong)
        );
        assert_eq!(
            check_token(&bearer("Bearer "), token, false),
            Err(TokenRefusal::Missing)
        );
        assert_eq!(
            check_token(&HeaderMap::new(), token, false),
            Err(TokenRefusal::Missing)
        );
        // `curl -u x:0123456789abcdef`, and `curl -u x:` (an empty password).
        let basic = bearer("Basic eDowMTIzNDU2Nzg5YWJjZGVm");
        let empty = bearer("basic eDo=");
        assert_eq!(check_token(&basic, token, true), Ok(()));
        assert_eq!(
            check_token(&basic, token, false),
            Err(TokenRefusal::Missing)
        );
        assert_eq!(check_token(&empty, token, true), Err(TokenRefusal::Wrong));
    }
}
