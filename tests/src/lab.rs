//! The lab most tests stand in: a real sshd and the in-process relay with target "sshd"
//! leading to it, set up in one line, with the steps tests repeat (log in, open a forward
//! to an echo service) as methods. Everything stops on drop.

use anyhow::Result;
use tabtunnel_client::{ClientError, ConnectOptions, Forward, Session};
use tabtunnel_relay::Config;

use crate::relay::{Relay, TokenFile, test_config};
use crate::services::EchoServer;
use crate::sshd::{Sshd, SshdOptions};

/// sshd plus a relay with target "sshd" at it. Keep it alive for the whole test.
#[derive(Debug)]
pub struct Lab {
    pub sshd: Sshd,
    pub relay: Relay,
    /// The relay read it at start; kept so that its folder outlives the test's relays.
    tokens: Option<TokenFile>,
}

/// A change a test makes to the relay's config.
type ConfigChange = Box<dyn FnOnce(&mut Config) + Send>;

/// What a [`Lab`] is started with; [`Lab::builder`] makes one with the test defaults.
#[must_use]
pub struct LabBuilder {
    sshd: SshdOptions,
    toml: String,
    tokens: Option<String>,
    configure: Vec<ConfigChange>,
}

impl std::fmt::Debug for LabBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabBuilder")
            .field("sshd", &self.sshd)
            .field("toml", &self.toml)
            .field("tokens", &self.tokens.is_some())
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl LabBuilder {
    /// One more `sshd_config` line (e.g. `AllowTcpForwarding no`).
    pub fn sshd_config(mut self, line: impl Into<String>) -> Self {
        self.sshd.extra_config.push(line.into());
        self
    }

    /// The relay's settings as an operator writes them in relay.toml.
    pub fn relay_toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    /// A token file with these `NAME TOKEN` lines.
    pub fn tokens(mut self, lines: &str) -> Self {
        self.tokens = Some(lines.to_owned());
        self
    }

    /// Changes the relay's config after the TOML and the test defaults are applied.
    pub fn configure(mut self, change: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    pub async fn start(self) -> Result<Lab> {
        crate::init_logging();
        let sshd = Sshd::start_with(self.sshd).await?;
        let tokens = self.tokens.as_deref().map(TokenFile::new).transpose()?;
        let mut config = test_config(&self.toml, &sshd.address(), tokens.as_ref())?;
        for change in self.configure {
            change(&mut config);
        }
        let relay = Relay::start_with(config).await?;
        Ok(Lab {
            sshd,
            relay,
            tokens,
        })
    }
}

impl Lab {
    /// sshd with the test defaults and a relay with the test defaults.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    pub fn builder() -> LabBuilder {
        LabBuilder {
            sshd: SshdOptions::default(),
            toml: String::new(),
            tokens: None,
            configure: Vec::new(),
        }
    }

    /// Another relay to this lab's sshd (target "sshd", the lab's tokens), with the test
    /// defaults and then `change`: for tests that compare two relay settings.
    pub async fn another_relay(&self, change: impl FnOnce(&mut Config)) -> Result<Relay> {
        let mut config = test_config("", &self.sshd.address(), self.tokens.as_ref())?;
        change(&mut config);
        Relay::start_with(config).await
    }

    /// Options for logging in to sshd as its test user with its password, expecting its
    /// real host key ([`crate::sshd_login`]).
    pub fn login(&self) -> ConnectOptions {
        crate::sshd_login(&self.sshd)
    }

    /// Logs in through the lab's relay with [`Lab::login`].
    pub async fn log_in(&self) -> Result<Session, ClientError> {
        self.log_in_with(self.login()).await
    }

    /// Logs in through the lab's relay with `options`.
    pub async fn log_in_with(&self, options: ConnectOptions) -> Result<Session, ClientError> {
        crate::log_in(&self.relay.ws_url(), options).await
    }
}

/// An echo service on 127.0.0.1 and a forward of `session` to it.
pub async fn echo_forward(session: &Session) -> Result<(EchoServer, Forward)> {
    let echo = EchoServer::start("127.0.0.1").await?;
    let fwd = session.forward(&format!("0:{}", echo.addr)).await?;
    Ok((echo, fwd))
}
