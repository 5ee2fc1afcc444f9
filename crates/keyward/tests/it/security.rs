//! Protection at rest (issue 12): file modes, a data dir encrypted under a
//! master key (searched byte by byte for what it must not show), opening it
//! with, without and with the wrong key, and the master key's online rotation.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{BIN, Server, contains, files_under};

pub fn new_master_key() -> String {
    let out = Command::new(BIN).args(["master-key", "generate"]).output().unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Master key id"));
    key
}

/// Starts `keyward serve` on `data` expecting it to refuse; returns its stderr.
fn refused_start(data: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("KEYWARD_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "it started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("keyward started where it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Test values that must not be readable in the data dir.
struct Canaries {
    owner: String,
    meta: String,
    agent: String,
    ip: String,
    key: String,
    note: String,
}

/// Creates a key with canary values and uses it from a canary IP and user agent.
fn plant(s: &Server, tag: &str) -> Canaries {
    let ks = s.keyspace();
    let c = Canaries {
        owner: format!("owner-{tag}-5521"),
        meta: format!("meta-{tag}-8713"),
        agent: format!("agent-{tag}-3302"),
        ip: "203.0.113.91".into(),
        key: String::new(),
        note: format!("note-{tag}-6604"),
    };
    let (key_id, key) = s.key(json!({"keyspace_id": ks, "owner_id": c.owner, "meta": {"team": c.meta}}));
    let r = s.raw(
        "POST",
        "/v1/keys/verify",
        Some(&s.root),
        Some(&json!({"key": key, "ip": c.ip, "user_agent": c.agent}).to_string()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.json()["code"], "VALID", "{}", r.text);
    let inc = s.call("POST", "/v1/incidents", Some(json!({"title": "leak", "key_ids": [key_id], "notes": c.note})));
    assert!(inc.status < 300, "{}", inc.text);
    // The event is written (the writer commits every 100 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = s.call("GET", &format!("/v1/events?owner_id={}", c.owner), None).json();
        if ev["data"].as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(ev["data"][0]["ip"], c.ip.as_str());
            assert_eq!(ev["data"][0]["user_agent"], c.agent.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "the event was not written: {ev}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Canaries { key, ..c }
}

fn visible(data: &Path, c: &Canaries) -> Vec<String> {
    let mut found = Vec::new();
    for (path, bytes) in files_under(data) {
        for needle in [&c.owner, &c.meta, &c.agent, &c.ip, &c.key, &c.note] {
            if contains(&bytes, needle) {
                found.push(format!("{} in {}", needle, path.display()));
            }
        }
        if bytes.starts_with(b"SQLite format 3\0") {
            found.push(format!("{} is a plain SQLite file", path.display()));
        }
    }
    found
}

#[test]
fn a_plain_data_dir_shows_its_data_which_is_why_encryption_exists() {
    // The control: without a master key the same search finds the canaries,
    // so the search below can fail.
    let s = Server::start();
    let c = plant(&s, "plain");
    std::thread::sleep(Duration::from_millis(300));
    let found = visible(&s.data_dir(), &c);
    assert!(found.iter().any(|f| f.contains(&c.owner)), "{found:?}");
    assert!(found.iter().any(|f| f.contains("plain SQLite")), "{found:?}");
    assert!(s.log.lock().contains("Data at rest is NOT encrypted"));
}

#[test]
fn an_encrypted_data_dir_reveals_nothing_and_opens_only_with_its_master_key() {
    let mk = new_master_key();
    let mut s = Server::start_with(&[("KEYWARD_MASTER_KEY", &mk)]);
    let c = plant(&s, "sealed");
    assert!(s.log.lock().contains("Data at rest is encrypted"));
    // While it runs (rows in the WAL too) and after a clean stop.
    let found = visible(&s.data_dir(), &c);
    assert!(found.is_empty(), "readable without the master key: {found:?}");
    let data = s.data_dir();
    assert!(!data.join("pepper").exists(), "a plain pepper file");
    let sealed = std::fs::read_to_string(data.join("pepper.enc")).unwrap();
    assert!(sealed.trim().len() > 64 + 24, "the sealed pepper carries nonce and tag");
    assert!(!std::fs::read_to_string(data.join("keyring.json")).unwrap().contains(&mk));
    s.stop();
    let found = visible(&data, &c);
    assert!(found.is_empty(), "readable after a stop: {found:?}");
    for (path, bytes) in files_under(&data) {
        assert!(!contains(&bytes, &mk), "the master key is in {}", path.display());
    }

    let err = refused_start(&data, &[]);
    assert!(err.contains("is encrypted") && err.contains("KEYWARD_MASTER_KEY"), "{err}");
    let other = new_master_key();
    let err = refused_start(&data, &[("KEYWARD_MASTER_KEY", &other)]);
    assert!(err.contains("does not open data dir"), "{err}");
    let err = refused_start(&data, &[("KEYWARD_MASTER_KEY", "abc")]);
    assert!(err.contains("64 hex characters"), "{err}");

    s.restart();
    assert_eq!(s.code(&c.key), "VALID");
    let ev = s.call("GET", &format!("/v1/events?owner_id={}", c.owner), None).json();
    assert!(!ev["data"].as_array().unwrap().is_empty(), "{ev}");
    let status = s.call("GET", "/v1/master-key", None).json();
    assert_eq!(status["encrypted"], true, "{status}");
    assert_eq!(status["master_key_id"].as_str().unwrap().len(), 16);
}

#[test]
fn a_plain_data_dir_is_encrypted_in_place_when_a_master_key_is_given() {
    let mut s = Server::start();
    let c = plant(&s, "later");
    s.stop();
    assert!(s.data_dir().join("pepper").exists());
    let mk = new_master_key();
    s.env.push(("KEYWARD_MASTER_KEY".into(), mk));
    s.restart();
    assert!(s.log.lock().contains("Encrypting a plain database file"));
    assert!(s.log.lock().contains("Sealed the pepper"));
    assert_eq!(s.code(&c.key), "VALID", "keys survive, and the pepper with them");
    s.stop();
    let found = visible(&s.data_dir(), &c);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn the_master_key_rotates_online_under_load_without_a_failed_verify() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("master.key");
    std::fs::write(&file, new_master_key()).unwrap();
    let mut s = Server::start_with(&[("KEYWARD_MASTER_KEY_FILE", file.to_str().unwrap())]);
    let ks = s.keyspace();
    // No rate limit: the load runs past the default 1,000 a minute on a fast machine.
    let (_, key) = s.key(json!({"keyspace_id": ks, "ratelimits": []}));
    let before = s.call("GET", "/v1/master-key", None).json()["master_key_id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let (url, root, key) = (s.url("/v1/keys/verify"), s.root.clone(), key.clone());
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            while !stop.load(Ordering::Relaxed) {
                let r = agent.post(&url).set("Authorization", &format!("Bearer {root}")).send_json(json!({"key": key}));
                match r
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.into_json::<serde_json::Value>().map_err(|e| e.to_string()))
                {
                    Ok(v) if v["code"] == "VALID" => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("a verify during rotation: {other:?}");
                        bad.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    let cli = |args: &[&str]| {
        let (ok, out, err) = crate::cli::cli(&s, args);
        (ok, out + &err)
    };
    // 1. The new key in the request (from a file, as the CLI sends it).
    let new_file = keys.path().join("new.key");
    std::fs::write(&new_file, new_master_key()).unwrap();
    let (done, out) = cli(&["master-key", "rotate", "--new-key-file", new_file.to_str().unwrap()]);
    assert!(done, "{out}");
    assert!(out.contains(&format!("{before} ->")), "{out}");
    let (done, out) = cli(&["master-key", "rotate", "--new-key-file", new_file.to_str().unwrap()]);
    assert!(!done && out.contains("409") && out.contains("in use"), "{out}");
    // 2. The server re-reads its key file.
    let third = new_master_key();
    std::fs::write(&file, &third).unwrap();
    let (done, out) = cli(&["master-key", "rotate"]);
    assert!(done, "{out}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0, "verifies failed during rotation");
    assert!(ok.load(Ordering::Relaxed) > 50, "too little load: {}", ok.load(Ordering::Relaxed));

    let audit = s.call("GET", "/v1/audit?action=master_key.rotate", None).json();
    let items = audit["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert_eq!(items[1]["before"]["master_key_id"], before.as_str());

    // Only an admin may rotate.
    let auditor =
        s.create("/v1/root-keys", json!({"name": "a", "role": "auditor"}))["key"].as_str().unwrap().to_owned();
    s.call_as(&auditor, "POST", "/v1/master-key/rotate", Some(json!({}))).problem(403);
    s.call("POST", "/v1/master-key/rotate", Some(json!({"new_master_key": "xyz"}))).problem(400);

    // The file now holds the current key: a restart opens the dir with it.
    s.restart();
    assert_eq!(s.code(&key), "VALID");
}

#[cfg(unix)]
#[test]
fn the_data_dir_is_private_and_looser_modes_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Server::start();
    let data = s.data_dir();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let files = files_under(&data);
    assert!(files.len() >= 5, "{files:?}", files = files.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (path, _) in &files {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    assert!(!s.log.lock().contains("other users can"));
    std::fs::set_permissions(data.join("keyward.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.restart();
    let log = s.log.lock().clone();
    assert!(log.contains("has mode 755") && log.contains("chmod 700"), "{log}");
    assert!(log.contains("keyward.db has mode 644") && log.contains("chmod 600"), "{log}");
}

#[test]
fn root_key_guessing_is_slowed_down_counted_logged_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let s = Server::start_with(&[("KEYWARD_TEST_CLOCK_FILE", clock.to_str().unwrap())]);
    let guess = |i: usize| format!("kw_root_{:0>38}", i);
    for i in 0..20 {
        let r = s.raw_any("GET", "/v1/keys", Some(&guess(i)), None, &[]);
        assert_eq!(r.status, 401, "guess {i}: {}", r.text);
    }
    // The 21st guess, and even the right key, from that address: 429.
    for key in [guess(20), s.root.clone()] {
        let r = s.raw_any("GET", "/v1/keys", Some(&key), None, &[]);
        let p = r.problem(429);
        assert!(p["detail"].as_str().unwrap().contains("too many failed root-key authentications"), "{p}");
        let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((55..=60).contains(&wait), "Retry-After {wait}");
    }
    // The verify fast path authenticates the same way.
    let r = s.raw_any(
        "POST",
        "/v1/keys/verify",
        Some(&s.root),
        Some(r#"{"key":"x"}"#),
        &[("Content-Type", "application/json")],
    );
    r.problem(429);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log.lock().contains("Blocked an address after repeated failed root-key authentications") {
        assert!(Instant::now() < deadline, "the block is not logged");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A minute later the address may try again; the next block lasts twice as long.
    std::fs::write(&clock, "61000").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.raw_any("GET", "/v1/keys", Some(&s.root), None, &[]).status != 200 {
        assert!(Instant::now() < deadline, "still blocked after the minute");
        std::thread::sleep(Duration::from_millis(30));
    }
    let metrics = s.raw_any("GET", "/metrics", None, None, &[]).text;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    assert_eq!(value("keyward_root_auth_failures_total"), 20.0);
    assert!(value("keyward_root_auth_throttled_total") >= 3.0);
    let alerts = s.call("GET", "/v1/alerts?rule=root_auth_failures", None).json();
    let a = &alerts["data"][0];
    assert_eq!(a["subject"]["ip"], "127.0.0.1", "{alerts}");
    assert_eq!(a["severity"], "high", "{alerts}");
    for i in 100..120 {
        assert_eq!(s.raw_any("GET", "/v1/keys", Some(&guess(i)), None, &[]).status, 401);
    }
    let r = s.raw_any("GET", "/v1/keys", Some(&s.root), None, &[]);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((115..=120).contains(&wait), "the second block doubles: {wait}");
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install curl)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The subject of the certificate the server presents now.
fn served_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).replace(' ', "")
}

/// A server on HTTPS with a certificate `leaf` from a private CA, and `config`.
struct Https {
    _dir: tempfile::TempDir,
    ca: crate::util::TestCa,
    ca_pem: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    s: Server,
}

fn https(leaf: &str, config: &str) -> Https {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::util::TestCa::new(dir.path());
    let (cert, key) = ca.leaf(leaf, false);
    let ca_pem = ca.ca().display().to_string();
    let s = Server::start_full(
        &[
            ("KEYWARD_TLS_CERT", cert.to_str().unwrap()),
            ("KEYWARD_TLS_KEY", key.to_str().unwrap()),
            ("TEST_CA", &ca_pem),
        ],
        Some(config),
    );
    Https { _dir: dir, ca, ca_pem, cert, key, s }
}

#[test]
fn https_with_a_private_ca_for_curl_and_the_cli_with_hsts_and_a_certificate_reload() {
    // `_dir` is bound (not `..`): it holds the certificate files for the whole test.
    let Https { ca, ca_pem, cert, key, s, _dir } = https("server1", "[tls]\nreload_check_ms = 200\n");
    assert!(s.url("").starts_with("https://"));
    // The harness itself goes over HTTPS.
    let ks = s.keyspace();
    let (_, api_key) = s.key(json!({"keyspace_id": ks}));
    assert_eq!(s.code(&api_key), "VALID");

    let url = s.url("/healthz");
    let (ok, out) = curl(&["--cacert", &ca_pem, "-D", "-", "-o", "/dev/null", &url]);
    assert!(ok, "{out}");
    assert!(out.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{out}");
    let (ok, out) = curl(&["-o", "/dev/null", &url]);
    assert!(!ok && out.contains("certificate"), "an unknown CA must fail: {out}");
    let (ok, _) = curl(&["-o", "/dev/null", &url.replace("https://", "http://")]);
    assert!(!ok, "plain HTTP on the TLS port must fail");
    let (ok, out) = curl(&["--cacert", &ca_pem, "--tls-max", "1.2", "-o", "/dev/null", &url]);
    assert!(!ok, "TLS 1.2 is off by default: {out}");
    let (ok, out) = curl(&["--cacert", &ca_pem, "--tlsv1.3", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert!(ok && out == "200", "{out}");

    // The CLI trusts the private CA through KEYWARD_CA_CERT.
    let cli = |ca: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["keyspaces", "list"]).env("KEYWARD_SERVER", s.url("")).env("KEYWARD_ROOT_KEY", &s.root);
        if let Some(ca) = ca {
            cmd.env("KEYWARD_CA_CERT", ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(Some(&ca_pem));
    assert!(ok && out.contains(&ks), "{out}");
    let (ok, out) = cli(None);
    assert!(!ok && out.contains("reaching"), "{out}");

    // A new certificate written over the files is served without a restart.
    assert!(served_subject(s.port).contains("CN=server1"), "{}", served_subject(s.port));
    let (cert2, key2) = ca.leaf("server2", false);
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_subject(s.port).contains("CN=server2") {
        assert!(Instant::now() < deadline, "the new certificate was not picked up:\n{}", s.log.lock());
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log.lock().contains("Reloaded the TLS certificate") {
        assert!(Instant::now() < deadline, "the reload is not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.code(&api_key), "VALID");
}

#[test]
fn sighup_reloads_the_certificate_and_a_broken_one_keeps_the_old() {
    // File checks effectively off: only SIGHUP reloads here.
    let Https { ca, ca_pem, cert, key, s, _dir } =
        https("first", "[tls]\nreload_check_ms = 3600000\nmin_version = \"1.2\"\n");
    let (ok, out) =
        curl(&["--cacert", &ca_pem, "--tls-max", "1.2", "-o", "/dev/null", "-w", "%{http_code}", &s.url("/healthz")]);
    assert!(ok && out == "200", "min_version 1.2 takes TLS 1.2: {out}");
    std::fs::write(&cert, "not a certificate").unwrap();
    let hup = || assert!(Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log.lock().contains("Reloading the TLS certificate failed") {
        assert!(Instant::now() < deadline, "no reload on SIGHUP:\n{}", s.log.lock());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served_subject(s.port).contains("CN=first"), "the old certificate stays");
    let (cert2, key2) = ca.leaf("second", false);
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_subject(s.port).contains("CN=second") {
        assert!(Instant::now() < deadline, "SIGHUP did not load the new certificate:\n{}", s.log.lock());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn root_key_callers_need_a_client_certificate_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::util::TestCa::new(dir.path());
    let (cert, key) = ca.leaf("server", false);
    let (client_cert, client_key) = ca.leaf("ops", true);
    let other_dir = tempfile::tempdir().unwrap();
    let other = crate::util::TestCa::new(other_dir.path());
    let (rogue_cert, rogue_key) = other.leaf("rogue", true);
    let p = |p: &Path| p.display().to_string();
    let ca_pem = p(&ca.ca());
    let s = Server::start_with(&[
        ("KEYWARD_TLS_CERT", &p(&cert)),
        ("KEYWARD_TLS_KEY", &p(&key)),
        ("KEYWARD_TLS_CLIENT_CA", &ca_pem),
        ("TEST_CA", &ca_pem),
        ("TEST_CLIENT_CERT", &p(&client_cert)),
        ("TEST_CLIENT_KEY", &p(&client_key)),
    ]);
    // With the client certificate (the harness), management works.
    let ks = s.keyspace();
    let auth = format!("Authorization: Bearer {}", s.root);
    let keys = s.url("/v1/keys");
    let (ok, out) = curl(&["--cacert", &ca_pem, "-H", &auth, "-w", " %{http_code}", &keys]);
    assert!(ok && out.ends_with(" 401") && out.contains("client-certificate-required"), "{out}");
    let (ok, out) = curl(&["--cacert", &ca_pem, "-o", "/dev/null", "-w", "%{http_code}", &s.url("/healthz")]);
    assert!(ok && out == "200", "no client certificate is needed without a root key: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        &ca_pem,
        "--cert",
        &p(&client_cert),
        "--key",
        &p(&client_key),
        "-H",
        &auth,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &keys,
    ]);
    assert!(ok && out == "200", "{out}");
    let (ok, out) =
        curl(&["--cacert", &ca_pem, "--cert", &p(&rogue_cert), "--key", &p(&rogue_key), "-H", &auth, &keys]);
    assert!(!ok, "a certificate from another CA must not get through: {out}");
    // The CLI presents one from KEYWARD_CLIENT_CERT / KEYWARD_CLIENT_KEY.
    let out = Command::new(BIN)
        .args(["keyspaces", "list"])
        .env("KEYWARD_SERVER", s.url(""))
        .env("KEYWARD_ROOT_KEY", &s.root)
        .env("KEYWARD_CA_CERT", &ca_pem)
        .env("KEYWARD_CLIENT_CERT", p(&client_cert))
        .env("KEYWARD_CLIENT_KEY", p(&client_key))
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&ks), "{out:?}");
}

#[test]
fn root_keys_expire_rotate_with_an_overlap_and_show_their_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    let mut s = Server::start_with(&[
        ("KEYWARD_TEST_CLOCK_FILE", clock.to_str().unwrap()),
        ("KEYWARD_LAST_USED_FLUSH_MS", "100"),
    ]);
    // Expiry: a key made for an hour works, then is refused with a clear detail.
    let temp = s.create("/v1/root-keys", json!({"name": "ci", "role": "auditor", "ttl_ms": 3_600_000}));
    let temp_key = temp["key"].as_str().unwrap().to_owned();
    assert!(temp["expires_at"].is_string(), "{temp}");
    assert_eq!(s.call_as(&temp_key, "GET", "/v1/keys", None).status, 200);
    s.call("POST", "/v1/root-keys", Some(json!({"name": "x", "role": "admin", "expires_at": "2001-01-01T00:00:00Z"})))
        .problem(400);

    // Rotation with an overlap: both keys work until the overlap ends.
    let ops = s.create("/v1/root-keys", json!({"name": "ops", "role": "key_manager"}));
    let (ops_id, ops_key) = (ops["id"].as_str().unwrap().to_owned(), ops["key"].as_str().unwrap().to_owned());
    assert_eq!(s.call_as(&ops_key, "GET", "/v1/keys", None).status, 200);
    let rotated = s.call("POST", &format!("/v1/root-keys/{ops_id}/rotate"), Some(json!({"overlap_ms": 600_000})));
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let rotated = rotated.json();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, ops_key);
    assert_eq!(rotated["role"], "key_manager");
    assert_eq!(rotated["name"], "ops");
    assert!(rotated["previous"]["expires_at"].is_string(), "{rotated}");
    assert_eq!(s.call_as(&ops_key, "GET", "/v1/keys", None).status, 200, "the old key works during the overlap");
    assert_eq!(s.call_as(&new_key, "GET", "/v1/keys", None).status, 200);

    // Last use, written in the background, survives a restart.
    std::thread::sleep(Duration::from_millis(400));
    let list = s.call("GET", "/v1/root-keys", None).json();
    let find = |list: &serde_json::Value, id: &str| {
        list.as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap_or_else(|| panic!("{id} in {list}"))
    };
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert!(find(&list, &new_id)["last_used_at"].is_string(), "{list}");
    s.restart();
    let list = s.call("GET", "/v1/root-keys", None).json();
    assert!(find(&list, &new_id)["last_used_at"].is_string(), "not kept across a restart: {list}");
    assert!(find(&list, &ops_id)["last_used_at"].is_string(), "{list}");

    // Two hours later: the hour-long key and the overlap are over.
    std::fs::write(&clock, "7200000").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.call_as(&temp_key, "GET", "/v1/keys", None).status != 401 {
        assert!(Instant::now() < deadline, "the expired root key still works");
        std::thread::sleep(Duration::from_millis(30));
    }
    let p = s.call_as(&temp_key, "GET", "/v1/keys", None).problem(401);
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    s.call_as(&ops_key, "GET", "/v1/keys", None).problem(401);
    assert_eq!(s.call_as(&new_key, "GET", "/v1/keys", None).status, 200);
    // Rotating without an overlap ends the old key at once; the audit log has both.
    let again = s.call("POST", &format!("/v1/root-keys/{new_id}/rotate"), Some(json!({}))).json();
    s.call_as(&new_key, "GET", "/v1/keys", None).problem(401);
    assert_eq!(s.call_as(again["key"].as_str().unwrap(), "GET", "/v1/keys", None).status, 200);
    let audit = s.call("GET", "/v1/audit?action=root_key.rotate", None).json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 2, "{audit}");
    // Rotating a key that is gone is a 404.
    s.call("POST", &format!("/v1/root-keys/{ops_id}/rotate"), Some(json!({}))).problem(404);
}

#[test]
fn metrics_and_readiness_can_require_a_root_key() {
    let s = Server::start_with(&[("KEYWARD_OPS_NEED_ROOT_KEY", "1")]);
    for path in ["/metrics", "/readyz"] {
        s.raw_any("GET", path, None, None, &[]).problem(401);
        s.raw_any("GET", path, Some("kw_root_nothing"), None, &[]).problem(401);
    }
    let scraper = s.create("/v1/root-keys", json!({"name": "prometheus", "role": "verifier"}))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = s.raw_any("GET", "/metrics", Some(&scraper), None, &[]);
    assert!(m.status == 200 && m.text.contains("keyward_http_requests_total"), "{}", m.text);
    assert_eq!(s.raw_any("GET", "/readyz", Some(&scraper), None, &[]).json()["status"], "ready");
    assert_eq!(s.raw_any("GET", "/healthz", None, None, &[]).status, 200, "liveness stays open");
    // By default both are open (the control).
    let open = Server::start();
    assert_eq!(open.raw_any("GET", "/metrics", None, None, &[]).status, 200);
}

#[test]
fn recoverable_keys_are_revealed_to_admins_only_and_hash_only_keyspaces_refuse() {
    // Without a master key, a keyspace cannot keep recoverable keys.
    let plain = Server::start();
    let p = plain.call("POST", "/v1/keyspaces", Some(json!({"name": "r", "recoverable": true}))).problem(409);
    assert!(p["detail"].as_str().unwrap().contains("master key"), "{p}");

    let mk = new_master_key();
    let mut s = Server::start_with(&[("KEYWARD_MASTER_KEY", &mk)]);
    let rec = s.create("/v1/keyspaces", json!({"name": "partners", "prefix": "pk_live", "recoverable": true}));
    assert_eq!(rec["recoverable"], true);
    let rec = rec["id"].as_str().unwrap().to_owned();
    let hashed = s.keyspace();
    let (rid, rkey) = s.key(json!({"keyspace_id": rec, "owner_id": "partner-7"}));
    let (hid, _) = s.key(json!({"keyspace_id": hashed}));

    let shown = s.call("POST", &format!("/v1/keys/{rid}/reveal"), None);
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json()["key"], rkey.as_str());
    let p = s.call("POST", &format!("/v1/keys/{hid}/reveal"), None).problem(409);
    assert!(p["detail"].as_str().unwrap().contains("hashes only"), "{p}");
    for role in ["key_manager", "auditor", "verifier"] {
        let k = s.create("/v1/root-keys", json!({"name": role, "role": role}))["key"].as_str().unwrap().to_owned();
        s.call_as(&k, "POST", &format!("/v1/keys/{rid}/reveal"), None).problem(403);
    }
    // The sealed copy is in the store, not the key: the file holds no trace of it.
    s.stop();
    for (path, bytes) in files_under(&s.data_dir()) {
        assert!(!contains(&bytes, &rkey), "the key is readable in {}", path.display());
    }
    s.restart();
    assert_eq!(s.call("POST", &format!("/v1/keys/{rid}/reveal"), None).json()["key"], rkey.as_str());
    // A rotated key of a recoverable keyspace is recoverable too.
    let rotated = s.call("POST", &format!("/v1/keys/{rid}/rotate"), Some(json!({}))).json();
    let (nid, nkey) = (rotated["id"].as_str().unwrap(), rotated["key"].as_str().unwrap());
    assert_eq!(s.call("POST", &format!("/v1/keys/{nid}/reveal"), None).json()["key"], nkey);
    // Rate-limited per root key: 10 a minute (two used above, after the restart one).
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(s.raw_any("POST", &format!("/v1/keys/{nid}/reveal"), Some(&s.root), None, &[]));
    }
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429 within ten more reveals");
    assert!(limited.header("retry-after").is_some());
    // Audited, without the key.
    let audit = s.call("GET", "/v1/audit?action=key.reveal", None);
    assert!(audit.json()["data"].as_array().unwrap().len() >= 3, "{}", audit.text);
    assert!(!audit.text.contains(&rkey) && !audit.text.contains(nkey));
    assert!(!s.log.lock().contains(&rkey) && !s.log.lock().contains(nkey), "a key in the log");
}

#[test]
fn init_can_generate_the_master_key_of_a_new_encrypted_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (data, key_file) = (dir.path().join("d"), dir.path().join("master.key"));
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .arg("--generate-master-key")
        .arg(&key_file)
        .env_remove("KEYWARD_MASTER_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Wrote a new master key"), "{err}");
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(root.starts_with("kw_root_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(data.join("keyring.json").exists() && data.join("pepper.enc").exists());
    let found: Vec<_> = files_under(&data).into_iter().filter(|(_, b)| b.starts_with(b"SQLite format 3\0")).collect();
    assert!(found.is_empty(), "plain SQLite files in an encrypted data dir");
    let err = refused_start(&data, &[]);
    assert!(err.contains("is encrypted"), "{err}");
    // A second time: the key file exists, and so does the data dir.
    let again = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .arg("--generate-master-key")
        .arg(dir.path().join("other.key"))
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // Inside the data dir is refused.
    let inside = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir.path().join("e"))
        .arg("--generate-master-key")
        .arg(dir.path().join("e/master.key"))
        .output()
        .unwrap();
    assert!(
        !inside.status.success() && String::from_utf8_lossy(&inside.stderr).contains("outside the data dir"),
        "{inside:?}"
    );
}

#[test]
fn the_master_key_can_come_from_a_command_which_rotation_runs_again() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("vault-answer");
    std::fs::write(&file, new_master_key()).unwrap();
    let command = format!("cat {}", file.display());
    let mut s = Server::start_with(&[("KEYWARD_MASTER_KEY_COMMAND", &command)]);
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks}));
    let before = s.call("GET", "/v1/master-key", None).json()["master_key_id"].as_str().unwrap().to_owned();
    // The "vault" now answers a new key; rotation asks it again.
    std::fs::write(&file, new_master_key()).unwrap();
    let (ok, out, err) = crate::cli::cli(&s, &["master-key", "rotate"]);
    assert!(ok && out.contains(&format!("{before} ->")), "{out}{err}");
    s.restart();
    assert_eq!(s.code(&key), "VALID");
    // A command that fails stops the start, saying which.
    s.stop();
    let err = refused_start(&s.data_dir(), &[("KEYWARD_MASTER_KEY_COMMAND", "echo vault sealed >&2; exit 3")]);
    assert!(err.contains("the master key command") && err.contains("vault sealed"), "{err}");

    // With the key in the environment, a rotation must name the new key.
    let env_key = new_master_key();
    let e = Server::start_with(&[("KEYWARD_MASTER_KEY", &env_key)]);
    let p = e.call("POST", "/v1/master-key/rotate", Some(json!({}))).problem(400);
    assert!(p["detail"].as_str().unwrap().contains("new_master_key is required"), "{p}");
    // Two sources at once are refused.
    let err = refused_start(
        &tempfile::tempdir().unwrap().path().join("d"),
        &[("KEYWARD_MASTER_KEY", &env_key), ("KEYWARD_MASTER_KEY_COMMAND", "true")],
    );
    assert!(err.contains("in one way only"), "{err}");
}
