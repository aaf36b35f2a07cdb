//! `healer explain` (which reflex an anomaly name matches and the
//! workflow it would run; for a target's name, what its recoveries wait
//! on: `decisions.rs`) and `healer send` (an anomaly report sent to the
//! running intake, or only explained with `--dry-run`).

use std::process::ExitCode;

use healer_plugin_sdk::redact;

use super::Cli;
use crate::config::Config;
use crate::operator::fail;

pub(super) fn explain(cli: &Cli, name: &str) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string()),
    };
    if let Some(target) = config.targets.iter().find(|t| t.name == name) {
        return super::decisions::explain_target(target, &cli.config);
    }
    let Some(reflex) = config.reflexes.iter().find(|r| r.matches(name)) else {
        let patterns: Vec<&str> = config.reflexes.iter().map(|r| r.pattern.as_str()).collect();
        say!(
            "{name}: no reflex matches, so nothing would run ({} reflexes: {})",
            patterns.len(),
            patterns.join(", ")
        );
        return ExitCode::FAILURE;
    };
    say!("{name}");
    say!("  reflex    {} ({})", reflex.pattern, reflex.origin);
    say!("  workflow  {}", reflex.workflow);
    say!("  params    {}", redact::json(&reflex.params));
    if let Some(workflow) = config.workflows.get(&reflex.workflow) {
        for (index, step) in crate::intake::explain_steps(workflow).iter().enumerate() {
            let step = serde_json::to_string(step).unwrap_or_default();
            say!("  step {}    {step}", index + 1);
        }
    }
    if config.intake.as_ref().is_some_and(|intake| !intake.actions) {
        say!("  (the kill switch is on: [intake] actions = false, so it would only be recorded)");
    }
    ExitCode::SUCCESS
}

pub(super) fn send(cli: &Cli, name: &str, details: &[String], dry_run: bool) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string()),
    };
    let Some(intake) = &config.intake else {
        return fail(&format!(
            "{}: there is no [intake] table, so no daemon listens for anomalies",
            config.path.display()
        ));
    };
    let mut map = serde_json::Map::new();
    for pair in details {
        match crate::intake::client::detail(pair) {
            Ok((key, value)) => {
                map.insert(key, value);
            }
            Err(err) => return fail(&err),
        }
    }
    let token = match config.intake_token() {
        Ok(token) => token,
        Err(err) => return fail(&err.to_string()),
    };
    let body = serde_json::json!({"name": name, "details": map}).to_string();
    let path = if dry_run {
        "/anomaly?dry_run=true"
    } else {
        "/anomaly"
    };
    match crate::intake::client::post_json(intake.bind, path, &body, token.as_deref()) {
        Ok((status, answer)) => {
            say!("{answer}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("healer: the intake answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(err) => fail(&err),
    }
}
