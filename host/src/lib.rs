//! The healer host: loads plugin packages and runs the monitor ->
//! diagnose -> recover loop and the anomaly intake. The binary is a thin
//! `main` over [`cli`]; the library exists so tests and benchmarks can
//! drive the parts.
//!
//! The modules are a stack: each uses only the layers below it (the table
//! in `docs/ARCHITECTURE.md`, which `tests/tidy.rs` holds the imports to),
//! so it reads from the bottom up: `clock`, `one_line` → `model`, `facts`, `ledger` → `config`
//! → `issues` → `events` → `plugins`, `board` → `engine`, `intake` → the
//! subscribers (`log`, `event_log`, `history`, `store`, `metrics`, `sinks`)
//! → `loading` → `api` → `daemon` → `operator` → `cli`.
//!
//! No `unsafe` here but in `memory` and the four `plugins` files that
//! `docs/ARCHITECTURE.md` names, each allowed where it is declared.

#![deny(unsafe_code)]

/// Prints a line to stdout; a closed pipe (`healer plugins | head`) is not
/// an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod api;
pub mod board;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod event_log;
pub mod events;
pub mod facts;
pub mod fleet;
pub mod grid;
pub mod history;
pub mod intake;
pub mod issues;
pub mod ledger;
pub mod loading;
pub mod log;
#[allow(unsafe_code)] // mallopt, once at the start of `healer run`
pub mod memory;
pub mod metrics;
pub mod model;
pub mod one_line;
pub mod operator;
pub mod plugins;
pub mod sinks;
pub mod store;
pub mod timeline;
