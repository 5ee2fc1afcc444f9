//! Encryption at rest for the embedded data dir, as an envelope: the master key
//! (KEK, from the operator, never written here) wraps data keys (DEKs) kept in
//! `keyring.json`; the DEKs encrypt.
//!
//! * `store` and `events` DEKs are the SQLCipher keys of `keyward.db` and
//!   `events.db`: every page, index, WAL frame and free page is AES-256
//!   encrypted and authenticated (HMAC-SHA512 per page), so no column can be
//!   forgotten and queries run unchanged.
//! * The `secrets` DEK seals single values with AES-256-GCM: the pepper
//!   (`pepper.enc`) and recoverable API keys.
//!
//! Rotating the master key re-wraps the DEKs only (the databases are not
//! rewritten), atomically: the keyring is replaced by rename after an fsync.
//!
//! A cluster keeps the same keyring in its shared store instead (the
//! `keyring` setting, [`Keyring::open_shared`]): every node with the master
//! key unwraps the same DEKs, so a key sealed on one node is revealed on
//! any, and a node given another master key refuses to start.

use std::io::Write;
use std::path::{Path, PathBuf};

use keyward_core::seal::SecretKey;
use parking_lot::RwLock;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{KeyringError, StoreError};

/// What a data key encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Store,
    Events,
    Secrets,
}

impl Purpose {
    const ALL: [Purpose; 3] = [Purpose::Store, Purpose::Events, Purpose::Secrets];

    fn name(self) -> &'static str {
        match self {
            Purpose::Store => "store",
            Purpose::Events => "events",
            Purpose::Secrets => "secrets",
        }
    }
}

pub const KEYRING_FILE: &str = "keyring.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    deks: Vec<WrappedDek>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct WrappedDek {
    purpose: String,
    version: u32,
    created_at: String,
    /// Id of the master key that wraps it (see `SecretKey::id`).
    kek_id: String,
    /// Hex of nonce || ciphertext || tag.
    wrapped: String,
}

fn wrap_aad(purpose: &str, version: u32) -> Vec<u8> {
    format!("keyward dek {purpose} v{version}").into_bytes()
}

struct Inner {
    kek: SecretKey,
    /// (purpose, version, key); the highest version of a purpose is current.
    deks: Vec<(Purpose, u32, SecretKey)>,
    file: KeyringFile,
}

/// The unwrapped data keys of one data dir, and the master key they are wrapped by.
pub struct Keyring {
    home: Home,
    inner: RwLock<Inner>,
}

/// Where the wrapped keys are kept.
enum Home {
    File(PathBuf),
    /// The `keyring` setting of a store shared by several nodes.
    Shared(std::sync::Arc<dyn crate::Store>),
}

/// The setting a shared keyring is kept in.
const SHARED_SETTING: &str = "keyring";
/// How a shared keyring is named in messages.
const SHARED_NAME: &str = "the cluster's database";

/// What opening a keyring did, for the start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    pub created: usize,
    /// DEKs found under a previous master key and re-wrapped under the current one.
    pub rewrapped: usize,
}

/// A completed master-key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub from: String,
    pub to: String,
    pub deks: usize,
}

/// The id of the master key a data dir's keyring is wrapped by, if the dir is encrypted.
pub fn encrypted_by(dir: &Path) -> Result<Option<String>, KeyringError> {
    let path = dir.join(KEYRING_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let file = read_file(&path)?;
    Ok(file.deks.first().map(|d| d.kek_id.clone()))
}

fn read_file(path: &Path) -> Result<KeyringFile, KeyringError> {
    let text = std::fs::read_to_string(path).map_err(|source| io_err(path, source))?;
    parse_file(&text, &path.display().to_string())
}

fn parse_file(text: &str, name: &str) -> Result<KeyringFile, KeyringError> {
    let file: KeyringFile = serde_json::from_str(text)
        .map_err(|e| KeyringError::Damaged { path: name.to_owned(), detail: e.to_string() })?;
    if file.format != 1 {
        return Err(KeyringError::Damaged {
            path: name.to_owned(),
            detail: format!("format {} is not known to this binary; upgrade keyward", file.format),
        });
    }
    Ok(file)
}

fn shared_err(e: StoreError) -> KeyringError {
    KeyringError::Shared(e.to_string())
}

fn io_err(path: &Path, source: std::io::Error) -> KeyringError {
    KeyringError::Io { path: path.display().to_string(), source }
}

impl Keyring {
    /// Opens the keyring of `dir` with the master key `kek` (and older master
    /// keys that may still wrap some DEKs), creating missing DEKs. DEKs found
    /// under an older key are re-wrapped under `kek` before this returns.
    pub fn open(dir: &Path, kek: SecretKey, previous: &[SecretKey]) -> Result<(Keyring, Opened), KeyringError> {
        let path = dir.join(KEYRING_FILE);
        let file = if path.exists() { read_file(&path)? } else { KeyringFile { format: 1, deks: Vec::new() } };
        let (inner, opened) =
            unwrap_all(file, kek, previous, &format!("data dir {}", dir.display()), &path.display().to_string())?;
        if opened != Opened::default() {
            write_atomically(&path, &inner.file)?;
        }
        Ok((Keyring { home: Home::File(path), inner: RwLock::new(inner) }, opened))
    }

    /// Opens (or, for a new cluster, creates) the keyring kept in `store`,
    /// shared by every node. Nodes starting at once agree: the first to
    /// store a new keyring wins, and the others open that one.
    pub fn open_shared(
        store: std::sync::Arc<dyn crate::Store>,
        kek: SecretKey,
        previous: &[SecretKey],
    ) -> Result<(Keyring, Opened), KeyringError> {
        let file = match store.get_setting(SHARED_SETTING).map_err(shared_err)? {
            Some(text) => parse_file(&text, SHARED_NAME)?,
            None => {
                let (made, _) = unwrap_all(
                    KeyringFile { format: 1, deks: Vec::new() },
                    kek.clone(),
                    &[],
                    SHARED_NAME,
                    SHARED_NAME,
                )?;
                let text = serde_json::to_string(&made.file).expect("the keyring serializes");
                if store.put_setting_if_absent(SHARED_SETTING, &text).map_err(shared_err)? {
                    let opened = Opened { created: made.deks.len(), rewrapped: 0 };
                    return Ok((Keyring { home: Home::Shared(store), inner: RwLock::new(made) }, opened));
                }
                // Another node stored one first: that one is the cluster's.
                let text = store.get_setting(SHARED_SETTING).map_err(shared_err)?.unwrap_or_default();
                parse_file(&text, SHARED_NAME)?
            }
        };
        let (inner, opened) = unwrap_all(file, kek, previous, SHARED_NAME, SHARED_NAME)?;
        if opened.rewrapped > 0 || opened.created > 0 {
            let text = serde_json::to_string(&inner.file).expect("the keyring serializes");
            store.put_setting(SHARED_SETTING, &text).map_err(shared_err)?;
        }
        Ok((Keyring { home: Home::Shared(store), inner: RwLock::new(inner) }, opened))
    }

    /// The current data key for `purpose`.
    pub fn dek(&self, purpose: Purpose) -> SecretKey {
        let inner = self.inner.read();
        inner
            .deks
            .iter()
            .filter(|(p, _, _)| *p == purpose)
            .max_by_key(|(_, v, _)| *v)
            .map(|(_, _, k)| k.clone())
            .expect("every purpose has a DEK once the keyring is open")
    }

    /// The id of the master key in use.
    pub fn kek_id(&self) -> String {
        self.inner.read().kek.id()
    }

    /// Re-wraps every DEK under `new` and makes it the master key, online:
    /// nothing encrypted with the DEKs changes. The keyring file is replaced
    /// atomically, so a crash leaves either the old or the new wrapping.
    pub fn rotate(&self, new: SecretKey) -> Result<Rotated, KeyringError> {
        let mut inner = self.inner.write();
        let from = inner.kek.id();
        if new.id() == from {
            return Err(KeyringError::SameKey(from));
        }
        let mut file = KeyringFile { format: 1, deks: inner.file.deks.clone() };
        for w in &mut file.deks {
            let (_, _, dek) = inner
                .deks
                .iter()
                .find(|(p, v, _)| p.name() == w.purpose && *v == w.version)
                .expect("the file and the unwrapped keys list the same DEKs");
            w.wrapped = hex::encode(new.wrap(&wrap_aad(&w.purpose, w.version), dek));
            w.kek_id = new.id();
        }
        match &self.home {
            Home::File(path) => write_atomically(path, &file)?,
            Home::Shared(store) => {
                let text = serde_json::to_string(&file).expect("the keyring serializes");
                store.put_setting(SHARED_SETTING, &text).map_err(shared_err)?;
            }
        }
        let to = new.id();
        let deks = file.deks.len();
        inner.file = file;
        inner.kek = new;
        Ok(Rotated { from, to, deks })
    }
}

/// Unwraps every DEK of `file` (re-wrapping those under an older master key
/// with `kek`) and creates the missing ones.
fn unwrap_all(
    mut file: KeyringFile,
    kek: SecretKey,
    previous: &[SecretKey],
    dir: &str,
    name: &str,
) -> Result<(Inner, Opened), KeyringError> {
    let mut opened = Opened::default();
    let mut deks = Vec::new();
    for w in &mut file.deks {
        let purpose = Purpose::ALL.into_iter().find(|p| p.name() == w.purpose).ok_or_else(|| {
            KeyringError::Damaged { path: name.to_owned(), detail: format!("unknown purpose {}", w.purpose) }
        })?;
        let by = std::iter::once(&kek).chain(previous).find(|k| k.id() == w.kek_id).ok_or_else(|| {
            KeyringError::WrongMasterKey { dir: dir.to_owned(), given: kek.id(), wanted: w.kek_id.clone() }
        })?;
        let bytes = hex::decode(&w.wrapped).map_err(|e| KeyringError::Damaged {
            path: name.to_owned(),
            detail: format!("{} v{}: {e}", w.purpose, w.version),
        })?;
        let aad = wrap_aad(&w.purpose, w.version);
        let dek = by.unwrap_key(&aad, &bytes).map_err(|e| KeyringError::Damaged {
            path: name.to_owned(),
            detail: format!("{} v{}: {e}", w.purpose, w.version),
        })?;
        if by.id() != kek.id() {
            w.wrapped = hex::encode(kek.wrap(&aad, &dek));
            w.kek_id = kek.id();
            opened.rewrapped += 1;
        }
        deks.push((purpose, w.version, dek));
    }
    for purpose in Purpose::ALL {
        if !deks.iter().any(|(p, _, _)| *p == purpose) {
            let dek = SecretKey::generate();
            file.deks.push(WrappedDek {
                purpose: purpose.name().to_owned(),
                version: 1,
                created_at: keyward_core::time::to_rfc3339(keyward_core::time::now_ms()),
                kek_id: kek.id(),
                wrapped: hex::encode(kek.wrap(&wrap_aad(purpose.name(), 1), &dek)),
            });
            deks.push((purpose, 1, dek));
            opened.created += 1;
        }
    }
    Ok((Inner { kek, deks, file }, opened))
}

fn write_atomically(path: &Path, file: &KeyringFile) -> Result<(), KeyringError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(file).expect("the keyring serializes");
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::datadir::create_private(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

/// Opens a SQLite file, keyed with `key` when the data dir is encrypted. The
/// key is applied before anything is read, and checked by reading the schema,
/// so a wrong key or an encrypted file opened without one fails here with a
/// clear message, not later on the first query.
pub fn open_db(path: &Path, key: Option<&SecretKey>) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
    if !path.exists() {
        crate::datadir::create_private(path).map_err(|e| store_io(path, e))?;
    }
    let conn = Connection::open(path).map_err(open_err)?;
    // SQLCipher's own log goes to stderr in its own format; our errors say what failed.
    let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE;");
    if let Some(key) = key {
        // HMAC-SHA256 per page rather than SQLCipher 4's default SHA-512: the
        // CPUs we run on hash SHA-256 in hardware (SHA-NI); set as the
        // process default so that attached files (`encrypt_in_place`) match.
        conn.execute_batch(&format!(
            "PRAGMA cipher_default_hmac_algorithm = HMAC_SHA256; PRAGMA key = \"x'{}'\";",
            key.to_hex().as_str()
        ))
        .map_err(open_err)?;
    }
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            Err(StoreError::Unreadable { path: path.display().to_string(), keyed: key.is_some() })
        }
        Err(e) => Err(open_err(e)),
    }
}

/// Whether the file is a plain (unencrypted) SQLite database.
pub fn is_plain_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"SQLite format 3\0"
}

/// Encrypts a plain database file in place with `key` (SQLCipher's
/// `sqlcipher_export` into a new file, then a rename), for a data dir that
/// gets a master key after it was started without one. Returns the bytes read.
pub fn encrypt_in_place(path: &Path, key: &SecretKey) -> Result<u64, StoreError> {
    let tmp = path.with_extension("db.encrypting");
    let _ = std::fs::remove_file(&tmp);
    crate::datadir::create_private(&tmp).map_err(|e| store_io(&tmp, e))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    {
        let conn = open_db(path, None)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tmp_sql = tmp.display().to_string().replace('\'', "''");
        // The attached file takes the process defaults: the same page MAC as `open_db`.
        conn.execute_batch(&format!(
            "PRAGMA cipher_default_hmac_algorithm = HMAC_SHA256; \
             ATTACH DATABASE '{tmp_sql}' AS enc KEY \"x'{}'\"; SELECT sqlcipher_export('enc'); \
             PRAGMA enc.user_version = {version}; DETACH DATABASE enc;",
            key.to_hex().as_str()
        ))?;
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| store_io(&tmp, e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    std::fs::rename(&tmp, path).map_err(|e| store_io(path, e))?;
    Ok(size)
}

fn store_io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests;
