//! What outside input puts into an event (an anomaly's details, a
//! reflex's params), encoded as JSON once, when the event is made, and
//! shared by the log, the event log and the store.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// The most of a sender's details an event keeps, as JSON text.
pub const MAX_DETAILS: usize = 1024;

/// `details` as an event keeps them, encoded once: whole up to
/// [`MAX_DETAILS`] bytes of JSON, else a note of their size with the start
/// of their text. The work itself (a workflow's steps) always gets them
/// whole.
pub fn bounded(details: &Value) -> Json {
    let whole = Json::encode(details);
    let text = whole.as_str();
    if text.len() <= MAX_DETAILS {
        return whole;
    }
    let mut cut = MAX_DETAILS / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Json::encode(
        &serde_json::json!({"truncated": true, "bytes": text.len(), "start": &text[..cut]}),
    )
}

/// A JSON value encoded once and shared (cloning it is cheap): written as
/// it is by the log, the event log and the store, instead of each encoding
/// the value again. Read back from any JSON value.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Json {
    /// Encodes `value`.
    pub fn encode(value: &Value) -> Json {
        // A `Value` always encodes (its map keys are strings).
        let raw = serde_json::value::to_raw_value(value).unwrap_or_else(|_| Json::null_raw());
        Json(Arc::from(raw))
    }

    /// `{}`.
    pub fn empty_object() -> Json {
        Json::encode(&Value::Object(serde_json::Map::new()))
    }

    fn null_raw() -> Box<RawValue> {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Decoded again (for reading, not on a hot path).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        Json::encode(value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    /// Through a `Value`: events are internally tagged and flattened, which
    /// serde reads through its own buffer, where a raw value cannot be
    /// borrowed.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        Value::deserialize(deserializer).map(|value| Json::encode(&value))
    }
}
