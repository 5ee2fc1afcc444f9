//! The roller: folds written usage events into rollups (`core::rollup`) per
//! key, keyspace and workspace, by minute, hour and day, so that a time
//! series is a read of its buckets and never a scan of raw events.
//!
//! It follows the event log by id from its watermark (`rollup_state`), the
//! way sinks do: a batch is folded into the buckets it touches (read from the
//! log on first touch, kept while hot), and the full new values are written
//! with the new watermark in one transaction, so a restart neither loses nor
//! counts twice. On a cluster only the leader runs it, over everyone's events.
//! Late usage reports (`/v1/usage`) are not folded in yet: statuses, bytes
//! and latency count when the event carries them (gateway, tower layer).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::event::UsageEvent;
use keyward_core::rollup::{Agg, Granularity, Scope};
use keyward_store::events::{EventLog, RollupKey};
use serde::Deserialize;

/// How rollups are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    pub enabled: bool,
    /// Days each granularity is kept. Defaults 7, 90, 730.
    pub minute_retention_days: u32,
    pub hour_retention_days: u32,
    pub day_retention_days: u32,
    /// How often the roller looks for new events, ms: each hot bucket is
    /// written at most once per interval. Default 1000.
    pub poll_ms: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            enabled: true,
            minute_retention_days: 7,
            hour_retention_days: 90,
            day_retention_days: 730,
            poll_ms: 1_000,
        }
    }
}

impl RollupConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(10..=60_000).contains(&self.poll_ms) {
            p.push("rollups.poll_ms: must be between 10 and 60000".into());
        }
        for (name, d) in [
            ("minute_retention_days", self.minute_retention_days),
            ("hour_retention_days", self.hour_retention_days),
            ("day_retention_days", self.day_retention_days),
        ] {
            if d == 0 || d > 3650 {
                p.push(format!("rollups.{name}: must be between 1 and 3650"));
            }
        }
        p
    }

    fn retention_ms(&self, g: Granularity) -> i64 {
        let days = match g {
            Granularity::Minute => self.minute_retention_days,
            Granularity::Hour => self.hour_retention_days,
            Granularity::Day => self.day_retention_days,
        };
        i64::from(days) * 86_400_000
    }
}

/// The buckets one event counts in.
fn keys_of(e: &UsageEvent) -> impl Iterator<Item = RollupKey> + '_ {
    let targets = [
        e.key_id.as_deref().map(|k| (Scope::Key, k)),
        e.keyspace_id.as_deref().map(|k| (Scope::Keyspace, k)),
        Some((Scope::Workspace, e.workspace_id.as_str())),
    ];
    targets.into_iter().flatten().flat_map(move |(scope, target)| {
        Granularity::ALL.into_iter().map(move |gran| RollupKey {
            workspace_id: e.workspace_id.clone(),
            scope,
            target: target.to_owned(),
            gran,
            bucket: gran.bucket(e.ts),
        })
    })
}

/// The running roller.
pub struct Roller {
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Roller {
    pub fn start(log: Arc<dyn EventLog>, cfg: RollupConfig) -> std::io::Result<Roller> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::Builder::new().name("keyward-rollups".into()).spawn(move || run(log.as_ref(), &cfg, &flag))?;
        Ok(Roller { stop, thread: parking_lot::Mutex::new(Some(thread)) })
    }

    /// Folds what is written and stops.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Folds one batch into `cache` (loading the buckets it touches); returns them.
fn fold(
    log: &dyn EventLog,
    cache: &mut HashMap<RollupKey, Agg>,
    batch: &[UsageEvent],
) -> keyward_store::Result<Vec<RollupKey>> {
    let touched: HashSet<RollupKey> = batch.iter().flat_map(keys_of).collect();
    let missing: Vec<RollupKey> = touched.iter().filter(|k| !cache.contains_key(*k)).cloned().collect();
    if !missing.is_empty() {
        let stored = log.get_rollups(&missing)?;
        for (k, a) in missing.into_iter().zip(stored) {
            cache.insert(k, a.unwrap_or_default());
        }
    }
    for e in batch {
        for k in keys_of(e) {
            cache.entry(k).or_default().add_event(e);
        }
    }
    Ok(touched.into_iter().collect())
}

fn run(log: &dyn EventLog, cfg: &RollupConfig, stop: &AtomicBool) {
    let mut at = loop {
        match log.rollup_watermark() {
            Ok(w) => break w,
            Err(e) => {
                tracing::error!(error = %e, "Reading the rollup watermark failed; retrying.");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let mut cache: HashMap<RollupKey, Agg> = HashMap::new();
    let mut next_purge = Instant::now() + Duration::from_secs(60);
    loop {
        let batch = match log.after(at, 5_000) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "Reading events for the rollups failed; retrying.");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if batch.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if Instant::now() >= next_purge {
                next_purge = Instant::now() + Duration::from_secs(3_600);
                purge(log, cfg);
            }
            std::thread::sleep(Duration::from_millis(cfg.poll_ms));
            continue;
        }
        let last = batch.last().map_or(at, |e| e.id);
        let newest = batch.iter().map(|e| e.ts).max().unwrap_or(0);
        let touched = match fold(log, &mut cache, &batch) {
            Ok(t) => t,
            Err(e) => {
                // Nothing was added to the cache for a batch that failed to load.
                tracing::error!(error = %e, "Loading rollups failed; retrying.");
                cache.clear();
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let rows: Vec<(RollupKey, Agg)> = touched
            .into_iter()
            .map(|k| {
                let a = cache[&k].clone();
                (k, a)
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = log.put_rollups(&rows, last) {
            tracing::error!(error = %e, "Writing rollups failed; retrying.");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        metrics::counter!("keyward_rollup_events_total").increment(batch.len() as u64);
        at = last;
        // Keep the buckets still being filled; older ones are read again if an event comes late.
        cache.retain(|k, _| k.bucket + 2 * k.gran.width_ms() > newest);
    }
}

fn purge(log: &dyn EventLog, cfg: &RollupConfig) {
    let now = keyward_core::time::now_ms();
    for g in Granularity::ALL {
        match log.purge_rollups(g, now - cfg.retention_ms(g)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(granularity = g.as_str(), buckets = n, "Purged rollups past retention."),
            Err(e) => tracing::error!(error = %e, "Purging rollups failed; will retry."),
        }
    }
}
