//! Usage rollups and the analytics API (issue 14): series read from rollups
//! kept as events are written, exact across a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::Server;

fn series(s: &Server, path: &str) -> Value {
    let r = s.call("GET", path, None);
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.json()
}

/// Waits until the key's totals count `n` requests.
fn until_counted(s: &Server, id: &str, n: u64) -> Value {
    let start = Instant::now();
    loop {
        let v = series(s, &format!("/v1/keys/{id}/analytics?granularity=minute"));
        if v["totals"]["requests"] == n {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "rollups never reached {n}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_keys_usage_is_rolled_up_by_minute_hour_and_day_and_survives_a_restart() {
    let mut s = Server::start();
    let ks = s.keyspace();
    let (id, key) =
        s.key(json!({"keyspace_id": ks, "ratelimits": [{"name": "m", "limit": 3, "window_ms": 3_600_000}]}));
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.1"] {
        s.verify_as(&s.root.clone(), json!({"key": key, "ip": ip}));
    }
    let minute = until_counted(&s, &id, 5);
    for g in ["minute", "hour", "day"] {
        // Hours are written every 5 s, days every 15 s.
        let start = Instant::now();
        let v = loop {
            let v = series(&s, &format!("/v1/keys/{id}/analytics?granularity={g}"));
            if v["totals"]["requests"] == 5 || start.elapsed() > Duration::from_secs(20) {
                break v;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let t = &v["totals"];
        assert_eq!(
            (t["requests"].as_u64(), t["valid"].as_u64(), t["denied"].as_u64()),
            (Some(5), Some(3), Some(2)),
            "{g}: {v}"
        );
        assert_eq!(t["outcomes"]["RATE_LIMITED"], 2, "{g}: {v}");
        assert_eq!(t["distinct_ips"], 2, "{g}: {v}");
        assert_eq!(v["granularity"], g);
        assert!(!v["points"].as_array().unwrap().is_empty());
    }
    let points = minute["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["requests"].as_u64().unwrap()).sum::<u64>(), 5);
    // The keyspace's series holds the same (its only key).
    let kv = series(&s, &format!("/v1/keyspaces/{ks}/analytics"));
    assert_eq!(kv["totals"]["requests"], 5, "{kv}");

    // Bad questions are 400s; someone else's key is a 404.
    s.call("GET", &format!("/v1/keys/{id}/analytics?granularity=week"), None).problem(400);
    s.call("GET", &format!("/v1/keys/{id}/analytics?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"), None)
        .problem(400);
    let p = s
        .call(
            "GET",
            &format!(
                "/v1/keys/{id}/analytics?granularity=minute&since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z"
            ),
            None,
        )
        .problem(400);
    assert!(p["detail"].as_str().unwrap().contains("coarser granularity"), "{p}");
    s.call("GET", "/v1/keys/key_01M8NOSUCHKEY000000000/analytics", None).problem(404);
    s.call("GET", &format!("/v1/keys/{id}/analytics?color=red"), None).problem(400);
    let other = s.create("/v1/workspaces", json!({"name": "b"}))["root_key"]["key"].as_str().unwrap().to_owned();
    s.call_as(&other, "GET", &format!("/v1/keys/{id}/analytics"), None).problem(404);

    // A restart counts nothing twice and loses nothing.
    s.restart();
    s.verify_as(&s.root.clone(), json!({"key": key, "ip": "10.0.0.3"}));
    let after = until_counted(&s, &id, 6);
    assert_eq!(after["totals"]["distinct_ips"], 3, "{after}");
    // A clean stop writes every level: the day series is whole at once after it.
    s.restart();
    assert_eq!(series(&s, &format!("/v1/keys/{id}/analytics?granularity=day"))["totals"]["requests"], 6);
}

#[test]
fn a_crash_before_the_hourly_and_daily_writes_neither_loses_nor_double_counts() {
    let mut s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "ratelimits": []}));
    for _ in 0..4 {
        assert_eq!(s.code(&key), "VALID");
    }
    until_counted(&s, &id, 4);
    // The minute buckets are written; the hour and day ones may not be yet.
    s.crash_and_restart();
    assert_eq!(s.code(&key), "VALID");
    for g in ["minute", "hour", "day"] {
        let start = Instant::now();
        loop {
            let v = series(&s, &format!("/v1/keys/{id}/analytics?granularity={g}"));
            let n = v["totals"]["requests"].as_u64().unwrap();
            assert!(n <= 5, "{g} counted an event twice: {v}");
            if n == 5 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(25), "{g} lost events: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits for a top list to satisfy `done`.
fn top_until(s: &Server, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = series(s, &format!("/v1/analytics/top?{query}"));
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{query}: never settled: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn top_lists_rank_keys_owners_and_addresses_by_requests_denials_and_bytes() {
    let s = Server::start();
    let ks = s.keyspace();
    let (busy, busy_key) = s.key(json!({"keyspace_id": ks, "name": "busy", "owner_id": "acme", "ratelimits": []}));
    let (denied, denied_key) = s.key(json!({"keyspace_id": ks, "name": "tight", "owner_id": "globex",
        "ratelimits": [{"name": "m", "limit": 1, "window_ms": 3_600_000}]}));
    let root = s.root.clone();
    for _ in 0..6 {
        s.verify_as(&root, json!({"key": busy_key, "ip": "192.0.2.1"}));
    }
    for _ in 0..4 {
        s.verify_as(&root, json!({"key": denied_key, "ip": "192.0.2.2"}));
    }
    let v = top_until(&s, "dimension=key&by=requests", |v| {
        v["items"][0]["requests"] == 6 && v["items"][1]["requests"] == 4
    });
    assert_eq!(v["items"][0]["id"], busy.as_str(), "{v}");
    assert_eq!(v["items"][0]["name"], "busy", "{v}");
    assert!(v["items"][0]["hint"].as_str().unwrap().len() >= 4, "{v}");
    assert_eq!(v["granularity"], "hour", "a day is summed by hour: {v}");
    // The last hour is summed by minute (written every second).
    let recent = series(&s, &format!("/v1/analytics/top?since={}", ago(3_600_000)));
    assert_eq!((recent["granularity"].as_str(), recent["items"][0]["requests"].as_u64()), (Some("minute"), Some(6)));
    // By denials: only the tight key has any (3 of its 4 were over its limit).
    let d = series(&s, "/v1/analytics/top?by=denials");
    assert_eq!(d["items"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!((d["items"][0]["id"].as_str(), d["items"][0]["denied"].as_u64()), (Some(denied.as_str()), Some(3)));
    let o = series(&s, "/v1/analytics/top?dimension=owner&limit=1");
    assert_eq!(o["items"].as_array().unwrap().len(), 1, "{o}");
    assert_eq!((o["items"][0]["id"].as_str(), o["items"][0]["requests"].as_u64()), (Some("acme"), Some(6)));
    // Addresses are kept by hour: they show once the hourly write is done (5 s).
    let ip = top_until(&s, "dimension=ip&by=denials", |v| v["items"][0]["denied"] == 3);
    assert_eq!(ip["items"][0]["id"], "192.0.2.2", "{ip}");
    assert_eq!(ip["granularity"], "hour");
    // A 40-day range is summed by day; days are written every 15 s.
    let since = ago(40 * 86_400_000);
    let long = top_until(&s, &format!("since={since}"), |v| v["items"].as_array().is_some_and(|a| a.len() == 2));
    assert_eq!(long["granularity"], "day", "{long}");

    for bad in ["dimension=planet", "by=joy", "limit=0", "limit=101", "since=yesterday", "color=red"] {
        let p = s.call("GET", &format!("/v1/analytics/top?{bad}"), None).problem(400);
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{bad}: {p}");
    }
    // Another workspace sees none of it.
    let other = s.create("/v1/workspaces", json!({"name": "b"}))["root_key"]["key"].as_str().unwrap().to_owned();
    let r = s.call_as(&other, "GET", "/v1/analytics/top", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["items"], json!([]));
    s.call_as("kw_root_nope", "GET", "/v1/analytics/top", None).problem(401);
}

/// RFC 3339 for `ms` ago.
fn ago(ms: i64) -> String {
    use keyward_core::time::{now_ms, to_rfc3339};
    to_rfc3339(now_ms() - ms)
}
