//! Test harness: runs the real `keyward` binary on a free port with a temp
//! data dir and talks to it over HTTP. Every response body is kept so tests
//! can search them for secrets.

#![allow(dead_code)]

pub mod mmdb;

use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub root: String,
    child: Option<Child>,
    /// Everything the server wrote to stderr, across restarts.
    pub log: Arc<Mutex<String>>,
    /// Every response body, with whether it was marked as a creating response.
    pub bodies: Mutex<Vec<(bool, String)>>,
    pub env: Vec<(String, String)>,
    /// A TOML config passed with `--config`, if any.
    pub config: Option<String>,
    /// The data dir, when not the default `<temp dir>/data`.
    pub data: Option<PathBuf>,
    /// The TLS client configuration when the server was started with
    /// `KEYWARD_TLS_CERT`: trusting `TEST_CA`, presenting `TEST_CLIENT_CERT` /
    /// `TEST_CLIENT_KEY` when given (test-only names).
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
}

pub struct Res {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Asserts a problem+json error with this status, and returns its body.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/problem+json")),
            "not problem+json: {:?} {}",
            self.header("content-type"),
            self.text
        );
        let v = self.json();
        assert_eq!(v["status"], status);
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        assert!(v["request_id"].as_str().is_some(), "{v}");
        v
    }
}

/// Sends `req` (with `body`, if any) and reads the answer, whatever its status.
pub fn send(req: ureq::Request, body: Option<&str>) -> Result<Res, String> {
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = res.status();
    let headers =
        res.headers_names().into_iter().map(|n| (n.clone(), res.header(&n).unwrap_or("").to_owned())).collect();
    Ok(Res { status, headers, text: res.into_string().map_err(|e| e.to_string())? })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Self::start_full(env, None)
    }

    /// Starts with environment variables and a TOML config file. In the
    /// config, `{dir}` stands for the test's temp dir.
    pub fn start_full(env: &[(&str, &str)], config: Option<&str>) -> Server {
        Self::start_in(env, config, None)
    }

    /// A node of a cluster over a shared store (`KEYWARD_DATABASE_URL` in
    /// `env`): the first prints the admin root key; the others are given it.
    pub fn start_node(env: &[(&str, &str)], root: Option<&str>) -> Server {
        Self::start_node_with(env, None, root)
    }

    /// [`Server::start_node`] with a TOML config (`{dir}` as in [`Server::start_full`]).
    pub fn start_node_with(env: &[(&str, &str)], config: Option<&str>, root: Option<&str>) -> Server {
        let mut s = Self::unstarted(env, config, None);
        let printed = s.spawn();
        s.root = match root {
            Some(r) => {
                assert_eq!(printed, None, "a node joining a cluster must not make a root key");
                r.to_owned()
            }
            None => printed.expect("the first node of a new cluster prints a root key"),
        };
        s
    }

    fn start_in(env: &[(&str, &str)], config: Option<&str>, data: Option<&Path>) -> Server {
        let mut s = Self::unstarted(env, config, data);
        s.root = s.spawn().expect("a fresh data dir prints a root key");
        s
    }

    fn unstarted(env: &[(&str, &str)], config: Option<&str>, data: Option<&Path>) -> Server {
        let mut s = Server {
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            root: String::new(),
            child: None,
            log: Arc::default(),
            bodies: Mutex::default(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            config: None,
            data: data.map(Path::to_owned),
            tls_client: None,
        };
        s.tls_client = s.client_config();
        if let Some(c) = config {
            let text = c.replace("{dir}", &s.dir.path().display().to_string());
            std::fs::write(s.dir.path().join("keyward.toml"), &text).unwrap();
            s.config = Some(text);
        }
        s
    }

    /// The server's process id (for its memory figures in /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("the server runs")
    }

    /// Starts with the gateway on a free port in front of `upstream`; the
    /// proxy's address is in `KEYWARD_PROXY_LISTEN` of [`Server::env`].
    pub fn start_proxy(upstream: &str, config: Option<&str>) -> Server {
        let listen = format!("127.0.0.1:{}", free_port());
        Self::start_full(&[("KEYWARD_PROXY_LISTEN", &listen), ("KEYWARD_UPSTREAM", upstream)], config)
    }

    /// A URL on the gateway.
    pub fn proxy_url(&self, path: &str) -> String {
        let listen = self.env.iter().find(|(k, _)| k == "KEYWARD_PROXY_LISTEN").map(|(_, v)| v.clone());
        format!("http://{}{path}", listen.expect("started with start_proxy"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// Starts with the data dir at `data` (e.g. on a disk of its own).
    pub fn start_at(data: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_in(env, None, Some(data))
    }

    /// The request ids of every stored usage event (streamed as NDJSON).
    pub fn stored_request_ids(&self) -> std::collections::BTreeSet<String> {
        self.raw("GET", "/v1/events", Some(&self.root.clone()), None, &[("Accept", "application/x-ndjson")])
            .text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["request_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Starts the binary; returns the first line of stdout, if any, which on
    /// a fresh data dir is the admin root key.
    fn spawn(&mut self) -> Option<String> {
        // A free port can be taken by another test's server between our probe
        // and the bind: then the bind fails, and we try another port. The root
        // key printed by a failed attempt is kept (the data dir is initialized).
        let mut printed = None;
        for _ in 0..5 {
            let (ok, first) = self.spawn_once();
            printed = printed.or(first);
            if ok {
                return printed;
            }
        }
        panic!("keyward could not bind a free port:\n{}", self.log.lock());
    }

    /// One start; false when the port was taken.
    fn spawn_once(&mut self) -> (bool, Option<String>) {
        self.port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("KEYWARD_ROOT_KEY")
            .env("KEYWARD_LOG", "info,keyward=debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if self.config.is_some() {
            cmd.arg("--config").arg(self.dir.path().join("keyward.toml"));
        }
        let mut child = cmd.spawn().expect("starting keyward");
        let mut stderr = child.stderr.take().unwrap();
        // This attempt's own log, so its readiness line is not confused with an earlier one.
        let attempt_log: Arc<Mutex<String>> = Arc::default();
        let (log, own) = (self.log.clone(), attempt_log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                log.lock().push_str(&text);
                own.lock().push_str(&text);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        self.child = Some(child);
        let ok = self.wait_ready(&attempt_log);
        (ok, rx.recv_timeout(Duration::from_millis(500)).ok().flatten())
    }

    /// Waits until this process says it serves and answers /healthz; false
    /// when it exited because the port was taken.
    fn wait_ready(&mut self, own: &Mutex<String>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if own.lock().contains("keyward is serving")
                && self
                    .agent()
                    .get(&self.url("/healthz"))
                    .timeout(Duration::from_secs(1))
                    .call()
                    .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Let the stderr reader catch up before judging why.
                std::thread::sleep(Duration::from_millis(50));
                if own.lock().contains("binding 127.0.0.1") {
                    self.child = None;
                    return false;
                }
                panic!("keyward exited with {status} during start:\n{}", self.log.lock());
            }
            assert!(Instant::now() < deadline, "keyward did not become healthy:\n{}", self.log.lock());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.port, path)
    }

    fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn tls(&self) -> bool {
        self.env_value("KEYWARD_TLS_CERT").is_some()
    }

    /// A fresh client per call (as `ureq::request` makes): no connection is
    /// reused, so one that the server closed cannot fail the next call.
    pub fn agent(&self) -> ureq::Agent {
        match &self.tls_client {
            Some(cfg) => ureq::AgentBuilder::new().tls_config(cfg.clone()).build(),
            None => ureq::agent(),
        }
    }

    fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let ca = self.env_value("TEST_CA")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match (self.env_value("TEST_CLIENT_CERT"), self.env_value("TEST_CLIENT_KEY")) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            _ => builder.with_no_client_auth(),
        };
        Some(Arc::new(config))
    }

    /// SIGTERM, wait for a clean exit, and start again on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        let printed = self.spawn();
        assert_eq!(printed, None, "a used data dir must not print a new root key");
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGKILL (no flush, no goodbye) and start again on the same data dir.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let printed = self.spawn();
        assert_eq!(printed, None);
    }

    /// SIGTERM and wait; asserts a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    assert!(st.success(), "keyward exited with {st}:\n{}", self.log.lock());
                    break;
                }
                assert!(Instant::now() < deadline, "keyward did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A request with an explicit root key (or none), a raw body and headers;
    /// any 5xx fails the test.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Res {
        let r = self.raw_any(method, path, auth, body, headers);
        assert!(r.status < 500, "{method} {path} answered {}: {}", r.status, r.text);
        r
    }

    /// [`Server::raw`] that accepts any status (for tests that expect a 503).
    pub fn raw_any(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut req = self.agent().request(method, &self.url(path)).timeout(Duration::from_secs(10));
        if let Some(a) = auth {
            req = req.set("Authorization", &format!("Bearer {a}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        send(req, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn record(&self, creating: bool, r: &Res) {
        self.bodies.lock().push((creating, r.text.clone()));
    }

    /// A JSON call as `key`; the body is recorded for the secret search.
    pub fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Res {
        let b = body.map(|b| b.to_string());
        let r = self.raw(method, path, Some(key), b.as_deref(), &[("Content-Type", "application/json")]);
        self.record(false, &r);
        r
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Res {
        self.call_as(&self.root.clone(), method, path, body)
    }

    /// A call whose answer legitimately holds a new secret (create calls).
    pub fn create_as(&self, key: &str, path: &str, body: Value) -> Value {
        let r = self.raw("POST", path, Some(key), Some(&body.to_string()), &[("Content-Type", "application/json")]);
        assert_eq!(r.status, 201, "{}", r.text);
        self.record(true, &r);
        r.json()
    }

    pub fn create(&self, path: &str, body: Value) -> Value {
        self.create_as(&self.root.clone(), path, body)
    }

    pub fn keyspace(&self) -> String {
        self.call("POST", "/v1/keyspaces", Some(serde_json::json!({"name": "test"}))).json()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a key; returns (id, key).
    pub fn key(&self, body: Value) -> (String, String) {
        let v = self.create("/v1/keys", body);
        (v["id"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned())
    }

    /// Verifies as the admin root key; returns the decision body.
    pub fn verify(&self, key: &str) -> Value {
        self.verify_as(&self.root.clone(), serde_json::json!({ "key": key }))
    }

    pub fn verify_as(&self, root: &str, body: Value) -> Value {
        let r = self.call_as(root, "POST", "/v1/keys/verify", Some(body));
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    pub fn code(&self, key: &str) -> String {
        self.verify(key)["code"].as_str().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private CA made with the openssl CLI (`ca.pem`), and leaf certificates
/// signed by it, for HTTPS tests.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let ca = TestCa { dir: dir.to_owned() };
        ca.openssl(
            &[
                &["req", "-x509"][..],
                &Self::EC,
                &["-days", "2", "-subj", "/CN=keyward test CA", "-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        ca
    }

    const EC: [&'static str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("this test makes certificates with openssl: install it (Debian: apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `{name}.pem` and `{name}.key`: for the server (localhost and
    /// 127.0.0.1) or, with `client`, a client certificate.
    pub fn leaf(&self, name: &str, client: bool) -> (PathBuf, PathBuf) {
        let (key, csr, ext, pem) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"), format!("{name}.pem"));
        self.openssl(
            &[&["req"][..], &Self::EC, &["-subj", &format!("/CN={name}"), "-keyout", &key, "-out", &csr]].concat(),
        );
        let usage = if client {
            "extendedKeyUsage=clientAuth\n"
        } else {
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        };
        std::fs::write(self.dir.join(&ext), format!("basicConstraints=CA:FALSE\n{usage}")).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
        (self.dir.join(pem), self.dir.join(key))
    }
}

/// Every file under `dir`, as bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A small HTTP endpoint for sink tests: records every request, answers 503
/// while `down` is set, and 200 with a fitting body otherwise.
pub struct Capture {
    pub port: u16,
    pub down: Arc<std::sync::atomic::AtomicBool>,
    pub requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Capture {
    pub fn start() -> Capture {
        Self::start_inner(None)
    }

    /// The same over TLS, with the given certificate chain and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Capture {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_inner(Some(Arc::new(config)))
    }

    fn start_inner(tls: Option<Arc<rustls::ServerConfig>>) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
        let (d, r) = (down.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (d, r, tls) = (d.clone(), r.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    match tls {
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
                            serve_one(rustls::StreamOwned::new(conn, stream), &d, &r);
                        }
                        None => serve_one(stream, &d, &r),
                    }
                });
            }
        });
        Capture { port, down, requests }
    }

    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Answers one HTTP/1.1 request on `stream` (then closes it).
fn serve_one<S: Read + std::io::Write>(
    mut stream: S,
    down: &std::sync::atomic::AtomicBool,
    requests: &Mutex<Vec<(String, String, String)>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Read the head byte by byte up to the blank line (small requests, tests only).
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or("").split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = String::new();
    let mut len = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push_str(line);
        headers.push_str("\r\n");
    }
    let mut body = vec![0u8; len];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    let (status, reply) = if down.load(std::sync::atomic::Ordering::SeqCst) {
        ("503 Service Unavailable", "{}".to_owned())
    } else {
        requests.lock().push((path.clone(), headers, String::from_utf8_lossy(&body).into_owned()));
        let reply = if path.ends_with("/_bulk") {
            r#"{"took":1,"errors":false,"items":[]}"#
        } else if path.contains("/services/collector") {
            r#"{"text":"Success","code":0}"#
        } else {
            "{}"
        };
        ("200 OK", reply.to_owned())
    };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len())
            .as_bytes(),
    );
    let _ = stream.flush();
}

/// A Python venv under `target/` with `packages` installed, made once (tests
/// run in threads of one process: a lock keeps two from making it at once).
/// Returns its `python`.
pub fn python_venv(name: &str, packages: &[&str], skip_var: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target").join(name);
    let python = venv.join("bin/python");
    let pinned = venv.join(format!(".pinned-{}", packages.join("-")));
    if python.exists() && pinned.exists() {
        return python;
    }
    let made = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "this test needs python3 with venv (Debian: apt-get install python3-venv), or set {skip_var}=1"
    );
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .args(packages)
        .status()
        .expect("running pip");
    assert!(pip.success(), "installing {packages:?} from PyPI failed (network?), or set {skip_var}=1");
    std::fs::write(&pinned, "").unwrap();
    python
}

/// A minimal SMTP server that accepts every message (a real protocol
/// exchange, no TLS): what a local relay would do. Messages are kept whole.
pub struct SmtpSink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = messages.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream);
                    let _ = out.write_all(b"220 test.local ESMTP\r\n");
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 test.local\r\n",
                            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                            "DATA" => {
                                let _ = out.write_all(b"354 go ahead\r\n");
                                let mut message = String::new();
                                loop {
                                    line.clear();
                                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line == ".\r\n" {
                                        break;
                                    }
                                    message.push_str(&line);
                                }
                                kept.lock().push(message);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                let _ = out.write_all(b"221 bye\r\n");
                                return;
                            }
                            _ => b"502 not implemented\r\n",
                        };
                        let _ = out.write_all(reply);
                    }
                });
            }
        });
        SmtpSink { port, messages }
    }
}

/// The clock of the server, moved by the test (`KEYWARD_TEST_CLOCK_FILE`).
pub struct Clock {
    pub file: std::path::PathBuf,
    pub skew: i64,
}

impl Clock {
    pub fn new(dir: &std::path::Path) -> Clock {
        let file = dir.join("clock");
        std::fs::write(&file, "0").unwrap();
        Clock { file, skew: 0 }
    }

    /// Moves the server's clock to `skew` ms ahead without a probe (which
    /// writes a keyspace): the binary reads the file every 20 ms, so after
    /// 150 ms it follows, give or take a late thread.
    pub fn set_quietly(&mut self, skew: i64) {
        assert!(skew >= self.skew, "the test clock only moves forward");
        self.skew = skew;
        std::fs::write(&self.file, skew.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Moves the server's clock to `skew` ms ahead of the real one, and waits until it follows.
    pub fn set(&mut self, s: &Server, skew: i64) {
        assert!(skew >= self.skew, "the test clock only moves forward");
        self.skew = skew;
        std::fs::write(&self.file, skew.to_string()).unwrap();
        let want = real_now() + skew - 1000;
        crate::util::eventually(5, "the server's clock", || {
            // A throwaway keyspace's creation instant shows the server's clock.
            let ks = s.create("/v1/keyspaces", serde_json::json!({"name": "clock-probe"}));
            let at = keyward_core::time::parse_rfc3339(ks["created_at"].as_str().unwrap()).unwrap();
            (at >= want).then_some(())
        });
    }
}

pub fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Polls `f` every 50 ms until it gives a value, for at most `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
