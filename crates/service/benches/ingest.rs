//! Sustained usage-event ingest into the SQLite event log while
//! verifications run on another thread. Figures go to BENCHMARKS.md.
//!
//! Each case runs twice: on a plain `events.db`, and on one encrypted with
//! SQLCipher under a data key (`_encrypted`, issue 12), as `keyward serve`
//! opens it with a master key.
//!
//! Run: `cargo bench -p keyward-service --bench ingest`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_core::event::{EventKind, UsageEvent};
use keyward_core::{KeyHasher, Outcome, Pepper};
use keyward_events::{EventPipeline, PipelineConfig};
use keyward_service::api::{CreateKey, CreateKeyspace};
use keyward_service::{Actor, RequestCtx, Service, ServiceConfig, VerifyInput};
use keyward_store::events::SqliteEventLog;
use keyward_store::sqlite::SqliteStore;

const EVENTS: u64 = 400_000;

fn event(n: u64) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts: keyward_core::time::now_ms(),
        kind: EventKind::Verify,
        request_id: format!("req_{n:020}"),
        workspace_id: "ws_01M83H4SEVpXQ9L6qmuW".into(),
        keyspace_id: Some("ks_01M83H4TGB1ePlS7A26V".into()),
        key_id: Some(format!("key_01M83H4TG{:011}", n % 1000)),
        key_hint: Some("kw_live_…ab12".into()),
        // A realistic spread: 1,000 keys and owners, 10,000 addresses, some
        // refusals, so every index of the log takes inserts all over.
        owner_id: Some(format!("customer-{}", n % 1000)),
        fingerprint: None,
        source_ip: Some(format!("203.0.{}.{}", (n / 7) % 40, (n / 3) % 250)),
        user_agent: Some("shop-backend/2.3 (+https://example.com)".into()),
        method: Some("GET".into()),
        path: Some("/v1/invoices/12345".into()),
        outcome: if n.is_multiple_of(20) { Outcome::RateLimited } else { Outcome::Valid },
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

/// A service with one key whose verifications log to `pipeline`.
fn verifier(pipeline: Arc<EventPipeline>) -> (Arc<Service>, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let svc = Service::open(store, KeyHasher::new(&Pepper::generate(1), &[]), ServiceConfig::default())
            .unwrap()
            .with_events(pipeline);
        let root = svc.bootstrap().await.unwrap().unwrap();
        let (ws, id, role) = svc.authenticate(&root.key).unwrap();
        let actor = Actor { workspace_id: ws.clone(), root_key_id: id, role, source_ip: None, request_id: None };
        let ks = svc.create_keyspace(&actor, CreateKeyspace::named("b")).await.unwrap();
        let key = svc
            .create_key(
                &actor,
                CreateKey {
                    ratelimits: Some(vec![]),
                    scopes: Some(vec!["read".into()]),
                    owner_id: Some("customer-42".into()),
                    ..CreateKey::in_keyspace(&ks.id)
                },
            )
            .await
            .unwrap()
            .key;
        (Arc::new(svc), ws, key)
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(EVENTS));
    // Each event comes from a real verification: the producer runs the whole
    // verify path (decision, event, enqueue) as fast as it can while the
    // writer appends batches to SQLite. The rate is events durably written
    // per second, from the first verify to the final flush.
    for (suffix, key) in [("", None), ("_encrypted", Some(keyward_core::seal::SecretKey::generate()))] {
        g.bench_function(format!("verify_and_write_to_sqlite{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let log = Arc::new(SqliteEventLog::open_with(&dir.path().join("events.db"), key.as_ref()).unwrap());
                    let cfg =
                        PipelineConfig { queue_capacity: 200_000, enqueue_timeout_ms: 5_000, ..Default::default() };
                    let pipeline = EventPipeline::start(log.clone(), cfg).unwrap();
                    let (svc, ws, key) = verifier(pipeline.clone());
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let ip = Some("203.0.113.7".parse().unwrap());
                    let started = Instant::now();
                    let valid = rt.block_on(async {
                        let mut valid = 0u64;
                        for n in 0..EVENTS {
                            let rid = format!("req_{n:016}");
                            let ctx = RequestCtx { request_id: &rid, user_agent: Some("shop-backend/2.3") };
                            let input = VerifyInput {
                                ip,
                                method: Some("GET"),
                                path: Some("/v1/invoices/12345"),
                                ..VerifyInput::key(&key)
                            };
                            if svc.verify(&ws, &input, &ctx).await.unwrap().outcome.is_valid() {
                                valid += 1;
                            }
                        }
                        pipeline.flush().await;
                        valid
                    });
                    let took = started.elapsed();
                    assert_eq!(valid, EVENTS, "every verification admitted");
                    assert_eq!(pipeline.stats().dropped.load(Ordering::Relaxed), 0, "no event dropped");
                    assert_eq!(log.count().unwrap(), EVENTS, "every event written");
                    eprintln!("verify + ingest{suffix}: {:.0} events/s", EVENTS as f64 / took.as_secs_f64());
                    pipeline.shutdown();
                    total += took;
                }
                total
            })
        });
        g.bench_function(format!("sqlite_append_only{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let log = SqliteEventLog::open_with(&dir.path().join("events.db"), key.as_ref()).unwrap();
                    let mut events: Vec<UsageEvent> = (0..EVENTS).map(event).collect();
                    let started = Instant::now();
                    for chunk in events.chunks_mut(20_000) {
                        log.append(chunk).unwrap();
                    }
                    let took = started.elapsed();
                    eprintln!("append only{suffix}: {:.0} events/s", EVENTS as f64 / took.as_secs_f64());
                    total += took;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
