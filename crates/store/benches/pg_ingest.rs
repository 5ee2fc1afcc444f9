//! Usage-event ingest into PostgreSQL (issue 13): batches of 1,000 events
//! appended by `PgEventLog::append` (binary COPY under the append lock, one
//! commit each), against a throwaway PostgreSQL with its durable defaults
//! (fsync on). Events over 100 keys and 1,000 addresses, as in `query`.
//!
//! ```sh
//! cargo bench -p keyward-store --bench pg_ingest
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent};
use keyward_store::events::EventLog;
use keyward_store::postgres::PgEventLog;

fn event(n: u64, now: i64) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts: now + (n % 1000) as i64,
        kind: EventKind::Verify,
        request_id: format!("req_{n:020}"),
        workspace_id: "ws_01M83H4SEVpXQ9L6qmuW".into(),
        keyspace_id: Some("ks_01M83H4SEVpXQ9L6qmuW".into()),
        key_id: Some(format!("key_01M83H4TG{:011}", n % 100)),
        key_hint: Some("kw_live_…abcd".into()),
        owner_id: Some(format!("owner_{}", n % 10)),
        fingerprint: None,
        source_ip: Some(format!("198.51.{}.{}", (n / 250) % 4, n % 250)),
        user_agent: Some("bench/1.0".into()),
        method: Some("GET".into()),
        path: Some("/v1/orders".into()),
        outcome: if n.is_multiple_of(50) { Outcome::RateLimited } else { Outcome::Valid },
        http_status: None,
        error: None,
        bytes_in: None,
        bytes_out: None,
        latency_us: None,
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

fn ingest(c: &mut Criterion) {
    let Some(pg) = keyward_testkit::Postgres::start_durable() else { return };
    pg.psql("postgres", "CREATE DATABASE bench");
    let log = PgEventLog::open(&pg.url("bench"), 2).unwrap();
    let now = keyward_core::time::now_ms();
    let mut n = 0u64;
    let mut g = c.benchmark_group("pg_ingest");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(30);
    g.bench_function("append_1000", |b| {
        b.iter(|| {
            let mut batch: Vec<UsageEvent> = (0..1000).map(|i| event(n + i, now)).collect();
            n += 1000;
            log.append(&mut batch).unwrap();
        })
    });
    g.finish();
    eprintln!("events in the log: {}", log.count().unwrap());
}

criterion_group!(benches, ingest);
criterion_main!(benches);
