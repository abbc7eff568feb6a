//! The side-by-side table: per measure, the figure of each path, the ratio tab / `ssh -L`
//! (chacha20-poly1305, the reference), and issue 10's target with whether the tab met it.
//! Rendered as Markdown, padded so it reads as well in a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::bulk::Bulk;
use crate::concurrent::Concurrent;
use crate::footprint::Footprint;
use crate::latency::Percentiles;
use crate::paths::{Column, Role};
use crate::wasm_size::WasmSize;

/// Everything measured on one path.
#[derive(Debug, Clone)]
pub struct Figures {
    pub bulk: Bulk,
    /// Before and after the bulk run.
    pub footprint: (Footprint, Footprint),
    /// The tab's longest main-thread task during the bulk run, ms.
    pub longest_task_ms: Option<f64>,
    pub connect: Percentiles,
    pub ping: Percentiles,
    pub concurrent: Concurrent,
}

/// What the table is about: printed above it.
#[derive(Debug, Clone)]
pub struct About {
    pub lines: Vec<String>,
}

/// One measure: a cell per column, the tab's ratio to `ssh -L`, the target and its mark.
#[derive(Debug, Clone)]
struct Row {
    measure: String,
    cells: [String; 4],
    ratio: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    /// Figures formatted by `fmt`; the ratio is tab / ssh -L chacha20 when both exist.
    fn numbers(measure: &str, values: [Option<f64>; 4], fmt: fn(f64) -> String) -> Self {
        let ratio = match (values[0], values[2]) {
            (Some(tab), Some(ssh)) if ssh > 0.0 => format!("{:.2}x", tab / ssh),
            _ => String::new(),
        };
        Self {
            measure: measure.to_owned(),
            cells: values.map(|v| v.map(fmt).unwrap_or_else(|| "-".into())),
            ratio,
            target: String::new(),
            met: None,
        }
    }

    fn text(measure: &str, cells: [Option<String>; 4]) -> Self {
        Self {
            measure: measure.to_owned(),
            cells: cells.map(|c| c.unwrap_or_else(|| "-".into())),
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }

    fn target(mut self, text: &str, met: Option<bool>) -> Self {
        self.target = text.to_owned();
        self.met = met;
        self
    }
}

/// The tab's and ssh -L chacha20's figure, when both exist.
fn tab_and_ssh(values: &[Option<f64>; 4]) -> Option<(f64, f64)> {
    Some((values[0]?, values[2]?))
}

/// Rows of the measures, in the order the issue lists them.
pub struct Table {
    about: About,
    rows: Vec<Row>,
    notes: Vec<String>,
    concurrent_errors: usize,
}

impl Table {
    pub fn build(
        about: About,
        figures: &BTreeMap<Column, Figures>,
        wasm: &WasmSize,
        mib: usize,
    ) -> Self {
        let each = |f: &dyn Fn(&Figures) -> Option<f64>| -> [Option<f64>; 4] {
            Column::ALL.map(|c| figures.get(&c).and_then(f))
        };
        let mut rows = Vec::new();

        for (name, speed) in [
            ("upload MiB/s", each(&|f| Some(f.bulk.upload))),
            ("download MiB/s", each(&|f| Some(f.bulk.download))),
        ] {
            let met = tab_and_ssh(&speed).map(|(tab, ssh)| tab >= 0.35 * ssh);
            rows.push(Row::numbers(name, speed, mib_s).target(">= 0.35x", met));
        }
        // The native client's -D forward moves the same bytes by SOCKS5: beside its -L.
        for (name, speed) in [
            (
                "SOCKS (-D) upload MiB/s",
                each(&|f| f.bulk.socks.map(|s| s.upload)),
            ),
            (
                "SOCKS (-D) download MiB/s",
                each(&|f| f.bulk.socks.map(|s| s.download)),
            ),
        ] {
            rows.push(Row::numbers(name, speed, mib_s));
        }
        let balance = each(&|f| Some(f.bulk.download / f.bulk.upload));
        let mut row = Row::numbers("download / upload", balance, two);
        // A ratio of ratios says nothing; the target is the tab's own balance.
        row.ratio.clear();
        rows.push(row.target("tab >= 0.9", balance[0].map(|tab| tab >= 0.9)));

        let p50 = each(&|f| Some(ms(f.connect.p50)));
        rows.push(
            Row::numbers("connect -> first echoed byte p50 (ms)", p50, two).target(
                "<= ssh + 1 ms",
                tab_and_ssh(&p50).map(|(tab, ssh)| tab <= ssh + 1.0),
            ),
        );
        let p99 = each(&|f| Some(ms(f.connect.p99)));
        rows.push(
            Row::numbers("connect -> first echoed byte p99 (ms)", p99, two).target(
                "<= 3x",
                tab_and_ssh(&p99).map(|(tab, ssh)| tab <= 3.0 * ssh),
            ),
        );
        let p50 = each(&|f| Some(us(f.ping.p50)));
        rows.push(Row::numbers("64 B ping-pong p50 (us)", p50, whole).target(
            "<= 4x",
            tab_and_ssh(&p50).map(|(tab, ssh)| tab <= 4.0 * ssh),
        ));
        rows.push(Row::numbers(
            "64 B ping-pong p99 (us)",
            each(&|f| Some(us(f.ping.p99))),
            whole,
        ));
        let concurrent = each(&|f| Some(f.concurrent.seconds));
        rows.push(
            Row::numbers("concurrent 1 MiB connections, total (s)", concurrent, two).target(
                "<= 1.5x",
                tab_and_ssh(&concurrent).map(|(tab, ssh)| tab <= 1.5 * ssh),
            ),
        );
        let errors = each(&|f| Some(f.concurrent.errors.len() as f64));
        rows.push(
            Row::numbers("concurrent connections, errors", errors, whole).target(
                "0 (any fails the bench)",
                Some(errors.iter().flatten().all(|e| *e == 0.0)),
            ),
        );

        for role in Role::ALL {
            let cpu = each(&|f| f.bulk.cpu_ms_per_mib.get(&role).copied());
            let name = format!("CPU ms/MiB: {}", role.label());
            rows.push(Row::numbers(&name, cpu, two));
        }
        let client = native_client_cpu(figures);
        rows.push(Row::numbers(
            "CPU ms/MiB: native client core (estimate)",
            [None, client, None, None],
            two,
        ));
        let pipeline = Column::ALL.map(|c| pipeline_cpu(c, figures.get(&c)?, client));
        rows.push(
            Row::numbers("CPU ms/MiB: whole pipeline", pipeline, two).target(
                "<= 2.5x",
                tab_and_ssh(&pipeline).map(|(tab, ssh)| tab <= 2.5 * ssh),
            ),
        );

        let longest = each(&|f| f.longest_task_ms);
        rows.push(
            Row::numbers("longest main-thread task in bulk (ms)", longest, whole)
                .target("<= 50", longest[0].map(|tab| tab <= 50.0)),
        );
        let flat = |pick: fn(&Footprint) -> Option<u64>| {
            let cells = Column::ALL.map(|c| {
                let (before, after) = figures.get(&c)?.footprint;
                Some((pick(&before)?, pick(&after)?))
            });
            let met = cells
                .iter()
                .flatten()
                .all(|(before, after)| after.saturating_sub(*before) <= FLAT_BYTES);
            let text = cells.map(|c| c.map(|(b, a)| format!("{} -> {}", mib_of(b), mib_of(a))));
            (text, cells.iter().any(Option::is_some).then_some(met))
        };
        let (cells, met) = flat(|f| f.js_heap);
        rows.push(Row::text("tab JS heap before -> after bulk (MiB)", cells).target("flat", met));
        let (cells, _) = flat(|f| f.renderer_rss);
        rows.push(Row::text(
            "tab renderer RSS before -> after bulk (MiB)",
            cells,
        ));
        let (cells, met) = flat(|f| f.relay_rss);
        rows.push(Row::text("relay RSS before -> after bulk (MiB)", cells).target("flat", met));

        let kib = |bytes: usize| Some(bytes as f64 / 1024.0);
        rows.push(Row::numbers(
            "wasm bundle raw (KiB)",
            [kib(wasm.raw), None, None, None],
            whole,
        ));
        rows.push(
            Row::numbers(
                "wasm bundle gzip (KiB)",
                [kib(wasm.gzip), None, None, None],
                whole,
            )
            .target("<= 500", Some(wasm.gzip <= 500 * 1024)),
        );

        Self {
            about,
            rows,
            notes: notes(mib),
            concurrent_errors: figures.values().map(|f| f.concurrent.errors.len()).sum(),
        }
    }

    /// Concurrent connections that failed, on all paths.
    pub fn errors(&self) -> usize {
        self.concurrent_errors
    }

    /// Measures whose target the tab missed.
    pub fn misses(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| r.met == Some(false))
            .map(|r| r.measure.as_str())
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut header = vec!["measure".to_owned()];
        header.extend(Column::ALL.map(|c| c.label().to_owned()));
        header.extend(["tab / ssh".into(), "target".into(), "met".into()]);
        let lines: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut line = vec![row.measure.clone()];
                line.extend(row.cells.iter().cloned());
                line.push(row.ratio.clone());
                line.push(row.target.clone());
                line.push(match row.met {
                    Some(true) => "pass".into(),
                    Some(false) => "MISS".into(),
                    None => String::new(),
                });
                line
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                std::iter::once(&header)
                    .chain(&lines)
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                // The measure column reads left to right, figures line up on the right.
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let mut out = String::new();
        for line in &self.about.lines {
            let _ = writeln!(out, "{line}  ");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", render(&header));
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w.saturating_sub(1)))
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for line in &lines {
            let _ = writeln!(out, "{}", render(line));
        }
        let _ = writeln!(out);
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

/// How much a footprint may grow across the bulk run and still count as flat.
const FLAT_BYTES: u64 = 8 << 20;

/// The native client's CPU: the bench process runs it, along with the test's TCP ends
/// and destinations; those do the same work per MiB on every path, so the bench process's
/// CPU with `ssh -L` (where it runs nothing else) is subtracted.
fn native_client_cpu(figures: &BTreeMap<Column, Figures>) -> Option<f64> {
    let bench = |c: Column| {
        figures
            .get(&c)?
            .bulk
            .cpu_ms_per_mib
            .get(&Role::Bench)
            .copied()
    };
    Some((bench(Column::Native)? - bench(Column::SshChacha)?).max(0.0))
}

/// The CPU every process of a path spends per MiB, the test's own TCP ends left out.
fn pipeline_cpu(column: Column, figures: &Figures, native_client: Option<f64>) -> Option<f64> {
    let cpu = &figures.bulk.cpu_ms_per_mib;
    let processes: f64 = cpu
        .iter()
        .filter(|(role, _)| **role != Role::Bench)
        .fold(0.0, |sum, (_, ms)| sum + ms);
    match column {
        Column::Native => Some(processes + native_client?),
        _ => Some(processes),
    }
}

fn notes(mib: usize) -> Vec<String> {
    vec![
        "tab / ssh: the tab's figure divided by `ssh -L` with chacha20-poly1305 (the reference); \
         targets are issue 10's, \"met\" is the tab's (relay RSS: both relay columns)."
            .into(),
        format!(
            "Speeds: median of the runs, {mib} MiB each way per run; CPU rows: CPU time (utime + \
             stime from /proc) of each process during all bulk runs, per MiB moved."
        ),
        "The relay runs as its own process (the release binary under `cargo xtask bench`, as \
         deployed), so its CPU and memory are its alone; its limits are raised only so the concurrent connections may all wait for their \
         channel at once (pending_accepts_per_forward is 64 by default)."
            .into(),
        "The native client core runs inside the bench process, beside the test's TCP ends and \
         destinations; its estimate is the bench process's CPU on the native path minus the same \
         on the `ssh -L` chacha20 path, where the process runs only those."
            .into(),
        "Whole pipeline: every process of the path except the bench's own TCP ends (tab: \
         renderer, network service, other Chromium processes, relay, sshd; native: client \
         estimate, relay, sshd; ssh -L: ssh, sshd). sshd counts all its session processes."
            .into(),
        "Longest task: Chromium's Long Tasks API on the page's main thread, which reports only \
         tasks over 50 ms, so 0 means none over 50 ms. JS heap: the main thread's \
         (performance.memory after gc()); a client in a Worker has its heap there, which shows \
         in the renderer's RSS. Flat: grew by at most 8 MiB."
            .into(),
    ]
}

fn mib_s(v: f64) -> String {
    format!("{v:.0}")
}

fn two(v: f64) -> String {
    format!("{v:.2}")
}

fn whole(v: f64) -> String {
    format!("{v:.0}")
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn us(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib_of(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}
