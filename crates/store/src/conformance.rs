//! Store behaviour every backend must show, as functions over `&dyn Store`
//! that each backend's tests call (SQLite in memory, a real PostgreSQL).

use keyward_core::{KeyHash, Role};
use serde_json::json;

use crate::alerts::*;
use crate::*;

pub fn audit(ws: &str, id: &str, action: &str) -> AuditEntry {
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
        notify: Vec::new(),
    }
}

pub fn seed(s: &dyn Store) {
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
        expires_at: None,
        last_used_at: None,
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
        auto_disable_on_critical: false,
        recoverable: false,
    };
    s.insert_keyspace(&ks, &audit("ws_1", "aud_2", "keyspace.create")).unwrap();
}

pub fn key(id: &str, b: u8, owner: &str) -> KeyRecord {
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

pub fn ids(v: Vec<KeyRecord>) -> Vec<String> {
    v.into_iter().map(|k| k.id).collect()
}

pub fn hook(id: &str, events: &[&str]) -> WebhookRow {
    WebhookRow {
        id: id.into(),
        workspace_id: "ws_1".into(),
        url: format!("http://127.0.0.1:9/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        description: None,
        secret: "whsec_x".into(),
        format: "webhook".into(),
        created_at: 1,
        deleted_at: None,
    }
}

pub fn notice(id: &str, event_type: &str) -> Notice {
    Notice {
        id: id.into(),
        workspace_id: "ws_1".into(),
        event_type: event_type.into(),
        body: json!({"type": event_type}),
        created_at: 10,
    }
}

pub fn alert(id: &str, status: &str, updated_at: i64) -> AlertRow {
    AlertRow {
        id: id.into(),
        workspace_id: "ws_1".into(),
        rule: "leak".into(),
        severity: "critical".into(),
        status: status.into(),
        subject: "key:key_1".into(),
        key_id: Some("key_1".into()),
        first_seen: 5,
        last_seen: 6,
        updated_at,
        body: json!({"id": id}),
    }
}

pub fn keys_round_trip_filter_and_paginate(s: &dyn Store) {
    seed(s);
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

pub fn alerts_list_by_filter_and_live_ones_come_back(s: &dyn Store) {
    seed(s);
    s.write_alerts(
        &[alert("alr_1", "open", 10), alert("alr_2", "resolved", 20), alert("alr_3", "resolved", 5)],
        &[],
        &[],
    )
    .unwrap();
    let open = s
        .list_alerts(&AlertFilter {
            workspace_id: "ws_1".into(),
            status: Some("open".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(open.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["alr_1"]);
    let all = s.list_alerts(&AlertFilter { workspace_id: "ws_1".into(), limit: 2, ..Default::default() }).unwrap();
    assert_eq!(all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["alr_3", "alr_2"], "newest id first");
    let next = s
        .list_alerts(&AlertFilter {
            workspace_id: "ws_1".into(),
            before_id: Some("alr_2".into()),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next.len(), 1);
    let mut live: Vec<String> = s.live_alerts(10).unwrap().into_iter().map(|a| a.id).collect();
    live.sort();
    assert_eq!(live, ["alr_1", "alr_2"]);
    // An update keeps the row, changes the status.
    s.write_alerts(&[alert("alr_1", "acknowledged", 30)], &[], &[]).unwrap();
    assert_eq!(s.get_alert("ws_1", "alr_1").unwrap().unwrap().status, "acknowledged");
    assert!(s.get_alert("ws_2", "alr_1").unwrap().is_none());
    // Learned state and rule overrides round-trip.
    s.save_learned(&[("key_1".into(), "ws_1".into(), json!({"first_use": 1}))], 40).unwrap();
    assert_eq!(s.load_learned("key_1").unwrap(), Some(json!({"first_use": 1})));
    let row = RuleOverrideRow {
        workspace_id: "ws_1".into(),
        level: "keyspace".into(),
        target_id: "ks_1".into(),
        keyspace_id: None,
        rules: json!({"leak": {"enabled": false}}),
        updated_at: 1,
    };
    s.put_rule_overrides(&row, &audit("ws_1", "aud_o", "alert_rules.update")).unwrap();
    assert_eq!(s.rule_overrides().unwrap(), std::slice::from_ref(&row));
    s.put_rule_overrides(&RuleOverrideRow { rules: json!({}), ..row }, &audit("ws_1", "aud_o2", "alert_rules.update"))
        .unwrap();
    assert!(s.rule_overrides().unwrap().is_empty(), "an empty object clears");
}
