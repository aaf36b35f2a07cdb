//! Recent history for the operator's view (`/api/v1/history`, `healer
//! history`, the dashboard): the newest [`KEPT`] events that are not
//! routine, numbered, filtered by target, kind and time, and paged
//! newest first. It starts from the newest events the store saved, so a
//! restart does not blank it; the full history stays in the database.
//!
//! A subscriber of the event stream: it never blocks the stream (one
//! short lock per event) and never grows past [`KEPT`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::clock::Wall;
use crate::events::{Event, Record, Subscriber};

/// Events kept.
pub const KEPT: usize = 10_000;

/// The most events one page holds.
pub const MAX_PAGE: usize = 1_000;

/// One event with its number (larger is newer).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Numbered {
    pub id: u64,
    #[serde(flatten)]
    pub record: Record,
}

/// Which events to list.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filter {
    /// Only this target's (or anomaly's) events.
    pub target: Option<String>,
    /// Only events of this name (`issue_opened`), or whose name starts
    /// with it followed by `_` (`issue` lists every `issue_*` event).
    pub kind: Option<String>,
    /// Only events at or after this moment.
    pub since: Option<Wall>,
    /// At most this many (default 100, at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Only events older than this id: the next page.
    pub before: Option<u64>,
}

/// One page, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page {
    pub events: Vec<Numbered>,
    /// Pass as `before` for the next (older) page; none when this is the
    /// last.
    pub next: Option<u64>,
}

/// The recent events, shared by the subscriber and the API.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<Ring>>);

#[derive(Default)]
struct Ring {
    events: VecDeque<Numbered>,
    next_id: u64,
}

impl Recent {
    /// Starts from the events the store saved, oldest first.
    pub fn new(saved: Vec<Record>) -> Recent {
        let recent = Recent::default();
        {
            let mut ring = recent.lock();
            for record in saved {
                ring.push(record);
            }
        }
        recent
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscriber that feeds it.
    pub fn subscriber(&self) -> Box<dyn Subscriber> {
        Box::new(self.clone())
    }

    /// The events `filter` selects, newest first.
    pub fn page(&self, filter: &Filter) -> Page {
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let ring = self.lock();
        let mut events = Vec::new();
        let mut next = None;
        for numbered in ring.events.iter().rev() {
            if filter.before.is_some_and(|before| numbered.id >= before) {
                continue;
            }
            if filter.since.is_some_and(|since| numbered.record.at < since) {
                break;
            }
            if !selects(filter, &numbered.record) {
                continue;
            }
            if events.len() == limit {
                next = events.last().map(|last: &Numbered| last.id);
                break;
            }
            events.push(numbered.clone());
        }
        Page { events, next }
    }
}

impl Ring {
    fn push(&mut self, record: Record) {
        self.next_id += 1;
        self.events.push_back(Numbered {
            id: self.next_id,
            record,
        });
        while self.events.len() > KEPT {
            self.events.pop_front();
        }
    }
}

/// An event's fields as `key=value` pairs, for people (`healer history`,
/// the dashboard): without its name and subject (shown beside it), an
/// issue as its own fields without their timestamps (the event has one).
pub fn fields(event: &Event) -> String {
    use std::fmt::Write as _;
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(event) else {
        return String::new();
    };
    for key in ["event", "target", "anomaly"] {
        fields.remove(key);
    }
    let mut text = String::new();
    let mut field = |key: &str, value: serde_json::Value| {
        let value = match value {
            serde_json::Value::Null => return,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let _ = write!(text, "{key}={value} ");
    };
    for (key, value) in fields {
        match value {
            serde_json::Value::Object(inner) => inner
                .into_iter()
                .filter(|(key, _)| !key.ends_with("_at"))
                .for_each(|(key, value)| field(&key, value)),
            other => field(&key, other),
        }
    }
    text.truncate(text.trim_end().len());
    text
}

fn selects(filter: &Filter, record: &Record) -> bool {
    let event = &record.event;
    if let Some(target) = &filter.target {
        if event.subject() != Some(target.as_str()) {
            return false;
        }
    }
    if let Some(kind) = &filter.kind {
        let name = event.name();
        let prefix = name
            .strip_prefix(kind.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'));
        if !prefix {
            return false;
        }
    }
    true
}

impl Subscriber for Recent {
    fn deliver(&mut self, record: &Record) {
        if !record.event.is_routine() {
            self.lock().push(record.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    fn reset(target: &str, at: u64) -> Record {
        Record {
            at: Wall::from_millis(at),
            event: Event::TargetResumed {
                target: target.to_owned(),
                reason: "test".to_owned(),
            },
        }
    }

    #[test]
    fn pages_run_newest_first_and_the_next_page_starts_where_one_ends() {
        let mut recent = Recent::new(vec![reset("a", 1), reset("b", 2)]);
        for at in 3..=10 {
            recent.deliver(&reset("a", at));
        }
        let filter = Filter {
            target: Some("a".into()),
            limit: Some(4),
            ..Filter::default()
        };
        let first = recent.page(&filter);
        let ats: Vec<u64> = first.events.iter().map(|e| e.record.at.millis()).collect();
        assert_eq!(ats, [10, 9, 8, 7]);
        let second = recent.page(&Filter {
            before: first.next,
            ..filter.clone()
        });
        let ats: Vec<u64> = second.events.iter().map(|e| e.record.at.millis()).collect();
        assert_eq!(ats, [6, 5, 4, 3]);
        let third = recent.page(&Filter {
            before: second.next,
            ..filter
        });
        assert_eq!(third.events.len(), 1, "the saved one");
        assert_eq!(third.next, None);
    }

    #[test]
    fn a_kind_selects_its_events_by_name_or_prefix_and_since_cuts_off_older_ones() {
        let mut recent = Recent::default();
        for at in 1..=5 {
            recent.deliver(&reset("a", at));
        }
        let by = |kind: &str, since: Option<u64>| {
            recent
                .page(&Filter {
                    kind: Some(kind.into()),
                    since: since.map(Wall::from_millis),
                    ..Filter::default()
                })
                .events
                .len()
        };
        assert_eq!(by("target", None), 5);
        assert_eq!(by("target_resumed", Some(4)), 2);
        assert_eq!(by("targ", None), 0, "a prefix ends at an underscore");
        assert_eq!(by("issue", None), 0);
    }

    #[test]
    fn it_never_keeps_more_than_its_bound() {
        let mut recent = Recent::default();
        for at in 0..(KEPT as u64 + 50) {
            recent.deliver(&reset("a", at));
        }
        assert_eq!(recent.lock().events.len(), KEPT);
    }
}
