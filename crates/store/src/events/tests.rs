use keyward_core::Outcome;
use keyward_core::event::UsageEvent;

use super::*;
use crate::conformance::{self, event};

#[test]
fn append_query_usage_purge_cursor() {
    let dir = tempfile::tempdir().unwrap();
    conformance::append_query_usage_purge_cursor(&SqliteEventLog::open(&dir.path().join("events.db")).unwrap());
}

#[test]
fn time_bounds_use_ids_and_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    conformance::time_bounds_use_ids_and_stay_exact(&SqliteEventLog::open(&dir.path().join("events.db")).unwrap());
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
    conformance::an_address_and_its_pseudonym_are_merged_in_id_order(
        &SqliteEventLog::open(&dir.path().join("events.db")).unwrap(),
    );
}

#[test]
fn an_owners_events_merge_across_many_keys() {
    let dir = tempfile::tempdir().unwrap();
    conformance::an_owners_events_merge_across_many_keys(&SqliteEventLog::open(&dir.path().join("events.db")).unwrap());
}

#[test]
fn rollups_round_trip_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    conformance::rollups_round_trip_and_purge(&SqliteEventLog::open(&dir.path().join("events.db")).unwrap());
}

/// Events in many batches of uneven sizes over a few keys and addresses.
fn batches(log: &SqliteEventLog) -> Vec<UsageEvent> {
    let mut all = Vec::new();
    let mut n = 0i64;
    for size in [1, 7, 30, 2, 64, 5, 13, 40, 3, 9] {
        let mut batch: Vec<UsageEvent> = (0..size)
            .map(|_| {
                n += 1;
                let mut e = event(
                    1000 + n,
                    "ws_a",
                    Some(["key_a", "key_b", "key_c"][(n * n % 7 % 3) as usize]),
                    Outcome::Valid,
                );
                e.source_ip = Some(format!("192.0.2.{}", n % 4));
                if n % 5 == 0 {
                    e.outcome = Outcome::RateLimited;
                }
                e
            })
            .collect();
        log.append(&mut batch).unwrap();
        all.extend(batch);
    }
    all
}

/// Issue 11: the key and address runs page like the indexes they replace:
/// newest or oldest first, from any id, across batches, with other filters.
#[test]
fn runs_page_by_key_and_address_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
    let all = batches(&log);
    type Wanted = Box<dyn Fn(&UsageEvent) -> bool>;
    let cases: Vec<(EventFilter, Wanted)> = vec![
        (
            EventFilter { key_id: Some("key_b".into()), ..Default::default() },
            Box::new(|e| e.key_id.as_deref() == Some("key_b")),
        ),
        (
            EventFilter { ip: Some("192.0.2.3".into()), ..Default::default() },
            Box::new(|e| e.source_ip.as_deref() == Some("192.0.2.3")),
        ),
        (
            EventFilter { key_id: Some("key_a".into()), code: Some(Outcome::RateLimited), ..Default::default() },
            Box::new(|e| e.key_id.as_deref() == Some("key_a") && e.outcome == Outcome::RateLimited),
        ),
        (
            EventFilter { key_id: Some("key_c".into()), since: Some(1040), until: Some(1120), ..Default::default() },
            Box::new(|e| e.key_id.as_deref() == Some("key_c") && (1040..1120).contains(&e.ts)),
        ),
    ];
    for (base, wanted) in cases {
        for ascending in [false, true] {
            let mut expect: Vec<i64> = all.iter().filter(|e| wanted(e)).map(|e| e.id).collect();
            if !ascending {
                expect.reverse();
            }
            for limit in [1, 4, 11, 1000] {
                let mut f = EventFilter { workspace_id: "ws_a".into(), ascending, limit, ..base.clone() };
                let mut got = Vec::new();
                loop {
                    let page = log.query(&f).unwrap();
                    got.extend(page.iter().map(|e| e.id));
                    match page.last() {
                        Some(e) if page.len() == limit as usize => {
                            if ascending {
                                f.after_id = Some(e.id)
                            } else {
                                f.before_id = Some(e.id)
                            }
                        }
                        _ => break,
                    }
                }
                assert_eq!(got, expect, "{base:?} ascending {ascending} limit {limit}");
            }
        }
    }
    // Another workspace's events under the same key id are not this one's.
    let mut other = vec![event(5000, "ws_b", Some("key_b"), Outcome::Valid)];
    log.append(&mut other).unwrap();
    let f = EventFilter { workspace_id: "ws_a".into(), key_id: Some("key_b".into()), limit: 1, ..Default::default() };
    assert_ne!(log.query(&f).unwrap()[0].id, other[0].id);
}

/// A purge takes its events out of the runs: a run left empty goes, one
/// holding an event the purge kept (written out of time order) keeps it,
/// and the review and the pages see exactly the events left.
#[test]
fn purge_keeps_runs_exact() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db")).unwrap();
    let mut all = batches(&log);
    let runs = |log: &SqliteEventLog| -> i64 {
        log.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM event_runs", [], |r| r.get(0))?)).unwrap()
    };
    let before = runs(&log);
    // Event 20 is late in time: the purge of everything before ts 1100 keeps it.
    log.writer.lock().execute("UPDATE events SET ts = 9000 WHERE id = 20", []).unwrap();
    all[19].ts = 9000;
    let mut purged = 0;
    loop {
        let n = log.purge_chunk(1100, 17).unwrap();
        if n == 0 {
            break;
        }
        purged += n;
    }
    assert_eq!(purged, all.iter().filter(|e| e.ts < 1100).count());
    let left: Vec<&UsageEvent> = all.iter().filter(|e| e.ts >= 1100).collect();
    assert!(runs(&log) < before, "emptied runs are deleted");
    for key in ["key_a", "key_b", "key_c"] {
        let f = EventFilter {
            workspace_id: "ws_a".into(),
            key_id: Some(key.into()),
            limit: 1000,
            ascending: true,
            ..Default::default()
        };
        let got: Vec<i64> = log.query(&f).unwrap().iter().map(|e| e.id).collect();
        let expect: Vec<i64> = left.iter().filter(|e| e.key_id.as_deref() == Some(key)).map(|e| e.id).collect();
        assert_eq!(got, expect, "{key}");
        let review = log.review("ws_a", key, 0, 10_000, 10).unwrap();
        assert_eq!(review.total as usize, expect.len(), "{key}");
    }
    // Every run names only live events: the number of ids in all runs is
    // twice the events left (a key and an address each).
    let ids: usize = log
        .read(|c| {
            let mut st = c.prepare("SELECT last_id, ids FROM event_runs")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            let mut n = 0;
            for row in rows {
                let (last, blob) = row?;
                n += runs::decode(last, &blob)?.len();
            }
            Ok(n)
        })
        .unwrap();
    assert_eq!(ids, 2 * left.len());
}

/// A log written before the runs (schema 5, per-event key and address
/// indexes) gets its runs built when opened, and reads as before.
#[test]
fn opening_a_log_from_before_the_runs_builds_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let conn = open_conn(&path, None).unwrap();
        register_functions(&conn).unwrap();
        for sql in &SCHEMA[..RUNS_MIGRATION] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", RUNS_MIGRATION as i64).unwrap();
        conn.execute_batch(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 250000)
             INSERT INTO events (ts, kind, request_id, workspace_id, key_id, ip, method, path, code, key_no, ws_no, ip_no, code_no)
             SELECT 1000 + n, 'verify', 'req_' || n, 'ws_a', 'key_' || (n % 3), '192.0.2.' || (n % 5), 'GET', '/x', 'VALID',
                    NULL, kw_ws('ws_a'), kw_no('ws_a', '192.0.2.' || (n % 5)), kw_no('ws_a', 'VALID') FROM g;",
        )
        .unwrap();
        // `key_no` is a Rust hash (FNV-1a of the key id); no SQL twin exists.
        for k in 0..3 {
            let id = format!("key_{k}");
            conn.execute("UPDATE events SET key_no = ?1 WHERE key_id = ?2", params![key_no(&id), id]).unwrap();
        }
    }
    let log = SqliteEventLog::open(&path).unwrap();
    let f = EventFilter { workspace_id: "ws_a".into(), key_id: Some("key_1".into()), limit: 3, ..Default::default() };
    let ids: Vec<i64> = log.query(&f).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![250_000, 249_997, 249_994]);
    let f = EventFilter {
        workspace_id: "ws_a".into(),
        ip: Some("192.0.2.4".into()),
        limit: 2,
        ascending: true,
        ..Default::default()
    };
    let ids: Vec<i64> = log.query(&f).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![4, 9]);
    assert_eq!(log.review("ws_a", "key_2", 0, i64::MAX / 2, 5).unwrap().total, 83_333);
    let plan = log.plan(&EventFilter { ip: Some("192.0.2.4".into()), ..f }).unwrap().join(" | ");
    assert!(
        plan.contains("SEARCH event_runs USING PRIMARY KEY")
            && plan.contains("SEARCH events USING INTEGER PRIMARY KEY"),
        "{plan}"
    );
}
