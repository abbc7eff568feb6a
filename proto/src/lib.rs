//! The wire format between a browser tab and the tabtunnel relay.
//!
//! One WebSocket carries one session. Every binary WebSocket message is exactly one
//! frame, so a frame needs no length prefix:
//!
//! ```text
//! [kind: u8][stream: u32 big-endian][payload ...]
//! ```
//!
//! | kind | name          | direction    | stream     | payload                                   |
//! |------|---------------|--------------|------------|-------------------------------------------|
//! | 1    | Hello         | tab → relay  | 0          | version u16, target (u16 len), resume (u8 len: 0 or 32), token |
//! | 2    | Welcome       | relay → tab  | 0          | version u16, pinned host-key fingerprints, resume (u8 len: 0 or 32), resumed u8 (0 or 1) |
//! | 3    | Error         | relay → tab  | 0          | code u16, message (UTF-8); session ends   |
//! | 4    | Ssh           | both         | 0          | SSH transport bytes (ciphertext)          |
//! | 5    | Listen        | tab → relay  | forward id | port u16, bind address (UTF-8)            |
//! | 6    | Listening     | relay → tab  | forward id | bound socket address (UTF-8)              |
//! | 7    | ListenFailed  | relay → tab  | forward id | code u16, message (UTF-8)                 |
//! | 8    | Unlisten      | tab → relay  | forward id | empty                                     |
//! | 9    | Accept        | relay → tab  | conn id    | forward id u32, peer address (UTF-8)      |
//! | 10   | Data          | both         | conn id    | bytes, at most [`MAX_DATA`]               |
//! | 11   | Credit        | both         | conn id    | u32: more bytes the sender may now send   |
//! | 12   | Eof           | both         | conn id    | empty: no more Data in this direction     |
//! | 13   | Close         | both         | conn id    | reason (UTF-8), empty when orderly        |
//! | 14   | Blocked       | both         | conn id    | empty: the sender spent all its credit    |
//! | 15   | WebForward    | relay → tab  | forward id | the forward's web URL (UTF-8), before its Listening |
//! | 16   | ListenSocks   | tab → relay  | forward id | port u16, bind (u16 len), username (u8 len), password (u8 len) |
//! | 17   | Connect       | relay → tab  | conn id    | forward id u32, port u16, host (u16 len), peer address (UTF-8) |
//! | 18   | RemoteForward | tab → relay  | forward id | port u16, host to dial (UTF-8)            |
//! | 19   | Dial          | tab → relay  | conn id    | forward id u32, peer address (UTF-8)      |
//! | 20   | OpenFailed    | both         | conn id    | failure u8 (a SOCKS5 reply code, 1-6), message (UTF-8) |
//!
//! The three kinds of forward, as `ssh` names them:
//! - `-L` (Listen): the relay listens; each TCP client is an Accept, and the tab opens
//!   an SSH `direct-tcpip` channel to the forward's destination.
//! - `-D` (ListenSocks): the relay listens and speaks SOCKS with each client; the
//!   destination the client names is a Connect, and the tab opens the channel to it. The
//!   tab's Credit or OpenFailed becomes the relay's SOCKS reply. The relay never
//!   resolves a name the client asked for: the SSH server does.
//! - `-R` (RemoteForward): the SSH server listens; each connection it forwards to the tab
//!   is a Dial, and the relay connects to the forward's destination, which its operator
//!   must allow.
//!
//! A ListenFailed for a forward that is already listening reports one TCP client the
//! relay refused (its source address is not allowed, or too many wait for the tab); the
//! listener stays open. Older tabs ignore it.
//!
//! Forward ids are chosen by the tab; connection ids by whoever opens the connection,
//! each side in its own half (see [`conn`]); the frame kind says which space a stream
//! number belongs to. Data for a connection may only be sent
//! within the credit its receiver granted (see [`credit`]); each Data frame costs its
//! bytes plus [`DATA_FRAME_OVERHEAD`], so that even one-byte frames cannot queue more
//! than a window's worth of memory. That is what keeps every hop's memory bounded,
//! since a browser cannot pause a WebSocket.
//!
//! What each connection frame means, and which ones break the rules, is decided in one
//! place for both sides: [`conn::ConnTable`].
//!
//! This crate knows nothing of tokio, axum, russh or web-sys: it builds for wasm32 and
//! native alike, and both sides of the wire use it.

pub mod codec;
pub mod conn;
pub mod credit;
pub mod frame;

pub use codec::{DecodeError, decode, encode, encode_to_bytes};
pub use conn::{Action, ConnError, ConnFlow, ConnTable, Opening, Side, TAB_OPENED};
pub use credit::{
    CreditError, CreditGate, DATA_FRAME_OVERHEAD, RecvWindow, SendCredit, UrgentGrants,
    WindowBudget, frame_cost,
};
pub use frame::{ErrorCode, Frame, Kind, OpenFailure, RESUME_SECRET_LEN, ResumeSecret};

/// Protocol version sent in Hello and Welcome. A relay refuses any other version.
///
/// - 1: the first.
/// - 2: a Data frame costs [`DATA_FRAME_OVERHEAD`] bytes of credit beyond its payload
///   (see [`credit`]). A version-1 peer would overrun a version-2 receiver's window.
/// - 3: Blocked frames, and windows that grow while their sender starves (see
///   [`credit`]). A version-2 receiver would refuse a Blocked frame as unknown.
/// - 4: WebForward frames (a forward's URL for the browser, before its Listening); Hello
///   and Welcome carry a resume secret, Welcome whether the session resumed a parked one
///   (a reconnecting tab gets its forwards back on the same ports). A version-3 peer
///   would misread a Hello or Welcome and refuse a WebForward as unknown.
/// - 5: dynamic (`-D`: ListenSocks, Connect) and remote (`-R`: RemoteForward, Dial)
///   forwards, OpenFailed, and connection ids in two halves (the tab opens Dials). A
///   version-4 peer would refuse the new kinds as unknown.
pub const VERSION: u16 = 5;

/// Size of the frame header: kind (1 byte) and stream (4 bytes).
pub const HEADER_LEN: usize = 5;

/// Largest Data or Ssh payload a sender may put in one frame.
pub const MAX_DATA: usize = 64 * 1024;

/// Forwarded bytes the tab puts in one SSH packet: OpenSSH's largest channel packet
/// (32 KiB of data) less room for the packet's framing (length, padding, channel header
/// and MAC: at most 49 bytes with the ciphers the client offers), so that two packets'
/// ciphertext fit one Ssh frame. With whole 32 KiB packets, two came to 65.6 KB, and the
/// tab sent a tiny Ssh frame after every second packet.
pub const SSH_PACKET_DATA: usize = 32 * 1024 - 64;

/// Most bytes the relay reads from a TCP client into one Data frame: two SSH packets'
/// worth ([`SSH_PACKET_DATA`]), so the tab turns each Data frame into whole packets.
pub const DATA_CHUNK: usize = 2 * SSH_PACKET_DATA;

/// Largest frame either side accepts; anything larger is a protocol error.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_DATA;

/// Largest text field (target names, addresses, reasons) in bytes.
pub const MAX_TEXT: usize = 1024;

/// Longest SOCKS5 username or password in bytes (RFC 1929's one-byte lengths).
pub const MAX_CREDENTIAL: usize = 255;

/// Most pinned host keys a Welcome carries; a receiver refuses a Welcome with more.
pub const MAX_PINNED_KEYS: usize = 64;

/// Stream number of session-level frames (Hello, Welcome, Error, Ssh).
pub const STREAM_SESSION: u32 = 0;

/// Credit each receiver grants per connection when it opens: bytes in flight per
/// direction per connection, counting each Data frame's [`DATA_FRAME_OVERHEAD`], never
/// exceed this.
pub const CONNECTION_WINDOW: u32 = 256 * 1024;

/// Largest window one connection grows to while its sender starves (see [`credit`]):
/// about what a bulk transfer has in flight while a grant travels back behind the other
/// direction's data.
pub const MAX_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// Credit beyond [`CONNECTION_WINDOW`] that the connections of one session may hold
/// together, so growth costs a receiver at most this much memory per session: two
/// connections at [`MAX_CONNECTION_WINDOW`], or more at smaller sizes.
pub const SESSION_WINDOW_GROWTH: u64 = 8 * 1024 * 1024;
