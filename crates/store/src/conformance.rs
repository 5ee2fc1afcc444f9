//! Store behaviour every backend must show, as functions over `&dyn Store`
//! that each backend's tests call (SQLite in memory, a real PostgreSQL).

use keyward_core::{KeyHash, Role};
use serde_json::json;

use crate::alerts::*;
use crate::events::{EventFilter, EventLog};
use crate::*;
use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};

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

pub fn keys_search_by_id_owner_name_and_hint(s: &dyn Store) {
    seed(s);
    let named = |id: &str, b: u8, owner: &str, name: &str, hint: &str| KeyRecord {
        name: Some(name.into()),
        hint: hint.into(),
        ..key(id, b, owner)
    };
    for (i, k) in [
        named("key_0", 0, "acme", "Billing prod", "kw_live_…x7Qe"),
        named("key_1", 1, "globex", "billing staging", "kw_live_…a1b2"),
        named("key_2", 2, "initech", "Search", "kw_test_…ZZ9z"),
        named("key_3", 3, "bill", "worker 100%", "kw_live_…bill"),
    ]
    .iter()
    .enumerate()
    {
        s.insert_key(k, &audit("ws_1", &format!("aud_s{i}"), "key.create")).unwrap();
    }
    let find = |q: &str| {
        ids(s
            .list_keys(&KeyFilter {
                workspace_id: "ws_1".into(),
                q: Some(q.into()),
                limit: 10,
                now: 5,
                ..Default::default()
            })
            .unwrap())
    };
    // Name prefix in any case, owner exactly, hint by its tail or whole.
    assert_eq!(find("BILL"), ["key_0", "key_1"]);
    assert_eq!(find("bill"), ["key_0", "key_1", "key_3"]);
    assert_eq!(find("globex"), ["key_1"]);
    assert_eq!(find("x7Qe"), ["key_0"]);
    assert_eq!(find("kw_test_…ZZ9z"), ["key_2"]);
    assert_eq!(find("key_2"), ["key_2"]);
    // Hints compare exactly; a name's middle or a LIKE pattern matches nothing.
    assert!(find("x7qe").is_empty());
    assert!(find("prod").is_empty());
    assert!(find("%").is_empty());
    assert!(find("_").is_empty());
    assert_eq!(find("worker 100%"), ["key_3"]);
    // Filters and the cursor still apply.
    let f = KeyFilter {
        workspace_id: "ws_1".into(),
        q: Some("bill".into()),
        after: Some("key_0".into()),
        limit: 1,
        now: 5,
        ..Default::default()
    };
    assert_eq!(ids(s.list_keys(&f).unwrap()), ["key_1"]);
    let f = KeyFilter { owner_id: Some("acme".into()), ..f };
    assert!(s.list_keys(&f).unwrap().is_empty());
    // Another workspace finds nothing.
    assert!(
        s.list_keys(&KeyFilter {
            workspace_id: "ws_2".into(),
            q: Some("bill".into()),
            limit: 10,
            now: 5,
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );
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

pub fn event(ts: i64, ws: &str, key: Option<&str>, code: Outcome) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts,
        kind: EventKind::Verify,
        request_id: format!("req_{ts}"),
        workspace_id: ws.into(),
        keyspace_id: None,
        key_id: key.map(Into::into),
        key_hint: None,
        owner_id: Some("o".into()),
        fingerprint: None,
        source_ip: Some("192.0.2.1".into()),
        user_agent: None,
        method: Some("GET".into()),
        path: Some("/x".into()),
        outcome: code,
        http_status: None,
        error: None,
        bytes_in: None,
        bytes_out: None,
        latency_us: None,
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

pub fn append_query_usage_purge_cursor(log: &dyn EventLog) {
    let mut batch: Vec<UsageEvent> = (0..10)
        .map(|i| {
            event(
                1000 + i,
                if i < 8 { "ws_a" } else { "ws_b" },
                Some(if i % 2 == 0 { "key_e" } else { "key_o" }),
                if i == 3 { Outcome::RateLimited } else { Outcome::Valid },
            )
        })
        .collect();
    log.append(&mut batch).unwrap();
    assert_eq!(batch.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());

    let f = |g: fn(&mut EventFilter)| {
        let mut f = EventFilter { workspace_id: "ws_a".into(), limit: 100, ..Default::default() };
        g(&mut f);
        log.query(&f).unwrap().iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(f(|_| {}), vec![8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(f(|f| f.key_id = Some("key_e".into())), vec![7, 5, 3, 1]);
    assert_eq!(f(|f| f.code = Some(Outcome::RateLimited)), vec![4]);
    assert_eq!(
        f(|f| {
            f.since = Some(1002);
            f.until = Some(1004);
            f.ascending = true
        }),
        vec![3, 4]
    );
    assert_eq!(
        f(|f| {
            f.after_id = Some(6);
            f.ascending = true
        }),
        vec![7, 8]
    );

    log.apply_usage(&[(
        2,
        UsageReport {
            request_id: "req_1001".into(),
            workspace_id: "ws_a".into(),
            http_status: Some(503),
            bytes_in: Some(10),
            bytes_out: None,
            latency_us: Some(7),
        },
    )])
    .unwrap();
    assert_eq!(f(|f| f.status_class = Some(5)), vec![2]);
    let e = &log.after(1, 1).unwrap()[0];
    assert_eq!((e.http_status, e.bytes_in, e.latency_us, e.bytes_out), (Some(503), Some(10), Some(7), None));

    assert_eq!(log.cursor("s").unwrap(), None);
    log.set_cursor("s", 4, 1).unwrap();
    assert_eq!(log.cursor("s").unwrap(), Some(4));
    assert_eq!(log.after(4, 100).unwrap().len(), 6);

    assert_eq!(log.purge_chunk(1005, 2).unwrap(), 2);
    assert_eq!(log.purge_chunk(1005, 100).unwrap(), 3);
    assert_eq!(log.purge_chunk(1005, 100).unwrap(), 0);
    assert_eq!(log.count().unwrap(), 5);
    assert_eq!(log.max_id().unwrap(), 10);
}

pub fn time_bounds_use_ids_and_stay_exact(log: &dyn EventLog) {
    // Ten minutes of events, one every 10 s, with one written out of order.
    let mut batch: Vec<UsageEvent> =
        (0..60).map(|i| event(1_000_000 + i * 10_000, "ws", Some("k"), Outcome::Valid)).collect();
    batch.swap(30, 31);
    log.append(&mut batch).unwrap();
    let q = |since: Option<i64>, until: Option<i64>| {
        let f =
            EventFilter { workspace_id: "ws".into(), since, until, limit: 1000, ascending: true, ..Default::default() };
        log.query(&f).unwrap().iter().map(|e| e.ts).collect::<Vec<_>>()
    };
    let all: Vec<i64> = batch.iter().map(|e| e.ts).collect();
    let expect = |lo: i64, hi: i64| all.iter().copied().filter(|t| *t >= lo && *t < hi).collect::<Vec<_>>();
    assert_eq!(q(Some(1_300_000), Some(1_320_000)), expect(1_300_000, 1_320_000));
    assert_eq!(q(Some(1_305_000), None), expect(1_305_000, i64::MAX));
    assert_eq!(q(None, Some(1_000_001)), vec![1_000_000]);
    assert_eq!(q(Some(9_000_000), None), Vec::<i64>::new());
    assert_eq!(q(Some(0), Some(1)), Vec::<i64>::new());
    assert_eq!(q(None, None).len(), 60);
}

pub fn an_address_and_its_pseudonym_are_merged_in_id_order(log: &dyn EventLog) {
    let mut batch: Vec<UsageEvent> = (0..6)
        .map(|i| {
            let mut e = event(1000 + i, "ws_a", Some("key_a"), Outcome::Valid);
            e.source_ip = Some(if i % 2 == 0 { "192.0.2.1".into() } else { "anon:abc".into() });
            e
        })
        .collect();
    log.append(&mut batch).unwrap();
    let f = EventFilter {
        workspace_id: "ws_a".into(),
        ip: Some("192.0.2.1".into()),
        ip_alt: Some("anon:abc".into()),
        limit: 4,
        ..EventFilter::default()
    };
    let ids: Vec<i64> = log.query(&f).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![6, 5, 4, 3]);
    let ids: Vec<i64> = log.query(&EventFilter { ascending: true, ..f }).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

/// An owner's events come from each of its keys' index, merged: the newest
/// across all keys, page after page, with nothing skipped or repeated.
pub fn an_owners_events_merge_across_many_keys(log: &dyn EventLog) {
    let keys: Vec<String> = (0..50).map(|k| format!("key_{k}")).collect();
    let mut batch: Vec<UsageEvent> =
        (0..400).map(|i| event(1000 + i, "ws_a", Some(keys[(i as usize * 7) % 50].as_str()), Outcome::Valid)).collect();
    log.append(&mut batch).unwrap();
    let mut f = EventFilter {
        workspace_id: "ws_a".into(),
        owner_id: Some("o".into()),
        owner_keys: keys[..40].to_vec(),
        limit: 30,
        ..EventFilter::default()
    };
    let wanted: Vec<i64> =
        batch.iter().rev().filter(|e| keys[..40].iter().any(|k| Some(k) == e.key_id.as_ref())).map(|e| e.id).collect();
    let mut got = Vec::new();
    loop {
        let page = log.query(&f).unwrap();
        got.extend(page.iter().map(|e| e.id));
        match page.last() {
            Some(e) if page.len() == 30 => f.before_id = Some(e.id),
            _ => break,
        }
    }
    assert_eq!(got, wanted);
}

pub fn rollups_round_trip_and_purge(log: &dyn EventLog) {
    use crate::events::RollupKey;
    use keyward_core::rollup::{Agg, Granularity, Scope};
    let k = |bucket: i64| RollupKey {
        workspace_id: "ws".into(),
        scope: Scope::Key,
        target: "key_1".into(),
        gran: Granularity::Minute,
        bucket,
    };
    assert_eq!(log.rollup_watermark(Granularity::Minute).unwrap(), 0);
    assert_eq!(log.get_rollups(&[k(60_000)]).unwrap(), vec![None]);
    let mut a = Agg::default();
    a.add_event(&event(60_500, "ws", Some("key_1"), Outcome::Valid));
    let mut b = a.clone();
    b.add_event(&event(120_500, "ws", Some("key_1"), Outcome::RateLimited));
    log.put_rollups(
        &[(k(60_000), a.clone()), (k(120_000), b.clone())],
        &[(Granularity::Minute, 7), (Granularity::Hour, 3)],
    )
    .unwrap();
    assert_eq!(log.get_rollups(&[k(120_000), k(60_000)]).unwrap(), vec![Some(b.clone()), Some(a.clone())]);
    // A bucket is replaced whole; the watermark only goes forward.
    log.put_rollups(&[(k(60_000), b.clone())], &[(Granularity::Minute, 5)]).unwrap();
    assert_eq!(log.rollup_watermark(Granularity::Minute).unwrap(), 7);
    assert_eq!(log.rollup_watermark(Granularity::Hour).unwrap(), 3);
    assert_eq!(log.rollup_watermark(Granularity::Day).unwrap(), 0);
    let s = log.rollup_series("ws", Scope::Key, "key_1", Granularity::Minute, 0, 180_000).unwrap();
    assert_eq!(s, vec![(60_000, b.clone()), (120_000, b.clone())]);
    assert!(log.rollup_series("ws", Scope::Key, "key_1", Granularity::Hour, 0, 180_000).unwrap().is_empty());
    assert!(log.rollup_series("other", Scope::Key, "key_1", Granularity::Minute, 0, 180_000).unwrap().is_empty());
    // Top lists sum the buckets in range per target, largest first.
    let key2 = RollupKey { target: "key_2".into(), ..k(60_000) };
    let mut c = Agg::default();
    for i in 0..3 {
        let mut e = event(60_100 + i, "ws", Some("key_2"), Outcome::Valid);
        e.bytes_out = Some(1_000);
        c.add_event(&e);
    }
    log.put_rollups(&[(key2, c)], &[]).unwrap();
    use crate::events::{TopBy, TopRow};
    let top =
        |by, since, limit| log.rollup_top("ws", Scope::Key, Granularity::Minute, since, 180_000, by, limit).unwrap();
    let row = |t: &str, requests, denied, bytes| TopRow { target: t.into(), requests, denied, bytes };
    // key_1: b (2 requests, 1 denied) in each of two minutes.
    assert_eq!(top(TopBy::Requests, 0, 10), vec![row("key_1", 4, 2, 0), row("key_2", 3, 0, 3_000)]);
    assert_eq!(top(TopBy::Requests, 0, 1), vec![row("key_1", 4, 2, 0)]);
    assert_eq!(top(TopBy::Denials, 0, 10), vec![row("key_1", 4, 2, 0)], "zero denials are left out");
    assert_eq!(top(TopBy::Bytes, 0, 10), vec![row("key_2", 3, 0, 3_000)]);
    assert_eq!(top(TopBy::Requests, 120_000, 10), vec![row("key_1", 2, 1, 0)]);
    assert!(
        log.rollup_top("other", Scope::Key, Granularity::Minute, 0, 180_000, TopBy::Requests, 10).unwrap().is_empty()
    );
    assert_eq!(log.purge_rollups(Granularity::Minute, 100_000).unwrap(), 2);
    assert_eq!(log.rollup_series("ws", Scope::Key, "key_1", Granularity::Minute, 0, 180_000).unwrap().len(), 1);
}
