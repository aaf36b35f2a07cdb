//! `healer explain TARGET`: what a target's recoveries wait on, and what
//! the running daemon knows of it now: each recoverer's `on`, its `when`
//! and `unless` with how each reads on the daemon's facts (the fact cited:
//! value, writer, age), each `depends_on` as the `healthy` fact it
//! rests on, whether a recoverer acts or proposes, the ladder's order, and
//! what each recoverer's attempts came to (the ledger).

use std::process::ExitCode;

use crate::clock::Wall;
use crate::config::{Mode, Order, Target};
use crate::facts::{Fact, Facts, Gate, Reading};
use crate::ledger::Row;
use crate::one_line::OneLine;
use crate::operator::Daemon;

/// Explains `target` (from `config`) with the facts the daemon at
/// `config_path` holds now; without a daemon, every condition reads as
/// not known, and says why.
pub(super) fn explain_target(target: &Target, config_path: &std::path::Path) -> ExitCode {
    let (facts, unreachable) = match daemon_facts(config_path) {
        Ok(facts) => (facts, None),
        Err(err) => (Facts::default(), Some(err)),
    };
    let outcomes: Vec<Row> = if unreachable.is_none() {
        daemon_outcomes(config_path).unwrap_or_default()
    } else {
        Vec::new()
    };
    let now = Wall::now();
    say!("{} (a target)", target.name);
    if let Some(err) = &unreachable {
        say!("  (the facts are not known: {})", OneLine(err));
    }
    for dependency in &target.depends_on {
        let gate = Gate::parse(&format!("target.{dependency}.healthy"));
        let reading = gate.map_or_else(Reading::Unknown, |gate| gate.read(&facts, now));
        say!("  depends_on {dependency}: {}", shown(&reading));
    }
    if target.order == Order::Learned {
        say!(
            "  order learned: each recoverer's first {} judged tries in the config's order, then the one that heals the kind most often first",
            target.learn_after
        );
    }
    for recoverer in &target.recoverers {
        let asks = match (recoverer.mode, recoverer.min_success) {
            (Mode::Propose, _) => format!(" (proposes, approve within {})", recoverer.propose_for),
            (Mode::Act, Some(min)) => format!(
                " (acts while it heals at least {min} of its attempts, once it has {})",
                target.learn_after
            ),
            (Mode::Act, None) => String::new(),
        };
        say!(
            "  recoverer {} on {}{asks}",
            recoverer.name,
            recoverer.on.join(", ")
        );
        for row in outcomes
            .iter()
            .filter(|row| row.target == target.name && row.recoverer == recoverer.name)
        {
            let median = row
                .median_time_to_healthy_ms
                .map_or_else(String::new, |ms| format!(", median {ms} ms to healthy"));
            say!(
                "    {}: healed {} of {} tries{median}",
                OneLine(&row.kind),
                row.healed,
                row.tries
            );
        }
        for (clause, gates) in [("when", &recoverer.when), ("unless", &recoverer.unless)] {
            for gate in gates {
                say!("    {clause} {gate}: {}", shown(&gate.read(&facts, now)));
            }
        }
    }
    if target.recoverers.is_empty() {
        say!("  (no recoverer: an issue is escalated)");
    }
    ExitCode::SUCCESS
}

fn shown(reading: &Reading) -> String {
    match reading {
        Reading::True(cited) => format!("true ({})", OneLine(cited)),
        Reading::False(cited) => format!("false ({})", OneLine(cited)),
        Reading::Unknown(said) => format!("not known ({}): holds", OneLine(said)),
    }
}

/// The ledger the running daemon holds now.
fn daemon_outcomes(config_path: &std::path::Path) -> Result<Vec<Row>, String> {
    let daemon = Daemon::of(config_path)?;
    let answer = daemon.call("GET", "/api/v1/outcomes", None)?;
    serde_json::from_value(answer)
        .map_err(|err| format!("unexpected answer from /api/v1/outcomes: {err}"))
}

/// The facts the running daemon holds now.
fn daemon_facts(config_path: &std::path::Path) -> Result<Facts, String> {
    let daemon = Daemon::of(config_path)?;
    let answer = daemon.call("GET", "/api/v1/facts", None)?;
    let saved: Vec<Fact> = serde_json::from_value(answer)
        .map_err(|err| format!("unexpected answer from /api/v1/facts: {err}"))?;
    Ok(Facts::as_held(saved))
}
