//! Key lifecycle over HTTP: rotation with overlap, bulk revocation, the
//! revocation health check, age policies and expiry reminders.

mod util;

use std::time::Duration;

use serde_json::{Value, json};
use util::Server;

fn v(s: &Server, key: &str) -> Value {
    s.verify(key)
}

fn audit_actions(s: &Server) -> Vec<String> {
    s.call("GET", "/v1/audit", None).json()["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn rotation_keeps_the_old_key_until_the_overlap_ends() {
    let s = Server::start();
    let ks = s.keyspace();
    let (old_id, old) = s.key(json!({"keyspace_id": ks, "owner_id": "acme", "meta": {"plan": "pro"}, "scopes": ["read"],
        "remaining": 10, "ratelimits": [{"name": "m", "limit": 100, "window_ms": 60000}], "ip_allowlist": ["10.0.0.0/8"]}));
    s.verify_as(&s.root.clone(), json!({"key": old, "ip": "10.0.0.1"}));

    let r = s.raw("POST", &format!("/v1/keys/{old_id}/rotate"), Some(&s.root.clone()), Some(r#"{"overlap_ms": 600}"#), &[("Content-Type", "application/json")]);
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
    std::thread::sleep(Duration::from_millis(650));
    let o = s.verify_as(&s.root.clone(), json!({"key": old, "ip": "10.0.0.1"}));
    assert_eq!((o["code"].as_str(), o["valid"].as_bool(), o["deprecated"].as_bool()), (Some("ROTATED"), Some(false), Some(false)));
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
    let dry = s.call("POST", "/v1/keys/revoke", Some(json!({"owner_id": "acme", "keyspace_id": ks, "reason": "compromised", "dry_run": true}))).json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["count"], 2, "the already-revoked key is not counted: {dry}");
    assert_eq!(dry["key_ids"], json!([acme[1].0, acme[2].0]));
    assert_eq!(v(&s, &acme[1].1)["code"], "VALID", "a dry run changes nothing");
    let audit_before = audit_actions(&s).len();

    let done = s.call("POST", "/v1/keys/revoke", Some(json!({"owner_id": "acme", "keyspace_id": ks, "reason": "compromised", "incident": "inc_1"}))).json();
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
    assert_eq!(k["incident"], "inc_1");
    assert_eq!(k["revocation_check"]["code"], "REVOKED");
    assert_eq!(k["revocation_check"]["ok"], true);
    // created_before takes an instant.
    let none = s.call("POST", "/v1/keys/revoke", Some(json!({"created_before": "2000-01-01T00:00:00Z", "reason": "other"}))).json();
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
    std::thread::sleep(Duration::from_millis(700));
    let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
    assert!(k["revocation_check"]["at"].as_str().unwrap() > first.as_str(), "re-checked later: {k}");
    assert_eq!(k["revocation_check"]["code"], "REVOKED");
    assert_eq!(v(&s, &key)["code"], "REVOKED");
    assert!(s.log.lock().unwrap().contains("Revocation check passed."));
}

#[test]
fn age_policy_and_expiry_reminders() {
    let s = Server::start_with(&[("KEYWARD_LIFECYCLE_INTERVAL_MS", "200")]);
    let day: i64 = 24 * 3600 * 1000;
    let ks = s.create("/v1/keyspaces", json!({"name": "short", "max_age_ms": 90 * day}))["id"].as_str().unwrap().to_owned();
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
    assert_eq!(s.call("GET", &format!("/v1/reminders?key_id={soon_id}"), None).json()["data"].as_array().unwrap().len(), 2);
    // A rotation keeps the key's lifetime within the policy.
    let r = s.create(&format!("/v1/keys/{soon_id}/rotate"), json!({"overlap_ms": 0}));
    assert!(r["expires_at"].is_string());
}
