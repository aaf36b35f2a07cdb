//! A delivery as Alertmanager takes it: the body of `POST /api/v2/alerts`
//! (a list of postable alerts). Its labels are what Alertmanager's routing
//! matches on (`alertname="healer_escalation"`, `target`, `kind`,
//! `severity`, the sink's own `labels`, and `workflow` for an anomaly), so
//! its receivers reach Slack, PagerDuty or mail. While an alert fires it
//! ends four `resend_every`s ahead, as Prometheus does, so Alertmanager
//! resolves it by itself if healer stops re-sending; a resolution ends it
//! now.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::outbox::Delivery;
use crate::clock::Wall;
use crate::model::AlertState;

/// The `alertname` of every alert healer sends.
pub const ALERTNAME: &str = "healer_escalation";

/// How a sink's alerts look beyond the delivery itself.
pub struct Shape<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub resend_every: Duration,
    pub generator_url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    annotations: Annotations<'a>,
    starts_at: Wall,
    ends_at: Wall,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

#[derive(Serialize)]
struct Annotations<'a> {
    summary: &'a str,
    reason: &'a str,
}

/// The JSON body for `delivery`, sent at `now`.
pub fn body(delivery: &Delivery, shape: &Shape<'_>, now: Wall) -> Vec<u8> {
    let alert = &delivery.alert;
    let mut labels: BTreeMap<&str, &str> = shape
        .labels
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    labels.insert("alertname", ALERTNAME);
    labels.insert("target", &alert.key.target);
    labels.insert("kind", &alert.key.kind);
    labels.insert("severity", &alert.severity);
    if let Some(workflow) = &alert.workflow {
        labels.insert("workflow", workflow);
    }
    let ends_at = match delivery.state {
        AlertState::Firing => {
            let ahead = now + shape.resend_every.saturating_mul(4);
            delivery.ends_by.map_or(ahead, |end| end.min(ahead))
        }
        AlertState::Resolved => delivery.at,
    };
    let posted = [PostableAlert {
        labels,
        annotations: Annotations {
            summary: &alert.summary,
            reason: &alert.reason,
        },
        starts_at: alert.since,
        // Alertmanager refuses an alert that ends before it starts.
        ends_at: ends_at.max(alert.since),
        generator_url: shape.generator_url,
    }];
    serde_json::to_vec(&posted).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::notice::{Alert, Key};
    use serde_json::{json, Value};

    fn delivery(state: AlertState, at: Wall) -> Delivery {
        Delivery {
            alert: Alert {
                key: Key {
                    target: "web".into(),
                    kind: "http.status_5xx".into(),
                },
                severity: "critical".into(),
                summary: "GET / answered 500".into(),
                reason: "still failing after 3 recovery attempts".into(),
                attempts: 3,
                since: Wall::from_millis(1_795_428_000_000),
                workflow: None,
            },
            state,
            at,
            ends_by: None,
            resent: false,
        }
    }

    #[test]
    fn a_firing_alert_carries_routing_labels_and_ends_four_resends_ahead() {
        let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let shape = Shape {
            labels: &labels,
            resend_every: Duration::from_secs(60),
            generator_url: Some("http://127.0.0.1:8000/"),
        };
        let now = Wall::from_millis(1_795_428_005_250);
        let body = body(&delivery(AlertState::Firing, now), &shape, now);
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            sent,
            json!([{
                "labels": {
                    "alertname": "healer_escalation",
                    "target": "web",
                    "kind": "http.status_5xx",
                    "severity": "critical",
                    "env": "prod",
                },
                "annotations": {
                    "summary": "GET / answered 500",
                    "reason": "still failing after 3 recovery attempts",
                },
                "startsAt": "2026-11-23T10:00:00.000Z",
                "endsAt": "2026-11-23T10:04:05.250Z",
                "generatorURL": "http://127.0.0.1:8000/",
            }])
        );
    }

    #[test]
    fn a_resolution_ends_the_alert_when_it_resolved() {
        let labels = BTreeMap::new();
        let shape = Shape {
            labels: &labels,
            resend_every: Duration::from_secs(60),
            generator_url: None,
        };
        let resolved = Wall::from_millis(1_795_428_065_000);
        let later = Wall::from_millis(1_795_428_099_000);
        let body = body(&delivery(AlertState::Resolved, resolved), &shape, later);
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent[0]["endsAt"], "2026-11-23T10:01:05.000Z");
        assert!(sent[0].get("generatorURL").is_none());
    }
}
