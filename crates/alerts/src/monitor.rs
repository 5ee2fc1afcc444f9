//! The monitor: the thread that runs the engine and the tracker. It is fed
//! by the event writer (each durable batch, moved to it whole) and by use
//! cases (signals, people acknowledging alerts); it writes alert changes with
//! their webhook messages in one transaction, logs them, counts them in
//! `/metrics`, and tells a [`Responder`] (automatic response, sinks). Its
//! input queue is bounded: when the engine cannot keep up, batches are
//! dropped and counted (`keyward_alert_events_dropped_total`), never the
//! writer slowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use keyward_core::event::{UsageEvent, UsageReport};
use keyward_core::time::now_ms;
use keyward_events::EventObserver;
use keyward_store::alerts::AlertStore;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::engine::{Engine, EngineConfig, Finding, Learned, RuleBook, Signal};
use crate::tracker::{Alert, Change, ChangeKind, Tracker, TrackerConfig};
use crate::view;

/// Told of every alert change after it is written.
pub trait Responder: Send + Sync {
    fn alert_changed(&self, change: &Change);
}

/// The `[alerts]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Off: no rule runs, no alert is raised. Default on.
    pub enabled: bool,
    /// Batches waiting for the engine (each up to `events.batch_max` events, so this
    /// bounds the memory a backlog can take). Default 32; the engine is about five
    /// times faster than the writer, so the queue is normally empty.
    pub queue_batches: usize,
    /// How often ongoing alerts are written and quiet ones resolved, ms. Default 200.
    pub tick_ms: u64,
    /// How often learned key state is saved, ms. Default 10000.
    pub save_learned_ms: u64,
    /// Keys and addresses idle this long leave memory (their learned state is saved), ms.
    /// Default 7200000 (2 h, twice the longest default window).
    pub idle_ms: i64,
    /// Most keys with state in memory. Default 1000000.
    pub max_keys: usize,
    /// Most source addresses with state in memory. Default 1000000.
    pub max_ips: usize,
    /// Days the history of alert changes (what sinks export) is kept. Default 90.
    pub history_days: i64,
    #[serde(flatten)]
    pub tracker: TrackerConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            queue_batches: 32,
            tick_ms: 200,
            save_learned_ms: 10_000,
            idle_ms: 2 * 3_600_000,
            max_keys: 1_000_000,
            max_ips: 1_000_000,
            history_days: 90,
            tracker: TrackerConfig::default(),
        }
    }
}

impl MonitorConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.tracker.problems();
        if self.queue_batches == 0 || self.max_keys == 0 || self.max_ips == 0 {
            p.push("alerts: queue_batches, max_keys and max_ips must be positive".into());
        }
        if !(10..=60_000).contains(&self.tick_ms) {
            p.push("alerts.tick_ms: must be between 10 and 60000".into());
        }
        if !(1..=36_500).contains(&self.history_days) {
            p.push("alerts.history_days: must be between 1 and 36500".into());
        }
        if self.save_learned_ms < 100 || self.idle_ms < 60_000 {
            p.push("alerts: save_learned_ms must be at least 100 and idle_ms at least 60000".into());
        }
        p
    }
}

enum Input {
    Events(Vec<UsageEvent>),
    Reports(Vec<(String, UsageReport)>),
    Signal(Box<Signal>),
    Follow(Box<Alert>),
    Rules(Box<RuleBook>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Counters of the monitor, also in `/metrics`.
#[derive(Debug, Default)]
pub struct MonitorStats {
    pub events: AtomicU64,
    pub dropped: AtomicU64,
    pub changes: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The running monitor.
pub struct Monitor {
    tx: Mutex<Option<SyncSender<Input>>>,
    stats: Arc<MonitorStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Monitor {
    /// Loads the live alerts and rules from `store` and starts the thread.
    pub fn start(
        store: Arc<dyn AlertStore>,
        cfg: MonitorConfig,
        responder: Option<Arc<dyn Responder>>,
    ) -> Result<Arc<Monitor>, crate::error::AlertsError> {
        let (tx, rx) = sync_channel(cfg.queue_batches.max(1));
        let stats = Arc::new(MonitorStats::default());
        let now = now_ms();
        let mut tracker = Tracker::new(cfg.tracker.clone());
        let live = store.live_alerts(now - cfg.tracker.cooldown_ms)?;
        let loaded = live.len();
        tracker.load(live.iter().filter_map(view::alert_of));
        let mut engine = Engine::new(EngineConfig { max_keys: cfg.max_keys, max_ips: cfg.max_ips });
        engine.set_rules(RuleBook::build(&store.rule_overrides()?));
        let loader_store = store.clone();
        engine.set_loader(Box::new(move |key_id| {
            let body = loader_store.load_learned(key_id).ok()??;
            serde_json::from_value::<Learned>(body).ok()
        }));
        tracing::info!(alerts = loaded, "Alert monitor started.");
        let run = Run { store, cfg, engine, tracker, responder, stats: stats.clone(), findings: Vec::new() };
        let thread = std::thread::Builder::new().name("keyward-alerts".into()).spawn(move || run.run(rx))?;
        Ok(Arc::new(Monitor { tx: Mutex::new(Some(tx)), stats, thread: Mutex::new(Some(thread)) }))
    }

    pub fn stats(&self) -> &MonitorStats {
        &self.stats
    }

    fn send(&self, input: Input) -> bool {
        let Some(tx) = self.tx.lock().clone() else { return false };
        match tx.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(Input::Events(batch))) => {
                self.stats.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                metrics::counter!("keyward_alert_events_dropped_total").increment(batch.len() as u64);
                false
            }
            // Signals come from request handlers (a flood of bad root keys is one):
            // they never wait for room, they are counted instead.
            Err(TrySendError::Full(Input::Signal(_))) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("keyward_alert_events_dropped_total").increment(1);
                false
            }
            Err(TrySendError::Full(input)) => {
                // A person's action, new rules, or a flush: worth a short wait.
                tx.send(input).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// A use case's signal (leak, expiry, failed revocation check, failed root auth).
    pub fn signal(&self, s: Signal) {
        self.send(Input::Signal(Box::new(s)));
    }

    /// A person changed an alert through the API; `alert` is the stored record.
    pub fn follow(&self, alert: Alert) {
        self.send(Input::Follow(Box::new(alert)));
    }

    pub fn set_rules(&self, book: RuleBook) {
        self.send(Input::Rules(Box::new(book)));
    }

    /// Returns once everything sent before is evaluated and its changes written.
    pub fn flush(&self) {
        let (reply, done) = std::sync::mpsc::channel();
        if self.send(Input::Flush(reply)) {
            let _ = done.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Writes pending updates and learned state, and stops the thread.
    pub fn stop(&self) {
        self.flush();
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl EventObserver for Monitor {
    fn written(&self, events: Vec<UsageEvent>) {
        if !events.is_empty() {
            self.send(Input::Events(events));
        }
    }

    fn reported(&self, reports: Vec<(String, UsageReport)>) {
        self.send(Input::Reports(reports));
    }
}

struct Run {
    store: Arc<dyn AlertStore>,
    cfg: MonitorConfig,
    engine: Engine,
    tracker: Tracker,
    responder: Option<Arc<dyn Responder>>,
    stats: Arc<MonitorStats>,
    findings: Vec<Finding>,
}

impl Run {
    fn run(mut self, rx: Receiver<Input>) {
        let tick = Duration::from_millis(self.cfg.tick_ms);
        let mut next_tick = Instant::now() + tick;
        let mut next_save = Instant::now() + Duration::from_millis(self.cfg.save_learned_ms);
        let mut next_sweep = Instant::now() + Duration::from_secs(60);
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut changes = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    self.handle(input, &mut changes);
                    // Take what else is waiting before writing: one transaction for all.
                    while changes.len() < 1000
                        && let Ok(more) = rx.try_recv()
                    {
                        self.handle(more, &mut changes);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let now = now_ms();
                    let mut last = self.tracker.flush(now);
                    self.write(&mut last);
                    self.save_learned(now);
                    return;
                }
            }
            if Instant::now() >= next_tick {
                changes.extend(self.tracker.tick(now_ms()));
                next_tick = Instant::now() + tick;
            }
            self.write(&mut changes);
            if Instant::now() >= next_save {
                self.save_learned(now_ms());
                next_save = Instant::now() + Duration::from_millis(self.cfg.save_learned_ms);
            }
            if Instant::now() >= next_sweep {
                self.engine.sweep(now_ms(), self.cfg.idle_ms);
                let (keys, ips) = self.engine.sizes();
                metrics::gauge!("keyward_alert_keys_tracked").set(keys as f64);
                metrics::gauge!("keyward_alert_ips_tracked").set(ips as f64);
                let before = now_ms() - self.cfg.history_days * 86_400_000;
                if let Err(e) = self.store.purge_alert_changes(before) {
                    tracing::error!(error = %e, "Purging old alert history failed; will retry.");
                }
                next_sweep = Instant::now() + Duration::from_secs(60);
            }
        }
    }

    fn handle(&mut self, input: Input, changes: &mut Vec<Change>) {
        let now = now_ms();
        match input {
            Input::Events(events) => {
                self.stats.events.fetch_add(events.len() as u64, Ordering::Relaxed);
                for e in &events {
                    self.engine.observe(e, &mut self.findings);
                }
            }
            Input::Reports(reports) => {
                for (key_id, r) in reports {
                    let bytes = r.bytes_in.unwrap_or(0) + r.bytes_out.unwrap_or(0);
                    self.engine.report(&r.workspace_id, &key_id, r.http_status, bytes, now, &mut self.findings);
                }
            }
            Input::Signal(s) => self.engine.signal(*s, &mut self.findings),
            Input::Follow(a) => self.tracker.follow(*a),
            Input::Rules(book) => self.engine.set_rules(*book),
            Input::Flush(reply) => {
                changes.extend(self.tracker.flush(now));
                self.fold(changes, now);
                self.write(changes);
                self.save_learned(now);
                let _ = reply.send(());
                return;
            }
        }
        self.fold(changes, now);
    }

    fn fold(&mut self, changes: &mut Vec<Change>, now: i64) {
        for f in self.findings.drain(..) {
            if let Some(c) = self.tracker.apply(f, now) {
                changes.push(c);
            }
        }
    }

    /// Writes changes and their webhook messages in one transaction, then
    /// logs, counts and tells the responder.
    fn write(&mut self, changes: &mut Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let now = now_ms();
        // The latest state of each alert, once.
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes.iter().rev() {
            if !rows.iter().any(|r: &keyward_store::alerts::AlertRow| r.id == c.alert.id) {
                rows.push(view::alert_row(&c.alert));
            }
        }
        let notices: Vec<_> = changes.iter().filter_map(|c| view::notice(c, now)).collect();
        let history: Vec<_> = changes.iter().filter_map(|c| view::change_row(c, now)).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.write_alerts(&rows, &history, &notices) {
                Ok(()) => break,
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, alerts = rows.len(), "Writing alerts failed; retrying.");
                    if backoff > Duration::from_secs(5) {
                        tracing::error!(alerts = rows.len(), "Giving up on writing these alert changes.");
                        changes.clear();
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
            }
        }
        for c in changes.drain(..) {
            self.stats.changes.fetch_add(1, Ordering::Relaxed);
            let a = &c.alert;
            let subject = a.subject.name();
            match c.kind {
                ChangeKind::Opened | ChangeKind::Reopened | ChangeKind::Escalated => tracing::warn!(
                    alert_id = %a.id, rule = a.rule.as_str(), severity = a.severity.as_str(), subject = %subject,
                    workspace_id = %a.workspace_id, detail = %a.detail, change = ?c.kind, "Alert raised."
                ),
                ChangeKind::Resolved => tracing::info!(
                    alert_id = %a.id, rule = a.rule.as_str(), subject = %subject, by = a.resolved_by.as_deref().unwrap_or("-"),
                    "Alert resolved."
                ),
                ChangeKind::Updated => {}
            }
            if c.kind != ChangeKind::Updated {
                let kind = match c.kind {
                    ChangeKind::Opened => "opened",
                    ChangeKind::Reopened => "reopened",
                    ChangeKind::Escalated => "escalated",
                    ChangeKind::Resolved => "resolved",
                    ChangeKind::Updated => "updated",
                };
                metrics::counter!("keyward_alerts_total", "rule" => a.rule.as_str(), "severity" => a.severity.as_str(), "change" => kind)
                    .increment(1);
            }
            if let Some(r) = &self.responder {
                r.alert_changed(&c);
            }
        }
    }

    fn save_learned(&mut self, now: i64) {
        let learned = self.engine.take_learned();
        if learned.is_empty() {
            return;
        }
        let rows: Vec<(String, String, serde_json::Value)> =
            learned.into_iter().filter_map(|(key, ws, l)| Some((key, ws, serde_json::to_value(l).ok()?))).collect();
        if let Err(e) = self.store.save_learned(&rows, now) {
            tracing::error!(error = %e, keys = rows.len(), "Saving learned key state failed; will retry.");
        }
    }
}
