//! The Kubernetes example (deploy/kubernetes/) checked against the Kubernetes API's schemas
//! by PyPI's `kubernetes-validate`, which carries the schemas of every release it knows:
//! installed once into .tools (pinned, project-local, like tsc), it fetches nothing when
//! it runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, probe, quote_path};

/// kubernetes-validate's version; its default schemas are those of the Kubernetes release
/// of the same number.
pub const VALIDATOR_VERSION: &str = "1.37.0";

/// Where the example lives, from the repository root.
const EXAMPLE: &str = "deploy/kubernetes";

/// Finds or installs kubernetes-validate (`pip install --target`) at exactly
/// [`VALIDATOR_VERSION`]; returns the folder to put on PYTHONPATH.
pub fn validator(root: &Path) -> Result<PathBuf> {
    let rel_root = PathBuf::from(".tools").join(format!("kubernetes-validate-{VALIDATOR_VERSION}"));
    let local = root.join(&rel_root);
    if installed(&local) {
        println!(
            "ok: using {} (kubernetes-validate {VALIDATOR_VERSION}, project-local)",
            local.display()
        );
        return Ok(local);
    }
    if probe("python3", &["-m", "pip", "--version"]).is_none() {
        bail!(
            "python3 -m pip is missing: install Debian's python3-pip (cargo xtask setup does, as root)"
        );
    }
    println!(
        "installing kubernetes-validate {VALIDATOR_VERSION} (PyPI) into {}",
        quote_path(&rel_root)
    );
    Cmd::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--upgrade",
            "--target",
        ])
        .arg(&rel_root)
        .arg(format!("kubernetes-validate=={VALIDATOR_VERSION}"))
        .current_dir(root)
        .run()?;
    if !installed(&local) {
        bail!(
            "after installing, {} does not hold kubernetes-validate {VALIDATOR_VERSION}",
            local.display()
        );
    }
    Ok(local)
}

/// Whether `dir` holds the pinned version (its own `--version` says so).
fn installed(dir: &Path) -> bool {
    let out = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .env("PYTHONPATH", dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    out.is_ok_and(|out| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == VALIDATOR_VERSION
    })
}

/// Validates every manifest of the example strictly (no property the schema lacks).
pub fn check(root: &Path, validator: &Path) -> Result<()> {
    let dir = root.join(EXAMPLE);
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    manifests.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
    manifests.sort();
    if manifests.is_empty() {
        bail!("{} has no .yaml manifests", dir.display());
    }
    Cmd::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(&manifests)
        .env("PYTHONPATH", validator)
        .current_dir(root)
        .run()
}
