//! `cargo xtask setup`: install whatever is missing, idempotently.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, probe, quote_path};
use crate::e2e::{E2E_PASSWORD, E2E_SHELL, E2E_USER};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages the whole project needs (build, sshd tests, browser tests).
pub const APT_PACKAGES: &[&str] = &[
    "clang",
    "chromium",
    "chromium-driver",
    "openssh-server",
    "openssh-client",
    "openssl",
    // A real reverse proxy for the trusted-proxies test.
    "nginx-light",
    // `node --test` runs the tests of the page's DOM-free modules (web/test/).
    "nodejs",
    // `systemd-analyze verify` checks the relay's unit (deploy/systemd).
    "systemd",
];

/// Debian packages the wasm build needs (ring's C code for wasm32 needs clang; npm, see
/// [`npm`], installs wasm-opt).
pub const WASM_APT_PACKAGES: &[&str] = &["clang", "nodejs"];

/// binaryen's wasm-opt, from npm: Debian's binaryen is years older than what wasm-bindgen's
/// output needs. Pinned like wasm-bindgen, installed project-locally.
pub const BINARYEN_VERSION: &str = "132.0.0";

/// TypeScript's tsc, from npm, type-checks the embedding example against the client
/// package's types. Pinned and project-local, like binaryen.
pub const TYPESCRIPT_VERSION: &str = "5.9.3";

/// The tools that turn the compiled client into web/pkg.
#[derive(Debug)]
pub struct WasmTools {
    pub wasm_bindgen: PathBuf,
    pub wasm_opt: PathBuf,
}

/// How long to keep retrying apt-get while another process holds the dpkg/apt lock.
const APT_LOCK_DEADLINE: Duration = Duration::from_secs(5 * 60);
const APT_LOCK_RETRY: Duration = Duration::from_secs(5);

/// Everything: wasm target, apt packages, /run/sshd, the e2e user, wasm-bindgen-cli and
/// wasm-opt.
pub fn all(root: &Path) -> Result<WasmTools> {
    let root_user = is_root();
    wasm_target()?;
    let mut need_sudo = Vec::new();
    apt_packages(APT_PACKAGES, root_user, &mut need_sudo)?;
    npm(root_user, &mut need_sudo)?;
    pip(root_user, &mut need_sudo)?;
    run_sshd_dir(root_user)?;
    e2e_user(root_user, &mut need_sudo)?;
    fail_if_sudo_needed(&need_sudo)?;
    tsc(root)?;
    crate::kubernetes::validator(root)?;
    wasm_tools(root)
}

/// Only what `cargo xtask wasm` needs: wasm target, clang, npm, wasm-bindgen-cli, wasm-opt.
pub fn wasm_only(root: &Path) -> Result<WasmTools> {
    wasm_target()?;
    let root_user = is_root();
    let mut need_sudo = Vec::new();
    apt_packages(WASM_APT_PACKAGES, root_user, &mut need_sudo)?;
    npm(root_user, &mut need_sudo)?;
    fail_if_sudo_needed(&need_sudo)?;
    wasm_tools(root)
}

fn wasm_tools(root: &Path) -> Result<WasmTools> {
    Ok(WasmTools {
        wasm_bindgen: wasm_bindgen(root)?,
        wasm_opt: wasm_opt(root)?,
    })
}

fn is_root() -> bool {
    probe("id", &["-u"]).as_deref() == Some("0")
}

fn fail_if_sudo_needed(cmds: &[String]) -> Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let mut msg = String::from(
        "setup needs root for the steps above; run these commands, then run `cargo xtask setup` again:\n",
    );
    for c in cmds {
        msg.push_str("    ");
        msg.push_str(c);
        msg.push('\n');
    }
    bail!(msg.trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------------
// rustup target

pub fn wasm_target() -> Result<()> {
    rust_target(WASM_TARGET)
}

/// Installs the std of rust target `target` (through rustup) if it is missing.
pub fn rust_target(target: &str) -> Result<()> {
    if let Some(list) = probe("rustup", &["target", "list", "--installed"]) {
        if list.lines().any(|l| l.trim() == target) {
            println!("ok: rust target {target} is installed");
            return Ok(());
        }
        return Cmd::new("rustup").args(["target", "add", target]).run();
    }
    // No rustup: accept a toolchain whose sysroot already has the target's std.
    if let Some(sysroot) = probe("rustc", &["--print", "sysroot"])
        && Path::new(&sysroot)
            .join("lib/rustlib")
            .join(target)
            .is_dir()
    {
        println!("ok: rust target {target} is in {sysroot} (no rustup)");
        return Ok(());
    }
    bail!(
        "rustup was not found and the toolchain has no {target} std; \
         install rustup (https://rustup.rs) and run `rustup target add {target}`"
    )
}

/// What `cargo xtask dist --static` needs: the musl `target`, and Debian's musl-tools
/// (musl-gcc compiles ring's C code for it).
pub fn musl(target: &str) -> Result<()> {
    rust_target(target)?;
    let mut need_sudo = Vec::new();
    apt_packages(&["musl-tools"], is_root(), &mut need_sudo)?;
    fail_if_sudo_needed(&need_sudo)
}

/// What `cargo xtask image` needs besides the static relay: Debian's buildah.
pub fn buildah() -> Result<()> {
    let mut need_sudo = Vec::new();
    apt_packages(&["buildah"], is_root(), &mut need_sudo)?;
    fail_if_sudo_needed(&need_sudo)
}

// ---------------------------------------------------------------------------------------------
// apt packages

fn dpkg_installed(pkg: &str) -> bool {
    probe("dpkg-query", &["-W", "-f", "${Status}", pkg]).as_deref() == Some("install ok installed")
}

fn apt_packages(pkgs: &[&str], root_user: bool, need_sudo: &mut Vec<String>) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("ok: Debian packages installed: {}", pkgs.join(" "));
        return Ok(());
    }
    println!("missing Debian packages: {}", missing.join(" "));
    if !root_user {
        need_sudo.push("sudo apt-get update".to_owned());
        need_sudo.push(format!(
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        ));
        return Ok(());
    }
    let deadline = Instant::now() + APT_LOCK_DEADLINE;
    apt_get(&["update"], deadline)?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args, deadline)?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these packages are still not installed: {}",
            still.join(" ")
        );
    }
    println!("installed Debian packages: {}", missing.join(" "));
    Ok(())
}

/// Runs apt-get non-interactively; while another process holds the dpkg/apt lock, waits and
/// retries until `deadline`.
fn apt_get(args: &[&str], deadline: Instant) -> Result<()> {
    loop {
        let cmd = Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args);
        let shown = cmd.shown().to_owned();
        let (status, stderr) = cmd.status_keep_stderr()?;
        if status.success() {
            return Ok(());
        }
        if is_lock_error(&stderr) {
            if Instant::now() < deadline {
                println!(
                    "the dpkg/apt lock is held by another process; retrying in {} s (giving up {} s from now)",
                    APT_LOCK_RETRY.as_secs(),
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                );
                std::thread::sleep(APT_LOCK_RETRY);
                continue;
            }
            bail!(
                "`{shown}` failed: the dpkg/apt lock was still held after {} s",
                APT_LOCK_DEADLINE.as_secs()
            );
        }
        bail!("`{shown}` failed ({status})");
    }
}

fn is_lock_error(stderr: &str) -> bool {
    [
        "Could not get lock",
        "Unable to acquire the dpkg frontend lock",
        "Unable to lock",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// npm comes with NodeSource's nodejs but is its own package in Debian (and conflicts with
/// NodeSource's), so it is installed only when no `npm` command exists.
fn npm(root_user: bool, need_sudo: &mut Vec<String>) -> Result<()> {
    if probe("npm", &["--version"]).is_some() {
        println!("ok: npm is installed");
        return Ok(());
    }
    apt_packages(&["npm"], root_user, need_sudo)
}

/// pip installs kubernetes-validate (see `kubernetes`): Debian's python3-pip, only when no
/// `python3 -m pip` works (a Python of its own may bring pip).
fn pip(root_user: bool, need_sudo: &mut Vec<String>) -> Result<()> {
    if probe("python3", &["-m", "pip", "--version"]).is_some() {
        println!("ok: pip is installed");
        return Ok(());
    }
    apt_packages(&["python3-pip"], root_user, need_sudo)
}

// ---------------------------------------------------------------------------------------------
// sshd and the e2e user

fn run_sshd_dir(root_user: bool) -> Result<()> {
    let dir = Path::new("/run/sshd");
    if root_user {
        // Always run it (cheap, and /run is emptied on reboot).
        Cmd::new("mkdir").args(["-p", "/run/sshd"]).run()
    } else {
        // An sshd started by a non-root user does not chroot, so it does not need the dir.
        if !dir.is_dir() {
            println!(
                "note: /run/sshd is missing; only an sshd run as root needs it (`sudo mkdir -p /run/sshd`)"
            );
        }
        Ok(())
    }
}

fn e2e_user(root_user: bool, need_sudo: &mut Vec<String>) -> Result<()> {
    let exists = probe("id", &[E2E_USER]).is_some();
    let useradd = [
        "useradd",
        "--system",
        "--no-create-home",
        "--shell",
        E2E_SHELL,
        E2E_USER,
    ];
    let chpasswd_input = format!("{E2E_USER}:{E2E_PASSWORD}");
    if !root_user {
        if exists {
            println!(
                "ok: user {E2E_USER} exists (not root: cannot reset its password; if the sshd \
                 tests cannot log in, run `echo '{chpasswd_input}' | sudo chpasswd`)"
            );
        } else {
            need_sudo.push(format!("sudo {}", useradd.join(" ")));
            need_sudo.push(format!("echo '{chpasswd_input}' | sudo chpasswd"));
        }
        return Ok(());
    }
    if exists {
        println!("ok: user {E2E_USER} exists");
    } else {
        Cmd::new(useradd[0]).args(&useradd[1..]).run()?;
        println!("created system user {E2E_USER} (shell {E2E_SHELL}, no home)");
    }
    Cmd::new("chpasswd")
        .stdin_data(
            format!("{chpasswd_input}\n"),
            format!("echo '{chpasswd_input}'"),
        )
        .run()?;
    println!("set the password of {E2E_USER}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// wasm-bindgen-cli

/// The version of `name` recorded in a Cargo.lock (exactly one must be present).
pub fn locked_version(lock: &str, name: &str) -> Result<String> {
    let mut versions = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut pkg_name = None;
        let mut pkg_version = None;
        for line in block.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "name" => pkg_name = Some(value),
                "version" => pkg_version = Some(value),
                _ => {}
            }
        }
        if pkg_name == Some(name)
            && let Some(v) = pkg_version
        {
            versions.push(v.to_owned());
        }
    }
    match versions.as_slice() {
        [] => bail!("Cargo.lock has no `{name}` package; is it a dependency of client-wasm?"),
        [v] => Ok(v.clone()),
        _ => bail!(
            "Cargo.lock has several `{name}` versions ({}); pin one with `=` in the workspace",
            versions.join(", ")
        ),
    }
}

/// Whether `bin --version` prints exactly `wasm-bindgen <version>`.
fn wasm_bindgen_is(bin: &Path, version: &str) -> Option<bool> {
    let out = probe(bin, &["--version"])?;
    Some(out == format!("wasm-bindgen {version}"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Finds or installs wasm-bindgen-cli at exactly the version in Cargo.lock; returns its path.
pub fn wasm_bindgen(root: &Path) -> Result<PathBuf> {
    let lock_path = root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).with_context(|| {
        format!(
            "could not read {} (run `cargo generate-lockfile`)",
            lock_path.display()
        )
    })?;
    let version = locked_version(&lock, "wasm-bindgen")?;

    let rel_root = PathBuf::from(".tools").join(format!("wasm-bindgen-{version}"));
    let local = root.join(&rel_root).join("bin/wasm-bindgen");
    if wasm_bindgen_is(&local, &version) == Some(true) {
        println!("ok: using {} ({version}, project-local)", local.display());
        return Ok(local);
    }
    if let Some(on_path) = find_on_path("wasm-bindgen") {
        match wasm_bindgen_is(&on_path, &version) {
            Some(true) => {
                println!("ok: using {} ({version}, from PATH)", on_path.display());
                return Ok(on_path);
            }
            _ => println!(
                "note: ignoring {} on PATH: it is not wasm-bindgen {version}",
                on_path.display()
            ),
        }
    }
    println!(
        "installing wasm-bindgen-cli {version} into {} (takes several minutes)",
        quote_path(&rel_root)
    );
    // Not `--locked`: wasm-bindgen-cli's lock file names a crate version the registry lacks.
    // `--force`: a half-finished earlier install may have left a stale record behind.
    Cmd::new("cargo")
        .args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            &version,
            "--force",
            "--root",
        ])
        .arg(&rel_root)
        .current_dir(root)
        .run()?;
    if wasm_bindgen_is(&local, &version) != Some(true) {
        bail!(
            "after installing, {} --version does not print wasm-bindgen {version}",
            local.display()
        );
    }
    println!(
        "ok: using {} ({version}, project-local, just installed)",
        local.display()
    );
    Ok(local)
}

// ---------------------------------------------------------------------------------------------
// wasm-opt (binaryen from npm)

/// Whether `bin --version` names binaryen's major version `BINARYEN_VERSION` starts with
/// (`wasm-opt version 132 (version_132)`).
fn wasm_opt_is_pinned(bin: &Path) -> Option<bool> {
    let out = probe(bin, &["--version"])?;
    let major = BINARYEN_VERSION
        .split('.')
        .next()
        .unwrap_or(BINARYEN_VERSION);
    Some(out.split_whitespace().nth(2) == Some(major))
}

/// Finds or installs wasm-opt from npm's `binaryen` at exactly `BINARYEN_VERSION`; returns its
/// path.
pub fn wasm_opt(root: &Path) -> Result<PathBuf> {
    let rel_root = PathBuf::from(".tools").join(format!("binaryen-{BINARYEN_VERSION}"));
    let local = root.join(&rel_root).join("node_modules/.bin/wasm-opt");
    if wasm_opt_is_pinned(&local) == Some(true) {
        println!(
            "ok: using {} (binaryen {BINARYEN_VERSION}, project-local)",
            local.display()
        );
        return Ok(local);
    }
    println!(
        "installing binaryen {BINARYEN_VERSION} (npm) into {}",
        quote_path(&rel_root)
    );
    Cmd::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&rel_root)
        .arg(format!("binaryen@{BINARYEN_VERSION}"))
        .current_dir(root)
        .run()?;
    if wasm_opt_is_pinned(&local) != Some(true) {
        bail!(
            "after installing, {} --version does not name binaryen {BINARYEN_VERSION}",
            local.display()
        );
    }
    println!(
        "ok: using {} (binaryen {BINARYEN_VERSION}, project-local, just installed)",
        local.display()
    );
    Ok(local)
}

// ---------------------------------------------------------------------------------------------
// tsc (typescript from npm)

/// Finds or installs tsc from npm's `typescript` at exactly `TYPESCRIPT_VERSION`; returns its
/// path.
pub fn tsc(root: &Path) -> Result<PathBuf> {
    let rel_root = PathBuf::from(".tools").join(format!("typescript-{TYPESCRIPT_VERSION}"));
    let local = root.join(&rel_root).join("node_modules/.bin/tsc");
    let pinned = |bin: &Path| {
        probe(bin, &["--version"]).map(|v| v.trim() == format!("Version {TYPESCRIPT_VERSION}"))
    };
    if pinned(&local) == Some(true) {
        println!(
            "ok: using {} (typescript {TYPESCRIPT_VERSION}, project-local)",
            local.display()
        );
        return Ok(local);
    }
    println!(
        "installing typescript {TYPESCRIPT_VERSION} (npm) into {}",
        quote_path(&rel_root)
    );
    Cmd::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&rel_root)
        .arg(format!("typescript@{TYPESCRIPT_VERSION}"))
        .current_dir(root)
        .run()?;
    if pinned(&local) != Some(true) {
        bail!(
            "after installing, {} --version does not name typescript {TYPESCRIPT_VERSION}",
            local.display()
        );
    }
    println!(
        "ok: using {} (typescript {TYPESCRIPT_VERSION}, project-local, just installed)",
        local.display()
    );
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "wasm-bindgen-macro"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "cfg-if",
]
"#;

    #[test]
    fn finds_the_locked_version() {
        assert_eq!(locked_version(LOCK, "wasm-bindgen").unwrap(), "0.2.130");
    }

    #[test]
    fn absent_package_is_an_error() {
        assert!(locked_version(LOCK, "wasm-bindgen-cli").is_err());
    }

    #[test]
    fn two_versions_are_an_error() {
        let lock = format!("{LOCK}\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.100\"\n");
        assert!(locked_version(&lock, "wasm-bindgen").is_err());
    }

    #[test]
    fn lock_errors_are_recognised() {
        assert!(is_lock_error(
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)"
        ));
        assert!(!is_lock_error("E: Unable to locate package foo"));
    }
}
