//! Memory per key and cold start with many keys (issue 8, defect 9).
//!
//! Phase 1 imports `KEYWARD_BENCH_KEYS` keys (default 1,000,000) by hash into
//! a SQLite file, the way a large provider migrates; phase 2, in a fresh
//! process, opens the service on it and reports the resident memory the
//! index added per key, the cold-start time, and how long dropping takes.
//!
//! ```sh
//! cargo bench -p keyward-service --bench memory
//! ```

use std::sync::Arc;
use std::time::Instant;

use keyward_core::{KeyHasher, Pepper};
use keyward_service::api::CreateKeyspace;
use keyward_service::import::{ImportKeys, ImportedKey};
use keyward_service::{Actor, Service, ServiceConfig};
use keyward_store::sqlite::SqliteStore;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn pepper() -> Pepper {
    Pepper::from_hex(1, &"ab".repeat(32)).unwrap()
}

fn imported(i: usize) -> ImportedKey {
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(format!("legacy-key-{i}").as_bytes()))
    };
    serde_json::from_value(serde_json::json!({
        "hash": hash,
        "prefix": "old_",
        "last4": format!("{:04}", i % 10_000),
        "owner_id": format!("cust-{}", i / 3),
        "scopes": ["read"],
    }))
    .unwrap()
}

fn build(path: &std::path::Path, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(path).unwrap());
        let svc = Service::open(store, KeyHasher::new(&pepper(), &[]), ServiceConfig::default()).unwrap();
        let root = svc.bootstrap().await.unwrap().unwrap();
        let (ws, id, role) = svc.authenticate(&root.key).unwrap();
        let actor = Actor { workspace_id: ws, root_key_id: id, role, source_ip: None, request_id: None };
        let ks = svc.create_keyspace(&actor, CreateKeyspace::named("migrated")).await.unwrap();
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let keys = chunk.iter().map(|&i| imported(i)).collect();
            svc.import_keys(&actor, ImportKeys { keyspace_id: ks.id.clone(), keys }).await.unwrap();
        }
        eprintln!("imported {n} keys in {:.1} s", started.elapsed().as_secs_f64());
    });
}

fn measure(path: &std::path::Path) {
    eprintln!(
        "size_of CachedKey {} B, Usage {} B",
        std::mem::size_of::<keyward_service::index::CachedKey>(),
        std::mem::size_of::<keyward_service::index::Usage>()
    );
    let before = rss_bytes();
    let started = Instant::now();
    let store = Arc::new(SqliteStore::open(path).unwrap());
    let svc = Service::open(store, KeyHasher::new(&pepper(), &[]), ServiceConfig::default()).unwrap();
    let open = started.elapsed();
    let after = rss_bytes();
    let n = svc.index().len();
    println!(
        "keys: {n}\ncold start: {:.2} s\nRSS added by the index: {:.0} MB, {} bytes per key",
        open.as_secs_f64(),
        (after - before) as f64 / 1e6,
        (after - before) / n as u64
    );
    let started = Instant::now();
    drop(svc);
    println!("drop: {:.2} s", started.elapsed().as_secs_f64());
}

fn main() {
    let n: usize = std::env::var("KEYWARD_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    if let Ok(path) = std::env::var("KEYWARD_BENCH_MEASURE") {
        measure(std::path::Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    build(&path, n);
    let size = std::fs::metadata(&path).unwrap().len();
    println!("keyward.db: {:.0} MB", size as f64 / 1e6);
    // A fresh process, so the building phase's memory does not count.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("KEYWARD_BENCH_MEASURE", &path)
        .env("KEYWARD_BENCH_KEYS", n.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
