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

use healer_plugin_sdk::{Finding, Observation, Outcome};

/// The longest summary (of an observation, a finding or an outcome) and
/// the longest error a plugin may give, in bytes.
pub const TEXT_BYTES: usize = 1024;

/// The longest finding kind, in bytes.
pub const KIND_BYTES: usize = healer_plugin_sdk::KIND_BYTES;

/// The longest details (JSON text) of an observation, finding or outcome.
pub const DETAILS_BYTES: usize = 16 * 1024;

/// The longest metric name and unit.
pub const METRIC_NAME_BYTES: usize = 128;

/// Findings taken from one diagnoser's answer; the rest are counted.
pub const FINDINGS_PER_ANSWER: usize = 64;

/// Metrics taken from one observation.
pub const METRICS_PER_OBSERVATION: usize = 64;

/// Diagnoses taken from one worker answer (one per diagnoser of a target).
pub const DIAGNOSES_PER_ANSWER: usize = 64;

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
/// message or through the ABI), held to [`DETAILS_BYTES`]: longer ones are
/// replaced by a JSON string saying how long they were (a cut JSON text
/// would not parse). Details are held here, before they are parsed, and
/// nowhere else: parsed details are not measured again.
pub fn details_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= DETAILS_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(format!(
        "\"details of {} bytes left out: more than the {} KiB healer takes\"",
        text.len(),
        DETAILS_BYTES >> 10
    ))
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
        let held = details_text(&big);
        let parsed: serde_json::Value = serde_json::from_str(&held).unwrap();
        assert!(
            parsed.as_str().unwrap().contains("1048588 bytes left out"),
            "{parsed}"
        );
        assert_eq!(details_text("{\"a\":1}"), "{\"a\":1}");
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
