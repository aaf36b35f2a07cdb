//! What `export_plugins!` expands to: the package's registry of plugins,
//! the generic glue from the author traits to the FFI trait objects, and
//! the root module's entry points.
//!
//! The registry is a `static` of this SDK crate. Every package links its own
//! copy of the SDK, so each `.so` has its own registry.

use std::sync::{Arc, OnceLock};

use abi_stable::erased_types::TD_Opaque;
use abi_stable::library::{LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::std_types::{RBoxError, RErr, ROk, ROption, RResult, RStr, RString, RVec};
use async_ffi::{FfiFuture, FutureExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Mutex};

use crate::ffi::{
    Declared, DiagnoserBox, DiagnoserFfi, DiagnoserFfi_TO, FindingFfi, MonitorBox, MonitorFfi,
    MonitorFfi_TO, ObservationFfi, OutcomeFfi, Package, PackageAbout, PackageRef, PluginAbout,
    PluginKind, RecovererBox, RecovererFfi, RecovererFfi_TO, SDK_VERSION,
};
use crate::finding::Recovery;
use crate::observation::Observation;
use crate::plugin::{Diagnoser, Error, Monitor, Push, Recoverer, PUSH_BACKLOG};
use crate::runtime::{catch_panic, spawn, spawn_blocking};

/// The plugins of one package, collected by `export_plugins!`.
#[doc(hidden)]
pub struct PackageBuilder {
    name: &'static str,
    version: &'static str,
    /// The SDK version the package says it was built against: this one's,
    /// unless a test fixture plays a package of an older minor.
    sdk_version: &'static str,
    init: Option<fn() -> Result<(), Error>>,
    plugins: Vec<Entry>,
}

struct Entry {
    kind: PluginKind,
    name: &'static str,
    description: &'static str,
    sample_config: &'static str,
    check_config: fn(&str) -> Result<(), String>,
    create: Create,
    /// A diagnoser's [`Diagnoser::history_needed`] for a config (JSON).
    history_needed: Option<Constructor<usize>>,
    /// What the plugin declares about a config (JSON).
    declare: Constructor<Declared>,
}

/// Makes something of a plugin's config (JSON): an instance, or what it
/// needs.
type Constructor<T> = fn(&str) -> Result<T, String>;

enum Create {
    Monitor(Constructor<MonitorBox>),
    Diagnoser(Constructor<DiagnoserBox>),
    Recoverer(Constructor<RecovererBox>),
}

impl PackageBuilder {
    #[doc(hidden)]
    pub fn new(name: &'static str, version: &'static str) -> Self {
        PackageBuilder {
            name,
            version,
            sdk_version: SDK_VERSION,
            init: None,
            plugins: Vec::new(),
        }
    }

    /// Says the package was built against `sdk_version` (of this major):
    /// for test fixtures that play a package of an older minor, whose ABI
    /// this SDK's is.
    #[doc(hidden)]
    pub fn built_against(&mut self, sdk_version: &'static str) {
        self.sdk_version = sdk_version;
    }

    #[doc(hidden)]
    pub fn init(&mut self, init: fn() -> Result<(), Error>) {
        self.init = Some(init);
    }

    #[doc(hidden)]
    pub fn monitor<M: Monitor>(&mut self) {
        self.plugins.push(Entry {
            kind: PluginKind::Monitor,
            name: M::NAME,
            description: M::DESCRIPTION,
            sample_config: M::SAMPLE_CONFIG,
            check_config: |json| {
                let json = json.to_owned();
                validate(move || M::new(parse_config(&json)?).map_err(|e| e.to_string()))
            },
            create: Create::Monitor(new_monitor_instance::<M>),
            history_needed: None,
            declare: |json| {
                let own_timeout = M::own_timeout(&parse_config(json)?);
                Ok(Declared {
                    own_timeout_ms: own_timeout.map(|own| millis(own.into())),
                    ..Declared::default()
                })
            },
        });
    }

    #[doc(hidden)]
    pub fn diagnoser<D: Diagnoser>(&mut self) {
        self.plugins.push(Entry {
            kind: PluginKind::Diagnoser,
            name: D::NAME,
            description: D::DESCRIPTION,
            sample_config: D::SAMPLE_CONFIG,
            check_config: |json| {
                let json = json.to_owned();
                validate(move || D::new(parse_config(&json)?).map_err(|e| e.to_string()))
            },
            create: Create::Diagnoser(new_diagnoser_instance::<D>),
            history_needed: Some(|json| Ok(D::history_needed(&parse_config(json)?))),
            declare: |json| {
                Ok(Declared {
                    kinds: D::kinds(&parse_config(json)?),
                    ..Declared::default()
                })
            },
        });
    }

    #[doc(hidden)]
    pub fn recoverer<R: Recoverer>(&mut self) {
        self.plugins.push(Entry {
            kind: PluginKind::Recoverer,
            name: R::NAME,
            description: R::DESCRIPTION,
            sample_config: R::SAMPLE_CONFIG,
            check_config: |json| {
                let json = json.to_owned();
                validate(move || R::new(parse_config(&json)?).map_err(|e| e.to_string()))
            },
            create: Create::Recoverer(new_recoverer_instance::<R>),
            history_needed: None,
            declare: |_| Ok(Declared::default()),
        });
    }
}

static PACKAGE: OnceLock<PackageBuilder> = OnceLock::new();

/// The header `export_plugins!` exports: abi_stable reads it to check the
/// ABI version and layout before calling `constructor`.
#[doc(hidden)]
pub const fn lib_header(constructor: extern "C" fn() -> RootModuleResult) -> LibHeader {
    // SAFETY: `constructor` is the one `export_plugins!` defines, which
    // returns `abi_stable::library::__call_root_module_loader(..)` of a
    // function returning `PackageRef`, the module type named here.
    unsafe {
        LibHeader::from_constructor::<PackageRef>(
            constructor,
            abi_stable::library::CheckTypeLayout::Yes,
        )
    }
}

/// Builds the package's registry and runs its `init`, once, when the host
/// loads the package. A panic or error in either is a load error in the host.
#[doc(hidden)]
pub fn root_module(build: impl FnOnce() -> PackageBuilder) -> Result<PackageRef, RBoxError> {
    let package = catch_panic(build)
        .and_then(|package| match package.init.map(catch_panic) {
            Some(Ok(Err(err))) => Err(format!("package init failed: {err}")),
            Some(Err(panic)) => Err(format!("package init {panic}")),
            Some(Ok(Ok(()))) | None => Ok(package),
        })
        .map_err(|message| RBoxError::from_fmt(&message))?;
    let _ = PACKAGE.set(package);
    Ok(Package {
        about,
        plugins,
        check_config,
        new_monitor,
        new_diagnoser,
        new_recoverer,
        heartbeat,
    }
    .leak_into_prefix())
}

#[doc(hidden)]
pub fn history_needed(name: RStr<'_>, config_json: RStr<'_>) -> u64 {
    let (name, config_json) = (name.as_str(), config_json.as_str());
    let needed = catch_panic(|| {
        let entry = find(PluginKind::Diagnoser, name)?;
        entry
            .history_needed
            .map_or(Ok(usize::MAX), |f| f(config_json))
    });
    match needed {
        Ok(Ok(needed)) => u64::try_from(needed).unwrap_or(u64::MAX),
        Ok(Err(_)) | Err(_) => u64::MAX,
    }
}

/// What the plugin `name` of `kind` declares about a config, as JSON;
/// empty when it cannot tell (see `ffi::DECLARED_SYMBOL`).
#[doc(hidden)]
pub fn declared(kind: PluginKind, name: RStr<'_>, config_json: RStr<'_>) -> RString {
    let (name, config_json) = (name.as_str(), config_json.as_str());
    let declared = catch_panic(|| (find(kind, name)?.declare)(config_json));
    match declared {
        Ok(Ok(declared)) => serde_json::to_string(&declared).unwrap_or_default().into(),
        Ok(Err(_)) | Err(_) => RString::new(),
    }
}

/// A duration in whole milliseconds, held to `u64`.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn registry() -> Result<&'static PackageBuilder, String> {
    PACKAGE
        .get()
        .ok_or_else(|| "plugin package was called before it was loaded".to_owned())
}

fn find(kind: PluginKind, name: &str) -> Result<&'static Entry, String> {
    let package = registry()?;
    package
        .plugins
        .iter()
        .find(|entry| entry.kind == kind && entry.name == name)
        .ok_or_else(|| format!("package {} has no {kind} named {name:?}", package.name))
}

extern "C" fn about() -> PackageAbout {
    let (name, version, sdk_version) = registry().map_or(("?", "?", SDK_VERSION), |p| {
        (p.name, p.version, p.sdk_version)
    });
    PackageAbout {
        name: name.into(),
        version: version.into(),
        sdk_version: sdk_version.into(),
    }
}

extern "C" fn plugins() -> RVec<PluginAbout> {
    let Ok(package) = registry() else {
        return RVec::new();
    };
    package
        .plugins
        .iter()
        .map(|entry| PluginAbout {
            kind: entry.kind,
            name: entry.name.into(),
            description: entry.description.into(),
            sample_config: entry.sample_config.into(),
        })
        .collect()
}

extern "C" fn check_config(
    kind: PluginKind,
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> RResult<(), RString> {
    catch_panic(|| (find(kind, name.as_str())?.check_config)(config_json.as_str()))
        .and_then(|checked| checked)
        .map_err(RString::from)
        .into()
}

/// Runs an entry's constructor on the blocking pool (it may block, hang or
/// panic without touching host threads).
fn create<T: Send + 'static>(
    kind: PluginKind,
    name: RStr<'_>,
    config_json: RStr<'_>,
    pick: fn(&Create) -> Option<Constructor<T>>,
) -> FfiFuture<RResult<T, RString>> {
    let (name, config_json) = (name.to_string(), config_json.to_string());
    spawn_blocking(move || {
        let entry = find(kind, &name)?;
        let constructor = pick(&entry.create).ok_or_else(|| format!("{name:?} is not a {kind}"))?;
        constructor(&config_json)
    })
}

extern "C" fn new_monitor(
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> FfiFuture<RResult<MonitorBox, RString>> {
    create(PluginKind::Monitor, name, config_json, |c| match c {
        Create::Monitor(f) => Some(*f),
        _ => None,
    })
}

extern "C" fn new_diagnoser(
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> FfiFuture<RResult<DiagnoserBox, RString>> {
    create(PluginKind::Diagnoser, name, config_json, |c| match c {
        Create::Diagnoser(f) => Some(*f),
        _ => None,
    })
}

extern "C" fn new_recoverer(
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> FfiFuture<RResult<RecovererBox, RString>> {
    create(PluginKind::Recoverer, name, config_json, |c| match c {
        Create::Recoverer(f) => Some(*f),
        _ => None,
    })
}

extern "C" fn heartbeat() -> FfiFuture<RResult<(), RString>> {
    spawn(async { Ok(()) })
}

/// How long `healer check` waits for a plugin's constructor.
const VALIDATE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Validates a config the way creating an instance would, then drops the
/// instance: constructors must not start anything (that is what `watch` and
/// the first `check` are for). The constructor runs on the package's
/// blocking pool, never on the caller's thread, and is given
/// `VALIDATE_DEADLINE`.
fn validate<T: Send + 'static>(
    create: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<(), String> {
    let (sender, outcome) = std::sync::mpsc::channel();
    crate::runtime::detach_blocking(move || {
        let _ = sender.send(catch_panic(create).and_then(|created| created).map(drop));
    })?;
    outcome.recv_timeout(VALIDATE_DEADLINE).unwrap_or_else(|_| {
        Err(format!(
            "the plugin's constructor did not return within {VALIDATE_DEADLINE:?}"
        ))
    })
}

/// Deserializes a plugin config, with serde's message minus the JSON
/// position (the user wrote TOML; the host points at the right line).
fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    serde_json::from_str(json).map_err(|err| {
        let message = err.to_string();
        match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        }
    })
}

fn new_monitor_instance<M: Monitor>(config_json: &str) -> Result<MonitorBox, String> {
    let mut monitor = M::new(parse_config(config_json)?).map_err(|err| err.to_string())?;
    let (sender, pushed) = mpsc::channel(PUSH_BACKLOG);
    monitor.watch(Push::new(sender));
    let instance = MonitorInstance {
        monitor: Arc::new(Mutex::new(monitor)),
        pushed: Arc::new(Mutex::new(pushed)),
    };
    Ok(MonitorFfi_TO::from_value(instance, TD_Opaque))
}

fn new_diagnoser_instance<D: Diagnoser>(config_json: &str) -> Result<DiagnoserBox, String> {
    let config = parse_config(config_json)?;
    let history_needed = D::history_needed(&config);
    let diagnoser = D::new(config).map_err(|err| err.to_string())?;
    let instance = DiagnoserInstance {
        history_needed,
        diagnoser: Shared(Arc::new(std::sync::Mutex::new(diagnoser))),
    };
    Ok(DiagnoserFfi_TO::from_value(instance, TD_Opaque))
}

fn new_recoverer_instance<R: Recoverer>(config_json: &str) -> Result<RecovererBox, String> {
    let recoverer = R::new(parse_config(config_json)?).map_err(|err| err.to_string())?;
    let instance = Shared(Arc::new(Mutex::new(recoverer)));
    Ok(RecovererFfi_TO::from_value(instance, TD_Opaque))
}

/// A monitor and the receiving end of its pushes. Both sit behind async
/// locks, so checks of one instance never overlap and a check is never
/// blocked by a pending `next_push`.
struct MonitorInstance<M> {
    monitor: Arc<Mutex<M>>,
    pushed: Arc<Mutex<mpsc::Receiver<Box<Observation>>>>,
}

impl<M: Monitor> MonitorFfi for MonitorInstance<M> {
    fn check(&self) -> FfiFuture<RResult<ObservationFfi, RString>> {
        let monitor = Arc::clone(&self.monitor);
        spawn(async move {
            let mut monitor = monitor.lock().await;
            match monitor.check().await {
                Ok(seen) => Ok(ObservationFfi::from(seen)),
                Err(err) => Err(err.to_string()),
            }
        })
    }

    fn next_push(&self) -> FfiFuture<ROption<ObservationFfi>> {
        let pushed = Arc::clone(&self.pushed);
        let next = spawn(async move {
            let next = pushed.lock().await.recv().await;
            Ok(next.map(|seen| ObservationFfi::from(*seen)))
        });
        async move {
            match next.await {
                ROk(Some(seen)) => ROption::RSome(seen),
                ROk(None) | RErr(_) => ROption::RNone,
            }
        }
        .into_ffi()
    }
}

/// A plugin behind a lock shared with the task that is using it.
struct Shared<L>(Arc<L>);

/// A diagnoser and how much history it reads (asked once).
struct DiagnoserInstance<D> {
    diagnoser: Shared<std::sync::Mutex<D>>,
    history_needed: usize,
}

impl<D: Diagnoser> DiagnoserFfi for DiagnoserInstance<D> {
    fn diagnose(
        &self,
        latest: ObservationFfi,
        history: RVec<ObservationFfi>,
    ) -> FfiFuture<RResult<RVec<FindingFfi>, RString>> {
        let diagnoser = Arc::clone(&self.diagnoser.0);
        let needed = self.history_needed;
        let diagnose = move || {
            let latest = Observation::from(latest);
            // Only what the diagnoser reads is converted (the details of
            // each are parsed JSON): none, for most, at every check.
            let skipped = history.len().saturating_sub(needed);
            let history: Vec<Observation> = history
                .into_iter()
                .skip(skipped)
                .map(Observation::from)
                .collect();
            // A poisoned lock means an earlier call panicked; the state is
            // the plugin's own, so carry on with it as the plugin left it.
            // A call still holding the lock hung past its deadline: fail
            // fast instead of queueing blocking threads behind it.
            let mut diagnoser = match diagnoser.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(poison)) => poison.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(
                        "the previous diagnosis of this instance is still running".to_owned()
                    )
                }
            };
            let findings = diagnoser.diagnose(&latest, &history);
            Ok(findings.into_iter().map(FindingFfi::from).collect())
        };
        if D::BLOCKS {
            return spawn_blocking(diagnose);
        }
        // In this very call, on the caller's thread: a few microseconds.
        let diagnosed = match catch_panic(diagnose) {
            Ok(Ok(findings)) => ROk(findings),
            Ok(Err(err)) | Err(err) => RErr(RString::from(err)),
        };
        std::future::ready(diagnosed).into_ffi()
    }
}

impl<R: Recoverer> RecovererFfi for Shared<Mutex<R>> {
    fn recover(&self, recovery_json: RString) -> FfiFuture<RResult<OutcomeFfi, RString>> {
        let recoverer = Arc::clone(&self.0);
        spawn(async move {
            let recovery: Recovery = serde_json::from_str(&recovery_json)
                .map_err(|err| format!("host sent a malformed recovery request: {err}"))?;
            let mut recoverer = recoverer.lock().await;
            match recoverer.recover(&recovery).await {
                Ok(outcome) => Ok(OutcomeFfi::from(outcome)),
                Err(err) => Err(err.to_string()),
            }
        })
    }
}

/// Exports a plugin package: lists the crate's monitors, diagnosers and
/// recoverers, and (optionally) a package `init` function run once when the
/// host loads the `.so`. Call it once, at the crate root of a `cdylib`.
///
/// ```ignore
/// healer_plugin_sdk::export_plugins! {
///     monitors: [HttpMonitor],
///     diagnosers: [HttpDiagnoser],
///     recoverers: [],
/// }
/// ```
///
/// Every list is optional; `init: path::to::fn` may come first, a
/// `fn() -> Result<(), healer_plugin_sdk::Error>`.
#[macro_export]
macro_rules! export_plugins {
    (
        $(init: $init:path,)?
        $(monitors: [$($monitor:ty),* $(,)?] $(,)?)?
        $(diagnosers: [$($diagnoser:ty),* $(,)?] $(,)?)?
        $(recoverers: [$($recoverer:ty),* $(,)?] $(,)?)?
    ) => {
        /// The abi_stable root module loader the host looks up; the name is
        /// abi_stable's `ROOT_MODULE_LOADER_NAME`.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            fn package() -> ::core::result::Result<
                $crate::__private::PackageRef,
                $crate::__private::RBoxError,
            > {
                $crate::__private::root_module(|| {
                    let mut package = $crate::__private::PackageBuilder::new(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    );
                    $(package.init($init);)?
                    $($(package.monitor::<$monitor>();)*)?
                    $($(package.diagnoser::<$diagnoser>();)*)?
                    $($(package.recoverer::<$recoverer>();)*)?
                    package
                })
            }
            extern "C" fn constructor() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(package)
            }
            $crate::__private::lib_header(constructor)
        };

        /// The package's root module header, as healer's loader finds it:
        /// for tests, through `healer_plugin_sdk::testing::Host::of`.
        #[doc(hidden)]
        pub fn healer_plugin_header() -> &'static $crate::__private::LibHeader {
            &_1as_0lib_1header_0root_bmodule_bloader
        }

        /// How much history a diagnoser of this package reads: see
        /// `healer_plugin_sdk::ffi::HISTORY_NEEDED_SYMBOL`.
        #[no_mangle]
        pub extern "C" fn healer_plugin_history_needed_v1(
            name: $crate::__private::RStr<'_>,
            config_json: $crate::__private::RStr<'_>,
        ) -> u64 {
            $crate::__private::history_needed(name, config_json)
        }

        /// What a plugin of this package declares about a config: see
        /// `healer_plugin_sdk::ffi::DECLARED_SYMBOL`.
        #[no_mangle]
        pub extern "C" fn healer_plugin_declared_v1(
            kind: $crate::__private::PluginKind,
            name: $crate::__private::RStr<'_>,
            config_json: $crate::__private::RStr<'_>,
        ) -> $crate::__private::RString {
            $crate::__private::declared(kind, name, config_json)
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    #[test]
    fn each_plugin_declares_what_its_trait_says_about_a_config() {
        use crate::{Diagnoser, Error, Finding, Monitor, Observation};

        #[derive(serde::Deserialize)]
        struct Config {
            kind: String,
            timeout: crate::Duration,
        }
        struct Declaring;
        impl Diagnoser for Declaring {
            type Config = Config;
            const NAME: &'static str = "declaring";
            const DESCRIPTION: &'static str = "declares";
            fn new(_: Config) -> Result<Self, Error> {
                Ok(Declaring)
            }
            fn diagnose(&mut self, _: &Observation, _: &[Observation]) -> Vec<Finding> {
                Vec::new()
            }
            fn kinds(config: &Config) -> Option<Vec<String>> {
                Some(vec![config.kind.clone()])
            }
        }
        impl Monitor for Declaring {
            type Config = Config;
            const NAME: &'static str = "declaring";
            const DESCRIPTION: &'static str = "declares";
            fn new(_: Config) -> Result<Self, Error> {
                Ok(Declaring)
            }
            async fn check(&mut self) -> Result<Observation, Error> {
                Ok(Observation::ok("fine"))
            }
            fn own_timeout(config: &Config) -> Option<crate::Duration> {
                Some(config.timeout)
            }
        }
        struct Silent;
        impl Diagnoser for Silent {
            type Config = serde_json::Value;
            const NAME: &'static str = "silent";
            const DESCRIPTION: &'static str = "declares nothing";
            fn new(_: serde_json::Value) -> Result<Self, Error> {
                Ok(Silent)
            }
            fn diagnose(&mut self, _: &Observation, _: &[Observation]) -> Vec<Finding> {
                Vec::new()
            }
        }
        let mut package = super::PackageBuilder::new("p", "0.0.0");
        package.diagnoser::<Declaring>();
        package.monitor::<Declaring>();
        package.diagnoser::<Silent>();
        let config = r#"{"kind": "disk.filling", "timeout": "1500ms"}"#;
        let declared: Vec<_> = package
            .plugins
            .iter()
            .map(|entry| (entry.declare)(config))
            .collect();

        assert_eq!(
            declared[0].as_ref().unwrap().kinds,
            Some(vec!["disk.filling".to_owned()])
        );
        assert_eq!(declared[1].as_ref().unwrap().own_timeout_ms, Some(1500));
        assert_eq!(declared[2].as_ref().unwrap(), &super::Declared::default());
        assert!(
            (package.plugins[0].declare)("{}").is_err(),
            "a config it cannot read"
        );
    }

    #[test]
    fn config_errors_drop_the_json_position() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // only deserialized
        struct Config {
            url: String,
        }
        let err = super::parse_config::<Config>(r#"{"urll": "x"}"#).unwrap_err();
        assert_eq!(err, "unknown field `urll`, expected `url`");
    }
}
