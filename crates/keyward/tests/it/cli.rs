//! The command line against the real binary.

use std::process::Command;

use crate::util::{BIN, Server};
use serde_json::{Value, json};

/// Runs the CLI against `s` with its admin root key: (success, stdout, stderr).
pub(crate) fn cli(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &s.root)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_prints_only_the_root_key_and_refuses_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = Command::new(BIN).args(["init", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1);
    assert!(keyward_core::RawKey::parse(key).is_ok_and(|k| k.prefix() == "kw_root"), "{stdout:?}");
    assert!(data.join("keyward.db").exists() && data.join("pepper").exists());

    let again = Command::new(BIN).args(["init", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!again.status.success());
    assert!(again.stdout.is_empty());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialized"));
}

#[test]
fn keys_commands_drive_a_running_server() {
    let s = Server::start();
    let (ok, out, err) = cli(&s, &["keyspaces", "create", "--name", "prod", "--prefix", "sk_live", "--json"]);
    assert!(ok, "{err}");
    let ks: Value = serde_json::from_str(&out).unwrap();
    let ks_id = ks["id"].as_str().unwrap();

    let (ok, out, err) = cli(
        &s,
        &["keys", "create", "--keyspace", ks_id, "--owner-id", "acme", "--meta", r#"{"plan":"pro"}"#, "--json"],
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(s.code(&key), "VALID");

    let (ok, out, _) = cli(&s, &["keys", "list", "--owner-id", "acme", "--json"]);
    assert!(ok);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert!(!out.contains(&key));

    let (ok, out, _) = cli(&s, &["keys", "show", &id, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["meta"], json!({"plan": "pro"}));

    let (ok, out, _) = cli(&s, &["keys", "revoke", &id, "--reason", "compromised", "--note", "test", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "revoked");
    assert_eq!(s.code(&key), "REVOKED");

    // Errors say what is wrong, on stderr, with a failing exit code.
    let (ok, _, err) = cli(&s, &["keys", "revoke", &id, "--reason", "compromised"]);
    assert!(!ok);
    assert!(err.contains("409") && err.contains("already revoked"), "{err}");
    let (ok, _, err) = cli(&s, &["keys", "show", "key_missing"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn help_has_examples_and_bad_config_is_reported_whole() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:") && help.contains("keyward serve"), "{help}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(&cfg, "listen = \"nowhere\"\n[log]\nformat = \"xml\"\n").unwrap();
    let out =
        Command::new(BIN).args(["serve", "--config"]).arg(&cfg).env("KEYWARD_MAX_BODY_BYTES", "lots").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["listen:", "log.format:", "KEYWARD_MAX_BODY_BYTES:"] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    // Two unknown sections and a bad field in a third: all three reported (issue 9).
    std::fs::write(&cfg, "[nope]\na = 1\n[alsonope]\nb = 2\n[http]\nbogus = 1\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["nope: unknown key", "alsonope: unknown key", "http: unknown field `bogus`"] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }

    // A second server on the same data dir is refused, not corrupting it.
    let s = Server::start();
    let out =
        Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(s.data_dir()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another keyward process"));
}

#[test]
fn events_command_lists_and_follows() {
    let s = Server::start();
    let ks: Value = serde_json::from_str(&cli(&s, &["keyspaces", "create", "--name", "p", "--json"]).1).unwrap();
    let created: Value =
        serde_json::from_str(&cli(&s, &["keys", "create", "--keyspace", ks["id"].as_str().unwrap(), "--json"]).1)
            .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    s.verify(&key);
    s.verify("nope");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, out, err) = cli(&s, &["events", "--code", "VALID", "--json"]);
    assert!(ok, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["code"], "VALID");

    // --follow prints events as they arrive.
    let mut child = Command::new(BIN)
        .args(["events", "--follow", "--json"])
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &s.root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.verify_as(&s.root.clone(), json!({"key": key, "ip": "192.0.2.99"}));
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["ip"], "192.0.2.99", "{line}");
}

#[test]
fn the_pepper_can_change_with_old_keys_still_valid() {
    let a = "11".repeat(32);
    let b = "22".repeat(32);
    let mut s = Server::start_with(&[("KEYWARD_PEPPER", &a)]);
    let ks: Value = s.call("POST", "/v1/keyspaces", Some(json!({"name": "p"}))).json();
    let old = s.key(json!({"keyspace_id": ks["id"]})).1;
    s.stop();
    // The same data dir with another pepper alone is refused: keys would never match.
    // Starts the server on the old data dir with pepper `b`; returns its error output.
    let refused = |extra: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(s.data_dir())
            .args(extra)
            .env("KEYWARD_PEPPER", &b)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&[]);
    assert!(err.contains("pepper does not match"), "{err}");
    // A new version without the old one listed is refused too.
    std::fs::write(s.dir.path().join("v2.toml"), "[pepper]\nversion = 2\n").unwrap();
    let v2 = s.dir.path().join("v2.toml");
    let err = refused(&["--config".as_ref(), v2.as_os_str()]);
    assert!(err.contains("pepper.previous"), "{err}");
    // With the old one listed as previous, old keys verify and new keys use the new pepper.
    std::fs::write(
        s.dir.path().join("keyward.toml"),
        format!("[pepper]\nversion = 2\nprevious = [{{ version = 1, hex = \"{a}\" }}]\n"),
    )
    .unwrap();
    s.config = Some(String::new());
    s.env = vec![("KEYWARD_PEPPER".into(), b.clone())];
    s.restart();
    assert_eq!(s.code(&old), "VALID");
    let (id, new) = s.key(json!({"keyspace_id": ks["id"]}));
    assert_eq!(s.code(&new), "VALID");
    assert_eq!(s.call("GET", &format!("/v1/keys/{id}"), None).json()["hash_kind"], "hmac-sha256:v2");
}

#[test]
fn the_cli_speaks_to_people_and_sets_every_policy() {
    let s = Server::start();
    let (ok, out, err) = cli(&s, &["keyspaces", "create", "--name", "prod"]);
    assert!(ok, "{err}");
    let ks_id = out.split_whitespace().next().unwrap().to_owned();
    assert!(ks_id.starts_with("ks_") && out.contains("prod"), "{out}");

    // Created with scopes, an allowlist, a window and a quota; the key alone on stdout.
    let (ok, out, err) = cli(
        &s,
        &[
            "keys",
            "create",
            "--keyspace",
            &ks_id,
            "--owner-id",
            "acme",
            "--scope",
            "read",
            "--scope",
            "invoices:write",
            "--ip",
            "10.0.0.0/8",
            "--ratelimit",
            "minute=100/60000",
            "--remaining",
            "50",
            "--refill",
            "50/86400000",
        ],
    );
    assert!(ok, "{err}");
    let key = out.trim().to_owned();
    assert!(keyward_core::RawKey::parse(&key).is_ok(), "{out:?}");
    assert!(err.contains("shown only this once"), "{err}");
    let listed = cli(&s, &["keys", "list", "--json"]).1;
    let id = serde_json::from_str::<Value>(&listed).unwrap()["data"][0]["id"].as_str().unwrap().to_owned();

    // Verify: text and exit codes.
    let (ok, out, _) =
        cli(&s, &["keys", "verify", &key, "--ip", "10.1.2.3", "--method", "GET", "--scope", "invoices:write"]);
    assert!(ok && out.starts_with("VALID") && out.contains(&id), "{out}");
    let (ok, out, _) = cli(&s, &["keys", "verify", &key, "--ip", "192.0.2.1"]);
    assert!(!ok && out.starts_with("REFUSED IP_NOT_ALLOWED"), "{out}");

    // Show and list for people: the policy is visible, the key is not.
    let (ok, out, _) = cli(&s, &["keys", "show", &id]);
    assert!(
        ok && out.contains("invoices:write") && out.contains("10.0.0.0/8") && out.contains("minute=100/1m"),
        "{out}"
    );
    assert!(!out.contains(&key));
    let (ok, out, _) = cli(&s, &["keys", "list"]);
    assert!(ok && out.starts_with("ID") && out.contains(&id) && out.contains("acme"), "{out}");

    // Update: scopes replaced, disabled, then a verify says so.
    let (ok, out, err) = cli(&s, &["keys", "update", &id, "--scope", "admin", "--disable"]);
    assert!(ok && out.contains("disabled") && out.contains("admin"), "{out}{err}");
    let (ok, out, _) = cli(&s, &["keys", "verify", &key, "--ip", "10.1.2.3"]);
    assert!(!ok && out.starts_with("REFUSED DISABLED"), "{out}");
    let (ok, _, err) = cli(&s, &["keys", "update", &id]);
    assert!(!ok && err.contains("nothing to change"), "{err}");
    let (ok, _, err) = cli(&s, &["keys", "update", &id, "--ratelimit", "fast"]);
    assert!(!ok && err.contains("NAME=LIMIT/WINDOW"), "{err}");
}

/// Runs the binary with no root key in its environment.
fn cli_without_root_key(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(BIN).args(args).env("KEYWARD_SERVER", s.url("")).env_remove("KEYWARD_ROOT_KEY").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every subcommand's help has an example; the client commands and the
/// administration commands work end to end (issue 9).
#[test]
fn every_command_has_examples_and_the_admin_commands_work() {
    // The whole command tree, from the top-level help down.
    fn commands(path: &[String]) -> Vec<Vec<String>> {
        let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut found = vec![path.to_vec()];
        let Some(list) = help.split("Commands:\n").nth(1) else { return found };
        // Command lines are indented by two; wrapped descriptions by more.
        for line in list.lines().take_while(|l| l.starts_with("  ")).filter(|l| !l.starts_with("   ")) {
            let name = line.split_whitespace().next().unwrap().to_owned();
            if name != "help" {
                found.extend(commands(&[path, &[name]].concat()));
            }
        }
        found
    }
    let all = commands(&[]);
    assert!(all.len() > 25, "{all:?}");
    for path in &all {
        let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let leaf = !help.contains("Commands:");
        assert!(!leaf || help.contains("Example"), "`keyward {} --help` has no example:\n{help}", path.join(" "));
    }

    let s = Server::start();
    // A missing root key names the variable to set.
    let (ok, _, err) = cli_without_root_key(&s, &["keys", "list"]);
    assert!(!ok && err.contains("KEYWARD_ROOT_KEY"), "{err}");

    // Durations as people write them, and enable/disable.
    let ks = serde_json::from_str::<Value>(&cli(&s, &["keyspaces", "create", "--name", "p", "--json"]).1).unwrap();
    let ks = ks["id"].as_str().unwrap();
    let (ok, out, err) = cli(
        &s,
        &["keys", "create", "--keyspace", ks, "--ttl", "30d", "--ratelimit", "burst=10/1s", "--quota", "5", "--json"],
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["warning"].as_str().unwrap().contains("no scope"));
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["ratelimits"][0]["window_ms"], 1000);
    assert_eq!(created["remaining"], 5);
    let (ok, out, _) = cli(&s, &["keys", "list"]);
    assert!(ok && out.contains("in 30 days"), "{out}");
    let (ok, out, _) = cli(&s, &["keys", "disable", id]);
    assert!(ok && out.contains("disabled"), "{out}");
    assert_eq!(s.code(created["key"].as_str().unwrap()), "DISABLED");
    let (ok, out, _) = cli(&s, &["keys", "enable", id]);
    assert!(ok && out.contains("active"), "{out}");
    let (ok, _, err) = cli(&s, &["keys", "create", "--keyspace", ks, "--ttl", "soon"]);
    assert!(!ok && err.contains("30d"), "{err}");

    // Root keys: create (the key alone on stdout), list, use, delete.
    let (ok, out, err) = cli(&s, &["root-keys", "create", "--name", "ci", "--role", "verifier"]);
    assert!(ok, "{err}");
    let verifier = out.trim().to_owned();
    assert!(verifier.starts_with("kw_root_") && out.lines().count() == 1, "{out}");
    let (ok, out, _) = cli(&s, &["root-keys", "list"]);
    assert!(ok && out.starts_with("ID") && out.contains("verifier") && !out.contains(&verifier), "{out}");
    let rk_id = serde_json::from_str::<Value>(&cli(&s, &["root-keys", "list", "--json"]).1).unwrap()[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.verify_as(&verifier, json!({"key": "nope"}))["code"], "MALFORMED");
    // Rotate with an overlap: the new key alone on stdout, both work for now.
    let (ok, out, err) = cli(&s, &["root-keys", "rotate", &rk_id, "--overlap", "1h"]);
    assert!(ok && err.contains("the old key stops 20"), "{err}");
    let rotated = out.trim().to_owned();
    assert!(rotated.starts_with("kw_root_") && rotated != verifier, "{out}");
    assert_eq!(s.verify_as(&rotated, json!({"key": "nope"}))["code"], "MALFORMED");
    assert_eq!(s.verify_as(&verifier, json!({"key": "nope"}))["code"], "MALFORMED");
    let (ok, _, err) = cli(&s, &["root-keys", "rotate", &rk_id, "--overlap", "soon"]);
    assert!(!ok && err.contains("--overlap"), "{err}");
    let (ok, out, _) = cli(&s, &["root-keys", "list"]);
    assert!(ok && out.contains("LAST USED") && out.contains("EXPIRES"), "{out}");
    let (ok, _, err) = cli(&s, &["root-keys", "delete", &rk_id]);
    assert!(ok, "{err}");
    let r = s.raw("POST", "/v1/keys/verify", Some(&verifier), Some(r#"{"key": "nope"}"#), &[]);
    assert_eq!(r.status, 401, "a deleted root key is refused");

    // The audit log and its chain.
    let (ok, out, _) = cli(&s, &["audit", "--limit", "50"]);
    assert!(ok && out.contains("root_key.create") && out.contains("key.create"), "{out}");
    let (ok, out, _) = cli(&s, &["audit", "--verify"]);
    assert!(ok && out.contains("intact"), "{out}");

    // A workspace: its admin root key alone on stdout, and it works there.
    let (ok, out, err) = cli(&s, &["workspaces", "create", "--name", "acme"]);
    assert!(ok && err.contains("Created workspace ws_"), "{err}");
    let other = out.trim();
    assert_eq!(s.call_as(other, "GET", "/v1/keys", None).json()["data"].as_array().unwrap().len(), 0);

    // Completions for the three shells people use.
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("keyward") && script.contains("root-keys"), "{shell}");
    }
}

/// `keyward alerts` and `keyward webhooks` against a running server (issue 10).
#[test]
fn the_alerts_and_webhooks_commands() {
    let s = Server::start();
    let ks = serde_json::from_str::<Value>(&cli(&s, &["keyspaces", "create", "--name", "p", "--json"]).1).unwrap();
    let created: Value =
        serde_json::from_str(&cli(&s, &["keys", "create", "--keyspace", ks["id"].as_str().unwrap(), "--json"]).1)
            .unwrap();
    let (ok, secret, err) =
        cli(&s, &["webhooks", "create", "--url", "http://127.0.0.1:9/hook", "--event", "alert.opened"]);
    assert!(ok && secret.trim().starts_with("whsec_") && err.contains("shown only this once"), "{secret}{err}");
    let (ok, out, _) = cli(&s, &["webhooks", "list"]);
    assert!(ok && out.contains("alert.opened") && !out.contains(secret.trim()), "{out}");
    // A leak report raises a critical alert.
    s.call("POST", "/v1/leaks", Some(json!({"keys": [created["key"]]}))).json();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let (ok, out, err) = cli(&s, &["alerts"]);
        assert!(ok, "{err}");
        if out.contains("leak") {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "no alert listed: {out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(out.starts_with("ID") && out.contains("critical") && out.contains("open"), "{out}");
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let (ok, out, _) = cli(&s, &["alerts", "show", &id]);
    assert!(ok && out.contains("key found leaked"), "{out}");
    let (ok, out, _) = cli(&s, &["alerts", "ack", &id, "--note", "on it"]);
    assert!(ok && out.contains("acknowledged"), "{out}");
    let (ok, out, _) = cli(&s, &["alerts", "resolve", &id]);
    assert!(ok && out.contains("resolved"), "{out}");
    let (ok, _, err) = cli(&s, &["alerts", "resolve", &id]);
    assert!(!ok && err.contains("409") && err.contains("already resolved"), "{err}");
    let (ok, out, _) = cli(&s, &["alerts", "--status", "resolved", "--json"]);
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["data"][0]["id"] == id.as_str(), "{out}");
    let (ok, out, _) = cli(&s, &["alerts", "rules"]);
    assert!(ok && out.contains("requests_per_minute") && out.contains("critical > 1000"), "{out}");
    let hook = serde_json::from_str::<Value>(&cli(&s, &["webhooks", "list", "--json"]).1).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, _) = cli(&s, &["webhooks", "deliveries", &hook]);
    assert!(ok && out.contains("alert.opened"), "{out}");
    let (ok, out, _) = cli(&s, &["webhooks", "delete", &hook]);
    assert!(ok && out.contains("deleted"), "{out}");
}
