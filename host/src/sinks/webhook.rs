//! A delivery as a webhook takes it: the sink's body template rendered
//! with the delivery's fields, or, with no template, a JSON object of all
//! of them. Either way the body is built as a JSON value, so whatever a
//! summary holds, it is valid JSON.

use serde::Serialize;

use super::outbox::Delivery;
use crate::config::Template;

/// Every field, as the default body.
#[derive(Serialize)]
struct Fields<'a> {
    sink: &'a str,
    target: &'a str,
    kind: &'a str,
    state: &'a str,
    severity: &'a str,
    summary: &'a str,
    reason: &'a str,
    attempts: u32,
    since: String,
    at: String,
}

impl Fields<'_> {
    /// A placeholder's value (see [`super::template::PLACEHOLDERS`]).
    fn get(&self, name: &str) -> String {
        match name {
            "sink" => self.sink.to_owned(),
            "target" => self.target.to_owned(),
            "kind" => self.kind.to_owned(),
            "state" => self.state.to_owned(),
            "severity" => self.severity.to_owned(),
            "summary" => self.summary.to_owned(),
            "reason" => self.reason.to_owned(),
            "attempts" => self.attempts.to_string(),
            "since" => self.since.clone(),
            "at" => self.at.clone(),
            _ => String::new(),
        }
    }
}

/// The JSON body for `delivery` by sink `sink`.
pub fn body(template: Option<&Template>, sink: &str, delivery: &Delivery) -> Vec<u8> {
    let alert = &delivery.alert;
    let fields = Fields {
        sink,
        target: &alert.key.target,
        kind: &alert.key.kind,
        state: delivery.state.as_str(),
        severity: &alert.severity,
        summary: &alert.summary,
        reason: &alert.reason,
        attempts: alert.attempts,
        since: alert.since.to_string(),
        at: delivery.at.to_string(),
    };
    let written = match template {
        Some(template) => serde_json::to_vec(&template.render(&|name| fields.get(name))),
        None => serde_json::to_vec(&fields),
    };
    written.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Wall;
    use crate::config::PLACEHOLDERS;
    use crate::model::AlertState;
    use crate::sinks::notice::{Alert, Key};
    use serde_json::{json, Value};

    fn delivery() -> Delivery {
        Delivery {
            alert: Alert {
                key: Key {
                    target: "web".into(),
                    kind: "process.not_running".into(),
                },
                severity: "critical".into(),
                summary: "pidfile /run/\"x\"\\y\nz does not exist".into(),
                reason: "still failing".into(),
                attempts: 3,
                since: Wall::from_millis(1_795_428_000_000),
                workflow: None,
            },
            state: AlertState::Resolved,
            at: Wall::from_millis(1_795_428_005_250),
            ends_by: None,
            resent: false,
        }
    }

    #[test]
    fn without_a_template_the_body_holds_every_field() {
        let sent: Value = serde_json::from_slice(&body(None, "team", &delivery())).unwrap();
        let object = sent.as_object().unwrap();
        assert_eq!(object.len(), PLACEHOLDERS.len());
        for name in PLACEHOLDERS {
            assert!(object.contains_key(*name), "{name} in {sent}");
        }
        assert_eq!(sent["state"], "resolved");
        assert_eq!(sent["attempts"], 3);
        assert_eq!(sent["at"], "2026-11-23T10:00:05.250Z");
        assert_eq!(sent["summary"], "pidfile /run/\"x\"\\y\nz does not exist");
    }

    #[test]
    fn a_template_gets_every_placeholder_filled() {
        let all: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
        let template = Template::new(json!({ "text": all.join("|") })).unwrap();
        let sent: Value =
            serde_json::from_slice(&body(Some(&template), "team", &delivery())).unwrap();
        assert_eq!(
            sent["text"],
            "team|web|process.not_running|resolved|critical|pidfile /run/\"x\"\\y\nz does not exist|still failing|3|2026-11-23T10:00:00.000Z|2026-11-23T10:00:05.250Z"
        );
    }
}
