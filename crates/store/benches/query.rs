//! Event-log queries against the log's size (issue 8, defect 8): each query
//! must cost what it returns, not what the log holds. Builds logs of
//! `KEYWARD_BENCH_EVENTS` events (default 300,000 and 3,000,000) over 100 keys
//! and 1,000 addresses, then times the queries an operator makes.
//!
//! ```sh
//! cargo bench -p keyward-store --bench query
//! ```

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent};
use keyward_store::events::{EventFilter, SqliteEventLog};

const WS: &str = "ws_01M83H4SEVpXQ9L6qmuW";
const T0: i64 = 1_780_000_000_000;

fn key(n: u64) -> String {
    format!("key_01M83H4TG{:011}", n % 100)
}

fn event(n: u64) -> UsageEvent {
    UsageEvent {
        id: 0,
        // 100 events a second.
        ts: T0 + (n as i64) * 10,
        kind: EventKind::Verify,
        request_id: format!("req_{n:020}"),
        workspace_id: WS.into(),
        keyspace_id: Some("ks_01M83H4TGB1ePlS7A26V".into()),
        key_id: Some(key(n)),
        key_hint: Some("kw_live_…ab12".into()),
        owner_id: Some(format!("customer-{}", n % 100)),
        fingerprint: None,
        source_ip: Some(format!("203.0.{}.{}", (n / 7) % 4, (n / 3) % 250)),
        user_agent: Some("shop-backend/2.3".into()),
        method: Some("GET".into()),
        path: Some("/v1/invoices/12345".into()),
        outcome: if n.is_multiple_of(50) { Outcome::RateLimited } else { Outcome::Valid },
        http_status: Some(if n % 100 == 7 { 503 } else { 200 }),
        error: None,
        bytes_in: Some(512),
        bytes_out: Some(2048),
        latency_us: Some(1500),
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

fn build(n: u64) -> (tempfile::TempDir, SqliteEventLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut batch: Vec<UsageEvent> = (i..(i + 20_000).min(n)).map(event).collect();
        log.append(&mut batch).unwrap();
        i += 20_000;
    }
    eprintln!("built a log of {n} events in {:.1} s", started.elapsed().as_secs_f64());
    (dir, log)
}

fn filter() -> EventFilter {
    EventFilter { workspace_id: WS.into(), limit: 100, ..EventFilter::default() }
}

/// Pages through every event of `f` (as the NDJSON export does); returns the count.
fn export(log: &SqliteEventLog, mut f: EventFilter) -> usize {
    f.limit = 1000;
    let mut n = 0;
    loop {
        let page = log.query(&f).unwrap();
        n += page.len();
        match page.last() {
            Some(e) if page.len() == 1000 => f.before_id = Some(e.id),
            _ => return n,
        }
    }
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<u64> = match std::env::var("KEYWARD_BENCH_EVENTS") {
        Ok(v) => v.split(',').map(|s| s.parse().unwrap()).collect(),
        Err(_) => vec![300_000, 3_000_000],
    };
    for n in sizes {
        let (_dir, log) = build(n);
        let mut g = c.benchmark_group(format!("events_{n}"));
        g.sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
        let k = key(42);
        g.bench_function("key_newest_page", |b| {
            b.iter(|| log.query(&EventFilter { key_id: Some(k.clone()), ..filter() }).unwrap())
        });
        g.bench_function("key_oldest_page_until", |b| {
            let until = Some(T0 + 60_000);
            b.iter(|| {
                let rows = log.query(&EventFilter { key_id: Some(k.clone()), until, ..filter() }).unwrap();
                assert!(!rows.is_empty());
                rows
            })
        });
        g.bench_function("key_deep_cursor_page", |b| {
            b.iter(|| log.query(&EventFilter { key_id: Some(k.clone()), before_id: Some(1000), ..filter() }).unwrap())
        });
        g.bench_function("all_oldest_page_until", |b| {
            b.iter(|| log.query(&EventFilter { until: Some(T0 + 60_000), ..filter() }).unwrap())
        });
        g.bench_function("code_no_match", |b| {
            b.iter(|| {
                let rows = log.query(&EventFilter { code: Some(Outcome::NotFound), ..filter() }).unwrap();
                assert!(rows.is_empty());
            })
        });
        g.bench_function("code_rate_limited_page", |b| {
            b.iter(|| log.query(&EventFilter { code: Some(Outcome::RateLimited), ..filter() }).unwrap())
        });
        g.bench_function("ip_page", |b| {
            b.iter(|| log.query(&EventFilter { ip: Some("203.0.1.17".into()), ..filter() }).unwrap())
        });
        g.bench_function("owner_page", |b| {
            b.iter(|| {
                log.query(&EventFilter { owner_id: Some("customer-7".into()), owner_keys: vec![key(7)], ..filter() })
                    .unwrap()
            })
        });
        g.bench_function("status_5xx_page", |b| {
            b.iter(|| log.query(&EventFilter { status_class: Some(5), ..filter() }).unwrap())
        });
        g.bench_function("key_export_all", |b| {
            b.iter(|| {
                let got = export(&log, EventFilter { key_id: Some(k.clone()), ..filter() });
                assert_eq!(got as u64, n / 100);
            })
        });
        g.bench_function("key_review_1h", |b| {
            let since = T0 + (n as i64) * 10 / 2;
            b.iter(|| log.review(WS, &k, since, since + 3_600_000, 20).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
