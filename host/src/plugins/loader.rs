//! Loads one plugin package (`.so`) and checks that this host can use it.
//!
//! Each file is opened as its own library with `RawLibrary::load_at`, never
//! through `RootModule::load_from_file`, which caches one library per root
//! module type and would hand back the first package for every later file.
//! Libraries are never unloaded: Rust cdylibs cannot be unloaded safely, so
//! a replaced `.so` is loaded anew and the old mapping stays.
//!
//! Every way a file can be wrong becomes a [`LoadError`] with one line for
//! people (file and reason) and, where abi_stable has more to say, the full
//! text for `-v`.

use std::fs::File;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::library::{
    lib_header_from_raw_library, LibraryError, RawLibrary, RootModule, RootModuleError,
};
use healer_plugin_sdk::ffi::{
    DeclaredFn, HistoryNeeded, PackageRef, ABI_VERSION, DECLARED_SYMBOL, HISTORY_NEEDED_SYMBOL,
    SDK_VERSION,
};
use serde::Serialize;

use super::identity::Opened;
use super::in_process::InProcess;
use super::package::{Package, PluginInfo};
use crate::config::Isolation;

/// Why a file in the plugins directory is not usable.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct LoadError {
    /// The offending file.
    pub file: PathBuf,
    /// One line: what is wrong and what would be right.
    pub reason: String,
    /// The full diagnostic (abi_stable's layout dump), shown with `-v`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LoadError {
    pub(super) fn new(file: &Path, reason: impl Into<String>) -> LoadError {
        LoadError {
            file: file.to_owned(),
            reason: reason.into(),
            detail: None,
        }
    }
}

/// A package loaded into this process, and the backend that calls it
/// here (what a worker serves, as itself).
pub struct Loaded {
    pub package: Package,
    pub in_process: InProcess,
}

/// Loads the package at `path` into this process, as it is: no probe, no
/// trust checks (the worker's probe and tests use this; the host loads
/// through [`load_opened`]).
pub fn load(path: &Path) -> Result<Package, LoadError> {
    load_from(path, path).map(|loaded| loaded.package)
}

/// Loads the package file that `opened` holds open (checked, and probed
/// clean), through `/proc/self/fd/N`: the file loaded is the file checked,
/// whatever happened to `shown` (its name in the plugins directory) since.
pub fn load_opened(opened: Opened, shown: &Path) -> Result<Package, LoadError> {
    load_opened_here(opened, shown).map(|loaded| loaded.package)
}

/// [`load_opened`], with the in-process backend it made.
pub fn load_opened_here(opened: Opened, shown: &Path) -> Result<Loaded, LoadError> {
    let Opened { file, identity } = opened;
    // The descriptor stays open for the life of the process: the dynamic
    // linker knows the library by this name, and a reused number would
    // hand a later package this one.
    let fd = file.into_raw_fd();
    let through = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let mut loaded = load_from(&through, shown)?;
    loaded.package.sha256 = Some(identity.sha256);
    Ok(loaded)
}

/// Loads `path`, naming `shown` in errors and in the package.
fn load_from(path: &Path, shown: &Path) -> Result<Loaded, LoadError> {
    let fail = |reason: String| LoadError::new(shown, reason);
    check_elf_magic(path).map_err(fail)?;

    let raw = RawLibrary::load_at(path).map_err(|err| fail(open_failure(path, &err)))?;
    // Never unloaded: see the module docs.
    let raw: &'static RawLibrary = Box::leak(Box::new(raw));
    // SAFETY: `raw` is leaked above, so the library stays mapped for the
    // rest of the process and the `'static` header cannot dangle.
    let header =
        unsafe { lib_header_from_raw_library(raw) }.map_err(|err| fail(header_failure(&err)))?;

    let consts = header.root_mod_consts();
    if consts.base_name().as_str() != PackageRef::BASE_NAME {
        return Err(fail(format!(
            "is an abi_stable library for something else (its root module is {:?}, not a healer plugin package)",
            consts.name().as_str()
        )));
    }
    check_abi_version(&header.version_strings().to_string()).map_err(fail)?;

    let module = header
        .init_root_module::<PackageRef>()
        .map_err(|err| init_failure(shown, err))?;

    let about = (module.about())();
    let plugins = (module.plugins())()
        .into_iter()
        .map(|p| PluginInfo {
            kind: p.kind,
            name: p.name.into_string(),
            description: p.description.into_string(),
            sample_config: p.sample_config.into_string(),
        })
        .collect();
    let in_process = InProcess {
        module,
        history_needed: history_needed_of(raw),
        declared: declared_of(raw),
    };
    Ok(Loaded {
        package: Package {
            file: shown.to_owned(),
            name: about.name.into_string(),
            version: about.version.into_string(),
            sdk_version: about.sdk_version.into_string(),
            plugins,
            sha256: None,
            isolation: Isolation::InProcess,
            backend: Arc::new(in_process),
        },
        in_process,
    })
}

/// The package's optional entry point telling how much history a
/// diagnoser reads; `None` in packages built before SDK 1.2.
fn history_needed_of(raw: &'static RawLibrary) -> Option<HistoryNeeded> {
    // SAFETY: a package exporting this symbol defines it through
    // `export_plugins!`, as a function of exactly the `HistoryNeeded`
    // signature (the `_v1` in its name is that signature's version; a new
    // one gets a new name). The library is never unloaded (`raw` is
    // leaked), so the pointer stays valid.
    let symbol = unsafe { raw.get::<HistoryNeeded>(HISTORY_NEEDED_SYMBOL) };
    symbol.ok().map(|symbol| *symbol)
}

/// The package's optional entry point telling what a plugin declares
/// about a config; `None` in packages built before SDK 1.3.
fn declared_of(raw: &'static RawLibrary) -> Option<DeclaredFn> {
    // SAFETY: as for `history_needed_of`: only `export_plugins!` defines
    // this symbol, as a function of exactly the `DeclaredFn` signature
    // (`_v1`), and the library is never unloaded.
    let symbol = unsafe { raw.get::<DeclaredFn>(DECLARED_SYMBOL) };
    symbol.ok().map(|symbol| *symbol)
}

/// Refuses anything that is not ELF before handing it to the dynamic
/// linker, whose messages for text files are cryptic ("file too short").
fn check_elf_magic(path: &Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut file| file.read_exact(&mut magic));
    match read {
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err("not a shared library (the file is too short to be ELF)".to_owned())
        }
        Err(err) => Err(format!("cannot be read: {err}")),
        Ok(()) if magic != *b"\x7fELF" => Err("not a shared library (no ELF header)".to_owned()),
        Ok(()) => Ok(()),
    }
}

/// The host's ABI major and the package's must be equal.
fn check_abi_version(package_abi: &str) -> Result<(), String> {
    let major = |version: &str| version.split('.').next().unwrap_or("").to_owned();
    let (package_major, host_major) = (major(package_abi), major(ABI_VERSION));
    if package_major == host_major {
        Ok(())
    } else {
        Err(format!(
            "built against SDK {package_major}.x, this host has SDK {SDK_VERSION}: \
             rebuild the package against healer-plugin-sdk {host_major}.x"
        ))
    }
}

fn open_failure(path: &Path, err: &LibraryError) -> String {
    let reason = match err {
        LibraryError::OpenError { err, .. } => err.to_string(),
        other => other.to_string(),
    };
    // dlerror() repeats the path; the caller already names the file.
    let prefix = format!("{}: ", path.display());
    let reason = reason.trim();
    let reason = reason.rsplit_once(&prefix).map_or(reason, |(_, tail)| tail);
    format!("not a loadable shared library: {reason}")
}

fn header_failure(err: &LibraryError) -> String {
    match err {
        LibraryError::GetSymbolError { .. } => "not a healer plugin package: it exports no root module \
             (build it with healer_plugin_sdk::export_plugins!)"
            .to_owned(),
        LibraryError::InvalidAbiHeader(header) => format!(
            "built with an incompatible abi_stable (ABI header {}.{}), this host uses abi_stable 0.11",
            header.abi_major, header.abi_minor
        ),
        other => one_line(&other.to_string()),
    }
}

fn init_failure(path: &Path, err: LibraryError) -> LoadError {
    let (reason, detail) = match &err {
        LibraryError::AbiInstability(dump) => {
            let dump = dump.to_string();
            let last_error = last_layout_error(&dump);
            (
                format!("its ABI layout does not match SDK {SDK_VERSION}: {last_error} (rebuild it against this SDK; -v shows the full comparison)"),
                Some(dump),
            )
        }
        LibraryError::RootModule {
            err: RootModuleError::Returned(message),
            ..
        } => (message.to_string(), None),
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => (
            "panicked while loading (its root module constructor unwound)".to_owned(),
            None,
        ),
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => (
            format!("built against SDK {actual_version}, this host has SDK {SDK_VERSION}"),
            None,
        ),
        other => (one_line(&other.to_string()), Some(other.to_string())),
    };
    LoadError {
        file: path.to_owned(),
        reason,
        detail,
    }
}

/// The gist of abi_stable's layout dump: its last `Error:` line with the
/// `Expected:`/`Found:` values under it, e.g. `mismatched package
/// (expected healer-plugin-sdk, found my-fork-of-the-sdk)`.
fn last_layout_error(dump: &str) -> String {
    let lines: Vec<&str> = dump.lines().map(str::trim).collect();
    let Some(at) = lines.iter().rposition(|line| line.starts_with("Error:")) else {
        return "layout differs".to_owned();
    };
    let value_after = |label: &str| {
        let from = lines[at..].iter().position(|line| *line == label)? + at + 1;
        lines
            .get(from)
            .filter(|line| !line.is_empty() && !line.ends_with(':'))
            .copied()
    };
    let reason = lines[at].trim_start_matches("Error:").trim();
    match (value_after("Expected:"), value_after("Found:")) {
        (Some(expected), Some(found)) => format!("{reason} (expected {expected}, found {found})"),
        _ => reason.to_owned(),
    }
}

/// abi_stable's messages span several lines; logs want one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_is_compatible_and_another_is_not() {
        assert!(check_abi_version(ABI_VERSION).is_ok());
        let err = check_abi_version("2.0.0").unwrap_err();
        assert!(
            err.starts_with("built against SDK 2.x, this host has SDK 1."),
            "{err}"
        );
    }

    #[test]
    fn the_last_layout_error_is_summarized_with_its_values() {
        let dump = "Layout of expected type:\n  ...\nError:field count\n  Expected:\n    6\n  Found:\n    5\n\nError:mismatched package\nExpected:\n    healer-plugin-sdk\nFound:\n    other\n";
        assert_eq!(
            last_layout_error(dump),
            "mismatched package (expected healer-plugin-sdk, found other)"
        );
        assert_eq!(
            last_layout_error("Error:too many fields\n"),
            "too many fields"
        );
        assert_eq!(last_layout_error("nothing useful"), "layout differs");
    }

    #[test]
    fn a_text_file_is_refused_before_the_dynamic_linker_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.so");
        std::fs::write(&path, "this is not a library\n").unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(err.reason, "not a shared library (no ELF header)");
        assert_eq!(
            err.to_string(),
            format!("{}: not a shared library (no ELF header)", path.display())
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.so");
        std::fs::write(&path, "").unwrap();
        assert!(load(&path).unwrap_err().reason.contains("too short"));
    }
}
