//! A tiny HTTP service for the end-to-end tests: answers every request with
//! the status code written in `--status-file` (200 when the file is
//! missing), writes its pid to `--pidfile`, listens on 127.0.0.1:`--port`.
//!
//! `test-service --port 8080 --status-file status --pidfile service.pid`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut port, mut status_file, mut pidfile) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--port" => port = value.and_then(|v| v.parse::<u16>().ok()),
            "--status-file" => status_file = value.map(PathBuf::from),
            "--pidfile" => pidfile = value.map(PathBuf::from),
            _ => {}
        }
    }
    let (Some(port), Some(status_file)) = (port, status_file) else {
        eprintln!("usage: test-service --port N --status-file FILE [--pidfile FILE]");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("test-service: cannot listen on 127.0.0.1:{port}: {err}");
            std::process::exit(1);
        }
    };
    if let Some(pidfile) = pidfile {
        let _ = std::fs::write(pidfile, format!("{}\n", std::process::id()));
    }
    for stream in listener.incoming().flatten() {
        let status_file = status_file.clone();
        std::thread::spawn(move || answer(stream, &status_file));
    }
}

fn answer(mut stream: TcpStream, status_file: &PathBuf) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let code: u16 = std::fs::read_to_string(status_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(200);
    let body = format!("status {code}\n");
    let response = format!(
        "HTTP/1.1 {code} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
