//! Helpers for the end-to-end tests: build the real `healer` binary and the
//! real plugin packages with cargo (test builds do not produce `.so` files),
//! copy packages into a fresh plugins directory, and run the binary with a
//! bounded wait.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The product's plugin packages (the workspace's `plugins/*`).
pub const PLUGIN_PACKAGES: &[&str] = &[
    "healer-plugin-example",
    "healer-plugin-process",
    "healer-plugin-command",
    "healer-plugin-http",
    "healer-plugin-logscan",
    "healer-plugin-nagios",
    "healer-plugin-system",
    "healer-plugin-webhook",
];

/// Every other package the tests load; all are built in one cargo call.
const PACKAGES: &[&str] = &[
    "healer",
    "healer-fixture-no-root",
    "healer-fixture-other-sdk-major",
    "healer-fixture-wrong-layout",
    "healer-fixture-init-panics",
    "healer-fixture-panicky",
    "healer-fixture-typical",
    "healer-fixture-ctor-aborts",
    "healer-fixture-ctor-segfaults",
    "healer-fixture-ctor-exits",
    "healer-fixture-ctor-hangs",
    "healer-fixture-hostile",
    "healer-fixture-hostile-worker",
    "healer-fixture-chatty",
    "healer-fixture-sdk-1-2",
];

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_owned()
}

/// The `target/<profile>` directory the running test was built into, so
/// the binary and packages are built with the same profile.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// Builds the healer binary and every plugin/fixture package once per test
/// process, and returns the directory holding them.
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(workspace_root())
            .arg("build")
            .arg("--quiet");
        cargo.arg("--target-dir").arg(target_dir);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            cargo.arg("--release");
        }
        for package in PACKAGES.iter().chain(PLUGIN_PACKAGES) {
            cargo.args(["-p", package]);
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the binary and packages failed");
        profile_dir
    })
}

/// The real `healer` binary.
pub fn healer_bin() -> PathBuf {
    built().join("healer")
}

/// The `.so` file of a package built by [`built`], e.g. `healer-plugin-example`.
pub fn package_file(package: &str) -> PathBuf {
    built().join(format!("lib{}.so", package.replace('-', "_")))
}

/// A fresh temporary plugins directory holding copies of these packages.
pub fn plugins_dir_with(packages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for package in packages {
        let from = package_file(package);
        let to = dir.path().join(from.file_name().expect("file name"));
        std::fs::copy(&from, &to).unwrap_or_else(|err| panic!("copy {}: {err}", from.display()));
    }
    dir
}

/// Runs `healer` with `args`, killing it if it has not finished in `limit`.
pub fn run_healer(args: &[&str], limit: Duration) -> Output {
    run_bounded(Command::new(healer_bin()).args(args), limit)
}

/// Runs a command to completion, killing it after `limit`. Output is read
/// on threads, so a chatty command cannot stall on a full pipe.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub use healer::events::{Event, Record, StepResult};

/// A `healer run` daemon started for a test; stopped (SIGTERM, then
/// SIGKILL) when dropped. Its log (`healer.log`), event log
/// (`events.jsonl`) and stderr (`healer.stderr`) are in its config's
/// directory; [`fast_config`] sets them up.
pub struct Daemon {
    child: std::process::Child,
    /// The daemon's log file.
    pub log: PathBuf,
    /// The daemon's event log: one JSON [`Record`] per line.
    pub events: PathBuf,
}

impl Daemon {
    /// Starts `healer run` on `config`.
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_under(config, &[])
    }

    /// Starts `healer run` on `config` under a wrapper command, e.g.
    /// `["prlimit", "--nofile=1024:1024"]`.
    pub fn start_under(config: &Path, wrapper: &[&str]) -> Daemon {
        Daemon::start_with(config, wrapper, &[])
    }

    /// Starts `healer run` on `config` under a wrapper command (may be
    /// empty), with these environment variables set.
    pub fn start_with(config: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = config.parent().expect("the config is in a directory");
        let log = dir.join("healer.log");
        let stderr = std::fs::File::create(dir.join("healer.stderr")).expect("stderr file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(healer_bin());
                command
            }
            None => Command::new(healer_bin()),
        };
        let child = command
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("healer starts");
        Daemon {
            child,
            log,
            events: dir.join("events.jsonl"),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every event so far, of this and earlier runs on the same event log
    /// (a line being written is skipped).
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.events)
    }

    /// Waits until an event matching `wanted` has been written; panics
    /// (with the latest events) when healer exits first or after `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Event {
        let started = Instant::now();
        loop {
            let records = self.records();
            if let Some(found) = records.iter().find(|r| wanted(&r.event)) {
                return found.event.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "healer exited ({status}) before {what}; events:\n{}\nstderr:\n{}",
                    tail(&records),
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; events:\n{}",
                tail(&records)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many events so far match `wanted`.
    pub fn count(&self, mut wanted: impl FnMut(&Event) -> bool) -> usize {
        self.records().iter().filter(|r| wanted(&r.event)).count()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the daemon with SIGKILL (no chance to write anything more)
    /// and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon with SIGTERM, as an operator would, and waits (at
    /// most 20 s: it lets running workflows and the store finish) until it
    /// has exited; its store is then written and can be read. Returns
    /// whether it exited by itself in time.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// What the daemon wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }
}

/// The events of an event log file, skipping a line still being written.
pub fn read_records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The last events, one per line, for a failure message.
fn tail(records: &[Record]) -> String {
    let from = records.len().saturating_sub(40);
    records[from..]
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid a pidfile names, if it names one.
pub fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends `signal` (e.g. "KILL", "STOP") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Polls `probe` every 5 ms until it returns `Some`, or panics after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(what, limit, Duration::from_millis(5), probe)
}

/// Polls `probe` every `every` until it returns `Some`, or panics after
/// `limit`: for probes that cost a peer real work (a Prometheus query).
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// The path of the state database of a daemon whose config is in `dir`.
pub fn store_file(dir: &Path) -> PathBuf {
    dir.join("state").join("healer.db")
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration) {
    wait_until("the port accepts connections", limit, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `[healer]` keys every test daemon needs: plugins from `plugins`,
/// debug logs to `healer.log`, events to `events.jsonl`, the store in
/// `state/`, all in the config's directory.
pub fn test_paths(plugins: &Path) -> String {
    format!(
        "plugins_dir = \"{}\"\nlog_file = \"healer.log\"\nevent_log = \"events.jsonl\"\nstate_dir = \"state\"\nlog_level = \"debug\"\n",
        plugins.display()
    )
}

/// Writes `healer.toml` in `dir` for a test: fast pacing (100 ms checks,
/// 50 ms backoff, 100 ms grace), [`test_paths`], then `body` (targets, or
/// `[healer]`-free extras).
pub fn fast_config(dir: &Path, plugins: &Path, body: &str) -> PathBuf {
    let config = format!(
        "[healer]\ninterval = \"100ms\"\nbackoff = \"50ms\"\nbackoff_max = \"100ms\"\ngrace = \"100ms\"\n{}{body}",
        test_paths(plugins)
    );
    let path = dir.join("healer.toml");
    std::fs::write(&path, config).expect("the test config is written");
    path
}

/// A `[[target]]` named `hopeless` whose process never runs (its pidfile
/// is never written) and whose recovery, `argv` (a TOML array), never
/// helps; three attempts, `backoff` apart.
pub fn hopeless_target(dir: &Path, backoff: &str, argv: &str) -> String {
    format!(
        "\n[[target]]\nname = \"hopeless\"\nmax_attempts = 3\nbackoff = \"{backoff}\"\nbackoff_max = \"{backoff}\"\n\
         monitor = {{ plugin = \"process\", pidfile = \"{}/never.pid\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = {argv}\n",
        dir.display()
    )
}

/// A `[[target]]` named `name` whose process is watched through
/// `dir/NAME.pid` (with the `process` diagnoser) and whose restart never
/// helps (`false`): two failed attempts, then escalated.
pub fn escalating_target(dir: &Path, name: &str) -> String {
    format!(
        r#"
[[target]]
name = "{name}"
max_attempts = 2
monitor = {{ plugin = "process", pidfile = "{dir}/{name}.pid" }}
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["false"]
"#,
        dir = dir.display()
    )
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

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on
/// 127.0.0.1, routing every alert to one webhook, with short group and
/// repeat intervals so re-sends come within seconds. Killed when dropped.
pub struct Alertmanager {
    /// Its API port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Where Debian installs Alertmanager.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

impl Alertmanager {
    /// Starts it, sending webhooks to `webhook_url`; panics (never skips)
    /// when it is not installed.
    pub fn start(webhook_url: &str) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager (apt-get install -y prometheus-alertmanager; .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: healer\n  group_by: ['alertname']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 2s\n\
                 receivers:\n  - name: healer\n    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n"
            ),
        )
        .expect("the Alertmanager config is written");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Alertmanager starts");
        wait_until("Alertmanager is ready", Duration::from_secs(20), || {
            let (status, _) = get(port, "/-/ready");
            (status == 200).then_some(())
        });
        Alertmanager {
            port,
            child,
            _dir: dir,
        }
    }

    /// Posts alerts to its API (`POST /api/v2/alerts`), as Prometheus does.
    pub fn fire(&self, alerts: &serde_json::Value) {
        let (status, body) = post(
            self.port,
            "/api/v2/alerts",
            "application/json",
            &[],
            alerts.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "Alertmanager refused the alerts: {body}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian installs Prometheus.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A real Prometheus (Debian's `prometheus`) on 127.0.0.1, scraping one
/// healer's `/metrics` every second as job `healer`. Killed when dropped.
pub struct Prometheus {
    /// Its web port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it scraping `http://127.0.0.1:<healer_port>/metrics` and waits
    /// until it is ready; panics (never skips) when it is not installed.
    pub fn start(healer_port: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's prometheus (apt-get install -y prometheus; .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: healer\n    static_configs:\n      - targets: ['127.0.0.1:{healer_port}']\n"
            ),
        )
        .expect("the Prometheus config is written");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let mut child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Prometheus starts");
        let started = Instant::now();
        loop {
            if get(port, "/-/ready").0 == 200 {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Prometheus was not ready within 30 s ({exited:?}); its log:\n{}",
                    std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Prometheus { port, child, dir }
    }

    /// The `healer` job's scrape target as `GET /api/v1/targets` shows it
    /// (`health`, `lastError`, ...), once Prometheus has one.
    pub fn healer_target(&self) -> Option<serde_json::Value> {
        let (status, body) = get(self.port, "/api/v1/targets?state=active");
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["activeTargets"]
            .as_array()?
            .iter()
            .find(|target| target["labels"]["job"] == "healer")
            .cloned()
    }

    /// The value of an instant query that gives at most one series; `None`
    /// when it gives none. Panics when Prometheus refuses the query.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = get(self.port, &path);
        assert_eq!(status, 200, "Prometheus refused {promql:?}: {body}");
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {body}"));
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(series.len() <= 1, "{promql:?} gave several series: {body}");
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Its log so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Where Debian installs Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one headless Chromium run may take.
const CHROMIUM_WITHIN: Duration = Duration::from_secs(60);

/// Loads `url` in a fresh headless Chromium (Debian's `chromium`) with a
/// window of `(width, height)` and returns the DOM once the page has
/// loaded (`--dump-dom`).
pub fn chromium_dom(url: &str, window: (u32, u32)) -> String {
    let stdout = headless_chromium(url, window, "--dump-dom");
    String::from_utf8_lossy(&stdout).into_owned()
}

/// Loads `url` in a fresh headless Chromium with a window of `(width,
/// height)` and writes a screenshot of it to `png`.
pub fn chromium_screenshot(url: &str, window: (u32, u32), png: &Path) {
    headless_chromium(url, window, &format!("--screenshot={}", png.display()));
}

/// Runs headless Chromium once on `url` with `action`, in its own process
/// group, with a new profile and nothing of its own on the network (no
/// background or component traffic, and no name but 127.0.0.1 resolves);
/// the group is killed after [`CHROMIUM_WITHIN`] and when it is done.
/// Panics (never skips) when Chromium is not installed or fails. Its
/// stdout.
fn headless_chromium(url: &str, (width, height): (u32, u32), action: &str) -> Vec<u8> {
    use std::os::unix::process::CommandExt;
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr_file = dir.path().join("chromium.stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--window-size={width},{height}"))
        .arg(action)
        .arg(url)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("Chromium starts");
    let group = child.id().to_string();
    let mut pipe = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    });
    let kill_group = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > CHROMIUM_WITHIN {
            kill_group();
            let _ = child.wait();
            panic!(
                "Chromium did not finish {url} within {CHROMIUM_WITHIN:?}; its stderr:\n{}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Helpers it leaves behind go with the group.
    kill_group();
    let stdout = out.join().unwrap_or_default();
    assert!(
        status.success(),
        "Chromium failed on {url} ({status}); its stderr:\n{}",
        std::fs::read_to_string(&stderr_file).unwrap_or_default()
    );
    stdout
}

/// A healthy service for a process target: `sleep` running, its pid in a
/// pidfile. Killed when dropped.
pub struct Service(std::process::Child);

impl Service {
    /// Starts `sleep 600` and writes its pid to `pidfile`.
    pub fn start(pidfile: &Path) -> Service {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep starts");
        std::fs::write(pidfile, format!("{}\n", child.id())).expect("the pidfile is written");
        Service(child)
    }

    /// Kills it (SIGKILL) and reaps it: the service is down.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The resident set size of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
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

/// How long to wait after an event before killing healer, so the store
/// has written it: its batch window is 50 ms, a write takes a few.
pub const STORE_WRITES_WITHIN: Duration = Duration::from_secs(1);

/// Runs `query` (one integer) on the state database of a daemon whose
/// config is in `dir`. healer holds its database exclusively while it
/// runs: read it after [`Daemon::stop`] or [`Daemon::kill`]. `None` when it
/// cannot be read.
pub fn store_number(dir: &Path, query: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        store_file(dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.query_row(query, [], |row| row.get(0)).ok()
}

/// The events after the `n`-th start (1-based) of healer on this event log.
pub fn after_start(records: &[Record], n: usize) -> Vec<Event> {
    records
        .iter()
        .skip_while({
            let mut starts = 0;
            move |r| {
                if matches!(r.event, Event::Started { .. }) {
                    starts += 1;
                }
                starts < n
            }
        })
        .map(|r| r.event.clone())
        .collect()
}

/// The plugin workers `healer` (pid) runs: each `healer worker PACKAGE`
/// child (not a probe), with its command line (NULs as spaces).
pub fn workers_of(healer: u32) -> Vec<(u32, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{healer}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let serving = cmdline.starts_with("healer worker ") && !cmdline.contains(" --probe ");
            serving.then_some((pid, cmdline))
        })
        .collect()
}

/// This process's CPU time (all threads), in ns.
pub fn own_cpu_ns() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

/// A `[[target]]` named `service` that keeps `sleep SECONDS` running
/// through `dir/service.pid`, restarted by the `command` recoverer.
pub fn supervised_target(dir: &Path, seconds: u32) -> String {
    format!(
        r#"
[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{dir}/service.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep {seconds} & echo $! > {dir}/service.pid"]
"#,
        dir = dir.display()
    )
}

/// The fenced blocks of a Markdown page marked `file=NAME` (```` ```toml
/// file=healer.toml ````), in order: what a recipe or guide writes.
pub fn markdown_files(markdown: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut open: Option<(Option<String>, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let file = info
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("file="))
                    .map(str::to_owned);
                open = Some((file, String::new()));
            }
            (Some(_), Some("")) => {
                if let Some((Some(file), text)) = open.take() {
                    files.push((file, text));
                }
            }
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    files
}
