//! `POST /anomaly`: the body as the handler reads it once the token,
//! content type and size are checked (`intake::read_anomaly`: JSON only,
//! the seed's `{"name": ..., "details": {...}}`, `?dry_run=`), then
//! reported to a real intake (reflex map, storm control, events).
//!
//! Input: the body; an input that starts with `?` carries the query
//! string on its first line and the body after it. Bodies beyond
//! `MAX_BODY` never reach the reader (413).
//!
//! Invariants: no panic; a refusal is one line and names the field when
//! the JSON is an object; an accepted name is 1 to 200 of the allowed
//! characters and details are an object; the answer encodes as JSON and
//! names the anomaly; an anomaly acted on is not acted on again by the
//! same report at once (cooldown); every event reads back from its JSON.

#![no_main]

use healer::intake::{read_anomaly, Reply, MAX_BODY};
use healer_fuzz::{assert_one_line, intake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.strip_prefix(b"?") {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let Ok(query) = std::str::from_utf8(&rest[..end]) else {
                return;
            };
            (Some(query), rest.get(end + 1..).unwrap_or_default())
        }
        None => (None, data),
    };
    if body.len() > MAX_BODY {
        return;
    }
    let report = match read_anomaly(body, query) {
        Ok(report) => report,
        Err(bad) => {
            assert_one_line(&bad.message, "a refusal");
            let object = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|json| json.is_object());
            assert_eq!(
                object,
                bad.field.is_some(),
                "a refusal of a JSON object names its field (and only then): {bad:?}"
            );
            return;
        }
    };
    assert!(
        (1..=200).contains(&report.name.len())
            && report
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-/".contains(c)),
        "accepted name {:?}",
        report.name
    );
    assert!(report.details.is_object(), "details are an object");

    let (intake, events, recorded) = intake();
    let first = intake.report(&report.name, report.details.clone(), report.dry_run);
    check(&first, &report.name);
    let again = intake.report(&report.name, report.details, report.dry_run);
    check(&again, &report.name);
    if first.acted_on() {
        assert!(
            !again.acted_on(),
            "{} acted on twice within its cooldown",
            report.name
        );
    }
    recorded.take(&events);
});

fn check(answer: &Reply, name: &str) {
    let json = serde_json::to_value(answer).expect("the answer encodes as JSON");
    assert_eq!(
        json["anomaly"], name,
        "the answer names the anomaly: {json}"
    );
}
