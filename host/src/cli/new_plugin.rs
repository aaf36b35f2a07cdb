//! `healer plugins new NAME --kind ...`: writes a plugin package that
//! builds as it is, against the SDK that shipped with this healer: its
//! `Cargo.toml`, a `src/lib.rs` with one plugin of each kind asked (a
//! monitor that watches a file, a diagnoser that names what it saw, a
//! recoverer that puts the file back), each with its `SAMPLE_CONFIG`, a
//! unit test that drives them through the SDK's [`Host`] (the FFI path
//! healer takes), and a README in the shape of the shipped packages'.
//!
//! [`Host`]: healer_plugin_sdk::testing::Host

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;

use crate::operator::fail;

/// A plugin kind to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    Monitor,
    Diagnoser,
    Recoverer,
}

/// Where the SDK is: `HEALER_SDK_DIR`, else the checkout this healer was
/// built in, else where the Debian package installs it.
fn sdk_dir() -> Result<PathBuf, String> {
    let candidates = [
        std::env::var_os("HEALER_SDK_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk")),
        Some(PathBuf::from("/usr/share/healer/plugin-sdk")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("Cargo.toml").is_file())
        .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir))
        .ok_or_else(|| {
            "cannot find healer's plugin SDK (not in this healer's checkout, nor in /usr/share/healer/plugin-sdk): set HEALER_SDK_DIR to its directory".to_owned()
        })
}

/// Whether `name` can name a plugin and its crate: a lowercase letter,
/// then lowercase letters, digits and single `-`, at most 40.
fn check_name(name: &str) -> Result<(), String> {
    let good = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if good {
        Ok(())
    } else {
        Err(format!(
            "{name:?} cannot name a plugin: use a lowercase letter, then lowercase letters, digits and single dashes (at most 40), e.g. disk-probe"
        ))
    }
}

/// `healer plugins new`.
pub(super) fn new_plugin(name: &str, kinds: &[Kind], path: Option<&Path>) -> ExitCode {
    match write_package(name, kinds, path) {
        Ok(dir) => {
            let lib = format!("libhealer_plugin_{}.so", name.replace('-', "_"));
            say!(
                "wrote healer-plugin-{name} in {} ({}); next:\n  cd {}\n  cargo test\n  cargo build --release\n  healer plugins --check target/release/{lib}",
                dir.display(),
                kinds_in_words(kinds),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn kinds_in_words(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .map(|kind| match kind {
            Kind::Monitor => "a monitor",
            Kind::Diagnoser => "a diagnoser",
            Kind::Recoverer => "a recoverer",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the package; returns its directory.
fn write_package(name: &str, kinds: &[Kind], path: Option<&Path>) -> Result<PathBuf, String> {
    check_name(name)?;
    let mut kinds = kinds.to_vec();
    if kinds.is_empty() {
        kinds.push(Kind::Monitor);
    }
    kinds.sort();
    kinds.dedup();
    let dir = path.map_or_else(|| PathBuf::from(name), Path::to_owned);
    let not_empty = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if not_empty {
        return Err(format!(
            "{} is not empty: name a new or empty directory with --path",
            dir.display()
        ));
    }
    let sdk = sdk_dir()?;
    let write = |file: &str, text: &str| {
        let at = dir.join(file);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        std::fs::write(&at, text).map_err(|err| format!("cannot write {}: {err}", at.display()))
    };
    write("Cargo.toml", &manifest(name, &sdk))?;
    write("src/lib.rs", &library(name, &kinds))?;
    write("README.md", &readme(name, &kinds))?;
    write(".gitignore", "/target\n")?;
    Ok(dir)
}

fn manifest(name: &str, sdk: &Path) -> String {
    format!(
        r##"[package]
name = "healer-plugin-{name}"
version = "0.1.0"
edition = "2021"
description = "healer plugins: {name}"

[lib]
# A cdylib for healer to load; an rlib for the tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK this healer shipped with: its major version is the plugin ABI.
healer-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
serde_json = "1"

# A package of its own, also when written inside another workspace.
[workspace]
"##,
        sdk = sdk.display()
    )
}

/// `disk-probe` → `DiskProbe`.
fn camel(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn library(name: &str, kinds: &[Kind]) -> String {
    let camel = camel(name);
    let has = |kind| kinds.contains(&kind);
    let mut lib = format!(
        r##"//! healer plugins `{name}`: {kinds}, written by `healer plugins new`.
//! Replace what they check and do with your own; keep the rule that
//! matters most: CRITICAL only on evidence that something is wrong, and
//! UNKNOWN when the plugin could not tell (healer never acts on UNKNOWN).
#![forbid(unsafe_code)]

use healer_plugin_sdk::{{Error}};
use serde::Deserialize;
"##,
        kinds = kinds_in_words(kinds)
    );
    let mut uses = vec!["Error"];
    if has(Kind::Monitor) {
        uses.extend(["Monitor", "Observation"]);
    }
    if has(Kind::Diagnoser) {
        uses.extend(["Diagnoser", "Finding", "Observation", "Status"]);
    }
    if has(Kind::Recoverer) {
        uses.extend(["Outcome", "Recoverer", "Recovery"]);
    }
    uses.sort_unstable();
    uses.dedup();
    lib = lib.replace("{Error}", &format!("{{{}}}", uses.join(", ")));
    if has(Kind::Monitor) {
        let _ = write!(
            lib,
            r##"
/// The `{name}` monitor's table in healer.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {{
    /// The file that must exist.
    path: String,
}}

/// CRITICAL while a file is missing.
pub struct {camel}Monitor(MonitorConfig);

impl Monitor for {camel}Monitor {{
    type Config = MonitorConfig;
    const NAME: &'static str = "{name}";
    const DESCRIPTION: &'static str = "CRITICAL while a file is missing";
    const SAMPLE_CONFIG: &'static str = "path = \"/var/run/app.ready\"  # the file that must exist";

    fn new(config: MonitorConfig) -> Result<Self, Error> {{
        Ok({camel}Monitor(config))
    }}

    async fn check(&mut self) -> Result<Observation, Error> {{
        let path = &self.0.path;
        Ok(match std::fs::metadata(path) {{
            Ok(_) => Observation::ok("present"),
            // Only "it is not there" is evidence; any other error means
            // the monitor could not look.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {{
                Observation::critical(format!("{{path}} is missing"))
            }}
            Err(err) => Observation::unknown(format!("{{path}}: {{err}}")),
        }})
    }}
}}
"##
        );
    }
    if has(Kind::Diagnoser) {
        let _ = write!(
            lib,
            r##"
/// The `{name}` diagnoser's table in healer.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnoserConfig {{}}

/// Names what the monitor saw: `{name}.missing` while it is CRITICAL.
pub struct {camel}Diagnoser;

impl Diagnoser for {camel}Diagnoser {{
    type Config = DiagnoserConfig;
    const NAME: &'static str = "{name}";
    const DESCRIPTION: &'static str = "{name}.missing while the monitor says CRITICAL";
    const SAMPLE_CONFIG: &'static str = "# no options";

    /// It reads only the observation: no hop to another thread.
    const BLOCKS: bool = false;

    fn new(_config: DiagnoserConfig) -> Result<Self, Error> {{
        Ok({camel}Diagnoser)
    }}

    fn diagnose(&mut self, latest: &Observation, _history: &[Observation]) -> Vec<Finding> {{
        if latest.status == Status::Critical {{
            vec![Finding::new("{name}.missing", Status::Critical, latest.summary.clone())]
        }} else {{
            Vec::new()
        }}
    }}
}}
"##
        );
    }
    if has(Kind::Recoverer) {
        let _ = write!(
            lib,
            r##"
/// The `{name}` recoverer's table in healer.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecovererConfig {{
    /// The file it writes back (from the config alone: never from a
    /// finding or a workflow's parameters, which come from outside).
    path: String,
}}

/// Writes a missing file back (empty).
pub struct {camel}Recoverer(RecovererConfig);

impl Recoverer for {camel}Recoverer {{
    type Config = RecovererConfig;
    const NAME: &'static str = "{name}";
    const DESCRIPTION: &'static str = "writes a missing file back";
    const SAMPLE_CONFIG: &'static str = "path = \"/var/run/app.ready\"  # the file it writes back";

    fn new(config: RecovererConfig) -> Result<Self, Error> {{
        Ok({camel}Recoverer(config))
    }}

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {{
        let path = &self.0.path;
        std::fs::write(path, b"").map_err(|err| format!("cannot write {{path}}: {{err}}"))?;
        Ok(Outcome::done(format!("wrote {{path}} back ({{}})", recovery.finding.kind)))
    }}
}}
"##
        );
    }
    let list = |kind: Kind, suffix: &str| {
        if has(kind) {
            format!("    {}s: [{camel}{suffix}],\n", suffix.to_ascii_lowercase())
        } else {
            String::new()
        }
    };
    let _ = write!(
        lib,
        "\nhealer_plugin_sdk::export_plugins! {{\n{}{}{}}}\n",
        list(Kind::Monitor, "Monitor"),
        list(Kind::Diagnoser, "Diagnoser"),
        list(Kind::Recoverer, "Recoverer"),
    );
    lib.push_str(&unit_test(name, kinds));
    lib
}

/// The package's own test: each plugin driven as healer drives it.
fn unit_test(name: &str, kinds: &[Kind]) -> String {
    let has = |kind| kinds.contains(&kind);
    let mut test = format!(
        r##"
#[cfg(test)]
mod tests {{
    use healer_plugin_sdk::testing::Host;
    {sdk_uses}use serde_json::json;

    /// A path of this test's own that does not exist yet.
    fn fresh_path(test: &str) -> String {{
        let dir = std::env::temp_dir().join(format!("healer-plugin-{name}-{{}}-{{test}}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir.display().to_string()
    }}

    #[test]
    fn the_package_loads_as_healer_loads_it() {{
        let host = Host::of(super::healer_plugin_header()).expect("the package loads");
        assert_eq!(host.plugins().len(), {count});
    }}
"##,
        count = kinds.len(),
        sdk_uses = match (has(Kind::Monitor), has(Kind::Recoverer)) {
            (_, true) => "use healer_plugin_sdk::{Finding, Recovery, Status};\n    ",
            (true, false) => "use healer_plugin_sdk::Status;\n    ",
            (false, false) => "",
        }
    );
    if has(Kind::Monitor) {
        let _ = write!(
            test,
            r##"
    #[test]
    fn the_monitor_says_critical_while_the_file_is_missing_and_ok_once_it_is_there() {{
        let host = Host::of(super::healer_plugin_header()).unwrap();
        let path = fresh_path("monitor");
        let config = json!({{ "path": path }});

        let missing = host.check("{name}", &config).unwrap();
        std::fs::write(&path, b"").unwrap();
        let present = host.check("{name}", &config).unwrap();
        let _ = std::fs::remove_file(&path);

        assert_eq!(missing.status, Status::Critical);
        assert_eq!(present.status, Status::Ok);
    }}
"##
        );
    }
    if has(Kind::Diagnoser) {
        let _ = write!(
            test,
            r##"
    #[test]
    fn the_diagnoser_names_a_critical_observation() {{
        let host = Host::of(super::healer_plugin_header()).unwrap();
        let latest = healer_plugin_sdk::Observation::critical("gone");

        let findings = host.diagnose("{name}", &json!({{}}), &latest, &[]).unwrap();

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, "{name}.missing");
    }}
"##
        );
    }
    if has(Kind::Recoverer) {
        let _ = write!(
            test,
            r##"
    #[test]
    fn the_recoverer_writes_the_file_back() {{
        let host = Host::of(super::healer_plugin_header()).unwrap();
        let path = fresh_path("recoverer");
        let recovery = Recovery {{
            target: "app".to_owned(),
            finding: Finding::new("{name}.missing", Status::Critical, "gone"),
            attempt: 1,
            params: json!({{}}),
            fence: None,
        }};

        let outcome = host.recover("{name}", &json!({{ "path": path }}), &recovery).unwrap();
        let written = std::path::Path::new(&path).exists();
        let _ = std::fs::remove_file(&path);

        assert!(written, "{{}}", outcome.summary);
    }}
"##
        );
    }
    test.push_str("}\n");
    test
}

fn readme(name: &str, kinds: &[Kind]) -> String {
    let mut text = format!(
        "# {name}: {}\n\nA healer plugin package written by `healer plugins new`. Build it with\n`cargo build --release`, check it with `healer plugins --check\ntarget/release/libhealer_plugin_{}.so`, and copy that file into healer's\n`plugins_dir`.\n",
        kinds
            .iter()
            .map(|kind| format!("`{name}` {}", format!("{kind:?}").to_lowercase()))
            .collect::<Vec<_>>()
            .join(", "),
        name.replace('-', "_")
    );
    for kind in kinds {
        let section = match kind {
            Kind::Monitor => format!(
                "\n## `{name}` monitor\n\n```toml\npath = \"/var/run/app.ready\"  # the file that must exist\n```\n\n| option | meaning | default |\n| --- | --- | --- |\n| `path` | the file that must exist | required |\n\n- `OK present` while `path` can be stat'ed.\n- `CRITICAL <path> is missing` while it does not exist.\n- `UNKNOWN <path>: <error>` when it cannot tell: no evidence either way.\n"
            ),
            Kind::Diagnoser => format!(
                "\n## `{name}` diagnoser\n\n```toml\n# no options\n```\n\nFindings: `{name}.missing` (CRITICAL) when the monitor says CRITICAL.\nIt reads no history.\n"
            ),
            Kind::Recoverer => format!(
                "\n## `{name}` recoverer\n\n```toml\npath = \"/var/run/app.ready\"  # the file it writes back\n```\n\n| option | meaning | default |\n| --- | --- | --- |\n| `path` | the file it writes back (empty) | required |\n\nWhat it writes comes from its config alone, never from a finding or a\nworkflow's parameters.\n"
            ),
        };
        text.push_str(&section);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_lowercase_with_single_dashes() {
        assert!(check_name("disk-probe").is_ok());
        for bad in [
            "",
            "Disk",
            "1disk",
            "disk--probe",
            "disk-",
            "disk_probe",
            "a/b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_becomes_its_types_name() {
        assert_eq!(camel("disk-probe"), "DiskProbe");
        assert_eq!(camel("probe"), "Probe");
    }

    #[test]
    fn the_library_exports_only_the_kinds_asked() {
        let lib = library("probe", &[Kind::Monitor, Kind::Recoverer]);
        assert!(lib.contains("    monitors: [ProbeMonitor],\n    recoverers: [ProbeRecoverer],\n}"));
        assert!(!lib.contains("Diagnoser for"));
        assert!(lib.contains(
            "use healer_plugin_sdk::{Error, Monitor, Observation, Outcome, Recoverer, Recovery};"
        ));
    }
}
