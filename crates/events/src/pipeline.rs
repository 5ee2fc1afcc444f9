//! The bounded queue and the batch writer.
//!
//! Producers (the verify path) push onto a shared buffer under a short lock
//! and wake nobody: the writer thread takes the whole buffer on its own tick,
//! every `flush_interval_ms` (or sooner, when `batch_max` events wait or a
//! report or flush asks), and appends it in one transaction, so a crash loses
//! at most the events of the last interval. A wake-up per event (a channel)
//! cost a futex call and a context switch on every verify (issue 11's
//! profile). When the buffer is full producers wait up to
//! `enqueue_timeout_ms` for room; past that the event is dropped, counted in
//! `keyward_events_dropped_total` and logged (at most once a second). Usage
//! reports ride the same buffer, behind the event they amend.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::event::{UsageEvent, UsageReport};
use keyward_core::time::now_ms;
use keyward_store::events::EventLog;

/// Tunables of the pipeline: the `[events]` section of the config file, so
/// each default is defined here once.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Events waiting in memory for the writer. Default 100000.
    pub queue_capacity: usize,
    /// Most events per write transaction. Default 20000.
    pub batch_max: usize,
    /// Longest an event waits to be written, ms: the crash-loss bound.
    /// Default 100. Env `KEYWARD_EVENTS_FLUSH_MS`.
    pub flush_interval_ms: u64,
    /// How long a verify waits for room in a full queue before the event is
    /// dropped (and counted), ms. Default 50.
    pub enqueue_timeout_ms: u64,
    /// Days events are kept. Default 90. Env `KEYWARD_RETENTION_DAYS`.
    pub retention_days: u64,
    /// How often old events are purged, ms. Default 3600000.
    pub purge_interval_ms: u64,
    /// Request ids remembered for late usage reports. Default 200000.
    pub recent_requests: usize,
    /// Host name in exported events. Default: the machine's.
    pub hostname: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 100_000,
            batch_max: 20_000,
            flush_interval_ms: 100,
            enqueue_timeout_ms: 50,
            retention_days: 90,
            purge_interval_ms: 3_600_000,
            recent_requests: 200_000,
            hostname: None,
        }
    }
}

impl PipelineConfig {
    fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    fn purge_interval(&self) -> Duration {
        Duration::from_millis(self.purge_interval_ms)
    }

    /// Every problem with these values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.queue_capacity == 0 || self.batch_max == 0 || self.recent_requests == 0 {
            p.push("events: queue_capacity, batch_max and recent_requests must be positive".into());
        }
        if !(1..=60_000).contains(&self.flush_interval_ms) {
            p.push("events.flush_interval_ms: must be between 1 and 60000".into());
        }
        if self.retention_days == 0 || self.retention_days > 36_500 {
            p.push("events.retention_days: must be between 1 and 36500".into());
        }
        if self.purge_interval_ms < 1000 {
            p.push("events.purge_interval_ms: must be at least 1000".into());
        }
        p
    }
}

/// Told of every batch the writer has made durable, in log order (the rules
/// engine): the same stream the log gets, not a poll of the database. Must
/// not block the writer: hand the batch to another thread.
pub trait EventObserver: Send + Sync {
    /// Events just written, ids set.
    fn written(&self, events: Vec<UsageEvent>);
    /// Reports that reached events already written: (key id, report).
    fn reported(&self, reports: Vec<(String, UsageReport)>);
}

/// What became of a usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Added to the event of its request.
    Applied,
    /// No recent event of that workspace has that request id.
    NoSuchRequest,
    /// The verification was refused, and the report says the request
    /// succeeded (2xx): a contradiction, not recorded.
    SuccessAfterRefusal,
}

enum Msg {
    Event(Box<UsageEvent>),
    Usage(UsageReport, tokio::sync::oneshot::Sender<Reported>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The buffer between producers and the writer.
struct Queue {
    inner: Mutex<Pending>,
    wake: parking_lot::Condvar,
    capacity: usize,
    batch_max: usize,
}

#[derive(Default)]
struct Pending {
    msgs: Vec<Msg>,
    events: usize,
    closed: bool,
    /// A report or flush waits: the writer should not sleep out its tick.
    urgent: bool,
}

enum Push {
    Full(Msg),
    Closed,
}

impl Queue {
    fn new(capacity: usize, batch_max: usize) -> Self {
        Queue { inner: Mutex::new(Pending::default()), wake: parking_lot::Condvar::new(), capacity, batch_max }
    }

    /// Adds an event; wakes the writer only when a whole batch waits.
    fn push_event(&self, msg: Msg) -> Result<(), Push> {
        let mut p = self.inner.lock();
        if p.closed {
            return Err(Push::Closed);
        }
        if p.events >= self.capacity {
            return Err(Push::Full(msg));
        }
        p.msgs.push(msg);
        p.events += 1;
        if p.events == self.batch_max {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Adds a report or flush and wakes the writer.
    fn push_control(&self, msg: Msg) -> Result<(), Push> {
        let mut p = self.inner.lock();
        if p.closed {
            return Err(Push::Closed);
        }
        p.msgs.push(msg);
        p.urgent = true;
        self.wake.notify_one();
        Ok(())
    }

    fn close(&self) {
        self.inner.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until `deadline`, a full batch, an urgent message or the close,
    /// then takes everything waiting (into `into`, reusing its capacity).
    /// True when the queue is closed.
    fn take(&self, deadline: Instant, into: &mut Vec<Msg>) -> bool {
        let mut p = self.inner.lock();
        while !p.closed && !p.urgent && p.events < self.batch_max && Instant::now() < deadline {
            self.wake.wait_until(&mut p, deadline);
        }
        std::mem::swap(&mut p.msgs, into);
        p.events = 0;
        p.urgent = false;
        p.closed
    }
}

/// Counters of the pipeline, also exported as metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub enqueued: AtomicU64,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub write_errors: AtomicU64,
    pub purged: AtomicU64,
    /// The id of the newest written event.
    pub last_id: AtomicI64,
    /// When the last successfully written batch was cut (ms): every event
    /// enqueued before then is durable.
    pub durable_through_ms: AtomicI64,
    /// Set while writes to the event log fail (cleared by the next success):
    /// the node is not ready, since events are being dropped.
    pub failing: std::sync::atomic::AtomicBool,
    /// Set when the last failure was a full disk.
    pub disk_full: std::sync::atomic::AtomicBool,
    last_drop_log: AtomicI64,
}

/// The handle producers use.
pub struct EventPipeline {
    queue: Arc<Queue>,
    stats: Arc<PipelineStats>,
    log: Arc<dyn EventLog>,
    enqueue_timeout: Duration,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Wakes sinks when new events are written.
    written: tokio::sync::watch::Sender<i64>,
    stopping: Arc<AtomicBool>,
    observer: ObserverSlot,
}

/// Where the writer finds its observer (set once the rules engine is up).
type ObserverSlot = Arc<parking_lot::RwLock<Option<Arc<dyn EventObserver>>>>;

impl EventPipeline {
    /// Starts the writer thread over `log` (fails only when the OS refuses a thread).
    pub fn start(log: Arc<dyn EventLog>, cfg: PipelineConfig) -> std::io::Result<Arc<Self>> {
        let queue = Arc::new(Queue::new(cfg.queue_capacity.max(1), cfg.batch_max.max(1)));
        let stats = Arc::new(PipelineStats::default());
        let last = log.max_id().unwrap_or(0);
        stats.last_id.store(last, Ordering::Relaxed);
        let (written, _) = tokio::sync::watch::channel(last);
        let stopping = Arc::new(AtomicBool::new(false));
        let enqueue_timeout = Duration::from_millis(cfg.enqueue_timeout_ms);
        let observer: ObserverSlot = Arc::default();
        let writer = {
            let (log, stats, written, stopping) = (log.clone(), stats.clone(), written.clone(), stopping.clone());
            let (observer, queue) = (observer.clone(), queue.clone());
            std::thread::Builder::new()
                .name("keyward-event-writer".into())
                .spawn(move || Writer::new(log, stats, written, cfg, stopping, observer).run(&queue))?
        };
        Ok(Arc::new(EventPipeline {
            queue,
            stats,
            log,
            enqueue_timeout,
            writer: Mutex::new(Some(writer)),
            written,
            stopping,
            observer,
        }))
    }

    /// Tells `observer` of every batch written from now on.
    pub fn observe(&self, observer: Arc<dyn EventObserver>) {
        *self.observer.write() = Some(observer);
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The counters, shared (sinks read the newest written id from them).
    pub fn shared_stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// A receiver that sees the id of the newest written event.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.written.subscribe()
    }

    /// Enqueues an event without waiting on disk. On a full queue, waits up to
    /// the enqueue timeout for room, then drops and counts the event.
    pub async fn emit(&self, e: UsageEvent) {
        let mut msg = Msg::Event(Box::new(e));
        let mut deadline = None;
        loop {
            match self.queue.push_event(msg) {
                Ok(()) => {
                    self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(Push::Full(m))
                    if *deadline.get_or_insert_with(|| Instant::now() + self.enqueue_timeout) > Instant::now() =>
                {
                    msg = m;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(Push::Full(_)) => return self.dropped("the event queue is full"),
                Err(Push::Closed) => return self.dropped("the pipeline is stopped"),
            }
        }
    }

    /// Enqueues an event if there is room now; gives it back when the queue
    /// is full (the caller may then wait with [`emit`](Self::emit)).
    pub fn try_emit(&self, e: UsageEvent) -> Result<(), Box<UsageEvent>> {
        match self.queue.push_event(Msg::Event(Box::new(e))) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Push::Full(Msg::Event(e))) => Err(e),
            Err(_) => {
                self.dropped("the pipeline is stopped");
                Ok(())
            }
        }
    }

    fn dropped(&self, why: &'static str) {
        let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("keyward_events_dropped_total").increment(1);
        let now = now_ms();
        let last = self.stats.last_drop_log.load(Ordering::Relaxed);
        if now - last >= 1000
            && self.stats.last_drop_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::error!(
                dropped_total = n,
                reason = why,
                "Usage events dropped; raise events.queue_capacity or check the disk."
            );
        }
    }

    /// Adds an application's report to the event of `request_id`.
    pub async fn report(&self, r: UsageReport) -> Reported {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.queue.push_control(Msg::Usage(r, reply)).is_err() {
            return Reported::NoSuchRequest;
        }
        answer.await.unwrap_or(Reported::NoSuchRequest)
    }

    /// Writes everything enqueued so far, and waits until it is durable.
    pub async fn flush(&self) {
        let (reply, done) = std::sync::mpsc::channel();
        if self.queue.push_control(Msg::Flush(reply)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || done.recv()).await;
        }
    }

    /// Flushes, stops the writer and waits for it. Later emits are dropped.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let (reply, done) = std::sync::mpsc::channel();
        if self.queue.push_control(Msg::Flush(reply)).is_ok() {
            let _ = done.recv();
        }
        self.queue.close();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    log: Arc<dyn EventLog>,
    stats: Arc<PipelineStats>,
    written: tokio::sync::watch::Sender<i64>,
    cfg: PipelineConfig,
    batch: Vec<UsageEvent>,
    /// Hash of (workspace, request id) → event id, for recently written
    /// events. Hashes, not strings: no allocation per event. A report's
    /// update also matches workspace and request id in SQL, so a hash
    /// collision can never touch another workspace's event.
    /// Recent request hashes: the event id and whether its verify admitted.
    recent: foldhash::HashMap<u64, (i64, bool)>,
    recent_order: VecDeque<u64>,
    hasher: foldhash::quality::RandomState,
    updates: Vec<(i64, UsageReport)>,
    next_purge: Instant,
    stopping: Arc<AtomicBool>,
    observer: ObserverSlot,
}

impl Writer {
    fn new(
        log: Arc<dyn EventLog>,
        stats: Arc<PipelineStats>,
        written: tokio::sync::watch::Sender<i64>,
        cfg: PipelineConfig,
        stopping: Arc<AtomicBool>,
        observer: ObserverSlot,
    ) -> Self {
        Writer {
            log,
            stats,
            written,
            batch: Vec::with_capacity(cfg.batch_max.min(65_536)),
            next_purge: Instant::now() + Duration::from_secs(5).min(cfg.purge_interval()),
            observer,
            cfg,
            recent: foldhash::HashMap::default(),
            recent_order: VecDeque::new(),
            hasher: foldhash::quality::RandomState::default(),
            updates: Vec::new(),
            stopping,
        }
    }

    fn run(mut self, queue: &Queue) {
        let mut taken = Vec::new();
        let mut next_tick = Instant::now() + self.cfg.flush_interval();
        loop {
            let closed = queue.take(next_tick, &mut taken);
            // Counted here, once per tick, not by each producer: a metric
            // handle lookup per verify showed in the profile.
            let events = taken.iter().filter(|m| matches!(m, Msg::Event(_))).count();
            if events > 0 {
                metrics::counter!("keyward_events_enqueued_total").increment(events as u64);
            }
            for m in taken.drain(..) {
                match m {
                    Msg::Event(e) => {
                        self.batch.push(*e);
                        if self.batch.len() >= self.cfg.batch_max {
                            self.write_batch();
                        }
                    }
                    other => self.handle_control(other),
                }
            }
            if closed {
                self.write_batch();
                return;
            }
            // Everything taken by the tick is written at the tick: an event
            // waits at most one flush interval (plus the write).
            if Instant::now() >= next_tick {
                if !self.batch.is_empty() || !self.updates.is_empty() {
                    self.write_batch();
                }
                next_tick = Instant::now() + self.cfg.flush_interval();
            }
            if Instant::now() >= self.next_purge && !self.stopping.load(Ordering::Relaxed) {
                self.purge();
            }
        }
    }

    fn handle_control(&mut self, m: Msg) {
        match m {
            Msg::Event(_) => unreachable!("events are handled by the loop"),
            Msg::Usage(r, reply) => {
                // Not yet written: amend the newest matching event in the batch.
                let pending = self
                    .batch
                    .iter_mut()
                    .rev()
                    .find(|e| e.request_id == r.request_id && e.workspace_id == r.workspace_id);
                let success = r.http_status.is_some_and(|st| (200..300).contains(&st));
                let found = if let Some(e) = pending {
                    if success && !e.outcome.is_valid() {
                        Reported::SuccessAfterRefusal
                    } else {
                        e.apply(&r);
                        Reported::Applied
                    }
                } else if let Some(&(id, valid)) = self.recent.get(&self.request_hash(&r.workspace_id, &r.request_id)) {
                    if success && !valid {
                        Reported::SuccessAfterRefusal
                    } else {
                        self.updates.push((id, r));
                        Reported::Applied
                    }
                } else {
                    Reported::NoSuchRequest
                };
                let _ = reply.send(found);
            }
            Msg::Flush(reply) => {
                self.write_batch();
                let _ = reply.send(());
            }
        }
    }

    /// Appends the batch in one transaction. On failure the batch is kept and
    /// retried on the next round; producers see a full queue and drop, counted.
    fn write_batch(&mut self) {
        let cut = now_ms();
        if self.batch.is_empty() && self.updates.is_empty() {
            self.stats.durable_through_ms.store(cut, Ordering::Relaxed);
            return;
        }
        let mut backoff = Duration::from_millis(50);
        // The append and the late reports are two transactions: once the
        // append is in, a retry repeats only the reports (never the events).
        let mut appended = false;
        let reported = loop {
            let res = match appended {
                true => Ok(()),
                false => self.log.append(&mut self.batch),
            }
            .and_then(|_| {
                appended = true;
                self.log.apply_usage(&self.updates)
            });
            match res {
                Ok(keys) => {
                    self.stats.failing.store(false, Ordering::Relaxed);
                    self.stats.disk_full.store(false, Ordering::Relaxed);
                    break keys;
                }
                Err(e) => {
                    self.stats.failing.store(true, Ordering::Relaxed);
                    self.stats.disk_full.store(e.is_disk_full(), Ordering::Relaxed);
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("keyward_events_write_errors_total").increment(1);
                    tracing::error!(error = %e, events = self.batch.len(), "Writing usage events failed; retrying.");
                    if self.stopping.load(Ordering::Relaxed) && backoff > Duration::from_secs(2) {
                        tracing::error!(events = self.batch.len(), "Giving up on usage events at shutdown.");
                        self.batch.clear();
                        self.updates.clear();
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let n = self.batch.len() as u64;
        self.stats.written.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("keyward_events_written_total").increment(n);
        let updates = std::mem::take(&mut self.updates);
        for e in &self.batch {
            let h = self.request_hash(&e.workspace_id, &e.request_id);
            if self.recent.insert(h, (e.id, e.outcome.is_valid())).is_none() {
                self.recent_order.push_back(h);
            }
            self.stats.last_id.store(e.id, Ordering::Relaxed);
        }
        let observer = self.observer.read().clone();
        match observer {
            // The batch moves to the observer whole (no copy); the writer starts a new one.
            Some(o) => {
                let capacity = self.batch.capacity();
                o.written(std::mem::replace(&mut self.batch, Vec::with_capacity(capacity)));
                let late: Vec<(String, UsageReport)> =
                    updates.into_iter().zip(reported).filter_map(|((_, r), key)| Some((key?, r))).collect();
                if !late.is_empty() {
                    o.reported(late);
                }
            }
            None => self.batch.clear(),
        }
        while self.recent_order.len() > self.cfg.recent_requests {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
        let last = self.stats.last_id.load(Ordering::Relaxed);
        self.stats.durable_through_ms.store(cut, Ordering::Relaxed);
        self.written.send_replace(last);
    }

    fn request_hash(&self, workspace_id: &str, request_id: &str) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.hasher.build_hasher();
        workspace_id.hash(&mut h);
        request_id.hash(&mut h);
        h.finish()
    }

    /// Deletes events past retention, a chunk at a time, so a large purge
    /// never holds the writer for long.
    fn purge(&mut self) {
        self.next_purge = Instant::now() + self.cfg.purge_interval();
        let cutoff = now_ms() - (self.cfg.retention_days * 24 * 3600 * 1000) as i64;
        let started = Instant::now();
        let mut total = 0;
        loop {
            match self.log.purge_chunk(cutoff, 5_000) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::error!(error = %e, "Purging old usage events failed; will retry.");
                    break;
                }
            }
            // Keep batches flowing between chunks of a large purge.
            if started.elapsed() > Duration::from_millis(50) {
                self.next_purge = Instant::now();
                break;
            }
        }
        if total > 0 {
            self.stats.purged.fetch_add(total as u64, Ordering::Relaxed);
            metrics::counter!("keyward_events_purged_total").increment(total as u64);
            tracing::info!(purged = total, "Purged usage events past retention.");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
