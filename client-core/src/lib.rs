//! The tabtunnel client: `ssh -L` over a relay's WebSocket, the same code in the
//! browser (wasm32) and natively (tests). Platform glue supplies a [`Transport`] and,
//! in the browser, a host-key prompt; everything else lives here.
//!
//! ```text
//! transport ──frames──> demux ──Ssh──> pipe ──> russh ──channels──> ConnPump per TCP client
//!     ^                   └─Listening/Accept/Data/Credit/Eof/Close──────────┘
//!     └──── write loop <── Ssh, Listen, Data, Credit, Eof, Close ───────────┘
//! ```

mod error;
mod forward;
mod keys;
pub mod known_hosts;
mod rt;
mod session;
pub mod spec;
mod ssh;
mod transport;

#[cfg(feature = "native")]
pub mod native;

pub use error::ClientError;
pub use forward::{Forward, StatsSnapshot};
pub use known_hosts::{
    KnownHostId, KnownHosts, KnownHostsCheck, KnownHostsError, MemoryKnownHosts,
};
pub use session::{ConnectOptions, ForwardOptions, Keepalive, Session, connect};
pub use spec::{ForwardSpec, SshCommand, parse_forward, parse_ssh_command};
pub use ssh::{
    Auth, Credentials, HostKeyCallback, HostKeyInfo, HostKeyPolicy, PromptCallback, PromptField,
    PromptRequest,
};
pub use tabtunnel_proto::ErrorCode;
pub use transport::{Transport, TransportError};
