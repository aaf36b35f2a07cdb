//! `healer worker`: the same binary, started by healer itself, to load
//! plugin packages away from the daemon. `--probe FILE` loads one package
//! in this short-lived process and answers one line (see
//! [`crate::plugins::probe`]): a constructor that aborts, crashes, exits or
//! hangs takes down only this process.

use std::path::Path;
use std::process::ExitCode;

use crate::plugins::probe::{Verdict, ANSWER};
use crate::plugins::{identity, load_opened};

/// `healer worker --probe FILE`.
pub fn probe(file: &Path) -> ExitCode {
    // Dies with healer, and never outlives a healer that died before this.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() == 1 {
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
                Ok(_) => Verdict::Loaded(identity),
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
