//! What healer takes from a plugin, and no more.
//!
//! A plugin's answer is outside input: by bug or by design, a package may
//! answer one check with 20,000 findings or a 15 MB summary. Nothing a
//! plugin says may cost healer more than the limits below, so every
//! answer is held to them twice: where a worker's message is decoded (the
//! wire's deserializers borrow from the frame and copy at most the limit,
//! see [`super::wire`]), and where any answer reaches the engine, worker
//! or in-process alike (the handles in [`super::instance`] call
//! [`observation`], [`findings`], [`outcome`] and [`error`]).
//!
//! A finding kind names an issue, a recoverer's `on` glob matches it and
//! the store keys by it, so a kind that is not a kind (empty, too long,
//! odd characters) is not cut but refused: the diagnosis fails and the
//! check concludes nothing, as any plugin error does.

use std::borrow::Cow;
use std::collections::BTreeMap;

use healer_plugin_sdk::ffi::Declared;
use healer_plugin_sdk::{Finding, Observation, Outcome};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The longest summary (of an observation, a finding or an outcome) and
/// the longest error a plugin may give, in bytes.
pub const TEXT_BYTES: usize = 1024;

/// The longest finding kind, in bytes.
pub const KIND_BYTES: usize = healer_plugin_sdk::KIND_BYTES;

/// The longest details (JSON text) of one finding or outcome, or of an
/// observation a monitor pushed.
pub const DETAILS_BYTES: usize = 16 * 1024;

/// The most details (JSON text) of all the findings of one answer: parsed
/// details take several times their text (a `[0,0,…]` sixteen times), so
/// what one answer costs is held as a whole.
pub const FINDING_DETAILS_PER_ANSWER: usize = 64 * 1024;

/// The longest details of an observation a check answered: what a monitor
/// saw, for the diagnosers (the `logscan` monitor hands them up to 1 MiB
/// of log lines). A worker that diagnoses its own checks keeps them: they
/// never cross to healer.
pub const OBSERVATION_DETAILS_BYTES: usize = 2 * 1024 * 1024;

/// The longest metric name and unit.
pub const METRIC_NAME_BYTES: usize = 128;

/// Findings taken from one diagnoser's answer; the rest are counted.
pub const FINDINGS_PER_ANSWER: usize = 64;

/// Metrics taken from one observation.
pub const METRICS_PER_OBSERVATION: usize = 64;

/// Diagnoses taken from one worker answer (one per diagnoser of a target).
pub const DIAGNOSES_PER_ANSWER: usize = 64;

/// Finding kinds taken from one declaration (see [`declared`]).
pub const DECLARED_KINDS: usize = 1024;

/// What a plugin declares about a config, held to the limits: more than
/// [`DECLARED_KINDS`] kinds declare nothing (an incomplete list would
/// refuse globs that match a kind left out), and a declared "kind" that
/// is not one is left out (no finding can have it).
pub fn declared(mut declared: Declared) -> Declared {
    if let Some(kinds) = &mut declared.kinds {
        if kinds.len() > DECLARED_KINDS {
            declared.kinds = None;
        } else {
            kinds.retain(|kind| healer_plugin_sdk::check_kind(kind).is_ok());
        }
    }
    declared
}

/// What a diagnoser found, held to [`FINDINGS_PER_ANSWER`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// The findings taken, in the diagnoser's order.
    pub kept: Vec<Finding>,
    /// How many more it answered, not taken.
    pub dropped: usize,
}

impl FromIterator<Finding> for Findings {
    fn from_iter<I: IntoIterator<Item = Finding>>(found: I) -> Findings {
        Findings {
            kept: found.into_iter().collect(),
            dropped: 0,
        }
    }
}

/// `text` cut to at most `limit` bytes on a character boundary; a cut
/// text ends with `…` so a reader sees it was cut.
pub fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut cut = String::with_capacity(limit);
    cut.push_str(&text[..boundary(text, limit.saturating_sub('…'.len_utf8()))]);
    cut.push('…');
    cut
}

/// Cuts `text` in place, as [`cut`] does.
pub fn cut_in_place(text: &mut String, limit: usize) {
    if text.len() > limit {
        let end = boundary(text, limit.saturating_sub('…'.len_utf8()));
        text.truncate(end);
        text.push('…');
        text.shrink_to_fit();
    }
}

/// The largest character boundary of `text` at or below `at`.
fn boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// A plugin's error message, held to [`TEXT_BYTES`].
pub fn error(mut text: String) -> String {
    cut_in_place(&mut text, TEXT_BYTES);
    text
}

/// Details as JSON text (how they cross from a package, in a worker's
/// message or through the ABI), held to `limit` bytes: longer ones are
/// replaced by a JSON string saying how long they were (a cut JSON text
/// would not parse). Details are held as text, before they are parsed,
/// and nowhere else: parsed details are not measured again.
pub fn details_text(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    Cow::Owned(left_out(text.len(), limit))
}

fn left_out(bytes: usize, limit: usize) -> String {
    format!("\"details of {bytes} bytes left out: more than the {limit} bytes healer takes\"")
}

/// How long the details were that [`details_text`] left out, when `text`
/// is its note.
fn left_out_of(text: &str) -> Option<usize> {
    let rest = text.strip_prefix("\"details of ")?;
    let (bytes, rest) = rest.split_once(' ')?;
    rest.starts_with("bytes left out: ")
        .then(|| bytes.parse().ok())
        .flatten()
}

/// A check's details (JSON text), parsed: refused when they were left
/// out as over [`OBSERVATION_DETAILS_BYTES`] (a diagnoser handed the note
/// instead of what the monitor saw would find nothing, and a check that
/// could not hand on its evidence must conclude nothing: the check fails,
/// UNKNOWN), or when they hold more than [`OBSERVATION_DETAILS_VALUES`]
/// JSON values (`[0,0,0,…]` parses into 16 times its text). The facts a
/// monitor published with them are not counted but held: the first
/// [`FACTS_PER_CHECK`] are read, the rest are skipped unparsed and counted
/// under [`LEFT_OUT_KEY`](crate::facts::LEFT_OUT_KEY).
pub fn check_details(text: &str) -> Result<Value, String> {
    details_fit(text)?;
    let too_many = || {
        format!(
            "the monitor answered details of more than {OBSERVATION_DETAILS_VALUES} JSON values, more than healer takes from a check"
        )
    };
    if text.contains(healer_plugin_sdk::FACTS_KEY) {
        // An object's members as text, nothing parsed yet: what is not an
        // object is read as any other details.
        if let Ok(members) = serde_json::from_str::<BTreeMap<String, &RawValue>>(text) {
            return details_with_facts(members).ok_or_else(too_many);
        }
    }
    if text.len() > OBSERVATION_DETAILS_VALUES
        && values(text, OBSERVATION_DETAILS_VALUES) > OBSERVATION_DETAILS_VALUES
    {
        return Err(too_many());
    }
    Ok(parse_details(text))
}

/// What a worker sends for facts healer holds already.
pub const SAME_FACTS: &str = "\"same\"";

/// A digest of a check's facts as published (the member's JSON text):
/// the same on both sides of the wire, for the same text.
pub fn facts_digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: a worker and healer agree.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    // 0 means "none".
    hasher.finish().max(1)
}

/// Whether a check's details (JSON text) are within what healer takes
/// from a check, by their size alone: what a worker asks before it sends
/// them as they are (healer reads them once, on its side).
pub fn details_fit(text: &str) -> Result<(), String> {
    let bytes = match text.len() > OBSERVATION_DETAILS_BYTES {
        true => Some(text.len()),
        false => left_out_of(text),
    };
    match bytes {
        Some(bytes) => Err(format!(
            "the monitor answered details of {bytes} bytes, more than the {} MiB healer takes from a check",
            OBSERVATION_DETAILS_BYTES >> 20
        )),
        None => Ok(()),
    }
}

/// The most facts healer reads from one check: four times what a writer
/// may keep about its target ([`KEYS_PER_WRITER`](crate::facts::KEYS_PER_WRITER)),
/// room for keys dropped for another reason (out of the plugin's
/// namespace, too long). A flood of 100,000 costs one pass over its text,
/// not 100,000 parsed values.
pub const FACTS_PER_CHECK: usize = 4 * crate::facts::KEYS_PER_WRITER;

/// Details of members as text, parsed within [`OBSERVATION_DETAILS_VALUES`]
/// (`None` over it), the facts member held to [`FACTS_PER_CHECK`].
fn details_with_facts(members: BTreeMap<String, &RawValue>) -> Option<Value> {
    let mut details = Map::new();
    let mut counted = 1;
    for (key, raw) in members {
        // healer's own note of what it read: a monitor's forgery goes.
        if key == crate::facts::DIGEST_KEY {
            continue;
        }
        if key == healer_plugin_sdk::FACTS_KEY {
            // The worker's "still as you hold them": nothing to read.
            if raw.get() == SAME_FACTS {
                details.insert(key, Value::String("same".to_owned()));
                continue;
            }
            let digest = facts_digest(raw.get());
            details.insert(crate::facts::DIGEST_KEY.to_owned(), digest.into());
            let (facts, left_out) = first_facts(raw.get());
            if left_out > 0 {
                details.insert(crate::facts::LEFT_OUT_KEY.to_owned(), left_out.into());
            }
            details.insert(key, facts);
            continue;
        }
        // Its key, and its separator from the one before.
        counted += 2 + values(raw.get(), OBSERVATION_DETAILS_VALUES);
        if counted > OBSERVATION_DETAILS_VALUES {
            return None;
        }
        details.insert(key, parse_details(raw.get()));
    }
    Some(Value::Object(details))
}

/// The first [`FACTS_PER_CHECK`] facts of a `healer_facts` member (an
/// object), with how many more it held, skipped unparsed. A value that
/// is not a truth, a number or a text is read as `null` (and refused
/// where facts are published); a member that is not an object, as `null`.
fn first_facts(text: &str) -> (Value, usize) {
    struct FirstFacts;
    impl<'de> Visitor<'de> for FirstFacts {
        type Value = (Map<String, Value>, usize);

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of facts")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut kept, mut read, mut left_out) = (Map::new(), 0, 0);
            loop {
                if read < FACTS_PER_CHECK {
                    let Some(key) = map.next_key::<String>()? else {
                        break;
                    };
                    let raw: &RawValue = map.next_value()?;
                    let scalar = !raw.get().trim_start().starts_with(['{', '[']);
                    let value = scalar
                        .then(|| serde_json::from_str(raw.get()).ok())
                        .flatten()
                        .unwrap_or(Value::Null);
                    kept.insert(key, value);
                    read += 1;
                } else {
                    if map.next_key::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    map.next_value::<IgnoredAny>()?;
                    left_out += 1;
                }
            }
            Ok((kept, left_out))
        }
    }
    let mut read = serde_json::Deserializer::from_str(text);
    match read.deserialize_map(FirstFacts) {
        Ok((kept, left_out)) => (Value::Object(kept), left_out),
        Err(_) => (Value::Null, 0),
    }
}

/// Details back from JSON text: `null` for none, text that is not JSON
/// as a string (as the SDK reads them).
fn parse_details(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A pushed observation's details (JSON text), refused over
/// [`DETAILS_BYTES`]: a push waits in a backlog of 64 per monitor, and a
/// diagnoser must not read a note for evidence. The push is then UNKNOWN
/// with this reason.
pub fn pushed_details(text: &str) -> Result<(), String> {
    let bytes = match text.len() > DETAILS_BYTES {
        true => Some(text.len()),
        false => left_out_of(text),
    };
    match bytes {
        Some(bytes) => Err(format!(
            "the monitor pushed details of {bytes} bytes, more than the {} KiB healer takes from a push",
            DETAILS_BYTES >> 10
        )),
        None => Ok(()),
    }
}

/// The most JSON values (numbers, strings, arrays, objects, members) the
/// details of a check may hold.
pub const OBSERVATION_DETAILS_VALUES: usize = 65_536;

/// How many values JSON `text` holds, counted as the separators outside
/// strings (`,` `:` `[` `{`), up to `most + 1`: one pass, nothing parsed.
fn values(text: &str, most: usize) -> usize {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' | b':' | b'[' | b'{' => {
                values += 1;
                if values > most {
                    return values;
                }
            }
            _ => {}
        }
    }
    values
}

/// What is left of [`FINDING_DETAILS_PER_ANSWER`] for the findings of one
/// answer, taken finding by finding.
pub struct DetailsBudget(usize);

impl Default for DetailsBudget {
    fn default() -> DetailsBudget {
        DetailsBudget(FINDING_DETAILS_PER_ANSWER)
    }
}

impl DetailsBudget {
    /// One finding's details (JSON text): as they are if they fit what is
    /// left (and [`DETAILS_BYTES`]), else the note that they were left out.
    pub fn take<'a>(&mut self, text: &'a str) -> Cow<'a, str> {
        if text.len() > DETAILS_BYTES {
            return Cow::Owned(left_out(text.len(), DETAILS_BYTES));
        }
        if text.len() > self.0 {
            return Cow::Owned(format!(
                "\"details of {} bytes left out: the findings of this answer had {FINDING_DETAILS_PER_ANSWER} bytes of details already\"",
                text.len()
            ));
        }
        self.0 -= text.len();
        Cow::Borrowed(text)
    }
}

/// An observation held to the limits.
pub fn observation(mut seen: Observation) -> Observation {
    cut_in_place(&mut seen.summary, TEXT_BYTES);
    seen.metrics.truncate(METRICS_PER_OBSERVATION);
    for metric in &mut seen.metrics {
        cut_in_place(&mut metric.name, METRIC_NAME_BYTES);
        cut_in_place(&mut metric.unit, METRIC_NAME_BYTES);
    }
    seen
}

/// An outcome held to the limits.
pub fn outcome(mut outcome: Outcome) -> Outcome {
    cut_in_place(&mut outcome.summary, TEXT_BYTES);
    outcome
}

/// A diagnoser's findings held to the limits, `dropped` more already left
/// out where they were decoded; an error when a kind is not a kind.
pub fn findings(mut found: Vec<Finding>, dropped: usize) -> Result<Findings, String> {
    let dropped = dropped + found.len().saturating_sub(FINDINGS_PER_ANSWER);
    found.truncate(FINDINGS_PER_ANSWER);
    for finding in &mut found {
        check_kind(&finding.kind)?;
        cut_in_place(&mut finding.summary, TEXT_BYTES);
    }
    Ok(Findings {
        kept: found,
        dropped,
    })
}

/// Whether `kind` can name an issue (the SDK's rule, which plugins check
/// their configs with).
pub fn check_kind(kind: &str) -> Result<(), String> {
    healer_plugin_sdk::check_kind(kind)
        .map_err(|problem| format!("answered a finding kind that cannot name an issue: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Status;

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_so() {
        let text = "é".repeat(1000); // 2,000 bytes
        let cut_text = cut(&text, TEXT_BYTES);
        assert!(cut_text.len() <= TEXT_BYTES, "{}", cut_text.len());
        assert!(cut_text.ends_with('…'));
        assert_eq!(cut("short", TEXT_BYTES), "short");
        let mut in_place = text.clone();
        cut_in_place(&mut in_place, TEXT_BYTES);
        assert_eq!(in_place, cut_text);
    }

    #[test]
    fn an_observation_keeps_at_most_the_limits() {
        let mut seen = Observation::critical("x".repeat(4 << 20));
        for i in 0..1000 {
            seen = seen.metric(format!("m{i}"), 1.0, "");
        }
        let seen = observation(seen);
        assert!(seen.summary.len() <= TEXT_BYTES);
        assert_eq!(seen.metrics.len(), METRICS_PER_OBSERVATION);
        assert_eq!(seen.status, Status::Critical);
    }

    #[test]
    fn details_over_the_limit_become_a_note_that_still_parses() {
        let big = format!("{{\"blob\": \"{}\"}}", "y".repeat(1 << 20));
        let held = details_text(&big, DETAILS_BYTES);
        let parsed: serde_json::Value = serde_json::from_str(&held).unwrap();
        assert!(
            parsed.as_str().unwrap().contains("1048588 bytes left out"),
            "{parsed}"
        );
        assert_eq!(details_text("{\"a\":1}", DETAILS_BYTES), "{\"a\":1}");
    }

    #[test]
    fn a_check_whose_details_were_left_out_is_refused() {
        let big = "[0]".repeat(OBSERVATION_DETAILS_BYTES);
        let note = details_text(&big, OBSERVATION_DETAILS_BYTES);
        for text in [big.as_str(), note.as_ref()] {
            let err = check_details(text).unwrap_err();
            assert!(
                err.contains(&format!("details of {} bytes", big.len())),
                "{err}"
            );
        }
        assert!(check_details("{\"lines\":[\"ok\"]}").is_ok());
        assert!(check_details("\"details of many bytes\"").is_ok());
    }

    #[test]
    fn a_check_whose_details_would_parse_into_far_more_than_their_text_is_refused() {
        let zeros = format!("[{}0]", "0,".repeat(OBSERVATION_DETAILS_VALUES));
        assert!(zeros.len() < OBSERVATION_DETAILS_BYTES);
        let err = check_details(&zeros).unwrap_err();
        assert!(err.contains("JSON values"), "{err}");
        // A mebibyte of log lines, commas and brackets inside them: fine.
        let line = "\"GET /a,b,c [x] {y} \\\" 200\"";
        let lines = format!("{{\"lines\":[{}]}}", vec![line; 40_000].join(","));
        assert!(lines.len() > 1 << 20);
        assert!(check_details(&lines).is_ok());
    }

    #[test]
    fn a_flood_of_facts_is_read_to_the_first_few_and_the_rest_counted_unparsed() {
        let facts: Vec<String> = (0..100_000)
            .map(|i| format!("\"flood.f{i}\":{i}"))
            .collect();
        let text = format!(
            "{{\"pid\":42,\"{}\":{{{}}}}}",
            healer_plugin_sdk::FACTS_KEY,
            facts.join(",")
        );
        assert!(text.len() < OBSERVATION_DETAILS_BYTES, "{}", text.len());
        let details = check_details(&text).expect("facts are held, not refused");
        let read = details[healer_plugin_sdk::FACTS_KEY]
            .as_object()
            .expect("the facts, as an object");
        assert_eq!(read.len(), FACTS_PER_CHECK);
        assert_eq!(
            details[crate::facts::LEFT_OUT_KEY],
            100_000 - FACTS_PER_CHECK
        );
        assert_eq!(details["pid"], 42, "the rest of the details as they were");
    }

    #[test]
    fn details_with_facts_are_still_held_to_their_values_and_a_fact_is_a_scalar() {
        let zeros = format!(
            "{{\"{}\":{{\"f.a\":1}},\"zeros\":[{}0]}}",
            healer_plugin_sdk::FACTS_KEY,
            "0,".repeat(OBSERVATION_DETAILS_VALUES)
        );
        assert!(check_details(&zeros).unwrap_err().contains("JSON values"));
        let odd = format!(
            "{{\"{}\":{{\"f.a\":[1,2],\"f.b\":{{\"c\":1}},\"f.c\":\"x\",\"f.d\":true}}}}",
            healer_plugin_sdk::FACTS_KEY
        );
        let details = check_details(&odd).unwrap();
        let read = &details[healer_plugin_sdk::FACTS_KEY];
        assert_eq!(read["f.a"], Value::Null, "not parsed");
        assert_eq!(read["f.b"], Value::Null, "not parsed");
        assert_eq!(read["f.c"], "x");
        assert_eq!(read["f.d"], true);
        assert!(details.get(crate::facts::LEFT_OUT_KEY).is_none());
        let not_an_object = format!("{{\"{}\":[1]}}", healer_plugin_sdk::FACTS_KEY);
        assert_eq!(
            check_details(&not_an_object).unwrap()[healer_plugin_sdk::FACTS_KEY],
            Value::Null
        );
    }

    #[test]
    fn a_push_with_more_details_than_a_push_may_hold_is_refused() {
        let big = format!("\"{}\"", "x".repeat(DETAILS_BYTES));
        assert!(pushed_details(&big)
            .unwrap_err()
            .contains("pushed details of"));
        let note = details_text(&big, DETAILS_BYTES);
        assert!(
            pushed_details(&note).is_err(),
            "a note is no evidence either"
        );
        assert!(pushed_details("{\"pid\":42}").is_ok());
    }

    #[test]
    fn the_findings_of_one_answer_share_one_details_budget() {
        let mut budget = DetailsBudget::default();
        let full = format!("\"{}\"", "x".repeat(DETAILS_BYTES - 102));
        let kept = (0..10)
            .filter(|_| matches!(budget.take(&full), Cow::Borrowed(_)))
            .count();
        assert_eq!(kept, FINDING_DETAILS_PER_ANSWER / DETAILS_BYTES);
        assert!(
            matches!(budget.take("null"), Cow::Borrowed(_)),
            "a small one still fits"
        );
    }

    #[test]
    fn findings_beyond_the_limit_are_counted_not_kept() {
        let many: Vec<Finding> = (0..20_000)
            .map(|i| Finding::critical(format!("flood.k{i}"), "s"))
            .collect();
        let held = findings(many, 5).unwrap();
        assert_eq!(held.kept.len(), FINDINGS_PER_ANSWER);
        assert_eq!(held.dropped, 20_000 - FINDINGS_PER_ANSWER + 5);
        assert_eq!(held.kept[0].kind, "flood.k0");
    }

    #[test]
    fn a_kind_that_cannot_name_an_issue_fails_the_diagnosis() {
        for bad in ["", "has space", "new\nline", "ünïcode", &"k".repeat(129)] {
            let err = findings(vec![Finding::critical(bad, "s")], 0).unwrap_err();
            assert!(err.contains("cannot name an issue"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        for good in ["http.status_5xx", "a", "svc-1:port.down", &"k".repeat(128)] {
            assert!(
                findings(vec![Finding::critical(good, "s")], 0).is_ok(),
                "{good}"
            );
        }
    }
}
