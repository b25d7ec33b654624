//! Programs some tests drive (tmux, Chromium), installed from Debian's
//! packages when missing, so that `cargo test` passes on a fresh machine.
//! Installing needs root (as on CI) or password-less sudo.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// One install at a time: apt holds a lock, and tests run in parallel.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The path of `program`, installing Debian's `package` first if no
/// `program` is on the PATH (or at `program`, if it is a path).
pub fn ensure(program: &str, package: &str) -> String {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find(program) {
        return found;
    }
    eprintln!("{program} is missing: installing Debian's {package}");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd.status().is_ok_and(|s| s.success())
    };
    let installed = apt(&["install", "-y", "-q", package])
        || (apt(&["update", "-q"]) && apt(&["install", "-y", "-q", package]));
    assert!(
        installed,
        "cannot install {package} (needs root or password-less sudo): install it and run the tests again"
    );
    find(program).unwrap_or_else(|| panic!("{package} installed, but no {program} found"))
}

fn find(program: &str) -> Option<String> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.to_string());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}
