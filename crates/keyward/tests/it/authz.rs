//! The authorization matrix, generated from `/openapi.json`: every operation
//! × no credentials, garbage, an unknown well-formed root key, a deleted root
//! key, an API key as bearer, each role, and another workspace's admin on
//! this workspace's ids. Part of the reliability suite of issue 8.

use std::collections::BTreeMap;

use keyward_core::{KeyPrefix, RawKey};
use serde_json::{Value, json};

use crate::util::Server;

/// What each operation needs, by operationId (mirrors `core::role`): the
/// roles that may call it. Public operations are `None`.
fn allowed_roles(op: &str) -> Option<&'static [&'static str]> {
    const READ_KEYS: &[&str] = &["admin", "key_manager", "auditor"];
    const WRITE_KEYS: &[&str] = &["admin", "key_manager"];
    const AUDIT: &[&str] = &["admin", "auditor"];
    const VERIFY: &[&str] = &["admin", "verifier"];
    const ADMIN: &[&str] = &["admin"];
    const READ_ALERTS: &[&str] = &["admin", "key_manager", "auditor"];
    Some(match op {
        "healthz" | "readyz" | "metrics" | "openapi" | "githubSecretScanning" => return None,
        "listEvents" | "listAudit" | "verifyAudit" => AUDIT,
        "listRootKeys" => AUDIT,
        "reportUsage" | "verifyKey" => VERIFY,
        "listKeys" | "getKey" | "listReminders" | "listKeyspaces" | "getKeyspace" | "listIncidents" | "getIncident"
        | "keyAnalytics" | "keyspaceAnalytics" | "topUsage" => READ_KEYS,
        "createKey" | "patchKey" | "revokeKey" | "rotateKey" | "bulkRevokeKeys" | "importKeys" | "createKeyspace"
        | "patchKeyspace" | "createIncident" | "patchIncident" | "reportLeaks" => WRITE_KEYS,
        "createWorkspace" | "createRootKey" | "deleteRootKey" | "rotateRootKey" | "getMasterKey" | "revealKey"
        | "rotateMasterKey" => ADMIN,
        "listAlerts" | "getAlert" | "getAlertRules" | "listWebhooks" | "listDeliveries" => READ_ALERTS,
        "ackAlert" | "resolveAlert" => WRITE_KEYS,
        "putAlertRules" | "createWebhook" | "deleteWebhook" | "redeliver" => ADMIN,
        other => panic!("operation {other} has no entry in the authorization matrix: add it"),
    })
}

/// A body that deserializes for the operation (so that only authorization
/// can refuse it), with this workspace's ids.
fn body_for(op: &str, ids: &Ids) -> Option<Value> {
    Some(match op {
        "createKey" => json!({"keyspace_id": ids.keyspace}),
        "patchKey" | "patchKeyspace" => json!({"name": "renamed"}),
        "revokeKey" => json!({"reason": "other"}),
        "rotateKey" => json!({}),
        "bulkRevokeKeys" => json!({"owner_id": "nobody", "reason": "other", "dry_run": true}),
        "importKeys" => json!({"keyspace_id": ids.keyspace, "keys": [{"hash": "ab".repeat(32), "prefix": "old_"}]}),
        "createKeyspace" => json!({"name": "m"}),
        "createIncident" => json!({"title": "t", "key_ids": [ids.key]}),
        "patchIncident" => json!({"title": "t2"}),
        "reportLeaks" => json!({"keys": ["not-a-key-at-all"]}),
        "createWorkspace" => json!({"name": "w"}),
        "createRootKey" => json!({"name": "r", "role": "auditor"}),
        "verifyKey" => json!({"key": "kw_live_nothing"}),
        "reportUsage" => json!({"request_id": "req_unknown"}),
        "ackAlert" | "resolveAlert" | "rotateMasterKey" | "rotateRootKey" => json!({}),
        "putAlertRules" => json!({"rules": {}}),
        "createWebhook" => json!({"url": "http://127.0.0.1:9/hook"}),
        _ => return None,
    })
}

/// Ids of one workspace's objects, to put in paths.
struct Ids {
    keyspace: String,
    key: String,
    incident: String,
    root_key: String,
    alert: String,
    webhook: String,
    delivery: String,
}

fn make_ids(s: &Server, root: &str) -> Ids {
    let ks = s.call_as(root, "POST", "/v1/keyspaces", Some(json!({"name": "authz"}))).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = s.create_as(root, "/v1/keys", json!({"keyspace_id": ks}))["id"].as_str().unwrap().to_owned();
    let incident =
        s.create_as(root, "/v1/incidents", json!({"title": "t", "key_ids": [key]}))["id"].as_str().unwrap().to_owned();
    let root_key = s.create_as(root, "/v1/root-keys", json!({"name": "spare", "role": "auditor"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A webhook, then a leak report on a key of this workspace: an alert, and a delivery of it.
    let webhook =
        s.create_as(root, "/v1/webhooks", json!({"url": "http://127.0.0.1:9/hook"}))["id"].as_str().unwrap().to_owned();
    let (_, leaked) = {
        let v = s.create_as(root, "/v1/keys", json!({"keyspace_id": ks}));
        (v["id"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned())
    };
    s.call_as(root, "POST", "/v1/leaks", Some(json!({"keys": [leaked]}))).json();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (alert, delivery) = loop {
        let alerts = s.call_as(root, "GET", "/v1/alerts", None).json();
        let deliveries = s.call_as(root, "GET", &format!("/v1/webhooks/{webhook}/deliveries"), None).json();
        if let (Some(a), Some(d)) = (alerts["data"][0]["id"].as_str(), deliveries["data"][0]["id"].as_str()) {
            break (a.to_owned(), d.to_owned());
        }
        assert!(std::time::Instant::now() < deadline, "the leak raised no alert or no delivery");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Ids { keyspace: ks, key, incident, root_key, alert, webhook, delivery }
}

fn concrete(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/v1/keyspaces/") {
        &ids.keyspace
    } else if path.starts_with("/v1/keys/") {
        &ids.key
    } else if path.starts_with("/v1/incidents/") {
        &ids.incident
    } else if path.starts_with("/v1/alerts/") {
        &ids.alert
    } else if path.starts_with("/v1/webhooks/") {
        &ids.webhook
    } else {
        &ids.root_key
    };
    path.replace("{id}", id).replace("{delivery_id}", &ids.delivery)
}

/// (method, path template, operationId) of every documented operation.
fn operations(s: &Server) -> Vec<(String, String, String)> {
    let doc = s.raw("GET", "/openapi.json", None, None, &[]).json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op["operationId"].as_str().unwrap().to_owned()));
        }
    }
    ops
}

fn send(s: &Server, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> (u16, String) {
    let text = body.map(Value::to_string);
    let mut headers = vec![("Content-Type", "application/json")];
    let header;
    if let Some(a) = auth {
        header = a.to_owned();
        headers.push(("Authorization", &header));
    }
    let r = s.raw(method, path, None, text.as_deref(), &headers);
    (r.status, r.text)
}

#[test]
fn authorization_matrix_from_the_openapi_document() {
    // Every operation is tried with bad credentials from one address: far
    // past the default throttle of failed root-key authentications.
    let s = Server::start_with(&[("KEYWARD_ROOT_AUTH_FAILURES_PER_MINUTE", "10000")]);
    let ids = make_ids(&s, &s.root.clone());
    let ops = operations(&s);
    assert!(ops.len() >= 30, "{ops:?}");

    // Credentials that must never get in.
    let unknown_root = RawKey::generate(&KeyPrefix::root()).expose().to_owned();
    let deleted = s.create("/v1/root-keys", json!({"name": "gone", "role": "admin"}));
    let deleted_key = deleted["key"].as_str().unwrap().to_owned();
    let deleted_id = deleted["id"].as_str().unwrap().to_owned();
    assert_eq!(s.call("DELETE", &format!("/v1/root-keys/{deleted_id}"), None).status / 100, 2);
    let (_, api_key) = s.key(json!({"keyspace_id": ids.keyspace}));
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no credentials", None),
        ("garbage", Some("Bearer garbage".into())),
        ("another scheme", Some(format!("Basic {}", s.root))),
        ("empty bearer", Some("Bearer ".into())),
        ("unknown well-formed root key", Some(format!("Bearer {unknown_root}"))),
        ("deleted root key", Some(format!("Bearer {deleted_key}"))),
        ("an API key as bearer", Some(format!("Bearer {api_key}"))),
    ];

    // One root key per role.
    let mut roles: BTreeMap<&str, String> = BTreeMap::new();
    for role in ["admin", "key_manager", "auditor", "verifier"] {
        let rk = s.create("/v1/root-keys", json!({"name": role, "role": role}));
        roles.insert(role, rk["key"].as_str().unwrap().to_owned());
    }
    // Another workspace and its admin.
    let other_ws = s.create("/v1/workspaces", json!({"name": "other"}));
    let other_admin =
        other_ws["root_key"]["key"].as_str().expect("a new workspace answers its admin root key").to_owned();

    let mut checked = 0;
    for (method, path, op) in &ops {
        let url = concrete(path, &ids);
        let body = body_for(op, &ids);
        let Some(allowed) = allowed_roles(op) else {
            // Public: no credentials needed, and none is refused.
            let (status, text) = send(&s, method, &url, None, body.as_ref());
            assert_ne!(status, 401, "{op} is public but answered 401: {text}");
            continue;
        };
        for (what, auth) in &refused {
            let (status, text) = send(&s, method, &url, auth.as_deref(), body.as_ref());
            assert_eq!(status, 401, "{op} {method} {path} with {what}: {text}");
            checked += 1;
        }
        // Roles: refused ones first, so that an allowed call cannot change
        // what a refused one would meet.
        let (yes, no): (Vec<_>, Vec<_>) = roles.iter().partition(|(r, _)| allowed.contains(r));
        for (role, key) in no.into_iter().chain(yes) {
            let (status, text) = send(&s, method, &url, Some(&format!("Bearer {key}")), body.as_ref());
            if allowed.contains(role) {
                assert!(status != 401 && status != 403, "{op} as {role} answered {status}: {text}");
            } else {
                assert_eq!(status, 403, "{op} as {role}: {text}");
            }
            checked += 1;
        }
        // Another workspace's admin never reaches this workspace's objects.
        if path.contains("{id}") {
            let (status, text) = send(&s, method, &url, Some(&format!("Bearer {other_admin}")), body.as_ref());
            assert_eq!(status, 404, "{op} {url} as another workspace's admin: {text}");
            checked += 1;
        }
    }
    eprintln!("authorization matrix: {} operations, {checked} calls checked", ops.len());
}
