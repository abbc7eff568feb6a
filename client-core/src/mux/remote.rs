//! The mux's part in remote forwards (`ssh -R`): where the SSH server listens for each,
//! and the connections the tab opens for them (Dial).

use std::sync::Arc;

use futures::channel::oneshot;
use tabtunnel_proto::{ConnFlow, Frame};
use tokio::sync::mpsc;

use super::{ConnHandle, ConnInput, Mux};
use crate::error::ClientError;
use crate::kind::ForwardKind;
use crate::stats::ForwardStats;

/// A connection the tab opened for a remote forward, for its pump.
pub(crate) struct Dialled {
    pub(crate) conn: u32,
    pub(crate) flow: Arc<ConnFlow>,
    pub(crate) input: mpsc::UnboundedReceiver<ConnInput>,
    /// Resolves when the mux drops the connection: the relay refused or aborted it, or
    /// its forward or the session closed.
    pub(crate) abort: oneshot::Receiver<()>,
}

impl Mux {
    /// Remote forward `forward` is listening on the SSH server at `address`:`port`, as
    /// the server will report its connections.
    pub(crate) fn sshd_listening(&self, forward: u32, address: String, port: u32) {
        let mut state = self.state.lock().expect("state lock");
        state.sshd_listens.insert(forward, (address, port));
    }

    /// The open remote forward the SSH server means by a connection that arrived at
    /// `address`:`port`: the one that listens there, else the only one on that port
    /// (a server may report the address in another form than it was asked).
    pub(crate) fn sshd_forward(
        &self,
        address: &str,
        port: u32,
    ) -> Option<(u32, Arc<ForwardKind>, Arc<ForwardStats>)> {
        let state = self.state.lock().expect("state lock");
        let open = |forward: &u32| state.forwards.contains_key(forward);
        let listens = || state.sshd_listens.iter().filter(|(f, _)| open(f));
        let exact = listens().find(|(_, (a, p))| *p == port && a == address);
        let forward = match exact {
            Some((forward, _)) => *forward,
            None => {
                let mut on_port = listens().filter(|(_, (_, p))| *p == port);
                match (on_port.next(), on_port.next()) {
                    (Some((forward, _)), None) => *forward,
                    _ => return None,
                }
            }
        };
        let entry = state.forwards.get(&forward)?;
        Some((forward, entry.kind.clone(), entry.stats.clone()))
    }

    /// Opens a connection of remote forward `forward` for a client of the SSH server
    /// at `peer`: the relay is asked to dial the forward's destination, and granted the
    /// connection's first credit.
    pub(crate) async fn dial(&self, forward: u32, peer: String) -> Result<Dialled, ClientError> {
        let (dialled, grant) = {
            let mut state = self.state.lock().expect("state lock");
            let opening = state
                .conns
                .open(forward)
                .map_err(|err| ClientError::Protocol(err.to_string()))?;
            let (input, input_rx) = mpsc::unbounded_channel();
            let (abort, abort_rx) = oneshot::channel();
            let dialled = Dialled {
                conn: opening.conn,
                flow: opening.flow().clone(),
                input: input_rx,
                abort: abort_rx,
            };
            let grant = opening.flow().initial_grant();
            state.conns.insert(opening, ConnHandle { input, abort });
            (dialled, grant)
        };
        let conn = dialled.conn;
        self.send(Frame::Dial {
            conn,
            forward,
            peer,
        })
        .await?;
        self.send(Frame::Credit { conn, bytes: grant }).await?;
        Ok(dialled)
    }
}
