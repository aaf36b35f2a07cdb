//! A plugin package that lives in memory, for tests that need plugins but
//! no `.so`: its plugins are plain Rust values written against the SDK's
//! author traits ([`Monitor`], [`Diagnoser`], [`Recoverer`]), created from
//! their configs and called through the same [`Backend`] and [`Instance`]
//! as every package healer loads. What is missing is only the build, the
//! ABI and the worker. As the SDK does it, each check and recovery runs as
//! a task of its own, aborted when the caller drops it (a deadline), and a
//! panic is an error that says so.
//!
//! ```ignore
//! let pid = Script::new(Observation::critical("no process"));
//! let restart = Recorder::default();
//! let catalog = catalog([Memory::new("test")
//!     .monitor::<FileExists>()         // made by `FileExists::new(config)`
//!     .monitor_as("pid", &pid)         // every instance a clone of `pid`
//!     .recoverer_as("restart", &restart)
//!     .package()]);
//! ```
//!
//! [`scripted`] holds the doubles most tests want: a monitor that answers
//! what it is told (an observation, an error, a hang, a panic) and a
//! recoverer that keeps every request and answers what it is told.

pub mod scripted;

use std::path::PathBuf;
use std::sync::Arc;

use healer_plugin_sdk::ffi::{Declared, PluginKind, SDK_VERSION};
use healer_plugin_sdk::{
    Diagnoser, Error, Monitor, Observation, Outcome, Push, Recoverer, Recovery,
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Mutex};

use super::bounds::Findings;
use super::package::{Backend, Instance, Package, Pending, PluginInfo};
use super::Catalog;
use crate::config::Isolation;

pub use scripted::{Recorder, RecorderReply, Script, Seen};

/// A catalog of in-memory packages, as a scan would have found them.
pub fn catalog(packages: impl IntoIterator<Item = Package>) -> Catalog {
    Catalog {
        dir: PathBuf::from("(in memory)"),
        packages: packages.into_iter().collect(),
        ..Catalog::default()
    }
}

/// The plugins of one in-memory package, added one by one.
pub struct Memory {
    name: String,
    plugins: Vec<Plugin>,
}

/// One plugin: how it checks a config and makes an instance of it.
struct Plugin {
    info: PluginInfo,
    check: CheckConfig,
    make: MakeInstance,
}

/// What a plugin declares about a config (JSON text), or why it refuses it.
type CheckConfig = Box<dyn Fn(&str) -> Result<Declared, String> + Send + Sync>;

/// An instance of a plugin made from a config (JSON text).
type MakeInstance = Box<dyn Fn(&str) -> Result<Box<dyn Instance>, String> + Send + Sync>;

/// How a plugin's value is made from its config.
type Make<T, C> = Arc<dyn Fn(C) -> Result<T, Error> + Send + Sync>;

fn info(kind: PluginKind, name: &str, description: &str, sample: &str) -> PluginInfo {
    PluginInfo {
        kind,
        name: name.to_owned(),
        description: description.to_owned(),
        sample_config: sample.to_owned(),
    }
}

/// `json` as a plugin's typed config; the error reads as the SDK's does.
fn parse<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    serde_json::from_str(json).map_err(|err| format!("invalid config: {err}"))
}

impl Memory {
    /// An empty package of this name.
    pub fn new(name: &str) -> Memory {
        Memory {
            name: name.to_owned(),
            plugins: Vec::new(),
        }
    }

    /// Adds monitor `M`, made from its config by `M::new`, as a package
    /// would.
    pub fn monitor<M: Monitor>(self) -> Memory {
        self.monitor_made(M::NAME, Arc::new(M::new))
    }

    /// Adds the monitor `name`, every instance of which is a clone of
    /// `monitor` (clones of a [`Script`] share its script).
    pub fn monitor_as<M: Monitor + Clone + Sync>(self, name: &str, monitor: &M) -> Memory {
        let monitor = monitor.clone();
        self.monitor_made(name, Arc::new(move |_| Ok(monitor.clone())))
    }

    fn monitor_made<M: Monitor>(self, name: &str, make: Make<M, M::Config>) -> Memory {
        let info = info(PluginKind::Monitor, name, M::DESCRIPTION, M::SAMPLE_CONFIG);
        let declare = |config: &M::Config| Declared {
            own_timeout_ms: M::own_timeout(config)
                .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ..Declared::default()
        };
        self.add(info, make, declare, |mut monitor: M| {
            let (push, pushed) = Push::channel();
            monitor.watch(push);
            Box::new(Watched {
                monitor: Arc::new(Mutex::new(monitor)),
                pushed: Arc::new(Mutex::new(pushed)),
            })
        })
    }

    /// Adds diagnoser `D`, made from its config by `D::new`.
    pub fn diagnoser<D: Diagnoser>(self) -> Memory {
        self.diagnoser_made(D::NAME, Arc::new(D::new))
    }

    /// Adds the diagnoser `name`, every instance of which is a clone of
    /// `diagnoser`.
    pub fn diagnoser_as<D: Diagnoser + Clone + Sync>(self, name: &str, diagnoser: &D) -> Memory {
        let diagnoser = diagnoser.clone();
        self.diagnoser_made(name, Arc::new(move |_| Ok(diagnoser.clone())))
    }

    fn diagnoser_made<D: Diagnoser>(self, name: &str, make: Make<D, D::Config>) -> Memory {
        let info = info(
            PluginKind::Diagnoser,
            name,
            D::DESCRIPTION,
            D::SAMPLE_CONFIG,
        );
        let declare = |config: &D::Config| Declared {
            kinds: D::kinds(config),
            ..Declared::default()
        };
        self.add(info, make, declare, |diagnoser: D| {
            Box::new(Diagnosing(std::sync::Mutex::new(diagnoser)))
        })
    }

    /// Adds recoverer `R`, made from its config by `R::new`.
    pub fn recoverer<R: Recoverer>(self) -> Memory {
        self.recoverer_made(R::NAME, Arc::new(R::new))
    }

    /// Adds the recoverer `name`, every instance of which is a clone of
    /// `recoverer` (clones of a [`Recorder`] share its record).
    pub fn recoverer_as<R: Recoverer + Clone + Sync>(self, name: &str, recoverer: &R) -> Memory {
        let recoverer = recoverer.clone();
        self.recoverer_made(name, Arc::new(move |_| Ok(recoverer.clone())))
    }

    fn recoverer_made<R: Recoverer>(self, name: &str, make: Make<R, R::Config>) -> Memory {
        let info = info(
            PluginKind::Recoverer,
            name,
            R::DESCRIPTION,
            R::SAMPLE_CONFIG,
        );
        self.add(
            info,
            make,
            |_: &R::Config| Declared::default(),
            |recoverer: R| Box::new(Recovering(Arc::new(Mutex::new(recoverer)))),
        )
    }

    /// Adds a plugin whose values `make` makes from their config, which
    /// `declare` reads, and which `instance` turns into instances.
    fn add<T: 'static, C: DeserializeOwned + 'static>(
        mut self,
        info: PluginInfo,
        make: Make<T, C>,
        declare: impl Fn(&C) -> Declared + Send + Sync + 'static,
        instance: impl Fn(T) -> Box<dyn Instance> + Send + Sync + 'static,
    ) -> Memory {
        let (checking, making) = (Arc::clone(&make), make);
        self.plugins.push(Plugin {
            info,
            check: Box::new(move |json| {
                let config = parse(json)?;
                let declared = declare(&config);
                checking(config).map_err(|err| err.to_string())?;
                Ok(declared)
            }),
            make: Box::new(move |json| {
                let value = making(parse(json)?).map_err(|err| err.to_string())?;
                Ok(instance(value))
            }),
        });
        self
    }

    /// The package, as the catalog holds one: its plugins run here.
    pub fn package(self) -> Package {
        Package {
            file: PathBuf::from(format!("(in memory)/lib{}.so", self.name)),
            name: self.name.clone(),
            version: "0.0.0".to_owned(),
            sdk_version: SDK_VERSION.to_owned(),
            plugins: self.plugins.iter().map(|p| p.info.clone()).collect(),
            sha256: None,
            isolation: Isolation::InProcess,
            backend: Arc::new(self),
        }
    }

    fn find(&self, kind: PluginKind, name: &str) -> Result<&Plugin, String> {
        self.plugins
            .iter()
            .find(|p| p.info.kind == kind && p.info.name == name)
            .ok_or_else(|| format!("package {} has no {kind} named {name:?}", self.name))
    }
}

impl Backend for Memory {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>> {
        Box::pin(async move { (self.find(kind, name)?.check)(config) })
    }

    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Box<dyn Instance>, String>> {
        Box::pin(async move { (self.find(kind, name)?.make)(config) })
    }

    fn heartbeat(&self) -> Pending<'_, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Runs `work` as a task of its own, aborted when the returned future is
/// dropped; a panic is an error, as the SDK makes it.
async fn run<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(work);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(done) => done,
        Err(err) if err.is_panic() => Err(panicked(err.into_panic())),
        Err(err) => Err(format!("the call was cancelled: {err}")),
    }
}

fn panicked(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a non-string panic payload".to_owned(),
            |s| (*s).to_owned(),
        ),
    };
    format!("panicked: {message}")
}

fn not_a(kind: &str) -> String {
    format!("this plugin is not a {kind}")
}

/// A monitor instance and what it pushes.
struct Watched<M> {
    monitor: Arc<Mutex<M>>,
    pushed: Arc<Mutex<mpsc::Receiver<Observation>>>,
}

impl<M: Monitor> Instance for Watched<M> {
    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        let monitor = Arc::clone(&self.monitor);
        Box::pin(run(async move {
            let mut monitor = monitor.lock().await;
            monitor.check().await.map_err(|err| err.to_string())
        }))
    }

    fn next_push(&self) -> Pending<'_, Option<Observation>> {
        let pushed = Arc::clone(&self.pushed);
        Box::pin(async move {
            run(async move { Ok(pushed.lock().await.recv().await) })
                .await
                .ok()
                .flatten()
        })
    }

    fn diagnose<'a>(
        &'a self,
        _: &'a Observation,
        _: &'a [Observation],
    ) -> Pending<'a, Result<Findings, String>> {
        Box::pin(std::future::ready(Err(not_a("diagnoser"))))
    }

    fn recover<'a>(&'a self, _: &'a Recovery) -> Pending<'a, Result<Outcome, String>> {
        Box::pin(std::future::ready(Err(not_a("recoverer"))))
    }
}

/// A diagnoser instance: it runs within the call (tests' diagnosers only
/// read the observations).
struct Diagnosing<D>(std::sync::Mutex<D>);

impl<D: Diagnoser> Instance for Diagnosing<D> {
    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        Box::pin(std::future::ready(Err(not_a("monitor"))))
    }

    fn next_push(&self) -> Pending<'_, Option<Observation>> {
        Box::pin(std::future::ready(None))
    }

    fn diagnose<'a>(
        &'a self,
        latest: &'a Observation,
        history: &'a [Observation],
    ) -> Pending<'a, Result<Findings, String>> {
        let diagnosed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut diagnoser = self.0.lock().unwrap_or_else(|p| p.into_inner());
            diagnoser.diagnose(latest, history)
        }));
        Box::pin(std::future::ready(
            diagnosed
                .map(|found| found.into_iter().collect())
                .map_err(panicked),
        ))
    }

    fn recover<'a>(&'a self, _: &'a Recovery) -> Pending<'a, Result<Outcome, String>> {
        Box::pin(std::future::ready(Err(not_a("recoverer"))))
    }
}

/// A recoverer instance.
struct Recovering<R>(Arc<Mutex<R>>);

impl<R: Recoverer> Instance for Recovering<R> {
    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        Box::pin(std::future::ready(Err(not_a("monitor"))))
    }

    fn next_push(&self) -> Pending<'_, Option<Observation>> {
        Box::pin(std::future::ready(None))
    }

    fn diagnose<'a>(
        &'a self,
        _: &'a Observation,
        _: &'a [Observation],
    ) -> Pending<'a, Result<Findings, String>> {
        Box::pin(std::future::ready(Err(not_a("diagnoser"))))
    }

    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Pending<'a, Result<Outcome, String>> {
        let (recoverer, recovery) = (Arc::clone(&self.0), recovery.clone());
        Box::pin(run(async move {
            let mut recoverer = recoverer.lock().await;
            recoverer
                .recover(&recovery)
                .await
                .map_err(|err| err.to_string())
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use healer_plugin_sdk::Status;
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LimitConfig {
        limit: u32,
    }

    /// WARNING above a limit, and says so the moment it starts.
    struct Limit(u32);

    impl Monitor for Limit {
        type Config = LimitConfig;
        const NAME: &'static str = "limit";
        const DESCRIPTION: &'static str = "WARNING above a limit";

        fn new(config: LimitConfig) -> Result<Self, Error> {
            if config.limit == 0 {
                return Err("limit must be at least 1".into());
            }
            Ok(Limit(config.limit))
        }

        fn own_timeout(_: &LimitConfig) -> Option<healer_plugin_sdk::Duration> {
            Some(healer_plugin_sdk::Duration::from_secs(2))
        }

        fn watch(&mut self, push: Push) {
            push.send(Observation::warning(format!("above {}", self.0)));
        }

        async fn check(&mut self) -> Result<Observation, Error> {
            Ok(Observation::ok(format!("below {}", self.0)))
        }
    }

    #[tokio::test]
    async fn an_authors_plugin_is_made_from_its_config_as_a_package_makes_it() {
        let package = Memory::new("test").monitor::<Limit>().package();
        let declared = package
            .check_config(PluginKind::Monitor, "limit", &json!({"limit": 3}))
            .await
            .expect("a good config");
        assert_eq!(declared.own_timeout_ms, Some(2_000));
        for (config, why) in [
            (json!({"limt": 3}), "unknown field `limt`"),
            (json!({"limit": 0}), "limit must be at least 1"),
        ] {
            let refused = package
                .check_config(PluginKind::Monitor, "limit", &config)
                .await
                .expect_err("a bad config");
            assert!(refused.contains(why), "{refused}");
        }
        let monitor = package
            .new_monitor("limit", &json!({"limit": 3}))
            .await
            .expect("an instance");
        assert_eq!(monitor.check().await.expect("a check").summary, "below 3");
        let pushed = monitor.next_push().await.expect("what it pushed");
        assert_eq!(pushed.status, Status::Warning);
        assert!(monitor.next_push().await.is_none(), "its push was dropped");
        let unknown = package.new_recoverer("limit", &json!({})).await;
        assert!(unknown.is_err_and(|err| err.contains("no recoverer named \"limit\"")));
    }

    #[tokio::test]
    async fn a_check_dropped_at_its_deadline_is_aborted_and_the_next_one_answers() {
        let script = Script::new(Observation::ok("up"));
        script.then([Seen::Hangs]);
        let package = Memory::new("test").monitor_as("pid", &script).package();
        let monitor = package.new_monitor("pid", &json!({})).await.expect("made");
        let hung = tokio::time::timeout(Duration::from_millis(20), monitor.check()).await;
        assert!(hung.is_err(), "it hangs");
        let next = tokio::time::timeout(Duration::from_secs(5), monitor.check())
            .await
            .expect("the hung check no longer holds the monitor");
        assert_eq!(next.expect("a check").summary, "up");
        assert_eq!(script.checks(), 2);
    }

    #[tokio::test]
    async fn a_panic_in_plugin_code_is_an_error_that_says_so() {
        let script = Script::new(Seen::Panics("boom".into()));
        let recorder = Recorder::default();
        let package = Memory::new("test")
            .monitor_as("pid", &script)
            .recoverer_as("restart", &recorder)
            .package();
        let monitor = package.new_monitor("pid", &json!({})).await.expect("made");
        let err = monitor.check().await.expect_err("a panic");
        assert_eq!(err, "panicked: boom");
        // The instances live on.
        let restart = package
            .new_recoverer("restart", &json!({}))
            .await
            .expect("made");
        let recovery = Recovery {
            target: "web".into(),
            finding: healer_plugin_sdk::Finding::critical("pid.critical", "down"),
            attempt: 1,
            params: json!({}),
            fence: None,
        };
        let outcome = restart.recover(&recovery).await.expect("done");
        assert_eq!(outcome.summary, "done");
        assert_eq!(recorder.calls(), [recovery]);
    }
}
