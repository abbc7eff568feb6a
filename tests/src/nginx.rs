//! nginx (Debian's nginx-light) on a free loopback port as the relay's reverse proxy or
//! load balancer, configured as the README says: WebSocket upgrades passed on, the client
//! appended to `X-Forwarded-For`, long WebSocket timeouts, and a relay that refuses
//! connections or answers 502/503 passed over (nginx-light has no active health checks).
//! One process (no master, no daemon), killed on drop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// In front of one relay.
    pub async fn proxy(relay: SocketAddr) -> Result<Self> {
        Self::balance(&[relay.to_string()]).await
    }

    /// In front of `relays` (`HOST:PORT` each), round robin.
    pub async fn balance(relays: &[String]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = crate::sshd::free_port()?;
        let conf = config(dir.path(), port, relays);
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = tokio::process::Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg("stderr")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("nginx (Debian's nginx-light; `cargo xtask setup` installs it)")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        crate::wait_for("nginx to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await?;
        Ok(Self {
            addr,
            _child: child,
            _dir: dir,
        })
    }

    /// `ws://127.0.0.1:PORT/ws`: the relays' sessions, through nginx.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// The whole nginx.conf: the `upstream` and `location` are the README's "Many relays"
/// example; the rest keeps nginx's files in `dir`.
fn config(dir: &std::path::Path, port: u16, relays: &[String]) -> String {
    let d = dir.display();
    let servers: String = relays
        .iter()
        .map(|relay| format!("    server {relay} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream relays {{\n{servers}  }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
         proxy_pass http://relays;\n      proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
         proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         proxy_connect_timeout 5s;\n      proxy_read_timeout 1h;\n      proxy_send_timeout 1h;\n\
         proxy_next_upstream error timeout http_502 http_503;\n    }}\n  }}\n}}\n"
    )
}
