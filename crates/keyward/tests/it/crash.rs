//! The kill -9 loop of the reliability suite (issue 8): ten crashes under
//! mixed management and verify load. After each restart every acknowledged
//! management change is there, the audit chain verifies, and every lost
//! usage event was acknowledged after the server's reported durable point.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::Server;

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// What the management load saw acknowledged, by key id.
#[derive(Default)]
struct Acked {
    keys: BTreeMap<String, KeyState>,
    verifies: Vec<(String, i64)>,
}

/// A key's last acknowledged state, and what was asked without an answer
/// (a crash may or may not have let that through: both are correct).
#[derive(Clone)]
struct KeyState {
    name: String,
    pending_name: Option<String>,
    revoked: bool,
    revoke_pending: bool,
}

fn post(url: &str, root: &str, body: Value) -> Option<Value> {
    let r =
        ureq::post(url).timeout(Duration::from_secs(2)).set("Authorization", &format!("Bearer {root}")).send_json(body);
    r.ok().filter(|r| r.status() / 100 == 2).and_then(|r| r.into_json().ok())
}

fn patch(url: &str, root: &str, body: Value) -> bool {
    ureq::request("PATCH", url)
        .timeout(Duration::from_secs(2))
        .set("Authorization", &format!("Bearer {root}"))
        .send_json(body)
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn ten_kills_under_load_lose_nothing_acknowledged() {
    let s = Server::start_with(&[("KEYWARD_EVENTS_FLUSH_MS", "100")]);
    let ks = s.keyspace();
    let (_, key) = s.key(json!({"keyspace_id": ks, "ratelimits": []}));
    let s = Arc::new(Mutex::new(s));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut total_lost = 0;
    for round in 0..10 {
        let (base, root) = {
            let s = s.lock();
            (s.url(""), s.root.clone())
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..2 {
            let (base, root, key, stop, acked) = (base.clone(), root.clone(), key.clone(), stop.clone(), acked.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let rid = format!("r{round}-t{t}-{n}");
                    let ok = ureq::post(&format!("{base}/v1/keys/verify"))
                        .timeout(Duration::from_secs(2))
                        .set("Authorization", &format!("Bearer {root}"))
                        .set("X-Request-Id", &rid)
                        .send_json(json!({"key": key}))
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        acked.lock().verifies.push((rid, unix_ms()));
                    }
                }
            }));
        }
        {
            let (base, root, ks, stop, acked) = (base.clone(), root.clone(), ks.clone(), stop.clone(), acked.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let name = format!("k{round}-{n}");
                    let Some(created) =
                        post(&format!("{base}/v1/keys"), &root, json!({"keyspace_id": ks, "name": name}))
                    else {
                        continue;
                    };
                    let id = created["id"].as_str().unwrap().to_owned();
                    let state =
                        KeyState { name: name.clone(), pending_name: None, revoked: false, revoke_pending: false };
                    acked.lock().keys.insert(id.clone(), state);
                    let renamed = format!("{name}-renamed");
                    acked.lock().keys.get_mut(&id).unwrap().pending_name = Some(renamed.clone());
                    if patch(&format!("{base}/v1/keys/{id}"), &root, json!({"name": renamed})) {
                        let mut a = acked.lock();
                        let k = a.keys.get_mut(&id).unwrap();
                        (k.name, k.pending_name) = (renamed, None);
                    }
                    if n % 3 == 0 {
                        acked.lock().keys.get_mut(&id).unwrap().revoke_pending = true;
                        if post(&format!("{base}/v1/keys/{id}/revoke"), &root, json!({"reason": "other"})).is_some() {
                            acked.lock().keys.get_mut(&id).unwrap().revoked = true;
                        }
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(400 + 40 * round));
        let durable = {
            let s = s.lock();
            let r = s.raw("GET", "/readyz", None, None, &[]).json();
            // Nothing written yet since this start: nothing is claimed durable.
            r["events"]["durable_through"].as_str().and_then(keyward_core::time::parse_rfc3339).unwrap_or(0)
        };
        eprintln!("crash at {}", unix_ms());
        s.lock().crash_and_restart();
        eprintln!("restarted at {}", unix_ms());
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }

        let s = s.lock();
        let acked_all = acked.clone();
        let acked = acked.lock();
        // Every acknowledged management change survived.
        let mut observed = Vec::new();
        for (id, want) in &acked.keys {
            let k = s.call("GET", &format!("/v1/keys/{id}"), None);
            assert_eq!(k.status, 200, "round {round}: acknowledged key {id} is gone: {}", k.text);
            let k = k.json();
            let name = k["name"].as_str().unwrap();
            assert!(
                name == want.name || want.pending_name.as_deref() == Some(name),
                "round {round}: {id} is named {name:?}, acknowledged {:?}",
                want.name
            );
            if want.revoked {
                assert_eq!(k["status"], "revoked", "round {round}: {id} lost its acknowledged revocation");
            } else if !want.revoke_pending {
                assert_ne!(k["status"], "revoked", "round {round}: {id} revoked though never asked");
            }
            observed.push((id.clone(), name.to_owned(), k["status"] == "revoked"));
        }
        drop(acked);
        // Settled by the crash: what the store holds now is the state to keep.
        for (id, name, revoked) in observed {
            let mut a = acked_all.lock();
            let k = a.keys.get_mut(&id).unwrap();
            (k.name, k.pending_name, k.revoked, k.revoke_pending) = (name, None, revoked, false);
        }
        let acked = acked_all.lock();
        let audit = s.call("GET", "/v1/audit/verify", None).json();
        assert_eq!(audit["ok"], true, "round {round}: {audit}");
        // Usage events: lost ones were all acknowledged after the durable point.
        let stored: BTreeSet<String> = s.stored_request_ids();
        let prefix = format!("r{round}-");
        for (rid, at) in acked.verifies.iter().filter(|(r, _)| r.starts_with(&prefix)) {
            if !stored.contains(rid) {
                total_lost += 1;
                assert!(
                    *at >= durable - 20,
                    "round {round}: event {rid} lost though acknowledged before the durable point"
                );
            }
        }
    }
    let acked = acked.lock();
    eprintln!(
        "10 kills: {} keys and {} verifies acknowledged, {} events lost, all after their durable point",
        acked.keys.len(),
        acked.verifies.len(),
        total_lost
    );
    assert!(acked.keys.len() >= 20 && acked.verifies.len() >= 200, "the load was real");
}
