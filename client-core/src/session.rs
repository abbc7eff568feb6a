//! A session's handle, `connect` (Hello, the SSH handshake with its host-key check,
//! authentication; then forwards on request) and `connect_resilient`, whose session
//! reconnects when its link drops (see `redial`).

use std::sync::{Arc, Mutex};

use crate::conn::describe_open_failure;
use crate::end::End;
use crate::error::ClientError;
use crate::forward::Forward;
use crate::keepalive::Keepalive;
use crate::kind::{ForwardKind, SocksLogin};
use crate::link::{Established, Link, Login, establish};
use crate::reconnect::{ConnectionState, Reconnect, StateCallback};
use crate::redial::{self, Dial, Redial};
use crate::rt;
use crate::spec::{AnySpec, ForwardSpec, parse_any};
use crate::ssh::{Credentials, HostKeyInfo, HostKeyPolicy};
use crate::transport::Transport;

/// What `connect` needs besides the transport.
#[derive(Debug)]
pub struct ConnectOptions {
    /// The relay's name for the SSH server.
    pub target: String,
    pub username: String,
    pub auth: Credentials,
    pub host_key: HostKeyPolicy,
    /// Detects a dead SSH server or relay; `None` turns it off.
    pub keepalive: Option<Keepalive>,
    /// The relay's access token, when its operator requires one.
    pub token: Option<String>,
}

/// How a session of [`connect_resilient`] reconnects, and who hears about it.
#[derive(Clone, Default)]
pub struct ReconnectOptions {
    pub policy: Reconnect,
    /// Told when the session drops, tries again, is restored or gives up.
    pub on_state: Option<StateCallback>,
}

impl std::fmt::Debug for ReconnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectOptions")
            .field("policy", &self.policy)
            .field("on_state", &self.on_state.is_some())
            .finish()
    }
}

/// Options of one forward.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Open one test channel to the destination before listening, and fail the forward
    /// if the SSH server refuses it or cannot connect (like ssh's ExitOnForwardFailure,
    /// for the destination). The destination sees one connection open and close.
    /// A dynamic forward has no destination of its own: nothing is checked.
    pub check_destination: bool,
    /// For a dynamic forward (`-D`): the SOCKS username and password its clients must
    /// give. Without them, the relay lets it listen on loopback only.
    pub socks_login: Option<SocksLogin>,
}

/// A live session. Cheap to clone; the session ends when `close` is called or the
/// relay or SSH server goes away (for a session of [`connect_resilient`]: when it gave
/// up reconnecting).
#[derive(Clone)]
pub struct Session {
    link: Arc<Link>,
    host_key: HostKeyInfo,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

fn login_of(options: &ConnectOptions) -> Login {
    Login {
        target: options.target.clone(),
        token: options.token.clone(),
        username: options.username.clone(),
        keepalive: options.keepalive,
    }
}

/// Opens a session: Hello to the relay, SSH handshake with host-key check, then
/// authentication. On success the session is ready for `forward`. It ends when its
/// transport or SSH session does.
pub async fn connect<T: Transport>(
    transport: T,
    options: ConnectOptions,
) -> Result<Session, ClientError> {
    let login = login_of(&options);
    let Established {
        live,
        host_key,
        end,
        ..
    } = establish(transport, &login, options.auth, options.host_key, &mut None).await?;
    Ok(Session {
        link: Link::new(live, end),
        host_key,
    })
}

/// [`connect`], on a transport `dial` opens, for a session that reconnects when its
/// transport or SSH session drops for a transient reason (see `reconnect`), keeping
/// its forwards on their ports. The first connection's failure is returned as it is.
pub async fn connect_resilient<T: Transport>(
    dial: Dial<T>,
    options: ConnectOptions,
    reconnect: ReconnectOptions,
) -> Result<Session, ClientError> {
    let transport = dial().await.map_err(|err| ClientError::Transport(err.0))?;
    let login = login_of(&options);
    let ConnectOptions { auth, host_key, .. } = options;
    let Credentials {
        password,
        private_key,
        prompt,
    } = auth;
    let mut redial = Redial {
        dial,
        login,
        password,
        private_key,
        prompt: prompt.map(|prompt| Arc::new(Mutex::new(prompt))),
        fingerprint: String::new(),
        resume: None,
        policy: reconnect.policy,
        on_state: reconnect.on_state,
    };
    let established = redial.establish(transport, host_key).await?;
    redial.fingerprint = established.host_key.fingerprint.clone();
    let link = Link::new(established.live, End::default());
    if let Some(on_state) = &redial.on_state {
        on_state(ConnectionState::Live);
    }
    rt::spawn(redial::supervise(
        Arc::downgrade(&link),
        established.end,
        redial,
    ));
    Ok(Session {
        link,
        host_key: established.host_key,
    })
}

impl Session {
    /// The server's host-key fingerprint (`SHA256:...`), as accepted.
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.host_key
    }

    /// Opens a local forward like `ssh -L spec`: the relay listens, and each TCP client
    /// that connects is carried through a direct-tcpip channel to the destination.
    /// `-D [bind:]port` opens a dynamic forward like `ssh -D`: the relay runs a SOCKS
    /// proxy (SOCKS5, 4 and 4a), and each client's connection goes where it asks,
    /// resolved and reached by the SSH server. `-R [bind:]port:host:hostport` opens a
    /// remote forward like `ssh -R`: the SSH server listens, and the relay connects each
    /// connection to `host:hostport` (if its operator allows that destination); the
    /// forward's `listen()` is where the server listens (`-R 0:...`: the port it picked).
    /// `-L spec` is the same as `spec`.
    pub async fn forward(&self, spec: &str) -> Result<Forward, ClientError> {
        self.forward_with(spec, ForwardOptions::default()).await
    }

    /// [`Session::forward`] with options.
    pub async fn forward_with(
        &self,
        spec: &str,
        options: ForwardOptions,
    ) -> Result<Forward, ClientError> {
        let kind = match parse_any(spec)? {
            AnySpec::Local(spec) => {
                if options.check_destination {
                    self.check_destination(&spec).await?;
                }
                ForwardKind::Local(spec)
            }
            AnySpec::Dynamic(spec) => ForwardKind::Dynamic {
                spec,
                login: options.socks_login,
            },
            AnySpec::Remote(spec) => ForwardKind::Remote(spec),
        };
        let kind = Arc::new(kind);
        let (id, listened) = self.link.listen(kind.clone()).await?;
        Ok(Forward::new(self.link.clone(), id, kind, listened))
    }

    /// Opens and closes one channel to the spec's destination, so a destination the
    /// SSH server refuses or cannot reach fails the forward now, not its first client.
    async fn check_destination(&self, spec: &ForwardSpec) -> Result<(), ClientError> {
        let channel = self
            .link
            .ssh()
            .channel_open_direct_tcpip(
                spec.host.as_str(),
                u32::from(spec.host_port),
                "127.0.0.1",
                0,
            )
            .await
            .map_err(|err| ClientError::ChannelRefused {
                destination: format!("{}:{}", spec.host, spec.host_port),
                reason: describe_open_failure(&err),
            })?;
        let _ = channel.close().await;
        Ok(())
    }

    /// Why the session ended, once it has; `None` while it is live.
    pub fn closed_reason(&self) -> Option<String> {
        self.link.end().ended().map(|ended| ended.reason)
    }

    /// Waits until the session ends and returns why.
    pub async fn closed(&self) -> String {
        self.closed_signal().await
    }

    /// Resolves, with the reason, when the session ends. Unlike [`Session::closed`] it
    /// does not hold the session: an abandoned session still closes when its last
    /// handle goes, and this then resolves.
    pub fn closed_signal(&self) -> impl std::future::Future<Output = String> + 'static {
        let ended = self.link.end().wait();
        async move { ended.await.reason }
    }

    /// Ends the session: the relay then closes every listener and connection of it.
    pub async fn close(&self) {
        let _ = self
            .link
            .ssh()
            .disconnect(russh::Disconnect::ByApplication, "closed by the user", "en")
            .await;
        // The session's end first (a reconnecting session then stops), then the link's
        // (the same one without reconnect): the writer closes the WebSocket, and the
        // transport's end then ends the session.
        self.link.end().close_transport();
        self.link.owner().end().close_transport();
        self.closed().await;
    }
}
