use keyward_core::{KeyHash, Role};
use serde_json::json;

use super::*;

fn audit(ws: &str, id: &str, action: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        workspace_id: ws.into(),
        at: 1,
        actor: "system".into(),
        action: action.into(),
        target_type: "x".into(),
        target_id: "t".into(),
        source_ip: None,
        request_id: None,
        before: None,
        after: Some(json!({"a": 1})),
        seq: 0,
        hash: String::new(),
    }
}

fn seed(s: &SqliteStore) {
    let ws = Workspace { id: "ws_1".into(), name: "one".into(), created_at: 1 };
    let rk = RootKeyRecord {
        id: "rk_1".into(),
        workspace_id: "ws_1".into(),
        name: "admin".into(),
        role: Role::Admin,
        hash: KeyHash([9; 32]),
        hash_kind: "hmac-sha256:v1".into(),
        hint: "kw_root_…abcd".into(),
        created_at: 1,
        revoked_at: None,
    };
    s.create_workspace(&ws, &rk, &audit("ws_1", "aud_1", "workspace.create")).unwrap();
    let ks = Keyspace {
        id: "ks_1".into(),
        workspace_id: "ws_1".into(),
        name: "prod".into(),
        prefix: "kw_live".into(),
        default_ttl_ms: None,
        created_at: 1,
        updated_at: 1,
        default_scopes: vec![],
        default_ip_allowlist: vec!["10.0.0.0/8".into()],
        default_ratelimits: vec![],
        path_rules: vec![],
        pseudonymize_ips: false,
        max_age_ms: None,
    };
    s.insert_keyspace(&ks, &audit("ws_1", "aud_2", "keyspace.create")).unwrap();
}

fn key(id: &str, b: u8, owner: &str) -> KeyRecord {
    KeyRecord {
        owner_id: Some(owner.into()),
        scopes: vec!["read".into()],
        ratelimits: Some(vec![keyward_core::policy::RateLimit { name: "s".into(), limit: 5, window_ms: 1000 }]),
        remaining: Some(10),
        refilled_at: Some(1),
        ..KeyRecord::blank(
            id.into(),
            "ws_1".into(),
            "ks_1".into(),
            KeyHash([b; 32]),
            "hmac-sha256:v1".into(),
            "kw_live_…abcd".into(),
            1,
        )
    }
}

fn ids(v: Vec<KeyRecord>) -> Vec<String> {
    v.into_iter().map(|k| k.id).collect()
}

#[test]
fn keys_round_trip_filter_and_paginate() {
    let s = SqliteStore::open_in_memory().unwrap();
    seed(&s);
    for (i, owner) in ["a", "b", "a", "a"].iter().enumerate() {
        s.insert_key(&key(&format!("key_{i}"), i as u8, owner), &audit("ws_1", &format!("aud_k{i}"), "key.create"))
            .unwrap();
    }
    assert_eq!(s.find_key_by_hash(&KeyHash([2; 32])).unwrap().unwrap().id, "key_2");
    let dup = s.insert_key(&key("key_9", 1, "a"), &audit("ws_1", "aud_dup", "key.create"));
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // The failed insert wrote no audit record either.
    assert!(
        s.list_audit(&AuditFilter { workspace_id: "ws_1".into(), limit: 100, ..Default::default() })
            .unwrap()
            .iter()
            .all(|e| e.id != "aud_dup")
    );

    let mut f =
        KeyFilter { workspace_id: "ws_1".into(), owner_id: Some("a".into()), limit: 2, now: 5, ..Default::default() };
    assert_eq!(ids(s.list_keys(&f).unwrap()), ["key_0", "key_2"]);
    f.after = Some("key_2".into());
    assert_eq!(ids(s.list_keys(&f).unwrap()), ["key_3"]);

    let mut k = key("key_3", 3, "a");
    k.revoked_at = Some(2);
    s.update_key(&k, &audit("ws_1", "aud_r", "key.revoke")).unwrap();
    let mut e = key("key_1", 1, "b");
    e.expires_at = Some(5);
    s.update_key(&e, &audit("ws_1", "aud_e", "key.update")).unwrap();
    let by = |st| {
        ids(s
            .list_keys(&KeyFilter {
                workspace_id: "ws_1".into(),
                status: Some(st),
                limit: 10,
                now: 5,
                ..Default::default()
            })
            .unwrap())
    };
    assert_eq!(by(KeyStatus::Revoked), ["key_3"]);
    assert_eq!(by(KeyStatus::Expired), ["key_1"]);
    assert_eq!(by(KeyStatus::Active), ["key_0", "key_2"]);
    // Another workspace sees nothing.
    assert!(s.get_key("ws_2", "key_0").unwrap().is_none());
}

#[test]
fn audit_chain_detects_tampering() {
    let s = SqliteStore::open_in_memory().unwrap();
    seed(&s);
    assert_eq!(s.verify_audit("ws_1").unwrap(), AuditCheck { entries: 2, first_bad_seq: None });
    s.with(|c| Ok(c.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1", [])?)).unwrap();
    assert_eq!(s.verify_audit("ws_1").unwrap().first_bad_seq, Some(1));
}

#[test]
fn reopen_keeps_data_and_refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        seed(&s);
        s.insert_key(&key("key_1", 1, "a"), &audit("ws_1", "aud_k", "key.create")).unwrap();
        s.record_last_used(&[LastUse { key_id: "key_1".into(), at: 50, ip: Some("10.0.0.1".into()) }]).unwrap();
        // An older mark never overwrites a newer one.
        s.record_last_used(&[LastUse { key_id: "key_1".into(), at: 40, ip: None }]).unwrap();
        s.record_quotas(&[QuotaMark { key_id: "key_1".into(), remaining: 3, refilled_at: 7 }]).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let k = s.get_key("ws_1", "key_1").unwrap().unwrap();
    assert_eq!((k.last_used_at, k.last_used_ip.as_deref()), (Some(50), Some("10.0.0.1")));
    assert_eq!((k.remaining, k.refilled_at), (Some(3), Some(7)));
    assert_eq!(k.scopes, vec!["read".to_string()]);
    assert_eq!(k.ratelimits.unwrap()[0].limit, 5);
    let ks = s.get_keyspace("ws_1", "ks_1").unwrap().unwrap();
    assert_eq!(ks.default_ip_allowlist, vec!["10.0.0.0/8".to_string()]);
    s.with(|c| Ok(c.pragma_update(None, "user_version", 99)?)).unwrap();
    drop(s);
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::TooNew { found: 99, .. })));
}

#[test]
fn migration_one_databases_upgrade_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A database made by the first release: schema 1 only.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute("INSERT INTO workspaces VALUES ('ws_1', 'w', 1)", []).unwrap();
        conn.execute("INSERT INTO keyspaces VALUES ('ks_1', 'ws_1', 'p', 'kw_live', NULL, 1, 1)", []).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let ks = s.get_keyspace("ws_1", "ks_1").unwrap().unwrap();
    assert_eq!(
        ks.default_ratelimits,
        vec![keyward_core::policy::RateLimit { name: "default".into(), limit: 1000, window_ms: 60_000 }]
    );
    assert!(ks.path_rules.is_empty());
}
