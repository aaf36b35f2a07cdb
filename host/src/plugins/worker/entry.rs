//! `healer worker --probe FILE`: the worker side of a probe. The same
//! binary, started by healer itself, loads one package in this
//! short-lived process, checks each plugin's sample config, and answers
//! one line (see [`super::probe`]): a constructor that aborts, crashes,
//! exits or hangs takes down only this process.
//!
//! The other way `healer worker` is started, `healer worker NAME`, serves
//! a package's calls: see [`super::serve`]. Either first confines itself
//! (a probe's `--sandbox`, a worker's assignment; see [`super::sandbox`]),
//! then loads the package, and dies with healer ([`super::parent`]).

use std::path::Path;
use std::process::ExitCode;

use super::parent::Parent;
use super::probe::{Probed, Verdict, ANSWER};
use super::sandbox::confine;
use crate::config::Sandbox;
use crate::plugins::identity;
use crate::plugins::loader::load_opened;
use crate::plugins::package::Package;

/// The sandbox healer handed a probe as JSON (`--sandbox`); the default
/// one (no_new_privs, the default capabilities) when it gave none.
fn sandbox_of(json: Option<&str>) -> Result<Sandbox, String> {
    json.map_or_else(
        || Ok(Sandbox::default()),
        |json| {
            serde_json::from_str(json).map_err(|err| format!("--sandbox is not a sandbox: {err}"))
        },
    )
}

/// `healer worker --probe FILE [--sandbox JSON]`.
pub fn probe(file: &Path, sandbox: Option<&str>) -> ExitCode {
    let Some(parent) = Parent::find() else {
        return ExitCode::FAILURE;
    };
    let refused = |reason: String| Verdict::Refused {
        reason,
        detail: None,
    };
    let verdict = match (identity::open(file), sandbox_of(sandbox)) {
        (Err(reason), _) | (_, Err(reason)) => refused(reason),
        (Ok(opened), Ok(sandbox)) => match confine(&sandbox, &opened.file) {
            Err(err) => refused(format!("cannot be sandboxed: {err}")),
            Ok(notes) => {
                parent.die_with();
                let identity = opened.identity.clone();
                match load_opened(opened, file) {
                    Ok(package) => {
                        let problems = sample_problems(&package);
                        Verdict::Loaded(Probed {
                            identity,
                            name: package.name,
                            version: package.version,
                            sdk_version: package.sdk_version,
                            plugins: package.plugins,
                            problems,
                            sandbox: notes,
                        })
                    }
                    Err(err) => Verdict::Refused {
                        reason: err.reason,
                        detail: err.detail,
                    },
                }
            }
        },
    };
    match serde_json::to_string(&verdict) {
        Ok(json) => {
            println!("{ANSWER}{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("healer worker: cannot encode the verdict: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every plugin's sample config must be accepted by the plugin itself:
/// users copy it, so a stale sample is a bug worth a line.
fn sample_problems(package: &Package) -> Vec<String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    package
        .plugins
        .iter()
        .filter(|plugin| !plugin.sample_config.trim().is_empty())
        .filter_map(|plugin| {
            let problem =
                crate::config::plugin_table_to_json(&plugin.sample_config).and_then(|config| {
                    runtime.block_on(package.check_config(plugin.kind, &plugin.name, &config))
                });
            problem.err().map(|err| {
                format!(
                    "{} {:?}: its sample config is rejected: {err}",
                    plugin.kind, plugin.name
                )
            })
        })
        .collect()
}
