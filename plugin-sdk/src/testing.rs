//! Help for plugin tests. [`Host`] calls a package's monitors, diagnosers
//! and recoverers the way healer does, through the package's exported root
//! module and its FFI types (configs as JSON, futures across the ABI,
//! panics caught by the SDK), without a healer: a unit test of a package
//! tests what healer will see. [`run_alone`] runs one test alone in a
//! fresh copy of the test binary, for a test that changes what is per
//! process (the open files limit, the environment) and must not race the
//! other tests' threads doing it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use abi_stable::library::{LibHeader, RootModule};
use abi_stable::std_types::{RStr, RString, RVec};

use crate::ffi::{ObservationFfi, PackageRef, PluginKind};
use crate::{Finding, Observation, Outcome, Recovery};

/// A package as healer loads it, for a test in the package itself:
/// `Host::of(crate::healer_plugin_header())` (the function
/// `export_plugins!` writes).
pub struct Host {
    package: PackageRef,
    runtime: tokio::runtime::Runtime,
}

impl Host {
    /// The package behind `header`, checked as healer's loader checks it
    /// (its layout against this SDK's, its init function run).
    pub fn of(header: &'static LibHeader) -> Result<Host, String> {
        let base_name = header.root_mod_consts().base_name();
        if base_name.as_str() != PackageRef::BASE_NAME {
            return Err(format!(
                "not a healer plugin package (its root module is {:?})",
                base_name.as_str()
            ));
        }
        let package = header
            .init_root_module::<PackageRef>()
            .map_err(|err| format!("the package does not load: {err}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start a runtime for the test: {err}"))?;
        Ok(Host { package, runtime })
    }

    /// The package's plugins as `healer plugins` lists them: (kind, name).
    pub fn plugins(&self) -> Vec<(PluginKind, String)> {
        (self.package.plugins())()
            .into_iter()
            .map(|plugin| (plugin.kind, plugin.name.into_string()))
            .collect()
    }

    /// Whether plugin `name` of `kind` accepts `config` (its table in
    /// healer.toml, as JSON), as `healer check` asks it.
    pub fn check_config(
        &self,
        kind: PluginKind,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<(), String> {
        let json = config.to_string();
        (self.package.check_config())(kind, RStr::from(name), RStr::from(json.as_str()))
            .into_result()
            .map_err(RString::into_string)
    }

    /// One check of monitor `name` made with `config`.
    pub fn check(&self, name: &str, config: &serde_json::Value) -> Result<Observation, String> {
        let json = config.to_string();
        self.runtime.block_on(async {
            let monitor = (self.package.new_monitor())(RStr::from(name), RStr::from(json.as_str()))
                .await
                .into_result()
                .map_err(RString::into_string)?;
            monitor
                .check()
                .await
                .into_result()
                .map(Observation::from)
                .map_err(RString::into_string)
        })
    }

    /// Diagnoser `name` made with `config`, on `latest` after `history`
    /// (oldest first).
    pub fn diagnose(
        &self,
        name: &str,
        config: &serde_json::Value,
        latest: &Observation,
        history: &[Observation],
    ) -> Result<Vec<Finding>, String> {
        let json = config.to_string();
        self.runtime.block_on(async {
            let diagnoser =
                (self.package.new_diagnoser())(RStr::from(name), RStr::from(json.as_str()))
                    .await
                    .into_result()
                    .map_err(RString::into_string)?;
            let history: RVec<ObservationFfi> = history.iter().map(ObservationFfi::from).collect();
            diagnoser
                .diagnose(ObservationFfi::from(latest), history)
                .await
                .into_result()
                .map(|findings| findings.into_iter().map(Finding::from).collect())
                .map_err(RString::into_string)
        })
    }

    /// One attempt of recoverer `name` made with `config`.
    pub fn recover(
        &self,
        name: &str,
        config: &serde_json::Value,
        recovery: &Recovery,
    ) -> Result<Outcome, String> {
        let json = config.to_string();
        let request = serde_json::to_string(recovery)
            .map_err(|err| format!("cannot encode the recovery: {err}"))?;
        self.runtime.block_on(async {
            let recoverer =
                (self.package.new_recoverer())(RStr::from(name), RStr::from(json.as_str()))
                    .await
                    .into_result()
                    .map_err(RString::into_string)?;
            recoverer
                .recover(RString::from(request))
                .await
                .into_result()
                .map(Outcome::from)
                .map_err(RString::into_string)
        })
    }
}

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
