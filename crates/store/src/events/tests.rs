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
