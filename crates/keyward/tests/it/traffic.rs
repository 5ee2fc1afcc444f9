//! A traffic generator for the alerting tests: normal clients, and the
//! attacks the rules must catch, all over the real HTTP API. Each call is a
//! verify as an application would make it (the end client's address in
//! `ip`), optionally followed by the application's usage report.

use serde_json::{Value, json};

use crate::util::Server;

/// One client's requests through one key.
pub struct Client<'a> {
    pub server: &'a Server,
    pub key: String,
    pub ip: String,
    pub user_agent: String,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server, key: &str, ip: &str) -> Client<'a> {
        Client { server, key: key.to_owned(), ip: ip.to_owned(), user_agent: "shop-backend/2.3".into() }
    }

    /// One verify; returns the decision.
    pub fn verify(&self, extra: Value) -> Value {
        let mut body = json!({"key": self.key, "ip": self.ip, "user_agent": self.user_agent});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.server.verify_as(&self.server.root.clone(), body)
    }

    /// `n` verifies; returns how many were VALID.
    pub fn burst(&self, n: usize) -> usize {
        (0..n).filter(|_| self.verify(json!({}))["valid"] == true).count()
    }

    /// A verify with its request id, then the usage report the application sends.
    pub fn request(&self, status: u16, bytes_out: u64) {
        let request_id = format!("req-{}-{}", self.ip.replace(['.', ':'], "-"), unique());
        let r = self.server.raw(
            "POST",
            "/v1/keys/verify",
            Some(&self.server.root),
            Some(&json!({"key": self.key, "ip": self.ip}).to_string()),
            &[("X-Request-Id", &request_id), ("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let report = json!({"request_id": request_id, "status": status, "bytes_in": 200, "bytes_out": bytes_out, "latency_ms": 12});
        // The event may still be in the writer's batch or already written: either is accepted.
        let mut tries = 0;
        loop {
            let r = self.server.call("POST", "/v1/usage", Some(report.clone()));
            if r.status == 202 || tries > 50 {
                assert_eq!(r.status, 202, "{}", r.text);
                break;
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// An attacker presenting strings that are not keys from `ip`: `distinct`
/// different ones (enumeration), or the same one again and again.
pub fn invalid_keys(server: &Server, ip: &str, n: usize, distinct: bool) {
    for i in 0..n {
        let guess = if distinct { format!("kw_live_guess{i:04}") } else { "kw_live_guess".to_owned() };
        let d = server.verify_as(&server.root.clone(), json!({"key": guess, "ip": ip}));
        assert_eq!(d["valid"], false);
    }
}

/// Bad root keys against the management API (the socket's address is 127.0.0.1).
pub fn bad_root_keys(server: &Server, n: usize) {
    for i in 0..n {
        let r = server.raw("GET", "/v1/keys", Some(&format!("kw_root_wrong{i}")), None, &[]);
        assert_eq!(r.status, 401);
    }
}
