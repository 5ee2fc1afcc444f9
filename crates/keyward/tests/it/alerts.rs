//! Alerting end to end (issue 10): realistic traffic through the HTTP API
//! from `traffic`, attacks injected, and exactly the expected alerts out;
//! webhooks signed per Standard Webhooks, checked by the specification's own
//! Python library, delivered after an outage and across a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::traffic::{Client, bad_root_keys, invalid_keys};
use crate::util::{Capture, Server, python_venv};

fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alerts(s: &Server) -> Vec<Value> {
    s.call("GET", "/v1/alerts?limit=1000", None).json()["data"].as_array().unwrap().clone()
}

/// (rule, severity, subject) of every alert.
fn summary(alerts: &[Value]) -> BTreeSet<(String, String, String)> {
    alerts
        .iter()
        .map(|a| {
            let subject = match a["subject"]["kind"].as_str() {
                Some("ip") => format!("ip:{}", a["subject"]["ip"].as_str().unwrap()),
                _ => format!("key:{}", a["subject"]["key_id"].as_str().unwrap()),
            };
            (a["rule"].as_str().unwrap().to_owned(), a["severity"].as_str().unwrap().to_owned(), subject)
        })
        .collect()
}

fn expect(rule: &str, severity: &str, subject: &str) -> (String, String, String) {
    (rule.to_owned(), severity.to_owned(), subject.to_owned())
}

/// Limits far above the test's traffic, so no attack trips a rate limit by the way.
const ROOMY: &str = r#"[{"name": "minute", "limit": 1000000, "window_ms": 60000}]"#;

fn keyspace(s: &Server, name: &str) -> String {
    let limits: Value = serde_json::from_str(ROOMY).unwrap();
    s.create(
        "/v1/keyspaces",
        json!({"name": name, "default_ratelimits": limits, "default_scopes": ["read", "billing:*"]}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The clock of the server, moved by the test (`KEYWARD_TEST_CLOCK_FILE`).
struct Clock {
    file: std::path::PathBuf,
    skew: i64,
}

impl Clock {
    fn new(dir: &std::path::Path) -> Clock {
        let file = dir.join("clock");
        std::fs::write(&file, "0").unwrap();
        Clock { file, skew: 0 }
    }

    /// Moves the server's clock to `skew` ms ahead of the real one, and waits until it follows.
    fn set(&mut self, s: &Server, skew: i64) {
        assert!(skew >= self.skew, "the test clock only moves forward");
        self.skew = skew;
        std::fs::write(&self.file, skew.to_string()).unwrap();
        let want = real_now() + skew - 1000;
        eventually(5, "the server's clock", || {
            // A throwaway keyspace's creation instant shows the server's clock.
            let ks = s.create("/v1/keyspaces", json!({"name": "clock-probe"}));
            let at = keyward_core::time::parse_rfc3339(ks["created_at"].as_str().unwrap()).unwrap();
            (at >= want).then_some(())
        });
    }
}

fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[test]
fn attacks_raise_exactly_the_expected_alerts_and_normal_traffic_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut clock = Clock::new(dir.path());
    // Alerts stay open while the test moves the clock by weeks.
    let config = "[alerts]\nquiet_ms = 5184000000\n";
    let s = Server::start_full(&[("KEYWARD_TEST_CLOCK_FILE", clock.file.to_str().unwrap())], Some(config));
    let ks = keyspace(&s, "prod");
    let key = |name: &str| s.key(json!({"keyspace_id": ks, "name": name}));
    let (normal_a, normal_a_key) = key("normal a");
    let (_, normal_b_key) = key("normal b");
    let (leaked, leaked_key) = key("leaked");
    let (flood, flood_key) = key("flood");
    let (errors, errors_key) = key("errors");
    let (transfer, transfer_key) = key("transfer");
    let (rotated, rotated_key) = key("rotated");
    let (overlapping, overlapping_key) = key("overlapping");
    let (revoked, revoked_key) = key("revoked");
    let (baseline, baseline_key) = key("baseline");
    let (leak, leak_key) = key("leak");
    // Normal clients: each from its usual address, a steady trickle.
    let normal = |round: usize| {
        for (k, ip) in [(&normal_a_key, "203.0.113.10"), (&normal_b_key, "203.0.113.11")] {
            let c = Client::new(&s, k, ip);
            assert_eq!(c.burst(5 + round), 5 + round);
            c.request(200, 40_000);
        }
    };
    normal(0);
    let leaked_client = Client::new(&s, &leaked_key, "203.0.113.20");
    leaked_client.burst(3);
    // The baseline key learns 10 requests in this hour of the week.
    let baseline_at = real_now();
    Client::new(&s, &baseline_key, "203.0.113.30").burst(10);
    // A burst over 1,000 a minute.
    assert_eq!(Client::new(&s, &flood_key, "203.0.113.40").burst(1100), 1100);
    // An error-rate spike: the application reports 500 for every request.
    let failing = Client::new(&s, &errors_key, "203.0.113.41");
    for _ in 0..30 {
        failing.request(500, 100);
    }
    // Large transfers: 3 × 600 MB in minutes.
    let big = Client::new(&s, &transfer_key, "203.0.113.42");
    for _ in 0..3 {
        big.request(200, 600_000_000);
    }
    // Enumeration: 25 different invalid keys from one address; a failed-auth flood from another.
    invalid_keys(&s, "192.0.2.50", 25, true);
    invalid_keys(&s, "192.0.2.51", 55, false);
    // A rotated key used after its overlap, an old key inside its overlap, a revoked key used.
    Client::new(&s, &rotated_key, "203.0.113.43").burst(1);
    s.call("POST", &format!("/v1/keys/{rotated}/rotate"), Some(json!({"overlap_ms": 0}))).json();
    assert_eq!(Client::new(&s, &rotated_key, "203.0.113.43").verify(json!({}))["code"], "ROTATED");
    s.call("POST", &format!("/v1/keys/{overlapping}/rotate"), Some(json!({"overlap_ms": 3_600_000}))).json();
    assert_eq!(Client::new(&s, &overlapping_key, "203.0.113.44").verify(json!({}))["deprecated"], true);
    s.call("POST", &format!("/v1/keys/{revoked}/revoke"), Some(json!({"reason": "compromised"}))).json();
    assert_eq!(Client::new(&s, &revoked_key, "203.0.113.45").verify(json!({}))["code"], "REVOKED");
    // A key reported leaked; bad root keys against the management API.
    let report = s.call("POST", "/v1/leaks", Some(json!({"keys": [leak_key], "source": "paste site"}))).json();
    assert_eq!(report["revoked"], 1);
    bad_root_keys(&s, 25);

    // Two days later: the leaked key is used from an address it never used.
    clock.set(&s, 2 * DAY);
    normal(1);
    assert_eq!(Client::new(&s, &leaked_key, "198.51.100.66").burst(2), 2);

    // A Sunday at 03:00 UTC: a sensitive scope is used.
    let sensitive_ks = keyspace(&s, "billing");
    s.call(
        "PUT",
        "/v1/alert-rules",
        Some(json!({"keyspace_id": sensitive_ks, "rules": {"off_hours": {"sensitive_scopes": ["billing:*"]}}})),
    )
    .json();
    let (night, night_key) = s.key(json!({"keyspace_id": sensitive_ks, "scopes": ["billing:refund"]}));
    let now = real_now() + clock.skew;
    // 1970-01-01 was a Thursday, so day numbers ≡ 3 (mod 7) are Sundays; the next one strictly ahead.
    let today = now.div_euclid(DAY);
    let days_to_sunday = match (3 - today.rem_euclid(7)).rem_euclid(7) {
        0 => 7,
        d => d,
    };
    let sunday_3am = (today + days_to_sunday) * DAY + 3 * HOUR;
    clock.set(&s, sunday_3am - real_now());
    let night_client = Client::new(&s, &night_key, "203.0.113.50");
    assert_eq!(night_client.verify(json!({"scopes": ["billing:refund"]}))["code"], "VALID");
    assert_eq!(
        night_client.verify(json!({"scopes": ["read"]}))["code"],
        "FORBIDDEN",
        "not granted: no use of the scope"
    );

    // Two weeks after the baseline key learned its hour: 150 requests in that hour of the week.
    let target = baseline_at + 14 * DAY;
    clock.set(&s, target - real_now());
    normal(2);
    assert_eq!(Client::new(&s, &baseline_key, "203.0.113.30").burst(150), 150);

    let expected: BTreeSet<(String, String, String)> = [
        expect("new_ip", "medium", &format!("key:{leaked}")),
        expect("requests_per_minute", "critical", &format!("key:{flood}")),
        expect("requests_per_5_minutes", "high", &format!("key:{flood}")),
        expect("server_error_rate", "critical", &format!("key:{errors}")),
        expect("data_transfer", "critical", &format!("key:{transfer}")),
        expect("enumeration", "high", "ip:192.0.2.50"),
        expect("failed_auth_per_ip", "warning", "ip:192.0.2.50"),
        expect("failed_auth_per_ip", "critical", "ip:192.0.2.51"),
        expect("denied_burst_ip", "medium", "ip:192.0.2.51"),
        expect("used_after_end", "high", &format!("key:{rotated}")),
        expect("rotation_overlap_use", "notice", &format!("key:{overlapping}")),
        expect("used_after_end", "high", &format!("key:{revoked}")),
        expect("off_hours", "medium", &format!("key:{night}")),
        expect("baseline", "medium", &format!("key:{baseline}")),
        expect("root_auth_failures", "high", "ip:127.0.0.1"),
        expect("leak", "critical", &format!("key:{leak}")),
    ]
    .into_iter()
    .collect();
    let got = eventually(10, "every expected alert", || {
        let got = summary(&alerts(&s));
        expected.is_subset(&got).then_some(got)
    });
    // Exactly those: nothing for the normal clients, nothing twice.
    std::thread::sleep(Duration::from_millis(500));
    let all = alerts(&s);
    assert_eq!(summary(&all), expected, "got {got:?}");
    assert_eq!(all.len(), expected.len(), "one alert per rule and subject");
    assert!(!all.iter().any(|a| a["subject"]["key_id"] == normal_a.as_str()));
    // The ongoing flood updated one alert: it escalated and counted on.
    let rpm = all.iter().find(|a| a["rule"] == "requests_per_minute").unwrap();
    assert!(rpm["count"].as_u64().unwrap() >= 500, "{rpm}");
    // The figures of the latest finding at the highest level: all 1,100 in the minute.
    assert_eq!(rpm["detail"], "1,100 requests in 1 min (above 1,000)");
    assert_eq!((rpm["value"].as_f64(), rpm["threshold"].as_f64()), (Some(1100.0), Some(1000.0)));
    // Its evidence: the events that crossed it.
    let detail = s.call("GET", &format!("/v1/alerts/{}", rpm["id"].as_str().unwrap()), None).json();
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events.len(), 20);
    assert!(events.iter().all(|e| e["key_id"] == flood.as_str()));
    // No key appears in any alert.
    let text = serde_json::to_string(&all).unwrap();
    for k in [&normal_a_key, &leaked_key, &flood_key, &leak_key, &night_key] {
        assert!(!text.contains(k.as_str()));
    }
}
