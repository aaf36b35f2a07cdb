//! Alertmanager's webhook (payload version 4): each firing alert is an
//! anomaly named by its `alertname`, acted on once per occurrence
//! (fingerprint + `startsAt`); a resolved alert resolves its anomaly once
//! every alert of that name seen firing has resolved. A bad alert is
//! reported in its own result and the rest of the group is still acted on
//! (Alertmanager does not retry a 4xx).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::http::AlertmanagerPayload;
use super::{Intake, Reply};
use crate::clock::Wall;
use crate::events::Event;

/// The longest fingerprint or `startsAt` accepted (Alertmanager's are 16
/// and about 30 characters).
const MAX_KEY: usize = 64;

/// A fingerprint for an alert that has none: a digest of its labels (in
/// key order), so the same alert always gets the same one.
fn fingerprint_of(labels: &Map<String, Value>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(Value::Object(labels.clone()).to_string().as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A firing alert's occurrence: its alertname, its fingerprint as healer
/// reads it, and `startsAt`; `None` for a resolved alert or one healer
/// rejects.
fn firing_occurrence(raw: &Value) -> Option<Occurrence> {
    let alert: Alert = serde_json::from_value(raw.clone()).ok()?;
    if alert.status == "resolved" || alert.starts_at.len() > MAX_KEY {
        return None;
    }
    let name = alert
        .labels
        .get("alertname")
        .and_then(Value::as_str)?
        .to_owned();
    let fingerprint = alert.fingerprint()?;
    Some(Occurrence {
        name,
        fingerprint,
        starts_at: alert.starts_at,
    })
}

impl Alert {
    /// Its fingerprint as healer reads it: the one given, or a digest of
    /// its labels when none is; `None` when the given one is not 1 to
    /// [`MAX_KEY`] letters and digits.
    fn fingerprint(&self) -> Option<String> {
        match self.fingerprint.as_str() {
            "" => Some(fingerprint_of(&self.labels)),
            given if given.len() <= MAX_KEY && given.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(given.to_owned())
            }
            _ => None,
        }
    }
}

/// One firing of one alert.
struct Occurrence {
    pub name: String,
    pub fingerprint: String,
    pub starts_at: String,
}

impl Intake {
    /// Handles one webhook payload: in a fleet, an occurrence another
    /// member was sent first is a duplicate here (only the first acts on
    /// it), the rest as [`Intake::alertmanager`] does. `Err` when the
    /// fleet cannot tell.
    pub async fn alertmanager_payload(
        self: &Arc<Self>,
        payload: AlertmanagerPayload,
    ) -> Result<AlertmanagerReply, String> {
        let mut alerts = Vec::with_capacity(payload.alerts.len());
        let mut elsewhere = 0;
        let mut ours = Vec::new();
        for alert in payload.alerts {
            match firing_occurrence(&alert) {
                Some(seen) => {
                    let first = self
                        .alert_first_in_fleet(
                            &payload.receiver,
                            &seen.name,
                            &seen.fingerprint,
                            &seen.starts_at,
                        )
                        .await?;
                    match first {
                        Some(key) => {
                            ours.push(key);
                            alerts.push(alert);
                        }
                        None => {
                            elsewhere += 1;
                            self.acted_on_elsewhere(seen);
                        }
                    }
                }
                None => alerts.push(alert),
            }
        }
        let mut answer = self.alertmanager(&alerts, payload.truncated);
        // Refused here (recording is behind): the keys stay on this
        // member's lease, and Alertmanager sends the group again.
        if answer.refused == 0 {
            self.alerts_acted_in_fleet(ours);
        }
        answer.alerts += elsewhere;
        answer.duplicates += elsewhere;
        Ok(answer)
    }

    /// Records an occurrence another member of the fleet was sent first.
    fn acted_on_elsewhere(&self, occurrence: Occurrence) {
        self.events.emit(Event::AlertReceived {
            alertname: occurrence.name,
            fingerprint: occurrence.fingerprint,
            starts_at: occurrence.starts_at,
            duplicate: true,
            acted_on: false,
        });
    }
}

/// One alert of a group, as far as healer reads it.
#[derive(Deserialize)]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    annotations: Value,
    #[serde(default, rename = "startsAt")]
    starts_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// The answer to one webhook call.
#[derive(Debug, Serialize)]
pub struct AlertmanagerReply {
    /// `accepted` (per-alert problems are in `results`), or `refused` when
    /// some alerts were refused because recording is behind (HTTP 503:
    /// Alertmanager sends the group again).
    pub status: &'static str,
    pub alerts: usize,
    pub started: usize,
    pub duplicates: usize,
    pub resolved: usize,
    /// Alerts refused while recording is behind.
    pub refused: usize,
    /// Why alerts were refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub truncated_alerts: u64,
    pub results: Vec<AlertResult>,
}

/// What became of one firing alert.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum AlertResult {
    /// It was reported as an anomaly.
    Reported(Reply),
    /// It could not be read.
    Rejected {
        alert: usize,
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'static str>,
    },
}

impl Intake {
    /// Handles one Alertmanager webhook payload; `alerts` is its `alerts`
    /// array, `truncated` its `truncatedAlerts`.
    pub fn alertmanager(self: &Arc<Self>, alerts: &[Value], truncated: u64) -> AlertmanagerReply {
        let mut answer = AlertmanagerReply {
            status: "accepted",
            alerts: alerts.len(),
            started: 0,
            duplicates: 0,
            resolved: 0,
            refused: 0,
            error: None,
            truncated_alerts: truncated,
            results: Vec::new(),
        };
        for (index, raw) in alerts.iter().enumerate() {
            let reject = |error: String, field: Option<&'static str>| AlertResult::Rejected {
                alert: index,
                error,
                field,
            };
            let alert: Alert = match serde_json::from_value(raw.clone()) {
                Ok(alert) => alert,
                Err(err) => {
                    answer
                        .results
                        .push(reject(format!("not an Alertmanager alert: {err}"), None));
                    continue;
                }
            };
            let Some(name) = alert.labels.get("alertname").and_then(Value::as_str) else {
                answer
                    .results
                    .push(reject("no labels.alertname".to_owned(), None));
                continue;
            };
            if let Err(message) = super::http::check_name(name) {
                answer
                    .results
                    .push(reject(message, Some("labels.alertname")));
                continue;
            }
            let Some(fingerprint) = alert.fingerprint() else {
                answer.results.push(reject(
                    format!("`fingerprint` must be 1 to {MAX_KEY} letters and digits"),
                    Some("fingerprint"),
                ));
                continue;
            };
            if alert.starts_at.len() > MAX_KEY {
                answer.results.push(reject(
                    format!("`startsAt` must be at most {MAX_KEY} characters"),
                    Some("startsAt"),
                ));
                continue;
            }
            if alert.status == "resolved" {
                let resolved = self.alert_resolved(name, &fingerprint);
                answer.resolved += usize::from(resolved);
                continue;
            }
            let duplicate = self
                .alerts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .already_acted_on(&fingerprint, &alert.starts_at);
            if duplicate {
                answer.duplicates += 1;
                self.events.emit(Event::AlertReceived {
                    alertname: name.to_owned(),
                    fingerprint,
                    starts_at: alert.starts_at,
                    duplicate: true,
                    acted_on: false,
                });
                continue;
            }
            let details = json!({
                "labels": alert.labels,
                "annotations": alert.annotations,
                "startsAt": alert.starts_at,
                "fingerprint": fingerprint,
                "generatorURL": alert.generator_url,
            });
            let reported = self.report(name, details, false);
            if let Reply::Refused { error, .. } = &reported {
                answer.status = "refused";
                answer.refused += 1;
                answer.error.get_or_insert_with(|| error.clone());
            }
            // Only alerts a reflex matches are remembered: the others
            // start nothing, and a sender could invent them without end.
            // A refused one is not remembered: it is acted on when sent again.
            if !matches!(reported, Reply::NoReflex { .. } | Reply::Refused { .. }) {
                let acted_on = reported.acted_on();
                self.alerts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .firing(name, &fingerprint, &alert.starts_at, acted_on, Wall::now());
                self.events.emit(Event::AlertReceived {
                    alertname: name.to_owned(),
                    fingerprint,
                    starts_at: alert.starts_at,
                    duplicate: false,
                    acted_on,
                });
            }
            answer.started += usize::from(matches!(reported, Reply::Started { .. }));
            answer.results.push(AlertResult::Reported(reported));
        }
        if truncated > 0 {
            tracing::info!(
                truncated,
                "Alertmanager truncated this group: only the alerts it sent were acted on"
            );
        }
        answer
    }

    /// An alert of `name` with `fingerprint` resolved. The anomaly resolves
    /// (its attempts are forgotten) once no other alert of that name seen
    /// firing still is. An alert never seen firing changes nothing and is
    /// not recorded: resolutions of invented fingerprints cost nothing.
    fn alert_resolved(&self, name: &str, fingerprint: &str) -> bool {
        let Some(last) = self
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolved(name, fingerprint)
        else {
            return false;
        };
        let resolved = last
            && self
                .storm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resolved(name);
        self.events.emit(Event::AlertResolved {
            alertname: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
            anomaly_resolved: resolved,
        });
        if resolved {
            self.events.emit(Event::AnomalyResolved {
                anomaly: name.to_owned(),
            });
        }
        resolved
    }
}
