//! Regression tests for defects found by attacking keyward (issue 8). Each
//! test is named for the issue and failed before its fix.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Server, contains, files_under};

/// `/healthz` over a new connection from `source` (another loopback address
/// than the attackers' where the per-address cap matters); returns how long it took.
fn healthz_from(s: &Server, source: &str) -> Duration {
    let started = Instant::now();
    let sock = socket2_connect(source, s.port);
    let mut sock = sock.expect("connecting for /healthz");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = sock.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "healthz answered {out:?}");
    started.elapsed()
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source`
/// (bound before connecting, which std cannot do; tokio's socket can).
fn socket2_connect(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
        let stream = sock.connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let std = stream.into_std()?;
        std.set_nonblocking(false)?;
        Ok(std)
    })
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], s.port))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Whether the server closed `c` (EOF or reset) within `within`.
fn closed_within(c: &TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let mut reader = c;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn issue_8_path_rules_cannot_freeze_the_server() {
    let s = Server::start();
    let twelve = format!("{}/x", "/**".repeat(12));
    let ks = s.call(
        "POST",
        "/v1/keyspaces",
        Some(json!({"name": "p", "path_rules": [{"pattern": twelve, "scopes": ["admin"]}]})),
    );
    assert_eq!(ks.status, 201, "{}", ks.text);
    // Stored in normal form: twelve `**` in a row are one.
    assert_eq!(ks.json()["path_rules"][0]["pattern"], "/**/x");
    let ks = ks.json()["id"].as_str().unwrap().to_owned();
    let (_, key) = s.key(json!({"keyspace_id": ks, "scopes": ["read"]}));

    // Patterns past the bounds are refused with the rule that was broken.
    let five = "/**/a/**/b/**/c/**/d/**/e";
    let p = s.call(
        "POST",
        "/v1/keyspaces",
        Some(json!({"name": "q", "path_rules": [{"pattern": five, "scopes": ["admin"]}]})),
    );
    assert!(p.problem(400)["detail"].as_str().unwrap().contains("path_rules[0].pattern may hold ** at most 4 times"));
    let mixed = s.call(
        "POST",
        "/v1/keyspaces",
        Some(json!({"name": "q", "path_rules": [{"pattern": "/a*b", "scopes": ["admin"]}]})),
    );
    mixed.problem(400);

    // The paths that took 56 s and 8.7 s: now answered at once (or refused
    // for their length), and /healthz keeps answering meanwhile.
    let started = Instant::now();
    let twenty = "/a".repeat(20);
    let r = s.verify_as(&s.root.clone(), json!({"key": key, "method": "GET", "path": twenty}));
    assert_eq!(r["code"], "VALID", "{r}");
    let r =
        s.verify_as(&s.root.clone(), json!({"key": key, "method": "GET", "path": format!("{}/x", "/a".repeat(255))}));
    assert_eq!(r["code"], "FORBIDDEN", "{r}");
    let long = s.call("POST", "/v1/keys/verify", Some(json!({"key": key, "path": "/a".repeat(2040)})));
    assert!(long.problem(400)["detail"].as_str().unwrap().contains("at most 256 segments"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(healthz_from(&s, "127.0.0.1") < Duration::from_secs(1));
}

#[test]
fn issue_8_idle_and_half_sent_connections_are_timed_out() {
    let config = r#"
[http]
header_read_timeout_ms = 1000
body_read_timeout_ms = 1000
idle_timeout_ms = 3000
"#;
    let s = Server::start_full(&[], Some(config));
    // Many connections that send nothing, and slowloris clients that send a
    // header line now and then but never finish.
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&s)).collect();
    let mut slow: Vec<TcpStream> = (0..20).map(|_| connect(&s)).collect();
    for c in &mut slow {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    for _ in 0..3 {
        for c in &mut slow {
            let _ = c.write_all(b"X-Slow: 1\r\n");
        }
        let took = healthz_from(&s, "127.0.0.1");
        assert!(took < Duration::from_secs(1), "/healthz took {took:?} under slow clients");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The head deadline closes both kinds.
    for c in idle.iter().chain(slow.iter()) {
        assert!(closed_within(c, Duration::from_secs(3)), "a connection outlived the head deadline");
    }

    // A kept-alive connection that goes quiet after a response is closed too.
    let mut kept = connect(&s);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    assert!(kept.read(&mut buf).unwrap() > 0);
    assert!(closed_within(&kept, Duration::from_secs(3)), "an idle keep-alive connection stayed open");

    // A body that stalls is answered 408 problem+json, not 503.
    let mut c = connect(&s);
    let head = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\":",
        s.root
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("application/problem+json") && out.contains("stalled"), "{out}");
}

#[test]
fn issue_8_connections_are_capped_per_address_and_in_all() {
    let config = r#"
[http]
max_connections_per_ip = 50
max_connections = 80
"#;
    let s = Server::start_full(&[], Some(config));
    let conns: Vec<TcpStream> = (0..70).map(|_| connect(&s)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let closed = conns.iter().filter(|c| closed_within(c, Duration::from_millis(20))).count();
    // 50 kept, the other 20 closed at once (well before the 10 s head deadline);
    // one more when the harness's pooled keep-alive connection still counts.
    assert!((20..=21).contains(&closed), "{closed} connections closed by the per-address cap");
    // Another address still gets in, up to the total cap (50 + 30 = 80).
    let mut others: Vec<TcpStream> = (0..29).map(|_| socket2_connect("127.0.0.2", s.port).unwrap()).collect();
    assert!(healthz_from(&s, "127.0.0.3") < Duration::from_secs(1));
    // Until the server has seen that connection close (slow on a loaded machine:
    // the 80th would be refused and the 81st let in, as the fresh-clone run once saw).
    std::thread::sleep(Duration::from_millis(600));
    others.push(socket2_connect("127.0.0.2", s.port).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let over = socket2_connect("127.0.0.4", s.port).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(closed_within(&over, Duration::from_millis(500)), "the total cap let an 81st connection in");
    drop(others);
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    // Freed slots are usable again.
    assert!(healthz_from(&s, "127.0.0.1") < Duration::from_secs(1));
    let metrics = s.raw("GET", "/metrics", None, None, &[]).text;
    assert!(
        metrics.contains(&format!("keyward_http_connections_refused_total{{reason=\"per_ip\"}} {closed}")),
        "{metrics}"
    );
    assert!(metrics.contains("keyward_http_connections_refused_total{reason=\"total\"} 1"), "{metrics}");
}

/// Every output of the server, as bytes: the data dir, sink files, the log.
fn outputs(s: &Server) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> =
        files_under(s.dir.path()).into_iter().map(|(p, b)| (p.display().to_string(), b)).collect();
    all.push(("server log".into(), s.log.lock().clone().into_bytes()));
    all
}

fn body_of(key: &str) -> &str {
    &key[key.rfind('_').unwrap() + 1..]
}

#[test]
fn issue_8_key_material_never_reaches_events_sinks_or_logs() {
    let config = r#"
[[sinks]]
name = "ecs"
kind = "file"
path = "{dir}/export/events.ndjson"
"#;
    let mut s = Server::start_full(&[("KEYWARD_EVENTS_FLUSH_MS", "50")], Some(config));
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks, "scopes": ["read"]}));
    let (_, other) = s.key(json!({"keyspace_id": ks}));
    // An imported key of another system: no checksum, known only by prefix.
    let imported = "legacy_Zq3vYh8KpW2mXr7TnB4sLd9Fc";
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(imported.as_bytes()))
    };
    let r = s.call(
        "POST",
        "/v1/keys/import",
        Some(json!({"keyspace_id": ks, "keys": [{"hash": digest, "prefix": "legacy_", "scopes": ["read"]}]})),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // A key as a scope name: refused, and not repeated.
    let r = s.call("POST", "/v1/keys/verify", Some(json!({"key": key, "scopes": [other]})));
    let p = r.problem(400);
    assert!(!r.text.contains(body_of(&other)), "{p}");

    // A key as the request id: replaced by one of ours.
    let r = s.raw(
        "POST",
        "/v1/keys/verify",
        Some(&s.root.clone()),
        Some(&json!({"key": key}).to_string()),
        &[("Content-Type", "application/json"), ("X-Request-Id", &other)],
    );
    assert_eq!(r.status, 200);
    let rid = r.header("x-request-id").unwrap().to_owned();
    assert!(rid.starts_with("req_") && !rid.contains(body_of(&other)), "{rid}");
    // A plain id of the caller's is kept.
    let r = s.raw("GET", "/healthz", None, None, &[("X-Request-Id", "trace-0af7651916cd43dd")]);
    assert_eq!(r.header("x-request-id"), Some("trace-0af7651916cd43dd"));

    // Keys embedded in paths and user agents, every way the attack found.
    let body = body_of(&other);
    let pct: String = other.bytes().map(|b| format!("%{b:02X}")).collect();
    let paths = [
        format!("/api/token_{other}"),
        format!("/api/{other}abc"),
        format!("/api/{}", other.replace('_', "%5F")),
        format!("/api/{pct}"),
        format!("/api/{body}"),
        format!("/api/x{imported}y"),
        format!("/api/{other}?q={other}"),
    ];
    for p in &paths {
        let d = s.verify_as(
            &s.root.clone(),
            json!({"key": key, "method": "GET", "path": p, "user_agent": format!("k_{other} {imported}")}),
        );
        assert_eq!(d["code"], "VALID", "{d}");
    }
    // A verify of an unknown key whose message would name it.
    s.verify_as(&s.root.clone(), json!({"key": format!("{other}x"), "path": format!("/{other}")}));

    // Everything durable and shipped, then stop cleanly (logs flushed).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = s.call("GET", "/v1/events?limit=100", None).json();
        if events["data"].as_array().unwrap().len() > paths.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let listed = events["data"].as_array().unwrap();
    assert!(listed.len() > paths.len(), "{events}");
    for e in listed.iter().filter(|e| e["path"].is_string()) {
        let path = e["path"].as_str().unwrap();
        assert!(path.contains("[key]") || !path.starts_with("/api"), "{path}");
    }
    std::thread::sleep(Duration::from_millis(500));
    s.stop();
    for (name, bytes) in outputs(&s) {
        for secret in [body, &other[..other.len() - 4], imported, &imported["legacy_".len()..]] {
            assert!(!contains(&bytes, secret), "{name} holds key material {secret:?}");
        }
        let encoded_body: String = body.bytes().map(|b| format!("%{b:02X}")).collect();
        assert!(!contains(&bytes, &encoded_body), "{name} holds a percent-encoded key");
    }
    // The responses too (the creating ones excepted).
    for (creating, text) in s.bodies.lock().iter() {
        if !creating {
            assert!(!text.contains(body), "a response holds the key: {text}");
        }
    }
}

#[test]
fn issue_8_problem_details_never_echo_keys() {
    let s = Server::start();
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    let body = body_of(&key).to_owned();
    let cases: Vec<Value> = vec![
        json!({"keyspace_id": ks, "ip_allowlist": [key]}),
        json!({"keyspace_id": ks, "scopes": [format!("x:{key}!")]}),
        json!({"keyspace_id": ks, "scopes": [key]}),
        json!({"keyspace_id": ks, key.clone(): 1}),
        json!({"keyspace_id": ks, "ratelimits": [{"name": "m", "limit": 1, "window_ms": 1000, key.clone(): 1}]}),
        json!({"keyspace_id": ks, "meta": "x", "owner_id": key}),
        json!({"keyspace_id": ks, "owner_id": key}),
        json!({"keyspace_id": ks, "name": format!("for {key}")}),
        json!({"keyspace_id": ks, "meta": {"note": key}}),
    ];
    for c in cases {
        let r = s.call("POST", "/v1/keys", Some(c.clone()));
        // 400 for content, 422 for a body of the wrong shape.
        let p = r.problem(if r.status == 422 { 422 } else { 400 });
        assert!(!r.text.contains(&body), "{c} → {p}");
        assert!(!p["detail"].as_str().unwrap().is_empty());
    }
    let r = s.call("POST", "/v1/keys", Some(json!({"keyspace_id": ks, "ip_allowlist": [key]})));
    assert!(
        r.problem(400)["detail"].as_str().unwrap().starts_with("ip_allowlist[0]: the value is not an IPv4"),
        "{}",
        r.text
    );
}

#[test]
fn issue_8_operation_ids_are_unique() {
    let s = Server::start();
    let doc = s.raw("GET", "/openapi.json", None, None, &[]).json();
    let mut ids = Vec::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            ids.push(op["operationId"].as_str().expect("every operation has an id").to_owned());
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "repeated operationIds in {ids:?}");
    // /v1/events documents both of its answers.
    let content = &doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"];
    assert!(content["application/json"].is_object() && content["application/x-ndjson"].is_object(), "{content}");
}

#[test]
fn issue_8_smaller_defects() {
    let s = Server::start();
    // An over-long URI gets a problem body.
    let r = s.raw("GET", &format!("/healthz?x={}", "a".repeat(9000)), None, None, &[]);
    r.problem(414);
    // Cursors that no list returned are refused everywhere.
    s.call("GET", "/v1/incidents?cursor=%00", None).problem(400);
    s.call("GET", "/v1/events?cursor=-5", None).problem(400);
    s.call("GET", "/v1/audit?cursor=-1", None).problem(400);
    // The Bearer scheme is case-insensitive.
    for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
        let r = s.raw("GET", "/v1/keyspaces", None, None, &[("Authorization", &format!("{scheme} {}", s.root))]);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text);
    }
    // A revocation names an incident that exists, or is refused.
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let r = s.call(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(json!({"reason": "leaked", "incident": "inc_nonexistent"})),
    );
    r.problem(400);
    let r = s.call(
        "POST",
        &format!("/v1/keys/{id}/revoke"),
        Some(json!({"reason": "leaked", "incident": "inc_01M8SQNS84yWAduDhe83"})),
    );
    assert!(r.problem(400)["detail"].as_str().unwrap().contains("names no incident"));
    let inc = s.call("POST", "/v1/incidents", Some(json!({"title": "leak", "key_ids": [id]})));
    assert_eq!(inc.status, 201, "{}", inc.text);
    let inc = inc.json()["id"].as_str().unwrap().to_owned();
    let r = s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "leaked", "incident": inc})));
    assert_eq!(r.status, 200, "{}", r.text);
    // An import prefix is a prefix: short and plain, never a key.
    let digest = "ab".repeat(32);
    for prefix in [key.as_str(), "has space", "", "x\u{7f}"] {
        let r = s.call(
            "POST",
            "/v1/keys/import",
            Some(json!({"keyspace_id": ks, "keys": [{"hash": digest, "prefix": prefix}]})),
        );
        r.problem(400);
    }
    // cost is bounded as documented.
    let (_, k2) = s.key(json!({"keyspace_id": ks}));
    s.call("POST", "/v1/keys/verify", Some(json!({"key": k2, "cost": 4_000_000_000u64}))).problem(400);
    let doc = s.raw("GET", "/openapi.json", None, None, &[]).json();
    let cost = &doc["components"]["schemas"]["VerifyRequest"]["properties"]["cost"];
    assert_eq!(cost["maximum"], 1_000_000, "{cost}");
}

#[test]
fn issue_8_imports_say_how_many_keys_have_no_scope() {
    let s = Server::start();
    let ks = s.keyspace();
    let keys: Vec<Value> = (0..3u8)
        .map(|i| {
            let mut k = json!({"hash": format!("{:02x}", i + 1).repeat(32), "prefix": "old_"});
            if i == 0 {
                k["scopes"] = json!(["read"]);
            }
            k
        })
        .collect();
    let r = s.call("POST", "/v1/keys/import", Some(json!({"keyspace_id": ks, "keys": keys})));
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(v["without_scopes"], 2, "{v}");
    assert!(v["warning"].as_str().unwrap().contains("2 imported keys have no scope"), "{v}");
}

/// A data dir on a small tmpfs of its own, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this test mounts a small tmpfs to fill a disk; run the suite as root (CI does)"
        );
        SmallDisk { dir }
    }

    /// Fills the disk with a file, leaving nothing free.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.dir.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn issue_8_a_full_disk_answers_503_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount("64m");
    let data = disk.dir.path().join("data");
    let mut s = Server::start_at(&data, &[("KEYWARD_EVENTS_FLUSH_MS", "50")]);
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    disk.fill();
    // Management writes fail cleanly: 503 with what to do, never 500.
    let mut created = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let r = s.raw_any(
            "POST",
            "/v1/keys",
            Some(&s.root.clone()),
            Some(&json!({"keyspace_id": ks, "name": format!("k{i}"), "meta": {"pad": "x".repeat(8000)}}).to_string()),
            &[("Content-Type", "application/json")],
        );
        if r.status == 201 {
            created.push(r.json()["id"].as_str().unwrap().to_owned());
        } else {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("a full disk refused a write");
    let p = refused.problem(503);
    assert!(p["detail"].as_str().unwrap().contains("disk is full"), "{p}");
    // Verifications go on (memory), but their events cannot be written:
    // the node says it is not ready, and why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(s.verify(&key)["code"], "VALID");
        let r = s.raw_any("GET", "/readyz", None, None, &[]);
        if r.status == 503 {
            assert!(r.text.contains("disk is full"), "{}", r.text);
            break;
        }
        assert!(Instant::now() < deadline, "readyz stayed ready with a full disk: {}", r.text);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Space comes back: so do writes and readiness; every acknowledged key is there.
    disk.free();
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.raw_any("GET", "/readyz", None, None, &[]).status != 200 {
        assert!(Instant::now() < deadline, "readyz did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = s.call("POST", "/v1/keys", Some(json!({"keyspace_id": ks, "name": "after"})));
    assert_eq!(r.status, 201, "{}", r.text);
    for id in &created {
        assert_eq!(s.call("GET", &format!("/v1/keys/{id}"), None).status, 200);
    }
    assert_eq!(s.call("GET", "/v1/audit/verify", None).json()["ok"], true);
    s.stop();
}

/// A client that writes a whole oversized body before reading (as ureq and
/// most HTTP libraries do) gets its 413, not a reset connection (found by a
/// CI run of issue 9: `POST /v1/keyspaces` with 100 KB broke the pipe). On
/// an idle loopback the kernel's buffers usually absorb the body either way;
/// the race shows under load, so this also pins the 413's detail.
#[test]
fn issue_9_an_oversized_body_gets_its_413_not_a_broken_pipe() {
    let s = Server::start();
    for size in [900_000, 100_000] {
        let body = format!(r#"{{"name": "{}"}}"#, "x".repeat(size));
        let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /v1/keyspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            s.root,
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        let written = conn.write_all(body.as_bytes());
        assert!(written.is_ok(), "{size}: the server reads the whole body: {written:?}");
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{size}: {:?}", &answer[..answer.len().min(200)]);
        assert!(answer.contains("at most 65536"), "the detail says the limit: {answer}");
    }
}
