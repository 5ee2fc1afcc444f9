use std::sync::Arc;
use std::time::Duration;

use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};
use keyward_store::events::{EventFilter, SqliteEventLog};

use super::*;

pub fn event(n: u64, ws: &str) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts: now_ms(),
        kind: EventKind::Verify,
        request_id: format!("req_{n}"),
        workspace_id: ws.into(),
        keyspace_id: None,
        key_id: Some("key_1".into()),
        key_hint: None,
        owner_id: None,
        fingerprint: None,
        source_ip: None,
        user_agent: None,
        method: None,
        path: None,
        outcome: Outcome::Valid,
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

fn open() -> (tempfile::TempDir, Arc<SqliteEventLog>) {
    let (dir, log, _) = open_with_path();
    (dir, log)
}

fn open_with_path() -> (tempfile::TempDir, Arc<SqliteEventLog>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = Arc::new(SqliteEventLog::open(&path).unwrap());
    (dir, log, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_batched_reports_applied_and_flushed_on_shutdown() {
    let (_dir, log) = open();
    let p = EventPipeline::start(log.clone(), PipelineConfig::default()).unwrap();
    for n in 0..1000 {
        let refused = n == 11 || n == 1005;
        p.emit(UsageEvent { outcome: if refused { Outcome::NotFound } else { Outcome::Valid }, ..event(n, "ws_a") })
            .await;
    }
    // A report for an event still in the batch, one for another workspace, one unknown.
    let r = |id: &str, ws: &str| UsageReport {
        request_id: id.into(),
        workspace_id: ws.into(),
        http_status: Some(201),
        bytes_in: None,
        bytes_out: Some(5),
        latency_us: Some(9),
    };
    assert_eq!(p.report(r("req_7", "ws_a")).await, Reported::Applied);
    assert_eq!(p.report(r("req_8", "ws_b")).await, Reported::NoSuchRequest);
    assert_eq!(p.report(r("req_nope", "ws_a")).await, Reported::NoSuchRequest);
    // A refused verify cannot have led to a 2xx; a 401 is fine.
    assert_eq!(p.report(r("req_11", "ws_a")).await, Reported::SuccessAfterRefusal);
    p.flush().await;
    assert_eq!(log.count().unwrap(), 1000);
    // Reports for events already written.
    assert_eq!(p.report(r("req_9", "ws_a")).await, Reported::Applied);
    assert_eq!(p.report(r("req_11", "ws_a")).await, Reported::SuccessAfterRefusal);
    let unauthorized = UsageReport { http_status: Some(401), ..r("req_11", "ws_a") };
    assert_eq!(p.report(unauthorized).await, Reported::Applied);
    for n in 1000..1010 {
        p.emit(event(n, "ws_a")).await;
    }
    p.shutdown();
    assert_eq!(log.count().unwrap(), 1010);
    let done = log
        .query(&EventFilter {
            workspace_id: "ws_a".into(),
            status_class: Some(2),
            limit: 10,
            ascending: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(done.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(), ["req_7", "req_9"]);
    assert_eq!(done[0].bytes_out, Some(5));
    assert_eq!(p.stats().dropped.load(Ordering::Relaxed), 0);
    // After shutdown, emits are dropped and counted, never blocking.
    p.emit(event(5000, "ws_a")).await;
    assert_eq!(p.stats().dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_after_a_short_wait() {
    let (_dir, log, path) = open_with_path();
    // A tiny queue, and a disk that does not take writes: another
    // connection holds an exclusive lock on the database.
    let cfg = PipelineConfig {
        queue_capacity: 10,
        batch_max: 10,
        flush_interval_ms: 5_000,
        enqueue_timeout_ms: 5,
        ..Default::default()
    };
    let p = EventPipeline::start(log.clone(), cfg).unwrap();
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    for n in 0..200 {
        p.emit(event(n, "ws")).await;
    }
    let dropped = p.stats().dropped.load(Ordering::Relaxed);
    let enqueued = p.stats().enqueued.load(Ordering::Relaxed);
    assert_eq!(dropped + enqueued, 200, "every event is either queued or counted as dropped");
    assert!(dropped > 0, "a 10-event queue cannot take 200 events in a burst");
    assert!(started.elapsed() < Duration::from_secs(4), "producers never wait on disk for long");
    lock.execute_batch("COMMIT").unwrap();
    p.shutdown();
    assert_eq!(log.count().unwrap(), enqueued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_purged() {
    let (_dir, log) = open();
    let mut old: Vec<UsageEvent> = (0..20).map(|n| UsageEvent { ts: 1000, ..event(n, "ws") }).collect();
    log.append(&mut old).unwrap();
    let cfg = PipelineConfig { retention_days: 1, purge_interval_ms: 10, flush_interval_ms: 10, ..Default::default() };
    let p = EventPipeline::start(log.clone(), cfg).unwrap();
    p.emit(event(99, "ws")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.count().unwrap() != 1 {
        assert!(std::time::Instant::now() < deadline, "old events were not purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.stats().purged.load(Ordering::Relaxed), 20);
    p.shutdown();
}

/// The observer gets every written event once, in log order, and the late
/// reports with their key ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_the_written_stream_and_late_reports() {
    #[derive(Default)]
    struct Seen {
        events: parking_lot::Mutex<Vec<i64>>,
        reports: parking_lot::Mutex<Vec<(String, Option<u16>)>>,
    }
    impl EventObserver for Seen {
        fn written(&self, events: Vec<UsageEvent>) {
            self.events.lock().extend(events.iter().map(|e| e.id));
        }
        fn reported(&self, reports: Vec<(String, UsageReport)>) {
            self.reports.lock().extend(reports.into_iter().map(|(k, r)| (k, r.http_status)));
        }
    }
    let (_dir, log) = open();
    let p = EventPipeline::start(log.clone(), PipelineConfig::default()).unwrap();
    let seen = Arc::new(Seen::default());
    p.observe(seen.clone());
    for n in 0..500 {
        p.emit(event(n, "ws_a")).await;
    }
    p.flush().await;
    let report = UsageReport {
        request_id: "req_3".into(),
        workspace_id: "ws_a".into(),
        http_status: Some(502),
        bytes_in: None,
        bytes_out: None,
        latency_us: None,
    };
    assert_eq!(p.report(report).await, Reported::Applied);
    p.shutdown();
    let ids = seen.events.lock().clone();
    assert_eq!(ids, (1..=500).collect::<Vec<i64>>());
    assert_eq!(*seen.reports.lock(), [("key_1".to_owned(), Some(502))]);
}
