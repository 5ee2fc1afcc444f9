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
        notify: Vec::new(),
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

mod outbox {
    use super::*;
    use crate::alerts::*;

    fn hook(id: &str, events: &[&str]) -> WebhookRow {
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

    fn notice(id: &str, event_type: &str) -> Notice {
        Notice {
            id: id.into(),
            workspace_id: "ws_1".into(),
            event_type: event_type.into(),
            body: json!({"type": event_type}),
            created_at: 10,
        }
    }

    fn alert(id: &str, status: &str, updated_at: i64) -> AlertRow {
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

    #[test]
    fn notices_fan_out_to_the_endpoints_that_take_them_in_the_same_transaction() {
        let s = SqliteStore::open_in_memory().unwrap();
        seed(&s);
        s.insert_webhook(&hook("wh_all", &[]), &audit("ws_1", "aud_w1", "webhook.create")).unwrap();
        s.insert_webhook(&hook("wh_keys", &["key.revoked"]), &audit("ws_1", "aud_w2", "webhook.create")).unwrap();
        // An alert change: to the endpoint taking everything only.
        let change = AlertChangeRow {
            seq: 0,
            workspace_id: "ws_1".into(),
            alert_id: "alr_1".into(),
            change: "opened".into(),
            at: 10,
            body: json!({"id": "alr_1"}),
        };
        s.write_alerts(
            &[alert("alr_1", "open", 10)],
            std::slice::from_ref(&change),
            &[notice("msg_1", "alert.opened")],
        )
        .unwrap();
        let history = s.alert_changes_after(0, 10).unwrap();
        assert_eq!((history.len(), history[0].seq, history[0].change.as_str()), (1, 1, "opened"));
        assert_eq!(s.last_alert_change().unwrap(), 1);
        assert!(s.alert_changes_after(1, 10).unwrap().is_empty());
        assert_eq!(s.purge_alert_changes(1_000).unwrap(), 0, "the newest change stays");
        let later = AlertChangeRow { at: 2_000, change: "resolved".into(), ..change.clone() };
        s.write_alerts(&[], std::slice::from_ref(&later), &[]).unwrap();
        assert_eq!(s.purge_alert_changes(1_000).unwrap(), 1, "the old one goes");
        assert_eq!(s.alert_changes_after(0, 10).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), [2]);
        // A management change: its audit entry carries the notice.
        let mut revoke = audit("ws_1", "aud_r", "key.revoke");
        revoke.notify = vec![notice("msg_2", "key.revoked")];
        s.put_incident(
            &IncidentRecord {
                id: "inc_1".into(),
                workspace_id: "ws_1".into(),
                body: json!({}),
                created_at: 1,
                updated_at: 1,
            },
            &revoke,
        )
        .unwrap();
        let due = s.due_deliveries(10, 100).unwrap();
        let mut pairs: Vec<(String, String)> =
            due.iter().map(|d| (d.delivery.webhook_id.clone(), d.delivery.event_type.clone())).collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("wh_all".into(), "alert.opened".into()),
                ("wh_all".into(), "key.revoked".into()),
                ("wh_keys".into(), "key.revoked".into())
            ]
        );
        assert!(s.due_deliveries(9, 100).unwrap().is_empty(), "not due before it was made");
        assert_eq!(s.pending_deliveries().unwrap(), 3);

        // Attempts: a failure retried later, then delivered; another goes dead.
        let first = &due[0].delivery;
        let fail = AttemptRow {
            delivery_id: first.id.clone(),
            n: 1,
            at: 11,
            status: Some(503),
            error: Some("busy".into()),
            duration_ms: 3,
        };
        s.record_attempt(&fail, AttemptNext::RetryAt(100)).unwrap();
        assert!(s.due_deliveries(50, 100).unwrap().iter().all(|d| d.delivery.id != first.id));
        assert!(s.due_deliveries(100, 100).unwrap().iter().any(|d| d.delivery.id == first.id));
        s.record_attempt(
            &AttemptRow { n: 2, at: 101, status: Some(200), error: None, ..fail.clone() },
            AttemptNext::Delivered,
        )
        .unwrap();
        let listed = s.list_deliveries("ws_1", &first.webhook_id, None, 10).unwrap();
        let done = listed.iter().find(|d| d.id == first.id).unwrap();
        assert_eq!((done.status.as_str(), done.attempts, done.delivered_at), ("delivered", 2, Some(101)));
        assert_eq!(s.delivery_attempts(&first.id).unwrap().len(), 2);
        // Manual redelivery puts it back; deleting the endpoint ends its pending ones.
        assert!(s.redeliver("ws_1", &first.webhook_id, &first.id, 200).unwrap());
        assert!(!s.redeliver("ws_2", &first.webhook_id, &first.id, 200).unwrap(), "another workspace's delivery");
        assert!(!s.redeliver("ws_1", "wh_other", &first.id, 200).unwrap(), "another endpoint's delivery");
        s.delete_webhook("ws_1", &first.webhook_id, 300, &audit("ws_1", "aud_d", "webhook.delete")).unwrap();
        assert!(s.due_deliveries(1000, 100).unwrap().iter().all(|d| d.delivery.webhook_id != first.webhook_id));
        assert!(s.delete_webhook("ws_1", &first.webhook_id, 300, &audit("ws_1", "aud_d2", "webhook.delete")).is_err());
    }

    #[test]
    fn alerts_list_by_filter_and_live_ones_come_back() {
        let s = SqliteStore::open_in_memory().unwrap();
        seed(&s);
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
        s.put_rule_overrides(
            &RuleOverrideRow { rules: json!({}), ..row },
            &audit("ws_1", "aud_o2", "alert_rules.update"),
        )
        .unwrap();
        assert!(s.rule_overrides().unwrap().is_empty(), "an empty object clears");
    }
}
