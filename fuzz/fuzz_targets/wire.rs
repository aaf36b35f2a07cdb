//! The wire between healer and a plugin worker (`plugins::worker::wire`), read
//! from arbitrary bytes three ways: one frame's payload as a worker's
//! message to healer (a plugin is an adversary), the same as healer's
//! message to a worker, and the bytes as a stream of length-delimited
//! frames (the codec with `MAX_FRAME`). What decodes is turned into the
//! host's types as healer does (`plugins/worker/client.rs`: wire.rs's
//! conversions; `plugins/package.rs`: `plugins::bounds` at the handles)
//! and as the worker does (`plugins/worker/serve.rs`).
//!
//! Invariants: no panic; what healer takes from a worker is within the
//! plugin limits (`plugins::bounds`: texts, metrics, findings per answer,
//! diagnoses per answer, kinds that can name an issue), and a refused
//! answer's error is one line; a decoded message encodes again to no more
//! bytes than were read, and that encoding survives another round; a kept
//! observation always decodes.

#![no_main]

use bytes::BytesMut;
use healer::plugins::bounds::{self, Findings};
use healer::plugins::worker::wire::{
    self, Answer, Call, Checked, Diagnosis, FoundList, FromWorker, Seen, ToWorker, MAX_FRAME,
};
use healer_fuzz::assert_one_line;
use healer_plugin_sdk::{Finding, Observation, Outcome, Recovery};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode::<FromWorker>(data) {
        same_again::<FromWorker>(data.len(), &message);
        as_healer_reads(message);
    }
    if let Ok(message) = wire::decode::<ToWorker>(data) {
        same_again::<ToWorker>(data.len(), &message);
        as_worker_reads(message);
    }
    frames(data);
});

/// `message`, read from `read` bytes, encodes again to no more bytes and
/// to an encoding that survives another round.
fn same_again<T: Serialize + for<'a> Deserialize<'a>>(read: usize, message: &T) {
    let once = wire::encode(message);
    assert!(
        once.len() <= read,
        "{read} bytes decoded to a message of {} bytes",
        once.len()
    );
    let back = wire::decode::<T>(&once).expect("an encoded message decodes");
    assert_eq!(
        wire::encode(&back),
        once,
        "a message changed on its way back"
    );
}

/// What healer makes of a worker's message: `Conn::deliver` for pushes,
/// each call's handling of its answer in `RemoteInstance`, then the
/// handles' `bounds`.
fn as_healer_reads(message: FromWorker) {
    match message {
        FromWorker::Reply { answer, .. } => match answer {
            Ok(answer) => answered(answer),
            Err(error) => self::error(error),
        },
        FromWorker::Push { seen, .. } => {
            if let Some(seen) = seen {
                observation(seen.into_pushed());
            }
        }
        FromWorker::Watched {
            began_ns,
            late_us,
            took_us,
            checked,
            diagnoses,
            ..
        } => {
            let _ = wire::instant_of(began_ns);
            let _ = (
                std::time::Duration::from_micros(late_us),
                std::time::Duration::from_micros(took_us),
            );
            answered(Answer::Observed { checked, diagnoses });
        }
        FromWorker::Quiet(runs) => {
            for runs in runs {
                let _ = wire::instant_of(runs.latest_ns);
                let _ = std::time::Duration::from_micros(runs.late_us);
            }
        }
        FromWorker::Pong { .. } | FromWorker::Ready => {}
    }
}

fn answered(answer: Answer) {
    let _ = answer.kind();
    match answer {
        Answer::Done => {}
        Answer::Seen(seen) => match seen.into_checked() {
            Ok(seen) => observation(seen),
            Err(refused) => assert_one_line(&refused, "a refused check"),
        },
        Answer::Findings(found) => findings(found),
        Answer::Outcome { summary, details } => {
            let outcome = bounds::outcome(Outcome {
                summary,
                details: wire::details_from_text(&details),
            });
            assert!(
                outcome.summary.len() <= bounds::TEXT_BYTES,
                "an outcome's summary"
            );
            keep(&outcome);
        }
        Answer::Observed { checked, diagnoses } => {
            assert!(diagnoses.len() <= bounds::DIAGNOSES_PER_ANSWER, "diagnoses");
            match checked {
                Checked::Seen(seen) => match seen.into_observation_without_details() {
                    Ok(seen) => observation(seen),
                    Err(error) => self::error(error),
                },
                Checked::Failed(error) => self::error(error),
                Checked::TimedOut => {}
            }
            for diagnosis in diagnoses {
                match diagnosis {
                    Diagnosis::Found(found) => findings(found),
                    Diagnosis::Failed(error) => self::error(error),
                    Diagnosis::TimedOut => {}
                }
            }
        }
        Answer::Declared {
            kinds,
            own_timeout_ms,
        } => {
            let declared = bounds::declared(healer_plugin_sdk::ffi::Declared {
                kinds,
                own_timeout_ms,
            });
            let kinds = declared.kinds.unwrap_or_default();
            assert!(kinds.len() <= bounds::DECLARED_KINDS, "declared kinds");
            for kind in &kinds {
                assert!(healer_plugin_sdk::check_kind(kind).is_ok(), "a declared kind");
            }
        }
    }
}

/// An observation as healer records it (the board, events, the store:
/// all JSON).
fn observation(seen: Observation) {
    let seen = bounds::observation(seen);
    assert!(seen.summary.len() <= bounds::TEXT_BYTES, "a summary");
    assert!(
        seen.metrics.len() <= bounds::METRICS_PER_OBSERVATION,
        "metrics"
    );
    for metric in &seen.metrics {
        assert!(
            metric.name.len() <= bounds::METRIC_NAME_BYTES,
            "a metric name"
        );
        assert!(
            metric.unit.len() <= bounds::METRIC_NAME_BYTES,
            "a metric unit"
        );
    }
    let _ = seen.status.as_str();
    keep(&seen);
}

/// A diagnoser's findings as healer takes them: converted as `remote.rs`
/// does, then held by `bounds::findings` (kinds checked).
fn findings(found: FoundList) {
    assert!(
        found.kept.len() <= bounds::FINDINGS_PER_ANSWER,
        "findings decoded"
    );
    let kept: Vec<Finding> = found.kept.into_iter().map(Finding::from).collect();
    match bounds::findings(kept, found.dropped) {
        Ok(Findings { kept, .. }) => {
            assert!(kept.len() <= bounds::FINDINGS_PER_ANSWER, "findings taken");
            for finding in &kept {
                assert!(
                    bounds::check_kind(&finding.kind).is_ok(),
                    "kind {:?} taken",
                    finding.kind
                );
                assert!(
                    finding.summary.len() <= bounds::TEXT_BYTES,
                    "a finding's summary"
                );
                let _ = finding.severity.as_str();
                keep(finding);
            }
        }
        Err(refused) => assert_one_line(&refused, "a refused diagnosis"),
    }
}

/// A plugin's error, as healer shows it.
fn error(text: String) {
    let text = bounds::error(text);
    assert!(text.len() <= bounds::TEXT_BYTES, "an error");
    keep(&text);
}

/// Encodes what healer keeps as the store and the event log do.
fn keep<T: Serialize + ?Sized>(value: &T) {
    serde_json::to_string(value).expect("what healer keeps encodes as JSON");
}

/// What a worker makes of healer's message (`plugins/worker/serve.rs`).
fn as_worker_reads(message: ToWorker) {
    let ToWorker::Call { call, .. } = message else {
        return;
    };
    match call {
        Call::CheckConfig { config, .. } | Call::Create { config, .. } => {
            let _ = serde_json::from_str::<serde_json::Value>(&config);
        }
        Call::Check { .. } => {}
        Call::Diagnose {
            latest, history, ..
        } => {
            let _ = Observation::from(latest);
            let _: Vec<Observation> = history.into_iter().map(Observation::from).collect();
        }
        Call::Recover { recovery, .. } => {
            let _ = serde_json::from_str::<Recovery>(&recovery);
        }
        Call::Observe(observe) => {
            for seen in observe.missed.iter().chain(observe.pushed.as_ref()) {
                kept(seen);
            }
            if let Some(seen) = observe.pushed {
                let _ = healer_plugin_sdk::ffi::ObservationFfi::from(seen);
            }
        }
    }
}

/// A worker keeps an observation in a history as one buffer and decodes
/// it for each diagnosis.
fn kept(seen: &Seen) {
    let buffer = wire::encode_kept(seen);
    assert!(
        wire::decode_kept(&buffer).is_some(),
        "a kept observation did not decode"
    );
}

/// The bytes as the socket gives them: frames, each read as healer reads
/// a worker's, until the codec wants more or refuses.
fn frames(data: &[u8]) {
    let mut codec = wire::codec();
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        assert!(frame.len() <= MAX_FRAME, "a frame beyond MAX_FRAME");
        if let Ok(message) = wire::decode::<FromWorker>(&frame) {
            as_healer_reads(message);
        }
    }
    let _ = codec.decode_eof(&mut buffer);
}
