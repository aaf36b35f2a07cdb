//! The client side of healer's listener, for `healer send` and the
//! operator's commands (`status`, `history`, `reset`, `pause`, `resume`,
//! `reload`): one HTTP/1.1 request to the configured address, std only,
//! with timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The most of an answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// POSTs `body` (JSON) to `path` at `address`; returns status and body.
pub fn post_json(
    address: SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    request(
        address,
        "POST",
        path,
        Some(body),
        token,
        Duration::from_secs(10),
    )
}

/// One request (`method` `path`, with a JSON body if any) to `address`,
/// within `timeout` for each read and write; returns status and body. An
/// unspecified address (`0.0.0.0`) is reached on loopback.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|err| {
        format!(
            "cannot reach healer at {address}: {err} (is `healer run` running with an [intake]?)"
        )
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    let content = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{content}{auth}Connection: close\r\n\r\n{body}"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("sending to {address}: {err}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut response)
        .map_err(|err| format!("reading the answer from {address}: {err}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{address} did not answer HTTP"))?;
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map_or_else(String::new, |(_, b)| b.to_owned()),
    ))
}

/// `key=value` as a JSON pair: numbers, booleans and JSON stay typed,
/// anything else is a string.
pub fn detail(pair: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("--detail {pair:?}: write key=value"))?;
    if key.is_empty() {
        return Err(format!("--detail {pair:?}: the key is empty"));
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keep_their_types() {
        assert_eq!(
            detail("latency_ms=5000").unwrap(),
            ("latency_ms".into(), serde_json::json!(5000))
        );
        assert_eq!(
            detail("region=us-east-1").unwrap(),
            ("region".into(), serde_json::json!("us-east-1"))
        );
        assert_eq!(detail("ok=true").unwrap().1, serde_json::json!(true));
        assert!(detail("novalue").is_err());
    }
}
