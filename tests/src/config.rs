//! Test configs: the `[healer]` paths and fast pacing every test daemon
//! uses, and the `[[target]]`s several tests share.

use std::path::{Path, PathBuf};

/// The `[healer]` keys every test daemon needs: plugins from `plugins`,
/// debug logs to `healer.log`, events to `events.jsonl`, the store in
/// `state/`, all in the config's directory.
pub fn test_paths(plugins: &Path) -> String {
    format!(
        "plugins_dir = \"{}\"\nlog_file = \"healer.log\"\nevent_log = \"events.jsonl\"\nstate_dir = \"state\"\nlog_level = \"debug\"\n",
        plugins.display()
    )
}

/// Writes `healer.toml` in `dir` for a test: fast pacing (100 ms checks,
/// 50 ms backoff, 100 ms grace), [`test_paths`], then `body` (targets, or
/// `[healer]`-free extras).
pub fn fast_config(dir: &Path, plugins: &Path, body: &str) -> PathBuf {
    let config = format!(
        "[healer]\ninterval = \"100ms\"\nbackoff = \"50ms\"\nbackoff_max = \"100ms\"\ngrace = \"100ms\"\n{}{body}",
        test_paths(plugins)
    );
    let path = dir.join("healer.toml");
    std::fs::write(&path, config).expect("the test config is written");
    path
}

/// A `[[target]]` named `hopeless` whose process never runs (its pidfile
/// is never written) and whose recovery, `argv` (a TOML array), never
/// helps; three attempts, `backoff` apart.
pub fn hopeless_target(dir: &Path, backoff: &str, argv: &str) -> String {
    format!(
        "\n[[target]]\nname = \"hopeless\"\nmax_attempts = 3\nbackoff = \"{backoff}\"\nbackoff_max = \"{backoff}\"\n\
         monitor = {{ plugin = \"process\", pidfile = \"{}/never.pid\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = {argv}\n",
        dir.display()
    )
}

/// A `[[target]]` named `name` whose process is watched through
/// `dir/NAME.pid` (with the `process` diagnoser) and whose restart never
/// helps (`false`): two failed attempts, then escalated.
pub fn escalating_target(dir: &Path, name: &str) -> String {
    format!(
        r#"
[[target]]
name = "{name}"
max_attempts = 2
monitor = {{ plugin = "process", pidfile = "{dir}/{name}.pid" }}
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["false"]
"#,
        dir = dir.display()
    )
}

/// A `[[target]]` named `service` that keeps `sleep SECONDS` running
/// through `dir/service.pid`, restarted by the `command` recoverer.
pub fn supervised_target(dir: &Path, seconds: u32) -> String {
    format!(
        r#"
[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{dir}/service.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep {seconds} & echo $! > {dir}/service.pid"]
"#,
        dir = dir.display()
    )
}
