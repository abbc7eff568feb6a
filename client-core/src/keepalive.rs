//! The session's `ServerAliveInterval`, driven by the tab's own timer (russh's timers
//! do not exist in the browser).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::end::End;
use crate::rt;
use crate::ssh::SshHandle;

/// Like ssh's `ServerAliveInterval` and `ServerAliveCountMax`: after `interval` with
/// nothing from the SSH server, ask it for an answer; when `count_max` such requests in
/// a row went unanswered, end the session. The tab's own timer drives it (russh's timers do not
/// exist in the browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: std::time::Duration,
    pub count_max: u32,
}

impl Default for Keepalive {
    /// 15 s × 3: a dead server or relay is noticed within about a minute.
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_secs(15),
            count_max: 3,
        }
    }
}

/// Each interval in which the SSH server sent nothing (`ssh_frames`, the count of Ssh
/// frames received, did not move) gets a keepalive request it must answer; when
/// `count_max` requests in a row went unanswered, the session ends. Holds the SSH
/// connection weakly, so it never keeps an abandoned session alive; stops when the
/// session ends.
pub(crate) async fn run(
    keepalive: Keepalive,
    ssh_frames: Arc<AtomicU64>,
    ssh: Weak<SshHandle>,
    end: End,
) {
    let ended = end.wait();
    let watch = async {
        let mut seen = 0;
        let mut unanswered = 0;
        loop {
            rt::sleep(keepalive.interval).await;
            let now = ssh_frames.load(Ordering::Relaxed);
            if now != seen {
                (seen, unanswered) = (now, 0);
                continue;
            }
            if unanswered >= keepalive.count_max {
                let silent = keepalive.interval * (unanswered + 1);
                end.end(
                    format!(
                        "no answer from the SSH server for {} s, {unanswered} keepalive(s) included (ServerAliveInterval {} s, ServerAliveCountMax {}): the server, the relay or the network is gone",
                        silent.as_secs(),
                        keepalive.interval.as_secs(),
                        keepalive.count_max
                    ),
                    None,
                );
                return;
            }
            let Some(ssh) = ssh.upgrade() else {
                return;
            };
            // want_reply: the server must answer, which is the sign of life we count.
            let _ = ssh.send_keepalive(true).await;
            unanswered += 1;
        }
    };
    tokio::select! {
        _ = ended => {}
        () = watch => {}
    }
}
