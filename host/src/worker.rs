//! `healer worker`: the same binary, started by healer itself, to load
//! plugin packages away from the daemon.
//!
//! - `--probe FILE` loads one package in this short-lived process, checks
//!   each plugin's sample config, and answers one line (see
//!   [`crate::plugins::probe`]): a constructor that aborts, crashes, exits
//!   or hangs takes down only this process.
//! - `--serve FILE` loads the package healer probed and serves its plugin
//!   calls (see [`crate::plugins::serve`]).

use std::path::Path;
use std::process::ExitCode;

use crate::plugins::probe::{Probed, Verdict, ANSWER};
use crate::plugins::{identity, load_opened, Package};

/// What healer puts in a worker's environment: its own pid.
pub const PARENT: &str = "HEALER_WORKER_PARENT";

/// Makes this worker die with healer (PR_SET_PDEATHSIG); `true` if healer
/// is already gone (the parent is no longer the pid healer gave).
pub fn orphaned() -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let parent = std::env::var(PARENT)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok());
    parent.is_some_and(|pid| nix::unistd::getppid().as_raw() != pid)
}

/// `healer worker --probe FILE`.
pub fn probe(file: &Path) -> ExitCode {
    if orphaned() {
        return ExitCode::FAILURE;
    }
    let verdict = match identity::open(file) {
        Err(reason) => Verdict::Refused {
            reason,
            detail: None,
        },
        Ok(opened) => {
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
                    })
                }
                Err(err) => Verdict::Refused {
                    reason: err.reason,
                    detail: err.detail,
                },
            }
        }
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
