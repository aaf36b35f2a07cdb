//! One-shot runs: `healer` (or any command) to completion, killed when it
//! has not finished within a limit, its output read on threads.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::healer_bin;

/// Runs `healer` with `args`, killing it if it has not finished in `limit`.
pub fn run_healer(args: &[&str], limit: Duration) -> Output {
    run_bounded(Command::new(healer_bin()).args(args), limit)
}

/// Runs a command to completion with nothing on its stdin, killing it
/// after `limit`. Output is read on threads, so a chatty command cannot
/// stall on a full pipe.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    run_bounded_from(command, Stdio::null(), limit)
}

/// [`run_bounded`] with `stdin` (a file, say) as the command's stdin.
pub fn run_bounded_from(command: &mut Command, stdin: Stdio, limit: Duration) -> Output {
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
