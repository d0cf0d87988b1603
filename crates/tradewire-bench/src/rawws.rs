//! A minimal WebSocket client for the fan-out scenario: the upgrade written by hand, then
//! frames parsed in place from one reusable buffer.
//!
//! The fan-out bench runs 10,000 clients on the same two cores as the server, so what a
//! client costs per frame is taken from the server. Through tokio-tungstenite each frame
//! took a split-stream lock, an owned `Message` and its buffer bookkeeping; here a frame
//! costs a header parse and a look at its bytes. It implements only what a receiving client
//! needs: unfragmented frames from the server, masked frames (subscribe, pong) to it.
//! The `chaos` scenario also uses it to send what a well-behaved client never would
//! (frames of any opcode, size or content) from a chosen source address.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const READ_CHUNK: usize = 4096;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What the server answered to an upgrade.
pub enum Upgrade {
    Open(RawWs),
    /// Not upgraded: the HTTP status and the start of the answer.
    Refused {
        status: u16,
        head: String,
    },
}

/// A TCP connection to `server` from `local` (bound with `SO_REUSEADDR`, so ports in
/// `TIME_WAIT` can be taken again), or from any local address.
pub async fn tcp_from(local: Option<IpAddr>, server: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = local else { return TcpStream::connect(server).await };
    let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(server).await
}

/// A connected, upgraded client.
pub struct RawWs {
    stream: TcpStream,
    /// Zero-filled once; bytes read are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RawWs {
    /// Connect to `ws_url`, upgrade with a bearer token.
    pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<Self> {
        match Self::upgrade(ws_url, Some(token), None).await? {
            Upgrade::Open(ws) => Ok(ws),
            Upgrade::Refused { head, .. } => anyhow::bail!("upgrade refused: {head}"),
        }
    }

    /// Connect to `ws_url` from `local` (any local address when `None`) and ask for the
    /// upgrade, with a bearer token when one is given: the socket, or the HTTP status the
    /// server refused the upgrade with.
    pub async fn upgrade(
        ws_url: &str,
        token: Option<&str>,
        local: Option<IpAddr>,
    ) -> anyhow::Result<Upgrade> {
        let req = ws_url.into_client_request()?;
        let uri = req.uri();
        let host = uri.host().context("no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let server = tokio::net::lookup_host((host.as_str(), port)).await?.next().context("no address")?;
        let mut stream = tcp_from(local, server).await?;
        stream.set_nodelay(true)?;
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let upgrade = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        );
        stream.write_all(upgrade.as_bytes()).await?;
        let mut ws = Self { stream, buf: vec![0; READ_CHUNK], start: 0, end: 0 };
        let end = loop {
            if let Some(at) = ws.buf[..ws.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(ws.end < 16 * 1024, "upgrade answer too long");
            anyhow::ensure!(ws.fill().await? > 0, "closed during the upgrade");
        };
        if !ws.buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&ws.buf[..end.min(200)]).into_owned();
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return Ok(Upgrade::Refused { status, head });
        }
        // Frames may already follow the answer: keep them.
        ws.start = end;
        Ok(Upgrade::Open(ws))
    }

    /// Read more bytes after the unparsed ones (moved to the front first).
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Send a masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await
    }

    /// The next frame from the server: its opcode and payload (valid until the next call).
    /// Pings are answered. `None` when the connection ends.
    pub async fn next(&mut self) -> anyhow::Result<Option<(u8, &[u8])>> {
        loop {
            if let Some((opcode, payload)) = self.parse()? {
                self.start = payload.end;
                if opcode == OP_PING {
                    let data = self.buf[payload.clone()].to_vec();
                    self.send(OP_PONG, &data).await?;
                    continue;
                }
                return Ok(Some((opcode, &self.buf[payload])));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A whole frame at `start`, if the buffer holds one.
    fn parse(&self) -> anyhow::Result<Option<(u8, Range<usize>)>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(None);
        }
        anyhow::ensure!(b[0] & 0x80 != 0, "fragmented frames are not expected from the server");
        anyhow::ensure!(b[1] & 0x80 == 0, "a server frame must not be masked");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into()?) as usize, 10),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if b.len() < header + len {
            return Ok(None);
        }
        let at = self.start + header;
        Ok(Some((b[0] & 0x0f, at..at + len)))
    }
}
