use super::*;

const MIGRATIONS: &[&str] = &[
    // Fails if run twice: the test's proof that each runs once.
    "CREATE TABLE m1 (v INTEGER); CREATE TABLE applied (n INTEGER NOT NULL, at TIMESTAMPTZ DEFAULT now()); INSERT INTO applied (n) VALUES (1);",
    "CREATE TABLE m2 (v INTEGER); INSERT INTO applied (n) VALUES (2);",
    "ALTER TABLE m1 ADD COLUMN w TEXT; INSERT INTO applied (n) VALUES (3);",
];

#[test]
fn three_nodes_starting_at_once_apply_each_migration_exactly_once() {
    let Some(pg) = keyward_testkit::Postgres::start() else { return };
    for round in 0..3 {
        let db = format!("race{round}");
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        let url = pg.url(&db);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut client = connect(&url).unwrap();
                    barrier.wait();
                    migrate(&mut client, MIGRATIONS).unwrap()
                })
            })
            .collect();
        let applied: usize = nodes.into_iter().map(|n| n.join().unwrap()).sum();
        assert_eq!(applied, 3, "round {round}: three migrations applied in all");
        assert_eq!(pg.psql(&db, "SELECT string_agg(n::text, ',' ORDER BY n) FROM applied"), "1,2,3");
        assert_eq!(pg.psql(&db, "SELECT version FROM keyward_schema"), "3");
        assert_eq!(pg.psql(&db, "SELECT count(*) FROM keyward_schema"), "1");
    }
}

#[test]
fn a_database_from_a_newer_binary_is_refused_and_an_older_one_is_brought_up() {
    let Some(pg) = keyward_testkit::Postgres::start() else { return };
    let mut client = connect(&pg.url("postgres")).unwrap();
    assert_eq!(migrate(&mut client, &MIGRATIONS[..1]).unwrap(), 1);
    assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), 2, "the two newer ones");
    assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), 0, "nothing left");
    match migrate(&mut client, &MIGRATIONS[..2]) {
        Err(StoreError::TooNew { found: 3, supported: 2 }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
    let err = connect(&format!("postgres://keyward@127.0.0.1:{}/postgres", closed_port())).err().unwrap();
    assert!(err.to_string().contains("connecting"), "{err}");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

mod store {
    use super::super::PgStore;
    use crate::alerts::{AlertStore, AttemptNext, AttemptRow, WebhookRow};
    use crate::conformance::{self, audit, key, notice, seed};
    use crate::{AuditCheck, Store};

    fn fresh(pg: &keyward_testkit::Postgres, db: &str) -> PgStore {
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        PgStore::open(&pg.url(db), 8).unwrap()
    }

    #[test]
    fn the_store_behaves_as_the_embedded_one() {
        let Some(pg) = keyward_testkit::Postgres::start() else { return };
        conformance::keys_round_trip_filter_and_paginate(&fresh(&pg, "keys"));
        conformance::keys_search_by_id_owner_name_and_hint(&fresh(&pg, "search"));
        conformance::alerts_list_by_filter_and_live_ones_come_back(&fresh(&pg, "alerts"));
        // Opening again finds the schema in place and keeps the data.
        let s = PgStore::open(&pg.url("keys"), 2).unwrap();
        assert!(s.get_key("ws_1", "key_0").unwrap().is_some());
        // Tampering with an entry breaks the chain at that entry.
        assert_eq!(s.verify_audit("ws_1").unwrap().first_bad_seq, None);
        pg.psql("keys", "UPDATE audit SET actor = 'mallory' WHERE seq = 2");
        assert_eq!(s.verify_audit("ws_1").unwrap().first_bad_seq, Some(2));
    }

    #[test]
    fn the_audit_chain_stays_linear_with_three_concurrent_writers() {
        let Some(pg) = keyward_testkit::Postgres::start() else { return };
        let first = fresh(&pg, "chain");
        seed(&first);
        let nodes: Vec<_> = (0..3)
            .map(|n| {
                let url = pg.url("chain");
                std::thread::spawn(move || {
                    // Each writer its own store (pool), as three nodes would be.
                    let s = PgStore::open(&url, 4).unwrap();
                    for i in 0..40u8 {
                        let id = format!("key_{n}_{i}");
                        s.insert_key(&key(&id, n * 50 + i, "o"), &audit("ws_1", &format!("aud_{n}_{i}"), "key.create"))
                            .unwrap();
                    }
                })
            })
            .collect();
        for n in nodes {
            n.join().unwrap();
        }
        assert_eq!(first.verify_audit("ws_1").unwrap(), AuditCheck { entries: 2 + 120, first_bad_seq: None });
        // Every key change is in the feed, in commit order, with no gap.
        assert_eq!(pg.psql("chain", "SELECT count(*) FROM changes WHERE kind = 'key'"), "120");
        assert_eq!(pg.psql("chain", "SELECT max(seq) - min(seq) + 1 = count(*) FROM changes"), "t");
    }

    #[test]
    fn a_due_delivery_goes_to_one_node_and_comes_back_after_its_lease() {
        let Some(pg) = keyward_testkit::Postgres::start() else { return };
        let a = fresh(&pg, "outbox");
        let b = PgStore::open(&pg.url("outbox"), 2).unwrap();
        seed(&a);
        let hook = WebhookRow {
            id: "wh_1".into(),
            workspace_id: "ws_1".into(),
            url: "http://127.0.0.1:9/".into(),
            events: vec![],
            description: None,
            secret: "whsec_x".into(),
            format: "webhook".into(),
            created_at: 1,
            deleted_at: None,
        };
        a.insert_webhook(&hook, &audit("ws_1", "aud_w", "webhook.create")).unwrap();
        a.write_alerts(&[], &[], &[notice("msg_1", "alert.opened"), notice("msg_2", "alert.opened")]).unwrap();
        let got_a = a.due_deliveries(10, 1).unwrap();
        let got_b = b.due_deliveries(10, 10).unwrap();
        assert_eq!((got_a.len(), got_b.len()), (1, 1), "each node claims what the other has not");
        assert_ne!(got_a[0].delivery.id, got_b[0].delivery.id);
        assert!(a.due_deliveries(10, 10).unwrap().is_empty(), "both are leased");
        // A's send fails and is retried later; B's node dies: its lease runs out.
        let attempt = AttemptRow {
            delivery_id: got_a[0].delivery.id.clone(),
            n: 1,
            at: 11,
            status: Some(503),
            error: Some("busy".into()),
            duration_ms: 2,
        };
        a.record_attempt(&attempt, AttemptNext::RetryAt(100)).unwrap();
        let back: Vec<String> = a.due_deliveries(10 + 60_000, 10).unwrap().into_iter().map(|d| d.delivery.id).collect();
        let mut want = vec![got_a[0].delivery.id.clone(), got_b[0].delivery.id.clone()];
        want.sort();
        let mut back = back;
        back.sort();
        assert_eq!(back, want);
        assert_eq!(a.pending_deliveries().unwrap(), 2);
        assert_eq!(a.delivery_attempts(&attempt.delivery_id).unwrap(), vec![attempt]);
    }
}

mod events {
    use super::super::PgEventLog;
    use crate::conformance::{self, event};
    use crate::events::EventLog;
    use keyward_core::Outcome;

    fn fresh(pg: &keyward_testkit::Postgres, db: &str) -> PgEventLog {
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        PgEventLog::open(&pg.url(db), 4).unwrap()
    }

    #[test]
    fn the_log_behaves_as_the_embedded_one() {
        let Some(pg) = keyward_testkit::Postgres::start() else { return };
        conformance::append_query_usage_purge_cursor(&fresh(&pg, "e1"));
        conformance::time_bounds_use_ids_and_stay_exact(&fresh(&pg, "e2"));
        conformance::an_address_and_its_pseudonym_are_merged_in_id_order(&fresh(&pg, "e3"));
        conformance::an_owners_events_merge_across_many_keys(&fresh(&pg, "e4"));
        conformance::rollups_round_trip_and_purge(&fresh(&pg, "e5"));
    }

    #[test]
    fn retention_drops_whole_days_and_ids_follow_commit_order_across_writers() {
        let Some(pg) = keyward_testkit::Postgres::start() else { return };
        let log = fresh(&pg, "days");
        const DAY: i64 = 86_400_000;
        let base = 20_000 * DAY;
        let mut batch: Vec<_> =
            (0..30).map(|i| event(base + (i % 3) * DAY + i, "ws", Some("k"), Outcome::Valid)).collect();
        log.append(&mut batch).unwrap();
        let parts = pg.psql("days", "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass");
        assert!(parts.parse::<i64>().unwrap() >= 4, "days 20000..20003 and the default: {parts}");
        // Everything before day 20002 goes: two whole partitions dropped.
        assert_eq!(log.purge_chunk(base + 2 * DAY, 1000).unwrap(), 20);
        assert_eq!(log.purge_chunk(base + 2 * DAY, 1000).unwrap(), 0);
        assert_eq!(log.count().unwrap(), 10);
        assert_eq!(pg.psql("days", "SELECT to_regclass('events_d20000') IS NULL"), "t");

        // Three writers at once: every batch's ids are contiguous, and a reader
        // that follows `after(id)` while they write sees each event once, in order.
        let url = pg.url("days");
        let reader_log = PgEventLog::open(&url, 2).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut last = reader_log.max_id().unwrap();
                let mut seen = Vec::new();
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                    let page = reader_log.after(last, 500).unwrap();
                    for e in &page {
                        assert!(e.id > last);
                        last = e.id;
                        seen.push(e.id);
                    }
                    if done && page.is_empty() {
                        return seen;
                    }
                }
            })
        };
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let log = PgEventLog::open(&url, 2).unwrap();
                    let now = keyward_core::time::now_ms();
                    for b in 0..20 {
                        let mut batch: Vec<_> =
                            (0..50).map(|i| event(now + i, "ws", Some(&format!("k{w}")), Outcome::Valid)).collect();
                        log.append(&mut batch).unwrap();
                        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                        assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "writer {w} batch {b}: {ids:?}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().unwrap();
        assert_eq!(seen.len(), 3 * 20 * 50, "the follower saw every event exactly once");
    }
}
