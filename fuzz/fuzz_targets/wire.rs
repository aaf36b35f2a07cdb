//! The wire between healer and a plugin worker (`plugins::wire`), read
//! from arbitrary bytes three ways: one frame's payload as a worker's
//! message to healer (a plugin is an adversary), the same as healer's
//! message to a worker, and the bytes as a stream of length-delimited
//! frames (the codec with `MAX_FRAME`). What decodes is turned into the
//! host's types as healer (`plugins/remote.rs`) and the worker
//! (`plugins/serve.rs`) do, with wire.rs's own conversions.
//!
//! Invariants: no panic; a decoded message encodes again, and that
//! encoding decodes to the same encoding and is no longer than the bytes
//! read (what healer holds is bounded by what it was sent); a kept
//! observation always decodes.

#![no_main]

use bytes::BytesMut;
use healer::plugins::wire::{
    self, Answer, Call, Checked, Diagnosis, FromWorker, Seen, ToWorker, MAX_FRAME,
};
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
/// and each call's handling of its answer in `RemoteInstance`.
fn as_healer_reads(message: FromWorker) {
    match message {
        FromWorker::Reply { answer, .. } => match answer {
            Ok(answer) => answered(answer),
            Err(error) => keep(&error),
        },
        FromWorker::Push { seen, .. } => {
            if let Some(seen) = seen {
                observation(Observation::from(seen));
            }
        }
        FromWorker::Pong { .. } | FromWorker::Ready => {}
    }
}

fn answered(answer: Answer) {
    match answer {
        Answer::Done => {}
        Answer::Seen(seen) => observation(Observation::from(seen)),
        Answer::Findings(found) => {
            for finding in found.into_iter().map(Finding::from) {
                self::finding(finding);
            }
        }
        Answer::Outcome { summary, details } => keep(&Outcome {
            summary,
            details: wire::details_from_text(&details),
        }),
        Answer::Observed { checked, diagnoses } => {
            match checked {
                Checked::Seen(seen) => observation(Observation::from(seen)),
                Checked::Failed(error) => keep(&error),
                Checked::TimedOut => {}
            }
            for diagnosis in diagnoses {
                match diagnosis {
                    Diagnosis::Found(found) => {
                        for finding in found.into_iter().map(Finding::from) {
                            self::finding(finding);
                        }
                    }
                    Diagnosis::Failed(error) => keep(&error),
                    Diagnosis::TimedOut => {}
                }
            }
        }
    }
}

/// An observation as healer records it (the board, events, the store:
/// all JSON).
fn observation(seen: Observation) {
    let _ = seen.status.as_str();
    keep(&seen);
}

fn finding(finding: Finding) {
    let _ = finding.severity.as_str();
    keep(&finding);
}

/// Encodes what healer keeps as the store and the event log do.
fn keep<T: Serialize + ?Sized>(value: &T) {
    serde_json::to_string(value).expect("what healer keeps encodes as JSON");
}

/// What a worker makes of healer's message (`plugins/serve.rs`).
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
    loop {
        match codec.decode(&mut buffer) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= MAX_FRAME, "a frame beyond MAX_FRAME");
                if let Ok(message) = wire::decode::<FromWorker>(&frame) {
                    as_healer_reads(message);
                }
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let _ = codec.decode_eof(&mut buffer);
}
