//! Exporters. Each sink runs on its own thread and follows the event log by
//! id from a durable cursor (`sink_cursors` in the event log): it reads a
//! batch after its cursor, ships it, and only then advances the cursor. A
//! failed shipment is retried with exponential backoff (100 ms to 30 s), so
//! an outage loses nothing that retention still keeps, and delivery is
//! **at-least-once**: a crash between a shipment and its cursor write, or a
//! partial failure, re-sends a batch. Elasticsearch documents carry the event
//! id as `_id`, so re-sends there are idempotent.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::event::UsageEvent;
use keyward_core::time::now_ms;
use keyward_store::events::SqliteEventLog;
use serde::{Deserialize, Serialize};

use crate::error::SinkError;
use crate::format::{self, Body};
use crate::pipeline::PipelineStats;

/// What kind of endpoint a sink ships to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// JSON lines (ECS) or CEF lines in a file, rotated by size and day.
    File,
    /// RFC 5424 over UDP or TCP (octet-counted framing, RFC 6587).
    Syslog,
    /// Elasticsearch `_bulk`.
    Elasticsearch,
    /// Splunk HTTP Event Collector.
    Splunk,
    /// Any endpoint taking NDJSON (one ECS document per line).
    Http,
}

/// Transport of a syslog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Udp,
    Tcp,
}

mod config;
pub use config::{ElasticsearchSink, FileSink, HttpSink, SinkConfig, SplunkSink, SyslogSink};

/// A sink's settings as the running sink reads them: every option of every
/// kind, flat. Made from a typed [`SinkConfig`] (which cannot hold an option
/// that does not apply); [`SinkSettings::problems`] checks the values.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Unique; names the cursor and the metrics of this sink.
    pub name: String,
    pub kind: SinkKind,
    /// `ecs` (default) or `cef`, for `file` and `syslog`.
    pub format: Option<Body>,
    /// `file`: where to write.
    pub path: Option<PathBuf>,
    /// `file`: rotate past this size (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// `file`: also rotate when the UTC day changes (default true).
    pub rotate_daily: Option<bool>,
    /// `file`: rotated files kept (default 7).
    pub keep: Option<u32>,
    /// `syslog`: `host:port`.
    pub address: Option<String>,
    /// `syslog`: `udp` (default) or `tcp`.
    pub protocol: Option<Protocol>,
    /// `syslog`: facility number (default 16, local0).
    pub facility: Option<u8>,
    /// `elasticsearch`, `splunk`, `http`: the endpoint. For Elasticsearch the
    /// base URL (`/_bulk` is added), for Splunk the HEC URL
    /// (`/services/collector/event` is added), for `http` the full URL.
    pub url: Option<String>,
    /// `elasticsearch`: index or data stream (default `keyward-events`).
    pub index: Option<String>,
    /// `splunk`: the HEC token.
    pub token: Option<String>,
    /// `http`, `elasticsearch`: extra request headers (e.g. Authorization).
    pub headers: Option<BTreeMap<String, String>>,
    /// `https://` endpoints: a PEM file of CA certificates to trust besides
    /// the public web roots (for a private CA or a self-signed endpoint).
    pub ca_file: Option<PathBuf>,
    /// Events per shipment (default 500).
    pub batch_size: Option<u32>,
    /// Start from the oldest kept event instead of the first one after the
    /// sink's first start (default false).
    pub from_beginning: Option<bool>,
}

impl SinkSettings {
    /// Settings of `kind` with nothing set.
    pub fn blank(kind: SinkKind) -> SinkSettings {
        SinkSettings {
            name: String::new(),
            kind,
            format: None,
            path: None,
            max_bytes: None,
            rotate_daily: None,
            keep: None,
            address: None,
            protocol: None,
            facility: None,
            url: None,
            index: None,
            token: None,
            headers: None,
            ca_file: None,
            batch_size: None,
            from_beginning: None,
        }
    }

    /// Every problem of this entry, prefixed with `at` (e.g. `sinks[0]`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            p.push(format!("{at}.name: use letters, digits, - and _"));
        }
        let need = |p: &mut Vec<String>, ok: bool, field: &str| {
            if !ok {
                p.push(format!("{at}.{field}: required for kind {:?}", self.kind));
            }
        };
        match self.kind {
            SinkKind::File => need(&mut p, self.path.is_some(), "path"),
            SinkKind::Syslog => {
                need(&mut p, self.address.is_some(), "address");
                if let Some(a) = &self.address
                    && a.to_socket_addrs().map(|mut i| i.next().is_none()).unwrap_or(true)
                {
                    p.push(format!("{at}.address: {a:?} is not host:port"));
                }
                if self.facility.is_some_and(|f| f > 23) {
                    p.push(format!("{at}.facility: must be 0 to 23"));
                }
            }
            SinkKind::Elasticsearch | SinkKind::Http => need(&mut p, self.url.is_some(), "url"),
            SinkKind::Splunk => {
                need(&mut p, self.url.is_some(), "url");
                need(&mut p, self.token.is_some(), "token");
            }
        }
        if let Some(u) = &self.url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            p.push(format!("{at}.url: must start with http:// or https://"));
        }
        if let Some(f) = &self.ca_file
            && let Err(e) = load_roots(Some(f))
        {
            p.push(format!("{at}.ca_file: {e}"));
        }
        if self.batch_size == Some(0) {
            p.push(format!("{at}.batch_size: must be at least 1"));
        }
        p
    }
}

/// What `/readyz` and `/metrics` say about a sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkHealth {
    pub name: String,
    pub kind: SinkKind,
    /// False after a failed shipment, until the next success.
    pub up: bool,
    pub shipped: u64,
    pub failures: u64,
    /// Events written to the log but not yet shipped.
    pub backlog: i64,
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

/// The running sinks.
pub struct Sinks {
    health: Vec<Arc<Mutex<SinkHealth>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Sinks {
    /// Starts one thread per configured sink (fails only when the OS refuses a thread).
    pub fn start(
        cfgs: &[SinkConfig],
        log: Arc<SqliteEventLog>,
        stats: Arc<PipelineStats>,
        host: String,
    ) -> std::io::Result<Sinks> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut health = Vec::new();
        let mut threads = Vec::new();
        for cfg in cfgs.iter().map(SinkConfig::settings) {
            let h = Arc::new(Mutex::new(SinkHealth {
                name: cfg.name.clone(),
                kind: cfg.kind,
                up: true,
                shipped: 0,
                failures: 0,
                backlog: 0,
                last_error: None,
                last_success_at: None,
            }));
            health.push(h.clone());
            let runner = Runner {
                cfg: cfg.clone(),
                log: log.clone(),
                stats: stats.clone(),
                host: host.clone(),
                health: h,
                stop: stop.clone(),
            };
            let t =
                std::thread::Builder::new().name(format!("keyward-sink-{}", cfg.name)).spawn(move || runner.run())?;
            threads.push(t);
        }
        Ok(Sinks { health, stop, threads: Mutex::new(threads) })
    }

    pub fn health(&self) -> Vec<SinkHealth> {
        self.health.iter().map(|h| h.lock().clone()).collect()
    }

    /// Asks every sink to stop after its current shipment, giving each up to
    /// `drain` to ship what is already written.
    pub fn stop(&self, drain: Duration) {
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline && self.health().iter().any(|h| h.backlog > 0 && h.up) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

struct Runner {
    cfg: SinkSettings,
    log: Arc<SqliteEventLog>,
    stats: Arc<PipelineStats>,
    host: String,
    health: Arc<Mutex<SinkHealth>>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    fn set_health(&self, f: impl FnOnce(&mut SinkHealth)) {
        f(&mut self.health.lock());
    }

    fn run(self) {
        let name = self.cfg.name.clone();
        let mut cursor = loop {
            match self.start_cursor() {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "Reading the sink cursor failed; retrying.");
                    if self.sleep(Duration::from_secs(1)) {
                        return;
                    }
                }
            }
        };
        let mut out = Output::new(&self.cfg, &self.host);
        let batch_size = self.cfg.batch_size.unwrap_or(500);
        let mut backoff = Duration::from_millis(100);
        while !self.stop.load(Ordering::Relaxed) {
            let newest = self.stats.last_id.load(Ordering::Relaxed);
            let backlog = (newest - cursor).max(0);
            self.set_health(|h| h.backlog = backlog);
            metrics::gauge!("keyward_sink_backlog", "sink" => name.clone()).set(backlog as f64);
            if backlog == 0 {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let batch = match self.log.after(cursor, batch_size) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, "Reading events for a sink failed.");
                    if self.sleep(backoff) {
                        return;
                    }
                    continue;
                }
            };
            let Some(last) = batch.last().map(|e| e.id) else {
                // Purged past the cursor, or ids skipped: catch up.
                cursor = newest;
                continue;
            };
            match out.ship(&batch) {
                Ok(()) => {
                    cursor = last;
                    if let Err(e) = self.log.set_cursor(&name, cursor, now_ms()) {
                        tracing::error!(sink = %name, error = %e, "Saving the sink cursor failed; events may be sent again.");
                    }
                    backoff = Duration::from_millis(100);
                    let n = batch.len() as u64;
                    metrics::counter!("keyward_sink_events_total", "sink" => name.clone()).increment(n);
                    metrics::gauge!("keyward_sink_up", "sink" => name.clone()).set(1.0);
                    self.set_health(|h| {
                        if !h.up {
                            tracing::info!(sink = %h.name, "Sink recovered.");
                        }
                        h.up = true;
                        h.shipped += n;
                        h.last_success_at = Some(keyward_core::time::to_rfc3339(now_ms()));
                    });
                }
                Err(e) => {
                    metrics::counter!("keyward_sink_failures_total", "sink" => name.clone()).increment(1);
                    metrics::gauge!("keyward_sink_up", "sink" => name.clone()).set(0.0);
                    let msg = e.to_string();
                    self.set_health(|h| {
                        if h.up {
                            tracing::error!(sink = %h.name, error = %msg, "Sink failing; events are kept and will be retried.");
                        }
                        h.up = false;
                        h.failures += 1;
                        h.last_error = Some(msg.chars().take(300).collect());
                    });
                    if self.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The saved cursor, or a new one (the log's end, or its start with
    /// `from_beginning`), saved at once so a restart resumes from it.
    fn start_cursor(&self) -> Result<i64, SinkError> {
        if let Some(c) = self.log.cursor(&self.cfg.name)? {
            return Ok(c);
        }
        let c = if self.cfg.from_beginning.unwrap_or(false) { 0 } else { self.log.max_id()? };
        self.log.set_cursor(&self.cfg.name, c, now_ms())?;
        Ok(c)
    }

    /// Sleeps in small steps; true when asked to stop.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
        }
        self.stop.load(Ordering::Relaxed)
    }
}

/// The endpoint side of a sink.
enum Output {
    File(Box<FileOut>),
    Udp { socket: Option<UdpSocket>, address: String, facility: u8, body: Body, host: String },
    Tcp { stream: Option<TcpStream>, address: String, facility: u8, body: Body, host: String },
    Http { agent: Result<ureq::Agent, String>, kind: SinkKind, cfg: Box<SinkSettings>, host: String },
}

impl Output {
    fn new(cfg: &SinkSettings, host: &str) -> Output {
        let body = cfg.format.unwrap_or(Body::Ecs);
        let host = host.to_owned();
        match cfg.kind {
            SinkKind::File => Output::File(Box::new(FileOut {
                path: cfg.path.clone().unwrap_or_default(),
                max_bytes: cfg.max_bytes.unwrap_or(100 * 1024 * 1024),
                daily: cfg.rotate_daily.unwrap_or(true),
                keep: cfg.keep.unwrap_or(7),
                body,
                host,
                file: None,
            })),
            SinkKind::Syslog => {
                let address = cfg.address.clone().unwrap_or_default();
                let facility = cfg.facility.unwrap_or(16);
                match cfg.protocol.unwrap_or(Protocol::Udp) {
                    Protocol::Udp => Output::Udp { socket: None, address, facility, body, host },
                    Protocol::Tcp => Output::Tcp { stream: None, address, facility, body, host },
                }
            }
            kind => Output::Http { agent: http_agent(cfg.ca_file.as_deref()), kind, cfg: Box::new(cfg.clone()), host },
        }
    }

    fn ship(&mut self, batch: &[UsageEvent]) -> Result<(), SinkError> {
        match self {
            Output::File(f) => f.write(batch),
            Output::Udp { socket, address, facility, body, host } => {
                let s = match socket {
                    Some(s) => s,
                    None => {
                        let any = if address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.is_ipv6()) {
                            "[::]:0"
                        } else {
                            "0.0.0.0:0"
                        };
                        socket.insert(UdpSocket::bind(any)?)
                    }
                };
                for e in batch {
                    let line = format::rfc5424(e, *facility, host, *body);
                    // One message per datagram; keep under the common 64 KiB limit.
                    let bytes = &line.as_bytes()[..line.len().min(60_000)];
                    s.send_to(bytes, address.as_str())?;
                }
                Ok(())
            }
            Output::Tcp { stream, address, facility, body, host } => {
                let s = match stream {
                    Some(s) => s,
                    None => {
                        let addr = address
                            .to_socket_addrs()?
                            .next()
                            .ok_or_else(|| SinkError::Transport(format!("{address} resolves to nothing")))?;
                        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                        s.set_write_timeout(Some(Duration::from_secs(10)))?;
                        s.set_nodelay(true)?;
                        stream.insert(s)
                    }
                };
                let mut buf = Vec::with_capacity(batch.len() * 512);
                for e in batch {
                    let line = format::rfc5424(e, *facility, host, *body);
                    write!(buf, "{} {}", line.len(), line)?;
                }
                let res = s.write_all(&buf).and_then(|_| s.flush());
                if res.is_err() {
                    // Reconnect on the next try; the batch is sent again.
                    *stream = None;
                }
                Ok(res?)
            }
            Output::Http { agent, kind, cfg, host } => match agent {
                Ok(agent) => ship_http(agent, *kind, cfg, host, batch),
                Err(e) => Err(SinkError::Transport(format!("TLS setup: {e}"))),
            },
        }
    }
}

/// The public web roots, plus the certificates of `ca_file` if given.
fn load_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(f) = ca_file {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))? {
            let cert = cert.map_err(|e| format!("{}: {e}", f.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", f.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no PEM certificate in it", f.display()));
        }
    }
    Ok(roots)
}

/// An HTTP(S) agent: certificates are verified against the public web roots
/// and, if given, the sink's own CA file.
fn http_agent(ca_file: Option<&std::path::Path>) -> Result<ureq::Agent, String> {
    let roots = load_roots(ca_file)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tls_config(std::sync::Arc::new(tls))
        .build())
}

fn ship_http(
    agent: &ureq::Agent,
    kind: SinkKind,
    cfg: &SinkSettings,
    host: &str,
    batch: &[UsageEvent],
) -> Result<(), SinkError> {
    let base = cfg.url.as_deref().unwrap_or_default().trim_end_matches('/');
    let mut body = String::with_capacity(batch.len() * 700);
    let (url, content_type) = match kind {
        SinkKind::Elasticsearch => {
            let index = cfg.index.as_deref().unwrap_or("keyward-events");
            for e in batch {
                let action =
                    serde_json::json!({"create": {"_index": index, "_id": format!("{}-{}", e.workspace_id, e.id)}});
                body.push_str(&action.to_string());
                body.push('\n');
                body.push_str(&format::ecs(e, host).to_string());
                body.push('\n');
            }
            (format!("{base}/_bulk"), "application/x-ndjson")
        }
        SinkKind::Splunk => {
            for e in batch {
                let ev = serde_json::json!({
                    "time": e.ts as f64 / 1000.0,
                    "host": host,
                    "source": "keyward",
                    "sourcetype": "keyward:usage",
                    "event": format::ecs(e, host),
                });
                body.push_str(&ev.to_string());
                body.push('\n');
            }
            (format!("{base}/services/collector/event"), "application/json")
        }
        _ => {
            for e in batch {
                body.push_str(&format::ecs(e, host).to_string());
                body.push('\n');
            }
            (base.to_owned(), "application/x-ndjson")
        }
    };
    let mut req = agent.post(&url).set("Content-Type", content_type);
    if let Some(t) = &cfg.token {
        req = req.set("Authorization", &format!("Splunk {t}"));
    }
    for (k, v) in cfg.headers.iter().flatten() {
        req = req.set(k, v);
    }
    let res = match req.send_string(&body) {
        Ok(r) => r,
        Err(ureq::Error::Status(status, r)) => {
            let body: String = r.into_string().unwrap_or_default().chars().take(200).collect();
            return Err(SinkError::Status { status, body });
        }
        Err(e) => return Err(SinkError::Transport(e.to_string())),
    };
    if kind == SinkKind::Elasticsearch {
        let v: serde_json::Value = res.into_json().map_err(|e| SinkError::Transport(e.to_string()))?;
        if v["errors"] == true {
            // 409: the document exists already (a re-send); anything else fails the batch.
            let bad = v["items"].as_array().into_iter().flatten().find(|i| {
                let status = i["create"]["status"].as_u64().unwrap_or(200);
                status >= 300 && status != 409
            });
            if let Some(item) = bad {
                return Err(SinkError::Rejected(item["create"]["error"].to_string().chars().take(200).collect()));
            }
        }
    }
    Ok(())
}

/// A rotated file of lines.
struct FileOut {
    path: PathBuf,
    max_bytes: u64,
    daily: bool,
    keep: u32,
    body: Body,
    host: String,
    /// The open file, its size, and the UTC day it was opened on.
    file: Option<(std::fs::File, u64, i64)>,
}

impl FileOut {
    fn write(&mut self, batch: &[UsageEvent]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 700);
        for e in batch {
            match self.body {
                Body::Ecs => {
                    serde_json::to_writer(&mut buf, &format::ecs(e, &self.host)).map_err(std::io::Error::other)?
                }
                Body::Cef => buf.extend_from_slice(format::cef(e).as_bytes()),
            }
            buf.push(b'\n');
        }
        let today = now_ms().div_euclid(86_400_000);
        let rotate = match &self.file {
            Some((_, size, day)) => {
                *size > 0 && (*size + buf.len() as u64 > self.max_bytes || (self.daily && *day != today))
            }
            None => false,
        };
        if rotate {
            self.rotate()?;
        }
        let (f, size, _) = match &mut self.file {
            Some(open) => open,
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
                let meta = f.metadata()?;
                let day = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| (d.as_millis() as i64).div_euclid(86_400_000))
                    .unwrap_or(today);
                self.file.insert((f, meta.len(), if meta.len() == 0 { today } else { day }))
            }
        };
        f.write_all(&buf)?;
        f.sync_data()?;
        *size += buf.len() as u64;
        Ok(())
    }

    /// Renames the current file to `<path>.<UTC timestamp>` and drops the
    /// oldest rotated files beyond `keep`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file = None;
        let stamp = keyward_core::time::to_rfc3339(now_ms()).replace([':', '-'], "").replace('.', "");
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        std::fs::rename(&self.path, &rotated)?;
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}."))))
            .collect();
        old.sort();
        while old.len() > self.keep as usize {
            let p = old.remove(0);
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
