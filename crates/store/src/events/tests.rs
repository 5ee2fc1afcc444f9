use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};

use super::*;

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

#[test]
fn append_query_usage_purge_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
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

#[test]
fn time_bounds_use_ids_and_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
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

/// Issue 8, defect 8: every filter seeks into an index (no `SCAN events`,
/// no temporary sort), so a page costs what it returns.
#[test]
fn issue_8_every_event_query_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
    let mut batch: Vec<UsageEvent> = (0..50).map(|i| event(1000 + i, "ws_a", Some("key_a"), Outcome::Valid)).collect();
    log.append(&mut batch).unwrap();
    let base = EventFilter { workspace_id: "ws_a".into(), limit: 10, ..EventFilter::default() };
    let cases = [
        base.clone(),
        EventFilter { key_id: Some("key_a".into()), ..base.clone() },
        EventFilter { key_id: Some("key_a".into()), before_id: Some(20), ..base.clone() },
        EventFilter { key_id: Some("key_a".into()), until: Some(1010), ..base.clone() },
        EventFilter { key_id: Some("key_a".into()), code: Some(Outcome::NotFound), ..base.clone() },
        EventFilter { owner_id: Some("o".into()), key_id: Some("key_a".into()), ..base.clone() },
        EventFilter { ip: Some("192.0.2.1".into()), ..base.clone() },
        EventFilter { code: Some(Outcome::NotFound), ..base.clone() },
        EventFilter { status_class: Some(5), ..base.clone() },
        EventFilter { status_class: Some(2), ..base.clone() },
        EventFilter { code: Some(Outcome::Valid), ..base.clone() },
        EventFilter { since: Some(1010), ascending: true, after_id: Some(3), ..base.clone() },
    ];
    for f in cases {
        let plan = log.plan(&f).unwrap().join(" | ");
        assert!(plan.contains("SEARCH events USING"), "{f:?}: {plan}");
        assert!(!plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{f:?}: {plan}");
    }
}

#[test]
fn an_address_and_its_pseudonym_are_merged_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
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
#[test]
fn an_owners_events_merge_across_many_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
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
