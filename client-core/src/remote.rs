//! Remote forwards (`ssh -R`): the relay agrees to connect to the destination
//! (RemoteForward, answered Listening), then the SSH server is asked to listen
//! (`tcpip-forward`; `-R 0:...` lets it pick the port, which it reports). Each connection
//! it takes comes as a forwarded-tcpip channel: the tab opens a connection with the
//! relay (Dial), and the channel is accepted once the relay connected, or rejected with
//! the relay's reason (see `conn::ConnPump`). Closing the forward cancels the server's
//! listener (`cancel-tcpip-forward`); the server frees it anyway when the SSH session
//! ends.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::debug;

use crate::conn::{ConnPump, Opener};
use crate::error::ClientError;
use crate::kind::ForwardKind;
use crate::mux::{Dialled, Listened, Mux};
use crate::ssh::{ForwardedChannel, SshHandle};

/// Forwarded channels waiting to be taken; beyond it the SSH server's connections are
/// refused (see `SshHandler::forwarding_to`).
pub(crate) const FORWARDED_QUEUE: usize = 64;

/// Opens remote forward `kind` (as forward `id` again after a reconnect, with its
/// counters): the relay's part first, so that a destination the operator does not allow
/// fails before the SSH server listens. The answer's address is where the server
/// listens.
pub(crate) async fn listen(
    mux: &Mux,
    ssh: &SshHandle,
    id: Option<u32>,
    kind: Arc<ForwardKind>,
    stats: Option<Arc<crate::stats::ForwardStats>>,
) -> Result<(u32, Listened), ClientError> {
    let bind = kind.sshd_bind().unwrap_or("localhost").to_owned();
    let asked = kind.port();
    let (id, mut listened) = mux.listen_as(id, kind, stats).await?;
    let port = match ssh.tcpip_forward(bind.as_str(), u32::from(asked)).await {
        // The server reports the port only when it picked one.
        Ok(given) if asked == 0 => given,
        Ok(_) => u32::from(asked),
        Err(err) => {
            let _ = mux.close_forward(id).await;
            let reason = match err {
                russh::Error::RequestDenied => {
                    "it may not allow remote forwards (AllowTcpForwarding), or not on that address and port (PermitListen), or the port is in use or privileged on the server".to_owned()
                }
                other => other.to_string(),
            };
            return Err(ClientError::RemoteListenRefused {
                listen: sshd_address(&bind, u32::from(asked)),
                reason,
            });
        }
    };
    mux.sshd_listening(id, bind.clone(), port);
    listened.address = sshd_address(&bind, port);
    Ok((id, listened))
}

/// Asks the SSH server to stop listening for remote forward `kind` (whose port is the
/// one it listened on). Best effort: the forward is closed either way.
pub(crate) async fn cancel(ssh: &SshHandle, kind: &ForwardKind) {
    let Some(bind) = kind.sshd_bind() else {
        return;
    };
    if let Err(err) = ssh.cancel_tcpip_forward(bind, u32::from(kind.port())).await {
        debug!(%err, "the SSH server did not cancel a remote forward");
    }
}

/// Where the SSH server listens, as the page shows it: `localhost:8080`, `[::1]:80`,
/// `*:80` for every address.
fn sshd_address(bind: &str, port: u32) -> String {
    match bind {
        "" => format!("*:{port}"),
        ip if ip.contains(':') => format!("[{ip}]:{port}"),
        name => format!("{name}:{port}"),
    }
}

/// Takes the channels the SSH server forwards until the SSH session ends (the handler,
/// which holds the queue's other end, goes with it).
pub(crate) async fn serve(
    mux: Arc<Mux>,
    ssh: Arc<SshHandle>,
    mut forwarded: mpsc::Receiver<ForwardedChannel>,
) {
    while let Some(channel) = forwarded.recv().await {
        let Some((forward, kind, stats)) = mux.sshd_forward(&channel.address, channel.port) else {
            // Dropped, the channel is refused.
            debug!(address = %channel.address, port = channel.port, "a forwarded connection for no open remote forward");
            continue;
        };
        let Some(spec) = kind.remote() else { continue };
        let (host, port) = (spec.host.clone(), spec.host_port);
        let Dialled {
            conn,
            flow,
            input,
            abort,
        } = match mux.dial(forward, channel.originator.clone()).await {
            Ok(dialled) => dialled,
            Err(err) => {
                debug!(%err, "could not open a remote forward's connection");
                continue;
            }
        };
        let pump = ConnPump {
            mux: mux.clone(),
            ssh: ssh.clone(),
            conn,
            host,
            port,
            socks: false,
            peer: channel.originator.clone(),
            stats,
            flow,
        };
        crate::rt::spawn(pump.run(Opener::Forwarded(Box::new(channel)), input, abort));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_side_address_is_shown_as_ssh_would() {
        assert_eq!(sshd_address("localhost", 8080), "localhost:8080");
        assert_eq!(sshd_address("", 80), "*:80");
        assert_eq!(sshd_address("::1", 80), "[::1]:80");
        assert_eq!(sshd_address("10.0.0.1", 80), "10.0.0.1:80");
    }
}
