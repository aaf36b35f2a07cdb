//! The `healer` binary.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    healer::cli::run(healer::cli::Cli::parse())
}
