//! The end-to-end suite: one test binary, a module per area (rust-analyzer's slow-tests
//! layout), so the whole stack is linked once. Every test runs real components: OpenSSH's
//! sshd, the relay (in-process or as its binary), the native client or the page in headless
//! Chromium, over loopback TCP. The set-up they share lives in the harness crate
//! (`tests/src/`): [`tabtunnel_e2e::lab::Lab`] for sshd plus relay, `page` for the browser
//! steps, `fake_tab` for a tab that speaks frames by hand.
//!
//! No test here needs a process of its own: none sets rlimits or environment variables in
//! this process or counts its threads or files (the open-files test limits the relay binary
//! it starts, through `prlimit`; `no_leaks` and the memory tests read the relay process's
//! logs and /proc, not this one's), and the one tracing subscriber (`init_logging`) is
//! installed by whichever test comes first and shared. Browser tests take turns through
//! `page::ONE_BROWSER`, now across the whole suite.
//!
//! Run one area with a filter: `cargo test -p tabtunnel-e2e -- forward_native::`.

mod access_native;
mod auth_native;
mod backpressure_browser;
mod backpressure_native;
mod bench_smoke;
mod embed_browser;
mod faults_native;
mod forward_browser;
mod forward_native;
mod hostkeys_browser;
mod lab_link_browser;
mod limits_native;
mod liveness_native;
mod no_leaks;
mod operator_cli;
mod reconnect_browser;
mod reconnect_native;
mod redteam;
mod remote_browser;
mod remote_native;
mod scale_out;
mod semantics_native;
mod socks_browser;
mod socks_native;
mod tls;
mod web_forward_browser;
mod web_forward_native;
mod worker_browser;
