//! The tabtunnel client: `ssh -L`, `ssh -D` and `ssh -R` over a relay's WebSocket, the same code in the
//! browser (wasm32) and natively (tests). Platform glue supplies a [`Transport`] and,
//! in the browser, a host-key prompt; everything else lives here.
//!
//! ```text
//! transport ──frames──> mux::demux ──Ssh──> pipe ──> russh ──channels──> conn pump per TCP client
//!     ^                   └─Listening/Accept/Data/Credit/Eof/Close───────────────┘
//!     └──── mux::write_loop <── Ssh, Listen, Data, Credit, Eof, Close ───────────┘
//! ```
//!
//! Modules, each importing only those after it: `session` (the handle, `connect` and
//! `connect_resilient`) -> `redial` (the supervisor that reconnects) -> `forward` (a
//! forward's handle) -> `link` (the session's current link, establishing one, the
//! forwards to listen for again) -> `remote` (`-R`: the SSH server's listener and its
//! forwarded channels) -> `conn` (a connection's pump), `keepalive` -> `mux`
//! (demultiplexer, write loop, stream-0 pumps) -> `ssh` -> `known_hosts` (the host-key
//! rules), `kind` (a forward as asked for: `-L`, `-D` or `-R`), `stats`, `end` (the one end
//! signal), `reconnect` (when and how often to try
//! again: the rules alone). `spec` (what users type) is the `tabtunnel-spec` crate,
//! re-exported: it has no I/O, so the fuzz targets build it without russh.

mod conn;
mod end;
mod error;
mod forward;
mod keepalive;
mod keys;
mod kind;
pub mod known_hosts;
mod link;
mod mux;
pub mod reconnect;
mod redial;
mod remote;
mod rt;
mod session;
pub use tabtunnel_spec as spec;
mod ssh;
mod stats;
mod transport;

#[cfg(feature = "native")]
pub mod native;

pub use error::ClientError;
pub use forward::Forward;
pub use keepalive::Keepalive;
pub use kind::{ForwardKind, SocksLogin};
pub use known_hosts::{
    KnownHostId, KnownHosts, KnownHostsCheck, KnownHostsError, MemoryKnownHosts,
};
pub use reconnect::{ConnectionState, Reconnect, StateCallback};
pub use redial::Dial;
pub use session::{
    ConnectOptions, ForwardOptions, ReconnectOptions, Session, connect, connect_resilient,
};
pub use spec::{
    AnySpec, DynamicSpec, ForwardSpec, RemoteSpec, SshCommand, parse_any, parse_dynamic,
    parse_forward, parse_remote, parse_ssh_command,
};
pub use ssh::{
    Auth, Credentials, HostKeyCallback, HostKeyInfo, HostKeyPolicy, PromptCallback, PromptField,
    PromptRequest,
};
pub use stats::StatsSnapshot;
pub use tabtunnel_proto::ErrorCode;
pub use transport::{Transport, TransportError};
