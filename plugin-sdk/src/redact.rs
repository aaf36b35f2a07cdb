//! Secrets out of sight, one way for healer and its plugins: a URL a
//! plugin shows in a summary, a detail or an error, and what healer shows
//! of a plugin config (a dry run, `healer explain`) or of a plugin's
//! summary or error (events, so the log, the event log and the store)
//! pass through here. A secret becomes [`REDACTED`], `<redacted>`,
//! wherever it was found.
//!
//! A secret is:
//! - the credentials of a URL. In one URL a plugin shows ([`url`]), its
//!   password (`https://user:<redacted>@host/`: the name says which account)
//!   or a lone user name, which may be a token (`https://<redacted>@host/`);
//!   in free text ([`text`]), the whole user part of every URL
//!   (`https://<redacted>@host/`), however embedded;
//! - the value of a URL query parameter whose name (any case, read
//!   percent-decoded) holds a secret word: `secret`, `token`, `password`,
//!   `passwd`, `credential`, `key`, `auth`, `sig` (`?access_token=`,
//!   `?api_key=`, `?X-Amz-Signature=`, `?sig=`);
//! - in JSON ([`json`]), every value under `headers` and `env`, and every
//!   value whose key holds a secret word: `secret`, `token`, `password`,
//!   `passwd`, `api_key`, `apikey`, `authorization`, `credential`,
//!   `private_key` (`hmac_secret`, `DB_PASSWORD`);
//! - a string the plugin knows to be secret (a header value, an HMAC key),
//!   wherever it appears ([`known`]).
//!
//! ```
//! use healer_plugin_sdk::redact;
//!
//! assert_eq!(
//!     redact::url("https://n8n:s3cret@hooks.example/x?token=t0k&page=2"),
//!     "https://n8n:<redacted>@hooks.example/x?token=<redacted>&page=2"
//! );
//! assert_eq!(
//!     redact::text("POST https://n8n:s3cret@hooks.example/x failed"),
//!     "POST https://<redacted>@hooks.example/x failed"
//! );
//! ```

use serde_json::{Map, Value};

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a key's value a secret, wherever they stand in the key
/// (any case).
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
/// [`SECRET_WORDS`]: `?key=`, `?auth=`, `?sig=`, `?X-Amz-Signature=`.
const SECRET_QUERY_WORDS: &[&str] = &["key", "auth", "sig"];

/// Keys whose every value is a secret: request headers, child environments.
const SECRET_TABLES: &[&str] = &["headers", "env"];

/// The shortest string [`known`] replaces: a shorter one would garble a
/// message more than it hides.
const SHORTEST_KNOWN: usize = 4;

/// `url`, one URL as its parser writes it (`reqwest::Url::as_str`), as a
/// plugin may show it: the password (or a lone user name, which may be a
/// token) and the value of each query parameter that names a secret
/// replaced. The user name, path, other parameters and fragment stay as
/// written. Raw text (a password holding a `/` or `#` that a parser would
/// have escaped) is not a parsed URL: show it with [`text`].
pub fn url(url: &str) -> String {
    let (rest, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let mut shown = without_password(head);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if names_a_secret(name) => format!("{name}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown.push_str(fragment);
    shown
}

/// `url` (no query or fragment) with the password of its authority, or a
/// lone user name, replaced.
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme_end + 3;
    let end = url[start..].find('/').map_or(url.len(), |at| start + at);
    let Some(user_end) = url[start..end].rfind('@').map(|at| start + at) else {
        return url.to_owned();
    };
    let user = match url[start..user_end].split_once(':') {
        Some((name, _)) => format!("{name}:{REDACTED}"),
        None if user_end == start => String::new(),
        None => REDACTED.to_owned(),
    };
    format!("{}{user}{}", &url[..start], &url[user_end..])
}

/// `text` with the credentials of every URL in it, and the values of query
/// parameters that name a secret, replaced.
pub fn text(text: &str) -> String {
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

/// Whether a query parameter's name, read percent-decoded, holds a secret
/// word.
fn names_a_secret(name: &str) -> bool {
    // Unicode lower case, as the http plugin read names before: `K`
    // (U+212A, KELVIN SIGN) lowers to `k`, so `?\u{212A}ey=` is a key.
    let lower = percent_decoded(name).to_lowercase();
    SECRET_WORDS
        .iter()
        .chain(SECRET_QUERY_WORDS)
        .any(|word| lower.contains(word))
}

/// `text` with `%XX` escapes and `+` decoded (invalid escapes kept as
/// they are), as a query parameter's name is read.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                i += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A plugin config (or any JSON) with its secrets replaced: values under
/// `headers` and `env`, values whose key names a secret, and in every
/// string what [`text`] replaces.
pub fn json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), entry(key, value)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::String(shown) => Value::String(text(shown)),
        other => other.clone(),
    }
}

fn entry(key: &str, value: &Value) -> Value {
    let lower = key.to_lowercase();
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
    json(value)
}

/// `text` with every one of `secrets` (of 4 bytes or more) replaced,
/// wherever it appears: a last resort for a plugin whose messages are
/// built from redacted parts already, in case one quotes a secret anyway.
pub fn known<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    let mut shown = text.to_owned();
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.len() >= SHORTEST_KNOWN {
            shown = shown.replace(secret, REDACTED);
        }
    }
    shown
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
        let shown = json(&step).to_string();
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
            json(&step),
            json!({"argv": ["deploy"], "env": {"DB_PASSWORD": "<redacted>", "MODE": "<redacted>"}})
        );
    }

    #[test]
    fn urls_inside_messages_lose_their_passwords() {
        assert_eq!(
            text("POST http://u:p@127.0.0.1:9/x failed; retry http://127.0.0.1/ ok"),
            "POST http://<redacted>@127.0.0.1:9/x failed; retry http://127.0.0.1/ ok"
        );
        assert_eq!(text("no url here"), "no url here");
    }

    #[test]
    fn query_parameters_that_name_a_secret_lose_their_values() {
        assert_eq!(
            text("GET https://h.example/x?access_token=abc&page=2&api_key=k#top failed"),
            "GET https://h.example/x?access_token=<redacted>&page=2&api_key=<redacted>#top failed"
        );
        assert_eq!(
            json(&json!({"url": "http://127.0.0.1:9/?sig=s1&x=1"})),
            json!({"url": "http://127.0.0.1:9/?sig=<redacted>&x=1"})
        );
        assert_eq!(text("http://h/?q=1"), "http://h/?q=1");
    }

    #[test]
    fn a_url_inside_another_or_right_after_one_is_redacted_too() {
        assert_eq!(
            text("see http://a/login?next=http://user:pw@b/x?token=t0k"),
            "see http://a/login?next=http://<redacted>@b/x?token=<redacted>"
        );
        assert_eq!(
            text("http://a/x,http://u:p@b/"),
            "http://a/x,http://<redacted>@b/"
        );
        assert_eq!(
            text("(GET http://a/?sig=abc&x=1)"),
            "(GET http://a/?sig=<redacted>&x=1)"
        );
    }

    #[test]
    fn a_plugins_url_keeps_its_user_name_and_loses_its_password() {
        assert_eq!(
            url("https://healer:pa55word@example.com/health"),
            "https://healer:<redacted>@example.com/health"
        );
        assert_eq!(
            url("https://t0ken-only@example.com/"),
            "https://<redacted>@example.com/"
        );
        assert_eq!(
            url("http://:pa55word@example.com/"),
            "http://:<redacted>@example.com/"
        );
        assert_eq!(
            url("http://example.com/health"),
            "http://example.com/health"
        );
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn a_plugins_url_loses_the_values_of_parameters_that_name_a_secret() {
        assert_eq!(
            url("https://example.com/h?access_token=abc&page=2&API_KEY=xyz&X-Amz-Signature=s1g&passwd=p&auth=a&client_secret=c&credentials=k&password=q&sig=s"),
            "https://example.com/h?access_token=<redacted>&page=2&API_KEY=<redacted>&X-Amz-Signature=<redacted>&passwd=<redacted>&auth=<redacted>&client_secret=<redacted>&credentials=<redacted>&password=<redacted>&sig=<redacted>"
        );
        // Encoded names are read decoded; other parameters, and the
        // fragment, stay as written.
        assert_eq!(
            url("http://example.com/?%74oken=abc&q=a%20b&flag&empty=#token=x"),
            "http://example.com/?%74oken=<redacted>&q=a%20b&flag&empty=#token=x"
        );
        assert_eq!(
            url("http://example.com/?user[token]=abc"),
            "http://example.com/?user[token]=<redacted>"
        );
    }

    #[test]
    fn a_parameter_name_is_read_in_unicode_lower_case() {
        // `%E2%84%AA` is U+212A KELVIN SIGN, whose lower case is `k`.
        assert_eq!(
            url("http://example.com/?%E2%84%AAey=abc"),
            "http://example.com/?%E2%84%AAey=<redacted>"
        );
    }

    #[test]
    fn encoded_parameter_names_in_messages_are_read_decoded() {
        assert_eq!(
            text("GET http://h/?%74oken=abc&page=2 failed"),
            "GET http://h/?%74oken=<redacted>&page=2 failed"
        );
    }

    #[test]
    fn known_secrets_are_replaced_wherever_they_appear_but_short_ones_stay() {
        let secrets = ["hmac-s3cret".to_owned(), "abc".to_owned()];
        assert_eq!(
            known("signing with hmac-s3cret failed: abc", &secrets),
            "signing with <redacted> failed: abc"
        );
        assert_eq!(known("nothing secret", &[] as &[&str]), "nothing secret");
    }
}
