//! One running worker as healer's calls see it: the outbox of what healer
//! sends it, the calls waiting for its answers, and the push streams of
//! its monitors; what it sends back is delivered to them, and when it
//! ends, every call in flight ends with the reason.

use std::collections::HashMap;
use std::sync::Mutex;

use healer_plugin_sdk::Observation;
use tokio::sync::{mpsc, oneshot, Notify};

use super::outbox::Outbox;
use super::wire::{self, Answer, FromWorker, ToWorker};
use crate::plugins::lock::lock;

/// One running worker.
pub struct Conn {
    /// Which of its package's workers it is (counted from 1).
    pub generation: u64,
    pub pid: u32,
    pub out: Outbox,
    pub open: Mutex<Open>,
    /// Stop the worker: the package is no longer used.
    pub stop: Notify,
}

/// What waits on one running worker.
#[derive(Default)]
pub struct Open {
    pub calls: HashMap<u64, oneshot::Sender<Result<Answer, String>>>,
    /// Boxed: a channel allocates its slots 32 at a time, and one
    /// channel per monitor adds up at 10,000 targets.
    pub pushes: HashMap<u64, mpsc::Sender<Option<Box<Observation>>>>,
    /// Set once the worker has ended: why.
    pub ended: Option<String>,
}

impl Conn {
    /// Sends `message`; `false` when the outbox has no room for it.
    pub fn send(&self, message: &ToWorker) -> bool {
        self.out.send(wire::encode(message)).is_ok()
    }

    /// Hands what the worker sent to the call or push stream it is for.
    pub fn deliver(&self, message: FromWorker) {
        let mut open = lock(&self.open);
        match message {
            FromWorker::Reply { id, answer } => {
                if let Some(waiting) = open.calls.remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            FromWorker::Push { instance, seen } => {
                let last = seen.is_none();
                // A full backlog drops the observation, as in-process,
                // before anything of it is parsed; what waits there is
                // held to the smaller limit of a push.
                if let Some(Ok(slot)) = open.pushes.get(&instance).map(|p| p.try_reserve()) {
                    slot.send(seen.map(|seen| Box::new(seen.into_pushed())));
                }
                if last {
                    open.pushes.remove(&instance);
                }
            }
            FromWorker::Pong { .. } | FromWorker::Ready => {}
        }
    }

    /// Ends every call in flight with `message` and closes every push
    /// stream; returns how many calls were in flight.
    pub fn end(&self, message: &str) -> usize {
        let mut open = lock(&self.open);
        open.ended = Some(message.to_owned());
        open.pushes.clear();
        let calls = std::mem::take(&mut open.calls);
        let in_flight = calls.len();
        for (_, waiting) in calls {
            let _ = waiting.send(Err(message.to_owned()));
        }
        in_flight
    }
}
