//! Helpers for the end-to-end tests: build the real `healer` binary and the
//! real plugin packages with cargo (test builds do not produce `.so` files),
//! copy packages into a fresh plugins directory, and run the binary with a
//! bounded wait.
//!
//! One module per job, each item re-exported here, so a test imports
//! `healer_e2e::{...}` without knowing where a helper lives: `build` (the
//! binary and packages), `run` (one-shot commands), `daemon` (a `healer
//! run` and its event log), `store` (its state database), `config` (test
//! configs and shared targets), `wait` (bounded polling), `process` (pids,
//! signals, `/proc`), `http` (servers and requests on 127.0.0.1),
//! `prometheus` (real Prometheus and Alertmanager), `chromium` (headless
//! Chromium), `markdown` (the fenced blocks of a guide or recipe).

mod build;
mod chromium;
mod config;
mod daemon;
mod fleet;
mod http;
mod markdown;
mod process;
mod prometheus;
mod run;
mod store;
mod wait;

pub use build::*;
pub use chromium::*;
pub use config::*;
pub use daemon::*;
pub use fleet::*;
pub use http::*;
pub use markdown::*;
pub use process::*;
pub use prometheus::*;
pub use run::*;
pub use store::*;
pub use wait::*;
