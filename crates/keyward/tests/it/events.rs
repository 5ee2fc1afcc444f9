//! Usage events end to end: one per verify, queries, reports, streaming,
//! metrics, exporters (file, HTTP sinks through an outage, a real rsyslog),
//! and the crash-loss bound.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Capture, Server};
use serde_json::{Value, json};

fn events(s: &Server, q: &str) -> Vec<Value> {
    let r = s.call("GET", &format!("/v1/events{q}"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].as_array().unwrap().clone()
}

/// Waits until `f` holds, for at most `secs`.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

#[test]
fn every_verify_is_one_event_and_queries_filter() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "owner_id": "acme", "scopes": ["read"]}));
    let root = s.root.clone();
    let mut bad = key.clone().into_bytes();
    let i = bad.len() - 3;
    bad[i] = if bad[i] == b'x' { b'y' } else { b'x' };
    let bad = String::from_utf8(bad).unwrap();
    let unknown = "kw_live_0123456789abcdefghijklmnopqrstuv000000";

    let r = s.raw(
        "POST",
        "/v1/keys/verify",
        Some(&root),
        Some(
            &json!({
                "key": key, "ip": "203.0.113.9", "method": "GET", "path": format!("/invoices/1?token={key}"),
                "user_agent": "shop/1.0",
            })
            .to_string(),
        ),
        &[("Content-Type", "application/json"), ("X-Request-Id", "order-1")],
    );
    assert_eq!(r.status, 200);
    s.verify_as(&root, json!({"key": key, "ip": "203.0.113.9", "method": "POST"}));
    s.verify_as(&root, json!({"key": bad, "ip": "198.51.100.1"}));
    s.verify_as(&root, json!({"key": bad, "ip": "198.51.100.1"}));
    s.verify_as(&root, json!({"key": "garbage", "ip": "198.51.100.1"}));

    let all = {
        let mut got = Vec::new();
        eventually(10, "5 events", || {
            got = events(&s, "");
            got.len() == 5
        });
        got
    };
    // Newest first.
    let first = &all[4];
    assert_eq!(first["request_id"], "order-1");
    assert_eq!(first["code"], "VALID");
    assert_eq!(first["key_id"], id.as_str());
    assert_eq!(first["owner_id"], "acme");
    assert_eq!(first["keyspace_id"], ks.as_str());
    assert_eq!(first["ip"], "203.0.113.9");
    assert_eq!(first["user_agent"], "shop/1.0");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/invoices/1", "the query string is not kept");
    assert!(first["key_hint"].as_str().unwrap().starts_with("kw_live_…"));
    assert!(first["fingerprint"].is_null());
    assert_eq!(all[3]["code"], "FORBIDDEN");
    assert_eq!(all[3]["error"], "missing scope: write");
    // Unmatched attempts carry a fingerprint, equal for equal strings, and no key.
    assert_eq!(all[2]["code"], "MALFORMED");
    assert!(all[2]["key_id"].is_null());
    assert_eq!(all[2]["fingerprint"], all[1]["fingerprint"]);
    assert_ne!(all[2]["fingerprint"], all[0]["fingerprint"]);
    assert_eq!(all[2]["fingerprint"].as_str().unwrap().len(), 16);
    let _ = unknown;

    assert_eq!(events(&s, &format!("?key_id={id}")).len(), 2);
    assert_eq!(events(&s, "?code=MALFORMED").len(), 3);
    assert_eq!(events(&s, "?ip=198.51.100.1&limit=2").len(), 2);
    assert_eq!(events(&s, "?owner_id=acme&code=VALID").len(), 1);
    let page = s.call("GET", "/v1/events?limit=2&order=asc", None).json();
    assert_eq!(page["data"][0]["request_id"], "order-1");
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = s.call("GET", &format!("/v1/events?limit=2&order=asc&cursor={next}"), None).json();
    assert_eq!(page2["data"][0]["code"], "MALFORMED");
    assert_eq!(events(&s, "?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z").len(), 0);

    // A usage report completes the event; the status class filter sees it.
    let r = s.call(
        "POST",
        "/v1/usage",
        Some(json!({"request_id": "order-1", "status": 201, "bytes_in": 120, "bytes_out": 2048, "latency_ms": 35})),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    eventually(10, "the usage report", || {
        let e = events(&s, "?status=2xx");
        e.len() == 1 && e[0]["status"] == 201 && e[0]["bytes_out"] == 2048 && e[0]["latency_ms"] == 35
    });
    s.call("POST", "/v1/usage", Some(json!({"request_id": "never-seen", "status": 200}))).problem(404);
    s.call("POST", "/v1/usage", Some(json!({"request_id": "order-1", "status": 999}))).problem(400);
    // A refused verify cannot have led to a 2xx (409, nothing recorded); its 403 is fine.
    let refused = all[3]["request_id"].as_str().unwrap();
    let p = s.call("POST", "/v1/usage", Some(json!({"request_id": refused, "status": 200}))).problem(409);
    assert!(p["detail"].as_str().unwrap().contains("refused the key"), "{p}");
    let r = s.call("POST", "/v1/usage", Some(json!({"request_id": refused, "status": 403})));
    assert_eq!(r.status, 202, "{}", r.text);

    // NDJSON streams the whole range, oldest first when asked.
    let r = s.raw("GET", "/v1/events?order=asc", Some(&root), None, &[("Accept", "application/x-ndjson")]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/x-ndjson"));
    let lines: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["request_id"], "order-1");

    // Bad filters are 400s.
    for q in
        ["?code=MAYBE", "?status=2yy", "?since=yesterday", "?order=sideways", "?cursor=x", "?limit=0", "?limit=5000"]
    {
        s.call("GET", &format!("/v1/events{q}"), None).problem(400);
    }

    // Roles and workspaces: a verifier may not read; another workspace sees nothing.
    let verifier =
        s.create("/v1/root-keys", json!({"name": "v", "role": "verifier"}))["key"].as_str().unwrap().to_owned();
    let auditor =
        s.create("/v1/root-keys", json!({"name": "a", "role": "auditor"}))["key"].as_str().unwrap().to_owned();
    s.call_as(&verifier, "GET", "/v1/events", None).problem(403);
    assert_eq!(s.call_as(&auditor, "GET", "/v1/events", None).json()["data"].as_array().unwrap().len(), 5);
    let other = s.create("/v1/workspaces", json!({"name": "b"}))["root_key"]["key"].as_str().unwrap().to_owned();
    assert_eq!(s.call_as(&other, "GET", "/v1/events", None).json()["data"].as_array().unwrap().len(), 0);
    s.call_as(&other, "POST", "/v1/usage", Some(json!({"request_id": "order-1", "status": 500}))).problem(404);
}

#[test]
fn metrics_are_prometheus_text_and_count_outcomes() {
    let s = Server::start();
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    let (revoked, revoked_key) = s.key(json!({"keyspace_id": ks}));
    let (disabled, _) = s.key(json!({"keyspace_id": ks}));
    s.call("POST", &format!("/v1/keys/{revoked}/revoke"), Some(json!({"reason": "compromised"})));
    s.call("PATCH", &format!("/v1/keys/{disabled}"), Some(json!({"enabled": false})));
    s.verify(&key);
    s.verify("nope");
    // A revoked key presented: the `used_after_end` rule opens a high alert.
    assert_eq!(s.code(&revoked_key), "REVOKED");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = s.raw("GET", "/metrics", None, None, &[]);
        if r.text.contains(r#"keyward_alerts_open{rule="used_after_end",severity="high"} 1"#) {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no open-alert gauge:\n{}", r.text);
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(r.status, 200);
    assert!(r.text.contains(r#"keyward_verifications_total{code="VALID"} 1"#), "{}", r.text);
    assert!(r.text.contains(r#"keyward_verifications_total{code="MALFORMED"} 1"#));
    // Every verify timed once; keys counted by status; no per-key label anywhere.
    assert!(r.text.contains("keyward_verify_duration_seconds_count 3\n"), "{}", r.text);
    assert!(r.text.contains("# TYPE keyward_verify_duration_seconds histogram"));
    for (status, n) in [("active", 1), ("disabled", 1), ("revoked", 1), ("expired", 0), ("rotated", 0)] {
        assert!(r.text.contains(&format!("keyward_keys{{status=\"{status}\"}} {n}\n")), "{status}: {}", r.text);
    }
    for id in [&revoked, &disabled] {
        assert!(!r.text.contains(id.as_str()), "no key id as a label");
    }
    assert!(r.text.contains("keyward_http_requests_total{route=\"/v1/keys/verify\",status=\"200\"}"));
    assert!(!r.text.contains(&key), "no key in metrics");
    if std::env::var("KEYWARD_SKIP_PROMTOOL").is_ok_and(|v| v == "1") {
        return;
    }
    assert!(
        have("promtool"),
        "this test checks /metrics with promtool: install it (Debian: apt-get install prometheus) or set KEYWARD_SKIP_PROMTOOL=1"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), r.text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    // promtool exits 0 when the text parses; lint warnings (e.g. counters' units) go to stdout.
    assert!(
        out.status.success(),
        "promtool rejected /metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_sinks_lose_nothing_through_an_outage() {
    let cap = Capture::start();
    let config = format!(
        r#"
[[sinks]]
name = "es"
kind = "elasticsearch"
url = "{u}"
index = "kw"
batch_size = 7

[[sinks]]
name = "splunk"
kind = "splunk"
url = "{u}"
token = "hec-token"

[[sinks]]
name = "hook"
kind = "http"
url = "{u}/ingest"
headers = {{ "X-Hook" = "yes" }}
"#,
        u = cap.url()
    );
    let mut s = Server::start_full(&[], Some(&config));
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    for _ in 0..10 {
        s.verify(&key);
    }
    // Outage: the endpoint answers 503; verifications go on.
    cap.down.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..15 {
        s.verify(&key);
    }
    eventually(10, "sinks to notice the outage", || {
        let r = s.raw("GET", "/readyz", None, None, &[]).json();
        r["sinks"].as_array().unwrap().iter().any(|h| h["up"] == false)
    });
    let ready = s.raw("GET", "/readyz", None, None, &[]);
    assert_eq!(ready.status, 200, "a sink outage does not make the node unready");
    // A restart during the outage keeps the backlog: the cursor is durable.
    s.restart();
    for _ in 0..5 {
        s.verify(&key);
    }
    cap.down.store(false, std::sync::atomic::Ordering::SeqCst);

    let ids_of = |path_part: &str, extract: &dyn Fn(&str) -> Vec<i64>| -> BTreeSet<i64> {
        cap.requests.lock().iter().filter(|(p, _, _)| p.contains(path_part)).flat_map(|(_, _, b)| extract(b)).collect()
    };
    let es_ids = |b: &str| -> Vec<i64> {
        b.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("event").is_some())
            .map(|v| v["keyward"]["event_id"].as_i64().unwrap())
            .collect()
    };
    let splunk_ids = |b: &str| -> Vec<i64> {
        b.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"]["keyward"]["event_id"].as_i64().unwrap())
            .collect()
    };
    let hook_ids = |b: &str| -> Vec<i64> {
        b.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["keyward"]["event_id"].as_i64().unwrap()).collect()
    };
    let want: BTreeSet<i64> = (1..=30).collect();
    eventually(30, "every sink to deliver all 30 events", || {
        ids_of("/_bulk", &es_ids) == want
            && ids_of("/services/collector/event", &splunk_ids) == want
            && ids_of("/ingest", &hook_ids) == want
    });
    let reqs = cap.requests.lock();
    let splunk = reqs.iter().find(|(p, _, _)| p.contains("collector")).unwrap();
    assert!(splunk.1.to_ascii_lowercase().contains("authorization: splunk hec-token"));
    let hook = reqs.iter().find(|(p, _, _)| p == "/ingest").unwrap();
    assert!(hook.1.to_ascii_lowercase().contains("x-hook: yes"));
    let bulk = reqs.iter().find(|(p, _, _)| p == "/_bulk").unwrap();
    let action: Value = serde_json::from_str(bulk.2.lines().next().unwrap()).unwrap();
    assert_eq!(action["create"]["_index"], "kw");
    assert!(action["create"]["_id"].as_str().is_some(), "re-sends are idempotent in Elasticsearch");
    // At-least-once: every event arrived; a re-sent batch may repeat some.
    let delivered: usize = reqs.iter().filter(|(p, _, _)| p == "/ingest").map(|(_, _, b)| b.lines().count()).sum();
    assert!(delivered >= 30);
    drop(reqs);
    let ready = s.raw("GET", "/readyz", None, None, &[]).json();
    assert!(ready["sinks"].as_array().unwrap().iter().all(|h| h["up"] == true && h["backlog"] == 0), "{ready}");
}

/// rsyslogd with a UDP and a TCP input on free ports, writing what it parsed.
struct Rsyslog {
    child: std::process::Child,
    out: std::path::PathBuf,
    udp: u16,
    tcp: u16,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tcp = free();
        let out = dir.path().join("parsed.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(&conf, format!(r#"
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="kw")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="kw")
template(name="fields" type="string" string="%protocol-version%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%pri%|%structured-data%|%msg%\n")
ruleset(name="kw") {{ action(type="omfile" file="{out}" template="fields") }}
"#, work = dir.path().display(), out = out.display())).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rsyslogd");
        // Wait for the TCP input to listen.
        eventually(10, "rsyslogd to listen", || std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok());
        Rsyslog { child, out, udp, tcp, _dir: dir }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_rsyslog_receives_and_parses_rfc5424() {
    if std::env::var("KEYWARD_SKIP_RSYSLOG").is_ok_and(|v| v == "1") {
        eprintln!("skipped: KEYWARD_SKIP_RSYSLOG=1");
        return;
    }
    assert!(
        have("rsyslogd"),
        "this test needs rsyslogd: install it (Debian: apt-get install rsyslog) or set KEYWARD_SKIP_RSYSLOG=1"
    );
    let rs = Rsyslog::start();
    let config = format!(
        r#"
[events]
hostname = "kw-test-host"

[[sinks]]
name = "syslog-udp"
kind = "syslog"
address = "127.0.0.1:{}"
protocol = "udp"

[[sinks]]
name = "syslog-tcp"
kind = "syslog"
address = "127.0.0.1:{}"
protocol = "tcp"
format = "cef"
facility = 10
"#,
        rs.udp, rs.tcp
    );
    let s = Server::start_full(&[], Some(&config));
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "owner_id": "o\"1]", "scopes": ["read"]}));
    s.verify_as(&s.root.clone(), json!({"key": key, "ip": "192.0.2.44", "method": "GET", "path": "/a"}));
    s.verify("not-a-key");

    let mut lines = Vec::new();
    eventually(20, "rsyslog to write 4 parsed messages", || {
        lines = std::fs::read_to_string(&rs.out).unwrap_or_default().lines().map(str::to_owned).collect();
        lines.len() >= 4
    });
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for l in &lines {
        let f: Vec<&str> = l.splitn(9, '|').collect();
        assert_eq!(f[0], "1", "RFC 5424 version: {l}");
        assert_eq!(f[2], "kw-test-host", "{l}");
        assert_eq!(f[3], "keyward", "{l}");
        assert!(f[1].starts_with("20"), "timestamp parsed: {l}");
        assert!(f[7].starts_with("[keyward@32473 "), "structured data parsed: {l}");
        assert!(!l.contains(&key));
    }
    let valid: Vec<&String> = lines.iter().filter(|l| l.split('|').nth(5) == Some("VALID")).collect();
    assert_eq!(valid.len(), 2, "one per transport: {lines:#?}");
    let udp = valid.iter().find(|l| l.contains("{\"@timestamp\"")).expect("the UDP sink sends ECS JSON");
    assert!(udp.contains(&format!("key_id=\"{id}\"")), "{udp}");
    assert!(udp.contains(r#"owner_id="o\"1\]""#), "SD escaping survives parsing: {udp}");
    assert_eq!(udp.split('|').nth(6), Some("134"), "local0.info");
    let tcp = valid.iter().find(|l| l.contains("CEF:0|keyward|keyward|")).expect("the TCP sink sends CEF");
    assert_eq!(tcp.split('|').nth(6), Some("86"), "authpriv.info");
    assert!(lines.iter().any(|l| l.split('|').nth(5) == Some("MALFORMED")));
}

#[test]
fn files_in_ecs_and_cef_hold_every_event() {
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
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    for _ in 0..3 {
        s.verify(&key);
    }
    let ecs = s.dir.path().join("export/events.ndjson");
    let cef = s.dir.path().join("export/events.cef");
    eventually(10, "both files to hold 3 events", || {
        std::fs::read_to_string(&ecs).map(|t| t.lines().count() == 3).unwrap_or(false)
            && std::fs::read_to_string(&cef).map(|t| t.lines().count() == 3).unwrap_or(false)
    });
    for line in std::fs::read_to_string(&ecs).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"]["outcome"], "success");
        assert_eq!(v["ecs"]["version"], "8.11.0");
        assert!(v["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert!(std::fs::read_to_string(&cef).unwrap().lines().all(|l| l.starts_with("CEF:0|keyward|keyward|")));
}

/// kill -9 under load loses at most the events of the last flush interval:
/// every lost event belongs to a verify acknowledged after the last batch the
/// server reported durable. Events are matched to verifies by request id.
#[test]
fn a_crash_loses_at_most_the_last_flush_interval() {
    const FLUSH_MS: u64 = 100;
    let s = Server::start_with(&[("KEYWARD_EVENTS_FLUSH_MS", &FLUSH_MS.to_string())]);
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks, "ratelimits": []}));
    let s = std::sync::Arc::new(parking_lot::Mutex::new(s));
    let url = s.lock().url("/v1/keys/verify");
    let root = s.lock().root.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unix_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // (request id, when the verify was acknowledged)
    let acked: std::sync::Arc<parking_lot::Mutex<Vec<(String, i64)>>> = Default::default();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, root, key, stop, acked) = (url.clone(), root.clone(), key.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let rid = format!("load-{t}-{n}");
                    let r = ureq::post(&url)
                        .timeout(Duration::from_secs(2))
                        .set("Authorization", &format!("Bearer {root}"))
                        .set("X-Request-Id", &rid)
                        .send_json(json!({"key": key}));
                    if r.is_ok_and(|r| r.status() == 200) {
                        acked.lock().push((rid, unix_ms()));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let durable = {
        let s = s.lock();
        let r = s.raw("GET", "/readyz", None, None, &[]).json();
        keyward_core::time::parse_rfc3339(r["events"]["durable_through"].as_str().unwrap()).unwrap()
    };
    s.lock().crash_and_restart();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let s = s.lock();
    let stored: BTreeSet<String> = s.stored_request_ids();
    let acked = acked.lock();
    // Verifies acknowledged by the first process (the second one starts empty of load ids only after restart).
    let lost: Vec<&(String, i64)> = acked.iter().filter(|(rid, _)| !stored.contains(rid)).collect();
    let after_durable = acked.iter().filter(|(_, t)| *t >= durable - 20).count();
    eprintln!(
        "kill -9 under load: {} verifies acknowledged, {} events stored, {} lost, {after_durable} acknowledged after the last durable batch ({FLUSH_MS} ms interval)",
        acked.len(),
        stored.len(),
        lost.len()
    );
    assert!(acked.len() > 100, "the load was real");
    for (rid, t) in &lost {
        assert!(
            *t >= durable - 20,
            "event {rid} was lost though acknowledged at {t}, before the durable point {durable}"
        );
    }
}

#[test]
fn keyspaces_can_pseudonymize_source_addresses() {
    let s = Server::start();
    let private =
        s.create("/v1/keyspaces", json!({"name": "eu", "pseudonymize_ips": true}))["id"].as_str().unwrap().to_owned();
    let plain = s.keyspace();
    let (pid, pkey) = s.key(json!({"keyspace_id": private}));
    let (_, key) = s.key(json!({"keyspace_id": plain}));
    let root = s.root.clone();
    for _ in 0..2 {
        s.verify_as(&root, json!({"key": pkey, "ip": "198.51.100.23"}));
    }
    s.verify_as(&root, json!({"key": key, "ip": "198.51.100.23"}));
    let mut got = Vec::new();
    eventually(10, "3 events", || {
        got = events(&s, "?order=asc");
        got.len() == 3
    });
    let anon = got[0]["ip"].as_str().unwrap();
    assert!(anon.starts_with("anon:") && anon.len() == 21, "{anon}");
    assert_eq!(got[1]["ip"], anon, "the same address gives the same pseudonym");
    assert_eq!(got[2]["ip"], "198.51.100.23");
    // Searching by the address in clear finds both forms.
    assert_eq!(events(&s, "?ip=198.51.100.23").len(), 3);
    assert_eq!(events(&s, &format!("?ip=198.51.100.23&key_id={pid}")).len(), 2);
    let ks = s.call("GET", &format!("/v1/keyspaces/{private}"), None).json();
    assert_eq!(ks["pseudonymize_ips"], true);
}

/// HTTPS endpoints: certificates are verified (a self-signed endpoint fails
/// until its CA is given with `ca_file`), and events then arrive over TLS.
#[test]
fn https_sinks_verify_the_endpoint_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a leaf certificate for localhost signed by it.
    let ca = crate::util::TestCa::new(dir.path());
    let (cert, key) = ca.leaf("cert", false);
    let cap = Capture::start_tls(&cert, &key);
    let config = format!(
        r#"
[[sinks]]
name = "trusted"
kind = "http"
url = "{u}/ingest"
ca_file = "{ca}"

[[sinks]]
name = "untrusted"
kind = "splunk"
url = "{u}"
token = "t"
"#,
        u = cap.https_url(),
        ca = dir.path().join("ca.pem").display()
    );
    let s = Server::start_full(&[], Some(&config));
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    for _ in 0..3 {
        s.verify(&key);
    }
    eventually(20, "3 events over TLS and the untrusted sink failing", || {
        let n: usize = cap.requests.lock().iter().map(|(_, _, b)| b.lines().count()).sum();
        let ready = s.raw("GET", "/readyz", None, None, &[]).json();
        let untrusted = ready["sinks"].as_array().unwrap().iter().find(|h| h["name"] == "untrusted").cloned().unwrap();
        n == 3 && untrusted["up"] == false
    });
    let ready = s.raw("GET", "/readyz", None, None, &[]).json();
    let untrusted = ready["sinks"].as_array().unwrap().iter().find(|h| h["name"] == "untrusted").cloned().unwrap();
    assert!(untrusted["last_error"].as_str().unwrap().to_lowercase().contains("certificate"), "{untrusted}");
    assert!(cap.requests.lock().iter().all(|(p, _, _)| p == "/ingest"), "nothing reached the endpoint unverified");
    // A bad CA file is a configuration error, named.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("k.toml"),
        "[[sinks]]\nname = \"x\"\nkind = \"http\"\nurl = \"https://localhost:1\"\nca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let out = Command::new(crate::util::BIN)
        .args(["serve", "--config"])
        .arg(bad.path().join("k.toml"))
        .arg("--data-dir")
        .arg(bad.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sinks[0].ca_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
