//! The services a fleet test's healers watch, all in one process: an HTTP
//! server whose every target is a path, recording on one monotonic clock
//! who checked what and who recovered what, and enforcing the fleet's
//! fence as a careful service would.
//!
//! `fleet-service --listen ADDR:PORT --dir DIR`
//!
//! - `GET /t/NAME`: a check of target NAME: one line `NS check PEER NAME`
//!   in `DIR/checks.log`; 503 while `DIR/down/NAME` exists (its content
//!   names the episode), else 200.
//! - `POST /recover/NAME` (healer's `webhook` recoverer): the recovery of
//!   NAME with the fleet's claim as `Idempotency-Key`. A claim lower than
//!   the highest this service has seen for NAME is refused (409, a line
//!   `NS refused PEER NAME EPISODE ATTEMPT FENCE`); otherwise one line
//!   `NS recover PEER NAME EPISODE ATTEMPT FENCE BEGAN` in
//!   `DIR/recoveries.log`, `DIR/down/NAME` removed, 200. A workflow run
//!   for an alert (no down file) has the alert's `startsAt` for episode.
//!   While `DIR/slow` holds a number of milliseconds, each recovery takes
//!   that long: a line `NS begin PEER NAME EPISODE ATTEMPT FENCE` when it
//!   arrives, the verdict when it ends (BEGAN is the begin's NS).
//!
//! - `POST /alert`: an alert sink's delivery: `NS alert PEER BODY` (the
//!   body on one line) in `DIR/alerts.log`.
//!
//! NS is CLOCK_MONOTONIC in nanoseconds, the clock every process of the
//! machine shares; each line is one `write` to a file opened O_APPEND.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use healer_e2e::monotonic_ns;

struct Service {
    dir: PathBuf,
    checks: Mutex<File>,
    recoveries: Mutex<File>,
    alerts: Mutex<File>,
    /// The highest claim seen per target.
    fences: Mutex<HashMap<String, u64>>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut dir) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--listen" => listen = value,
            "--dir" => dir = value.map(PathBuf::from),
            _ => {}
        }
    }
    let (Some(listen), Some(dir)) = (listen, dir) else {
        eprintln!("usage: fleet-service --listen ADDR:PORT --dir DIR");
        std::process::exit(2);
    };
    let _ = std::fs::create_dir_all(dir.join("down"));
    let append = |name: &str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap_or_else(|err| {
                eprintln!("fleet-service: cannot open {name}: {err}");
                std::process::exit(1)
            })
    };
    let service = Arc::new(Service {
        checks: Mutex::new(append("checks.log")),
        recoveries: Mutex::new(append("recoveries.log")),
        alerts: Mutex::new(append("alerts.log")),
        fences: Mutex::new(HashMap::new()),
        dir: dir.clone(),
    });
    let listener = TcpListener::bind(&listen).unwrap_or_else(|err| {
        eprintln!("fleet-service: cannot listen on {listen}: {err}");
        std::process::exit(1)
    });
    for stream in listener.incoming().flatten() {
        let service = Arc::clone(&service);
        std::thread::spawn(move || {
            let _ = service.answer(stream);
        });
    }
}

impl Service {
    fn answer(&self, stream: TcpStream) -> std::io::Result<()> {
        let peer = stream.peer_addr()?.ip().to_string();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let mut parts = first.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (mut length, mut fence) = (0usize, 0u64);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "idempotency-key" => fence = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let status = match (
            method,
            path.strip_prefix("/t/"),
            path.strip_prefix("/recover/"),
        ) {
            ("GET", Some(name), _) => self.check(&peer, name),
            ("POST", _, Some(name)) => self.recover(&peer, name, fence, &body),
            ("POST", _, _) if path == "/alert" => {
                let body = String::from_utf8_lossy(&body).replace(['\n', '\r'], " ");
                line(
                    &self.alerts,
                    format!("{} alert {peer} {body}\n", monotonic_ns()),
                );
                200
            }
            _ => 404,
        };
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    }

    fn check(&self, peer: &str, name: &str) -> u16 {
        line(
            &self.checks,
            format!("{} check {peer} {name}\n", monotonic_ns()),
        );
        if self.down(name).is_some() {
            503
        } else {
            200
        }
    }

    fn recover(&self, peer: &str, name: &str, fence: u64, body: &[u8]) -> u16 {
        let began = monotonic_ns();
        let body = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        let attempt = body["attempt"].as_u64().unwrap_or(0);
        // A workflow run for an alert: its episode is the alert's startsAt.
        let episode = self.down(name).unwrap_or_else(|| {
            body["anomaly"]["details"]["startsAt"]
                .as_str()
                .unwrap_or("-")
                .replace(' ', "_")
        });
        let said = format!("{peer} {name} {episode} {attempt} {fence}");
        let slow = std::fs::read_to_string(self.dir.join("slow"))
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok());
        if let Some(ms) = slow {
            line(&self.recoveries, format!("{began} begin {said}\n"));
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        let highest = fences.entry(name.to_owned()).or_default();
        if fence < *highest {
            let now = monotonic_ns();
            line(&self.recoveries, format!("{now} refused {said} {began}\n"));
            return 409;
        }
        *highest = fence;
        line(
            &self.recoveries,
            format!("{} recover {said} {began}\n", monotonic_ns()),
        );
        let _ = std::fs::remove_file(self.dir.join("down").join(name));
        200
    }

    /// The episode of target `name` while it is down.
    fn down(&self, name: &str) -> Option<String> {
        let file = self.dir.join("down").join(Path::new(name).file_name()?);
        std::fs::read_to_string(file)
            .ok()
            .map(|episode| episode.trim().to_owned())
    }
}

fn line(file: &Mutex<File>, text: String) {
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    let _ = file.write_all(text.as_bytes());
}
