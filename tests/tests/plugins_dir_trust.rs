//! Where any local user could put code in healer's way, `healer plugins`
//! refuses it with one line naming the path and what would be right: a
//! sticky world-writable plugins directory (like `/tmp`), and a symlink
//! another user made, though it leads to a root-owned package.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use healer_e2e::{package_file, plugins_dir_with, run_healer, stdout};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_sticky_world_writable_plugins_directory_is_refused() {
    let dir = plugins_dir_with(&["healer-plugin-example"]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let said = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );

    assert!(!output.status.success(), "{said}");
    let lines: Vec<&str> = said
        .lines()
        .filter(|line| line.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert_eq!(lines.len(), 1, "one line names the directory: {said}");
    assert!(
        lines[0].contains("writable by group and others (mode 1777; the sticky bit still lets them add a package)")
            && lines[0].contains("(chmod go-w)"),
        "{said}"
    );
    assert!(
        !said.contains("healer-plugin-example "),
        "nothing loaded: {said}"
    );
}

#[test]
fn a_symlink_another_user_made_to_a_root_owned_package_is_refused() {
    let dir = plugins_dir_with(&["healer-plugin-example"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let fixture = elsewhere.path().join("libhealer_plugin_process.so");
    std::fs::copy(package_file("healer-plugin-process"), &fixture).unwrap();
    let link = dir.path().join("0.so");
    std::os::unix::fs::symlink(&fixture, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();

    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let listing = stdout(&output);

    assert_eq!(output.status.code(), Some(1), "{listing}");
    let lines: Vec<&str> = listing.lines().filter(|l| l.contains("0.so")).collect();
    assert_eq!(lines.len(), 1, "one line for 0.so: {listing}");
    assert!(
        lines[0].contains("the symlink itself is owned by uid 65534")
            && lines[0].contains("(chown it to root, or remove it)"),
        "{listing}"
    );
    assert!(listing.contains("healer-plugin-example"), "{listing}");
    assert!(!listing.contains("healer-plugin-process"), "{listing}");
}
