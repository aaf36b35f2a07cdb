//! The alert sinks part of the config: `[[alert]]` entries, each a place
//! escalations are announced: Alertmanager's API (`type = "alertmanager"`)
//! or any HTTP endpoint with a body template (`type = "webhook"`). Every
//! mistake is reported with its line, so `healer check` finds it.

use std::collections::{BTreeMap, HashMap};

use healer_plugin_sdk::Duration;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::http::{check_header, check_url};
use super::template::Template;
use super::Location;

/// Labels every Alertmanager alert of healer's carries; configured
/// `labels` may not replace them.
pub const OWN_LABELS: &[&str] = &["alertname", "target", "kind", "severity", "workflow"];

/// One `[[alert]]`: where escalations (and their resolution) are sent.
#[derive(Clone, Debug)]
pub struct AlertSink {
    /// Unique name: as written, or `<type>-<n>` (the n-th of its type).
    pub name: String,
    /// The URL as written: Alertmanager's base URL, or the webhook's.
    pub url: String,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Delivery attempts beyond the first.
    pub retries: u32,
    /// Wait before the first retry; doubles after each, capped.
    pub retry_backoff: Duration,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// What is sent.
    pub kind: SinkKind,
    /// Where `[[alert]]` starts.
    pub at: Location,
}

/// What a sink sends.
#[derive(Clone, Debug)]
pub enum SinkKind {
    /// Alerts to `<url>/api/v2/alerts`, re-sent while they fire.
    Alertmanager {
        /// Re-send a firing alert this often (Alertmanager forgets an
        /// alert after its `endsAt`: four of these ahead).
        resend_every: Duration,
        /// Extra labels on every alert.
        labels: BTreeMap<String, String>,
        /// `generatorURL` of every alert, when set.
        generator_url: Option<String>,
    },
    /// The rendered body, once per firing and once per resolution; `None`:
    /// a JSON object with every field.
    Webhook { body: Option<Template> },
}

impl SinkKind {
    /// The `type` as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Alertmanager { .. } => "alertmanager",
            SinkKind::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawType {
    Alertmanager,
    Webhook,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: RawType,
    url: Spanned<String>,
    #[serde(default = "default_timeout")]
    timeout: Spanned<Duration>,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_retry_backoff")]
    retry_backoff: Spanned<Duration>,
    #[serde(default)]
    headers: Option<Spanned<BTreeMap<String, String>>>,
    resend_every: Option<Spanned<Duration>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    generator_url: Option<Spanned<String>>,
    body: Option<Spanned<toml::Value>>,
}

fn default_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(10))
}

fn default_retries() -> u32 {
    5
}

fn default_retry_backoff() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(1))
}

/// `resend_every` when not written.
pub const DEFAULT_RESEND_EVERY: Duration = Duration::from_secs(60);

impl super::Checker<'_> {
    /// Checks every `[[alert]]`; the valid ones, in file order.
    pub(super) fn alerts(&mut self, raw: Vec<Spanned<RawAlert>>) -> Vec<AlertSink> {
        let mut sinks = Vec::new();
        let mut per_type: HashMap<&'static str, usize> = HashMap::new();
        let mut first_at: HashMap<String, Location> = HashMap::new();
        for raw in raw {
            let at = raw.span().start;
            let raw = raw.into_inner();
            let type_name = match raw.kind {
                RawType::Alertmanager => "alertmanager",
                RawType::Webhook => "webhook",
            };
            let count = per_type.entry(type_name).or_insert(0);
            *count += 1;
            let (name, name_at) = match &raw.name {
                Some(name) => (name.get_ref().clone(), name.span().start),
                None => (format!("{type_name}-{count}"), at),
            };
            let before = self.errors.len();
            self.alert_name(&name, name_at, &mut first_at);
            let sink = self.alert(raw, name, at);
            if self.errors.len() == before {
                sinks.push(sink);
            }
        }
        sinks
    }

    fn alert_name(&mut self, name: &str, at: usize, first_at: &mut HashMap<String, Location>) {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            self.error(
                at,
                format!("alert sink name {name:?} must be 1 to 64 of A-Z a-z 0-9 - _ ."),
            );
        }
        let here = self.source.locate(at);
        if let Some(first) = first_at.get(name) {
            self.error(at, format!("a second alert sink is named {name:?} (the first is at line {}); names must be unique (unnamed sinks are called <type>-<n>)", first.line));
        } else {
            first_at.insert(name.to_owned(), here);
        }
    }

    fn alert(&mut self, raw: RawAlert, name: String, at: usize) -> AlertSink {
        let sink = format!("alert sink {name:?}");
        let url_at = raw.url.span().start;
        let url = raw.url.into_inner();
        if let Err(err) = check_url(&url) {
            self.error(url_at, format!("{sink}: `url` {err}"));
        }
        for (key, value) in [
            ("timeout", &raw.timeout),
            ("retry_backoff", &raw.retry_backoff),
        ] {
            if value.get_ref().is_zero() {
                self.error(
                    value.span().start,
                    format!("{sink}: `{key}` must be longer than zero"),
                );
            }
        }
        let headers = match raw.headers {
            Some(headers) => {
                let headers_at = headers.span().start;
                let headers = headers.into_inner();
                for (header, value) in &headers {
                    if let Err(err) = check_header(header, value) {
                        self.error(headers_at, format!("{sink}: `headers`: {err}"));
                    }
                }
                headers
            }
            None => BTreeMap::new(),
        };
        let kind = match raw.kind {
            RawType::Alertmanager => {
                if let Some(body) = &raw.body {
                    self.error(body.span().start, format!("{sink}: `body` is for webhook sinks; an alertmanager sink sends Alertmanager's own alerts (add `labels` instead)"));
                }
                let resend_every = match raw.resend_every {
                    Some(every) if every.get_ref().is_zero() => {
                        self.error(
                            every.span().start,
                            format!("{sink}: `resend_every` must be longer than zero"),
                        );
                        DEFAULT_RESEND_EVERY
                    }
                    Some(every) => every.into_inner(),
                    None => DEFAULT_RESEND_EVERY,
                };
                let labels = match raw.labels {
                    Some(labels) => {
                        let labels_at = labels.span().start;
                        let labels = labels.into_inner();
                        for (label, value) in &labels {
                            if let Err(err) = check_label(label, value) {
                                self.error(labels_at, format!("{sink}: `labels`: {err}"));
                            }
                        }
                        labels
                    }
                    None => BTreeMap::new(),
                };
                let generator_url = raw.generator_url.map(|generator| {
                    let generator_at = generator.span().start;
                    let generator = generator.into_inner();
                    if let Err(err) = check_url(&generator) {
                        self.error(generator_at, format!("{sink}: `generator_url` {err}"));
                    }
                    generator
                });
                SinkKind::Alertmanager {
                    resend_every,
                    labels,
                    generator_url,
                }
            }
            RawType::Webhook => {
                for (key, span) in [
                    ("resend_every", raw.resend_every.map(|v| v.span())),
                    ("labels", raw.labels.map(|v| v.span())),
                    ("generator_url", raw.generator_url.map(|v| v.span())),
                ] {
                    if let Some(span) = span {
                        self.error(span.start, format!("{sink}: `{key}` is for alertmanager sinks; a webhook sink posts its `body` once when an escalation starts and once when it ends"));
                    }
                }
                let body = match raw.body {
                    None => None,
                    Some(body) => {
                        let body_at = body.span().start;
                        match to_json(body.get_ref()).and_then(Template::new) {
                            Ok(template) => Some(template),
                            Err(err) => {
                                self.error(body_at, format!("{sink}: `body`: {err}"));
                                None
                            }
                        }
                    }
                };
                SinkKind::Webhook { body }
            }
        };
        AlertSink {
            name,
            url,
            timeout: raw.timeout.into_inner(),
            retries: raw.retries,
            retry_backoff: raw.retry_backoff.into_inner(),
            headers,
            kind,
            at: self.source.locate(at),
        }
    }
}

/// An Alertmanager label as Prometheus allows it, not one of healer's own.
fn check_label(label: &str, value: &str) -> Result<(), String> {
    let mut chars = label.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || label.starts_with("__") {
        return Err(format!(
            "{label:?} is not a label name: letters, digits and _, not starting with a digit or __"
        ));
    }
    if OWN_LABELS.contains(&label) {
        return Err(format!(
            "{label:?} is set by healer itself (so are {}); choose another name",
            OWN_LABELS.join(", ")
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "{label:?} is empty, and Alertmanager takes an empty label for a missing one"
        ));
    }
    Ok(())
}

/// A TOML value as JSON: dates become strings, and numbers JSON cannot
/// hold (NaN, infinities) are refused.
fn to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(n) => Value::from(*n),
        toml::Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            .ok_or_else(|| format!("{x} is not a number JSON can hold"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(date) => Value::String(date.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| Ok((key.clone(), to_json(value)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(Path::new("healer.toml"), text.to_owned())
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
    }

    fn one_error(text: &str) -> String {
        let errors = parse(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn sinks_get_the_documented_defaults_and_names_by_type() {
        let config = parse(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
             [[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:5678/hook\"\n\
             [[alert]]\ntype = \"alertmanager\"\nurl = \"https://am.example\"\nlabels = { env = \"prod\" }\n",
        )
        .unwrap();
        let names: Vec<&str> = config.alerts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alertmanager-1", "webhook-1", "alertmanager-2"]);
        let first = &config.alerts[0];
        assert_eq!(first.timeout, Duration::from_secs(10));
        assert_eq!(first.retries, 5);
        assert_eq!(first.retry_backoff, Duration::from_secs(1));
        assert!(first.headers.is_empty());
        let SinkKind::Alertmanager {
            resend_every,
            labels,
            generator_url,
        } = &first.kind
        else {
            panic!("{:?}", first.kind);
        };
        assert_eq!(*resend_every, Duration::from_secs(60));
        assert!(labels.is_empty() && generator_url.is_none());
        assert!(matches!(
            config.alerts[1].kind,
            SinkKind::Webhook { body: None }
        ));
    }

    #[test]
    fn an_unknown_placeholder_is_refused_at_the_body_with_a_suggestion() {
        let error = one_error(
            "[[alert]]\nname = \"chat\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:5678/\"\n\
             body = { text = \"{tagret} is {state}\" }\n",
        );
        assert!(
            error.starts_with("healer.toml:5:8: alert sink \"chat\": `body`: unknown placeholder `{tagret}` (did you mean `{target}`?)"),
            "{error}"
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_at_its_line_without_quoting_it() {
        let error = one_error(
            "[[alert]]\ntype = \"alertmanager\"\n\n\nurl = \"ftp://user:s3cret@127.0.0.1/\"\n",
        );
        assert!(
            error.starts_with("healer.toml:5:7: alert sink \"alertmanager-1\": `url` must be http or https, not \"ftp\""),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
        let relative = one_error("[[alert]]\ntype = \"webhook\"\nurl = \"/hook\"\n");
        assert!(relative.contains("`url` is not a URL"), "{relative}");
    }

    #[test]
    fn empty_and_duplicate_names_are_refused() {
        let empty = one_error("[[alert]]\nname = \"\"\ntype = \"webhook\"\nurl = \"http://h/\"\n");
        assert!(
            empty.starts_with("healer.toml:2:8: alert sink name \"\" must be 1 to 64 of"),
            "{empty}"
        );
        let duplicate = one_error(
            "[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\n\
             [[alert]]\nname = \"webhook-1\"\ntype = \"webhook\"\nurl = \"http://h/\"\n",
        );
        assert!(
            duplicate.starts_with("healer.toml:5:8: a second alert sink is named \"webhook-1\" (the first is at line 1)"),
            "{duplicate}"
        );
    }

    #[test]
    fn keys_of_the_other_type_are_refused() {
        let body =
            one_error("[[alert]]\ntype = \"alertmanager\"\nurl = \"http://h/\"\nbody = \"x\"\n");
        assert!(body.contains("`body` is for webhook sinks"), "{body}");
        let labels = one_error(
            "[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\nlabels = { env = \"prod\" }\n",
        );
        assert!(
            labels.starts_with(
                "healer.toml:4:10: alert sink \"webhook-1\": `labels` is for alertmanager sinks"
            ),
            "{labels}"
        );
    }

    #[test]
    fn labels_must_be_prometheus_names_and_not_healers_own() {
        let own = one_error(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://h/\"\nlabels = { severity = \"page\" }\n",
        );
        assert!(
            own.contains("\"severity\" is set by healer itself"),
            "{own}"
        );
        let bad = one_error(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://h/\"\nlabels = { \"1st\" = \"x\" }\n",
        );
        assert!(bad.contains("\"1st\" is not a label name"), "{bad}");
    }

    #[test]
    fn zero_durations_and_bad_headers_are_refused() {
        let errors = parse(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://h/\"\ntimeout = \"0s\"\nresend_every = \"0s\"\n\
             headers = { \"X Key\" = \"v\" }\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("`timeout` must be longer than zero"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("`resend_every` must be longer than zero"),
            "{errors:?}"
        );
        assert!(
            errors[2].contains("\"X Key\" is not a valid header name"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_unknown_type_or_key_names_what_would_be_right() {
        let kind = one_error("[[alert]]\ntype = \"slack\"\nurl = \"http://h/\"\n");
        assert!(kind.starts_with("healer.toml:2:8:"), "{kind}");
        assert!(
            kind.ends_with("unknown variant `slack`, expected `alertmanager` or `webhook`"),
            "{kind}"
        );
        let key = one_error(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://h/\"\nresend_evry = \"1m\"\n",
        );
        assert!(
            key.starts_with("healer.toml:4:1: unknown field `resend_evry`"),
            "{key}"
        );
        assert!(key.ends_with("(did you mean \"resend_every\"?)"), "{key}");
    }

    #[test]
    fn a_body_is_any_toml_value_made_json() {
        let config = parse(
            "[[alert]]\ntype = \"webhook\"\nurl = \"http://h/\"\n\
             body = { text = \"{target}\", n = 1, x = 0.5, on = true, list = [\"{state}\"], day = 2026-11-23 }\n",
        )
        .unwrap();
        let SinkKind::Webhook { body: Some(body) } = &config.alerts[0].kind else {
            panic!("{:?}", config.alerts[0].kind);
        };
        assert_eq!(
            body.render(&|name| format!("<{name}>")),
            serde_json::json!({"text": "<target>", "n": 1, "x": 0.5, "on": true, "list": ["<state>"], "day": "2026-11-23"})
        );
    }

    #[test]
    fn the_default_configs_commented_sinks_are_valid_once_uncommented() {
        let default = include_str!("../../../config/healer.toml");
        let example = &default[default.find("# Alert sinks").unwrap()..];
        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.starts_with("[[alert]]") || line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&uncommented).unwrap();
        let names: Vec<&str> = config.alerts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["team", "webhook-1"]);
    }
}
