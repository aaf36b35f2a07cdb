//! The light path of the `http` monitor: plain HTTP to an IP address
//! (`http://127.0.0.1:8080/health`, the usual health check), with hyper's
//! one-connection client driven right in the check's own task. No pool, no
//! resolver, no connector stack and no task spawned per connection: at
//! 1,000 targets a second that stack cost more than the request itself.
//! Everything else (TLS, a host name, credentials in the URL) goes through
//! reqwest's client, and so does a redirect (which reqwest follows).
//!
//! Failures come back as [`Failure`]s, which the monitor judges the same
//! way whichever path asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, HOST, LOCATION, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use reqwest::Url;

use healer_plugin_sdk::tokio;

use crate::monitor::{keep_body, MAX_BODY};

/// How a request got no (complete) answer.
#[derive(Debug)]
pub enum Failure {
    /// The name did not resolve: no evidence about the service.
    Dns(String),
    /// The timeout passed while the name was still being resolved.
    DnsTimedOut,
    /// No answer within the timeout.
    TimedOut,
    /// The service refused the connection.
    Refused,
    /// The service's TLS certificate does not verify (`local`: judged on
    /// this machine's clock or CA store, what was found and how).
    Certificate {
        error: String,
        local: Option<&'static str>,
    },
    /// The connection was closed or reset before a complete answer.
    Closed(String),
    /// healer could not connect (a local socket or network error).
    Connect(String),
    /// Anything else healer could not tell the service's fault.
    Other(String),
}

/// A prepared plain-HTTP request to one address.
pub struct Plain {
    address: SocketAddr,
    method: Method,
    /// The request target: the URL's path and query, parsed once.
    target: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Plain {
    /// The light path for `url`, when it can take it: an `http` URL to an
    /// IP address with no user name or password. `None` otherwise.
    pub fn of(
        url: &Url,
        method: &Method,
        headers: &std::collections::BTreeMap<String, String>,
        body: Option<&str>,
    ) -> Result<Option<Plain>, String> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return Ok(None);
        }
        let Some(host) = url.host_str() else {
            return Ok(None);
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let (Ok(ip), Some(port)) = (bare.parse::<IpAddr>(), url.port_or_known_default()) else {
            return Ok(None);
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        // A target hyper would not take goes through reqwest, as any URL
        // off this path does.
        let Ok(target) = target.parse::<Uri>() else {
            return Ok(None);
        };
        let mut map = HeaderMap::new();
        map.insert(HOST, value("Host", &authority)?);
        map.insert(ACCEPT, HeaderValue::from_static("*/*"));
        map.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("healer-http/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, text) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?} in `headers`"))?;
            let text = value(name.as_str(), text)?;
            // Appended, as reqwest does: names differing in case are sent
            // each, and a user's own Accept or User-Agent replaces ours.
            if matches!(name, ACCEPT | USER_AGENT | HOST) {
                map.insert(name, text);
            } else {
                map.append(name, text);
            }
        }
        Ok(Some(Plain {
            address: SocketAddr::new(ip, port),
            method: method.clone(),
            target,
            headers: map,
            body: body.map(|b| Bytes::from(b.to_owned())).unwrap_or_default(),
        }))
    }

    /// One request on a new connection: the status code and at most
    /// [`MAX_BODY`] bytes of the body, or how it failed, within `timeout`.
    /// `None` for a redirect: reqwest's client follows those.
    pub async fn request(&self, timeout: Duration) -> Result<Option<(u16, Vec<u8>)>, Failure> {
        tokio::time::timeout(timeout, self.exchange())
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    async fn exchange(&self) -> Result<Option<(u16, Vec<u8>)>, Failure> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::Refused,
                _ => Failure::Connect(err.to_string()),
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| Failure::Other(err.to_string()))?;
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = self.headers.clone();
        let answer = async move {
            let response = sender.send_request(request).await?;
            // The only request on this connection: once it is answered,
            // the connection may end.
            drop(sender);
            if response.status().is_redirection() && response.headers().contains_key(LOCATION) {
                return Ok(None);
            }
            let code = response.status().as_u16();
            let mut incoming = response.into_body();
            let mut body = Vec::new();
            while body.len() < MAX_BODY {
                let Some(frame) = incoming.frame().await else {
                    break;
                };
                if let Ok(data) = frame?.into_data() {
                    keep_body(&mut body, &data);
                }
            }
            Ok::<_, hyper::Error>(Some((code, body)))
        };
        let mut answer = std::pin::pin!(answer);
        let mut connection = std::pin::pin!(connection);
        // The connection is driven here until the answer is read; if it
        // ends first, what it delivered (or its error) is in the answer.
        let answered = tokio::select! {
            biased;
            answered = &mut answer => answered,
            _ = &mut connection => answer.await,
        };
        // Dropping the connection closes the socket: nothing more is read.
        answered.map_err(|err| failure(&err))
    }
}

/// A header's value; the error names the header, never the value (it may
/// be a token).
fn value(name: &str, text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text)
        .map_err(|_| format!("invalid value of header {name:?} in `headers`"))
}

/// What a hyper error says about the service: the whole chain is read,
/// as hyper wraps an early close (`IncompleteMessage`) in `Canceled` when
/// the service closed before the request was even written.
fn failure(err: &hyper::Error) -> Failure {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
    let chain: Vec<&(dyn std::error::Error + 'static)> =
        std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .collect();
    let innermost = chain.last().map(ToString::to_string).unwrap_or_default();
    let closed = chain.iter().any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| matches!(e.kind(), ConnectionReset | ConnectionAborted))
    });
    if closed {
        Failure::Closed(innermost)
    } else {
        Failure::Other(innermost)
    }
}
