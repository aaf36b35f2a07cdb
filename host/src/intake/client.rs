//! The client side of the intake, for `healer send`: one HTTP/1.1 POST to
//! the configured address, std only, with timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// POSTs `body` (JSON) to `path` at `address`; returns status and body.
pub fn post_json(
    address: SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|err| format!("cannot reach the intake at {address}: {err} (is `healer run` running with an [intake]?)"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("sending to {address}: {err}"))?;
    let mut response = Vec::new();
    stream
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
