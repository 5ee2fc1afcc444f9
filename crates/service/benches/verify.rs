//! In-process verification from the key index: a hit, an unknown key the
//! negative cache remembers, and a malformed key. Figures go to BENCHMARKS.md.
//!
//! Run: `cargo bench -p keyward-service --bench verify`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::{KeyHasher, KeyPrefix, Pepper, RawKey, Role};
use keyward_service::api::{CreateKey, CreateKeyspace};
use keyward_service::{Actor, Service, ServiceConfig, VerifyInput};
use keyward_store::sqlite::SqliteStore;

const KEYS: usize = 10_000;

fn setup() -> (Service, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let svc = Service::open(store, KeyHasher::new(&Pepper::generate(1), &[]), ServiceConfig::default()).unwrap();
        let root = svc.bootstrap().await.unwrap().unwrap();
        let (ws, id, role) = svc.authenticate(&root.key).unwrap();
        let actor = Actor { workspace_id: ws.clone(), root_key_id: id, role, source_ip: None, request_id: None };
        assert_eq!(role, Role::Admin);
        let ks = svc.create_keyspace(&actor, CreateKeyspace { name: "bench".into(), prefix: None, default_ttl_ms: None }).await.unwrap();
        let mut last = String::new();
        for i in 0..KEYS {
            let k = svc
                .create_key(&actor, CreateKey {
                    keyspace_id: ks.id.clone(),
                    name: None,
                    owner_id: Some(format!("owner-{i}")),
                    meta: Some(serde_json::json!({"plan": "pro"})),
                    expires_at: None,
                    ttl_ms: None,
                    enabled: None,
                })
                .await
                .unwrap();
            last = k.key;
        }
        (svc, ws, last)
    })
}

fn bench(c: &mut Criterion) {
    let (svc, ws, key) = setup();
    let unknown = RawKey::generate(&KeyPrefix::new("kw_live").unwrap());
    let now = keyward_core::time::now_ms();
    // Teach the negative cache the unknown key, as a first lookup would.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(svc.verify(&ws, &VerifyInput { key: unknown.expose(), ip: None })).unwrap();
    let mut malformed = key.clone().into_bytes();
    let i = malformed.len() - 10;
    malformed[i] = if malformed[i] == b'a' { b'b' } else { b'a' };
    let malformed = String::from_utf8(malformed).unwrap();
    let ip = Some("203.0.113.5".parse().unwrap());

    let mut g = c.benchmark_group("verify_cached");
    g.bench_function("hit", |b| {
        b.iter(|| svc.verify_cached(black_box(&ws), &VerifyInput { key: black_box(&key), ip }, now))
    });
    g.bench_function("miss_remembered", |b| {
        b.iter(|| svc.verify_cached(black_box(&ws), &VerifyInput { key: black_box(unknown.expose()), ip }, now))
    });
    g.bench_function("malformed", |b| {
        b.iter(|| svc.verify_cached(black_box(&ws), &VerifyInput { key: black_box(&malformed), ip }, now))
    });
    g.finish();

    let hasher = svc.hasher().clone();
    c.bench_function("hmac_sha256_key", |b| b.iter(|| hasher.hash(black_box(&key))));
    c.bench_function("check_format", |b| b.iter(|| keyward_core::key::check_format(black_box(&key))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
