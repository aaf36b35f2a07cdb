//! A webhook sink's body template: any JSON value whose string leaves may
//! hold placeholders (`{target}`, `{summary}`, ...). Placeholders are
//! replaced inside strings only, and the result is built as a JSON value,
//! never pasted into JSON text, so a summary with quotes, backslashes or
//! newlines still makes a valid body. Pure; the config checks a template
//! with [`Template::new`], a sink renders it with [`Template::render`].

use serde_json::Value;

/// Every placeholder a template may use, in the order the docs list them.
pub const PLACEHOLDERS: &[&str] = &[
    "sink", "target", "kind", "state", "severity", "summary", "reason", "attempts", "since", "at",
];

/// A checked body template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template(Value);

/// One part of a string leaf.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

impl Template {
    /// Checks every string leaf of `body`; the error names the first
    /// placeholder that is unknown or a brace that is not closed.
    pub fn new(body: Value) -> Result<Template, String> {
        check(&body)?;
        Ok(Template(body))
    }

    /// The body with every placeholder replaced by `field(name)`.
    pub fn render(&self, field: &dyn Fn(&str) -> String) -> Value {
        render(&self.0, field)
    }
}

fn check(value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) => pieces(text).map(drop),
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(map) => map.values().try_for_each(check),
        _ => Ok(()),
    }
}

fn render(value: &Value, field: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(text) => {
            let mut out = String::with_capacity(text.len());
            // Checked when the template was made: the pieces parse.
            for piece in pieces(text).unwrap_or_default() {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Field(name) => out.push_str(&field(name)),
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| render(i, field)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), render(value, field)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `text` as literal text and placeholders; `{{` and `}}` are literal
/// braces.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        let brace = &rest[at..at + 1];
        let after = &rest[at + 1..];
        if after.starts_with(brace) {
            pieces.push(Piece::Text(brace));
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err(format!(
                "a lone `}}` in {}: write `}}}}` for a literal brace",
                quoted(text)
            ));
        }
        let Some(end) = after
            .find(['}', '{'])
            .filter(|&end| after[end..].starts_with('}'))
        else {
            return Err(format!(
                "an unclosed `{{` in {}: write a placeholder such as `{{target}}`, or `{{{{` for a literal brace",
                quoted(text)
            ));
        };
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            let hint = crate::config::did_you_mean(name, PLACEHOLDERS.iter().copied())
                .map(|guess| format!(" (did you mean `{{{guess}}}`?)"))
                .unwrap_or_default();
            let known: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
            return Err(format!(
                "unknown placeholder `{{{name}}}`{hint}; the placeholders are {} (`{{{{` is a literal brace)",
                known.join(" ")
            ));
        }
        pieces.push(Piece::Field(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// `text` quoted for a message, cut to 60 characters.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{:?}...", cut)
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(name: &str) -> String {
        match name {
            "target" => "web".to_owned(),
            "summary" => "said \"no\" \\ then\nleft {target}".to_owned(),
            other => format!("<{other}>"),
        }
    }

    #[test]
    fn placeholders_are_replaced_in_string_leaves_only() {
        let template = Template::new(json!({
            "text": "healer: {target} {state}",
            "{target}": ["{kind}", 3, true, null],
            "nested": {"n": 1.5},
        }))
        .unwrap();
        assert_eq!(
            template.render(&fields),
            json!({
                "text": "healer: web <state>",
                "{target}": ["<kind>", 3, true, null],
                "nested": {"n": 1.5},
            })
        );
    }

    #[test]
    fn quotes_backslashes_newlines_and_braces_in_values_stay_valid_json() {
        let template = Template::new(json!({"text": "{summary}"})).unwrap();
        let body = template.render(&fields).to_string();
        let back: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back["text"], "said \"no\" \\ then\nleft {target}");
    }

    #[test]
    fn doubled_braces_are_literal_braces() {
        let template = Template::new(json!("{{\"t\": \"{target}\"}}")).unwrap();
        assert_eq!(template.render(&fields), json!("{\"t\": \"web\"}"));
    }

    #[test]
    fn an_unknown_placeholder_is_refused_with_a_suggestion() {
        let error = Template::new(json!({"a": ["{tagret}"]})).unwrap_err();
        assert!(
            error.starts_with("unknown placeholder `{tagret}` (did you mean `{target}`?)"),
            "{error}"
        );
        assert!(error.contains("{summary}"), "{error}");
    }

    #[test]
    fn unclosed_and_lone_braces_are_refused() {
        let unclosed = Template::new(json!("x {target")).unwrap_err();
        assert!(unclosed.starts_with("an unclosed `{`"), "{unclosed}");
        let nested = Template::new(json!("{ta{rget}")).unwrap_err();
        assert!(nested.starts_with("an unclosed `{`"), "{nested}");
        let lone = Template::new(json!("a } b")).unwrap_err();
        assert!(lone.starts_with("a lone `}`"), "{lone}");
    }
}
