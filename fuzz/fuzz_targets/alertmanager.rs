//! `POST /alertmanager`: the body as the handler reads it once the token,
//! content type and size are checked (`intake::read_alertmanager`), then
//! each alert of the group as `Intake::alertmanager` reads it (labels,
//! `alertname`, fingerprint, `startsAt`, firing or resolved), reported to
//! a real intake; the same payload is then sent again, as Alertmanager
//! does on every retry and repeat interval.
//!
//! Invariants: no panic; a refusal is one line and names `alerts`; the
//! answer counts the alerts sent, has one result at most per alert, each
//! rejection one line about an alert of the group, and encodes as JSON;
//! an occurrence (fingerprint and `startsAt`) is acted on once at most
//! over both sends; every event reads back from its JSON.

#![no_main]

use std::collections::HashMap;

use healer::events::Event;
use healer::intake::{read_alertmanager, AlertResult, AlertmanagerReply, MAX_BODY};
use healer_fuzz::{assert_one_line, intake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY {
        return;
    }
    let payload = match read_alertmanager(data) {
        Ok(payload) => payload,
        Err(bad) => {
            assert_one_line(&bad.message, "a refusal");
            assert!(
                bad.field.is_none() || bad.field == Some("alerts"),
                "{bad:?}"
            );
            return;
        }
    };
    let (intake, events, recorded) = intake();
    for _ in 0..2 {
        let answer = intake.alertmanager(&payload.alerts, payload.truncated);
        check(&answer, payload.alerts.len());
    }
    let mut acted: HashMap<(String, String), usize> = HashMap::new();
    for record in recorded.take(&events) {
        if let Event::AlertReceived {
            fingerprint,
            starts_at,
            acted_on: true,
            ..
        } = record.event
        {
            let times = acted.entry((fingerprint, starts_at)).or_default();
            *times += 1;
            assert_eq!(*times, 1, "an occurrence acted on twice");
        }
    }
});

fn check(answer: &AlertmanagerReply, sent: usize) {
    assert_eq!(answer.alerts, sent, "the answer counts the alerts sent");
    assert!(answer.results.len() <= sent, "more results than alerts");
    for result in &answer.results {
        if let AlertResult::Rejected { alert, error, .. } = result {
            assert!(*alert < sent, "a rejection of alert {alert} of {sent}");
            assert_one_line(error, "a rejection");
        }
    }
    serde_json::to_string(answer).expect("the answer encodes as JSON");
}
