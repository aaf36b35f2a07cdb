//! `healer explain TARGET`: what a target's recoveries wait on, and what
//! the running daemon knows of it now: each recoverer's `on`, its `when`
//! and `unless` with how each reads on the daemon's facts (the fact cited:
//! value, writer, age), and each `depends_on` as the `healthy` fact it
//! rests on.

use std::process::ExitCode;

use crate::clock::Wall;
use crate::config::Target;
use crate::facts::{Fact, Facts, Gate, Reading};
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
    for recoverer in &target.recoverers {
        say!(
            "  recoverer {} on {}",
            recoverer.plugin.plugin,
            recoverer.on.join(", ")
        );
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

/// The facts the running daemon holds now.
fn daemon_facts(config_path: &std::path::Path) -> Result<Facts, String> {
    let daemon = Daemon::of(config_path)?;
    let answer = daemon.call("GET", "/api/v1/facts", None)?;
    let saved: Vec<Fact> = serde_json::from_value(answer)
        .map_err(|err| format!("unexpected answer from /api/v1/facts: {err}"))?;
    Ok(Facts::as_held(saved))
}
