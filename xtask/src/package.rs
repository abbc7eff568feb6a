//! `cargo xtask package`: the client as an npm-style package, `target/npm/tabtunnel-client`,
//! and the example that embeds it, `target/npm/embed` (examples/embed plus a copy of the
//! package), which `relay --web-dir` serves and tsc type-checks.
//!
//! The package is the worker-based client the bundled page uses (web/wasm.js starts
//! web/client_worker.js, which runs wasm-bindgen's output), not the raw wasm API: an
//! embedder's main thread stays free during a bulk transfer, as the page's does. Its types
//! are hand-written (client-wasm/npm/index.d.ts), since wasm-bindgen's would describe the
//! raw API, which the package does not expose.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// The package's name on npm and its folder under `<target>/npm`.
pub const NAME: &str = "tabtunnel-client";

/// web/ modules the worker-based client is made of (wasm.js and what it imports, the worker
/// and what it imports).
const WEB_MODULES: &[&str] = &[
    "wasm.js",
    "client_worker.js",
    "worker_protocol.js",
    "wasm_support.js",
    "text.js",
];

/// The package's own files, in client-wasm/npm.
const OWN_FILES: &[&str] = &["index.js", "index.d.ts"];

/// wasm-bindgen's output (web/pkg), as the worker imports it.
const BINDGEN_FILES: &[&str] = &["client_wasm.js", "client_wasm_bg.wasm"];

/// The example's files, in examples/embed.
const EXAMPLE_FILES: &[&str] = &["index.html", "main.js", "style.css", "tsconfig.json"];

/// Writes the package and the example from web/ and web/pkg (built before), then checks
/// the package: every file `package.json` names is there, and each relative import of its
/// modules stays inside it. Returns the example's folder.
pub fn write(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let npm = target_dir.join("npm");
    let package = npm.join(NAME);
    let example = npm.join("embed");
    for dir in [&package, &example] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(package.join("pkg"))?;
    for file in WEB_MODULES {
        copy(&root.join("web").join(file), &package.join(file))?;
    }
    for file in OWN_FILES {
        copy(
            &root.join("client-wasm/npm").join(file),
            &package.join(file),
        )?;
    }
    for file in BINDGEN_FILES {
        let from = root.join("web/pkg").join(file);
        if !from.is_file() {
            bail!(
                "{} is missing: run `cargo xtask wasm` first",
                from.display()
            );
        }
        copy(&from, &package.join("pkg").join(file))?;
    }
    std::fs::write(
        package.join("package.json"),
        package_json(env!("CARGO_PKG_VERSION")),
    )?;
    check(&package)?;

    std::fs::create_dir_all(&example)?;
    for file in EXAMPLE_FILES {
        copy(&root.join("examples/embed").join(file), &example.join(file))?;
    }
    copy_dir(&package, &example.join(NAME))?;
    println!(
        "package: {}\nexample: {}",
        package.display(),
        example.display()
    );
    Ok(example)
}

/// The package's manifest: an ES module whose one entry point has types beside it.
fn package_json(version: &str) -> String {
    let mut files: Vec<String> = OWN_FILES
        .iter()
        .chain(WEB_MODULES)
        .map(|f| format!("\"{f}\""))
        .collect();
    files.extend(BINDGEN_FILES.iter().map(|f| format!("\"pkg/{f}\"")));
    format!(
        r#"{{
  "name": "{NAME}",
  "version": "{version}",
  "description": "tabtunnel's SSH client for a browser page: SSH port forwards through a tabtunnel relay, run in a worker.",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./index.js",
  "types": "./index.d.ts",
  "exports": {{
    ".": {{
      "types": "./index.d.ts",
      "default": "./index.js"
    }}
  }},
  "sideEffects": false,
  "files": [{}]
}}
"#,
        files.join(", ")
    )
}

/// Every file the manifest names exists, and the modules import only files inside the
/// package (a module that imports `/something` would work in the page and break here).
fn check(package: &Path) -> Result<()> {
    let manifest = std::fs::read_to_string(package.join("package.json"))?;
    for file in OWN_FILES
        .iter()
        .chain(WEB_MODULES)
        .map(|f| f.to_string())
        .chain(BINDGEN_FILES.iter().map(|f| format!("pkg/{f}")))
    {
        if !manifest.contains(&format!("\"{file}\"")) || !package.join(&file).is_file() {
            bail!("the package lacks {file}");
        }
    }
    for module in OWN_FILES
        .iter()
        .chain(WEB_MODULES)
        .filter(|f| f.ends_with(".js"))
    {
        let text = std::fs::read_to_string(package.join(module))?;
        for spec in imported(&text) {
            if !spec.starts_with("./") {
                bail!("{module} imports {spec:?}, which is not a file beside it in the package");
            }
            let dir = Path::new(module).parent().unwrap_or(Path::new(""));
            if !package.join(dir).join(&spec).is_file() {
                bail!("{module} imports {spec:?}, which the package lacks");
            }
        }
    }
    Ok(())
}

/// The specifiers a module imports (`from "x"`, `import("x")`, `import "x"`, `new URL("x",
/// import.meta.url)`): a line-based scan, enough for the package's own modules.
fn imported(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("//") || line.starts_with('*') || line.starts_with("/*") {
            continue;
        }
        for marker in ["from \"", "import(\"", "import \"", "new URL(\""] {
            let mut rest = line;
            while let Some(at) = rest.find(marker) {
                rest = &rest[at + marker.len()..];
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_string());
                    rest = &rest[end..];
                }
            }
        }
    }
    out
}

/// Type-checks the example against the package's types with tsc.
pub fn type_check(example: &Path, tsc: &Path) -> Result<()> {
    Cmd::new(tsc)
        .args(["--project", "tsconfig.json"])
        .current_dir(example)
        .run()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            copy(&entry.path(), &dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_static_and_dynamic_imports() {
        let text = "import { a } from \"./a.js\";\n// import(\"/not/this.js\")\nconst m = await import(\"./pkg/b.js\");\nconst u = new URL(\"./w.js\", import.meta.url);";
        assert_eq!(imported(text), ["./a.js", "./pkg/b.js", "./w.js"]);
    }

    fn repo_file(path: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The quoted names in `text` that follow each of `markers` (e.g. `"target"` after
    /// `required_string(&options, `).
    fn quoted_after(text: &str, markers: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for marker in markers {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(name) = rest.split('"').next().filter(|n| !n.is_empty()) {
                    out.push(name.to_string());
                }
            }
        }
        out
    }

    /// Each option client-wasm's `connect` reads is declared in the package's types.
    #[test]
    fn the_types_declare_every_connect_option() {
        let types = repo_file("client-wasm/npm/index.d.ts");
        let lib = repo_file("client-wasm/src/lib.rs");
        let options = quoted_after(
            &lib,
            &[
                "required_string(&options, \"",
                "optional_string(&options, \"",
                "optional_function(&options, \"",
                "Reflect::get(&options, &\"",
                "number(\"",
            ],
        );
        assert!(options.len() >= 15, "found only {options:?}");
        for option in options {
            assert!(
                types.contains(&format!("  {option}?:")) || types.contains(&format!("  {option}:")),
                "index.d.ts does not declare the connect option {option}"
            );
        }
    }

    /// Each error code of client-core and of the relay (proto) is in the types' unions.
    #[test]
    fn the_types_name_every_error_code() {
        let types = repo_file("client-wasm/npm/index.d.ts");
        let client = repo_file("client-core/src/error.rs");
        let proto = repo_file("proto/src/frame.rs");
        // client-core: the arms of `ClientError::code` (`... => "code",`).
        let code_fn = client
            .split("pub fn code")
            .nth(1)
            .expect("ClientError::code");
        let code_fn = code_fn.split("\n    }\n").next().unwrap_or(code_fn);
        let mut codes = quoted_after(code_fn, &["=> \""]);
        // proto: the `error_codes!` rows, `(1, Protocol, "protocol");`.
        for line in proto
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('(') && l.ends_with(");"))
        {
            codes.extend(quoted_after(line, &[", \""]));
        }
        assert!(codes.len() >= 25, "found only {codes:?}");
        for code in codes {
            assert!(
                types.contains(&format!("| \"{code}\"")),
                "index.d.ts does not name the error code {code}"
            );
        }
    }

    #[test]
    fn the_manifest_names_the_entry_types_and_every_file() {
        let json = package_json("1.2.3");
        assert!(json.contains("\"version\": \"1.2.3\""));
        assert!(json.contains("\"types\": \"./index.d.ts\""));
        assert!(json.contains("\"pkg/client_wasm_bg.wasm\""));
        assert!(json.contains("\"type\": \"module\""));
    }
}
