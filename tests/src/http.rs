//! HTTP on 127.0.0.1, spoken by hand: a [`Receiver`] standing in for n8n,
//! one-shot and keep-alive requests to healer's intake and API, free
//! ports, and query encoding.

use std::io::Read;
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a [`Receiver`] answers.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// This status code, at once.
    Status(u16),
    /// Nothing: the connection is held open until the test ends.
    Never,
    /// 302 Found, to `http://127.0.0.1:<port>/elsewhere`.
    RedirectTo(u16),
}

/// A local HTTP server standing in for n8n: records every request body and
/// answers as told.
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    /// Starts a receiver that answers every request with `answer`.
    pub fn start(answer: Answer) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = std::sync::Arc::clone(&seen);
                std::thread::spawn(move || serve_one(stream, answer, &seen));
            }
        });
        Receiver { port, requests }
    }

    /// The URL of a path on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// (head, body) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    answer: Answer,
    seen: &std::sync::Mutex<Vec<(String, String)>>,
) {
    use std::io::Write;
    let Some((head, body)) = read_http_message(&mut stream) else {
        return;
    };
    if let Ok(mut seen) = seen.lock() {
        seen.push((head, body));
    }
    match answer {
        Answer::Status(code) => {
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
        }
        Answer::Never => std::thread::sleep(Duration::from_secs(60)),
        Answer::RedirectTo(port) => {
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

/// Reads one HTTP/1.1 message (head and a Content-Length body).
fn read_http_message(stream: &mut impl Read) -> Option<(String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends one HTTP/1.1 POST to 127.0.0.1:`port` and returns (status, body).
pub fn post(
    port: u16,
    path: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::Write;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("the intake accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout set");
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("request head sent");
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

/// Reads an HTTP/1.1 response to its end: (status, body); status 0 when
/// there is none. A chunked body (Go's servers send larger answers so) is
/// put back together.
fn read_response(stream: &mut impl Read) -> (u16, String) {
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (
            status_of(&String::from_utf8_lossy(&response)),
            String::new(),
        );
    };
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (
        status_of(&head),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The status code of a response head; 0 when there is none.
fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A chunked HTTP/1.1 body's content (as much of it as arrived).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        let data = &rest[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    body
}

/// [`post`] of JSON, parsing the JSON answer.
pub fn post_json(port: u16, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = post(port, path, "application/json", &[], body.as_bytes());
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// `text` percent-encoded for a URL's query (all but RFC 3986's
/// unreserved characters).
pub fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// An HTTP/1.1 client on one keep-alive connection, for tests that send
/// many requests.
pub struct KeepAlive {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> KeepAlive {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout set");
        KeepAlive {
            stream: std::io::BufReader::new(stream),
        }
    }

    /// POSTs JSON `body` to `path`; (status, body).
    pub fn post_json(&mut self, path: &str, body: &str) -> (u16, String) {
        use std::io::{BufRead, Write};
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .expect("request sent");
        let mut status = 0;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).unwrap_or(0) == 0 {
                return (0, String::new());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
                status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            } else if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut answer = vec![0u8; length];
        let _ = self.stream.read_exact(&mut answer);
        (status, String::from_utf8_lossy(&answer).into_owned())
    }
}

/// Sends one HTTP/1.1 GET to 127.0.0.1:`port`; (0, "") when nothing answers.
pub fn get(port: u16, path: &str) -> (u16, String) {
    get_with_token(port, path, None)
}

/// `GET path` on 127.0.0.1:`port`, with `Authorization: Bearer TOKEN`
/// when given; (0, "") when nothing listens.
pub fn get_with_token(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    );
    read_response(&mut stream)
}

/// Sends `request`, a whole HTTP request as written (its head, with any
/// `Host` or none, and body), to 127.0.0.1:`port`; (status, body), (0, "")
/// when nothing listens.
pub fn exchange(port: u16, request: &str) -> (u16, String) {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(request.as_bytes());
    read_response(&mut stream)
}

/// `GET path` as JSON from healer's API on 127.0.0.1:`port`; panics
/// unless it answers 200 with JSON.
pub fn api(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET {path}: {err}: {body}"))
}

/// `GET path` as JSON from healer's API, when it answers 200 with JSON
/// (for polling).
pub fn try_api(port: u16, path: &str) -> Option<serde_json::Value> {
    let (status, body) = get(port, path);
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}
