//! One sink at work: a Tokio task that takes notices from its bounded
//! channel into its [`Outbox`], wakes for re-sends and anomalies that end
//! by themselves, and runs up to [`MAX_IN_FLIGHT`] deliveries at once, each
//! its own task. Every delivery ends in one event, `alert_sent` or
//! `alert_failed`, naming the sink, the alert and the tries it took.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use healer_plugin_sdk::redact;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};

use super::http::{Endpoint, Settings};
use super::notice::{Key, Notice};
use super::outbox::{Delivery, Outbox};
use super::{alertmanager, webhook};
use crate::clock::Wall;
use crate::config::Template;
use crate::config::{AlertSink, SinkKind};
use crate::events::{Event, Events};

/// Deliveries of one sink running at once.
pub const MAX_IN_FLIGHT: usize = 16;

/// Notices waiting for one sink; beyond, the subscriber drops them.
pub const QUEUE: usize = 256;

/// What a sink sends.
enum Format {
    Alertmanager {
        labels: std::collections::BTreeMap<String, String>,
        resend_every: Duration,
        generator_url: Option<String>,
    },
    Webhook {
        body: Option<Template>,
    },
}

/// What every delivery of one sink shares.
struct Sink {
    name: String,
    endpoint: Endpoint,
    format: Format,
    events: Events,
}

/// Starts the task of `config`'s sink with `restored` alerts firing; the
/// sending end of its channel. Fails only when its HTTP client cannot be
/// built.
pub fn spawn(
    config: &AlertSink,
    restored: Vec<Notice>,
    events: Events,
) -> Result<mpsc::Sender<Notice>, String> {
    let endpoint = Endpoint::new(&Settings {
        url: &config.url,
        headers: &config.headers,
        timeout: config.timeout.into(),
        retries: config.retries,
        backoff: config.retry_backoff.into(),
    })?;
    let (endpoint, format) = match &config.kind {
        SinkKind::Alertmanager {
            resend_every,
            labels,
            generator_url,
        } => (
            endpoint.join(&["api", "v2", "alerts"]),
            Format::Alertmanager {
                labels: labels.clone(),
                resend_every: (*resend_every).into(),
                generator_url: generator_url.clone(),
            },
        ),
        SinkKind::Webhook { body } => (endpoint, Format::Webhook { body: body.clone() }),
    };
    let resend_every = match &format {
        Format::Alertmanager { resend_every, .. } => Some(*resend_every),
        Format::Webhook { .. } => None,
    };
    tracing::info!(sink = %config.name, kind = config.kind.type_name(), url = %endpoint.shown(), restored = restored.len(), "alert sink ready");
    let sink = Arc::new(Sink {
        name: config.name.clone(),
        endpoint,
        format,
        events,
    });
    let mut outbox = Outbox::new(resend_every);
    let (now, wall) = (Instant::now(), Wall::now());
    for notice in restored {
        outbox.take(notice, now, wall);
    }
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(sink, outbox, receiver));
    Ok(sender)
}

async fn run(sink: Arc<Sink>, mut outbox: Outbox, mut notices: mpsc::Receiver<Notice>) {
    let mut running: JoinSet<()> = JoinSet::new();
    let mut keys: HashMap<Id, Key> = HashMap::new();
    loop {
        for (delivery, stop) in outbox.start(MAX_IN_FLIGHT.saturating_sub(running.len())) {
            let key = delivery.alert.key.clone();
            let handle = running.spawn(deliver(Arc::clone(&sink), delivery, stop));
            keys.insert(handle.id(), key);
        }
        let dropped = outbox.take_dropped();
        if dropped > 0 {
            tracing::warn!(sink = %sink.name, dropped, firing = outbox.firing(), "alert sink at its limits: {dropped} deliveries or alerts were dropped (at most {} alerts firing, {} deliveries waiting per alert)", super::outbox::MAX_FIRING, super::outbox::MAX_QUEUED);
        }
        let next = outbox.next_due(Instant::now(), Wall::now());
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => outbox.take(notice, Instant::now(), Wall::now()),
                // healer is stopping.
                None => break,
            },
            Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(err) => err.id(),
                };
                if let Some(key) = keys.remove(&id) {
                    outbox.finished(&key);
                }
            }
            () = sleep_until(next), if next.is_some() => outbox.due(Instant::now(), Wall::now()),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Delivers one state of one alert, with retries, and says how it went.
async fn deliver(sink: Arc<Sink>, delivery: Delivery, mut stop: oneshot::Receiver<()>) {
    let body = || match &sink.format {
        Format::Alertmanager {
            labels,
            resend_every,
            generator_url,
        } => alertmanager::body(
            &delivery,
            &alertmanager::Shape {
                labels,
                resend_every: *resend_every,
                generator_url: generator_url.as_deref(),
            },
            Wall::now(),
        ),
        Format::Webhook { body } => webhook::body(body.as_ref(), &sink.name, &delivery),
    };
    let posted = sink.endpoint.post(&body, &mut stop).await;
    let Delivery {
        alert,
        state,
        resent,
        ..
    } = delivery;
    let event = match posted.error {
        None => Event::AlertSent {
            sink: sink.name.clone(),
            target: alert.key.target,
            kind: alert.key.kind,
            state,
            tries: posted.tries,
            resent,
        },
        Some(error) => Event::AlertFailed {
            sink: sink.name.clone(),
            target: alert.key.target,
            kind: alert.key.kind,
            state,
            tries: posted.tries,
            error: redact::text(&error),
            resent,
        },
    };
    sink.events.emit(event);
}
