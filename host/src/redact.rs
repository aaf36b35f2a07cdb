//! Secrets out of sight: what healer shows of a plugin config (a dry run,
//! `healer explain`) and of an error a plugin returns (events, so the log,
//! the event log and the store) passes through here first.
//!
//! The rules and the marker (`<redacted>`) are the plugin SDK's
//! ([`healer_plugin_sdk::redact`]), so healer and its plugins hide the same
//! secrets the same way; this module names them as healer's callers use
//! them.

use serde_json::Value;

use healer_plugin_sdk::redact;

/// A plugin config (or any JSON) with its secrets replaced: see
/// [`redact::json`].
pub fn config(value: &Value) -> Value {
    redact::json(value)
}

/// `text` with the credentials of every URL in it, and the values of query
/// parameters that name a secret, replaced: see [`redact::text`].
pub fn text_of(text: &str) -> String {
    redact::text(text)
}
