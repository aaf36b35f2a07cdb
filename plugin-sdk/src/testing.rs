//! Help for plugin tests: running one test alone in a fresh copy of the
//! test binary, for a test that changes what is per process (the open
//! files limit, the environment) and must not race the other tests'
//! threads doing it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the copy that [`run_alone`] starts.
pub const ALONE: &str = "HEALER_TEST_ALONE";

/// How long the copy may run.
const LIMIT: Duration = Duration::from_secs(30);

/// Whether this test process is a copy started by [`run_alone`].
pub fn is_alone() -> bool {
    std::env::var_os(ALONE).is_some()
}

/// Runs the test `name` (its full path, e.g. `tests::my_test`) alone in a
/// copy of this test binary, with [`ALONE`] and `env` set, started through
/// `wrapper` (a command that execs its arguments, e.g. `sh -c 'ulimit -n 64
/// && exec "$@"' sh`; empty for none). Panics, with the copy's output,
/// unless it passed within 30 s.
pub fn run_alone(wrapper: &[&str], name: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut copy = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let mut copy = copy
        .args(["--exact", name, "--test-threads=1"])
        .env(ALONE, "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the copy of the test binary starts");
    let started = Instant::now();
    while copy.try_wait().expect("waiting works").is_none() {
        if started.elapsed() > LIMIT {
            let _ = copy.kill();
            panic!("{name} ran alone for {LIMIT:?} without finishing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = copy.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} run alone:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
