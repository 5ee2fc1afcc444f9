//! The dashboard's key list and search over a million keys (issue 14): each
//! page must cost what it returns, whatever the table holds. Builds a store
//! of `KEYWARD_BENCH_KEYS` keys (default 1,000,000) in one workspace, then
//! times the first page, a later page, and searches by owner, name prefix
//! (common and rare), hint tail and id: on the embedded SQLite store, then on
//! a throwaway PostgreSQL (skipped with `KEYWARD_SKIP_POSTGRES=1`).
//!
//! ```sh
//! cargo bench -p keyward-store --bench keys_search
//! ```

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::{KeyHash, Role};
use keyward_store::sqlite::SqliteStore;
use keyward_store::{AuditEntry, KeyFilter, KeyRecord, KeyStatus, Keyspace, RootKeyRecord, Store, Workspace};

const WS: &str = "ws_01M83H4SEVpXQ9L6qmuW";
const KS: &str = "ks_01M83H4TGB1ePlS7A26V";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SERVICES: [&str; 8] = ["billing", "checkout", "search", "reports", "mobile", "partner", "webhooks", "batch"];

fn audit(id: &str, action: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        workspace_id: WS.into(),
        at: 1,
        actor: "system".into(),
        action: action.into(),
        target_type: "key".into(),
        target_id: "many".into(),
        source_ip: None,
        request_id: None,
        before: None,
        after: None,
        seq: 0,
        hash: String::new(),
        notify: Vec::new(),
    }
}

/// A 4-character tail from `n`, as a hint ends.
fn tail(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    (0..4)
        .map(|_| {
            let c = BASE62[(x % 62) as usize] as char;
            x /= 62;
            c
        })
        .collect()
}

fn key(n: u64) -> KeyRecord {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    KeyRecord {
        name: Some(format!("{}-{}-{n}", SERVICES[(n % 8) as usize], n % 1000)),
        owner_id: Some(format!("customer-{}", n % 100_000)),
        ..KeyRecord::blank(
            format!("key_01M83H4T{n:012}"),
            WS.into(),
            KS.into(),
            KeyHash(hash),
            "hmac-sha256:v1".into(),
            format!("sk_live_…{}", tail(n)),
            1,
        )
    }
}

/// The workspace and keyspace the keys live in.
fn setup(s: &dyn Store) {
    let rk = RootKeyRecord {
        id: "rk_01M83H4SEVpXQ9L6qmuW".into(),
        workspace_id: WS.into(),
        name: "admin".into(),
        role: Role::Admin,
        hash: KeyHash([0xff; 32]),
        hash_kind: "hmac-sha256:v1".into(),
        hint: "kw_root_…abcd".into(),
        created_at: 1,
        revoked_at: None,
        expires_at: None,
        last_used_at: None,
    };
    s.create_workspace(
        &Workspace { id: WS.into(), name: "bench".into(), created_at: 1 },
        &rk,
        &audit("aud_0", "workspace.create"),
    )
    .unwrap();
    let ks = Keyspace {
        id: KS.into(),
        workspace_id: WS.into(),
        name: "prod".into(),
        prefix: "sk_live".into(),
        default_ttl_ms: None,
        created_at: 1,
        updated_at: 1,
        default_scopes: vec![],
        default_ip_allowlist: vec![],
        default_ratelimits: vec![],
        path_rules: vec![],
        pseudonymize_ips: false,
        max_age_ms: None,
        auto_disable_on_critical: false,
        recoverable: false,
    };
    s.insert_keyspace(&ks, &audit("aud_1", "keyspace.create")).unwrap();
}

/// `n` keys through the store's own import path.
fn fill(s: &dyn Store, n: u64) {
    setup(s);
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<KeyRecord> = (i..(i + 10_000).min(n)).map(key).collect();
        s.insert_keys(&batch, &audit(&format!("aud_i{i}"), "key.import")).unwrap();
        i += batch.len() as u64;
        if i % 200_000 == 0 {
            eprintln!("  {i} of {n} keys ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    eprintln!("built {n} keys in {:.1} s", started.elapsed().as_secs_f64());
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("KEYWARD_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("keyward.db")).unwrap();
    fill(&sqlite, n);
    cases(c, &sqlite, "sqlite", n);
    drop(sqlite);
    if let Some(pg) = keyward_testkit::Postgres::start_durable() {
        pg.psql("postgres", "CREATE DATABASE bench");
        let store = keyward_store::postgres::PgStore::open(&pg.url("bench"), 2).unwrap();
        // The same keys, made in one statement: row by row over the wire
        // would take 20 minutes; the names, owners and ids are the same.
        setup(&store);
        let started = Instant::now();
        pg.psql(
            "bench",
            &format!(
                "INSERT INTO keys (id, workspace_id, keyspace_id, name, owner_id, meta, hash, hash_kind, hint, enabled,
                                   created_at, updated_at)
                 SELECT 'key_01M83H4T' || lpad(n::text, 12, '0'), '{WS}', '{KS}',
                        (ARRAY['{}'])[n % 8 + 1] || '-' || (n % 1000) || '-' || n, 'customer-' || (n % 100000), '{{}}',
                        decode(lpad(to_hex(n), 64, '0'), 'hex'), 'hmac-sha256:v1', 'sk_live_…' || substr(md5(n::text), 1, 4),
                        TRUE, 1, 1
                 FROM generate_series(0, {}) AS n; ANALYZE",
                SERVICES.join("','"),
                n - 1
            ),
        );
        eprintln!("built {n} keys in PostgreSQL in {:.1} s", started.elapsed().as_secs_f64());
        cases(c, &store, "postgres", n);
    }
}

fn cases(c: &mut Criterion, s: &dyn Store, engine: &str, n: u64) {
    let page = |q: Option<&str>, after: Option<&str>, status: Option<KeyStatus>| KeyFilter {
        workspace_id: WS.into(),
        q: q.map(str::to_owned),
        after: after.map(str::to_owned),
        status,
        now: 2,
        limit: 51,
        ..Default::default()
    };
    let mid = format!("key_01M83H4T{:012}", n / 2);
    let probe = n / 3;
    let probe_hint = s.get_key(WS, &format!("key_01M83H4T{probe:012}")).unwrap().expect("the probe key").hint;
    let probe_tail: String = probe_hint.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let cases: Vec<(String, KeyFilter, usize)> = vec![
        ("first page".into(), page(None, None, None), 51),
        ("page from the middle".into(), page(None, Some(&mid), None), 51),
        ("active, first page".into(), page(None, None, Some(KeyStatus::Active)), 51),
        ("owner (10 keys)".into(), page(Some("customer-4242"), None, None), (n / 100_000).min(51) as usize),
        ("name prefix, common (1/8 of all)".into(), page(Some("billing"), None, None), 51),
        (
            "name prefix, rare".into(),
            page(Some(&format!("{}-{}-{probe}", SERVICES[(probe % 8) as usize], probe % 1000)), None, None),
            1,
        ),
        ("hint tail".into(), page(Some(&probe_tail), None, None), 1),
        ("id".into(), page(Some(&format!("key_01M83H4T{probe:012}")), None, None), 1),
    ];
    let mut g = c.benchmark_group(format!("keys_search/{engine}/{n}"));
    g.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for (name, f, at_least) in &cases {
        let got = s.list_keys(f).unwrap().len();
        assert!(got >= *at_least, "{name}: {got} rows");
        g.bench_function(name.as_str(), |b| b.iter(|| s.list_keys(f).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
