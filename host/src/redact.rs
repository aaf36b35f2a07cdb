//! Secrets out of sight: what healer shows of a plugin config (a dry run,
//! `healer explain`) and of an error a plugin returns (events, so the log,
//! the event log and the store) passes through here first.
//!
//! Redacted: the credentials of a URL (`https://<redacted>@host/`, in any
//! string, however embedded) and its query parameters that name a secret
//! (`?access_token=<redacted>`), every value under `headers` and `env`, and
//! every value whose key names a secret (`secret`, `hmac_secret`, `token`,
//! `password`, `api_key`, `authorization`, `private_key`, ...).

use serde_json::{Map, Value};

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a key's value a secret.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
];

/// Words that make a URL query parameter's value a secret, beyond
/// [`SECRET_WORDS`]: `?key=`, `?auth=`, `?sig=`, `?signature=`.
const SECRET_QUERY_WORDS: &[&str] = &["key", "auth", "sig"];

/// Keys whose every value is a secret: request headers, child environments.
const SECRET_TABLES: &[&str] = &["headers", "env"];

/// A plugin config (or any JSON) with its secrets replaced.
pub fn config(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), entry(key, value)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(config).collect()),
        Value::String(text) => Value::String(text_of(text)),
        other => other.clone(),
    }
}

fn entry(key: &str, value: &Value) -> Value {
    let lower = key.to_ascii_lowercase();
    if SECRET_TABLES.contains(&lower.as_str()) {
        return match value {
            Value::Object(map) => Value::Object(
                map.keys()
                    .map(|name| (name.clone(), Value::String(REDACTED.to_owned())))
                    .collect(),
            ),
            _ => Value::String(REDACTED.to_owned()),
        };
    }
    if SECRET_WORDS.iter().any(|word| lower.contains(word)) && !value.is_null() {
        return Value::String(REDACTED.to_owned());
    }
    config(value)
}

/// `text` with the credentials of every URL in it, and the values of query
/// parameters that name a secret, replaced.
pub fn text_of(text: &str) -> String {
    if !text.contains("://") && !text.contains('=') {
        return text.to_owned();
    }
    secret_parameters(&credentials(text))
}

/// `text` with the user part of every URL's authority replaced.
fn credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                // The whole user part: a token may stand where a name does.
                out.push_str(REDACTED);
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// `text` with the value of every `?name=value` or `&name=value` whose
/// name names a secret replaced, wherever it stands (a URL inside
/// another's query is covered too). A value ends at `&`, `#`, a quote,
/// `<`, `>` or whitespace.
fn secret_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['?', '&']) {
        let (before, after) = rest.split_at(at + 1);
        out.push_str(before);
        rest = after;
        let name_end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%')))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_end);
        if name.is_empty() || !tail.starts_with('=') || !names_a_secret(name) {
            continue;
        }
        let value = &tail[1..];
        let value_end = value
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '#' | '"' | '\'' | '<' | '>'))
            .unwrap_or(value.len());
        out.push_str(name);
        out.push('=');
        out.push_str(REDACTED);
        rest = &value[value_end..];
    }
    out.push_str(rest);
    out
}

fn names_a_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS
        .iter()
        .chain(SECRET_QUERY_WORDS)
        .any(|word| lower.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_step_shows_neither_its_headers_nor_its_password() {
        let step = json!({
            "url": "https://n8n:s3cret@hooks.example/webhook/x?k=1",
            "headers": {"X-Api-Key": "abc123"},
            "hmac_secret": "shh",
            "timeout": "5s",
        });
        let shown = config(&step).to_string();
        for secret in ["s3cret", "abc123", "shh"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("https://<redacted>@hooks.example/webhook/x?k=1"),
            "{shown}"
        );
        assert!(shown.contains("\"X-Api-Key\":\"<redacted>\""), "{shown}");
        assert!(shown.contains("\"timeout\":\"5s\""), "{shown}");
    }

    #[test]
    fn a_command_shows_its_env_names_not_values() {
        let step = json!({"argv": ["deploy"], "env": {"DB_PASSWORD": "hunter2", "MODE": "x"}});
        assert_eq!(
            config(&step),
            json!({"argv": ["deploy"], "env": {"DB_PASSWORD": "<redacted>", "MODE": "<redacted>"}})
        );
    }

    #[test]
    fn urls_inside_messages_lose_their_passwords() {
        assert_eq!(
            text_of("POST http://u:p@127.0.0.1:9/x failed; retry http://127.0.0.1/ ok"),
            "POST http://<redacted>@127.0.0.1:9/x failed; retry http://127.0.0.1/ ok"
        );
        assert_eq!(text_of("no url here"), "no url here");
    }

    #[test]
    fn query_parameters_that_name_a_secret_lose_their_values() {
        assert_eq!(
            text_of("GET https://h.example/x?access_token=abc&page=2&api_key=k#top failed"),
            "GET https://h.example/x?access_token=<redacted>&page=2&api_key=<redacted>#top failed"
        );
        assert_eq!(
            config(&json!({"url": "http://127.0.0.1:9/?sig=s1&x=1"})),
            json!({"url": "http://127.0.0.1:9/?sig=<redacted>&x=1"})
        );
        assert_eq!(text_of("http://h/?q=1"), "http://h/?q=1");
    }

    #[test]
    fn a_url_inside_another_or_right_after_one_is_redacted_too() {
        assert_eq!(
            text_of("see http://a/login?next=http://user:pw@b/x?token=t0k"),
            "see http://a/login?next=http://<redacted>@b/x?token=<redacted>"
        );
        assert_eq!(
            text_of("http://a/x,http://u:p@b/"),
            "http://a/x,http://<redacted>@b/"
        );
        assert_eq!(
            text_of("(GET http://a/?sig=abc&x=1)"),
            "(GET http://a/?sig=<redacted>&x=1)"
        );
    }
}
