//! A tab made by hand: a WebSocket client that speaks the relay's frames itself (Hello,
//! Listen, Data, ...) and never SSH, to send what a well-behaved tab never would. Frames
//! of SSH bytes from sshd are skipped when reading, since a fake tab never logs in.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use tabtunnel_proto::{ErrorCode, Frame, VERSION, decode, encode_to_bytes};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one answer from the relay may take on a busy machine.
pub const ANSWER: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A session of a hand-made tab.
#[derive(Debug)]
pub struct FakeTab {
    pub ws: Ws,
    next_forward: u32,
}

impl FakeTab {
    /// A WebSocket to `ws_url` with nothing sent on it.
    pub async fn connect(ws_url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        Ok(Self::from_ws(ws))
    }

    /// A WebSocket to `ws_url` from the loopback address `from` (any 127.0.0.0/8 address
    /// works on Linux), with nothing sent on it.
    pub async fn connect_from(ws_url: &str, from: IpAddr) -> Result<Self> {
        let socket = socket_from(from)?;
        Self::connect_with(socket, ws_url).await
    }

    /// A WebSocket to `ws_url` over `socket` (bound and tuned by the test), nothing sent.
    pub async fn connect_with(socket: TcpSocket, ws_url: &str) -> Result<Self> {
        let addr = address_of(ws_url)?;
        let stream = socket.connect(addr).await?;
        let (ws, _) = tokio_tungstenite::client_async(ws_url, MaybeTlsStream::Plain(stream))
            .await
            .with_context(|| format!("WebSocket to {ws_url}"))?;
        Ok(Self::from_ws(ws))
    }

    /// A WebSocket to `ws_url` that has said Hello for `target` with `token`.
    pub async fn hello(ws_url: &str, target: &str, token: &str) -> Result<Self> {
        let mut tab = Self::connect(ws_url).await?;
        tab.send_hello(target, token).await?;
        Ok(tab)
    }

    fn from_ws(ws: Ws) -> Self {
        Self {
            ws,
            next_forward: 1,
        }
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.ws
            .send(Message::Binary(encode_to_bytes(frame)))
            .await?;
        Ok(())
    }

    /// Sends the Hello of this protocol version.
    pub async fn send_hello(&mut self, target: &str, token: &str) -> Result<()> {
        self.send(&Frame::Hello {
            version: VERSION,
            target: target.into(),
            token: token.into(),
            resume: None,
        })
        .await
    }

    /// The next frame other than SSH bytes; `None` when the relay closed (or broke) the
    /// WebSocket. Fails if nothing comes within [`ANSWER`].
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        tokio::time::timeout(ANSWER, async {
            while let Some(message) = self.ws.next().await {
                match message {
                    Ok(Message::Binary(data)) => match decode(data)? {
                        Frame::Ssh(_) => continue,
                        frame => return Ok(Some(frame)),
                    },
                    Ok(Message::Close(_)) | Err(_) => return Ok(None),
                    Ok(_) => continue,
                }
            }
            Ok(None)
        })
        .await
        .context("the relay did not answer in time")?
    }

    /// Reads frames until `pick` takes one, skipping the others; fails on an Error frame
    /// `pick` does not take, when the relay closes, or after [`ANSWER`].
    pub async fn next_matching<T>(
        &mut self,
        mut pick: impl FnMut(Frame) -> Option<T>,
    ) -> Result<T> {
        loop {
            match self.next().await? {
                None => bail!("the relay closed the session"),
                Some(frame) => {
                    let error = match &frame {
                        Frame::Error { code, message } => Some(format!("{code:?} {message}")),
                        _ => None,
                    };
                    if let Some(found) = pick(frame) {
                        return Ok(found);
                    }
                    if let Some(error) = error {
                        bail!("the relay refused: {error}");
                    }
                }
            }
        }
    }

    /// What the relay answered the Hello: `Ok` for a Welcome, else the Error's code and
    /// message.
    pub async fn welcome(&mut self) -> Result<Result<(), (ErrorCode, String)>> {
        match self.next().await? {
            Some(Frame::Welcome { .. }) => Ok(Ok(())),
            Some(Frame::Error { code, message }) => Ok(Err((code, message))),
            other => bail!("expected Welcome or Error, got {other:?}"),
        }
    }

    /// Sends a Listen (the next forward id) and returns the relay's answer: the listening
    /// address, or ListenFailed's code and message. Fails if the session ends instead.
    pub async fn listen(
        &mut self,
        bind: &str,
        port: u16,
    ) -> Result<Result<String, (ErrorCode, String)>> {
        let forward = self.next_forward;
        self.next_forward += 1;
        self.send(&Frame::Listen {
            forward,
            bind: bind.into(),
            port,
        })
        .await?;
        self.next_matching(|frame| match frame {
            Frame::Listening {
                forward: f,
                address,
            } if f == forward => Some(Ok(address)),
            Frame::ListenFailed {
                forward: f,
                code,
                message,
            } if f == forward => Some(Err((code, message))),
            _ => None,
        })
        .await
    }

    /// Sends a Listen on any port and returns the address the relay listens on.
    pub async fn listening(&mut self, bind: &str) -> Result<String> {
        self.listen(bind, 0)
            .await?
            .map_err(|(code, message)| anyhow::anyhow!("Listen failed: {code:?} {message}"))
    }

    /// Opens a forward and one TCP connection to it; returns the connection's id.
    pub async fn accepted_connection(&mut self) -> Result<(u32, TcpStream)> {
        let address = self.listening("").await?;
        let stream = TcpStream::connect(&address).await?;
        let conn = self
            .next_matching(|frame| match frame {
                Frame::Accept { conn, .. } => Some(conn),
                _ => None,
            })
            .await?;
        Ok((conn, stream))
    }

    /// Waits for the relay's Error frame.
    pub async fn error(&mut self) -> Result<(ErrorCode, String)> {
        while let Some(frame) = self.next().await? {
            if let Frame::Error { code, message } = frame {
                return Ok((code, message));
            }
        }
        bail!("the relay closed without an Error frame")
    }

    /// Reads what the relay sends until it closes (within `within`); returns its Error
    /// frame and the WebSocket close code.
    pub async fn goodbye(
        &mut self,
        within: Duration,
    ) -> Result<(Option<(ErrorCode, String)>, Option<u16>)> {
        let read = async {
            let (mut error, mut close) = (None, None);
            while let Some(Ok(message)) = self.ws.next().await {
                match message {
                    Message::Binary(data) => {
                        if let Ok(Frame::Error { code, message }) = decode(data) {
                            error = Some((code, message));
                        }
                    }
                    Message::Close(frame) => close = frame.map(|f| u16::from(f.code)),
                    _ => {}
                }
            }
            (error, close)
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| anyhow::anyhow!("the relay did not close the WebSocket within {within:?}"))
    }

    /// Whether the relay keeps the WebSocket open, with no Error, for `look` (a short look:
    /// the events that would end it have happened before this is asked). SSH bytes and
    /// pings may come.
    pub async fn held(&mut self, look: Duration) -> bool {
        let ended = async {
            while let Some(Ok(message)) = self.ws.next().await {
                match message {
                    Message::Binary(data) if matches!(decode(data.clone()), Ok(Frame::Ssh(_))) => {}
                    Message::Ping(_) | Message::Pong(_) => {}
                    _ => return,
                }
            }
        };
        tokio::time::timeout(look, ended).await.is_err()
    }
}

/// A TCP socket bound to `from` on any port.
pub fn socket_from(from: IpAddr) -> Result<TcpSocket> {
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    Ok(socket)
}

/// The `host:port` of a `ws://host:port/...` address.
fn address_of(ws_url: &str) -> Result<SocketAddr> {
    let rest = ws_url
        .strip_prefix("ws://")
        .with_context(|| format!("{ws_url} is not a ws:// address"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .parse()
        .with_context(|| format!("{ws_url} does not name an IP address and port"))
}
