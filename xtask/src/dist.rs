//! `cargo xtask dist`: the release relay with the page built in, as one file,
//! `<target>/dist/relay` (or, `--static`, a static musl build, `<target>/dist/relay-static`);
//! and `cargo xtask image`: the container image around the static one
//! (deploy/container/Dockerfile, built with buildah), run once and probed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::cmd::{Cmd, probe};
use crate::setup;
use crate::tasks::{self, WasmNames};

/// The target of `--static`: musl's libc is linked in, so the binary needs no other file.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Whether `dist` builds against the system's glibc or links musl statically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linking {
    Dynamic,
    Static,
}

/// `cargo xtask dist`: the wasm client (size profile, wasm-opt), then the release relay,
/// which embeds web/ and web/pkg, copied to `<target>/dist`. Returns the copy's path.
pub fn dist(root: &Path, linking: Linking) -> Result<PathBuf> {
    tasks::wasm(root, WasmNames::Strip)?;
    let target_dir = tasks::target_dir(root)?;
    let mut build = tasks::cargo(root)?.args([
        "build",
        "--release",
        "-p",
        "tabtunnel-relay",
        "--bin",
        "relay",
    ]);
    let (built, name) = match linking {
        Linking::Dynamic => (target_dir.join("release/relay"), "relay"),
        Linking::Static => {
            setup::musl(MUSL_TARGET)?;
            // ring's C code, compiled for musl by Debian's musl-tools.
            build = build
                .args(["--target", MUSL_TARGET])
                .env("CC_x86_64_unknown_linux_musl", "musl-gcc");
            (
                target_dir.join(MUSL_TARGET).join("release/relay"),
                "relay-static",
            )
        }
    };
    build.run()?;
    let dist = target_dir.join("dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let copy = dist.join(name);
    // Not over the old file in place: a relay running from it would see its text change.
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    if linking == Linking::Static {
        check_static(&copy)?;
    }
    report(&copy, &root.join("web/pkg/client_wasm_bg.wasm"))?;
    Ok(copy)
}

/// `ldd` must find nothing to load: the file runs in an empty image. (Rust's musl target
/// links a static PIE, which glibc's ldd calls "statically linked"; a non-PIE static
/// binary is "not a dynamic executable".)
fn check_static(binary: &Path) -> Result<()> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts = ["not a dynamic executable", "statically linked"];
    let Some(verdict) = verdicts.iter().find(|v| said.contains(*v)) else {
        bail!("{} is not static; ldd says:\n{said}", binary.display());
    };
    println!("ok: ldd {}: {verdict}", binary.display());
    Ok(())
}

/// Prints the binary's size and SHA-256 and the wasm client's size, plain and gzipped.
fn report(binary: &Path, wasm: &Path) -> Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let wasm_bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&wasm_bytes)?;
    let gzipped = gzip.finish()?.len();
    println!();
    println!(
        "{}: {:.1} MiB ({} bytes)",
        binary.display(),
        mib(bytes.len()),
        bytes.len()
    );
    println!("sha256: {hash}");
    println!(
        "wasm client (embedded): {:.1} KiB, gzip -9 {:.1} KiB",
        kib(wasm_bytes.len()),
        kib(gzipped)
    );
    Ok(())
}

fn mib(n: usize) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

fn kib(n: usize) -> f64 {
    n as f64 / 1024.0
}

/// The image's name in buildah's local storage.
const IMAGE: &str = "localhost/tabtunnel-relay:latest";

/// buildah's storage and isolation: vfs needs no overlay support from the kernel and chroot
/// no user namespaces, so the build works inside a container too. FROM scratch needs no
/// registry.
const BUILDAH_STORAGE: &[&str] = &["--storage-driver", "vfs"];

/// How long the image's relay has to answer.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// `cargo xtask image`: `dist --static`, the image from deploy/container/Dockerfile, then
/// one run of it (the relay in demo mode on a loopback port) probed for `/healthz` and
/// the page.
pub fn image(root: &Path) -> Result<()> {
    let started = Instant::now();
    let binary = dist(root, Linking::Static)?;
    setup::buildah()?;
    let context = binary.parent().context("the dist folder")?;
    Cmd::new("buildah")
        .args(BUILDAH_STORAGE)
        .args(["build", "--isolation", "chroot", "--layers=false", "-f"])
        .arg(root.join("deploy/container/Dockerfile"))
        .args(["-t", IMAGE])
        .arg(context)
        .run()?;
    let built = started.elapsed();
    // The image this build replaced under the same tag: without this, each run would leave
    // one more copy of the relay in buildah's storage.
    Cmd::new("buildah")
        .args(BUILDAH_STORAGE)
        .args(["rmi", "--prune"])
        .run()
        .context("removing the images this build replaced")?;
    run_and_probe()?;
    println!(
        "\nimage {IMAGE}: built in {:.0} s (dist --static included), ran and answered; total {:.0} s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A working container of the image, removed on drop.
#[derive(Debug)]
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Cmd::new("buildah")
            .args(BUILDAH_STORAGE)
            .args(["rm", &self.0])
            .run();
    }
}

/// Runs the image's relay (`--demo`, so it needs no SSH server, on a free loopback port,
/// as the image's numeric user) and checks `/healthz` and the page answer.
fn run_and_probe() -> Result<()> {
    let name = probe(
        "buildah",
        &["--storage-driver", "vfs", "from", "--pull-never", IMAGE],
    )
    .context("buildah from the image failed")?;
    let container = Container(name);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The image's entrypoint with other arguments: `buildah run` takes the command whole.
    let mut relay = Cmd::new("buildah")
        .args(BUILDAH_STORAGE)
        .args(["run", "--isolation", "chroot", "--network", "host"])
        .arg(&container.0)
        .args(["--", "/relay", "--demo", "--listen", &listen])
        .spawn_group()?;
    let result = probe_relay(&listen);
    relay.stop();
    result
}

/// `/healthz` answers `ok`, and `/` is the page, gzipped, within [`PROBE_DEADLINE`].
fn probe_relay(listen: &str) -> Result<()> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    let health = loop {
        match http_get(listen, "/healthz", "") {
            Ok(answer) => break answer,
            Err(err) if Instant::now() > deadline => {
                bail!(
                    "the image's relay did not answer on {listen} within {PROBE_DEADLINE:?}: {err:#}"
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    if !(health.starts_with("HTTP/1.") && health.contains(" 200 ") && health.ends_with("ok\n")) {
        bail!("/healthz of the image's relay answered:\n{health}");
    }
    println!("ok: the image's relay answers /healthz");
    let page = http_get(listen, "/", "Accept-Encoding: gzip\r\n")?;
    let head = page
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for wanted in [
        " 200 ",
        "content-type: text/html",
        "content-encoding: gzip",
        "etag: \"",
    ] {
        if !head.contains(wanted) {
            bail!("the page from the image's relay lacks {wanted:?}:\n{head}");
        }
    }
    println!("ok: the image's relay serves the page (gzip, with an ETag)");
    Ok(())
}

/// `GET path` over HTTP/1.0 with `extra` headers: the whole answer, as text where it is.
fn http_get(addr: &str, path: &str, extra: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
