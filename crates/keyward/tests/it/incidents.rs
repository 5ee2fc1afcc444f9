//! Incidents, leak reports, the scanner and GitHub secret scanning, against
//! the real binary.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::util::{BIN, Server};
use keyward_core::{KeyPrefix, RawKey};
use serde_json::{Value, json};

fn wait_events(s: &Server, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.call("GET", "/v1/events?limit=1000", None).json()["data"].as_array().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "events not written");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_incident_carries_a_review_of_the_keys_usage() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "scopes": ["read"]}));
    let root = s.root.clone();
    for (ip, method, path, n) in [
        ("203.0.113.5", "GET", "/invoices", 4),
        ("198.51.100.9", "GET", "/users", 1),
        ("198.51.100.9", "POST", "/users", 2),
    ] {
        for _ in 0..n {
            s.verify_as(&root, json!({"key": key, "ip": ip, "method": method, "path": path}));
        }
    }
    wait_events(&s, 7);
    let inc = s.create(
        "/v1/incidents",
        json!({
            "title": "Key pasted in a public gist",
            "key_ids": [id],
            "detected_at": "2026-11-20T10:00:00Z",
            "affected_systems": ["billing API"],
            "actions_taken": ["revoked the key"],
            "impact": "read access to invoices for 2 hours",
        }),
    );
    let inc_id = inc["id"].as_str().unwrap().to_owned();
    assert_eq!(inc["status"], "open");
    let full = s.call("GET", &format!("/v1/incidents/{inc_id}"), None).json();
    let review = &full["review"]["keys"][0];
    assert_eq!(review["key_id"], id.as_str());
    assert_eq!(review["total"], 7);
    assert_eq!(review["ips"][0]["ip"], "203.0.113.5");
    assert_eq!(review["ips"][0]["count"], 4);
    assert_eq!(review["ips"][1]["count"], 3);
    assert!(review["ips"][0]["first_seen"].as_str().unwrap() <= review["ips"][0]["last_seen"].as_str().unwrap());
    let endpoints: BTreeSet<(String, String, u64)> = review["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["method"].as_str().unwrap().into(), e["path"].as_str().unwrap().into(), e["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        endpoints,
        BTreeSet::from([
            ("GET".into(), "/invoices".into(), 4),
            ("GET".into(), "/users".into(), 1),
            ("POST".into(), "/users".into(), 2)
        ])
    );
    let outcomes: Vec<(String, u64)> = review["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["code"].as_str().unwrap().into(), o["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(outcomes, [("VALID".to_string(), 5), ("FORBIDDEN".to_string(), 2)]);

    let patched = s
        .call(
            "PATCH",
            &format!("/v1/incidents/{inc_id}"),
            Some(json!({"status": "resolved", "actions_taken": ["revoked the key", "rotated the upstream secret"]})),
        )
        .json();
    assert_eq!(patched["status"], "resolved");
    assert_eq!(patched["title"], "Key pasted in a public gist");
    let audit = s.call("GET", &format!("/v1/audit?target_id={inc_id}"), None).json();
    let actions: Vec<&str> = audit["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["incident.update", "incident.create"]);
    assert_eq!(s.call("GET", "/v1/incidents", None).json()["data"].as_array().unwrap().len(), 1);

    // The Markdown report from the CLI.
    let out = Command::new(BIN)
        .args(["incident", "report", &inc_id])
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with(&format!("# Incident {inc_id}: Key pasted in a public gist")), "{md}");
    for part in [
        "| Status | Resolved |",
        "- billing API",
        "- rotated the upstream secret",
        "read access to invoices",
        "| 203.0.113.5 | 4 |",
        "| POST | /users | 2 |",
        "| FORBIDDEN | 2 |",
    ] {
        assert!(md.contains(part), "missing {part:?} in:\n{md}");
    }
    assert!(!md.contains(&key));

    // Validation and roles.
    s.call("POST", "/v1/incidents", Some(json!({"title": "x", "key_ids": ["key_01M83H7A01xVKmmO3c3h"]}))).problem(404);
    s.call("POST", "/v1/incidents", Some(json!({"title": "x", "key_ids": [id], "detected_at": "yesterday"})))
        .problem(400);
    s.call("POST", "/v1/incidents", Some(json!({"title": "x", "key_ids": []}))).problem(400);
    s.call("GET", &format!("/v1/incidents/{inc_id}?review_days=0"), None).problem(400);
    let auditor =
        s.create("/v1/root-keys", json!({"name": "a", "role": "auditor"}))["key"].as_str().unwrap().to_owned();
    assert_eq!(s.call_as(&auditor, "GET", &format!("/v1/incidents/{inc_id}"), None).status, 200);
    s.call_as(&auditor, "POST", "/v1/incidents", Some(json!({"title": "x", "key_ids": [id]}))).problem(403);
    let other = s.create("/v1/workspaces", json!({"name": "b"}))["root_key"]["key"].as_str().unwrap().to_owned();
    s.call_as(&other, "GET", &format!("/v1/incidents/{inc_id}"), None).problem(404);
}

#[test]
fn leak_reports_revoke_live_keys_and_never_echo_them() {
    let s = Server::start();
    let ks = s.keyspace();
    let (live_id, live) = s.key(json!({"keyspace_id": ks}));
    let (dead_id, dead) = s.key(json!({"keyspace_id": ks}));
    s.call("POST", &format!("/v1/keys/{dead_id}/revoke"), Some(json!({"reason": "unused"})));
    let unknown = RawKey::generate(&KeyPrefix::new("kw_live").unwrap()).expose().to_owned();
    let other = s.create("/v1/workspaces", json!({"name": "b"}))["root_key"]["key"].as_str().unwrap().to_owned();
    let other_ks = s.call_as(&other, "POST", "/v1/keyspaces", Some(json!({"name": "x"}))).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let foreign = s.create_as(&other, "/v1/keys", json!({"keyspace_id": other_ks}))["key"].as_str().unwrap().to_owned();

    let keys = [live.clone(), dead.clone(), unknown.clone(), "password123".to_string(), foreign.clone()];
    let r = s.call("POST", "/v1/leaks", Some(json!({"keys": keys, "source": "https://gist.example/abc"})));
    assert_eq!(r.status, 200, "{}", r.text);
    for k in &keys[..3] {
        assert!(!r.text.contains(k.as_str()), "the answer repeats a reported key");
    }
    let a = r.json();
    let statuses: Vec<&str> = a["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["revoked", "already_revoked", "unknown", "malformed", "unknown"]);
    assert_eq!(a["results"][0]["key_id"], live_id.as_str());
    assert_eq!(a["revoked"], 1);
    let inc = a["incident_id"].as_str().unwrap();

    assert_eq!(s.code(&live), "REVOKED");
    let k = s.call("GET", &format!("/v1/keys/{live_id}"), None).json();
    assert_eq!((k["revoke_reason"].as_str(), k["incident"].as_str()), (Some("leaked"), Some(inc)));
    assert_eq!(k["revocation_check"]["ok"], true);
    let incident = s.call("GET", &format!("/v1/incidents/{inc}"), None).json();
    assert_eq!(incident["key_ids"], json!([live_id]));
    assert!(incident["notes"].as_str().unwrap().contains("gist.example"));
    // Another workspace's key is not this workspace's to revoke.
    assert_eq!(s.verify_as(&other, json!({"key": foreign}))["code"], "VALID");
    s.call("POST", "/v1/leaks", Some(json!({"keys": []}))).problem(400);
}

/// A tree with keys in many kinds of files, look-alikes, a binary file and an
/// ignored file; returns the expected findings as (relative path, line).
fn fixture(dir: &std::path::Path) -> (Vec<String>, BTreeSet<(String, usize)>) {
    let make_key = |p: &str| RawKey::generate(&KeyPrefix::new(p).unwrap()).expose().to_owned();
    let look_alike = |k: &str| {
        let mut b = k.as_bytes().to_vec();
        let i = b.len() - 9;
        b[i] = if b[i] == b'Q' { b'R' } else { b'Q' };
        String::from_utf8(b).unwrap()
    };
    let keys: Vec<String> = (0..7).map(|i| make_key(if i % 2 == 0 { "kw_live" } else { "sk_test" })).collect();
    let w = |rel: &str, text: String| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "config/app.json",
        format!(
            "{{\n  \"name\": \"shop\",\n  \"api_key\": \"{}\",\n  \"other\": \"{}\"\n}}\n",
            keys[0],
            look_alike(&keys[1])
        ),
    );
    w(".env", format!("DATABASE_URL=postgres://x\nKEYWARD_KEY={}\n", keys[1]));
    w("deploy/values.yaml", format!("service:\n  token: {}\n  note: \"{}\"\n", keys[2], look_alike(&keys[0])));
    w(
        "logs/app.log",
        format!("2026-11-20 GET /x 200\n2026-11-20 auth header Bearer {} ok\n2026-11-20 retry {}\n", keys[3], keys[3]),
    );
    w(
        "web/bundle.min.js",
        format!(
            "var a=\"{}\",b='{}';fetch(u,{{headers:{{k:\"{}\"}}}});var c=\"{}\"",
            keys[4],
            keys[5],
            look_alike(&keys[4]),
            keys[6]
        ),
    );
    w("docs/README.md", format!("Example: `{}` (not real)\n", look_alike(&keys[2])));
    let mut bin = vec![0u8, 1, 2, 3, 0];
    bin.extend_from_slice(keys[0].as_bytes());
    std::fs::write(dir.join("image.png"), bin).unwrap();
    w(".gitignore", "secrets/\n".into());
    w("secrets/local.txt", format!("{}\n", make_key("kw_live")));
    let expected = BTreeSet::from([
        ("config/app.json".to_string(), 3),
        (".env".to_string(), 2),
        ("deploy/values.yaml".to_string(), 2),
        ("logs/app.log".to_string(), 2),
        ("logs/app.log".to_string(), 3),
        ("web/bundle.min.js".to_string(), 1),
    ]);
    (keys, expected)
}

#[test]
fn the_scanner_finds_every_key_and_no_look_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, expected) = fixture(dir.path());
    let out = Command::new(BIN).args(["scan", "--json"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "found keys exit 1: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let findings: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: BTreeSet<(String, usize)> = findings
        .iter()
        .map(|f| {
            let p = std::path::Path::new(f["path"].as_str().unwrap())
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string();
            (p, f["line"].as_u64().unwrap() as usize)
        })
        .collect();
    assert_eq!(got, expected, "zero misses and zero false positives");
    // The minified bundle holds three keys on one line; the log line holds one.
    assert_eq!(findings.len(), 8);
    for k in &keys {
        assert!(!stdout.contains(k.as_str()), "keys are masked in the output");
    }
    // Text output: path:line:column: hint.
    let text = Command::new(BIN).args(["scan"]).arg(dir.path().join(".env")).output().unwrap();
    let line = String::from_utf8(text.stdout).unwrap();
    assert!(line.trim_end().ends_with(&format!(":2:13: sk_test_…{}", &keys[1][keys[1].len() - 4..])), "{line}");
    // A clean tree exits 0.
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("a.txt"), "nothing here kw_live_short\n").unwrap();
    assert_eq!(Command::new(BIN).arg("scan").arg(clean.path()).output().unwrap().status.code(), Some(0));
}

#[test]
fn scan_report_revokes_what_it_found() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leak.env"), format!("TOKEN={key}\nOTHER={key}\n")).unwrap();
    let out = Command::new(BIN)
        .args(["scan", "--report"])
        .arg(dir.path())
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &s.root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("1 live key(s) revoked") && err.contains("incident opened: inc_"), "{err}");
    assert!(!err.contains(&key));
    assert_eq!(s.code(&key), "REVOKED");
    assert_eq!(s.call("GET", &format!("/v1/keys/{id}"), None).json()["revoke_reason"], "leaked");
}

#[test]
fn github_secret_scanning_alerts_are_verified_and_handled() {
    assert!(
        Command::new("sh").args(["-c", "command -v openssl"]).output().is_ok_and(|o| o.status.success()),
        "this test signs like GitHub with openssl: install it (Debian: apt-get install openssl)"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "priv.pem"]);
    run(&["ec", "-in", "priv.pem", "-pubout", "-out", "pub.pem"]);
    let pem = std::fs::read_to_string(dir.path().join("pub.pem")).unwrap();
    let config = format!("[github]\npublic_keys = [{{ id = \"gh-key-1\", pem = \"\"\"\n{pem}\"\"\" }}]\n");
    let s = Server::start_full(&[], Some(&config));
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks}));
    let unknown = RawKey::generate(&KeyPrefix::new("kw_live").unwrap()).expose().to_owned();
    let body = json!([
        {"token": key, "type": "keyward_api_key", "url": "https://github.com/o/r/blob/main/.env", "source": "content"},
        {"token": unknown, "type": "keyward_api_key", "url": "https://github.com/o/r/blob/main/x", "source": "content"},
        {"token": "kw_live_notreallyakey", "type": "keyward_api_key", "url": "", "source": "content"}
    ])
    .to_string();
    std::fs::write(dir.path().join("body.json"), &body).unwrap();
    let sig = run(&["dgst", "-sha256", "-sign", "priv.pem", "-out", "sig.der", "body.json"]);
    let _ = sig;
    let sig = std::fs::read(dir.path().join("sig.der")).unwrap();
    let sig_b64 = run(&["base64", "-A", "-in", "sig.der"]);
    let sig_b64 = String::from_utf8(sig_b64).unwrap();
    assert!(!sig.is_empty());
    let post = |headers: &[(&str, &str)], b: &str| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        s.raw("POST", "/v1/github/secret-scanning", None, Some(b), &h)
    };
    // Bad or missing signatures are refused before anything is read.
    post(&[], &body).problem(401);
    post(&[("Github-Public-Key-Identifier", "other"), ("Github-Public-Key-Signature", sig_b64.trim())], &body)
        .problem(401);
    let tampered = body.replace("keyward_api_key", "keyward_api_kez");
    post(&[("Github-Public-Key-Identifier", "gh-key-1"), ("Github-Public-Key-Signature", sig_b64.trim())], &tampered)
        .problem(401);
    assert_eq!(s.code(&key), "VALID");

    let r =
        post(&[("Github-Public-Key-Identifier", "gh-key-1"), ("Github-Public-Key-Signature", sig_b64.trim())], &body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(&key));
    let labels = r.json();
    let sha = |t: &str| {
        let out = Command::new("sh").args(["-c", &format!("printf %s '{t}' | sha256sum")]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
    };
    assert_eq!(labels[0], json!({"token_hash": sha(&key), "token_type": "keyward_api_key", "label": "true_positive"}));
    assert_eq!(labels[1]["label"], "false_positive");
    assert_eq!(labels[2]["label"], "false_positive");
    assert_eq!(s.code(&key), "REVOKED");
    let k = s.call("GET", &format!("/v1/keys/{id}"), None).json();
    assert_eq!(k["revoke_reason"], "leaked");
    assert!(k["revoke_note"].as_str().unwrap().contains("GitHub secret scanning"));
    let audit = s.call("GET", &format!("/v1/audit?target_id={id}"), None).json();
    assert_eq!(audit["data"][0]["actor"], "system:leak-report");
}
