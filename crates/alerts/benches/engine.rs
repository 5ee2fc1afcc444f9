//! The rules engine: events per second it evaluates (all default rules on),
//! and the memory it holds per active key.
//!
//! ```sh
//! cargo bench -p keyward-alerts --bench engine
//! ```
//!
//! The traffic: 100,000 events over 10,000 keys, each key used from 1 to 3
//! addresses of a pool of 5,000, 4 % refused, a status and bytes on every
//! event (what the gateway records), and a trickle of unknown keys.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use keyward_alerts::{Engine, EngineConfig};
use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent};

const KEYS: usize = 10_000;
const EVENTS: usize = 100_000;

fn events(start_ts: i64) -> Vec<UsageEvent> {
    let mut out = Vec::with_capacity(EVENTS);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..EVENTS {
        let r = next();
        let key = (r % KEYS as u64) as usize;
        let ip_n = (key * 7 + (r >> 20) as usize % 3) % 5_000;
        let unknown = r % 500 == 0;
        let outcome = match r % 100 {
            _ if unknown => Outcome::NotFound,
            0..=1 => Outcome::RateLimited,
            2 => Outcome::Forbidden,
            3 => Outcome::IpNotAllowed,
            _ => Outcome::Valid,
        };
        out.push(UsageEvent {
            id: i as i64 + 1,
            ts: start_ts + (i as i64) / 20, // 20 events per ms: 100k events over 5 s
            kind: EventKind::Verify,
            request_id: format!("req_{i}"),
            workspace_id: "ws_bench".into(),
            keyspace_id: (!unknown).then(|| "ks_bench".into()),
            key_id: (!unknown).then(|| format!("key_{key:06}")),
            key_hint: (!unknown).then(|| format!("kw_live_…{key:04}")),
            owner_id: None,
            fingerprint: unknown.then(|| format!("{:016x}", r)),
            source_ip: Some(format!("10.{}.{}.{}", ip_n / 65_536, (ip_n / 256) % 256, ip_n % 256)),
            user_agent: Some("client/1.0".into()),
            method: Some("GET".into()),
            path: Some("/v1/invoices".into()),
            outcome,
            http_status: Some(if r % 200 == 0 { 503 } else { 200 }),
            error: None,
            bytes_in: Some(300),
            bytes_out: Some(2_000),
            latency_us: Some(800),
            country: None,
            asn: None,
            as_org: None,
            deprecated: false,
            scopes: Vec::new(),
        });
    }
    out
}

fn throughput(c: &mut Criterion) {
    let batch = events(1_800_000_000_000);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("observe 100k events, 10k keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for n in 0..iters {
                // A warm engine: the keys are known, as in steady traffic.
                let mut engine = Engine::new(EngineConfig::default());
                let mut findings = Vec::new();
                for e in &batch {
                    engine.observe(e, &mut findings);
                }
                findings.clear();
                let later: Vec<UsageEvent> =
                    batch.iter().map(|e| UsageEvent { ts: e.ts + 10_000 + n as i64, ..e.clone() }).collect();
                let started = Instant::now();
                for e in &later {
                    engine.observe(e, &mut findings);
                }
                total += started.elapsed();
                std::hint::black_box(&findings);
            }
            total
        })
    });
    group.finish();
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Resident memory per active key, from 100,000 keys each used from 2 addresses.
fn memory() {
    let n = 100_000usize;
    let template = events(1_800_000_000_000).swap_remove(0);
    let evs: Vec<UsageEvent> = (0..2 * n)
        .map(|i| (i, template.clone()))
        .map(|(i, e)| UsageEvent {
            id: i as i64 + 1,
            ts: e.ts + i as i64,
            key_id: Some(format!("key_{:06}", i % n)),
            key_hint: Some(format!("kw_live_…{:04}", i % 10_000)),
            keyspace_id: Some("ks_bench".into()),
            fingerprint: None,
            outcome: Outcome::Valid,
            source_ip: Some(format!("10.{}.{}.{}", i % 2, (i / 256) % 256, i % 256)),
            ..e
        })
        .collect();
    let before = rss_bytes();
    let mut engine = Engine::new(EngineConfig::default());
    let mut findings = Vec::new();
    for e in &evs {
        engine.observe(e, &mut findings);
        findings.clear();
    }
    let after = rss_bytes();
    let (keys, ips) = engine.sizes();
    println!(
        "engine memory: {keys} active keys ({ips} addresses with refusals): {:.0} MB, {} bytes per active key",
        (after - before) as f64 / 1e6,
        (after - before) / keys as u64
    );
    drop(evs);
    std::hint::black_box(engine);
}

criterion_group!(benches, throughput);

fn main() {
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
