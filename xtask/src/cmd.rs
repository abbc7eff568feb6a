//! Running external commands: every command is printed, exactly, before it runs.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// A command that prints itself (shell-quoted, with its environment overrides) before running.
/// Its stdin is always `/dev/null` unless data is given with [`Cmd::stdin_data`].
#[derive(Debug)]
pub struct Cmd {
    inner: Command,
    shown: String,
    stdin: Option<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Cmd {
            inner: Command::new(program),
            shown: quote(program),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&quote(arg));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets an environment variable for the child; it is shown as a `KEY=value` prefix.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        self.shown = format!("{key}={} {}", quote(value), self.shown);
        self.inner.env(key, value);
        self
    }

    /// Removes an environment variable from the child's environment; shown as `-u KEY`.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.shown = format!("-u {key} {}", self.shown);
        self.inner.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.inner.current_dir(dir);
        self
    }

    /// Feeds `data` to the child's stdin; the command is shown as `<shown> | command`.
    pub fn stdin_data(mut self, data: String, shown: String) -> Self {
        self.shown = format!("{shown} | {}", self.shown);
        self.stdin = Some((data, shown));
        self
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn announce(&self) {
        println!("$ {}", self.shown);
        let _ = std::io::stdout().flush();
    }

    fn spawn(&mut self, stderr: Stdio) -> Result<std::process::Child> {
        self.announce();
        self.inner.stderr(stderr);
        self.inner.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self
            .inner
            .spawn()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if let Some((data, _)) = self.stdin.take() {
            let mut stdin = child.stdin.take().context("child stdin")?;
            stdin
                .write_all(data.as_bytes())
                .context("writing to child stdin")?;
        }
        Ok(child)
    }

    /// Runs to completion and returns the exit status.
    pub fn status(mut self) -> Result<ExitStatus> {
        let mut child = self.spawn(Stdio::inherit())?;
        child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.shown))
    }

    /// Runs to completion; an unsuccessful exit is an error naming the command.
    pub fn run(self) -> Result<()> {
        let shown = self.shown.clone();
        let status = self.status()?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }

    /// Runs to completion, copying stderr through while also keeping it, so that the caller
    /// can inspect error messages.
    pub fn status_keep_stderr(self) -> Result<(ExitStatus, String)> {
        self.status_keep_stderr_showing(|_| true)
    }

    /// Like [`Cmd::status_keep_stderr`], but copies through only the lines `show` accepts
    /// (all lines are kept).
    pub fn status_keep_stderr_showing(
        mut self,
        show: impl Fn(&str) -> bool,
    ) -> Result<(ExitStatus, String)> {
        let mut child = self.spawn(Stdio::piped())?;
        let pipe = child.stderr.take().context("child stderr")?;
        let mut kept = String::new();
        for line in BufReader::new(pipe).lines() {
            let line = line.unwrap_or_default();
            if show(&line) {
                eprintln!("{line}");
            }
            kept.push_str(&line);
            kept.push('\n');
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.shown))?;
        Ok((status, kept))
    }

    /// Starts the command in a process group of its own (stdin `/dev/null`), so that
    /// [`Running::stop`] ends it with whatever it started.
    pub fn spawn_group(mut self) -> Result<Running> {
        use std::os::unix::process::CommandExt;
        self.announce();
        self.inner.stdin(Stdio::null()).process_group(0);
        let child = self
            .inner
            .spawn()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        Ok(Running {
            child,
            shown: self.shown,
        })
    }

    /// Replaces this process with the command (Unix `exec`), so the command's exit status
    /// becomes ours and Ctrl-C reaches it directly. Elsewhere: run it and exit with its code.
    pub fn exec(mut self) -> Result<std::convert::Infallible> {
        self.announce();
        self.inner.stdin(Stdio::inherit());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            let err = self.inner.exec();
            Err(err).with_context(|| format!("could not exec `{}`", self.shown))
        }
        #[cfg(not(unix))]
        {
            let status = self
                .inner
                .status()
                .with_context(|| format!("could not start `{}`", self.shown))?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}

/// A command started by [`Cmd::spawn_group`].
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    shown: String,
}

impl Running {
    /// Sends SIGTERM to the command's process group, then SIGKILL if it is still there
    /// after a few seconds, and waits for the command.
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        for (signal, grace) in [("-TERM", 50), ("-KILL", 50)] {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
            for _ in 0..grace {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        println!("note: `{}` did not end after SIGKILL", self.shown);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Runs a program quietly (nothing printed, stdin/stderr closed) and returns its trimmed
/// stdout if it exited successfully. For checks only.
pub fn probe(program: impl AsRef<OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Quotes for a POSIX shell, only when needed.
pub fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Shell-quotes a path for messages.
pub fn quote_path(p: &Path) -> String {
    quote(p.as_os_str())
}
