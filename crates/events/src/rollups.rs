//! The roller: folds written usage events into rollups (`core::rollup`) per
//! key, keyspace, workspace and owner by minute, hour and day, and per source
//! address by hour and day, so that a time
//! series is a read of its buckets and never a scan of raw events.
//!
//! It follows the event log by id from its watermarks (`rollup_state`, one per
//! granularity), the way sinks do: a batch is folded into the buckets it
//! touches (read from the log on first touch, kept while hot), and the full
//! new values are written with the new watermarks in one transaction, so a
//! restart neither loses nor counts twice. Minute buckets are written every
//! poll, hours every 5 s, days every 15 s (fewer writes under load). On a cluster only the leader runs it, over everyone's events.
//! Late usage reports (`/v1/usage`) are not folded in yet: statuses, bytes
//! and latency count when the event carries them (gateway, tower layer).

use foldhash::{HashMap, HashSet};
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

/// How often the buckets of each granularity are written: a minute bucket
/// every poll, an hour's every 5 s, a day's every 15 s (how far behind an
/// hourly or daily series may be). Each granularity
/// has its own watermark, so a restart folds again exactly what its stored
/// buckets lack.
fn cadence(cfg: &RollupConfig, g: Granularity) -> Duration {
    let poll = Duration::from_millis(cfg.poll_ms);
    match g {
        Granularity::Minute => poll,
        Granularity::Hour => poll.max(Duration::from_secs(5)),
        Granularity::Day => poll.max(Duration::from_secs(15)),
    }
}

/// The buckets of one granularity in memory, and which changed since written.
#[derive(Default)]
struct Level {
    cache: HashMap<RollupKey, Agg>,
    dirty: HashSet<RollupKey>,
    /// The last event id folded into `cache` (and, once written, into the store).
    folded: i64,
    written: i64,
    /// Addresses with a bucket of their own in `cache`, per workspace and
    /// bucket: past [`MAX_IPS_PER_BUCKET`] they are summed as [`OTHER_IPS`].
    ips: HashMap<(String, i64), usize>,
}

/// The most addresses of one workspace that get a bucket of their own per
/// hour or day in memory; the rest share [`OTHER_IPS`]. Without a bound a
/// client spreading requests over a million addresses (trivial in IPv6) would
/// hold a million buckets per level here. After a restart the count starts
/// again (and a failed load counts its new addresses again on the retry), so
/// the store may hold a few times this many for such a bucket.
pub const MAX_IPS_PER_BUCKET: usize = 10_000;

/// The address target that sums the addresses past the bound.
pub const OTHER_IPS: &str = "other";

/// The targets one event counts for: its key, its keyspace, its workspace,
/// its key's owner, and (by hour and day only) its source address.
fn targets(e: &UsageEvent, gran: Granularity) -> impl Iterator<Item = (Scope, &str)> {
    [
        e.key_id.as_deref().map(|k| (Scope::Key, k)),
        e.keyspace_id.as_deref().map(|k| (Scope::Keyspace, k)),
        Some((Scope::Workspace, e.workspace_id.as_str())),
        e.owner_id.as_deref().map(|o| (Scope::Owner, o)),
        e.source_ip.as_deref().filter(|_| gran != Granularity::Minute).map(|ip| (Scope::Ip, ip)),
    ]
    .into_iter()
    .flatten()
}

/// A batch summed per bucket, with borrowed names: (scope, workspace, target, bucket).
type Sums<'a> = HashMap<(Scope, &'a str, &'a str, i64), Agg>;

/// `batch` summed per bucket of each level, each level counting only the
/// events it has not folded yet. When every level stands at the same event
/// (always, but for the first batches after a restart) each event is summed
/// once, into its minutes (its address into its hour), and the minutes are
/// merged into hours and the hours into days: a third of the work of summing
/// every event into every level (issue 11).
fn sum_batch<'a>(levels: &[Level; 3], batch: &'a [UsageEvent]) -> [Sums<'a>; 3] {
    let mut sums: [Sums<'a>; 3] = Default::default();
    let folded = levels[0].folded;
    if levels.iter().all(|l| l.folded == folded) {
        for e in batch.iter().filter(|e| e.id > folded) {
            let ws = e.workspace_id.as_str();
            for (scope, target) in targets(e, Granularity::Minute) {
                sums[0].entry((scope, ws, target, Granularity::Minute.bucket(e.ts))).or_default().add_event(e);
            }
            if let Some(ip) = e.source_ip.as_deref() {
                sums[1].entry((Scope::Ip, ws, ip, Granularity::Hour.bucket(e.ts))).or_default().add_event(e);
            }
        }
        for gi in 1..3 {
            let gran = Granularity::ALL[gi];
            let (finer, coarser) = sums.split_at_mut(gi);
            for (&(scope, ws, target, bucket), a) in &finer[gi - 1] {
                coarser[0].entry((scope, ws, target, gran.bucket(bucket))).or_default().merge(a);
            }
        }
        return sums;
    }
    for (gi, level) in levels.iter().enumerate() {
        let gran = Granularity::ALL[gi];
        for e in batch.iter().filter(|e| e.id > level.folded) {
            for (scope, target) in targets(e, gran) {
                sums[gi].entry((scope, e.workspace_id.as_str(), target, gran.bucket(e.ts))).or_default().add_event(e);
            }
        }
    }
    sums
}

/// Folds `batch` into the levels that have not seen its events. The batch is
/// first summed per bucket with borrowed names (no allocation per event),
/// then each bucket it touched is loaded if needed and merged once.
fn fold(log: &dyn EventLog, levels: &mut [Level; 3], batch: &[UsageEvent]) -> keyward_store::Result<()> {
    let all = sum_batch(levels, batch);
    for ((gi, level), sums) in levels.iter_mut().enumerate().zip(all) {
        let gran = Granularity::ALL[gi];
        let last = batch.last().map_or(level.folded, |e| e.id.max(level.folded));
        if sums.is_empty() {
            continue;
        }
        let keyed: Vec<(RollupKey, Agg)> = sums
            .into_iter()
            .map(|((scope, ws, target, bucket), a)| {
                let mut k = RollupKey { workspace_id: ws.to_owned(), scope, target: target.to_owned(), gran, bucket };
                if scope == Scope::Ip && !level.cache.contains_key(&k) {
                    let n = level.ips.entry((k.workspace_id.clone(), bucket)).or_default();
                    if *n >= MAX_IPS_PER_BUCKET {
                        k.target = OTHER_IPS.to_owned();
                    } else {
                        *n += 1;
                    }
                }
                (k, a)
            })
            .collect();
        // A set: several addresses may have become the one `other` bucket.
        let missing: HashSet<&RollupKey> =
            keyed.iter().map(|(k, _)| k).filter(|k| !level.cache.contains_key(*k)).collect();
        let missing: Vec<RollupKey> = missing.into_iter().cloned().collect();
        if !missing.is_empty() {
            let stored = log.get_rollups(&missing)?;
            for (k, a) in missing.into_iter().zip(stored) {
                level.cache.insert(k, a.unwrap_or_default());
            }
        }
        for (k, a) in keyed {
            level.cache.entry(k.clone()).or_default().merge(&a);
            level.dirty.insert(k);
        }
        level.folded = last;
    }
    Ok(())
}

/// Writes the dirty buckets of the levels that are due (all with `all`).
fn write_due(log: &dyn EventLog, levels: &mut [Level; 3], due: [bool; 3], newest: i64) {
    let mut rows = Vec::new();
    let mut through = Vec::new();
    for (gi, level) in levels.iter_mut().enumerate() {
        if !due[gi] || level.folded == level.written {
            continue;
        }
        rows.extend(level.dirty.iter().map(|k| (k.clone(), level.cache[k].clone())));
        through.push((Granularity::ALL[gi], level.folded));
    }
    if through.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = log.put_rollups(&rows, &through) {
        tracing::error!(error = %e, "Writing rollups failed; retrying.");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    for (gi, level) in levels.iter_mut().enumerate() {
        if through.iter().any(|(g, _)| *g == Granularity::ALL[gi]) {
            level.dirty.clear();
            level.written = level.folded;
            // Keep the buckets still being filled; older ones are read again if an event comes late.
            let width = Granularity::ALL[gi].width_ms();
            level.cache.retain(|k, _| k.bucket + 2 * width > newest);
            level.ips.retain(|(_, bucket), _| bucket + 2 * width > newest);
        }
    }
}

fn run(log: &dyn EventLog, cfg: &RollupConfig, stop: &AtomicBool) {
    let mut levels: [Level; 3] = Default::default();
    for (gi, level) in levels.iter_mut().enumerate() {
        let w = loop {
            match log.rollup_watermark(Granularity::ALL[gi]) {
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
        level.folded = w;
        level.written = w;
    }
    let mut at = levels.iter().map(|l| l.folded).min().unwrap_or(0);
    let mut last_write: [Instant; 3] = [Instant::now(); 3];
    let mut next_purge = Instant::now() + Duration::from_secs(60);
    let mut newest = 0;
    loop {
        let batch = match log.after_for_rollups(at, 5_000) {
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
        if let Some(last) = batch.last() {
            newest = newest.max(batch.iter().map(|e| e.ts).max().unwrap_or(0));
            if let Err(e) = fold(log, &mut levels, &batch) {
                // Nothing of a level was added before its buckets loaded; its position stays.
                tracing::error!(error = %e, "Loading rollups failed; retrying.");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            metrics::counter!("keyward_rollup_events_total").increment(batch.len() as u64);
            at = last.id;
        }
        let stopping = stop.load(Ordering::Relaxed) && batch.is_empty();
        let due: [bool; 3] =
            std::array::from_fn(|gi| stopping || last_write[gi].elapsed() >= cadence(cfg, Granularity::ALL[gi]));
        write_due(log, &mut levels, due, newest);
        for (gi, d) in due.iter().enumerate() {
            if *d {
                last_write[gi] = Instant::now();
            }
        }
        if stopping {
            return;
        }
        if batch.is_empty() {
            if Instant::now() >= next_purge {
                next_purge = Instant::now() + Duration::from_secs(3_600);
                purge(log, cfg);
            }
            std::thread::sleep(Duration::from_millis(cfg.poll_ms));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_store::events::{SqliteEventLog, TopBy};

    #[test]
    fn addresses_past_the_bound_share_one_bucket_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
        let extra = 50;
        let mut batch: Vec<UsageEvent> = (0..(MAX_IPS_PER_BUCKET + extra) as u64)
            .map(|n| {
                let mut e = crate::pipeline::tests::event(n, "ws");
                // One instant (22:13 UTC), so every event falls in the same hour and day.
                e.ts = 1_700_000_000_000;
                e.source_ip = Some(format!("2001:db8::{n:x}"));
                e.bytes_out = Some(u64::MAX / 2);
                e
            })
            .collect();
        // The first address comes back after the bound: it keeps its own bucket.
        let mut again = crate::pipeline::tests::event(0, "ws");
        again.ts = 1_700_000_000_000;
        again.source_ip = Some("2001:db8::0".into());
        batch.push(again);
        log.append(&mut batch).unwrap();
        let mut levels: [Level; 3] = Default::default();
        // Two batches, so the second meets a full count.
        let (a, b) = batch.split_at(MAX_IPS_PER_BUCKET);
        fold(&log, &mut levels, a).unwrap();
        fold(&log, &mut levels, b).unwrap();
        write_due(&log, &mut levels, [true; 3], keyward_core::time::now_ms());
        let (since, until) = (0, i64::MAX / 2);
        let top = log.rollup_top("ws", Scope::Ip, Granularity::Hour, since, until, TopBy::Requests, 3).unwrap();
        assert_eq!(top[0].target, OTHER_IPS, "{top:?}");
        assert_eq!(top[0].requests, extra as u64);
        assert_eq!((top[1].target.as_str(), top[1].requests), ("2001:db8::0", 2), "{top:?}");
        assert!(
            log.rollup_top("ws", Scope::Ip, Granularity::Minute, since, until, TopBy::Requests, 3).unwrap().is_empty()
        );
        // Every request is counted once, in one of the bound's buckets + `other`, by hour and by day.
        let db = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
        for gran in ["hour", "day"] {
            let (rows, requests): (i64, i64) = db
                .query_row(
                    "SELECT COUNT(*), SUM(requests) FROM rollups WHERE scope = 'ip' AND gran = ?1",
                    [gran],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((rows, requests), (MAX_IPS_PER_BUCKET as i64 + 1, batch.len() as i64), "{gran}");
        }
        // Huge byte counts saturate, never wrap.
        let ws = log.rollup_top("ws", Scope::Workspace, Granularity::Hour, since, until, TopBy::Bytes, 1).unwrap();
        assert_eq!(ws[0].requests, batch.len() as u64);
        assert_eq!(ws[0].bytes, 1 << 53);
    }

    #[test]
    fn summing_minutes_into_hours_and_days_equals_summing_every_event_into_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
        let outcomes = [keyward_core::Outcome::Valid, keyward_core::Outcome::RateLimited];
        // 3,000 events over two days, across midnight: 7 keys, 3 owners, 2 keyspaces, 40 addresses.
        let mut batch: Vec<UsageEvent> = (0..3_000u64)
            .map(|n| {
                let mut e = crate::pipeline::tests::event(n, if n % 11 == 0 { "ws2" } else { "ws" });
                e.ts = 1_700_000_000_000 + (n as i64) * 61_000;
                e.key_id = Some(format!("key_{}", n % 7));
                e.owner_id = (n % 5 != 0).then(|| format!("owner_{}", n % 3));
                e.keyspace_id = Some(format!("ks_{}", n % 2));
                e.source_ip = (n % 4 != 0).then(|| format!("203.0.113.{}", n % 40));
                e.outcome = outcomes[(n % 9 == 0) as usize];
                e.http_status = (n % 3 == 0).then_some(if n % 6 == 0 { 200 } else { 503 });
                e.bytes_in = Some(n);
                e.latency_us = Some(n * 17 % 5_000);
                e
            })
            .collect();
        log.append(&mut batch).unwrap();
        let (a, b) = batch.split_at(1_700);
        // Every level at the same place: the summing of minutes into hours and days.
        let mut once: [Level; 3] = Default::default();
        fold(&log, &mut once, a).unwrap();
        fold(&log, &mut once, b).unwrap();
        // Levels at different places (as after a restart; all still before the
        // first event): every event summed into every level, the batch at once.
        let mut apart: [Level; 3] = Default::default();
        apart[2].folded = -1;
        apart[1].folded = -2;
        fold(&log, &mut apart, &batch).unwrap();
        for gi in 0..3 {
            assert_eq!(once[gi].folded, batch.last().unwrap().id);
            assert!(!once[gi].cache.is_empty());
            assert_eq!(once[gi].cache, apart[gi].cache, "{:?}", Granularity::ALL[gi]);
            let requests: u64 =
                once[gi].cache.iter().filter(|(k, _)| k.scope == Scope::Workspace).map(|(_, a)| a.requests).sum();
            assert_eq!(requests, batch.len() as u64);
        }
    }
}
