//! Writes the `wire` target's seeds: one frame payload per message kind
//! each way, encoded as healer and its workers encode them, and a stream
//! of length-delimited frames. Run from `fuzz/`:
//! `cargo run --example wire_seeds -- corpus/wire`.

use std::path::PathBuf;

use bytes::BytesMut;
use healer::plugins::worker::wire::{
    self, Answer, Call, Checked, Diagnosis, Found, FromWorker, Kind, Observe, QuietRuns, Seen,
    ToWorker, Watch,
};
use healer_plugin_sdk::{Finding, Observation, Outcome};
use tokio_util::codec::Encoder;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or("corpus/wire".to_owned()));
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    let seen = || {
        Seen::from(
            &Observation::warning("answered 200 in 812 ms")
                .metric("latency", 812.5, "ms")
                .metric("count", 3.0, "")
                .detail("url", "http://127.0.0.1/"),
        )
    };
    let from_worker = [
        ("ready", FromWorker::Ready),
        ("pong", FromWorker::Pong { seq: 7 }),
        (
            "reply-done",
            FromWorker::Reply {
                id: 1,
                answer: Ok(Answer::Done),
            },
        ),
        (
            "reply-error",
            FromWorker::Reply {
                id: 2,
                answer: Err("unknown field `urll`, expected `url`".to_owned()),
            },
        ),
        (
            "reply-seen",
            FromWorker::Reply {
                id: 3,
                answer: Ok(Answer::Seen(seen())),
            },
        ),
        (
            "reply-findings",
            FromWorker::Reply {
                id: 4,
                answer: Ok(Answer::Findings(found())),
            },
        ),
        (
            "reply-outcome",
            FromWorker::Reply {
                id: 5,
                answer: Ok(Answer::outcome(
                    &Outcome::done("restarted nginx").detail("pid", 4242),
                )),
            },
        ),
        (
            "reply-observed",
            FromWorker::Reply {
                id: 6,
                answer: Ok(Answer::Observed {
                    checked: Checked::Seen(seen()),
                    diagnoses: vec![
                        Diagnosis::Found(found()),
                        Diagnosis::Failed("panicked".to_owned()),
                        Diagnosis::TimedOut,
                    ],
                }),
            },
        ),
        (
            "reply-observed-failed",
            FromWorker::Reply {
                id: 7,
                answer: Ok(Answer::Observed {
                    checked: Checked::Failed("connection refused".to_owned()),
                    diagnoses: Vec::new(),
                }),
            },
        ),
        // Beyond the plugin limits: a summary of 2 KiB, details of 17 KiB,
        // 80 metrics, 100 findings, one kind that cannot name an issue.
        (
            "reply-seen-beyond-limits",
            FromWorker::Reply {
                id: 8,
                answer: Ok(Answer::Seen(Seen::from(
                    &(0..80)
                        .fold(Observation::critical("s".repeat(2048)), |seen, i| {
                            seen.metric(format!("m{i}"), f64::from(i), "ms")
                        })
                        .detail("blob", "b".repeat(17 << 10)),
                ))),
            },
        ),
        (
            "reply-findings-beyond-limits",
            FromWorker::Reply {
                id: 9,
                answer: Ok(Answer::Findings(
                    (0..100)
                        .map(|i| Found::from(&Finding::critical(format!("flood.k{i}"), "s")))
                        .chain([Found::from(&Finding::critical("not a kind!", "s"))])
                        .collect(),
                )),
            },
        ),
        (
            "push",
            FromWorker::Push {
                instance: 3,
                seen: Some(seen()),
            },
        ),
        (
            "push-end",
            FromWorker::Push {
                instance: 3,
                seen: None,
            },
        ),
        (
            "watched",
            FromWorker::Watched {
                monitor: 3,
                began_ns: 12_000_000_000,
                late_us: 1_500,
                took_us: 900,
                checked: Checked::Seen(seen()),
                diagnoses: vec![Diagnosis::Found(found()), Diagnosis::TimedOut],
            },
        ),
        (
            "quiet",
            FromWorker::Quiet(vec![
                QuietRuns {
                    monitor: 3,
                    checks: 1,
                    took_us: 850,
                    late: 0,
                    late_us: 120,
                    missed: 0,
                    latest_ns: 12_000_000_000,
                },
                QuietRuns {
                    monitor: 9,
                    checks: 0,
                    took_us: 0,
                    late: 0,
                    late_us: 2_300_000,
                    missed: 2,
                    latest_ns: 0,
                },
            ]),
        ),
    ];
    let to_worker = [
        ("ping", ToWorker::Ping { seq: 7 }),
        ("cancel", ToWorker::Cancel { id: 9 }),
        ("drop", ToWorker::Drop { instance: 3 }),
        (
            "check-config",
            call(Call::CheckConfig {
                kind: Kind::Monitor,
                name: "http".to_owned(),
                config: r#"{"url":"http://127.0.0.1:8080/healthz","timeout":"2s"}"#.to_owned(),
            }),
        ),
        (
            "create",
            call(Call::Create {
                instance: 3,
                kind: Kind::Recoverer,
                name: "command".to_owned(),
                config: r#"{"argv":["systemctl","restart","nginx"]}"#.to_owned(),
            }),
        ),
        ("check", call(Call::Check { instance: 3, facts: 0 })),
        (
            "diagnose",
            call(Call::Diagnose {
                instance: 4,
                latest: seen(),
                history: vec![seen(), seen()],
            }),
        ),
        (
            "recover",
            call(Call::Recover {
                instance: 5,
                recovery: r#"{"target":"web","finding":{"kind":"http.down","severity":"CRITICAL","summary":"refused","details":null},"attempt":1,"params":{}}"#.to_owned(),
            }),
        ),
        (
            "observe",
            call(Call::Observe(Observe {
                monitor: 3,
                pushed: Some(seen()),
                missed: vec![seen()],
                diagnosers: vec![4, 6],
                keep: 10,
                within_us: 10_000_000,
                facts: 0,
            })),
        ),
        (
            "watch",
            ToWorker::Watch(Watch {
                monitor: 3,
                diagnosers: vec![4],
                keep: 0,
                within_us: 5_000_000,
                every_us: 1_000_000,
                origin_ns: 12_000_000_000,
                facts: 0,
                every_check: false,
            }),
        ),
        ("unwatch", ToWorker::Unwatch { monitor: 3 }),
        ("facts-forgotten", ToWorker::FactsForgotten { monitor: 3 }),
    ];
    let mut stream = BytesMut::new();
    let mut codec = wire::codec();
    for (name, message) in &from_worker {
        let frame = wire::encode(message);
        std::fs::write(dir.join(format!("from-worker-{name}")), &frame).expect("a seed");
        codec.encode(frame, &mut stream).expect("a frame");
    }
    for (name, message) in &to_worker {
        std::fs::write(dir.join(format!("to-worker-{name}")), wire::encode(message))
            .expect("a seed");
    }
    // What healer reads from a worker's socket: frames one after another.
    std::fs::write(dir.join("from-worker-stream"), &stream).expect("a seed");
}

/// Two findings, as the list the wire carries them in.
fn found<List: FromIterator<Found>>() -> List {
    [
        Found::from(&Finding::critical("http.down", "refused").detail("code", 0)),
        Found::from(&Finding::warning("http.slow", "812 ms")),
    ]
    .into_iter()
    .collect()
}

fn call(call: Call) -> ToWorker {
    ToWorker::Call { id: 11, call }
}
