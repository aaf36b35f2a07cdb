//! What a monitor reports: a Nagios-style [`Status`], a one-line summary,
//! named numeric [`Metric`]s and free-form structured details.
//!
//! The four statuses and their exit codes are the Nagios plugin convention,
//! so any Nagios check binary maps onto an [`Observation`] without loss.

use abi_stable::StableAbi;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How healthy a target is, in the Nagios convention (exit codes 0..=3).
///
/// Ordered by code, so `max()` over several statuses gives the one a
/// `healer once` run exits with.
#[repr(u8)]
#[derive(
    StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Working as expected.
    Ok = 0,
    /// Working, but something is outside its normal range.
    Warning = 1,
    /// Not working.
    Critical = 2,
    /// The check itself could not tell (it failed, timed out, or panicked).
    Unknown = 3,
}

impl Status {
    /// The status for a Nagios plugin exit code; anything outside 0..=3 is UNKNOWN.
    pub fn from_exit_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            _ => Status::Unknown,
        }
    }

    /// The Nagios exit code of this status.
    pub fn exit_code(self) -> i32 {
        self as i32
    }

    /// The upper-case name operators know from Nagios: `OK`, `WARNING`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named measurement, like Nagios perfdata: `latency=12.5ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Name, e.g. `latency_ms` or `rss_bytes`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of measure, e.g. `ms`, `B`, `%`; empty when the name says it all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

/// The result of one check of one target.
///
/// Build one with [`Observation::ok`] (or `warning`, `critical`, `unknown`)
/// and chain [`metric`](Observation::metric) and [`detail`](Observation::detail):
///
/// ```
/// use healer_plugin_sdk::{Observation, Status};
/// let seen = Observation::ok("answered 200 in 12 ms")
///     .metric("latency", 12.0, "ms")
///     .detail("status_code", 200);
/// assert_eq!(seen.status, Status::Ok);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Overall health.
    pub status: Status,
    /// One line for logs and dashboards.
    pub summary: String,
    /// Numeric measurements, in the order the plugin reported them.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Anything else a diagnoser may need (JSON object), `null` when empty.
    #[serde(default)]
    pub details: Value,
}

impl Observation {
    /// An observation with the given status and summary and nothing else.
    pub fn new(status: Status, summary: impl Into<String>) -> Observation {
        Observation {
            status,
            summary: summary.into(),
            metrics: Vec::new(),
            details: Value::Null,
        }
    }

    /// A healthy observation.
    pub fn ok(summary: impl Into<String>) -> Observation {
        Observation::new(Status::Ok, summary)
    }

    /// Working, but out of its normal range.
    pub fn warning(summary: impl Into<String>) -> Observation {
        Observation::new(Status::Warning, summary)
    }

    /// Not working.
    pub fn critical(summary: impl Into<String>) -> Observation {
        Observation::new(Status::Critical, summary)
    }

    /// The check could not tell.
    pub fn unknown(summary: impl Into<String>) -> Observation {
        Observation::new(Status::Unknown, summary)
    }

    /// Adds a metric; `unit` may be empty.
    pub fn metric(mut self, name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.into(),
        });
        self
    }

    /// Adds one key to the details object (turning `null` details into an object).
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        set_detail(&mut self.details, key.into(), value.into());
        self
    }

    /// Publishes a fact about the target with this observation (SDK 1.4):
    /// `key` in the plugin's own namespace (`process.pid` for the
    /// `process` plugin), `value` a truth, a number or a text. healer
    /// keeps it as `target.<name>.<key>` until it changes (only a change
    /// is an event), it expires (twice the check's interval unless written
    /// again), or this monitor's check comes back UNKNOWN. Facts travel in
    /// the details under [`FACTS_KEY`], which healer takes out before
    /// anything else reads them; a host before 1.4 shows them as details.
    pub fn fact(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        if !self.details.is_object() {
            set_detail(
                &mut self.details,
                FACTS_KEY.to_owned(),
                Value::Object(Default::default()),
            );
        }
        if let Some(details) = self.details.as_object_mut() {
            let facts = details
                .entry(FACTS_KEY)
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(facts) = facts.as_object_mut() {
                facts.insert(key.into(), value.into());
            }
        }
        self
    }

    /// A fact healer gives a diagnoser with this observation (SDK 1.4): the
    /// value of the fact `name` (`target.db.healthy`) and its age in
    /// seconds, when the diagnoser's `reads` grants it and healer knows it
    /// now. `None` is not `false`: a fact nobody vouches for is not
    /// evidence either way.
    pub fn read_fact(&self, name: &str) -> Option<(&Value, u64)> {
        let fact = self.details.get(READ_FACTS_KEY)?.get(name)?;
        let age = fact.get("age_s").and_then(Value::as_u64).unwrap_or(0);
        Some((fact.get("value")?, age))
    }

    /// The value of the metric with this name, if the observation has one.
    pub fn metric_value(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// Where an observation's facts travel in its details ([`Observation::fact`]).
pub const FACTS_KEY: &str = "healer_facts";

/// Where the facts a diagnoser's `reads` grants it travel in the details
/// of the observation it diagnoses ([`Observation::read_fact`]).
pub const READ_FACTS_KEY: &str = "healer_read_facts";

/// Inserts `key` into `details`, making it an object first if it is `null`
/// (any other non-object value is kept under the key `"value"`).
pub(crate) fn set_detail(details: &mut Value, key: String, value: Value) {
    if !details.is_object() {
        let previous = std::mem::take(details);
        let mut map = serde_json::Map::new();
        if !previous.is_null() {
            map.insert("value".to_owned(), previous);
        }
        *details = Value::Object(map);
    }
    if let Value::Object(map) = details {
        map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_nagios_convention() {
        for code in 0..=3 {
            assert_eq!(Status::from_exit_code(code).exit_code(), code);
        }
        assert_eq!(Status::from_exit_code(7), Status::Unknown);
        assert_eq!(Status::from_exit_code(-1), Status::Unknown);
    }

    #[test]
    fn worst_status_is_the_maximum() {
        let worst = [Status::Ok, Status::Critical, Status::Warning]
            .into_iter()
            .max();
        assert_eq!(worst, Some(Status::Critical));
    }

    #[test]
    fn details_become_an_object_when_the_first_key_is_added() {
        let seen = Observation::ok("fine")
            .detail("code", 200)
            .detail("path", "/");
        assert_eq!(seen.details, serde_json::json!({"code": 200, "path": "/"}));
    }

    #[test]
    fn serializes_status_in_upper_case() {
        let text = serde_json::to_string(&Observation::critical("down")).unwrap();
        assert!(text.contains("\"CRITICAL\""), "{text}");
    }
}

#[cfg(test)]
mod fact_tests {
    use super::*;

    #[test]
    fn facts_travel_in_the_details_beside_what_else_is_there() {
        let seen = Observation::ok("running")
            .detail("pid", 42)
            .fact("process.pid", 42)
            .fact("process.started", "2026-12-06T10:00:00Z");
        assert_eq!(seen.details["pid"], 42);
        assert_eq!(seen.details[FACTS_KEY]["process.pid"], 42);
        assert_eq!(
            seen.details[FACTS_KEY]["process.started"],
            "2026-12-06T10:00:00Z"
        );
        let alone = Observation::critical("down").fact("process.running", false);
        assert_eq!(alone.details[FACTS_KEY]["process.running"], false);
    }
}
