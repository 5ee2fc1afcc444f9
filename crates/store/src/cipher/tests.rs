use super::*;

fn contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn a_keyring_is_created_reopened_and_refuses_a_wrong_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let kek = SecretKey::generate();
    let (ring, opened) = Keyring::open(dir.path(), kek.clone(), &[]).unwrap();
    assert_eq!(opened, Opened { created: 3, rewrapped: 0 });
    let store_dek = ring.dek(Purpose::Store).id();
    assert_ne!(store_dek, ring.dek(Purpose::Events).id());
    assert_eq!(encrypted_by(dir.path()).unwrap(), Some(kek.id()));
    let text = std::fs::read_to_string(dir.path().join(KEYRING_FILE)).unwrap();
    assert!(!text.contains(ring.dek(Purpose::Store).to_hex().as_str()), "a DEK in clear");

    let (again, opened) = Keyring::open(dir.path(), kek.clone(), &[]).unwrap();
    assert_eq!(opened, Opened::default());
    assert_eq!(again.dek(Purpose::Store).id(), store_dek);

    let wrong = SecretKey::generate();
    match Keyring::open(dir.path(), wrong.clone(), &[]) {
        Err(KeyringError::WrongMasterKey { given, wanted, .. }) => {
            assert_eq!(given, wrong.id());
            assert_eq!(wanted, kek.id());
        }
        other => panic!("expected WrongMasterKey, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn rotation_rewraps_and_an_old_master_key_still_opens_until_rewrapped() {
    let dir = tempfile::tempdir().unwrap();
    let old = SecretKey::generate();
    let (ring, _) = Keyring::open(dir.path(), old.clone(), &[]).unwrap();
    let dek = ring.dek(Purpose::Secrets).id();
    let new = SecretKey::generate();
    assert!(matches!(ring.rotate(old.clone()), Err(KeyringError::SameKey(_))));
    let r = ring.rotate(new.clone()).unwrap();
    assert_eq!(r, Rotated { from: old.id(), to: new.id(), deks: 3 });
    assert_eq!(ring.kek_id(), new.id());
    assert_eq!(ring.dek(Purpose::Secrets).id(), dek, "rotation keeps the DEKs");
    assert!(Keyring::open(dir.path(), old.clone(), &[]).is_err(), "the old key no longer opens it");
    let (ring, _) = Keyring::open(dir.path(), new.clone(), &[]).unwrap();
    assert_eq!(ring.dek(Purpose::Secrets).id(), dek);

    // Offline rotation: the next key is current, the old one previous.
    let next = SecretKey::generate();
    let (ring, opened) = Keyring::open(dir.path(), next.clone(), std::slice::from_ref(&new)).unwrap();
    assert_eq!(opened, Opened { created: 0, rewrapped: 3 });
    assert_eq!(ring.dek(Purpose::Secrets).id(), dek);
    assert_eq!(encrypted_by(dir.path()).unwrap(), Some(next.id()));
    assert!(Keyring::open(dir.path(), next, &[]).is_ok());
}

#[test]
fn a_damaged_keyring_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(KEYRING_FILE), "{not json").unwrap();
    let err = Keyring::open(dir.path(), SecretKey::generate(), &[]).err().unwrap();
    assert!(err.to_string().contains("is damaged"), "{err}");
}

#[test]
fn an_encrypted_database_holds_no_plaintext_and_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let key = SecretKey::generate();
    {
        let conn = open_db(&path, Some(&key)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT); CREATE INDEX t_v ON t (v);").unwrap();
        for i in 0..200 {
            conn.execute("INSERT INTO t VALUES (?1)", [format!("owner-secret-{i}@example.com")]).unwrap();
        }
        // Still open: the rows are in the WAL as well as (after a checkpoint) the file.
        for f in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
            assert!(!contains(&f, "owner-secret-"), "{} holds plaintext", f.display());
        }
        assert!(std::fs::metadata(side(&path, "-wal")).unwrap().len() > 0);
    }
    assert!(!is_plain_sqlite(&path));
    let conn = open_db(&path, Some(&key)).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 200);
    drop(conn);
    assert!(matches!(open_db(&path, None), Err(StoreError::Unreadable { keyed: false, .. })));
    let other = SecretKey::generate();
    let err = open_db(&path, Some(&other)).err().unwrap();
    assert!(matches!(err, StoreError::Unreadable { keyed: true, .. }), "{err}");
}

#[test]
fn a_plain_database_is_encrypted_in_place_with_its_rows_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    {
        let conn = open_db(&path, None).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('203.0.113.77'); PRAGMA user_version = 7;")
            .unwrap();
    }
    assert!(is_plain_sqlite(&path));
    assert!(contains(&path, "203.0.113.77") || contains(&side(&path, "-wal"), "203.0.113.77"));
    let key = SecretKey::generate();
    encrypt_in_place(&path, &key).unwrap();
    assert!(!is_plain_sqlite(&path));
    assert!(!contains(&path, "203.0.113.77"));
    assert!(!side(&path, "-wal").exists());
    let conn = open_db(&path, Some(&key)).unwrap();
    let v: String = conn.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, "203.0.113.77");
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 7);
}

#[test]
fn pages_are_authenticated_with_hmac_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_db(&dir.path().join("x.db"), Some(&SecretKey::generate())).unwrap();
    let alg: String = conn.query_row("PRAGMA cipher_hmac_algorithm", [], |r| r.get(0)).unwrap();
    assert_eq!(alg, "HMAC_SHA256");
    let memory: String = conn.query_row("PRAGMA cipher_memory_security", [], |r| r.get(0)).unwrap();
    assert_eq!(memory, "0", "memory security off: it locks and wipes every page (costly), keys are wiped by zeroize");
}
