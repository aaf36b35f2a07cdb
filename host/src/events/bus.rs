//! The bus: one channel, and the dispatcher thread that hands every event,
//! in order, to every subscriber. Emitting never blocks and never fails;
//! under load the dispatcher gathers bursts, and sheddable events are left
//! out (counted) past [`HIGH_WATER`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::{Event, Record};
use crate::clock::Wall;

/// Events waiting for the dispatcher beyond which sheddable ones are left
/// out (and counted) instead of queued: a flood of reports cannot grow
/// healer's memory without bound while a subscriber (a slow disk) lags.
pub const HIGH_WATER: usize = 10_000;

/// Where events go: the log, the event log file, the store, a test.
pub trait Subscriber: Send {
    /// One event, in order.
    fn deliver(&mut self, record: &Record);
    /// The end of a burst of events: write out what is buffered.
    fn flush(&mut self) {}
    /// Write out everything delivered so far, within `limit`, and go on;
    /// whether it was.
    fn sync(&mut self, limit: Duration) -> bool {
        let _ = limit;
        self.flush();
        true
    }
    /// healer is stopping: finish everything; give up once nothing has
    /// been written for `stall`.
    fn finish(&mut self, stall: Duration) {
        self.sync(stall);
    }
}

enum Message {
    Record(Record),
    Sync(Duration, mpsc::SyncSender<bool>),
    Finish(Duration, mpsc::SyncSender<bool>),
}

/// The sending end of the event stream: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Events {
    sender: mpsc::Sender<Message>,
    every_check: bool,
    load: Arc<Load>,
}

/// How full the stream is: events sent and not yet delivered, and
/// sheddable events left out since the last warning.
#[derive(Default)]
struct Load {
    queued: AtomicUsize,
    shed: AtomicU64,
    /// The dispatcher has delivered everything before a finish request and
    /// is letting the subscribers finish.
    finishing: AtomicBool,
}

/// The longest the subscribers may take to finish once everything is
/// delivered to them; each gives up sooner when it stops making progress
/// (the store: when it cannot write, or writes nothing for the stall
/// limit given to [`Events::finish`]).
const FINISH_AT_MOST: Duration = Duration::from_secs(120);

/// A burst of at least this many events means load: the dispatcher then
/// waits [`GATHER`] before the next instead of sleeping until woken.
const BUSY_BURST: usize = 8;
const GATHER: Duration = Duration::from_millis(1);

/// The receiving end, until [`Inbox::start`] hands it to the dispatcher.
pub struct Inbox(mpsc::Receiver<Message>, Arc<Load>);

impl Events {
    /// A new stream. With `every_check`, every check is an event (for the
    /// event log and debug logs); without, only status changes are.
    /// Events emitted before [`Inbox::start`] wait in the channel.
    pub fn channel(every_check: bool) -> (Events, Inbox) {
        let (sender, receiver) = mpsc::channel();
        let load = Arc::new(Load::default());
        (
            Events {
                sender,
                every_check,
                load: Arc::clone(&load),
            },
            Inbox(receiver, load),
        )
    }

    /// Sends an event, stamped now; a sheddable one is left out (and
    /// counted) while [`HIGH_WATER`] events are waiting.
    pub fn emit(&self, event: Event) {
        if self.load.queued.load(Ordering::Relaxed) >= HIGH_WATER && event.is_sheddable() {
            self.load.shed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        let record = Record {
            at: Wall::now(),
            event,
        };
        // The dispatcher lives as long as any sender; a send fails only
        // while the process exits, or if the dispatcher died: then the
        // event is not waiting either.
        if self.sender.send(Message::Record(record)).is_err() {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Events emitted and not yet delivered to every subscriber.
    pub fn waiting(&self) -> usize {
        self.load.queued.load(Ordering::Relaxed)
    }

    /// Whether checks whose status did not change are wanted too.
    pub fn wants_every_check(&self) -> bool {
        self.every_check
    }

    /// Delivers everything emitted so far and waits (at most `limit`)
    /// until every subscriber has written it out (the store has committed
    /// it); the stream goes on. Returns whether all of it was written in
    /// time (not, for one, while the store cannot write).
    pub fn sync(&self, limit: Duration) -> bool {
        self.ask(limit, Message::Sync)
    }

    /// Delivers everything emitted so far and lets every subscriber finish
    /// (the store writes what it holds and closes the database). Waits as
    /// long as that makes progress: it gives up only when nothing was
    /// delivered or written for `stall` (a subscriber that hangs, a store
    /// that cannot write), so a backlog of acknowledged events is written
    /// out whatever its size; the intake keeps that backlog small. Returns
    /// whether all of it was done.
    pub fn finish(&self, stall: Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(Message::Finish(stall, done)).is_err() {
            return false;
        }
        let started = Instant::now();
        let mut left = self.waiting();
        let mut progressed = Instant::now();
        loop {
            match wait.recv_timeout(Duration::from_millis(100)) {
                Ok(done) => return done,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.load.finishing.load(Ordering::Relaxed) {
                // Each subscriber bounds its own finish by its progress.
                if started.elapsed() > FINISH_AT_MOST {
                    return false;
                }
                continue;
            }
            let now = self.waiting();
            if now < left {
                left = now;
                progressed = Instant::now();
            } else if progressed.elapsed() > stall {
                return false;
            }
        }
    }

    fn ask(
        &self,
        limit: Duration,
        message: fn(Duration, mpsc::SyncSender<bool>) -> Message,
    ) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(message(limit, done)).is_err() {
            return false;
        }
        wait.recv_timeout(limit + Duration::from_millis(500))
            .unwrap_or(false)
    }
}

impl Inbox {
    /// Starts the dispatcher thread: every event goes to every subscriber,
    /// in the order emitted.
    pub fn start(self, mut subscribers: Vec<Box<dyn Subscriber>>) {
        let Inbox(receiver, load) = self;
        let spawned = std::thread::Builder::new()
            .name("healer-events".into())
            .spawn(move || {
                let mut first = receiver.recv().ok();
                while let Some(message) = first.take() {
                    let mut next = Some(message);
                    // Deliver a burst, then flush once.
                    let mut burst = 0;
                    while let Some(message) = next.take() {
                        match message {
                            Message::Record(record) => {
                                load.queued.fetch_sub(1, Ordering::Relaxed);
                                for subscriber in &mut subscribers {
                                    subscriber.deliver(&record);
                                }
                            }
                            Message::Sync(limit, done) => {
                                let mut written = true;
                                for subscriber in &mut subscribers {
                                    written &= subscriber.sync(limit);
                                }
                                let _ = done.send(written);
                            }
                            Message::Finish(limit, done) => {
                                load.finishing.store(true, Ordering::Relaxed);
                                for subscriber in &mut subscribers {
                                    subscriber.finish(limit);
                                }
                                load.finishing.store(false, Ordering::Relaxed);
                                let _ = done.send(true);
                            }
                        }
                        burst += 1;
                        if burst < 4096 {
                            next = receiver.try_recv().ok();
                        }
                    }
                    for subscriber in &mut subscribers {
                        subscriber.flush();
                    }
                    let shed = load.shed.swap(0, Ordering::Relaxed);
                    if shed > 0 {
                        tracing::warn!(
                            left_out = shed,
                            "healer's event stream was flooded: {shed} routine events (unchanged checks, repeated reports) were left out of the log and the store"
                        );
                    }
                    // Under load, let the next burst gather for a moment
                    // rather than be woken for each event: waking the
                    // dispatcher costs the emitter a system call.
                    first = if burst >= BUSY_BURST {
                        std::thread::sleep(GATHER);
                        match receiver.try_recv() {
                            Ok(message) => Some(message),
                            Err(mpsc::TryRecvError::Empty) => receiver.recv().ok(),
                            Err(mpsc::TryRecvError::Disconnected) => None,
                        }
                    } else {
                        receiver.recv().ok()
                    };
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the event dispatcher thread; events are not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{bounded, Json, Run, StepResult, MAX_DETAILS};
    use crate::model::AnomalyState;
    use healer_plugin_sdk::Duration as HumanDuration;
    use serde_json::Value;
    use std::sync::Mutex;

    struct Collect(Arc<Mutex<Vec<Record>>>);

    impl Subscriber for Collect {
        fn deliver(&mut self, record: &Record) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let (events, inbox) = Events::channel(false);
        let (a, b) = (Arc::default(), Arc::default());
        inbox.start(vec![
            Box::new(Collect(Arc::clone(&a))),
            Box::new(Collect(Arc::clone(&b))),
        ]);
        for n in 0..100 {
            events.emit(Event::AnomalyResolved {
                anomaly: format!("a{n}"),
            });
        }
        assert!(events.finish(Duration::from_secs(5)));
        for seen in [a, b] {
            let seen = seen.lock().unwrap();
            let names: Vec<_> = seen.iter().filter_map(|r| r.event.subject()).collect();
            assert_eq!(names.len(), 100);
            assert_eq!(names[0], "a0");
            assert_eq!(names[99], "a99");
        }
    }

    #[test]
    fn a_flooded_stream_leaves_out_repeats_but_never_a_transition() {
        let (events, inbox) = Events::channel(false);
        let resolved = |n: usize| Event::AnomalyResolved {
            anomaly: format!("a{n}"),
        };
        for n in 0..HIGH_WATER {
            events.emit(resolved(n));
        }
        for n in 0..50 {
            events.emit(Event::NoReflex {
                anomaly: format!("flood{n}"),
                details: Json::encode(&Value::Null),
                reason: "no reflex".into(),
                left_out: 0,
            });
        }
        events.emit(resolved(HIGH_WATER));
        let seen = Arc::default();
        inbox.start(vec![Box::new(Collect(Arc::clone(&seen)))]);
        assert!(events.finish(Duration::from_secs(30)));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), HIGH_WATER + 1);
        assert!(seen
            .iter()
            .all(|r| matches!(r.event, Event::AnomalyResolved { .. })));
        assert_eq!(events.load.shed.load(Ordering::Relaxed), 0, "warned of");
    }

    #[test]
    fn an_event_reads_back_from_its_json_line() {
        let record = Record {
            at: Wall::from_millis(1_000),
            event: Event::RecovererFinished {
                target: "web".into(),
                kind: "http.refused".into(),
                attempt: 2,
                recoverer: "command".into(),
                result: StepResult::TimedOut {
                    after: HumanDuration::from_secs(5),
                },
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""event":"recoverer_finished""#), "{line}");
        assert!(line.contains(r#""result":"timed_out""#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
    }

    #[test]
    fn details_encoded_once_are_written_as_they_are_and_read_back() {
        let details = serde_json::json!({"latency_ms": 5000, "region": "us-east-1"});
        let record = Record {
            at: Wall::from_millis(1_000),
            event: Event::WouldRun {
                run: Run {
                    run_id: "run-1".into(),
                    anomaly: "api.high".into(),
                    details: bounded(&details),
                    workflow: "w".into(),
                    params: Json::empty_object(),
                    reflex: "api.*".into(),
                    attempt: 1,
                },
                state: AnomalyState::default(),
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            line.contains(r#""details":{"latency_ms":5000,"region":"us-east-1"}"#),
            "{line}"
        );
        // Read back through the tagged, flattened event.
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
        let Ok(Value::Object(fields)) = serde_json::to_value(&record.event) else {
            panic!("an event is a JSON object")
        };
        assert_eq!(fields["details"], details);
    }

    #[test]
    fn details_past_a_kib_are_kept_as_a_note_of_their_size() {
        let big = serde_json::json!({"blob": "x".repeat(4 * MAX_DETAILS)});
        let kept = bounded(&big).to_value();
        assert_eq!(kept["truncated"], true);
        assert_eq!(kept["bytes"], big.to_string().len());
        assert!(bounded(&big).as_str().len() < MAX_DETAILS);
    }
}
