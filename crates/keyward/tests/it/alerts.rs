//! Alerting end to end (issue 10): realistic traffic through the HTTP API
//! from `traffic`, attacks injected, and exactly the expected alerts out;
//! webhooks signed per Standard Webhooks, checked by the specification's own
//! Python library, delivered after an outage and across a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::traffic::{Client, bad_root_keys, invalid_keys};
use crate::util::{Capture, Clock, Server, eventually, python_venv, real_now};

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

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[test]
fn attacks_raise_exactly_the_expected_alerts_and_normal_traffic_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut clock = Clock::new(dir.path());
    // Alerts stay open while the test moves the clock by weeks.
    // The flood of wrong root keys is judged by the rules engine here, not
    // throttled (that is `security::root_key_guessing_…`).
    let config = "[alerts]\nquiet_ms = 5184000000\n[http]\nroot_auth_failures_per_minute = 1000\n";
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

/// Headers of a captured request, by lower-case name.
fn headers_of(raw: &str) -> std::collections::BTreeMap<String, String> {
    raw.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// Checks every captured delivery with the Standard Webhooks reference
/// library for Python (`standardwebhooks` from PyPI): what receivers use.
fn verify_with_the_reference_library(secret: &str, deliveries: &[(String, String, String)]) {
    if std::env::var_os("KEYWARD_SKIP_PYTHON").is_some() {
        eprintln!("KEYWARD_SKIP_PYTHON is set: signatures checked with keyward's own verifier only");
        return;
    }
    let python = python_venv("webhooks-venv", &["standardwebhooks==1.1.0"], "KEYWARD_SKIP_PYTHON");
    let input = json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|(_, h, b)| json!({"headers": headers_of(h), "body": b})).collect::<Vec<_>>(),
    });
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
job = json.load(sys.stdin)
wh = Webhook(job["secret"])
for d in job["deliveries"]:
    wh.verify(d["body"], d["headers"])
# A changed body, and a replayed old timestamp, must both fail.
d = job["deliveries"][0]
for bad in [dict(d, body=d["body"] + " "), dict(d, headers=dict(d["headers"], **{"webhook-timestamp": "1000000000"}))]:
    try:
        wh.verify(bad["body"], bad["headers"])
        sys.exit("a tampered delivery verified")
    except Exception:
        pass
print(len(job["deliveries"]))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "standardwebhooks refused a delivery: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), deliveries.len().to_string());
}

#[test]
fn webhooks_are_signed_and_nothing_is_lost_across_an_outage_and_a_restart() {
    let hooks = Capture::start();
    let chat = Capture::start();
    hooks.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let config = "[webhooks]\npoll_ms = 50\nfirst_retry_ms = 200\nmax_retry_ms = 1000\n";
    let mut s = Server::start_full(&[], Some(config));
    let created =
        s.create("/v1/webhooks", json!({"url": format!("{}/keyward", hooks.url()), "description": "on-call"}));
    let (hook, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("whsec_"), "{created}");
    s.create(
        "/v1/webhooks",
        json!({"url": format!("{}/slack", chat.url()), "format": "slack", "events": ["alert.opened"]}),
    );
    // Bad endpoints are refused with a reason.
    let p = s.call("POST", "/v1/webhooks", Some(json!({"url": "ftp://x"}))).problem(400);
    assert!(p["detail"].as_str().unwrap().contains("http"), "{p}");
    let p = s.call("POST", "/v1/webhooks", Some(json!({"url": "https://x", "events": ["key.exploded"]}))).problem(400);
    assert!(p["detail"].as_str().unwrap().contains("alert.opened"), "{p}");
    let listed = s.call("GET", "/v1/webhooks", None).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&secret), "secrets are shown once");

    let ks = keyspace(&s, "prod");
    let (_, flood_key) = s.key(json!({"keyspace_id": ks}));
    let (revoked, _) = s.key(json!({"keyspace_id": ks}));
    let (rotated, _) = s.key(json!({"keyspace_id": ks}));
    let (disabled, _) = s.key(json!({"keyspace_id": ks}));
    // A burst over 1,000 a minute opens two alerts (and escalates one); three key lifecycle changes.
    let started = Instant::now();
    assert_eq!(Client::new(&s, &flood_key, "203.0.113.40").burst(1100), 1100);
    let stored = eventually(10, "the flood's alerts", || {
        let a = alerts(&s);
        (a.len() == 2 && a.iter().any(|x| x["severity"] == "critical")).then_some(a)
    });
    eprintln!("flood of 1,100 verifies to both alerts stored: {:?}", started.elapsed());
    s.call("POST", &format!("/v1/keys/{revoked}/revoke"), Some(json!({"reason": "compromised"}))).json();
    s.call("POST", &format!("/v1/keys/{rotated}/rotate"), Some(json!({}))).json();
    s.call("PATCH", &format!("/v1/keys/{disabled}"), Some(json!({"enabled": false}))).json();
    // The endpoint is down: attempts fail and are retried.
    let deliveries = |s: &Server| {
        s.call("GET", &format!("/v1/webhooks/{hook}/deliveries"), None).json()["data"].as_array().unwrap().clone()
    };
    eventually(10, "failed attempts while the endpoint is down", || {
        let d = deliveries(&s);
        (d.len() == 6 && d.iter().all(|x| x["attempts"].as_u64() >= Some(1) && x["status"] == "pending")).then_some(())
    });
    // A restart with deliveries pending loses none of them.
    s.restart();
    hooks.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = eventually(20, "every delivery after the outage", || {
        let r = hooks.requests.lock().clone();
        (r.len() >= 6).then_some(r)
    });
    std::thread::sleep(Duration::from_millis(500));
    let got_now = hooks.requests.lock().clone();
    assert_eq!(got_now.len(), 6, "each message once: {:?}", got_now.iter().map(|(_, _, b)| b).collect::<Vec<_>>());
    let mut types: Vec<String> = got
        .iter()
        .map(|(_, _, body)| serde_json::from_str::<Value>(body).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["alert.escalated", "alert.opened", "alert.opened", "key.disabled", "key.revoked", "key.rotated"]
    );
    let ids: BTreeSet<String> = got.iter().map(|(_, h, _)| headers_of(h)["webhook-id"].clone()).collect();
    assert_eq!(ids.len(), 6, "a webhook-id per message");
    for (path, headers, body) in &got {
        assert_eq!(path, "/keyward");
        let h = headers_of(headers);
        let ts: i64 = h["webhook-timestamp"].parse().unwrap();
        keyward_alerts::webhook::verify(
            &secret,
            &h["webhook-id"],
            &h["webhook-timestamp"],
            &h["webhook-signature"],
            body.as_bytes(),
            ts,
        )
        .unwrap();
    }
    let revoked_msg = got
        .iter()
        .map(|(_, _, b)| serde_json::from_str::<Value>(b).unwrap())
        .find(|m| m["type"] == "key.revoked")
        .unwrap();
    assert_eq!(
        (revoked_msg["data"]["key_id"].as_str(), revoked_msg["data"]["reason"].as_str()),
        (Some(revoked.as_str()), Some("compromised"))
    );
    verify_with_the_reference_library(&secret, &got);
    // The attempts are on record: 503s while down, then a delivery.
    let d = deliveries(&s);
    assert!(d.iter().all(|x| x["status"] == "delivered" && x["attempts"].as_u64() >= Some(2)), "{d:?}");
    let log = d[0]["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["status"], 503);
    assert_eq!(log.last().unwrap()["status"], 200);
    // A person resolves an alert: that is delivered too; a redelivery repeats a message under the same id.
    let rpm = stored.iter().find(|a| a["rule"] == "requests_per_minute").unwrap()["id"].as_str().unwrap().to_owned();
    let resolved = s.call("POST", &format!("/v1/alerts/{rpm}/resolve"), Some(json!({"note": "load test"}))).json();
    assert_eq!((resolved["status"].as_str(), resolved["resolved_by"].is_string()), (Some("resolved"), true));
    s.call("POST", &format!("/v1/alerts/{rpm}/resolve"), Some(json!({}))).problem(409);
    let first = d.last().unwrap()["id"].as_str().unwrap().to_owned();
    let r = s.call("POST", &format!("/v1/webhooks/{hook}/deliveries/{first}/redeliver"), None);
    assert_eq!(r.status, 202, "{}", r.text);
    let again = eventually(10, "the resolution and the redelivery", || {
        let r = hooks.requests.lock().clone();
        (r.len() >= 8).then_some(r)
    });
    let resolved_types: Vec<String> = again[6..]
        .iter()
        .map(|(_, _, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(resolved_types.contains(&"alert.resolved".to_owned()), "{resolved_types:?}");
    let redelivered_ids: BTreeSet<String> =
        again[6..].iter().map(|(_, h, _)| headers_of(h)["webhook-id"].clone()).collect();
    assert!(redelivered_ids.iter().any(|id| ids.contains(id)), "the redelivery keeps its webhook-id");
    // The chat endpoint got the openings as text.
    let texts: Vec<String> = chat
        .requests
        .lock()
        .iter()
        .map(|(_, _, b)| serde_json::from_str::<Value>(b).unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts.iter().all(|t| t.starts_with("keyward alert.opened: [")), "{texts:?}");
    // The audit log has the webhook and the resolution; the secret is in no log.
    let audit = s.call("GET", "/v1/audit?limit=100", None).json().to_string();
    assert!(audit.contains("webhook.create") && audit.contains("alert.resolve"));
    assert!(!s.log.lock().contains(&secret[6..]), "the signing secret reached the log");
}

/// Detection latency, crossing event → alert stored → webhook received: the
/// figures for BENCHMARKS.md (`cargo test -p keyward --test it -- alerts::detection --nocapture`).
/// The bound asserted is loose (machines here are noisy); the goal is 1 s.
#[test]
fn detection_latency_from_the_crossing_event_to_the_webhook() {
    let hooks = Capture::start();
    let s = Server::start_full(&[], Some("[webhooks]\npoll_ms = 20\n"));
    s.create("/v1/webhooks", json!({"url": format!("{}/keyward", hooks.url()), "events": ["alert.escalated"]}));
    let ks = keyspace(&s, "prod");
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    let client = Client::new(&s, &key, "203.0.113.9");
    assert_eq!(client.burst(1000), 1000);
    let mut stored_ms = Vec::new();
    let mut sent_ms = Vec::new();
    // The 1,001st request crosses the critical level.
    let crossing = Instant::now();
    client.verify(json!({}));
    let stored = eventually(10, "the escalation stored", || {
        alerts(&s).iter().any(|a| a["rule"] == "requests_per_minute" && a["severity"] == "critical").then(Instant::now)
    });
    let sent = eventually(10, "the escalation delivered", || (!hooks.requests.lock().is_empty()).then(Instant::now));
    stored_ms.push((stored - crossing).as_millis());
    sent_ms.push((sent - crossing).as_millis());
    eprintln!(
        "detection latency: alert stored {} ms, webhook received {} ms after the crossing verify",
        stored_ms[0], sent_ms[0]
    );
    assert!(sent - crossing < Duration::from_secs(5), "detection took {:?}", sent - crossing);
    // Counted in /metrics by rule, severity and change (bounded labels, no key).
    let metrics = s.raw("GET", "/metrics", None, None, &[]).text;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("keyward_alerts_total{")
                && l.contains("rule=\"requests_per_minute\"")
                && l.contains("change=\"escalated\"")
        })
        .unwrap_or_else(|| panic!("no keyward_alerts_total line:\n{metrics}"));
    assert!(line.contains("severity=\"critical\"") && line.ends_with(" 1"), "{line}");
    assert!(!metrics.contains(&key));
    // And in /readyz: what the engine evaluated, dropped and wrote.
    let ready = s.raw("GET", "/readyz", None, None, &[]).json();
    assert!(ready["alerts"]["events"].as_u64().unwrap() >= 1001, "{ready}");
    assert_eq!(ready["alerts"]["dropped"], 0);
    assert!(ready["alerts"]["changes"].as_u64().unwrap() >= 3, "{ready}");
}

/// Keys nearing expiry: one `key.expiring` message per key and run (for the
/// nearest threshold), and a notice alert.
#[test]
fn expiring_keys_are_notified_once() {
    let hooks = Capture::start();
    let s = Server::start_full(&[], Some("[lifecycle]\ncheck_interval_ms = 200\n[webhooks]\npoll_ms = 20\n"));
    s.create("/v1/webhooks", json!({"url": format!("{}/keyward", hooks.url()), "events": ["key.expiring"]}));
    let ks = keyspace(&s, "prod");
    let (id, _) = s.key(json!({"keyspace_id": ks, "ttl_ms": 12 * HOUR}));
    let got = eventually(10, "the expiry notice", || {
        let r = hooks.requests.lock().clone();
        (!r.is_empty()).then_some(r)
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(hooks.requests.lock().len(), 1, "once, not once per threshold or per run");
    let msg: Value = serde_json::from_str(&got[0].2).unwrap();
    assert_eq!(
        (msg["type"].as_str(), msg["data"]["key_id"].as_str(), msg["data"]["days"].as_i64()),
        (Some("key.expiring"), Some(id.as_str()), Some(1))
    );
    let expiring = eventually(10, "the expiring alert", || {
        alerts(&s).into_iter().find(|a| a["rule"] == "expiring" && a["subject"]["key_id"] == id.as_str())
    });
    assert_eq!(expiring["severity"], "notice");
    assert!(expiring["detail"].as_str().unwrap().contains("within 1 day"), "{expiring}");
}

/// Automatic response (issue 10): off by default; where a keyspace opts in, a
/// critical alert about one of its keys disables the key, audited with the
/// alert's id, and an enable undoes it.
#[test]
fn a_critical_alert_disables_the_key_where_the_keyspace_opts_in() {
    let s = Server::start();
    let guarded = keyspace(&s, "guarded");
    let open = keyspace(&s, "open");
    let p =
        s.call("PATCH", &format!("/v1/keyspaces/{guarded}"), Some(json!({"auto_disable_on_critical": true}))).json();
    assert_eq!(p["auto_disable_on_critical"], true);
    let (guarded_id, guarded_key) = s.key(json!({"keyspace_id": guarded}));
    let (_, open_key) = s.key(json!({"keyspace_id": open}));
    for key in [&guarded_key, &open_key] {
        assert_eq!(Client::new(&s, key, "203.0.113.60").burst(1001), 1001);
    }
    let code = |key: &str| Client::new(&s, key, "203.0.113.60").verify(json!({}))["code"].as_str().unwrap().to_owned();
    eventually(10, "the guarded key disabled", || (code(&guarded_key) == "DISABLED").then_some(()));
    assert_eq!(code(&open_key), "VALID", "a keyspace that did not opt in keeps its key working");
    let critical = alerts(&s)
        .into_iter()
        .find(|a| a["severity"] == "critical" && a["subject"]["key_id"] == guarded_id.as_str())
        .unwrap();
    let audit = s.call("GET", &format!("/v1/audit?target_id={guarded_id}"), None).json();
    let entry = audit["data"].as_array().unwrap().iter().find(|e| e["action"] == "key.auto_disable").expect("audited");
    assert_eq!(entry["actor"], format!("system:auto-response:{}", critical["id"].as_str().unwrap()));
    // Undone by a person.
    s.call("PATCH", &format!("/v1/keys/{guarded_id}"), Some(json!({"enabled": true}))).json();
    assert_eq!(code(&guarded_key), "VALID");
}

/// A restart forgets no open alert and learned nothing twice: the same attack
/// after it updates the same alert, and addresses a key used before it are
/// not new after it.
#[test]
fn a_restart_keeps_open_alerts_and_what_keys_learned() {
    let mut s = Server::start_full(&[], Some("[alerts]\nsave_learned_ms = 100\n"));
    let ks = keyspace(&s, "prod");
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    // No learning period for this key, so that new addresses count at once.
    s.call("PUT", "/v1/alert-rules", Some(json!({"key_id": id, "rules": {"new_ip": {"learning_ms": 0}}}))).json();
    assert_eq!(Client::new(&s, &key, "203.0.113.70").burst(600), 600);
    let before = eventually(10, "the flood's alert", || {
        alerts(&s).into_iter().find(|a| a["rule"] == "requests_per_minute" && a["subject"]["key_id"] == id.as_str())
    });
    // The first use was from .70 with no learning: that one address raised new_ip once.
    std::thread::sleep(Duration::from_millis(300));
    s.restart();
    assert_eq!(Client::new(&s, &key, "203.0.113.70").burst(600), 600);
    let stranger = Client::new(&s, &key, "198.51.100.77");
    stranger.burst(1);
    let after = eventually(10, "the new address after the restart", || {
        let a = alerts(&s);
        a.iter().any(|x| x["rule"] == "new_ip" && x["count"].as_u64() >= Some(2)).then_some(a)
    });
    let rpm: Vec<&Value> = after.iter().filter(|a| a["rule"] == "requests_per_minute").collect();
    assert_eq!(rpm.len(), 1, "the same alert, not a twin: {rpm:?}");
    assert_eq!(rpm[0]["id"], before["id"]);
    assert!(rpm[0]["count"].as_u64().unwrap() > before["count"].as_u64().unwrap(), "updated after the restart");
    let new_ip: Vec<&Value> = after.iter().filter(|a| a["rule"] == "new_ip").collect();
    assert_eq!(new_ip.len(), 1);
    // Two findings: the very first address, and the stranger; not .70 again after the restart.
    assert_eq!(new_ip[0]["count"], 2, "{new_ip:?}");
    assert!(new_ip[0]["detail"].as_str().unwrap().contains("198.51.100.77"));
}

/// Alerts reach the sinks as their own event kind (ECS `event.kind: alert`, and CEF).
#[test]
fn alerts_reach_the_sinks_as_their_own_kind() {
    let config = r#"
[[sinks]]
name = "ecs-file"
kind = "file"
path = "{dir}/export/events.ndjson"

[[sinks]]
name = "cef-file"
kind = "file"
path = "{dir}/export/events.cef"
format = "cef"
"#;
    let s = Server::start_full(&[], Some(config));
    let ks = keyspace(&s, "prod");
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    // The source names where it was found, the key included: scrubbed before it reaches the alert.
    let source = format!("https://paste.example/raw/{key}");
    s.call("POST", "/v1/leaks", Some(json!({"keys": [key], "source": source}))).json();
    let alert = eventually(10, "the leak alert", || alerts(&s).into_iter().find(|a| a["rule"] == "leak"));
    assert!(alert["detail"].as_str().unwrap().contains("paste.example"), "{alert}");
    assert!(!alert.to_string().contains(&key), "{alert}");
    let ecs_path = s.dir.path().join("export/events.ndjson");
    let line = eventually(10, "the alert in the ECS file", || {
        let text = std::fs::read_to_string(&ecs_path).unwrap_or_default();
        text.lines().find(|l| l.contains("\"kind\":\"alert\"")).map(str::to_owned)
    });
    let doc: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["event"]["action"], "alert-opened");
    assert_eq!(doc["event"]["severity"], 9);
    assert_eq!(doc["rule"]["name"], "leak");
    assert_eq!(doc["keyward"]["alert_id"], alert["id"]);
    assert_eq!(doc["keyward"]["key_id"], id.as_str());
    let cef = eventually(10, "the alert in the CEF file", || {
        let text = std::fs::read_to_string(s.dir.path().join("export/events.cef")).unwrap_or_default();
        text.lines().find(|l| l.contains("|alert.leak|")).map(str::to_owned)
    });
    assert!(cef.contains(&format!("externalId={}", alert["id"].as_str().unwrap())), "{cef}");
    // A person resolves it: the change is exported too.
    s.call("POST", &format!("/v1/alerts/{}/resolve", alert["id"].as_str().unwrap()), Some(json!({}))).json();
    eventually(10, "the resolution in the ECS file", || {
        std::fs::read_to_string(&ecs_path).unwrap_or_default().contains("\"action\":\"alert-resolved\"").then_some(())
    });
    // No key in any export.
    for f in ["export/events.ndjson", "export/events.cef"] {
        assert!(!std::fs::read_to_string(s.dir.path().join(f)).unwrap().contains(&key));
    }
}

/// IP enrichment from MaxMind-format files given in config: country and
/// network on events and exports, and a key's first request from a new
/// country and a new autonomous system alert (issue 10).
#[test]
fn ip_enrichment_adds_country_and_network_and_new_ones_alert() {
    use crate::util::mmdb::{V, write};
    let dir = tempfile::tempdir().unwrap();
    let (country_db, asn_db) = (dir.path().join("country.mmdb"), dir.path().join("asn.mmdb"));
    let country = |iso: &'static str| V::Map(vec![("country", V::Map(vec![("iso_code", V::Str(iso))]))]);
    write(
        &country_db,
        "GeoLite2-Country",
        vec![("203.0.113.0".parse().unwrap(), 24, country("NL")), ("198.51.100.0".parse().unwrap(), 24, country("BR"))],
    );
    let asn = |n: u32, org: &'static str| {
        V::Map(vec![("autonomous_system_number", V::U32(n)), ("autonomous_system_organization", V::Str(org))])
    };
    write(
        &asn_db,
        "GeoLite2-ASN",
        vec![
            ("203.0.113.0".parse().unwrap(), 24, asn(64_500, "Example Hosting NL")),
            ("198.51.100.0".parse().unwrap(), 24, asn(64_511, "Elsewhere Networks")),
        ],
    );
    let config = format!(
        "[geoip]\ncountry_db = \"{}\"\nasn_db = \"{}\"\n\n[[sinks]]\nname = \"ecs-file\"\nkind = \"file\"\npath = \"{{dir}}/export/events.ndjson\"\n",
        country_db.display(),
        asn_db.display()
    );
    let s = Server::start_full(&[], Some(&config));
    let ks = keyspace(&s, "prod");
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    // No learning period for this key: the first country and network are learned, the next ones alert.
    let quick = json!({"learning_ms": 0});
    s.call(
        "PUT",
        "/v1/alert-rules",
        Some(json!({"key_id": id, "rules": {"new_country": quick, "new_asn": quick, "new_ip": {"enabled": false}}})),
    )
    .json();
    Client::new(&s, &key, "203.0.113.5").burst(3);
    Client::new(&s, &key, "203.0.113.6").burst(1);
    Client::new(&s, &key, "198.51.100.9").burst(1);
    let found = eventually(10, "the new country and network alerts", || {
        let a = alerts(&s);
        let rules: BTreeSet<String> = a.iter().map(|x| x["rule"].as_str().unwrap().to_owned()).collect();
        // An ongoing alert's count is written at most once a second.
        let country_twice = a.iter().any(|x| x["rule"] == "new_country" && x["count"] == 2);
        (rules.contains("new_asn") && country_twice).then_some(a)
    });
    let by_rule = |rule: &str| found.iter().find(|a| a["rule"] == rule).unwrap().clone();
    assert_eq!(by_rule("new_country")["count"], 2, "the first country, then BR: not NL again");
    assert!(by_rule("new_country")["detail"].as_str().unwrap().contains("country BR"));
    assert!(by_rule("new_asn")["detail"].as_str().unwrap().contains("AS64511 Elsewhere Networks"));
    // Events and exports carry country and network.
    let events = s.call("GET", &format!("/v1/events?key_id={id}&limit=10"), None).json();
    let newest = &events["data"][0];
    assert_eq!(
        (newest["country"].as_str(), newest["asn"].as_u64(), newest["as_org"].as_str()),
        (Some("BR"), Some(64_511), Some("Elsewhere Networks"))
    );
    let line = eventually(10, "an enriched line in the ECS file", || {
        let text = std::fs::read_to_string(s.dir.path().join("export/events.ndjson")).unwrap_or_default();
        text.lines().find(|l| l.contains("\"country_iso_code\":\"NL\"")).map(str::to_owned)
    });
    let doc: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["source"]["as"]["number"], 64_500);
    assert_eq!(doc["source"]["as"]["organization"]["name"], "Example Hosting NL");
    // A file that is not a MaxMind database is a configuration problem, named.
    std::fs::write(dir.path().join("bad.mmdb"), "not a database").unwrap();
    let out = std::process::Command::new(crate::util::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .env("KEYWARD_CONFIG", {
            let cfg = dir.path().join("bad.toml");
            std::fs::write(&cfg, format!("[geoip]\ncountry_db = \"{}\"\n", dir.path().join("bad.mmdb").display()))
                .unwrap();
            cfg
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("geoip.country_db: not a MaxMind database"), "{err}");
}

/// Email: a `mailto:` endpoint is sent through the configured SMTP relay from
/// the same outbox, with the summary as subject (issue 10).
#[test]
fn mailto_endpoints_get_the_alert_by_email() {
    let smtp = crate::util::SmtpSink::start();
    let config = format!(
        "[webhooks]\npoll_ms = 50\n\n[webhooks.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"keyward@example.com\"\n",
        smtp.port
    );
    let s = Server::start_full(&[], Some(&config));
    let hook = s.create("/v1/webhooks", json!({"url": "mailto:oncall@example.com", "events": ["alert.opened"]}));
    assert_eq!(hook["format"], "email");
    s.call("POST", "/v1/webhooks", Some(json!({"url": "mailto:not an address"}))).problem(400);
    s.call("POST", "/v1/webhooks", Some(json!({"url": "mailto:a@example.com", "format": "slack"}))).problem(400);
    let ks = keyspace(&s, "prod");
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    s.call("POST", "/v1/leaks", Some(json!({"keys": [key]}))).json();
    let mail = eventually(10, "the alert by email", || smtp.messages.lock().first().cloned());
    assert!(mail.contains("To: oncall@example.com") && mail.contains("From: keyward@example.com"), "{mail}");
    assert!(mail.contains("Subject: [keyward] keyward alert.opened: [critical] leak"), "{mail}");
    assert!(mail.contains(&id) && mail.contains("webhook-id: msg_"), "{mail}");
    assert!(!mail.contains(&key), "no key in the mail");
    let hook_id = hook["id"].as_str().unwrap();
    let delivered = eventually(10, "the delivery recorded", || {
        let d = s.call("GET", &format!("/v1/webhooks/{hook_id}/deliveries"), None).json();
        (d["data"][0]["status"] == "delivered").then_some(d)
    });
    assert_eq!(delivered["data"][0]["attempts"], 1);
}

/// Every message is written once per endpoint: a workspace has at most 100.
#[test]
fn endpoints_per_workspace_are_capped() {
    let s = Server::start();
    for i in 0..100 {
        s.create("/v1/webhooks", json!({"url": format!("http://127.0.0.1:9/hook/{i}")}));
    }
    let p = s.call("POST", "/v1/webhooks", Some(json!({"url": "http://127.0.0.1:9/one-more"}))).problem(409);
    assert!(p["detail"].as_str().unwrap().contains("at most 100"), "{p}");
}
