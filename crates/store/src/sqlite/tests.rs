use serde_json::json;

use super::*;
use crate::conformance::{self, audit, key, seed};

#[test]
fn keys_round_trip_filter_and_paginate() {
    conformance::keys_round_trip_filter_and_paginate(&SqliteStore::open_in_memory().unwrap());
    conformance::keys_search_by_id_owner_name_and_hint(&SqliteStore::open_in_memory().unwrap());
}

#[test]
fn alerts_list_by_filter_and_live_ones_come_back() {
    conformance::alerts_list_by_filter_and_live_ones_come_back(&SqliteStore::open_in_memory().unwrap());
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
    use crate::conformance::{alert, hook, notice};

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
}

#[test]
fn a_search_finds_matches_beyond_the_first_window_and_pages_a_broad_one_in_id_order() {
    let s = SqliteStore::open_in_memory().unwrap();
    seed(&s);
    let n = 2 * super::SEARCH_WINDOW as usize + 500;
    let keys: Vec<_> = (0..n)
        .map(|i| {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64 + 1000).to_be_bytes());
            // Every key is "alpha…"; only the last 3 are "zeta…".
            let name = if i >= n - 3 { format!("zeta {i}") } else { format!("alpha {i}") };
            KeyRecord { name: Some(name), hash: keyward_core::KeyHash(hash), ..key(&format!("key_{i:06}"), 0, "o") }
        })
        .collect();
    s.insert_keys(&keys, &audit("ws_1", "aud_many", "key.import")).unwrap();
    let find = |q: &str, after: Option<&str>, limit: u32| {
        let f = KeyFilter {
            workspace_id: "ws_1".into(),
            q: Some(q.into()),
            after: after.map(Into::into),
            limit,
            now: 5,
            ..Default::default()
        };
        conformance::ids(s.list_keys(&f).unwrap())
    };
    let expect = |r: std::ops::Range<usize>| r.map(|i| format!("key_{i:06}")).collect::<Vec<_>>();
    // Narrow: past the window, found through the indexes.
    assert_eq!(find("ZETA", None, 51), expect(n - 3..n));
    // Broad: the first page and the next, in id order.
    assert_eq!(find("alpha", None, 51), expect(0..51));
    assert_eq!(find("alpha", Some("key_000050"), 51), expect(51..102));
    // A broad search from a cursor near the end crosses into the narrow path.
    let near_end = format!("key_{:06}", n - 10);
    assert_eq!(find("alpha", Some(&near_end), 51), expect(n - 9..n - 3));
}
