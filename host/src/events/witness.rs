//! What a test sees of the event stream: a real stream (the channel and
//! its dispatcher thread) with one subscriber that hands every event to
//! the test, which waits for the ones it expects, each wait bounded.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Event, Events, Record, Subscriber};

/// How long a test waits for an event before it fails.
pub const WITHIN: Duration = Duration::from_secs(10);

/// The events of a stream, as a test sees them.
pub struct Witness {
    inbox: mpsc::UnboundedReceiver<Event>,
    /// Every event received so far, in order.
    seen: Vec<Event>,
    /// Events before this index were passed over by a wait.
    next: usize,
}

/// The subscriber that hands events to the test.
struct Forward(mpsc::UnboundedSender<Event>);

impl Subscriber for Forward {
    fn deliver(&mut self, record: &Record) {
        let _ = self.0.send(record.event.clone());
    }
}

impl Witness {
    /// A stream with every check an event (as with an event log), and
    /// its witness.
    pub fn stream() -> (Events, Witness) {
        let (events, inbox) = Events::channel(true);
        let (sender, receiver) = mpsc::unbounded_channel();
        inbox.start(vec![Box::new(Forward(sender))]);
        let witness = Witness {
            inbox: receiver,
            seen: Vec::new(),
            next: 0,
        };
        (events, witness)
    }

    /// The first event after those waited for so far that `matches`;
    /// panics, naming `what` and every event seen, when none comes within
    /// [`WITHIN`].
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let waited = tokio::time::timeout(WITHIN, async {
            loop {
                if let Some(at) = self.seen[self.next..].iter().position(&matches) {
                    self.next += at + 1;
                    return Some(self.seen[self.next - 1].clone());
                }
                self.next = self.seen.len();
                match self.inbox.recv().await {
                    Some(event) => self.seen.push(event),
                    None => return None,
                }
            }
        })
        .await;
        match waited {
            Ok(Some(event)) => event,
            _ => panic!(
                "no {what} within {WITHIN:?}; seen: {:#?}",
                self.seen.iter().map(brief).collect::<Vec<_>>()
            ),
        }
    }

    /// Waits for `checks` more checks of `target` (each is an event).
    pub async fn checks(&mut self, target: &str, checks: usize) {
        for _ in 0..checks {
            self.wait_for("a check", |e| is_check_of(e, target)).await;
        }
    }

    /// Every event received so far (without waiting), in order.
    pub fn seen(&mut self) -> &[Event] {
        while let Ok(event) = self.inbox.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }

    /// How many of the events received so far match.
    pub fn count(&mut self, matches: impl Fn(&Event) -> bool) -> usize {
        self.seen().iter().filter(|e| matches(e)).count()
    }
}

fn is_check_of(event: &Event, target: &str) -> bool {
    matches!(event, Event::Checked { target: t, .. } if t == target)
}

/// An event in one line, for a failure's message.
fn brief(event: &Event) -> String {
    let json = serde_json::to_string(event).unwrap_or_default();
    json.chars().take(240).collect()
}
