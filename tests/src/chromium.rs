//! Headless Chromium (Debian's package) on a page healer serves: its DOM
//! once loaded, or a screenshot, isolated from the network and bounded.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one headless Chromium run may take.
const CHROMIUM_WITHIN: Duration = Duration::from_secs(60);

/// Loads `url` in a fresh headless Chromium (Debian's `chromium`) with a
/// window of `(width, height)` and returns the DOM once the page has
/// loaded (`--dump-dom`).
pub fn chromium_dom(url: &str, window: (u32, u32)) -> String {
    let stdout = headless_chromium(url, window, "--dump-dom");
    String::from_utf8_lossy(&stdout).into_owned()
}

/// Loads `url` in a fresh headless Chromium with a window of `(width,
/// height)` and writes a screenshot of it to `png`.
pub fn chromium_screenshot(url: &str, window: (u32, u32), png: &Path) {
    headless_chromium(url, window, &format!("--screenshot={}", png.display()));
}

/// Runs headless Chromium once on `url` with `action`, in its own process
/// group, with a new profile and nothing of its own on the network (no
/// background or component traffic, and no name but 127.0.0.1 resolves);
/// the group is killed after [`CHROMIUM_WITHIN`] and when it is done.
/// Panics (never skips) when Chromium is not installed or fails. Its
/// stdout.
fn headless_chromium(url: &str, (width, height): (u32, u32), action: &str) -> Vec<u8> {
    use std::os::unix::process::CommandExt;
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr_file = dir.path().join("chromium.stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--window-size={width},{height}"))
        .arg(action)
        .arg(url)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("Chromium starts");
    let group = child.id().to_string();
    let mut pipe = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    });
    let kill_group = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > CHROMIUM_WITHIN {
            kill_group();
            let _ = child.wait();
            panic!(
                "Chromium did not finish {url} within {CHROMIUM_WITHIN:?}; its stderr:\n{}",
                std::fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Helpers it leaves behind go with the group.
    kill_group();
    let stdout = out.join().unwrap_or_default();
    assert!(
        status.success(),
        "Chromium failed on {url} ({status}); its stderr:\n{}",
        std::fs::read_to_string(&stderr_file).unwrap_or_default()
    );
    stdout
}
