//! What a forward is, as the `ssh` option that opens it says: `-L` (every connection
//! to one destination), `-D` (a SOCKS proxy: each client names its destination) or `-R`
//! (the SSH server listens; the relay connects to the destination). A leaf: the mux,
//! the link and the handles all carry it.

use std::fmt;

use tabtunnel_proto::Frame;

use crate::spec::{DynamicSpec, ForwardSpec, RemoteSpec};

/// The username and password a dynamic forward's SOCKS clients must give (RFC 1929).
/// Its Debug hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SocksLogin {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SocksLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocksLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A forward, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardKind {
    /// `ssh -L`: the relay listens; each connection goes to the spec's destination.
    Local(ForwardSpec),
    /// `ssh -D`: the relay runs a SOCKS proxy; each client names its destination, which
    /// the SSH server resolves and connects to. Without a login, the relay lets it
    /// listen on loopback only.
    Dynamic {
        spec: DynamicSpec,
        login: Option<SocksLogin>,
    },
    /// `ssh -R`: the SSH server listens; each connection it takes goes to the spec's
    /// destination, which the relay connects to from its own host (if its operator
    /// allows it).
    Remote(RemoteSpec),
}

impl ForwardKind {
    /// Where the relay listens (empty: loopback).
    pub fn bind(&self) -> &str {
        match self {
            ForwardKind::Local(spec) => &spec.bind,
            ForwardKind::Dynamic { spec, .. } => &spec.bind,
            ForwardKind::Remote(spec) => &spec.bind,
        }
    }

    /// The port the relay listens on (0: any free one); for a remote forward, the port
    /// the SSH server listens on (0: it picks one).
    pub fn port(&self) -> u16 {
        match self {
            ForwardKind::Local(spec) => spec.port,
            ForwardKind::Dynamic { spec, .. } => spec.port,
            ForwardKind::Remote(spec) => spec.port,
        }
    }

    /// The `-R` spec, for a remote forward.
    pub fn remote(&self) -> Option<&RemoteSpec> {
        match self {
            ForwardKind::Remote(spec) => Some(spec),
            _ => None,
        }
    }

    /// Whether it is a `-D` forward (its clients name their destinations: Connects).
    pub fn is_dynamic(&self) -> bool {
        matches!(self, ForwardKind::Dynamic { .. })
    }

    /// The `-L` spec, for a local forward.
    pub fn local(&self) -> Option<&ForwardSpec> {
        match self {
            ForwardKind::Local(spec) => Some(spec),
            ForwardKind::Dynamic { .. } | ForwardKind::Remote(_) => None,
        }
    }

    /// The same forward on `port` (to listen there again after a reconnect).
    pub(crate) fn on_port(&self, port: u16) -> Self {
        let mut again = self.clone();
        match &mut again {
            ForwardKind::Local(spec) => spec.port = port,
            ForwardKind::Dynamic { spec, .. } => spec.port = port,
            ForwardKind::Remote(spec) => spec.port = port,
        }
        again
    }

    /// The frame that asks the relay to listen for it as forward `forward` (for a remote
    /// forward: to connect to its destination).
    pub(crate) fn listen_frame(&self, forward: u32) -> Frame {
        match self {
            ForwardKind::Local(spec) => Frame::Listen {
                forward,
                bind: spec.bind.clone(),
                port: spec.port,
            },
            ForwardKind::Dynamic { spec, login } => {
                let (username, password) = login
                    .as_ref()
                    .map(|l| (l.username.clone(), l.password.clone()))
                    .unwrap_or_default();
                Frame::ListenSocks {
                    forward,
                    bind: spec.bind.clone(),
                    port: spec.port,
                    username,
                    password,
                }
            }
            ForwardKind::Remote(spec) => Frame::RemoteForward {
                forward,
                host: spec.host.clone(),
                port: spec.host_port,
            },
        }
    }

    /// For a remote forward: the address the SSH server is asked to listen on, as
    /// `ssh -R` asks (an empty bind is `localhost`, `*` is every address).
    pub(crate) fn sshd_bind(&self) -> Option<&str> {
        let spec = self.remote()?;
        Some(match spec.bind.as_str() {
            "" => "localhost",
            "*" => "",
            bind => bind,
        })
    }
}

/// As `ssh` takes it: `-L 8080:db:5432`, `-D 1080`.
impl fmt::Display for ForwardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardKind::Local(spec) => write!(f, "-L {spec}"),
            ForwardKind::Dynamic { spec, .. } => write!(f, "-D {spec}"),
            ForwardKind::Remote(spec) => write!(f, "-R {spec}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_asks_the_relay_with_its_own_frame() {
        let local = ForwardKind::Local(crate::spec::parse_forward("0:db:5432").unwrap());
        assert_eq!(
            local.on_port(10080).listen_frame(3),
            Frame::Listen {
                forward: 3,
                bind: String::new(),
                port: 10080
            }
        );
        let dynamic = ForwardKind::Dynamic {
            spec: crate::spec::parse_dynamic("127.0.0.1:0").unwrap(),
            login: Some(SocksLogin {
                username: "alice".into(),
                password: "s3cret".into(),
            }),
        };
        assert_eq!(
            dynamic.on_port(1080).listen_frame(4),
            Frame::ListenSocks {
                forward: 4,
                bind: "127.0.0.1".into(),
                port: 1080,
                username: "alice".into(),
                password: "s3cret".into(),
            }
        );
        assert_eq!(dynamic.to_string(), "-D 127.0.0.1:0");
        assert!(!format!("{dynamic:?}").contains("s3cret"));
        assert_eq!(local.local().map(|s| s.host.as_str()), Some("db"));
        assert_eq!(dynamic.local(), None);
    }

    #[test]
    fn a_remote_forward_asks_the_relay_for_its_destination_and_sshd_for_its_bind() {
        let remote = ForwardKind::Remote(crate::spec::parse_remote("0:127.0.0.1:3000").unwrap());
        assert_eq!(
            remote.on_port(8080).listen_frame(5),
            Frame::RemoteForward {
                forward: 5,
                host: "127.0.0.1".into(),
                port: 3000
            }
        );
        assert_eq!(remote.on_port(8080).to_string(), "-R 8080:127.0.0.1:3000");
        assert_eq!(remote.sshd_bind(), Some("localhost"), "as ssh -R asks");
        let wide = ForwardKind::Remote(crate::spec::parse_remote("*:80:db:5432").unwrap());
        assert_eq!(wide.sshd_bind(), Some(""), "every address");
        let one = ForwardKind::Remote(crate::spec::parse_remote("[::1]:80:db:5432").unwrap());
        assert_eq!(one.sshd_bind(), Some("::1"));
        assert_eq!(one.local(), None);
        assert!(!one.is_dynamic());
        let local = ForwardKind::Local(crate::spec::parse_forward("0:db:5432").unwrap());
        assert_eq!(local.sshd_bind(), None);
    }
}
