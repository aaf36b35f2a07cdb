//! The doubles tests usually want in an in-memory package: a [`Script`]ed
//! monitor and a [`Recorder`] recoverer. Both implement the SDK's author
//! traits, as any plugin does; clones share their script and record, so a
//! test keeps one and the package makes instances of clones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use healer_plugin_sdk::{Error, Monitor, Observation, Outcome, Recoverer, Recovery};
use serde_json::Value;

/// What a [`Script`] answers to one check.
#[derive(Clone, Debug)]
pub enum Seen {
    /// This observation.
    Observed(Observation),
    /// The check fails with this error (the monitor could not look).
    Fails(String),
    /// The check never answers.
    Hangs,
    /// The check panics with this message.
    Panics(String),
}

impl From<Observation> for Seen {
    fn from(seen: Observation) -> Seen {
        Seen::Observed(seen)
    }
}

/// What a [`Recorder`] answers to one recovery.
#[derive(Clone, Debug)]
pub enum RecorderReply {
    /// Done, saying this.
    Done(String),
    /// Failed with this error.
    Fails(String),
    /// Never answers.
    Hangs,
}

/// Answers given in turn: those queued, then the standing one for ever.
struct Answers<T> {
    queued: VecDeque<T>,
    standing: T,
}

impl<T: Clone> Answers<T> {
    fn new(standing: T) -> Answers<T> {
        Answers {
            queued: VecDeque::new(),
            standing,
        }
    }

    fn next(&mut self) -> T {
        self.queued
            .pop_front()
            .unwrap_or_else(|| self.standing.clone())
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A monitor that answers what the test tells it.
#[derive(Clone)]
pub struct Script(Arc<Mutex<(Answers<Seen>, usize)>>);

impl Script {
    /// A script that answers `seen` to every check.
    pub fn new(seen: impl Into<Seen>) -> Script {
        Script(Arc::new(Mutex::new((Answers::new(seen.into()), 0))))
    }

    /// Answers these to the next checks, in order, before the standing
    /// answer.
    pub fn then(&self, next: impl IntoIterator<Item = Seen>) {
        locked(&self.0).0.queued.extend(next);
    }

    /// Answers `seen` from now on (whatever was queued is dropped).
    pub fn always(&self, seen: impl Into<Seen>) {
        let mut script = locked(&self.0);
        script.0.queued.clear();
        script.0.standing = seen.into();
    }

    /// How many checks it was asked for.
    pub fn checks(&self) -> usize {
        locked(&self.0).1
    }

    fn next(&self) -> Seen {
        let mut script = locked(&self.0);
        script.1 += 1;
        script.0.next()
    }
}

impl Monitor for Script {
    type Config = Value;
    const NAME: &'static str = "script";
    const DESCRIPTION: &'static str = "answers what the test tells it";

    fn new(_: Value) -> Result<Script, Error> {
        Ok(Script::new(Observation::ok("as scripted")))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        match self.next() {
            Seen::Observed(seen) => Ok(seen),
            Seen::Fails(error) => Err(error.into()),
            Seen::Hangs => std::future::pending().await,
            Seen::Panics(message) => panic!("{message}"),
        }
    }
}

/// A recoverer that keeps every request it is given and answers what the
/// test tells it (done, unless told otherwise).
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<(Answers<RecorderReply>, Vec<Recovery>)>>);

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new(RecorderReply::Done("done".to_owned()))
    }
}

impl Recorder {
    /// A recorder that answers `reply` to every recovery.
    pub fn new(reply: RecorderReply) -> Recorder {
        Recorder(Arc::new(Mutex::new((Answers::new(reply), Vec::new()))))
    }

    /// Answers these to the next recoveries, in order, before the standing
    /// answer.
    pub fn then(&self, next: impl IntoIterator<Item = RecorderReply>) {
        locked(&self.0).0.queued.extend(next);
    }

    /// Every recovery it was asked for, in order.
    pub fn calls(&self) -> Vec<Recovery> {
        locked(&self.0).1.clone()
    }

    fn record(&self, recovery: &Recovery) -> RecorderReply {
        let mut record = locked(&self.0);
        record.1.push(recovery.clone());
        record.0.next()
    }
}

impl Recoverer for Recorder {
    type Config = Value;
    const NAME: &'static str = "recorder";
    const DESCRIPTION: &'static str = "keeps what it is asked and answers what the test tells it";

    fn new(_: Value) -> Result<Recorder, Error> {
        Ok(Recorder::default())
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        match self.record(recovery) {
            RecorderReply::Done(summary) => Ok(Outcome::done(summary)),
            RecorderReply::Fails(error) => Err(error.into()),
            RecorderReply::Hangs => std::future::pending().await,
        }
    }
}
