//! End-to-end tests of the HTTP API against the real binary.

use crate::util::{Server, contains, files_under};
use serde_json::json;

fn change_one_char(key: &str) -> String {
    let mut b = key.as_bytes().to_vec();
    let i = b.len() - 12;
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

#[test]
fn verify_follows_the_key_lifecycle() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "owner_id": "acme", "name": "ci", "meta": {"plan": "pro"}}));

    let v = s.verify(&key);
    assert_eq!(v["valid"], true);
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["owner_id"], "acme");
    assert_eq!(v["meta"]["plan"], "pro");
    assert_eq!(v["deprecated"], false);

    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": false})));
    assert_eq!(s.code(&key), "DISABLED");
    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": true})));
    assert_eq!(s.code(&key), "VALID");

    // An expiry in the past takes effect on the very next verify, and null removes it.
    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"expires_at": "2020-01-01T00:00:00Z"})));
    assert_eq!(s.code(&key), "EXPIRED");
    assert_eq!(s.call("GET", &format!("/v1/keys/{id}"), None).json()["status"], "expired");
    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"expires_at": null})));
    assert_eq!(s.code(&key), "VALID");

    let (_, short) = s.key(json!({"keyspace_id": ks, "ttl_ms": 1500}));
    assert_eq!(s.code(&short), "VALID");
    std::thread::sleep(std::time::Duration::from_millis(1600));
    assert_eq!(s.code(&short), "EXPIRED");

    assert_eq!(s.code(&change_one_char(&key)), "MALFORMED");
    assert_eq!(s.code("not a key at all"), "MALFORMED");
    assert_eq!(s.code(""), "MALFORMED");

    // A well-formed key that was never issued (made by a second server).
    let other = Server::start();
    let other_ks = other.keyspace();
    let (_, foreign) = other.key(json!({"keyspace_id": other_ks}));
    assert_eq!(s.code(&foreign), "NOT_FOUND");
    assert_eq!(s.code(&foreign), "NOT_FOUND", "answered again from the negative cache");

    let r =
        s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "compromised", "note": "in a gist"})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(s.code(&key), "REVOKED");
    s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "other"}))).problem(409);
    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": true}))).problem(409);
    assert_eq!(s.code(&key), "REVOKED");
}

#[test]
fn a_restart_keeps_everything() {
    let mut s = Server::start_with(&[("KEYWARD_LAST_USED_FLUSH_MS", "100")]);
    let ks = s.keyspace();
    let (live_id, live) = s.key(json!({"keyspace_id": ks, "owner_id": "o1"}));
    let (dead_id, dead) = s.key(json!({"keyspace_id": ks}));
    let (off_id, off) = s.key(json!({"keyspace_id": ks}));
    s.call("POST", &format!("/v1/keys/{dead_id}/revoke"), Some(json!({"reason": "unused"})));
    s.call("PATCH", &format!("/v1/keys/{off_id}"), Some(json!({"enabled": false})));
    s.verify_as(&s.root.clone(), json!({"key": live, "ip": "198.51.100.7"}));

    s.restart();
    assert_eq!(s.code(&live), "VALID");
    assert_eq!(s.code(&dead), "REVOKED");
    assert_eq!(s.code(&off), "DISABLED");
    let k = s.call("GET", &format!("/v1/keys/{live_id}"), None).json();
    assert_eq!(k["owner_id"], "o1");
    assert_eq!(k["last_used_ip"], "198.51.100.7", "flushed at shutdown: {k}");
    assert!(k["last_used_at"].is_string());
    assert_eq!(s.call("GET", "/v1/keyspaces", None).json().as_array().unwrap().len(), 1);
    assert_eq!(s.call("GET", "/v1/audit/verify", None).json()["ok"], true);
}

#[test]
fn last_use_is_flushed_periodically() {
    let s = Server::start_with(&[("KEYWARD_LAST_USED_FLUSH_MS", "100")]);
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    assert!(s.call("GET", &format!("/v1/keys/{id}"), None).json()["last_used_at"].is_null());
    s.verify_as(&s.root.clone(), json!({"key": key, "ip": "2001:db8::1"}));
    let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
    assert_eq!(k["last_used_ip"], "2001:db8::1");
    // Written to the SQLite file by the flusher, without a shutdown.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !rusqlite_free_read(&s.data_dir().join("keyward.db"), &id) {
        assert!(std::time::Instant::now() < deadline, "last_used_at never reached the database");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Reads the key row with the sqlite3 shell if present, else trusts the
/// WAL bytes: the id and the address must both be in the files.
fn rusqlite_free_read(db: &std::path::Path, id: &str) -> bool {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(format!("SELECT last_used_ip FROM keys WHERE id = '{id}' AND last_used_at IS NOT NULL"))
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim() == "2001:db8::1",
        _ => files_under(db.parent().unwrap()).iter().any(|(_, b)| contains(b, "2001:db8::1")),
    }
}

#[test]
fn roles_limit_what_root_keys_may_do() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let mk =
        |role: &str| s.create("/v1/root-keys", json!({"name": role, "role": role}))["key"].as_str().unwrap().to_owned();
    let auditor = mk("auditor");
    let verifier = mk("verifier");
    let manager = mk("key_manager");

    // Auditor: reads, never writes, never verifies.
    let r = s.call_as(&auditor, "POST", "/v1/keys", Some(json!({"keyspace_id": ks})));
    assert!(r.problem(403)["detail"].as_str().unwrap().contains("auditor"));
    s.call_as(&auditor, "POST", "/v1/keyspaces", Some(json!({"name": "x"}))).problem(403);
    s.call_as(&auditor, "PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": false}))).problem(403);
    s.call_as(&auditor, "POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "other"}))).problem(403);
    s.call_as(&auditor, "POST", "/v1/keys/verify", Some(json!({"key": key}))).problem(403);
    s.call_as(&auditor, "POST", "/v1/root-keys", Some(json!({"name": "x", "role": "admin"}))).problem(403);
    assert_eq!(s.call_as(&auditor, "GET", &format!("/v1/keys/{id}"), None).status, 200);
    assert_eq!(s.call_as(&auditor, "GET", "/v1/audit", None).status, 200);

    // Verifier: verifies only.
    assert_eq!(s.verify_as(&verifier, json!({"key": key}))["code"], "VALID");
    s.call_as(&verifier, "GET", "/v1/keys", None).problem(403);
    s.call_as(&verifier, "GET", "/v1/audit", None).problem(403);

    // Key manager: keys, but not root keys, audit or verify.
    assert_eq!(s.call_as(&manager, "PATCH", &format!("/v1/keys/{id}"), Some(json!({"name": "renamed"}))).status, 200);
    s.call_as(&manager, "GET", "/v1/audit", None).problem(403);
    s.call_as(&manager, "GET", "/v1/root-keys", None).problem(403);
    s.call_as(&manager, "POST", "/v1/keys/verify", Some(json!({"key": key}))).problem(403);

    // A revoked root key stops working at once; the last admin key cannot go.
    let vid = s
        .call("GET", "/v1/root-keys", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "verifier")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.call("DELETE", &format!("/v1/root-keys/{vid}"), None).status, 200);
    s.call_as(&verifier, "POST", "/v1/keys/verify", Some(json!({"key": key}))).problem(401);
    let admin_id =
        s.call("GET", "/v1/root-keys", None).json().as_array().unwrap().iter().find(|r| r["role"] == "admin").unwrap()
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    s.call("DELETE", &format!("/v1/root-keys/{admin_id}"), None).problem(409);

    // No or bad credentials: 401 with a hint, never an echo of what was sent.
    let r = s.raw("GET", "/v1/keys", None, None, &[]);
    r.problem(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = s.raw("GET", "/v1/keys", Some(&key), None, &[]);
    assert!(!r.text.contains(&key));
    r.problem(401);
    s.raw("GET", "/v1/keys", Some("kw_root_garbage"), None, &[]).problem(401);
}

#[test]
fn workspaces_are_isolated() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let ws = s.create("/v1/workspaces", json!({"name": "tenant b"}));
    let other = ws["root_key"]["key"].as_str().unwrap().to_owned();
    assert_eq!(ws["root_key"]["role"], "admin");

    s.call_as(&other, "GET", &format!("/v1/keys/{id}"), None).problem(404);
    s.call_as(&other, "GET", &format!("/v1/keyspaces/{ks}"), None).problem(404);
    s.call_as(&other, "PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": false}))).problem(404);
    s.call_as(&other, "POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "other"}))).problem(404);
    s.call_as(&other, "POST", "/v1/keys", Some(json!({"keyspace_id": ks}))).problem(404);
    assert_eq!(s.call_as(&other, "GET", "/v1/keys", None).json()["data"].as_array().unwrap().len(), 0);
    assert_eq!(s.call_as(&other, "GET", "/v1/keyspaces", None).json().as_array().unwrap().len(), 0);
    assert_eq!(s.call_as(&other, "GET", "/v1/root-keys", None).json().as_array().unwrap().len(), 1);
    assert!(
        s.call_as(&other, "GET", "/v1/audit", None).json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["target_id"] != id.as_str())
    );
    assert_eq!(s.verify_as(&other, json!({"key": key}))["code"], "NOT_FOUND");
    // The key still works in its own workspace.
    assert_eq!(s.code(&key), "VALID");
}

#[test]
fn bad_input_gets_a_problem_never_a_500() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, _) = s.key(json!({"keyspace_id": ks}));
    let root = s.root.clone();
    let json_ct = [("Content-Type", "application/json")];
    let post = |path: &str, body: &str| s.raw("POST", path, Some(&root), Some(body), &json_ct);

    post("/v1/keys", "{not json").problem(400);
    post("/v1/keys", "[]").problem(422);
    post("/v1/keys", r#"{"keyspace_id": 5}"#).problem(422);
    let p = post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "colour": "red"}}"#)).problem(422);
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "meta": [1]}}"#)).problem(400);
    post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "expires_at": "tomorrow"}}"#)).problem(400);
    post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "expires_at": "2020-01-01T00:00:00Z"}}"#)).problem(400);
    post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "ttl_ms": -5}}"#)).problem(400);
    post("/v1/keys", &format!(r#"{{"keyspace_id": "{ks}", "ttl_ms": 5, "expires_at": "2030-01-01T00:00:00Z"}}"#))
        .problem(400);
    post("/v1/keys", r#"{"keyspace_id": "ks_nope"}"#).problem(404);
    post("/v1/keyspaces", r#"{"name": "x", "prefix": "Bad-Prefix"}"#).problem(400);
    post("/v1/keyspaces", r#"{"name": "x", "prefix": "kw_root"}"#).problem(400);
    post("/v1/keyspaces", r#"{"name": ""}"#).problem(400);
    post("/v1/keys/verify", r#"{"key": "x", "ip": "999.1.1.1"}"#).problem(400);
    post("/v1/keys/verify", r#"{}"#).problem(422);
    // The verify fast path (answered in front of the router) gives the router's answers.
    post("/v1/keys/verify", "{not json").problem(400);
    let p = post("/v1/keys/verify", r#"{"key": "x", "colour": "red"}"#).problem(422);
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    s.raw("POST", "/v1/keys/verify", Some(&root), Some(r#"{"key": "x"}"#), &[]).problem(415);
    post("/v1/keys/verify", &format!(r#"{{"key": "{}"}}"#, "x".repeat(200_000))).problem(413);
    s.raw("POST", "/v1/keys/verify", None, Some(r#"{"key": "x"}"#), &json_ct).problem(401);
    let r = s.raw("GET", "/v1/keys/verify", Some(&root), None, &[]);
    r.problem(405);
    assert!(r.header("allow").is_some());
    let mine = [("Content-Type", "application/json"), ("X-Request-Id", "trace-4711")];
    let r = s.raw("POST", "/v1/keys/verify", Some(&root), Some(r#"{"key": "x"}"#), &mine);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-request-id"), Some("trace-4711"));
    let p = s.raw("POST", "/v1/keys/verify", Some(&root), Some("{"), &mine).problem(400);
    assert_eq!(p["request_id"], "trace-4711", "{p}");
    post("/v1/root-keys", r#"{"name": "x", "role": "superuser"}"#).problem(422);
    post(&format!("/v1/keys/{id}/revoke"), r#"{"reason": "bored"}"#).problem(422);
    // No content type, oversized body, unknown route, wrong method, bad query.
    s.raw("POST", "/v1/keys", Some(&root), Some("{}"), &[]).problem(415);
    let huge = format!(r#"{{"keyspace_id": "{ks}", "name": "{}"}}"#, "x".repeat(200_000));
    post("/v1/keys", &huge).problem(413);
    s.raw("GET", "/v1/nothing-here", Some(&root), None, &[]).problem(404);
    let r = s.raw("DELETE", "/v1/keys", Some(&root), None, &[]);
    r.problem(405);
    assert!(r.header("allow").is_some());
    s.raw("GET", "/v1/keys?status=weird", Some(&root), None, &[]).problem(400);
    s.raw("GET", "/v1/keys?limit=0", Some(&root), None, &[]).problem(400);
    s.raw("GET", "/v1/keys?limit=abc", Some(&root), None, &[]).problem(400);
    s.raw("GET", "/v1/keys?bogus=1", Some(&root), None, &[]).problem(400);
    s.raw("GET", "/v1/keys?cursor=zzz", Some(&root), None, &[]).problem(400);
    s.raw("GET", "/v1/keys/key_unknown", Some(&root), None, &[]).problem(404);
    s.raw("GET", "/v1/audit?cursor=abc", Some(&root), None, &[]).problem(400);

    // Nothing half-written: the key is unchanged and the audit chain holds.
    let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
    assert_eq!(k["status"], "active");
    assert_eq!(s.call("GET", "/v1/audit/verify", None).json()["ok"], true);
    assert_eq!(s.call("GET", "/v1/keys", None).json()["data"].as_array().unwrap().len(), 1);
}

#[test]
fn request_ids_are_kept_or_made() {
    let s = Server::start();
    let r = s.raw("GET", "/healthz", None, None, &[("X-Request-Id", "abc-123")]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = s.raw("GET", "/healthz", None, None, &[]);
    assert!(r.header("x-request-id").is_some_and(|v| v.starts_with("req_")));
    let r = s.raw("GET", "/v1/keys", None, None, &[("X-Request-Id", "trace-7")]);
    assert_eq!(r.problem(401)["request_id"], "trace-7");
    assert_eq!(s.raw("GET", "/readyz", None, None, &[]).status, 200);
}

/// Small things a person at a terminal notices (issue 9).
#[test]
fn healthz_ends_its_line_and_a_redirected_log_has_no_colour_codes() {
    let s = Server::start();
    let r = s.raw("GET", "/healthz", None, None, &[]);
    assert_eq!(r.text, "{\"status\":\"ok\"}\n");
    let log = s.log.lock().clone();
    assert!(log.contains("keyward is serving."), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a piped log: {log:?}");
}

#[test]
fn listing_filters_and_paginates() {
    let s = Server::start();
    let ks = s.keyspace();
    let ks2 = s.keyspace();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.key(json!({"keyspace_id": ks, "owner_id": if i % 2 == 0 { "even" } else { "odd" }})).0);
    }
    s.key(json!({"keyspace_id": ks2}));
    s.call("POST", &format!("/v1/keys/{}/revoke", ids[0]), Some(json!({"reason": "other"})));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("&cursor={c}"),
            None => String::new(),
        };
        let page = s.call("GET", &format!("/v1/keys?keyspace_id={ks}&limit=2{q}"), None).json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let even = s.call("GET", "/v1/keys?owner_id=even&status=active", None).json();
    assert_eq!(even["data"].as_array().unwrap().len(), 2);
    let revoked = s.call("GET", "/v1/keys?status=revoked", None).json();
    assert_eq!(revoked["data"][0]["id"], ids[0].as_str());
    assert_eq!(revoked["data"][0]["revoke_reason"], "other");
}

#[test]
fn every_management_action_is_audited() {
    let s = Server::start();
    let ks = s.keyspace();
    s.call("PATCH", &format!("/v1/keyspaces/{ks}"), Some(json!({"name": "renamed"})));
    let (id, _) = s.key(json!({"keyspace_id": ks}));
    s.call("PATCH", &format!("/v1/keys/{id}"), Some(json!({"enabled": false, "owner_id": "x"})));
    s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "leaked"})));
    s.create("/v1/root-keys", json!({"name": "a", "role": "auditor"}));

    let log = s.call("GET", "/v1/audit", None).json();
    let entries = log["data"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "root_key.create",
            "key.revoke",
            "key.update",
            "key.create",
            "keyspace.update",
            "keyspace.create",
            "workspace.create"
        ]
    );
    let update = &entries[2];
    assert_eq!(update["target_id"], id.as_str());
    assert_eq!(update["before"], json!({"enabled": true, "owner_id": null}));
    assert_eq!(update["after"], json!({"enabled": false, "owner_id": "x"}));
    assert_eq!(update["source_ip"], "127.0.0.1");
    assert!(update["actor"].as_str().unwrap().starts_with("rk_"));
    assert!(update["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(entries[1]["after"]["revoke_reason"], "leaked");
    let only = s.call("GET", &format!("/v1/audit?target_id={id}&limit=1"), None).json();
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    assert!(only["next_cursor"].is_string());
    assert_eq!(
        s.call("GET", "/v1/audit/verify", None).json(),
        json!({"ok": true, "entries": 7, "first_bad_seq": null})
    );
}

#[test]
fn openapi_document_matches_the_routes() {
    let s = Server::start();
    let doc = s.raw("GET", "/openapi.json", None, None, &[]).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
        "/v1/events",
        "/v1/usage",
        "/v1/workspaces",
        "/v1/keyspaces",
        "/v1/keyspaces/{id}",
        "/v1/keys",
        "/v1/keys/verify",
        "/v1/keys/{id}",
        "/v1/keys/{id}/revoke",
        "/v1/keys/{id}/rotate",
        "/v1/keys/{id}/reveal",
        "/v1/keys/revoke",
        "/v1/keys/import",
        "/v1/reminders",
        "/v1/incidents",
        "/v1/incidents/{id}",
        "/v1/leaks",
        "/v1/github/secret-scanning",
        "/v1/root-keys",
        "/v1/root-keys/{id}",
        "/v1/root-keys/{id}/rotate",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/master-key",
        "/v1/master-key/rotate",
        "/v1/alerts",
        "/v1/alerts/{id}",
        "/v1/alerts/{id}/ack",
        "/v1/alerts/{id}/resolve",
        "/v1/alert-rules",
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "/v1/keys/{id}/analytics",
        "/v1/keyspaces/{id}/analytics",
        "/v1/analytics/top",
    ];
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(listed, want);
    let root = s.root.clone();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "x");
            let r = s.raw(
                &method.to_uppercase(),
                &concrete,
                Some(&root),
                Some("{}"),
                &[("Content-Type", "application/json")],
            );
            // A route that exists answers anything but "no such route" or "wrong method".
            assert_ne!(r.status, 405, "{method} {path}: {}", r.text);
            if r.status == 404 {
                assert!(!r.text.contains("no such route"), "{method} {path} is documented but not routed");
            }
        }
    }
}

#[test]
fn raw_keys_appear_nowhere_but_their_creating_response() {
    let capture = crate::util::Capture::start();
    let config = format!(
        r#"
[[sinks]]
name = "ecs"
kind = "file"
path = "{{dir}}/export/events.ndjson"

[[sinks]]
name = "cef"
kind = "file"
path = "{{dir}}/export/events.cef"
format = "cef"

[[sinks]]
name = "hook"
kind = "http"
url = "{}/hook"

[[sinks]]
name = "es"
kind = "elasticsearch"
url = "{}"

[[sinks]]
name = "splunk"
kind = "splunk"
url = "{}"
token = "t"
"#,
        capture.url(),
        capture.url(),
        capture.url()
    );
    let mut s = Server::start_full(&[("KEYWARD_LAST_USED_FLUSH_MS", "100")], Some(&config));
    let ks = s.keyspace();
    let mut secrets = vec![s.root.clone()];
    let (id, key) = s.key(json!({"keyspace_id": ks, "name": "secret-test"}));
    secrets.push(key.clone());
    let (_, key2) = s.key(json!({"keyspace_id": ks}));
    secrets.push(key2.clone());
    let rk = s.create("/v1/root-keys", json!({"name": "v", "role": "verifier"}))["key"].as_str().unwrap().to_owned();
    secrets.push(rk.clone());

    // Use every key in every way, including the wrong ways.
    s.verify_as(&rk, json!({"key": key, "ip": "192.0.2.1"}));
    s.verify(&change_one_char(&key));
    s.call_as(&key, "GET", "/v1/keys", None);
    s.call("POST", "/v1/keys", Some(json!({"keyspace_id": key})));
    s.call("POST", "/v1/keys", Some(json!({"keyspace_id": ks, "ttl_ms": key2})));
    s.call("POST", "/v1/keys", Some(json!({"keyspace_id": ks, "enabled": key2})));
    s.call("POST", "/v1/root-keys", Some(json!({"name": "x", "role": key})));
    s.call("GET", &format!("/v1/keys/{key}"), None);
    s.call("GET", &format!("/v1/keys?owner_id={key}&status={key2}"), None);
    s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "compromised"})));
    s.verify(&key);
    s.call("GET", &format!("/v1/keys/{id}"), None);
    s.call("GET", "/v1/audit", None);
    s.call("GET", "/v1/events", None);
    s.raw("GET", "/metrics", None, None, &[]);
    // Let every sink ship every event before looking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = s.raw("GET", "/readyz", None, None, &[]).json();
        let sinks = r["sinks"].as_array().unwrap().clone();
        if sinks.len() == 5 && sinks.iter().all(|h| h["backlog"] == 0 && h["shipped"].as_u64() > Some(0)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sinks did not drain: {r}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s.stop();

    let log = s.log.lock().clone();
    assert!(log.contains("Key revoked"), "the log was captured");
    // The data dir (keys, events, pepper) and every sink's output.
    let files = files_under(s.dir.path());
    assert!(files.iter().any(|(p, _)| p.ends_with("keyward.db")));
    assert!(files.iter().any(|(p, _)| p.ends_with("events.db")));
    assert!(files.iter().any(|(p, b)| p.ends_with("events.ndjson") && !b.is_empty()));
    assert!(files.iter().any(|(p, b)| p.ends_with("events.cef") && !b.is_empty()));
    let shipped: Vec<String> = capture.requests.lock().iter().map(|(_, h, b)| format!("{h}{b}")).collect();
    assert!(shipped.len() >= 3, "every HTTP sink shipped");
    let bodies = s.bodies.lock().clone();
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a key is in the server log");
        // The random part alone must not be there either.
        assert!(!log.contains(&secret[secret.len() - 38..]), "a key body is in the server log");
        assert!(!shipped.iter().any(|b| b.contains(&secret[secret.len() - 38..])), "a key was shipped to a sink");
        for (path, bytes) in &files {
            assert!(!contains(bytes, secret), "a key is in {}", path.display());
            assert!(!contains(bytes, &secret[secret.len() - 38..]), "a key body is in {}", path.display());
        }
        let shown = bodies.iter().filter(|(creating, b)| !creating && b.contains(secret.as_str())).count();
        assert_eq!(shown, 0, "a key was echoed in a response");
        let created = bodies.iter().filter(|(creating, b)| *creating && b.contains(secret.as_str())).count();
        assert!(created <= 1, "a key was shown more than once");
    }
}
