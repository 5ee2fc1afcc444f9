//! Key lifecycle over HTTP: rotation with overlap, bulk revocation, the
//! revocation health check, age policies and expiry reminders.

use std::time::Duration;

use crate::util::Server;
use serde_json::{Value, json};

fn v(s: &Server, key: &str) -> Value {
    s.verify(key)
}

fn audit_actions(s: &Server) -> Vec<String> {
    s.call("GET", "/v1/audit", None).json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rotation_keeps_the_old_key_until_the_overlap_ends() {
    let s = Server::start();
    let ks = s.keyspace();
    let (old_id, old) = s.key(json!({"keyspace_id": ks, "owner_id": "acme", "meta": {"plan": "pro"}, "scopes": ["read"],
        "remaining": 10, "ratelimits": [{"name": "m", "limit": 100, "window_ms": 60000}], "ip_allowlist": ["10.0.0.0/8"]}));
    s.verify_as(&s.root.clone(), json!({"key": old, "ip": "10.0.0.1"}));

    let r = s.raw(
        "POST",
        &format!("/v1/keys/{old_id}/rotate"),
        Some(&s.root.clone()),
        Some(r#"{"overlap_ms": 2000}"#),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let rotated = r.json();
    let new = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["owner_id"], "acme");
    assert_eq!(rotated["meta"], json!({"plan": "pro"}));
    assert_eq!(rotated["scopes"], json!(["read"]));
    assert_eq!(rotated["ip_allowlist"], json!(["10.0.0.0/8"]));
    assert_eq!(rotated["remaining"], 9, "the live quota carries over");
    assert_eq!(rotated["previous"]["rotated_to"], new_id.as_str());
    assert_eq!(rotated["previous"]["status"], "rotating");

    // During the overlap: both work; the old one is flagged, with the end instant.
    let o = s.verify_as(&s.root.clone(), json!({"key": old, "ip": "10.0.0.1"}));
    assert_eq!((o["code"].as_str(), o["deprecated"].as_bool()), (Some("VALID"), Some(true)));
    assert_eq!(o["deprecated_until"], rotated["previous"]["overlap_until"]);
    let n = s.verify_as(&s.root.clone(), json!({"key": new, "ip": "10.0.0.1"}));
    assert_eq!((n["code"].as_str(), n["deprecated"].as_bool()), (Some("VALID"), Some(false)));
    // They share one quota during the overlap.
    assert_eq!(n["remaining"], 7);
    // After it: ROTATED for the old key, VALID for the new one.
    let end = keyward_core::time::parse_rfc3339(rotated["previous"]["overlap_until"].as_str().unwrap()).unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(now() < end, "the checks above ran inside the overlap");
    while now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = s.verify_as(&s.root.clone(), json!({"key": old, "ip": "10.0.0.1"}));
    assert_eq!(
        (o["code"].as_str(), o["valid"].as_bool(), o["deprecated"].as_bool()),
        (Some("ROTATED"), Some(false), Some(false))
    );
    assert_eq!(s.verify_as(&s.root.clone(), json!({"key": new, "ip": "10.0.0.1"}))["code"], "VALID");
    assert_eq!(s.call("GET", &format!("/v1/keys/{old_id}"), None).json()["status"], "rotated");
    // A rotated key cannot be rotated again; a revoked key cannot be rotated.
    let p = s.call("POST", &format!("/v1/keys/{old_id}/rotate"), Some(json!({}))).problem(409);
    assert!(p["detail"].as_str().unwrap().contains(&new_id));
    s.call("POST", &format!("/v1/keys/{new_id}/rotate"), Some(json!({"overlap_ms": -1}))).problem(400);
    s.call("POST", &format!("/v1/keys/{new_id}/rotate"), Some(json!({"overlap_ms": 999_999_999_999i64}))).problem(400);
    assert!(audit_actions(&s).contains(&"key.rotate".to_string()));
}

#[test]
fn a_second_rotation_inside_the_overlap_ends_the_first_generation() {
    let s = Server::start();
    let ks = s.keyspace();
    let (a_id, a) = s.key(json!({"keyspace_id": ks}));
    let first = s.create(&format!("/v1/keys/{a_id}/rotate"), json!({}));
    let (b_id, b) = (first["id"].as_str().unwrap().to_owned(), first["key"].as_str().unwrap().to_owned());
    assert_eq!(v(&s, &a)["deprecated"], true, "A is in its 24 h overlap");
    let second = s.create(&format!("/v1/keys/{b_id}/rotate"), json!({}));
    let c = second["key"].as_str().unwrap().to_owned();
    // A's overlap ended at once; B is now the one overlapping; C is current.
    assert_eq!(v(&s, &a)["code"], "ROTATED");
    let vb = v(&s, &b);
    assert_eq!((vb["code"].as_str(), vb["deprecated"].as_bool()), (Some("VALID"), Some(true)));
    assert_eq!(v(&s, &c)["deprecated"], false);
    let audit = s.call("GET", &format!("/v1/audit?target_id={b_id}&action=key.rotate"), None).json();
    assert_eq!(audit["data"][0]["after"]["ended_overlaps"], json!([a_id]));
    // overlap 0: the old key stops at once.
    let third = s.create(&format!("/v1/keys/{}/rotate", second["id"].as_str().unwrap()), json!({"overlap_ms": 0}));
    assert_eq!(v(&s, &c)["code"], "ROTATED");
    assert_eq!(v(&s, third["key"].as_str().unwrap())["code"], "VALID");
}

#[test]
fn bulk_revocation_with_and_without_dry_run() {
    let s = Server::start();
    let ks = s.keyspace();
    let ks2 = s.keyspace();
    let mut acme = Vec::new();
    for _ in 0..3 {
        acme.push(s.key(json!({"keyspace_id": ks, "owner_id": "acme"})));
    }
    let (_, other) = s.key(json!({"keyspace_id": ks, "owner_id": "globex"}));
    let (_, other_ks) = s.key(json!({"keyspace_id": ks2, "owner_id": "acme"}));
    s.call("POST", &format!("/v1/keys/{}/revoke", acme[0].0), Some(json!({"reason": "unused"})));

    s.call("POST", "/v1/keys/revoke", Some(json!({"reason": "compromised"}))).problem(400);
    let dry = s
        .call(
            "POST",
            "/v1/keys/revoke",
            Some(json!({"owner_id": "acme", "keyspace_id": ks, "reason": "compromised", "dry_run": true})),
        )
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["count"], 2, "the already-revoked key is not counted: {dry}");
    assert_eq!(dry["key_ids"], json!([acme[1].0, acme[2].0]));
    assert_eq!(v(&s, &acme[1].1)["code"], "VALID", "a dry run changes nothing");
    let inc = s.create("/v1/incidents", json!({"title": "acme compromised", "key_ids": [acme[1].0]}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let audit_before = audit_actions(&s).len();

    let done = s
        .call(
            "POST",
            "/v1/keys/revoke",
            Some(json!({"owner_id": "acme", "keyspace_id": ks, "reason": "compromised", "incident": inc})),
        )
        .json();
    assert_eq!((done["dry_run"].as_bool(), done["count"].as_u64()), (Some(false), Some(2)));
    assert_eq!(v(&s, &acme[1].1)["code"], "REVOKED");
    assert_eq!(v(&s, &acme[2].1)["code"], "REVOKED");
    assert_eq!(v(&s, &other)["code"], "VALID");
    assert_eq!(v(&s, &other_ks)["code"], "VALID");
    // One audit record for the whole action, naming every key.
    let actions = audit_actions(&s);
    assert_eq!(actions.len(), audit_before + 1);
    assert_eq!(actions[0], "key.bulk_revoke");
    let entry = &s.call("GET", "/v1/audit?action=key.bulk_revoke", None).json()["data"][0];
    assert_eq!(entry["after"]["key_ids"], json!([acme[1].0, acme[2].0]));
    // The health check ran on each and passed.
    let k = s.call("GET", &format!("/v1/keys/{}", acme[2].0), None).json();
    assert_eq!(k["incident"], inc.as_str());
    assert_eq!(k["revocation_check"]["code"], "REVOKED");
    assert_eq!(k["revocation_check"]["ok"], true);
    // created_before takes an instant.
    let none = s
        .call("POST", "/v1/keys/revoke", Some(json!({"created_before": "2000-01-01T00:00:00Z", "reason": "other"})))
        .json();
    assert_eq!(none["count"], 0);
}

#[test]
fn revoked_keys_are_rechecked_periodically() {
    let s = Server::start_with(&[("KEYWARD_LIFECYCLE_INTERVAL_MS", "200")]);
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let r = s.call("POST", &format!("/v1/keys/{id}/revoke"), Some(json!({"reason": "leaked"}))).json();
    assert_eq!(r["revocation_check"]["ok"], true, "checked right after revoking: {r}");
    let first = r["revocation_check"]["at"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let k = loop {
        let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
        if k["revocation_check"]["at"].as_str().unwrap() > first.as_str() {
            break k;
        }
        assert!(std::time::Instant::now() < deadline, "never re-checked: {k}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(k["revocation_check"]["code"], "REVOKED");
    assert_eq!(v(&s, &key)["code"], "REVOKED");
    assert!(s.log.lock().contains("Revocation checks recorded."));
}

#[test]
fn age_policy_and_expiry_reminders() {
    let s = Server::start_with(&[("KEYWARD_LIFECYCLE_INTERVAL_MS", "200")]);
    let day: i64 = 24 * 3600 * 1000;
    let ks =
        s.create("/v1/keyspaces", json!({"name": "short", "max_age_ms": 90 * day}))["id"].as_str().unwrap().to_owned();
    let k = s.create("/v1/keys", json!({"keyspace_id": ks}));
    assert!(k["expires_at"].is_string(), "the age policy gives every key an expiry");
    s.call("POST", "/v1/keys", Some(json!({"keyspace_id": ks, "ttl_ms": 91 * day}))).problem(400);
    let (soon_id, _) = s.key(json!({"keyspace_id": ks, "ttl_ms": 3 * day}));
    let (_, _) = s.key(json!({"keyspace_id": ks, "ttl_ms": 30 * day}));
    let mut got = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        got = s.call("GET", "/v1/reminders", None).json();
        if got["data"].as_array().unwrap().len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = got["data"].as_array().unwrap();
    let mut days: Vec<i64> = data.iter().map(|r| r["days"].as_i64().unwrap()).collect();
    days.sort();
    assert_eq!(days, [7, 14], "3 days left: the 14- and 7-day reminders, once each: {got}");
    assert!(data.iter().all(|r| r["key_id"] == soon_id.as_str()));
    // Runs again without duplicating.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.call("GET", &format!("/v1/reminders?key_id={soon_id}"), None).json()["data"].as_array().unwrap().len(),
        2
    );
    // A rotation keeps the key's lifetime within the policy.
    let r = s.create(&format!("/v1/keys/{soon_id}/rotate"), json!({"overlap_ms": 0}));
    assert!(r["expires_at"].is_string());
}

#[test]
fn keys_imported_by_hash_verify_and_rotate_into_native_keys() {
    use sha2::Digest;
    let mut s = Server::start();
    let ks = s.keyspace();
    let legacy: Vec<String> = (0..3).map(|i| format!("sk_live_legacy{i}X{}", "abcdefghijklmnopqrstuv")).collect();
    let sha = |k: &str| hex::encode(sha2::Sha256::digest(k.as_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("old.csv");
    let mut text = "hash,prefix,last4,owner_id,name,scopes,meta\n".to_string();
    for (i, k) in legacy.iter().take(2).enumerate() {
        text.push_str(&format!(
            "{},sk_live_,{},cust-{i},old key {i},read,\"{{\"\"plan\"\":\"\"gold\"\"}}\"\n",
            sha(k),
            &k[k.len() - 4..]
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let nd = dir.path().join("old.ndjson");
    std::fs::write(
        &nd,
        format!(
            "{}\n",
            json!({"hash": sha(&legacy[2]), "prefix": "sk_live_", "owner_id": "cust-2", "scopes": ["read", "write"]})
        ),
    )
    .unwrap();

    let run = |file: &std::path::Path| {
        let out = std::process::Command::new(crate::util::BIN)
            .args(["keys", "import"])
            .arg(file)
            .args(["--keyspace", &ks])
            .env("KEYWARD_SERVER", s.url(""))
            .env("KEYWARD_ROOT_KEY", &s.root)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(err.contains("100%"), "a progress bar: {err}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(run(&csv), json!({"imported": 2, "duplicates_skipped": 0, "without_scopes": 0, "total": 2}));
    assert_eq!(run(&nd)["imported"], 1);
    assert_eq!(
        run(&csv),
        json!({"imported": 0, "duplicates_skipped": 2, "without_scopes": 0, "total": 2}),
        "importing twice skips"
    );

    let r = s.verify_as(&s.root.clone(), json!({"key": legacy[0], "method": "GET"}));
    assert_eq!((r["code"].as_str(), r["owner_id"].as_str()), (Some("VALID"), Some("cust-0")));
    assert_eq!(r["meta"], json!({"plan": "gold"}));
    assert_eq!(s.verify_as(&s.root.clone(), json!({"key": legacy[0], "method": "POST"}))["code"], "FORBIDDEN");
    assert_eq!(s.verify_as(&s.root.clone(), json!({"key": legacy[2], "method": "POST"}))["code"], "VALID");
    assert_eq!(s.code("sk_live_legacy9Xnotimported"), "NOT_FOUND");
    assert_eq!(s.code("zz_other_thing"), "MALFORMED");
    let id = r["key_id"].as_str().unwrap().to_owned();
    let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
    assert_eq!(
        (k["hash_kind"].as_str(), k["hint"].as_str()),
        (Some("sha256"), Some(&*format!("sk_live_…{}", &legacy[0][legacy[0].len() - 4..])))
    );
    assert!(s.call("GET", "/v1/audit?action=key.import", None).json()["data"].as_array().unwrap().len() == 2);

    // Bad rows are named.
    let p = s
        .call("POST", "/v1/keys/import", Some(json!({"keyspace_id": ks, "keys": [{"hash": "zz", "prefix": "x_"}]})))
        .problem(400);
    assert!(p["detail"].as_str().unwrap().starts_with("keys[0].hash"), "{p}");
    // Imported rows obey the same rules as keys created here.
    let h = "ab".repeat(32);
    for (bad, field) in [
        (json!({"ratelimits": [{"name": "m", "limit": 0, "window_ms": 10}]}), "keys[0].ratelimits[0].limit"),
        (json!({"ip_allowlist": ["10.0.0.0/33"]}), "keys[0].ip_allowlist[0]"),
        (json!({"remaining": -1}), "keys[0].remaining"),
        (json!({"prefix": "a…b"}), "keys[0].prefix"),
    ] {
        let mut row = json!({"hash": h, "prefix": "x_"});
        row.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let p = s.call("POST", "/v1/keys/import", Some(json!({"keyspace_id": ks, "keys": [row]}))).problem(400);
        assert!(p["detail"].as_str().unwrap().starts_with(field), "{p}");
    }

    // A restart keeps them verifiable; a rotation turns one into a native key.
    s.restart();
    assert_eq!(s.code(&legacy[1]), "VALID");
    let rotated = s.create(&format!("/v1/keys/{id}/rotate"), json!({"overlap_ms": 0}));
    let native = rotated["key"].as_str().unwrap();
    assert!(native.starts_with("kw_live_"));
    assert_eq!(rotated["hash_kind"], "hmac-sha256:v1");
    assert_eq!(rotated["owner_id"], "cust-0");
    assert_eq!(s.code(native), "VALID");
    assert_eq!(s.code(&legacy[0]), "ROTATED");
    // And a leaked imported key is recognized.
    let leak = s.call("POST", "/v1/leaks", Some(json!({"keys": [legacy[1]]}))).json();
    assert_eq!(leak["results"][0]["status"], "revoked");
}

#[test]
fn every_lifecycle_action_is_in_the_audit_log() {
    use sha2::Digest;
    let s = Server::start();
    let ks = s.keyspace();
    let (a, _) = s.key(json!({"keyspace_id": ks, "owner_id": "o"}));
    let (b, key_b) = s.key(json!({"keyspace_id": ks, "owner_id": "p"}));
    s.create(&format!("/v1/keys/{a}/rotate"), json!({}));
    s.call("POST", "/v1/keys/revoke", Some(json!({"owner_id": "o", "reason": "compromised"})));
    let inc = s.create("/v1/incidents", json!({"title": "t", "key_ids": [a]}))["id"].as_str().unwrap().to_owned();
    s.call("PATCH", &format!("/v1/incidents/{inc}"), Some(json!({"status": "resolved"})));
    s.call("POST", "/v1/leaks", Some(json!({"keys": [key_b]})));
    let hash = hex::encode(sha2::Sha256::digest(b"ext_123456"));
    s.call("POST", "/v1/keys/import", Some(json!({"keyspace_id": ks, "keys": [{"hash": hash, "prefix": "ext_"}]})));
    let actions: std::collections::BTreeSet<String> = audit_actions(&s).into_iter().collect();
    for want in [
        "key.create",
        "key.rotate",
        "key.bulk_revoke",
        "incident.create",
        "incident.update",
        "key.revoke",
        "key.import",
    ] {
        assert!(actions.contains(want), "{want} missing from {actions:?}");
    }
    // The leak's revocation names the key; the chain still verifies.
    let revoke = s.call("GET", &format!("/v1/audit?target_id={b}&action=key.revoke"), None).json();
    assert_eq!(revoke["data"][0]["after"]["revoke_reason"], "leaked");
    assert_eq!(s.call("GET", "/v1/audit/verify", None).json()["ok"], true);
}

#[test]
fn a_restart_inside_the_overlap_keeps_one_shared_quota() {
    let mut s = Server::start();
    let ks = s.keyspace();
    let (id, old) = s.key(json!({"keyspace_id": ks, "remaining": 10, "ratelimits": []}));
    let r = s.create(&format!("/v1/keys/{id}/rotate"), json!({}));
    let new = r["key"].as_str().unwrap().to_owned();
    // Spend on the old key only, then restart (which flushes).
    for _ in 0..4 {
        v(&s, &old);
    }
    s.restart();
    // Both keys still draw from one quota of 6: not 6 each, not 10 on the new key.
    assert_eq!(v(&s, &new)["remaining"], 5);
    assert_eq!(v(&s, &old)["remaining"], 4);
    assert_eq!(v(&s, &new)["remaining"], 3);
}

#[test]
fn a_large_import_goes_through_in_chunks() {
    use sha2::Digest;
    let s = Server::start();
    let ks = s.keyspace();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.ndjson");
    let mut text = String::new();
    for i in 0..1200 {
        let k = format!("legacy_{i:08}_abcdefghijklmnopqrstuvwxyz");
        let hash = hex::encode(sha2::Sha256::digest(k.as_bytes()));
        text.push_str(&json!({"hash": hash, "prefix": "legacy_", "owner_id": format!("customer-{i}"), "name": "imported from the old gateway", "meta": {"plan": "pro", "region": "eu-west-1"}}).to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(crate::util::BIN)
        .args(["keys", "import"])
        .arg(&file)
        .args(["--keyspace", &ks])
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &s.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["imported"], 1200);
    assert_eq!(s.code("legacy_00001199_abcdefghijklmnopqrstuvwxyz"), "VALID");
    // An emergency revocation of the whole keyspace: one call, every key checked.
    let started = std::time::Instant::now();
    let done = s.call("POST", "/v1/keys/revoke", Some(json!({"keyspace_id": ks, "reason": "compromised"}))).json();
    assert_eq!(done["count"], 1200);
    eprintln!("bulk revocation of 1200 keys with health checks: {:?}", started.elapsed());
    assert_eq!(s.code("legacy_00000042_abcdefghijklmnopqrstuvwxyz"), "REVOKED");
    let page = s.call("GET", &format!("/v1/keys?keyspace_id={ks}&status=revoked&limit=1000"), None).json();
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    assert!(data.iter().all(|k| k["revocation_check"]["ok"] == true));
    // Ordinary calls keep the small body limit.
    let big = "x".repeat(100_000);
    s.call("POST", "/v1/keyspaces", Some(json!({"name": big}))).problem(413);
}
