//! Running one command for a recovery: the finding in the environment, a
//! deadline, and a one-line result.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use healer_plugin_sdk::Recovery;
use tokio::process::Command;

/// What to run.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
    pub timeout: Duration,
    /// Do not wait; succeed if it still runs after this long.
    pub detach: Option<Duration>,
}

/// Runs `spec` for `recovery`; `Ok` is a one-line summary of what ran.
pub async fn run(spec: &Spec<'_>, recovery: &Recovery) -> Result<String, String> {
    let (program, args) = spec.argv.split_first().ok_or("empty argv")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(spec.env)
        .env("HEALER_TARGET", &recovery.target)
        .env("HEALER_FINDING", &recovery.finding.kind)
        .env("HEALER_SEVERITY", recovery.finding.severity.as_str())
        .env("HEALER_SUMMARY", &recovery.finding.summary)
        .env("HEALER_ATTEMPT", recovery.attempt.to_string())
        .env("HEALER_DETAILS", recovery.finding.details.to_string())
        .env("HEALER_PARAMS", recovery.params.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(spec.detach.is_none());
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    let shown = spec.argv.join(" ");
    if let Some(grace) = spec.detach {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {program:?}: {err}"))?;
        let pid = child.id().unwrap_or(0);
        return match tokio::time::timeout(grace, child.wait()).await {
            Err(_) => Ok(format!("started `{shown}` (pid {pid})")),
            Ok(Ok(status)) => Err(format!("`{shown}` exited within {grace:?}: {status}")),
            Ok(Err(err)) => Err(format!("`{shown}`: {err}")),
        };
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {program:?}: {err}"))?;
    // Read stderr on the side: a command that starts a background process
    // (`sh -c "daemon &"`) hands it the pipe, which then never closes, so
    // the result is the exit status, not the end of the output.
    let stderr = child.stderr.take().map(|mut pipe| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
            text
        })
    });
    let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Err(_) => {
            return Err(format!(
                "`{shown}` did not finish within {:?} and was killed",
                spec.timeout
            ))
        }
        Ok(Err(err)) => return Err(format!("`{shown}`: {err}")),
        Ok(Ok(status)) => status,
    };
    if status.success() {
        return Ok(format!("ran `{shown}`"));
    }
    let stderr = match stderr {
        Some(reader) => tokio::time::timeout(OUTPUT_AFTER_EXIT, reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let stderr = String::from_utf8_lossy(&stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output on stderr");
    Err(format!("`{shown}` failed ({status}): {last}"))
}

/// How long to wait for a failed command's stderr after it exited.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Finding;

    fn recovery() -> Recovery {
        Recovery {
            target: "web".into(),
            finding: Finding::critical("http.status_5xx", "503"),
            attempt: 2,
            params: serde_json::Value::Null,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    async fn run_sh(script: &str, timeout: Duration) -> Result<String, String> {
        let argv = sh(script);
        let env = BTreeMap::new();
        run(
            &Spec {
                argv: &argv,
                env: &env,
                cwd: None,
                timeout,
                detach: None,
            },
            &recovery(),
        )
        .await
    }

    #[tokio::test]
    async fn exit_zero_is_success_and_the_finding_is_in_the_environment() {
        let out = tempfile_path();
        let script = format!("echo $HEALER_TARGET $HEALER_FINDING $HEALER_ATTEMPT > {out}");
        assert!(run_sh(&script, Duration::from_secs(5)).await.is_ok());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "web http.status_5xx 2\n"
        );
        let _ = std::fs::remove_file(out);
    }

    #[tokio::test]
    async fn a_failure_reports_the_status_and_the_last_stderr_line() {
        let err = run_sh(
            "echo first >&2; echo disk full >&2; exit 3",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(err.ends_with("failed (exit status: 3): disk full"), "{err}");
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_stall_the_result() {
        let started = std::time::Instant::now();
        assert!(run_sh("sleep 5 & exit 0", Duration::from_secs(4))
            .await
            .is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_and_fails() {
        let err = run_sh("sleep 5", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish within 100ms"), "{err}");
    }

    fn tempfile_path() -> String {
        format!(
            "{}/healer-command-test-{}",
            std::env::temp_dir().display(),
            std::process::id()
        )
    }
}
