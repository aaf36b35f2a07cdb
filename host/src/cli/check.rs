//! `healer check` (the config and every plugin config it names, checked
//! as the daemon would, without starting it) and `healer once` (every
//! check run once, with recovery if asked, and printed as a table).

use std::process::ExitCode;

use healer_plugin_sdk::Status;

use super::{plural, Cli};
use crate::config::{self, Config};
use crate::engine;
use crate::operator::fail;
use crate::plugins::Catalog;

async fn load(cli: &Cli) -> Result<(Config, Catalog), Vec<String>> {
    crate::loading::load(&cli.options())
        .await
        .map_err(|problems| crate::loading::lines(&problems))
}

pub(super) async fn check(cli: &Cli) -> ExitCode {
    match load(cli).await {
        Ok((config, catalog)) => {
            let enabled = config.targets.iter().filter(|t| t.enabled).count();
            let plugins: usize = catalog.packages.iter().map(|p| p.plugins.len()).sum();
            say!(
                "{}: OK, {} target{} ({enabled} enabled), {plugins} plugin{} in {} package{}",
                config.path.display(),
                config.targets.len(),
                plural(config.targets.len()),
                plural(plugins),
                catalog.packages.len(),
                plural(catalog.packages.len()),
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(super) async fn once(cli: &Cli, only: Option<&str>, recover: bool) -> ExitCode {
    let (mut config, catalog) = match load(cli).await {
        Ok(loaded) => loaded,
        Err(problems) => return fail(&problems.join("\n")),
    };
    if let Some(only) = only {
        if !config.targets.iter().any(|t| t.name == only) {
            let names = config.targets.iter().map(|t| t.name.as_str());
            let hint = config::did_you_mean(only, names)
                .map_or_else(String::new, |g| format!(" (did you mean \"{g}\"?)"));
            return fail(&format!(
                "{}: no target is named {only:?}{hint}",
                config.path.display()
            ));
        }
        config.targets.retain(|t| t.name == only);
    }
    let _logging = recover.then(|| crate::log::init(&config.healer, cli.verbose));
    let runners =
        match engine::build(&config, &catalog, Default::default(), Default::default()).await {
            Ok(runners) => runners,
            Err(errors) => return fail(&errors.join("\n")),
        };
    // `once` keeps no state: its issues start fresh and are not stored.
    let events = crate::log::log_only();
    catalog.report_to(&events);
    let mut results = engine::once(runners, recover, config.healer.history, events.clone()).await;
    events.finish(std::time::Duration::from_secs(1));
    results.sort_by(|a, b| a.target.cmp(&b.target));
    let width = results
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    say!("{:<width$}  {:<8}  SUMMARY", "TARGET", "STATUS");
    let mut worst = Status::Ok;
    for engine::Looked {
        target: name,
        seen,
        kinds: findings,
    } in &results
    {
        worst = worst.max(seen.status);
        let findings = if findings.is_empty() {
            String::new()
        } else {
            format!("  [{}]", findings.join(", "))
        };
        say!(
            "{name:<width$}  {:<8}  {}{findings}",
            seen.status.as_str(),
            seen.summary
        );
    }
    ExitCode::from(worst.exit_code() as u8)
}
