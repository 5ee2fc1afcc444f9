//! A 30-day hourly series from the rollups (issue 14: under 50 ms over 10
//! million events). Folds `KEYWARD_BENCH_EVENTS` events (default 10,000,000)
//! over 30 days and 100 keys into rollups the way the roller does (minute
//! buckets for the last 7 days, hours and days for all 30), stores them in a
//! real `events.db`, then times one key's hourly series over the 30 days
//! (720 buckets read and merged) and a keyspace's daily one.
//!
//! ```sh
//! cargo bench -p keyward-store --bench rollups
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent};
use keyward_core::rollup::{Agg, Granularity, Scope};
use keyward_store::events::{EventLog, RollupKey, SqliteEventLog, TopBy};

const WS: &str = "ws_01M83H4SEVpXQ9L6qmuW";
const DAY: i64 = 86_400_000;
const T0: i64 = 1_780_000_000_000;

fn event(n: u64, total: u64) -> UsageEvent {
    UsageEvent {
        id: n as i64 + 1,
        ts: T0 + (n as i128 * 30 * DAY as i128 / total as i128) as i64,
        kind: EventKind::Verify,
        request_id: String::new(),
        workspace_id: WS.into(),
        keyspace_id: Some("ks_bench".into()),
        key_id: Some(format!("key_{:03}", n % 100)),
        key_hint: None,
        owner_id: None,
        fingerprint: None,
        source_ip: Some(format!("198.51.100.{}", n % 200)),
        user_agent: None,
        method: None,
        path: None,
        outcome: if n.is_multiple_of(40) { Outcome::RateLimited } else { Outcome::Valid },
        http_status: Some(if n.is_multiple_of(100) { 500 } else { 200 }),
        error: None,
        bytes_in: Some(200),
        bytes_out: Some(2_000),
        latency_us: Some(300 + n % 5_000),
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

fn build(log: &SqliteEventLog, total: u64) {
    let started = Instant::now();
    let mut buckets: HashMap<RollupKey, Agg> = HashMap::new();
    let recent = T0 + 23 * DAY;
    for n in 0..total {
        let e = event(n, total);
        for (scope, target) in [
            (Scope::Key, e.key_id.clone().unwrap()),
            (Scope::Keyspace, "ks_bench".into()),
            (Scope::Workspace, WS.into()),
        ] {
            for gran in Granularity::ALL {
                if gran == Granularity::Minute && e.ts < recent {
                    continue;
                }
                let k = RollupKey {
                    workspace_id: WS.into(),
                    scope,
                    target: target.clone(),
                    gran,
                    bucket: gran.bucket(e.ts),
                };
                buckets.entry(k).or_default().add_event(&e);
            }
        }
    }
    let rows: Vec<(RollupKey, Agg)> = buckets.into_iter().collect();
    for chunk in rows.chunks(50_000) {
        let through: Vec<(Granularity, i64)> = Granularity::ALL.iter().map(|g| (*g, total as i64)).collect();
        log.put_rollups(chunk, &through).unwrap();
    }
    eprintln!("{total} events folded into {} buckets and stored in {:.1?}", rows.len(), started.elapsed());
}

fn series(c: &mut Criterion) {
    let total: u64 = std::env::var("KEYWARD_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
    build(&log, total);
    let (since, until) = (T0, T0 + 30 * DAY);
    let mut g = c.benchmark_group(format!("rollups_{total}_events"));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("key_30_days_hourly", |b| {
        b.iter(|| {
            let rows = log.rollup_series(WS, Scope::Key, "key_007", Granularity::Hour, since, until).unwrap();
            assert!(rows.len() >= 719, "{}", rows.len());
            let mut total = Agg::default();
            for (_, a) in &rows {
                total.merge(a);
            }
            (total.requests, total.latency.quantile(0.99), total.ips.count())
        })
    });
    g.bench_function("keyspace_30_days_daily", |b| {
        b.iter(|| {
            let rows = log.rollup_series(WS, Scope::Keyspace, "ks_bench", Granularity::Day, since, until).unwrap();
            assert!(rows.len() >= 30);
            rows.len()
        })
    });
    g.bench_function("top_keys_30_days_hourly", |b| {
        b.iter(|| {
            let top = log.rollup_top(WS, Scope::Key, Granularity::Hour, since, until, TopBy::Requests, 10).unwrap();
            assert_eq!(top.len(), 10);
            top[0].requests
        })
    });
    g.bench_function("top_keys_30_days_daily", |b| {
        b.iter(|| {
            let top = log.rollup_top(WS, Scope::Key, Granularity::Day, since, until, TopBy::Bytes, 10).unwrap();
            assert_eq!(top.len(), 10);
            top[0].bytes
        })
    });
    g.finish();
}

criterion_group!(benches, series);
criterion_main!(benches);
