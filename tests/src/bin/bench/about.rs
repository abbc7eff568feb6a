//! What a table's figures depend on: when, on how many cores, with which versions, at
//! which sizes. Printed above the table.

use std::process::Command;

use tabtunnel_e2e::browser::CHROMIUM;

use crate::options::Options;
use crate::report::About;

pub fn read(options: &Options) -> About {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug build (figures are not comparable to a release run)"
    } else {
        "release build"
    };
    About {
        lines: vec![
            format!(
                "**tabtunnel bench**, {} on {cores} cores ({}), {profile}",
                first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
                cpu_model()
            ),
            format!(
                "OpenSSH: {}; Chromium: {}",
                first_line("ssh", &["-V"]),
                first_line(CHROMIUM, &["--version"])
            ),
            format!(
                "Sizes: {} MiB each way x {} runs; {} new connections; {} ping-pong turns; \
                 {} concurrent connections of {} MiB",
                options.mib,
                options.runs,
                options.connects,
                options.turns,
                options.concurrent,
                options.concurrent_mib
            ),
        ],
    }
}

/// The first line a command prints (on stdout, or stderr as `ssh -V` does).
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_owned()
        }
        Err(err) => format!("? ({program}: {err})"),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
