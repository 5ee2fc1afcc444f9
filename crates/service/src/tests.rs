use std::sync::Arc;

use keyward_core::{KeyHasher, Outcome, Pepper};
use keyward_store::sqlite::SqliteStore;

use super::*;
use crate::api::{CreateKey, CreateKeyspace, PatchKey, RevokeKey, RevokeReason};
use crate::verify::Cached;

fn service() -> (Service, Actor) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let svc = Service::open(store, KeyHasher::new(&Pepper::new(1, [7; 32]), &[]), ServiceConfig::default()).unwrap();
    (
        svc,
        Actor {
            workspace_id: String::new(),
            root_key_id: String::new(),
            role: Role::Admin,
            source_ip: None,
            request_id: None,
        },
    )
}

async fn setup() -> (Service, Actor, String) {
    let (svc, mut actor) = service();
    let root = svc.bootstrap().await.unwrap().unwrap();
    let (ws, id, role) = svc.authenticate(&root.key).unwrap();
    actor.workspace_id = ws;
    actor.root_key_id = id;
    actor.role = role;
    let ks = svc.create_keyspace(&actor, CreateKeyspace::named("prod")).await.unwrap();
    (svc, actor, ks.id)
}

fn new_key(ks: &str) -> CreateKey {
    CreateKey::in_keyspace(ks)
}

fn code(svc: &Service, ws: &str, key: &str) -> Outcome {
    match svc.verify_cached(ws, &VerifyInput::key(key), keyward_core::time::now_ms()) {
        Cached::Decided(d) => d.outcome,
        Cached::Miss(_) => Outcome::NotFound,
    }
}

#[tokio::test]
async fn lifecycle_is_decided_from_memory() {
    let (svc, actor, ks) = setup().await;
    let created = svc.create_key(&actor, new_key(&ks)).await.unwrap();
    let ws = actor.workspace_id.clone();
    assert_eq!(code(&svc, &ws, &created.key), Outcome::Valid);
    // Another workspace does not see the key.
    assert_eq!(code(&svc, "ws_other", &created.key), Outcome::NotFound);
    svc.patch_key(&actor, &created.view.id, PatchKey { enabled: Some(false), ..Default::default() }).await.unwrap();
    assert_eq!(code(&svc, &ws, &created.key), Outcome::Disabled);
    svc.revoke_key(
        &actor,
        &created.view.id,
        RevokeKey { reason: RevokeReason::Compromised, note: None, incident: None },
    )
    .await
    .unwrap();
    assert_eq!(code(&svc, &ws, &created.key), Outcome::Revoked);
    let again = svc
        .revoke_key(&actor, &created.view.id, RevokeKey { reason: RevokeReason::Other, note: None, incident: None })
        .await;
    assert!(matches!(again, Err(ServiceError::Conflict(_))));
}

#[tokio::test]
async fn unknown_keys_are_remembered_in_a_bounded_cache() {
    let (svc, actor, _) = setup().await;
    let prefix = keyward_core::KeyPrefix::new("kw_live").unwrap();
    let cap = ServiceConfig::default().negative_capacity;
    for _ in 0..3 {
        let k = keyward_core::RawKey::generate(&prefix);
        let d = svc.verify(&actor.workspace_id, &VerifyInput::key(k.expose()), &RequestCtx::default()).await.unwrap();
        assert_eq!(d.outcome, Outcome::NotFound);
        // The second time it is answered from memory.
        assert!(matches!(
            svc.verify_cached(&actor.workspace_id, &VerifyInput::key(k.expose()), keyward_core::time::now_ms()),
            Cached::Decided(_)
        ));
    }
    assert_eq!(svc.negative_cache().len(), 3);
    let small = NegativeCache::new(2, 1000);
    for b in 0..5u8 {
        small.insert(keyward_core::KeyHash([b; 32]), 0);
    }
    assert_eq!(small.len(), 2);
    assert!(small.contains(&keyward_core::KeyHash([4; 32]), 10));
    assert!(!small.contains(&keyward_core::KeyHash([4; 32]), 1000), "entries expire");
    assert!(cap >= 1000);
}

#[tokio::test]
async fn last_use_is_batched() {
    let (svc, actor, ks) = setup().await;
    let created = svc.create_key(&actor, new_key(&ks)).await.unwrap();
    let ip = Some("203.0.113.9".parse().unwrap());
    for _ in 0..10 {
        svc.verify(&actor.workspace_id, &VerifyInput { ip, ..VerifyInput::key(&created.key) }, &RequestCtx::default())
            .await
            .unwrap();
    }
    // Visible at once through the index, before any store write.
    let v = svc.get_key(&actor, &created.view.id).await.unwrap();
    assert_eq!(v.last_used_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(svc.flush_last_used().await.unwrap(), 1, "ten uses, one row to write");
    assert_eq!(svc.flush_last_used().await.unwrap(), 0);
}

#[tokio::test]
async fn a_different_pepper_is_refused() {
    let store: Arc<dyn keyward_store::Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    Service::open(store.clone(), KeyHasher::new(&Pepper::new(1, [1; 32]), &[]), ServiceConfig::default()).unwrap();
    let other = Service::open(store, KeyHasher::new(&Pepper::new(1, [2; 32]), &[]), ServiceConfig::default());
    assert!(matches!(other, Err(ServiceError::PepperMismatch(1))));
}

#[tokio::test]
async fn debug_output_never_shows_a_key() {
    let (svc, actor, ks) = setup().await;
    let created = svc.create_key(&actor, new_key(&ks)).await.unwrap();
    let rotated = svc.rotate_key(&actor, &created.view.id, crate::api::RotateKey::default()).await.unwrap();
    let root = svc
        .create_root_key(
            &actor,
            crate::api::CreateRootKey { name: "v".into(), role: Role::Verifier, expires_at: None, ttl_ms: None },
        )
        .await
        .unwrap();
    let req = crate::api::VerifyRequest { key: created.key.clone(), ..Default::default() };
    let leak = crate::leaks::LeakReport { keys: vec![created.key.clone()], source: None };
    let printed = format!("{created:?} {rotated:?} {root:?} {req:?} {:?} {leak:?}", VerifyInput::key(&created.key));
    for secret in [&created.key, &rotated.key, &root.key] {
        assert!(!printed.contains(secret.as_str()), "{printed}");
    }
    assert!(printed.contains("[redacted]"));
}

#[test]
fn revocation_results_read_back_from_their_codes() {
    use crate::api::Revocation;
    for r in [
        Revocation::Refused(Outcome::Revoked),
        Revocation::Refused(Outcome::Rotated),
        Revocation::NotRefused(Outcome::Valid),
        Revocation::NotRefused(Outcome::NotFound),
        Revocation::NotRevokedInStore,
    ] {
        assert_eq!(Revocation::from_code(r.code()), Some(r));
    }
    assert!(Revocation::from_code("REVOKED").unwrap().ok());
    assert!(!Revocation::from_code("DISABLED").unwrap().ok());
    assert!(!Revocation::from_code("NOT_REVOKED_IN_STORE").unwrap().ok());
    assert_eq!(Revocation::from_code("bogus"), None);
}
