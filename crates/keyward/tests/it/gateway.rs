//! The gateway (`serve --proxy-listen --upstream`) in front of a real HTTP
//! upstream, and the tower layer of the example app in both modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::util::{Res, Server, free_port, send};

#[path = "../../../gateway/examples/axum_app.rs"]
#[allow(dead_code)]
mod axum_app;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_bytes: u64,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 upstream (hyper) that records every request and counts
/// its body without keeping it, and answers `{"bytes": n}`.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn start() -> Upstream {
        use http_body_util::BodyExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((io, _)) = listener.accept().await else { continue };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let s = s.clone();
                            async move {
                                let method = req.method().to_string();
                                let target = req.uri().to_string();
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                    .collect();
                                let mut body = req.into_body();
                                let mut n = 0u64;
                                while let Some(frame) = body.frame().await {
                                    if let Some(d) = frame.ok().and_then(|f| f.into_data().ok()) {
                                        n += d.len() as u64;
                                    }
                                }
                                s.lock().push(Seen { method, target, headers, body_bytes: n });
                                let answer = format!("{{\"bytes\":{n}}}");
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .header("x-upstream", "yes")
                                        .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                            .await;
                    });
                }
            });
        });
        Upstream { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn count(&self) -> usize {
        self.seen.lock().len()
    }

    fn last(&self) -> Seen {
        self.seen.lock().last().cloned().expect("the upstream saw a request")
    }
}

/// A request through the gateway.
fn through(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Res {
    let mut req = ureq::request(method, &s.proxy_url(path)).timeout(Duration::from_secs(20));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    send(req, body).unwrap_or_else(|e| panic!("{method} {path} through the proxy: {e}"))
}

/// The stored event of a request id, once written.
fn event_of(s: &Server, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = s.call("GET", "/v1/events?limit=1000", None).json();
        if let Some(e) = page["data"].as_array().unwrap().iter().find(|e| e["request_id"] == request_id) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no event for {request_id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_valid_key_reaches_the_upstream_without_the_key_and_with_its_identity() {
    let up = Upstream::start();
    let s = Server::start_proxy(&up.url(), None);
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "owner_id": "acme", "scopes": ["read", "write"]}));

    // Forged identity headers from the client are replaced, the key is gone.
    let r = through(
        &s,
        "POST",
        "/orders/7?page=2",
        &[
            ("X-API-Key", &key),
            ("X-Keyward-Key-Id", "key_forged"),
            ("User-Agent", "shop/1.0"),
            ("Connection", "keep-alive, x-hop"),
            ("X-Hop", "1"),
        ],
        Some(&"x".repeat(1234)),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.json()["bytes"], 1234);
    let rid = r.header("x-request-id").expect("a request id").to_owned();
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/orders/7?page=2"));
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header("x-hop"), None, "a field named by Connection is hop-by-hop");
    assert_eq!(seen.header("x-keyward-key-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-keyward-owner-id"), Some("acme"));
    assert_eq!(seen.header("x-keyward-keyspace-id"), Some(ks.as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-request-id"), Some(rid.as_str()));
    assert!(!seen.headers.iter().any(|(_, v)| v.contains(&key)), "the key reached the upstream: {:?}", seen.headers);

    // The verify's own event has what the proxy saw.
    let e = event_of(&s, &rid);
    assert_eq!(
        (e["kind"].as_str(), e["code"].as_str(), e["status"].as_u64()),
        (Some("proxy"), Some("VALID"), Some(200))
    );
    assert_eq!(e["key_id"], id.as_str());
    assert_eq!(e["bytes_in"], 1234);
    assert_eq!(e["bytes_out"].as_u64(), Some(r.text.len() as u64));
    assert!(e["latency_ms"].is_u64(), "{e}");
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str(), e["ip"].as_str()),
        (Some("POST"), Some("/orders/7"), Some("127.0.0.1"))
    );

    // A bearer token works as well, and the Authorization header is not forwarded.
    let r = through(&s, "GET", "/orders", &[("Authorization", &format!("Bearer {key}"))], None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(up.last().header("authorization"), None);

    let log = s.log.lock().clone();
    assert!(!log.contains(&key), "the key is in the server log");
}

#[test]
fn every_refusal_has_its_status_as_problem_json_and_never_reaches_the_upstream() {
    let up = Upstream::start();
    let config = format!(
        "[proxy]\n[[proxy.routes]]\nprefix = \"/scoped/\"\nupstream = \"{}\"\nscopes = [\"orders:read\"]\n",
        up.url()
    );
    let s = Server::start_proxy(&up.url(), Some(&config));
    let ks = s.keyspace();
    let key = |body: Value| {
        let mut b = body;
        b["keyspace_id"] = ks.clone().into();
        if b.get("scopes").is_none() {
            b["scopes"] = json!(["read"]);
        }
        s.key(b)
    };
    let (revoked_id, revoked) = key(json!({}));
    assert_eq!(
        s.call("POST", &format!("/v1/keys/{revoked_id}/revoke"), Some(json!({"reason": "compromised"}))).status,
        200
    );
    let (disabled_id, disabled) = key(json!({}));
    assert_eq!(s.call("PATCH", &format!("/v1/keys/{disabled_id}"), Some(json!({"enabled": false}))).status, 200);
    let (old_id, old) = key(json!({}));
    let rotated = s.call("POST", &format!("/v1/keys/{old_id}/rotate"), Some(json!({"overlap_ms": 0})));
    assert!(matches!(rotated.status, 200 | 201), "{}", rotated.text);
    let expires = keyward_core::time::to_rfc3339(keyward_core::time::now_ms() + 1500);
    let (_, expiring) = key(json!({"expires_at": expires}));
    let (_, far) = key(json!({"ip_allowlist": ["10.0.0.0/8"]}));
    let (_, unscoped) = key(json!({"scopes": ["orders:write"]}));
    let (_, limited) = key(json!({"ratelimits": [{"name": "burst", "limit": 2, "window_ms": 60000}]}));
    let (_, quota) = key(json!({"remaining": 1}));
    std::thread::sleep(Duration::from_millis(1600));
    let before = up.count();

    // (path, key sent in X-API-Key, status, code)
    let cases = [
        ("/a", None, 401, None),
        ("/a", Some("sk_notakey".to_owned()), 401, Some("MALFORMED")),
        ("/a", Some(revoked.clone()), 401, Some("REVOKED")),
        ("/a", Some(disabled.clone()), 401, Some("DISABLED")),
        ("/a", Some(old.clone()), 401, Some("ROTATED")),
        ("/a", Some(expiring.clone()), 401, Some("EXPIRED")),
        ("/a", Some(far.clone()), 403, Some("IP_NOT_ALLOWED")),
        ("/scoped/x", Some(unscoped.clone()), 403, Some("FORBIDDEN")),
    ];
    for (path, key, status, code) in &cases {
        let h: Vec<(&str, &str)> = key.iter().map(|k| ("X-API-Key", k.as_str())).collect();
        let r = through(&s, "GET", path, &h, None);
        let p = r.problem(*status);
        assert_eq!(p["code"].as_str(), *code, "{}", r.text);
        if *status == 401 {
            assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
        }
    }
    // An unknown but well-formed key: issue one in another keyspace's format and revoke nothing.
    let elsewhere = Server::start();
    let (_, other) = elsewhere.key(json!({"keyspace_id": elsewhere.keyspace()}));
    let r = through(&s, "GET", "/a", &[("X-API-Key", &other)], None);
    assert_eq!(r.problem(401)["code"], "NOT_FOUND");
    assert_eq!(up.count(), before, "a refused request reached the upstream");

    // Rate limit: admitted requests carry the headers, the third is 429 with matching figures.
    for left in [1, 0] {
        let r = through(&s, "GET", "/a", &[("X-API-Key", &limited)], None);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("ratelimit-policy"), Some("\"burst\";q=2;w=60"));
        let state = r.header("ratelimit").unwrap();
        assert!(state.starts_with(&format!("\"burst\";r={left};t=")), "{state}");
    }
    let r = through(&s, "GET", "/a", &[("X-API-Key", &limited)], None);
    assert_eq!(r.problem(429)["code"], "RATE_LIMITED");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    let state = r.header("ratelimit").unwrap();
    let t: u64 = state.rsplit_once(";t=").unwrap().1.parse().unwrap();
    assert!(state.starts_with("\"burst\";r=0;"), "{state}");
    assert_eq!(retry, t, "Retry-After and RateLimit's t agree");
    // The sliding window frees up within its length plus one bucket (1/20), rounded up.
    assert!((1..=64).contains(&t), "{t}");
    // The limiter's own view agrees: the same key verified over the API is limited too.
    assert_eq!(s.code(&limited), "RATE_LIMITED");

    // Quota: one request, then 429 with a Retry-After.
    assert_eq!(through(&s, "GET", "/a", &[("X-API-Key", &quota)], None).status, 200);
    let r = through(&s, "GET", "/a", &[("X-API-Key", &quota)], None);
    assert_eq!(r.problem(429)["code"], "USAGE_EXCEEDED");
    assert!(r.header("retry-after").is_some());
    assert_eq!(up.count(), before + 3, "only the admitted requests reached the upstream");
}

#[test]
fn a_route_pinned_to_a_keyspace_refuses_other_keyspaces_keys() {
    let up = Upstream::start();
    // The keyspace id is known only after start: write the config, then restart.
    let mut s = Server::start_proxy(&up.url(), None);
    let pinned = s.keyspace();
    let other = s.keyspace();
    let (_, good) = s.key(json!({"keyspace_id": pinned, "scopes": ["read"]}));
    let (_, bad) = s.key(json!({"keyspace_id": other, "scopes": ["read"]}));
    let config = format!(
        "[proxy]\n[[proxy.routes]]\nprefix = \"/billing/\"\nupstream = \"{}\"\nkeyspace_id = \"{pinned}\"\n",
        up.url()
    );
    std::fs::write(s.dir.path().join("keyward.toml"), &config).unwrap();
    s.config = Some(config);
    s.restart();
    assert_eq!(through(&s, "GET", "/billing/1", &[("X-API-Key", &good)], None).status, 200);
    assert_eq!(through(&s, "GET", "/billing/1", &[("X-API-Key", &bad)], None).problem(401)["code"], "NOT_FOUND");
    // Outside the route, the default upstream takes any keyspace's key.
    assert_eq!(through(&s, "GET", "/other", &[("X-API-Key", &bad)], None).status, 200);
}

#[test]
fn a_50_mb_body_streams_through_with_bounded_memory() {
    let up = Upstream::start();
    let s = Server::start_proxy(&up.url(), None);
    let (_, key) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["write"]}));
    let rss = |field: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    let before = rss("VmRSS:");
    const SIZE: u64 = 50 * 1024 * 1024;
    // A reader, so the client streams (chunked) rather than holding 50 MB either.
    struct Zeros(u64);
    impl std::io::Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.0) as usize;
            buf[..n].fill(b'z');
            self.0 -= n as u64;
            Ok(n)
        }
    }
    let res = ureq::post(&s.proxy_url("/upload"))
        .timeout(Duration::from_secs(60))
        .set("X-API-Key", &key)
        .send(Zeros(SIZE))
        .expect("the upload passes");
    let rid = res.header("x-request-id").unwrap().to_owned();
    let body: Value = serde_json::from_str(&res.into_string().unwrap()).unwrap();
    assert_eq!(body["bytes"], SIZE);
    assert_eq!(up.last().body_bytes, SIZE);
    let peak = rss("VmHWM:");
    assert!(
        peak < before + 24 * 1024 * 1024,
        "the proxy grew from {before} to a peak of {peak} bytes for a 50 MB body"
    );
    assert_eq!(event_of(&s, &rid)["bytes_in"], SIZE);
}

#[test]
fn an_upstream_that_is_down_is_a_502_problem_and_an_event() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let s = Server::start_proxy(&dead, None);
    let (id, key) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["read"]}));
    let r = through(&s, "GET", "/x", &[("X-API-Key", &key)], None);
    let p = r.problem(502);
    assert!(p["type"].as_str().unwrap().ends_with("upstream-unreachable"), "{p}");
    let e = event_of(&s, p["request_id"].as_str().unwrap());
    assert_eq!((e["status"].as_u64(), e["key_id"].as_str()), (Some(502), Some(id.as_str())));
    assert!(e["error"].as_str().is_some_and(|m| m.contains("upstream")), "{e}");
    let metrics = s.raw("GET", "/metrics", None, None, &[]).text;
    assert!(metrics.contains("keyward_proxy_upstream_errors_total{status=\"502\"} 1"), "{metrics}");
    assert!(metrics.contains("# HELP keyward_proxy_upstream_errors_total "), "described in the catalog");
}

/// The example app, served on a free port in this process.
fn serve_example(layer: keyward_gateway::KeywardLayer) -> (u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum_app::app(layer).into_make_service_with_connect_info::<std::net::SocketAddr>();
    rt.spawn(async move { axum::serve(listener, app).await });
    (port, rt)
}

fn get(port: u16, path: &str, key: Option<&str>) -> Res {
    let mut req = ureq::get(&format!("http://127.0.0.1:{port}{path}")).timeout(Duration::from_secs(10));
    if let Some(k) = key {
        req = req.set("X-API-Key", k);
    }
    send(req, None).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_example_app_with_the_layer_in_remote_mode() {
    let s = Server::start();
    let (id, key) = s.key(json!({"keyspace_id": s.keyspace(), "owner_id": "acme", "scopes": ["read"], "ratelimits": [{"name": "m", "limit": 3, "window_ms": 60000}]}));
    let verifier =
        s.create("/v1/root-keys", json!({"name": "app", "role": "verifier"}))["key"].as_str().unwrap().to_owned();
    let (port, _rt) = serve_example(keyward_gateway::KeywardLayer::remote(&s.url(""), &verifier).unwrap());

    assert_eq!(get(port, "/health", None).status, 200, "open routes stay open");
    get(port, "/hello", None).problem(401);
    let r = get(port, "/hello", Some(&key));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, format!("hello acme (key {id})\n"));
    assert!(r.header("ratelimit").is_some_and(|v| v.starts_with("\"m\";r=2;")), "{:?}", r.headers);
    // Exact limits: the server's limiter counts every request of the app.
    assert_eq!(get(port, "/hello", Some(&key)).status, 200);
    assert_eq!(get(port, "/hello", Some(&key)).status, 200);
    let r = get(port, "/hello", Some(&key));
    assert_eq!(r.problem(429)["code"], "RATE_LIMITED");
    assert!(r.header("retry-after").is_some());
    // Instant revocation: the very next request after the revoke is refused.
    let (id2, key2) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["read"]}));
    assert_eq!(get(port, "/hello", Some(&key2)).status, 200);
    assert_eq!(s.call("POST", &format!("/v1/keys/{id2}/revoke"), Some(json!({"reason": "compromised"}))).status, 200);
    assert_eq!(get(port, "/hello", Some(&key2)).problem(401)["code"], "REVOKED");
    // The app's answers were reported back to the verify events.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = s.call("GET", &format!("/v1/events?key_id={id}"), None).json();
        if events["data"].as_array().unwrap().iter().filter(|e| e["status"] == 200).count() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "usage reports missing: {events}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_example_app_with_the_layer_in_embedded_mode() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (service, ws, key) = rt
        .block_on(axum_app::embedded_demo(
            "demo",
            json!({"scopes": ["read"], "ratelimits": [{"name": "s", "limit": 2, "window_ms": 60000}]}),
        ))
        .unwrap();
    let (port, _rt) = serve_example(keyward_gateway::KeywardLayer::embedded(service.clone(), ws.clone()));
    get(port, "/hello", None).problem(401);
    get(port, "/hello", Some("demo_notakey")).problem(401);
    let r = get(port, "/hello", Some(&key));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.starts_with("hello demo (key key_"), "{}", r.text);
    assert_eq!(r.header("ratelimit-policy"), Some("\"s\";q=2;w=60"));
    assert_eq!(get(port, "/hello", Some(&key)).status, 200);
    let r = get(port, "/hello", Some(&key));
    assert_eq!(r.problem(429)["code"], "RATE_LIMITED");
    // In process as well, a revocation acts on the next request.
    let d = rt
        .block_on(service.verify(&ws, &keyward_service::verify::VerifyInput::key(&key), &Default::default()))
        .unwrap();
    let kid = d.key.unwrap().id.to_string();
    let (workspace_id, root_key_id, role) = (ws.clone(), "system".to_owned(), keyward_core::Role::Admin);
    let actor = keyward_service::Actor { workspace_id, root_key_id, role, source_ip: None, request_id: None };
    let revoke = serde_json::from_value(json!({"reason": "compromised"})).unwrap();
    rt.block_on(service.revoke_key(&actor, &kid, revoke)).unwrap();
    assert_eq!(get(port, "/hello", Some(&key)).problem(401)["code"], "REVOKED");
}

#[test]
fn verify_answers_carry_the_ratelimit_headers_of_the_tightest_window() {
    let s = Server::start();
    let (_, key) = s.key(json!({"keyspace_id": s.keyspace(), "ratelimits": [
        {"name": "sec", "limit": 5, "window_ms": 1000}, {"name": "day", "limit": 2, "window_ms": 86400000}]}));
    let r = s.call("POST", "/v1/keys/verify", Some(json!({"key": key})));
    assert_eq!(r.json()["code"], "VALID");
    assert_eq!(r.header("ratelimit-policy"), Some("\"day\";q=2;w=86400"));
    assert!(r.header("ratelimit").is_some_and(|v| v.starts_with("\"day\";r=1;t=")), "{:?}", r.headers);
    assert_eq!(r.json()["ratelimit"]["remaining"], 1, "the body and the headers agree");
    // A key without windows gets no such headers.
    let bare = s.call("POST", "/v1/keyspaces", Some(json!({"name": "bare", "default_ratelimits": []}))).json();
    let (_, plain) = s.key(json!({"keyspace_id": bare["id"]}));
    assert_eq!(s.call("POST", "/v1/keys/verify", Some(json!({"key": plain}))).header("ratelimit"), None);
}

#[test]
fn the_proxy_speaks_http2_to_clients() {
    let up = Upstream::start();
    let s = Server::start_proxy(&up.url(), None);
    let (_, key) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["read"]}));
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-H"])
        .arg(format!("X-API-Key: {key}"))
        .arg(s.proxy_url("/h2"))
        .output()
        .expect("curl is installed (apt-get install curl)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    assert_eq!(up.last().target, "/h2");
}

#[test]
fn the_proxy_closes_connections_past_its_cap() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let s = Server::start_proxy(&up.url(), Some("[proxy]\nmax_connections = 1\n"));
    let (_, key) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["read"]}));
    let addr = s.proxy_url("").trim_start_matches("http://").to_owned();
    let held = std::net::TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = extra.write_all(format!("GET /x HTTP/1.1\r\nHost: a\r\nX-API-Key: {key}\r\n\r\n").as_bytes());
    let mut buf = [0u8; 64];
    assert!(matches!(extra.read(&mut buf), Ok(0) | Err(_)), "the connection past the cap was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(through(&s, "GET", "/x", &[("X-API-Key", &key)], None).status, 200, "room again once one closes");
    let metrics = s.raw("GET", "/metrics", None, None, &[]).text;
    assert!(metrics.contains("keyward_http_connections_refused_total{cap=\"proxy\"} 1"), "{metrics}");
}

#[test]
fn the_proxy_speaks_https_with_h2_by_alpn() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::util::TestCa::new(dir.path());
    let (cert, tls_key) = ca.leaf("proxy", false);
    let listen = format!("127.0.0.1:{}", crate::util::free_port());
    let s = Server::start_with(&[
        ("KEYWARD_PROXY_LISTEN", &listen),
        ("KEYWARD_UPSTREAM", &up.url()),
        ("KEYWARD_TLS_CERT", cert.to_str().unwrap()),
        ("KEYWARD_TLS_KEY", tls_key.to_str().unwrap()),
        ("TEST_CA", ca.ca().to_str().unwrap()),
    ]);
    let (_, key) = s.key(json!({"keyspace_id": s.keyspace(), "scopes": ["read"]}));
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2", "-D", "-", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert"])
        .arg(ca.ca())
        .arg("-H")
        .arg(format!("X-API-Key: {key}"))
        .arg(format!("https://{listen}/tls"))
        .output()
        .expect("curl is installed (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("2 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{text}");
    assert_eq!(up.last().target, "/tls");
    assert!(up.last().header("x-api-key").is_none());
}
