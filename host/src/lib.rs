//! The healer host: loads plugin packages and (as it grows) runs the
//! monitor -> diagnose -> recover loop. The binary is a thin `main` over
//! [`cli`]; the library exists so tests and benchmarks can drive the parts.
//!
//! Data flows one way: config -> plugins -> engine/intake -> events ->
//! log/store/alerts.
//! See `docs/ARCHITECTURE.md` for the code map and invariants.

/// Prints a line to stdout; a closed pipe (`healer plugins | head`) is not
/// an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod alerts;
pub mod api;
pub mod board;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod history;
pub mod intake;
pub mod issues;
pub mod loading;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod one_line;
pub mod operator;
pub mod plugins;
pub mod reaper;
pub mod redact;
pub mod reload;
pub mod store;
