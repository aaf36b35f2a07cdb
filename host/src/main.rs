//! The `healer` binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    healer::cli::run(healer::cli::Cli::parse())
}
