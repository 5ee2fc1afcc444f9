//! `kind = "syslog"`: RFC 5424 messages over UDP (one a datagram) or TCP
//! (octet-counted framing, RFC 6587), reconnecting after a failed write.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Output;
use crate::error::SinkError;
use crate::format::{Body, Record};

/// Transport of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSink {
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// `udp` (default) or `tcp`.
    pub protocol: Option<Protocol>,
    /// Facility number (default 16, local0).
    pub facility: Option<u8>,
    /// `ecs` (default) or `cef` in the message.
    pub format: Option<Body>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

impl SyslogSink {
    pub(super) fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.address.to_socket_addrs().map(|mut i| i.next().is_none()).unwrap_or(true) {
            p.push(format!("{at}.address: {:?} is not host:port", self.address));
        }
        if self.facility.is_some_and(|f| f > 23) {
            p.push(format!("{at}.facility: must be 0 to 23"));
        }
        p
    }

    pub(super) fn output(&self, host: &str) -> Box<dyn Output> {
        let line = Line {
            facility: self.facility.unwrap_or(16),
            body: self.format.unwrap_or(Body::Ecs),
            host: host.to_owned(),
        };
        let address = self.address.clone();
        match self.protocol.unwrap_or(Protocol::Udp) {
            Protocol::Udp => Box::new(Udp { socket: None, address, line }),
            Protocol::Tcp => Box::new(Tcp { stream: None, address, line }),
        }
    }
}

/// How each event becomes a message.
struct Line {
    facility: u8,
    body: Body,
    host: String,
}

impl Line {
    fn of(&self, e: &Record) -> String {
        e.rfc5424(self.facility, &self.host, self.body)
    }
}

struct Udp {
    socket: Option<UdpSocket>,
    address: String,
    line: Line,
}

impl Output for Udp {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let socket = match &mut self.socket {
            Some(s) => s,
            None => {
                let ipv6 = self.address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.is_ipv6());
                self.socket.insert(UdpSocket::bind(if ipv6 { "[::]:0" } else { "0.0.0.0:0" })?)
            }
        };
        for e in batch {
            let message = self.line.of(e);
            // One message per datagram; keep under the common 64 KiB limit.
            let bytes = &message.as_bytes()[..message.len().min(60_000)];
            socket.send_to(bytes, self.address.as_str())?;
        }
        Ok(())
    }
}

struct Tcp {
    stream: Option<TcpStream>,
    address: String,
    line: Line,
}

impl Output for Tcp {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let addr = self
                    .address
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| SinkError::Transport(format!("{} resolves to nothing", self.address)))?;
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                s.set_write_timeout(Some(Duration::from_secs(10)))?;
                s.set_nodelay(true)?;
                self.stream.insert(s)
            }
        };
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for e in batch {
            let message = self.line.of(e);
            write!(buf, "{} {}", message.len(), message)?;
        }
        let res = stream.write_all(&buf).and_then(|_| stream.flush());
        if res.is_err() {
            // Reconnect on the next try; the batch is sent again.
            self.stream = None;
        }
        Ok(res?)
    }
}
