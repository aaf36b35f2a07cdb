//! Process plugins: the `process` monitor finds a process by pidfile, name
//! or command line, reports its pid, CPU and memory, and pushes an
//! observation the moment it exits (pidfd) or has been stopped (state T)
//! for `stopped_for`; the `process` diagnoser turns that into findings:
//! not running, stopped, memory or CPU above a limit for N samples,
//! restart loop.

#![forbid(unsafe_code)]

mod diagnoser;
mod monitor;
mod proc;

pub use diagnoser::ProcessDiagnoser;
pub use monitor::ProcessMonitor;

healer_plugin_sdk::export_plugins! {
    monitors: [ProcessMonitor],
    diagnosers: [ProcessDiagnoser],
}
