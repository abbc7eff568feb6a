//! Captures the git revision the relay is built from, for `relay --version`. A build
//! from a source tarball (no `.git`, or no `git`) says "unknown revision" instead.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let revision = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            // Tracked files changed since that commit: the binary is not that revision.
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty());
            format!("rev {rev}{}", if dirty { ", dirty" } else { "" })
        }
        _ => "unknown revision".to_owned(),
    };
    println!("cargo:rustc-env=TABTUNNEL_GIT_REVISION={revision}");
    // A commit moves HEAD's log; staging or editing tracked files moves the index.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for file in ["HEAD", "index", "logs/HEAD"] {
            let path = Path::new(&git_dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
