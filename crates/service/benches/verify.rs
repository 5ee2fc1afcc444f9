//! In-process verification from the key index: a hit, an unknown key the
//! negative cache remembers, and a malformed key. Figures go to BENCHMARKS.md.
//!
//! Run: `cargo bench -p keyward-service --bench verify`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::policy::RateLimit;
use keyward_core::{KeyHasher, KeyPrefix, Pepper, RawKey, Role};
use keyward_service::api::{CreateKey, CreateKeyspace};
use keyward_service::{Actor, Service, ServiceConfig, VerifyInput};
use keyward_store::sqlite::SqliteStore;

const KEYS: usize = 10_000;

fn new_key(ks: &str, i: usize) -> CreateKey {
    CreateKey {
        owner_id: Some(format!("owner-{i}")),
        meta: Some(serde_json::json!({"plan": "pro"})),
        ip_allowlist: Some(vec![]),
        ratelimits: Some(vec![]),
        ..CreateKey::in_keyspace(ks)
    }
}

/// A service with `KEYS` plain keys; returns it, the workspace, one plain key
/// and one key with the full policy (3 scopes, 4 CIDRs, 2 windows, a quota).
fn setup() -> (Service, String, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let svc = Service::open(store, KeyHasher::new(&Pepper::generate(1), &[]), ServiceConfig::default()).unwrap();
        let root = svc.bootstrap().await.unwrap().unwrap();
        let (ws, id, role) = svc.authenticate(&root.key).unwrap();
        let actor = Actor { workspace_id: ws.clone(), root_key_id: id, role, source_ip: None, request_id: None };
        assert_eq!(role, Role::Admin);
        let ks = svc.create_keyspace(&actor, CreateKeyspace::named("bench")).await.unwrap();
        let mut last = String::new();
        for i in 0..KEYS {
            last = svc.create_key(&actor, new_key(&ks.id, i)).await.unwrap().key;
        }
        let full = CreateKey {
            scopes: Some(vec!["read".into(), "write".into(), "invoices:*".into()]),
            ip_allowlist: Some(vec![
                "10.0.0.0/8".into(),
                "192.168.0.0/16".into(),
                "2001:db8::/32".into(),
                "203.0.113.0/24".into(),
            ]),
            ratelimits: Some(vec![
                RateLimit { name: "burst".into(), limit: 1_000_000_000, window_ms: 1000 },
                RateLimit { name: "minute".into(), limit: 1_000_000_000, window_ms: 60_000 },
            ]),
            remaining: Some(1_000_000_000_000),
            ..new_key(&ks.id, KEYS)
        };
        let full = svc.create_key(&actor, full).await.unwrap().key;
        (svc, ws, last, full)
    })
}

fn bench(c: &mut Criterion) {
    let (svc, ws, key, full) = setup();
    let unknown = RawKey::generate(&KeyPrefix::new("kw_live").unwrap());
    let now = keyward_core::time::now_ms();
    // Teach the negative cache the unknown key, as a first lookup would.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(svc.verify(&ws, &VerifyInput::key(unknown.expose()), &Default::default())).unwrap();
    let mut malformed = key.clone().into_bytes();
    let i = malformed.len() - 10;
    malformed[i] = if malformed[i] == b'a' { b'b' } else { b'a' };
    let malformed = String::from_utf8(malformed).unwrap();
    let ip = Some("203.0.113.5".parse().unwrap());

    let mut g = c.benchmark_group("verify_cached");
    g.bench_function("hit", |b| {
        b.iter(|| svc.verify_cached(black_box(&ws), &VerifyInput { ip, ..VerifyInput::key(black_box(&key)) }, now))
    });
    let scopes = vec!["invoices:read".to_string()];
    let ip4 = Some("203.0.113.77".parse().unwrap());
    {
        let input = VerifyInput {
            key: &full,
            ip: ip4,
            method: Some("GET"),
            path: Some("/v1/invoices/42"),
            scopes: &scopes,
            cost: 1,
            keyspace_id: None,
        };
        match svc.verify_cached(&ws, &input, now) {
            keyward_service::verify::Cached::Decided(d) => assert!(d.outcome.is_valid(), "{:?}", d.outcome),
            other => panic!("{other:?}"),
        }
    }
    g.bench_function("hit_full_policy", |b| {
        b.iter(|| {
            let input = VerifyInput {
                key: black_box(&full),
                ip: ip4,
                method: Some("GET"),
                path: Some("/v1/invoices/42"),
                scopes: &scopes,
                cost: 1,
                keyspace_id: None,
            };
            let d = svc.verify_cached(black_box(&ws), &input, keyward_core::time::now_ms());
            debug_assert!(matches!(&d, keyward_service::verify::Cached::Decided(x) if x.outcome.is_valid()));
            d
        })
    });
    g.bench_function("miss_remembered", |b| {
        b.iter(|| {
            svc.verify_cached(black_box(&ws), &VerifyInput { ip, ..VerifyInput::key(black_box(unknown.expose())) }, now)
        })
    });
    g.bench_function("malformed", |b| {
        b.iter(|| {
            svc.verify_cached(black_box(&ws), &VerifyInput { ip, ..VerifyInput::key(black_box(&malformed)) }, now)
        })
    });
    g.finish();

    let hasher = svc.hasher().clone();
    c.bench_function("hmac_sha256_key", |b| b.iter(|| hasher.hash(black_box(&key))));
    c.bench_function("check_format", |b| b.iter(|| keyward_core::key::check_format(black_box(&key))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
