//! Shared knowledge: what healer and its plugins know about this machine's
//! health, as facts. Each fact is a value under a dotted name
//! (`target.db.healthy`, `target.db.process.pid`, `system.disk./var.used`),
//! with the writer it came from, when it was last observed, and when it
//! expires. Pure, like `issues`: no I/O, no clock of its own (callers pass
//! `now`), bounded.
//!
//! - **Names.** A fact's *subject* is what it is about (`target.db`,
//!   `system`); its *key* is what about it (`healthy`, `process.pid`). Its
//!   name is `subject.key`. healer itself writes the keys `status`,
//!   `healthy` and `since` of each target; a plugin writes only keys in
//!   its own namespace (`<plugin>.<key>`), an operator only `note.<key>`.
//! - **Only changes count.** Writing a fact with the value it has refreshes
//!   its time and expiry and is no [`Change`]; a new value, a retraction
//!   and an expiry are.
//! - **Bound to the writer.** A fact expires at its `expires_at` (none for
//!   healer's own target facts, which live as long as the target), and is
//!   retracted with its writer: the check that wrote it coming back
//!   UNKNOWN, the worker serving its plugin ending (crashed or
//!   quarantined: every fact of that package goes at once, and what the
//!   worker answered before it ended is not published after), its target
//!   removed.
//! - **Absence is not falsehood.** [`Facts::read`] gives nothing for a
//!   missing or expired fact, and a [`Gate`] on a fact it cannot read
//!   holds (the UNKNOWN rule): no decision is taken on a fact nobody
//!   vouches for.
//! - **Bounded.** At most [`MAX_FACTS`] in all and [`FACTS_PER_TARGET`]
//!   more for each target running (healer's own three a target are never
//!   refused), [`KEYS_PER_WRITER`] keys and
//!   [`BYTES_PER_WRITER`] bytes per writer and subject, values of at most
//!   [`VALUE_BYTES`]; what does not fit is dropped and said once per
//!   publication ([`Published::dropped`]). Of a check, healer reads at
//!   most [`FACTS_PER_CHECK`](crate::plugins::bounds::FACTS_PER_CHECK)
//!   facts; the rest are counted unread ([`LEFT_OUT_KEY`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// The most facts kept in all, beside [`FACTS_PER_TARGET`] for each
/// target running.
pub const MAX_FACTS: usize = 10_000;
/// Room for each target running: healer's own three and its plugins'.
/// At 10,000 targets a fixed cap was full of healer's own facts, and every
/// check's facts were refused (and sent again, whole, by its worker).
pub const FACTS_PER_TARGET: usize = 16;
/// The most keys one writer keeps about one subject.
pub const KEYS_PER_WRITER: usize = 64;
/// The most bytes (names and values) one writer keeps about one subject.
pub const BYTES_PER_WRITER: usize = 16 * 1024;
/// The longest value, as text.
pub const VALUE_BYTES: usize = 1024;
/// The longest name.
pub const NAME_BYTES: usize = 256;

/// The writer healer itself is.
pub const HEALER: &str = "healer";
/// The writer an operator is (`healer fact set`).
pub const OPERATOR: &str = "operator";

/// A fact's value: a truth, a number or a text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Bool(_) | Value::Number(_) => 8,
            Value::Text(text) => text.len(),
        }
    }
}

/// Who wrote a fact: healer, an operator, or a plugin (with its package).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    /// `healer`, `operator`, or the plugin's name.
    pub writer: String,
    /// The plugin's package (`libhealer_plugin_process.so`), and its
    /// version, for a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Source {
    /// healer itself.
    pub fn healer() -> Source {
        Source {
            writer: HEALER.to_owned(),
            package: None,
            version: None,
        }
    }

    /// Whether this is a plugin: a plugin always comes with its package,
    /// so a plugin named `healer` or `operator` is still a plugin.
    fn is_plugin(&self) -> bool {
        self.package.is_some()
    }

    /// Whether `key` is in this writer's namespace.
    fn may_write(&self, key: &str) -> bool {
        let within = |prefix: &str| {
            key.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|k| !k.is_empty())
        };
        match self.writer.as_str() {
            _ if self.is_plugin() => within(&self.writer),
            HEALER => !key.contains('.'),
            OPERATOR => within("note"),
            _ => false,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.writer)
    }
}

/// One fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// What it is about: `target.db`, `system`.
    pub subject: String,
    /// What about it: `healthy`, `process.pid`.
    pub key: String,
    pub value: Value,
    pub source: Source,
    /// When it was last written (with this value or another).
    pub observed_at: Wall,
    /// When it expires by itself; never (`null`), for healer's own target
    /// facts.
    #[serde(default)]
    pub expires_at: Option<Wall>,
    /// Carried over from before a restart, not written since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previous_run: bool,
}

impl Fact {
    /// `subject.key`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.subject, self.key)
    }

    /// Whether it holds at `now`.
    pub fn holds(&self, now: Wall) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// `target.db.healthy = false from healer, 12 s old`.
    pub fn cited(&self, now: Wall) -> String {
        format!(
            "{} = {} from {}, {} s old",
            self.name(),
            self.value,
            self.source,
            now.since(self.observed_at).as_secs()
        )
    }

    fn bytes(&self) -> usize {
        self.subject.len() + self.key.len() + self.value.bytes()
    }
}

/// Why a fact went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retraction {
    /// The check that wrote it came back UNKNOWN.
    Unknown,
    /// Its writer's worker crashed or was quarantined.
    WorkerEnded,
    /// Its target was removed by a reload.
    TargetRemoved,
    /// Its writer stopped writing it (an operator's `fact unset`).
    Unset,
}

/// What a publication, a retraction or the passing of time changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A fact is new, or has a new value.
    Changed { fact: Fact, was: Option<Value> },
    /// A fact's writer took it back.
    Retracted { fact: Fact, why: Retraction },
    /// A fact's time ran out.
    Expired { fact: Fact },
}

/// What one publication did.
#[derive(Debug, Default, PartialEq)]
pub struct Published {
    pub changes: Vec<Change>,
    /// How many facts were dropped, and the first reason: out of the
    /// writer's namespace, over its quota, too long, or the store full.
    pub dropped: Option<(usize, String)>,
}

/// Every fact healer knows, by name.
#[derive(Debug)]
pub struct Facts {
    facts: BTreeMap<String, Fact>,
    /// Workers ended, by package (one entry per package that had one).
    worker_ends: BTreeMap<String, u64>,
    /// The most facts kept ([`Facts::make_room_for`]).
    limit: usize,
}

impl Default for Facts {
    fn default() -> Facts {
        Facts {
            facts: BTreeMap::new(),
            worker_ends: BTreeMap::new(),
            limit: MAX_FACTS,
        }
    }
}

impl Facts {
    /// Keeps at most [`MAX_FACTS`] and [`FACTS_PER_TARGET`] for each of
    /// `targets`; facts already kept stay.
    pub fn make_room_for(&mut self, targets: usize) {
        self.limit = MAX_FACTS.saturating_add(targets.saturating_mul(FACTS_PER_TARGET));
    }

    /// The most facts kept.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Writes `values` about `subject` as `source`, each expiring `ttl`
    /// after `now` (`None`: never). Keys outside the writer's namespace,
    /// over its quota or too long are dropped.
    pub fn publish(
        &mut self,
        subject: &str,
        source: &Source,
        values: Vec<(String, Value)>,
        ttl: Option<Duration>,
        now: Wall,
    ) -> Published {
        let mut published = Published::default();
        let mut drop = |reason: String| {
            let (count, _) = published.dropped.get_or_insert((0, reason));
            *count += 1;
        };
        let expires_at = ttl.map(|ttl| now + ttl);
        // What the writer keeps about the subject, counted only once a new
        // key needs it: an unchanged fact costs a lookup, not a scan.
        let mut held: Option<(usize, usize)> = None;
        // One buffer for every name: most publications only refresh.
        let mut name = String::with_capacity(subject.len() + 32);
        for (key, value) in values {
            name.clear();
            name.push_str(subject);
            name.push('.');
            name.push_str(&key);
            if !source.may_write(&key) {
                drop(format!(
                    "{name}: {source} writes only its own keys ({})",
                    namespace_of(source)
                ));
                continue;
            }
            if name.len() > NAME_BYTES || value.bytes() > VALUE_BYTES {
                drop(format!(
                    "{}: longer than {NAME_BYTES} bytes of name or {VALUE_BYTES} of value",
                    cut(&name)
                ));
                continue;
            }
            // The usual case, the writer's own fact with the value it has:
            // refreshed in place, one lookup, nothing allocated.
            if let Some(fact) = self.facts.get_mut(name.as_str()) {
                let own = fact.source.writer == source.writer
                    && fact.source.is_plugin() == source.is_plugin();
                if own && fact.value == value {
                    fact.observed_at = now;
                    fact.expires_at = expires_at;
                    fact.previous_run = false;
                    if fact.source != *source {
                        fact.source = source.clone();
                    }
                    continue;
                }
            }
            let existing = self.facts.get(name.as_str()).map(|f| {
                let own =
                    f.source.writer == source.writer && f.source.is_plugin() == source.is_plugin();
                (own, f.value.bytes())
            });
            if let Some((own, was_bytes)) = existing {
                if own {
                    if value.bytes() > was_bytes {
                        let (_, bytes) = *held
                            .get_or_insert_with(|| held_by(&self.facts, subject, &source.writer));
                        if bytes + value.bytes() - was_bytes > BYTES_PER_WRITER {
                            drop(format!(
                                "{name}: {source} keeps at most {BYTES_PER_WRITER} bytes about {subject}"
                            ));
                            continue;
                        }
                    }
                    let fact = self.facts.get_mut(&name).expect("looked up above");
                    fact.observed_at = now;
                    fact.expires_at = expires_at;
                    fact.previous_run = false;
                    if fact.source != *source {
                        fact.source = source.clone();
                    }
                    if fact.value != value {
                        let was = std::mem::replace(&mut fact.value, value);
                        published.changes.push(Change::Changed {
                            fact: fact.clone(),
                            was: Some(was),
                        });
                    }
                    continue;
                }
                let writer = self.facts.get(&name).map(|f| f.source.to_string());
                drop(format!(
                    "{name}: written by {} already",
                    writer.unwrap_or_default()
                ));
                continue;
            }
            let fact = Fact {
                subject: subject.to_owned(),
                key,
                value,
                source: source.clone(),
                observed_at: now,
                expires_at,
                previous_run: false,
            };
            let (keys, bytes) =
                held.get_or_insert_with(|| held_by(&self.facts, subject, &source.writer));
            if *keys >= KEYS_PER_WRITER || *bytes + fact.bytes() > BYTES_PER_WRITER {
                drop(format!(
                    "{name}: {source} keeps at most {KEYS_PER_WRITER} keys and {BYTES_PER_WRITER} bytes about {subject}"
                ));
                continue;
            }
            // healer's own facts (three a target) are not held to the cap
            // that plugins and operators could fill.
            if self.facts.len() >= self.limit && (source.is_plugin() || source.writer != HEALER) {
                let limit = self.limit;
                drop(format!("{name}: healer keeps at most {limit} facts"));
                continue;
            }
            *keys += 1;
            *bytes += fact.bytes();
            self.facts.insert(name.clone(), fact.clone());
            published.changes.push(Change::Changed { fact, was: None });
        }
        published
    }

    /// Takes back every fact `writer` wrote about `subject` (any writer's,
    /// with `None`), for `why`.
    pub fn retract(&mut self, subject: &str, writer: Option<&str>, why: Retraction) -> Vec<Change> {
        let gone: Vec<String> = about(&self.facts, subject)
            .filter(|(_, f)| writer.is_none_or(|w| f.source.writer == w))
            .map(|(name, _)| name.clone())
            .collect();
        gone.into_iter()
            .filter_map(|name| self.facts.remove(&name))
            .map(|fact| Change::Retracted { fact, why })
            .collect()
    }

    /// Vouches again for what `writer` holds about `subject`, unchanged
    /// (its worker said `"same"`): each gets its time and its expiry
    /// `ttl` from `now`. Returns how many it holds.
    pub fn refresh(&mut self, subject: &str, writer: &str, ttl: Duration, now: Wall) -> usize {
        let from = format!("{subject}.");
        let mut held = 0;
        for (_, fact) in self
            .facts
            .range_mut(from.clone()..)
            .take_while(|(name, _)| name.starts_with(&from))
            .filter(|(_, f)| f.subject == subject && f.source.writer == writer)
        {
            fact.observed_at = now;
            fact.expires_at = Some(now + ttl);
            fact.previous_run = false;
            held += 1;
        }
        held
    }

    /// Takes back the fact named `name`, whoever wrote it.
    pub fn retract_one(&mut self, name: &str, why: Retraction) -> Option<Change> {
        self.facts
            .remove(name)
            .map(|fact| Change::Retracted { fact, why })
    }

    /// Takes back every fact a plugin of `package` wrote, because the
    /// worker serving it ended (crashed, or the package was quarantined),
    /// and counts the end ([`Facts::worker_ends`]): what that worker
    /// answered before it ended must not be published after.
    pub fn worker_ended(&mut self, package: &str) -> Vec<Change> {
        *self.worker_ends.entry(package.to_owned()).or_default() += 1;
        let gone: Vec<String> = self
            .facts
            .iter()
            .filter(|(_, f)| f.source.package.as_deref() == Some(package))
            .map(|(name, _)| name.clone())
            .collect();
        gone.into_iter()
            .filter_map(|name| self.facts.remove(&name))
            .map(|fact| Change::Retracted {
                fact,
                why: Retraction::WorkerEnded,
            })
            .collect()
    }

    /// How many times a worker of `package` ended since healer started: a
    /// check that began at one count and is published at another may have
    /// been answered by the worker that ended, and publishes nothing.
    pub fn worker_ends(&self, package: &str) -> u64 {
        self.worker_ends.get(package).copied().unwrap_or(0)
    }

    /// Forgets the facts whose time ran out by `now`.
    pub fn expire(&mut self, now: Wall) -> Vec<Change> {
        let gone: Vec<String> = self
            .facts
            .iter()
            .filter(|(_, f)| !f.holds(now))
            .map(|(name, _)| name.clone())
            .collect();
        gone.into_iter()
            .filter_map(|name| self.facts.remove(&name))
            .map(|fact| Change::Expired { fact })
            .collect()
    }

    /// The fact named `name`, while it holds.
    pub fn read(&self, name: &str, now: Wall) -> Option<&Fact> {
        self.facts.get(name).filter(|f| f.holds(now))
    }

    /// Every fact that holds at `now`, by name, borrowed.
    pub fn holding(&self, now: Wall) -> impl Iterator<Item = &Fact> {
        self.facts.values().filter(move |f| f.holds(now))
    }

    /// Every fact that holds at `now`, by name; those about `subject` only
    /// when given.
    pub fn all(&self, subject: Option<&str>, now: Wall) -> Vec<Fact> {
        match subject {
            Some(subject) => about(&self.facts, subject)
                .map(|(_, f)| f)
                .filter(|f| f.holds(now))
                .cloned()
                .collect(),
            None => self
                .facts
                .values()
                .filter(|f| f.holds(now))
                .cloned()
                .collect(),
        }
    }

    /// Facts as another healer holds them (read from its API), as they are.
    pub fn as_held(held: Vec<Fact>) -> Facts {
        let facts: BTreeMap<String, Fact> =
            held.into_iter().map(|fact| (fact.name(), fact)).collect();
        Facts {
            limit: facts.len().max(MAX_FACTS),
            facts,
            worker_ends: BTreeMap::new(),
        }
    }

    /// Carries on from facts saved before a restart: those that have not
    /// expired, marked as from the previous run.
    pub fn restore(&mut self, saved: Vec<Fact>, now: Wall) -> usize {
        let mut restored = 0;
        for mut fact in saved {
            // The store keeps a fact as it was last changed, not as it was
            // last refreshed: one with a time to live gets that time again
            // from now, to be written again within it or expire.
            if let Some(at) = fact.expires_at {
                fact.expires_at = Some(now + at.since(fact.observed_at));
            }
            if self.facts.len() < self.limit {
                fact.previous_run = true;
                self.facts.insert(fact.name(), fact);
                restored += 1;
            }
        }
        restored
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
}

/// How many keys and bytes `writer` keeps about `subject`: the facts
/// named `subject.…`, found by range, not by a scan of all.
fn held_by(facts: &BTreeMap<String, Fact>, subject: &str, writer: &str) -> (usize, usize) {
    about(facts, subject)
        .filter(|(_, f)| f.source.writer == writer)
        .fold((0, 0), |(keys, bytes), (_, f)| {
            (keys + 1, bytes + f.bytes())
        })
}

/// The facts about `subject`, found by the range of their names (a
/// subject's facts are named `subject.…`, so they sit together): no scan
/// of every fact.
fn about<'a>(
    facts: &'a BTreeMap<String, Fact>,
    subject: &str,
) -> impl Iterator<Item = (&'a String, &'a Fact)> + 'a {
    let from = format!("{subject}.");
    let subject = subject.to_owned();
    facts
        .range(from.clone()..)
        .take_while(move |(name, _)| name.starts_with(&from))
        .filter(move |(_, f)| f.subject == subject)
}

fn namespace_of(source: &Source) -> String {
    match source.writer.as_str() {
        HEALER => "status, healthy, since".to_owned(),
        OPERATOR => "note.*".to_owned(),
        plugin => format!("{plugin}.*"),
    }
}

/// Where healer notes, in a check's details, how many facts it did not
/// read from them (more than [`crate::plugins::bounds::FACTS_PER_CHECK`]):
/// healer's to write, like the SDK's `READ_FACTS_KEY`. A monitor that
/// forges it only adds to its own count of facts dropped.
pub const LEFT_OUT_KEY: &str = "healer_facts_left_out";

/// Where healer notes the digest of the facts a check published as it
/// read them (the worker compares it with the next check's); healer's own,
/// taken out with the facts.
pub const DIGEST_KEY: &str = "healer_facts_digest";

/// What a plugin published with an observation.
#[derive(Debug, Default, PartialEq)]
pub struct Taken {
    /// Each key and value, in the order published.
    pub facts: Vec<(String, Value)>,
    /// How many were not a truth, a number or a text.
    pub refused: usize,
    /// How many more healer did not read ([`LEFT_OUT_KEY`]).
    pub left_out: usize,
    /// The worker said the facts are those healer holds (`"same"`): the
    /// writer vouches for them again, unchanged.
    pub same: bool,
    /// The digest of the facts as read ([`DIGEST_KEY`]), for the next check.
    pub digest: u64,
}

/// Whether an observation's details carry facts its plugin published.
pub fn published_any(details: &serde_json::Value) -> bool {
    details.get(healer_plugin_sdk::FACTS_KEY).is_some()
}

/// The facts a plugin published with an observation, taken out of its
/// `details` (under the SDK's `FACTS_KEY`; details left empty become
/// `null` again).
pub fn take_published(details: &mut serde_json::Value) -> Taken {
    let Some(object) = details.as_object_mut() else {
        return Taken::default();
    };
    // What healer gives diagnosers is healer's to write: a monitor's
    // forgery goes.
    object.remove(healer_plugin_sdk::READ_FACTS_KEY);
    let left_out = object
        .remove(LEFT_OUT_KEY)
        .and_then(|n| n.as_u64())
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let digest = object
        .remove(DIGEST_KEY)
        .and_then(|n| n.as_u64())
        .unwrap_or(0);
    let published = object.remove(healer_plugin_sdk::FACTS_KEY);
    if object.is_empty() {
        *details = serde_json::Value::Null;
    }
    let mut taken = Taken {
        left_out,
        digest,
        ..Taken::default()
    };
    let Some(published) = published else {
        return taken;
    };
    if published.as_str() == Some("same") {
        taken.same = true;
        return taken;
    }
    let serde_json::Value::Object(published) = published else {
        taken.refused = 1;
        return taken;
    };
    taken.facts.reserve(published.len());
    for (key, value) in published {
        let value = match value {
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(n) => Value::Number(n),
                None => {
                    taken.refused += 1;
                    continue;
                }
            },
            serde_json::Value::String(s) => Value::Text(s),
            _ => {
                taken.refused += 1;
                continue;
            }
        };
        taken.facts.push((key, value));
    }
    taken
}

/// `text` cut to 64 bytes for a message.
fn cut(text: &str) -> String {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A condition on one fact, as a recoverer's `when` and `unless` write it:
/// `NAME OP VALUE` (`target.db.healthy == true`, `system.disk./.used < 90`,
/// `target.web.http.status != "503"`), or a bare `NAME` for `NAME == true`.
/// OP is one of `==`, `!=`, `<`, `<=`, `>`, `>=`; VALUE is `true`,
/// `false`, a number, or a quoted text. An order compares numbers only.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub fact: String,
    op: Op,
    value: Value,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// How a gate reads now.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// The fact holds and the condition is true; the fact, cited.
    True(String),
    /// The fact holds and the condition is false; the fact, cited.
    False(String),
    /// The fact is missing or expired (or not comparable): never read as
    /// false; a gate on it holds.
    Unknown(String),
}

impl Gate {
    /// Reads `text`; the error says what is wrong and what is right.
    pub fn parse(text: &str) -> Result<Gate, String> {
        let trimmed = text.trim();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let found = ops
            .iter()
            .filter_map(|(spelled, op)| trimmed.find(spelled).map(|at| (at, *spelled, *op)))
            .min_by_key(|(at, spelled, _)| (*at, std::cmp::Reverse(spelled.len())));
        let (fact, op, value) = match found {
            None => (trimmed, Op::Eq, Value::Bool(true)),
            Some((at, spelled, op)) => {
                let value = trimmed[at + spelled.len()..].trim();
                (trimmed[..at].trim(), op, parse_value(value)?)
            }
        };
        let bad_name = |c: char| c.is_whitespace() || "=<>!\"'".contains(c);
        if fact.is_empty() || fact.contains(bad_name) || !fact.contains('.') {
            return Err(format!(
                "{trimmed:?} names no fact; write e.g. \"target.db.healthy == true\""
            ));
        }
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && !matches!(value, Value::Number(_)) {
            return Err(format!("{trimmed:?}: <, <=, > and >= compare numbers only"));
        }
        Ok(Gate {
            fact: fact.to_owned(),
            op,
            value,
            text: trimmed.to_owned(),
        })
    }

    /// How the gate reads on `facts` at `now`.
    pub fn read(&self, facts: &Facts, now: Wall) -> Reading {
        let Some(fact) = facts.read(&self.fact, now) else {
            return Reading::Unknown(format!("{} is not known", self.fact));
        };
        let cited = fact.cited(now);
        if fact.previous_run {
            return Reading::Unknown(format!(
                "{cited}, from before healer restarted and not written since"
            ));
        }
        let same_type = std::mem::discriminant(&fact.value) == std::mem::discriminant(&self.value);
        let holds = match (&fact.value, &self.value, self.op) {
            (a, b, Op::Eq) if same_type => Some(a == b),
            (a, b, Op::Ne) if same_type => Some(a != b),
            (Value::Number(a), Value::Number(b), op) => Some(match op {
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                _ => a >= b,
            }),
            _ => None,
        };
        match holds {
            Some(true) => Reading::True(cited),
            Some(false) => Reading::False(cited),
            None => Reading::Unknown(format!("{cited}, which {} cannot compare", self.text)),
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The most an operator's note may live.
pub const NOTE_FOR_AT_MOST: Duration = Duration::from_secs(30 * 86_400);

/// An operator's note, `SUBJECT.note.KEY` (`target.db.note.migrating`),
/// as its subject and key.
pub fn note_name(name: &str) -> Result<(String, String), String> {
    match name.split_once(".note.") {
        Some((subject, key)) if !subject.is_empty() && !key.is_empty() => {
            Ok((subject.to_owned(), format!("note.{key}")))
        }
        _ => Err(format!(
            "{name:?} is not a note's name: an operator writes SUBJECT.note.KEY, e.g. target.db.note.migrating"
        )),
    }
}

/// A value as an operator types it: `true`, `false`, a number, or any
/// other text (quotes optional).
pub fn typed_value(text: &str) -> Value {
    parse_value(text).unwrap_or_else(|_| Value::Text(text.to_owned()))
}

fn parse_value(text: &str) -> Result<Value, String> {
    match text {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        _ if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') => {
            Ok(Value::Text(text[1..text.len() - 1].to_owned()))
        }
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .map(Value::Number)
            .ok_or_else(|| {
                format!("{text:?} is not a value; write true, false, a number or a quoted text")
            }),
    }
}

#[cfg(test)]
mod tests;
