//! Exporters, one module per kind (the shape Vector uses: `sinks/<name>`):
//! each holds its `[[sinks]]` table and its [`Output`]. Each sink runs on its
//! own thread and follows the event log by id from a durable cursor
//! (`sink_cursors` in the event log): it reads a batch after its cursor,
//! ships it, and only then advances the cursor. A failed shipment is retried
//! with exponential backoff (100 ms to 30 s), so an outage loses nothing that
//! retention still keeps, and delivery is **at-least-once**: a crash between
//! a shipment and its cursor write, or a partial failure, re-sends a batch.
//! Elasticsearch documents carry the event id as `_id`, so re-sends there
//! are idempotent.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::time::now_ms;
use keyward_store::alerts::AlertStore;
use keyward_store::events::EventLog;
use serde::{Deserialize, Serialize};

use crate::error::SinkError;
use crate::format::Record;
use crate::pipeline::PipelineStats;

mod elasticsearch;
mod file;
mod http;
mod splunk;
mod syslog;

pub use elasticsearch::ElasticsearchSink;
pub use file::FileSink;
pub use http::HttpSink;
pub use splunk::SplunkSink;
pub use syslog::{Protocol, SyslogSink};

/// The endpoint side of a sink: ships one batch, or fails it whole (the
/// runner sends it again).
pub trait Output: Send {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError>;
}

/// What kind of endpoint a sink ships to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    File,
    Syslog,
    Elasticsearch,
    Splunk,
    Http,
}

/// One `[[sinks]]` entry: one struct per kind, chosen by `kind`, so an option
/// that does not apply to a kind cannot be written and a required one cannot
/// be left out (as in Vector's `src/sinks/http/config.rs`). Every kind also
/// has `name` (unique; names the cursor and the metrics), `batch_size`
/// (events per shipment, default 500) and `from_beginning` (start from the
/// oldest kept event instead of the first one after the sink's first start).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON lines (ECS) or CEF lines in a file, rotated by size and day.
    File(FileSink),
    /// RFC 5424 over UDP or TCP (octet-counted framing, RFC 6587).
    Syslog(SyslogSink),
    /// Elasticsearch `_bulk`.
    Elasticsearch(ElasticsearchSink),
    /// Splunk HTTP Event Collector.
    Splunk(SplunkSink),
    /// Any endpoint taking NDJSON (one ECS document per line).
    Http(HttpSink),
}

/// `$body` with `$s` bound to the kind's own struct.
macro_rules! each_kind {
    ($cfg:expr, $s:ident => $body:expr) => {
        match $cfg {
            SinkConfig::File($s) => $body,
            SinkConfig::Syslog($s) => $body,
            SinkConfig::Elasticsearch($s) => $body,
            SinkConfig::Splunk($s) => $body,
            SinkConfig::Http($s) => $body,
        }
    };
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        each_kind!(self, s => &s.name)
    }

    pub fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::File(_) => SinkKind::File,
            SinkConfig::Syslog(_) => SinkKind::Syslog,
            SinkConfig::Elasticsearch(_) => SinkKind::Elasticsearch,
            SinkConfig::Splunk(_) => SinkKind::Splunk,
            SinkConfig::Http(_) => SinkKind::Http,
        }
    }

    fn batch_size(&self) -> u32 {
        each_kind!(self, s => s.batch_size).unwrap_or(500)
    }

    fn starts_at_oldest(&self) -> bool {
        each_kind!(self, s => s.from_beginning).unwrap_or(false)
    }

    /// Every problem of this entry's values, prefixed with `at` (e.g. `sinks[0]`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        let name = self.name();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            p.push(format!("{at}.name: use letters, digits, - and _"));
        }
        if self.batch_size() == 0 {
            p.push(format!("{at}.batch_size: must be at least 1"));
        }
        p.extend(each_kind!(self, s => s.problems(at)));
        p
    }

    /// The running endpoint; `host` names this machine in exported events.
    pub fn output(&self, host: &str) -> Box<dyn Output> {
        each_kind!(self, s => s.output(host))
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
        log: Arc<dyn EventLog>,
        stats: Arc<PipelineStats>,
        host: String,
        alerts: Option<Arc<dyn AlertStore>>,
    ) -> std::io::Result<Sinks> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut health = Vec::new();
        let mut threads = Vec::new();
        for cfg in cfgs {
            let h = Arc::new(Mutex::new(SinkHealth {
                name: cfg.name().to_owned(),
                kind: cfg.kind(),
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
                alerts: alerts.clone(),
            };
            let t =
                std::thread::Builder::new().name(format!("keyward-sink-{}", cfg.name())).spawn(move || runner.run())?;
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
    cfg: SinkConfig,
    log: Arc<dyn EventLog>,
    stats: Arc<PipelineStats>,
    host: String,
    health: Arc<Mutex<SinkHealth>>,
    stop: Arc<AtomicBool>,
    /// Where alert changes come from (exported as `event.kind: alert`), if anywhere.
    alerts: Option<Arc<dyn AlertStore>>,
}

impl Runner {
    fn set_health(&self, f: impl FnOnce(&mut SinkHealth)) {
        f(&mut self.health.lock());
    }

    fn run(self) {
        let name = self.cfg.name().to_owned();
        let alerts_name = format!("{name}#alerts");
        let start = |cursor: &dyn Fn() -> Result<i64, SinkError>, what: &str| loop {
            match cursor() {
                Ok(c) => break Some(c),
                Err(e) => {
                    tracing::error!(sink = %name, error = %e, what, "Reading the sink cursor failed; retrying.");
                    if self.sleep(Duration::from_secs(1)) {
                        return None;
                    }
                }
            }
        };
        let Some(mut cursor) = start(&|| self.start_cursor(), "usage events") else { return };
        let mut alert_cursor = match &self.alerts {
            Some(a) => match start(&|| self.start_alert_cursor(a.as_ref(), &alerts_name), "alerts") {
                Some(c) => c,
                None => return,
            },
            None => 0,
        };
        let mut out = self.cfg.output(&self.host);
        let batch_size = self.cfg.batch_size();
        let mut backoff = Duration::from_millis(100);
        let mut next_alert_poll = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // Alert changes first: few, and the most urgent records a sink carries.
            if let Some(a) = &self.alerts
                && Instant::now() >= next_alert_poll
            {
                next_alert_poll = Instant::now() + Duration::from_millis(200);
                match a.alert_changes_after(alert_cursor, batch_size) {
                    Ok(rows) if !rows.is_empty() => {
                        let last = rows.last().map_or(alert_cursor, |r| r.seq);
                        let records: Vec<Record> = rows.into_iter().map(Record::Alert).collect();
                        if self.deliver(out.as_mut(), &records, &name, &mut backoff) {
                            alert_cursor = last;
                            if let Err(e) = self.log.set_cursor(&alerts_name, last, now_ms()) {
                                tracing::error!(sink = %name, error = %e, "Saving the sink's alert cursor failed; alerts may be sent again.");
                            }
                            next_alert_poll = Instant::now();
                        } else if self.sleep(backoff) {
                            return;
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(sink = %name, error = %e, "Reading alert changes for a sink failed."),
                }
            }
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
            let records: Vec<Record> = batch.into_iter().map(Record::Usage).collect();
            if self.deliver(out.as_mut(), &records, &name, &mut backoff) {
                cursor = last;
                // Health says what is left as soon as a batch is out, not a loop later.
                let left = (self.stats.last_id.load(Ordering::Relaxed) - cursor).max(0);
                self.set_health(|h| h.backlog = left);
                if let Err(e) = self.log.set_cursor(&name, cursor, now_ms()) {
                    tracing::error!(sink = %name, error = %e, "Saving the sink cursor failed; events may be sent again.");
                }
            } else if self.sleep(backoff) {
                return;
            }
        }
    }

    /// Ships one batch and keeps health and metrics; true when it went out.
    /// On failure `backoff` doubles (up to 30 s) for the caller's wait.
    fn deliver(&self, out: &mut dyn Output, records: &[Record], name: &str, backoff: &mut Duration) -> bool {
        match out.ship(records) {
            Ok(()) => {
                *backoff = Duration::from_millis(100);
                let n = records.len() as u64;
                metrics::counter!("keyward_sink_events_total", "sink" => name.to_owned()).increment(n);
                metrics::gauge!("keyward_sink_up", "sink" => name.to_owned()).set(1.0);
                self.set_health(|h| {
                    if !h.up {
                        tracing::info!(sink = %h.name, "Sink recovered.");
                    }
                    h.up = true;
                    h.shipped += n;
                    h.last_success_at = Some(keyward_core::time::to_rfc3339(now_ms()));
                });
                true
            }
            Err(e) => {
                metrics::counter!("keyward_sink_failures_total", "sink" => name.to_owned()).increment(1);
                metrics::gauge!("keyward_sink_up", "sink" => name.to_owned()).set(0.0);
                let msg = e.to_string();
                self.set_health(|h| {
                    if h.up {
                        tracing::error!(sink = %h.name, error = %msg, "Sink failing; events are kept and will be retried.");
                    }
                    h.up = false;
                    h.failures += 1;
                    h.last_error = Some(msg.chars().take(300).collect());
                });
                *backoff = (*backoff * 2).min(Duration::from_secs(30));
                false
            }
        }
    }

    /// The alert history's saved cursor, or a new one (its end, or its start
    /// with `from_beginning`), saved at once.
    fn start_alert_cursor(&self, alerts: &dyn AlertStore, name: &str) -> Result<i64, SinkError> {
        if let Some(c) = self.log.cursor(name)? {
            return Ok(c);
        }
        let c = if self.cfg.starts_at_oldest() { 0 } else { alerts.last_alert_change()? };
        self.log.set_cursor(name, c, now_ms())?;
        Ok(c)
    }

    /// The saved cursor, or a new one (the log's end, or its start with
    /// `from_beginning`), saved at once so a restart resumes from it.
    fn start_cursor(&self) -> Result<i64, SinkError> {
        if let Some(c) = self.log.cursor(self.cfg.name())? {
            return Ok(c);
        }
        let c = if self.cfg.starts_at_oldest() { 0 } else { self.log.max_id()? };
        self.log.set_cursor(self.cfg.name(), c, now_ms())?;
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

#[cfg(test)]
mod tests;
