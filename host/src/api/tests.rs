//! Who the listener serves, from outside: the real router (the intake's
//! endpoints, the API merged in, the access layer before both) on a real
//! listener at 127.0.0.1, asked by plain HTTP/1.1 requests written here
//! byte for byte, as curl or a browser would send them. The one target
//! runs on plugins in memory (`plugins::memory`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{router, Api, Plugins, ReloadRequest};
use crate::board::Board;
use crate::config::Config;
use crate::engine::{self, Engine, Settings};
use crate::events::witness::{Witness, WITHIN};
use crate::events::Event;
use crate::history::Recent;
use crate::intake::{self, Intake, Saved};
use crate::metrics::Metrics;
use crate::plugins::memory::{self, Memory, Recorder, Script};

const TOKEN: &str = "0123456789abcdef-token";

/// `Basic` credentials with [`TOKEN`] as the password, as a browser sends
/// them (`x:0123456789abcdef-token`).
const BASIC: &str = "Basic eDowMTIzNDU2Nzg5YWJjZGVmLXRva2Vu";

/// A daemon's listener, with one target (`web`) and one reflex.
struct Listener {
    address: SocketAddr,
    events: Witness,
    stop: watch::Sender<bool>,
    _engine: Engine,
    _reloads: mpsc::Receiver<ReloadRequest>,
    _dir: tempfile::TempDir,
}

/// Serves a config whose `[intake]` has a token when `token` says so.
/// Its target is checked once an hour: a loop late on a busy machine
/// would make `/healthz` answer 503, which is not what these tests ask.
async fn listening(token: bool) -> Listener {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let intake = if token {
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("the token");
        "[intake]\nbind = \"127.0.0.1:0\"\ntoken_file = \"token\"\n"
    } else {
        "[intake]\nbind = \"127.0.0.1:0\"\n"
    };
    let text = format!(
        "{intake}\n[workflow.restart]\nsteps = [{{ plugin = \"restart\" }}]\n\n[[reflex]]\nmatch = \"api.*\"\nworkflow = \"restart\"\n\n\
         [[target]]\nname = \"web\"\ninterval = \"1h\"\n[target.monitor]\nplugin = \"pid\"\n"
    );
    let path = dir.path().join("healer.toml");
    std::fs::write(&path, text).expect("the config written");
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    let pid = Script::new(healer_plugin_sdk::Observation::ok("running"));
    let catalog = memory::catalog([Memory::new("test")
        .monitor_as("pid", &pid)
        .recoverer_as("restart", &Recorder::default())
        .package()]);
    let (events, witness) = Witness::stream();
    let metrics = Arc::new(Metrics::new());
    let board = Board::new(Arc::clone(&metrics) as Arc<dyn crate::board::CheckTimers>);
    let (stop, shutdown) = watch::channel(false);
    let settings = Settings {
        max_concurrent_recoveries: 1,
        history: 10,
    };
    let mut engine = Engine::new(
        settings,
        events.clone(),
        Arc::clone(&board),
        shutdown.clone(),
    );
    for runner in engine::build(&config, &catalog, HashMap::new(), HashMap::new())
        .await
        .unwrap_or_else(|errors| panic!("{errors:?}"))
    {
        engine.start(runner);
    }
    let intake = Intake::build(&config, &catalog, events, Saved::default(), None)
        .await
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    assert_eq!(intake.required_token().is_some(), token);
    let (reload, reloads) = mpsc::channel(1);
    let api = Arc::new(Api {
        board,
        engine: engine.handle(),
        recent: Recent::new(Vec::new()),
        plugins: RwLock::new(Plugins::of(&catalog)),
        reload,
        token: intake.required_token().map(str::to_owned),
        store: None,
        metrics,
        started: std::time::Instant::now(),
        answer_within: intake.request_timeout(),
        fleet: None,
        confirming: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(intake::serve(listener, intake, router(api), shutdown));
    Listener {
        address,
        events: witness,
        stop,
        _engine: engine,
        _reloads: reloads,
        _dir: dir,
    }
}

/// An answer, as read off the connection.
#[derive(Debug)]
struct Received {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request: its method, path and headers; `Host` names the
/// listener's address unless one is given.
struct Request {
    head: String,
    host: bool,
    body: String,
}

impl Request {
    fn new(method: &str, path: &str) -> Request {
        Request {
            head: format!("{method} {path} HTTP/1.1\r\n"),
            host: false,
            body: String::new(),
        }
    }

    fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    fn post(path: &str) -> Request {
        Request::new("POST", path)
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.host |= name.eq_ignore_ascii_case("host");
        self.head.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// A JSON body, with its content type.
    fn json(mut self, body: &str) -> Request {
        self.body = body.to_owned();
        self.header("Content-Type", "application/json")
    }

    async fn send(self, to: &Listener) -> Received {
        let mut text = self.head;
        if !self.host {
            text.push_str(&format!("Host: {}\r\n", to.address));
        }
        text.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.body.len(),
            self.body
        ));
        let exchange = async {
            let mut stream = TcpStream::connect(to.address).await?;
            stream.write_all(text.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(WITHIN, exchange)
            .await
            .expect("an answer in time")
            .expect("an answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Received {
            status,
            headers,
            body: body.to_owned(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

const READS: [&str; 7] = [
    "/api/v1/targets",
    "/api/v1/facts",
    "/api/v1/issues",
    "/api/v1/history",
    "/api/v1/plugins",
    "/metrics",
    "/",
];

const PAUSE: &str = r#"{"for": "30m", "reason": "deploy"}"#;

#[tokio::test]
async fn with_a_token_every_endpoint_but_healthz_needs_it() {
    let listener = listening(true).await;
    for path in READS {
        let answer = Request::get(path).send(&listener).await;
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
        assert!(
            answer.body.contains("needs the token"),
            "{path}: {answer:?}"
        );
        let challenge = if path == "/" {
            "Basic realm=\"healer\""
        } else {
            "Bearer"
        };
        assert_eq!(answer.header("www-authenticate"), Some(challenge), "{path}");
    }
    let health = Request::get("/healthz").send(&listener).await;
    assert_eq!(health.status, 200, "{health:?}");
    let pause = Request::post("/api/v1/targets/web/pause")
        .json(PAUSE)
        .send(&listener)
        .await;
    assert_eq!(pause.status, 401, "{pause:?}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_right_one_is_served() {
    let listener = listening(true).await;
    for wrong in ["0123456789abcdef-tokeN", "0123456789abcdef", ""] {
        let answer = Request::get("/api/v1/targets")
            .bearer(wrong)
            .send(&listener)
            .await;
        assert_eq!(answer.status, 401, "{wrong:?}: {answer:?}");
    }
    let wrong = Request::get("/api/v1/targets")
        .bearer("not-the-token-0123456789")
        .send(&listener)
        .await;
    assert!(wrong.body.contains("wrong token"), "{wrong:?}");
    for path in READS {
        let answer = Request::get(path).bearer(TOKEN).send(&listener).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
    let targets = Request::get("/api/v1/targets")
        .header("authorization", &format!("bEaReR {TOKEN}"))
        .send(&listener)
        .await;
    assert!(targets.body.contains("\"name\":\"web\""), "{targets:?}");
}

#[tokio::test]
async fn a_browser_may_read_with_the_token_as_its_basic_password_but_not_write() {
    let listener = listening(true).await;
    let page = Request::get("/")
        .header("Authorization", BASIC)
        .send(&listener)
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let pause = Request::post("/api/v1/targets/web/pause")
        .header("Authorization", BASIC)
        .json(PAUSE)
        .send(&listener)
        .await;
    assert_eq!(pause.status, 401, "{pause:?}");
}

#[tokio::test]
async fn a_write_with_the_token_reaches_the_engine() {
    let mut listener = listening(true).await;
    let pause = Request::post("/api/v1/targets/web/pause")
        .bearer(TOKEN)
        .json(PAUSE)
        .send(&listener)
        .await;
    assert_eq!(pause.status, 200, "{pause:?}");
    listener
        .events
        .wait_for("the pause", |e| {
            matches!(e, Event::TargetPaused { target, pause } if target == "web" && pause.reason == "deploy")
        })
        .await;
    let unknown = Request::post("/api/v1/targets/nope/resume")
        .bearer(TOKEN)
        .json("{}")
        .send(&listener)
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
}

#[tokio::test]
async fn a_write_that_is_not_json_is_refused_whatever_its_token() {
    let listener = listening(true).await;
    for request in [
        Request::post("/api/v1/targets/web/pause").bearer(TOKEN),
        Request::post("/api/v1/targets/web/pause"),
        Request::post("/api/v1/targets/web/pause")
            .bearer(TOKEN)
            .header("Content-Type", "text/plain"),
    ] {
        let answer = request.send(&listener).await;
        assert_eq!(answer.status, 415, "{answer:?}");
    }
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_before_any_token_is_looked_at() {
    let listener = listening(true).await;
    for path in ["/api/v1/targets", "/healthz"] {
        let answer = Request::get(path)
            .header("Host", "rebind.attacker.example")
            .bearer(TOKEN)
            .send(&listener)
            .await;
        assert_eq!(answer.status, 421, "{path}: {answer:?}");
        assert!(answer.body.contains("allowed_hosts"), "{answer:?}");
    }
    let localhost = Request::get("/api/v1/targets")
        .header("Host", "localhost:9999")
        .bearer(TOKEN)
        .send(&listener)
        .await;
    assert_eq!(
        localhost.status, 200,
        "any port of localhost: {localhost:?}"
    );
}

#[tokio::test]
async fn a_write_from_another_site_is_forbidden_even_with_the_token() {
    let listener = listening(true).await;
    let pause = || {
        Request::post("/api/v1/targets/web/pause")
            .bearer(TOKEN)
            .json(PAUSE)
    };
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let answer = pause().header(name, value).send(&listener).await;
        assert_eq!(answer.status, 403, "{name}: {value}: {answer:?}");
    }
    let own = format!("http://{}", listener.address);
    let answer = pause().header("Origin", &own).send(&listener).await;
    assert_eq!(answer.status, 200, "its own page: {answer:?}");
    let read = Request::get("/api/v1/targets")
        .bearer(TOKEN)
        .header("Origin", "http://evil.example")
        .header("Sec-Fetch-Site", "cross-site")
        .send(&listener)
        .await;
    assert_eq!(read.status, 200, "a read is not refused: {read:?}");
}

#[tokio::test]
async fn every_answer_keeps_browsers_from_handing_it_to_another_origin() {
    let listener = listening(true).await;
    for request in [
        Request::get("/api/v1/targets").bearer(TOKEN),
        Request::get("/api/v1/targets"),
        Request::get("/healthz").header("Host", "rebind.attacker.example"),
        Request::get("/no/such/endpoint").bearer(TOKEN),
    ] {
        let answer = request.send(&listener).await;
        assert_eq!(
            answer.header("cross-origin-resource-policy"),
            Some("same-origin"),
            "{answer:?}"
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
}

#[tokio::test]
async fn without_a_token_a_loopback_listener_serves_reads_and_writes() {
    let mut listener = listening(false).await;
    for path in READS {
        let answer = Request::get(path).send(&listener).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
    let pause = Request::post("/api/v1/targets/web/pause")
        .json(PAUSE)
        .send(&listener)
        .await;
    assert_eq!(pause.status, 200, "{pause:?}");
    listener
        .events
        .wait_for("the pause", |e| matches!(e, Event::TargetPaused { .. }))
        .await;
}

#[tokio::test]
async fn the_anomaly_endpoint_takes_the_token_only_as_bearer() {
    let mut listener = listening(true).await;
    let report = r#"{"name": "api.latency", "details": {"ms": 900}}"#;
    for (authorization, why) in [
        (None, "needs `Authorization: Bearer <token>`"),
        (Some(BASIC), "needs `Authorization: Bearer <token>`"),
        (Some("Bearer not-the-token-0123456789"), "wrong token"),
    ] {
        let mut request = Request::post("/anomaly").json(report);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let answer = request.send(&listener).await;
        assert_eq!(answer.status, 401, "{authorization:?}: {answer:?}");
        assert!(answer.body.contains(why), "{answer:?}");
    }
    assert_eq!(
        listener
            .events
            .count(|e| matches!(e, Event::WorkflowStarted { .. })),
        0
    );
    let answer = Request::post("/anomaly")
        .bearer(TOKEN)
        .json(report)
        .send(&listener)
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    listener
        .events
        .wait_for("the workflow", |e| {
            matches!(
                e,
                Event::WorkflowFinished {
                    succeeded: true,
                    ..
                }
            )
        })
        .await;
}

#[tokio::test]
async fn the_facts_endpoint_answers_a_json_array_filtered_by_target() {
    // The engine's tests prove what is published (target.<name>.healthy
    // and the rest); here, the route, its JSON and its filter.
    let listener = listening(false).await;
    let all = Request::get("/api/v1/facts").send(&listener).await;
    assert_eq!(all.status, 200, "{all:?}");
    let all: serde_json::Value = serde_json::from_str(&all.body).expect("JSON");
    assert!(all.is_array(), "{all}");
    for fact in all.as_array().into_iter().flatten() {
        for field in ["subject", "key", "value", "source", "observed_at"] {
            assert!(!fact[field].is_null(), "{field} in {fact}");
        }
    }
    let other = Request::get("/api/v1/facts?target=nothing")
        .send(&listener)
        .await;
    assert_eq!((other.status, other.body.trim()), (200, "[]"));
}
