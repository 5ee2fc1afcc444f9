//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! versioned migrations run at open, one connection behind a mutex (writes are
//! management calls and batched marks; the verify path never comes here on a
//! cache hit).

use parking_lot::Mutex;
use std::path::Path;

use keyward_core::{KeyHash, Role};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::Value;

use crate::{
    AuditCheck, AuditEntry, AuditFilter, IncidentRecord, KeyFilter, KeyRecord, KeyStatus, Keyspace, LastUse, QuotaMark,
    Reminder, Result, RootKeyRecord, Store, StoreError, Workspace, audit_hash,
};

/// Schema steps, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: workspaces, keyspaces, keys, root keys, audit.
    r#"
    CREATE TABLE workspaces (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE keyspaces (
        id              TEXT PRIMARY KEY,
        workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
        name            TEXT NOT NULL,
        prefix          TEXT NOT NULL,
        default_ttl_ms  INTEGER,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX keyspaces_ws ON keyspaces(workspace_id, id);
    CREATE TABLE keys (
        id              TEXT PRIMARY KEY,
        workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
        keyspace_id     TEXT NOT NULL REFERENCES keyspaces(id),
        name            TEXT,
        owner_id        TEXT,
        meta            TEXT NOT NULL,
        hash            BLOB NOT NULL UNIQUE,
        hash_kind       TEXT NOT NULL,
        hint            TEXT NOT NULL,
        enabled         INTEGER NOT NULL,
        expires_at      INTEGER,
        revoked_at      INTEGER,
        revoke_reason   TEXT,
        revoke_note     TEXT,
        incident_id     TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_used_at    INTEGER,
        last_used_ip    TEXT
    );
    CREATE INDEX keys_ws ON keys(workspace_id, id);
    CREATE INDEX keys_ws_owner ON keys(workspace_id, owner_id, id);
    CREATE INDEX keys_ws_ks ON keys(workspace_id, keyspace_id, id);
    CREATE TABLE root_keys (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
        name          TEXT NOT NULL,
        role          TEXT NOT NULL,
        hash          BLOB NOT NULL UNIQUE,
        hash_kind     TEXT NOT NULL,
        hint          TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER
    );
    CREATE TABLE audit (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        workspace_id  TEXT NOT NULL,
        at            INTEGER NOT NULL,
        actor         TEXT NOT NULL,
        action        TEXT NOT NULL,
        target_type   TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        source_ip     TEXT,
        request_id    TEXT,
        before        TEXT,
        after         TEXT,
        hash          TEXT NOT NULL
    );
    CREATE INDEX audit_ws ON audit(workspace_id, seq);
    CREATE TABLE settings (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    "#,
    // 2: access policies and limits.
    r#"
    ALTER TABLE keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE keys ADD COLUMN ip_allowlist TEXT;
    ALTER TABLE keys ADD COLUMN ratelimits TEXT;
    ALTER TABLE keys ADD COLUMN remaining INTEGER;
    ALTER TABLE keys ADD COLUMN refill TEXT;
    ALTER TABLE keys ADD COLUMN refilled_at INTEGER;
    ALTER TABLE keyspaces ADD COLUMN default_scopes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE keyspaces ADD COLUMN default_ip_allowlist TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE keyspaces ADD COLUMN default_ratelimits TEXT NOT NULL
        DEFAULT '[{"name":"default","limit":1000,"window_ms":60000}]';
    ALTER TABLE keyspaces ADD COLUMN path_rules TEXT NOT NULL DEFAULT '[]';
    "#,
    // 3: privacy of usage events.
    r#"
    ALTER TABLE keyspaces ADD COLUMN pseudonymize_ips INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: lifecycle: rotation, revocation checks, age policy, reminders, incidents.
    r#"
    ALTER TABLE keys ADD COLUMN rotated_at INTEGER;
    ALTER TABLE keys ADD COLUMN rotated_to TEXT;
    ALTER TABLE keys ADD COLUMN overlap_until INTEGER;
    ALTER TABLE keys ADD COLUMN revocation_check_at INTEGER;
    ALTER TABLE keys ADD COLUMN revocation_check_code TEXT;
    CREATE INDEX keys_rotated_to ON keys(rotated_to) WHERE rotated_to IS NOT NULL;
    CREATE INDEX keys_revoked ON keys(revoked_at) WHERE revoked_at IS NOT NULL;
    ALTER TABLE keyspaces ADD COLUMN max_age_ms INTEGER;
    CREATE TABLE reminders (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        key_id        TEXT NOT NULL,
        days          INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        UNIQUE (key_id, days, expires_at)
    );
    CREATE INDEX reminders_ws ON reminders(workspace_id, id);
    CREATE TABLE incidents (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX incidents_ws ON incidents(workspace_id, id);
    "#,
    // 5: alerts, rule overrides, learned key state, webhooks and their outbox.
    r#"
    CREATE TABLE alerts (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        rule          TEXT NOT NULL,
        severity      TEXT NOT NULL,
        status        TEXT NOT NULL,
        subject       TEXT NOT NULL,
        key_id        TEXT,
        first_seen    INTEGER NOT NULL,
        last_seen     INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        body          TEXT NOT NULL
    );
    CREATE INDEX alerts_ws ON alerts(workspace_id, id);
    CREATE INDEX alerts_live ON alerts(status, updated_at);
    CREATE INDEX alerts_key ON alerts(key_id) WHERE key_id IS NOT NULL;
    CREATE TABLE alert_rules (
        workspace_id  TEXT NOT NULL,
        level         TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        keyspace_id   TEXT,
        rules         TEXT NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (workspace_id, level, target_id)
    );
    CREATE TABLE alert_learned (
        key_id        TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        body          TEXT NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE TABLE webhooks (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        url           TEXT NOT NULL,
        events        TEXT NOT NULL,
        description   TEXT,
        secret        TEXT NOT NULL,
        format        TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        deleted_at    INTEGER
    );
    CREATE INDEX webhooks_ws ON webhooks(workspace_id, id);
    CREATE TABLE webhook_messages (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        event_type    TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id              TEXT PRIMARY KEY,
        workspace_id    TEXT NOT NULL,
        webhook_id      TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at INTEGER,
        last_attempt_at INTEGER,
        last_status     INTEGER,
        last_error      TEXT,
        created_at      INTEGER NOT NULL,
        delivered_at    INTEGER
    );
    CREATE INDEX deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_hook ON webhook_deliveries(webhook_id, id);
    CREATE TABLE webhook_attempts (
        delivery_id   TEXT NOT NULL,
        n             INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        status        INTEGER,
        error         TEXT,
        duration_ms   INTEGER NOT NULL,
        PRIMARY KEY (delivery_id, n)
    );
    "#,
    // 6: automatic response per keyspace.
    r#"
    ALTER TABLE keyspaces ADD COLUMN auto_disable_on_critical INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: the history of alert changes, in order, for the sinks.
    r#"
    CREATE TABLE alert_changes (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace_id  TEXT NOT NULL,
        alert_id      TEXT NOT NULL,
        change        TEXT NOT NULL,
        at            INTEGER NOT NULL,
        body          TEXT NOT NULL
    );
    "#,
    // 8: root keys expire, and remember their last use.
    r#"
    ALTER TABLE root_keys ADD COLUMN expires_at INTEGER;
    ALTER TABLE root_keys ADD COLUMN last_used_at INTEGER;
    "#,
    // 9: recoverable keys: sealed copies, for keyspaces that opt in.
    r#"
    ALTER TABLE keyspaces ADD COLUMN recoverable INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE sealed_keys (
        key_id        TEXT PRIMARY KEY REFERENCES keys(id),
        workspace_id  TEXT NOT NULL,
        sealed        BLOB NOT NULL
    );
    "#,
    // 10: key search (`q`): by name prefix, any case, and by the hint's tail.
    r#"
    CREATE INDEX keys_ws_name ON keys(workspace_id, name COLLATE NOCASE, id);
    CREATE INDEX keys_ws_hint ON keys(workspace_id, substr(hint, -4), hint, id);
    "#,
];

mod alerts;

/// How many keys a search reads in id order before it asks the indexes.
const SEARCH_WINDOW: i64 = 2_000;

/// Runs `sql` with the first of `args` it numbers (parameters a statement
/// does not use come last).
fn query_keys(c: &Connection, sql: &str, args: &[rusqlite::types::Value]) -> Result<Vec<KeyRecord>> {
    let mut st = c.prepare(sql)?;
    let used = st.parameter_count().min(args.len());
    let rows = st.query_map(rusqlite::params_from_iter(args[..used].iter()), key_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) the database file and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, None)
    }

    /// [`SqliteStore::open`], encrypted with `key` (the data dir's `store` DEK) when given.
    pub fn open_with(path: &Path, key: Option<&keyward_core::seal::SecretKey>) -> Result<Self> {
        Self::init(crate::cipher::open_db(path, key)?)
    }

    /// An in-memory database, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A panic while holding the lock leaves the connection usable: SQLite
        // rolls back the open transaction when it is dropped.
        let mut guard = self.conn.lock();
        f(&mut guard)
    }

    fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let tx = c.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// Runs every migration newer than the file's `user_version`, each in its own
/// transaction, and refuses a file from a newer binary.
fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::TooNew { found: current, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "Applied store migration.");
    }
    Ok(())
}

fn map_unique(e: rusqlite::Error, what: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        e => StoreError::Sqlite(e),
    }
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

fn append_audit(tx: &Transaction<'_>, e: &AuditEntry) -> Result<()> {
    let prev: String = tx
        .query_row("SELECT hash FROM audit WHERE workspace_id = ?1 ORDER BY seq DESC LIMIT 1", [&e.workspace_id], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_default();
    let before = json_text(&e.before);
    let after = json_text(&e.after);
    tx.execute(
        "INSERT INTO audit (id, workspace_id, at, actor, action, target_type, target_id, source_ip,
                            request_id, before, after, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, '')",
        params![
            e.id,
            e.workspace_id,
            e.at,
            e.actor,
            e.action,
            e.target_type,
            e.target_id,
            e.source_ip,
            e.request_id,
            before,
            after
        ],
    )?;
    let seq = tx.last_insert_rowid();
    let hash = audit_hash(&prev, seq, e, before.as_deref(), after.as_deref());
    tx.execute("UPDATE audit SET hash = ?1 WHERE seq = ?2", params![hash, seq])?;
    alerts::enqueue(tx, &e.notify)
}

const KEY_COLS: &str = "id, workspace_id, keyspace_id, name, owner_id, meta, hash, hash_kind, hint, enabled,
    expires_at, revoked_at, revoke_reason, revoke_note, incident_id, created_at, updated_at,
    last_used_at, last_used_ip, scopes, ip_allowlist, ratelimits, remaining, refill, refilled_at, rotated_at,
    rotated_to, overlap_until, revocation_check_at, revocation_check_code";

/// Reads a JSON column, naming the table and column when it is corrupt.
fn json_col<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn json_opt_col<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = r.get(i)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    })
    .transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let meta: String = r.get(5)?;
    let hash: Vec<u8> = r.get(6)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        keyspace_id: r.get(2)?,
        name: r.get(3)?,
        owner_id: r.get(4)?,
        meta: serde_json::from_str(&meta).unwrap_or(Value::Object(Default::default())),
        hash: KeyHash::from_slice(&hash).unwrap_or(KeyHash([0; 32])),
        hash_kind: r.get(7)?,
        hint: r.get(8)?,
        enabled: r.get(9)?,
        expires_at: r.get(10)?,
        revoked_at: r.get(11)?,
        revoke_reason: r.get(12)?,
        revoke_note: r.get(13)?,
        incident_id: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
        last_used_at: r.get(17)?,
        last_used_ip: r.get(18)?,
        scopes: json_col(r, 19)?,
        ip_allowlist: json_opt_col(r, 20)?,
        ratelimits: json_opt_col(r, 21)?,
        remaining: r.get(22)?,
        refill: json_opt_col(r, 23)?,
        refilled_at: r.get(24)?,
        rotated_at: r.get(25)?,
        rotated_to: r.get(26)?,
        overlap_until: r.get(27)?,
        revocation_check_at: r.get(28)?,
        revocation_check_code: r.get(29)?,
    })
}

const KS_COLS: &str = "id, workspace_id, name, prefix, default_ttl_ms, created_at, updated_at, default_scopes,
    default_ip_allowlist, default_ratelimits, path_rules, pseudonymize_ips, max_age_ms, auto_disable_on_critical,
    recoverable";

fn keyspace_from_row(r: &Row<'_>) -> rusqlite::Result<Keyspace> {
    Ok(Keyspace {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        default_ttl_ms: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        default_scopes: json_col(r, 7)?,
        default_ip_allowlist: json_col(r, 8)?,
        default_ratelimits: json_col(r, 9)?,
        path_rules: json_col(r, 10)?,
        pseudonymize_ips: r.get(11)?,
        max_age_ms: r.get(12)?,
        auto_disable_on_critical: r.get(13)?,
        recoverable: r.get(14)?,
    })
}

const RK_COLS: &str =
    "id, workspace_id, name, role, hash, hash_kind, hint, created_at, revoked_at, expires_at, last_used_at";

fn root_key_from_row(r: &Row<'_>) -> rusqlite::Result<RootKeyRecord> {
    let role: String = r.get(3)?;
    let hash: Vec<u8> = r.get(4)?;
    Ok(RootKeyRecord {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        name: r.get(2)?,
        // An unknown role reads as the least powerful one.
        role: Role::parse(&role).unwrap_or(Role::Verifier),
        hash: KeyHash::from_slice(&hash).unwrap_or(KeyHash([0; 32])),
        hash_kind: r.get(5)?,
        hint: r.get(6)?,
        created_at: r.get(7)?,
        revoked_at: r.get(8)?,
        expires_at: r.get(9)?,
        last_used_at: r.get(10)?,
    })
}

const AUDIT_COLS: &str = "seq, id, workspace_id, at, actor, action, target_type, target_id, source_ip,
    request_id, before, after, hash";

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(AuditEntry {
        seq: r.get(0)?,
        id: r.get(1)?,
        workspace_id: r.get(2)?,
        at: r.get(3)?,
        actor: r.get(4)?,
        action: r.get(5)?,
        target_type: r.get(6)?,
        target_id: r.get(7)?,
        source_ip: r.get(8)?,
        request_id: r.get(9)?,
        before: parse(r.get(10)?),
        after: parse(r.get(11)?),
        hash: r.get(12)?,
        notify: Vec::new(),
    })
}

fn insert_key_tx(tx: &Transaction<'_>, k: &KeyRecord) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
             ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
        ),
        params![
            k.id,
            k.workspace_id,
            k.keyspace_id,
            k.name,
            k.owner_id,
            k.meta.to_string(),
            &k.hash.0[..],
            k.hash_kind,
            k.hint,
            k.enabled,
            k.expires_at,
            k.revoked_at,
            k.revoke_reason,
            k.revoke_note,
            k.incident_id,
            k.created_at,
            k.updated_at,
            k.last_used_at,
            k.last_used_ip,
            to_json(&k.scopes),
            k.ip_allowlist.as_ref().map(to_json),
            k.ratelimits.as_ref().map(to_json),
            k.remaining,
            k.refill.as_ref().map(to_json),
            k.refilled_at,
            k.rotated_at,
            k.rotated_to,
            k.overlap_until,
            k.revocation_check_at,
            k.revocation_check_code
        ],
    )
    .map_err(|e| map_unique(e, "key"))?;
    Ok(())
}

/// Writes every mutable field of a key (not its hash, ids or creation time).
fn update_key_tx(tx: &Transaction<'_>, k: &KeyRecord) -> Result<()> {
    let n = tx.execute(
        "UPDATE keys SET name = ?3, owner_id = ?4, meta = ?5, enabled = ?6, expires_at = ?7,
                revoked_at = ?8, revoke_reason = ?9, revoke_note = ?10, incident_id = ?11,
                updated_at = ?12, scopes = ?13, ip_allowlist = ?14, ratelimits = ?15, remaining = ?16,
                refill = ?17, refilled_at = ?18, rotated_at = ?19, rotated_to = ?20, overlap_until = ?21
         WHERE workspace_id = ?1 AND id = ?2",
        params![
            k.workspace_id,
            k.id,
            k.name,
            k.owner_id,
            k.meta.to_string(),
            k.enabled,
            k.expires_at,
            k.revoked_at,
            k.revoke_reason,
            k.revoke_note,
            k.incident_id,
            k.updated_at,
            to_json(&k.scopes),
            k.ip_allowlist.as_ref().map(to_json),
            k.ratelimits.as_ref().map(to_json),
            k.remaining,
            k.refill.as_ref().map(to_json),
            k.refilled_at,
            k.rotated_at,
            k.rotated_to,
            k.overlap_until
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound("key"));
    }
    Ok(())
}

fn incident_from_row(r: &Row<'_>) -> rusqlite::Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        body: json_col(r, 2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

fn insert_sealed_tx(tx: &Transaction<'_>, k: &KeyRecord, sealed: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO sealed_keys (key_id, workspace_id, sealed) VALUES (?1, ?2, ?3)",
        params![k.id, k.workspace_id, sealed],
    )?;
    Ok(())
}

fn insert_root_key_tx(tx: &Transaction<'_>, rk: &RootKeyRecord) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO root_keys ({RK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            rk.id,
            rk.workspace_id,
            rk.name,
            rk.role.as_str(),
            &rk.hash.0[..],
            rk.hash_kind,
            rk.hint,
            rk.created_at,
            rk.revoked_at,
            rk.expires_at,
            rk.last_used_at
        ],
    )
    .map_err(|e| map_unique(e, "root key"))?;
    Ok(())
}

impl Store for SqliteStore {
    fn get_setting(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| Ok(c.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| r.get(0)).optional()?))
    }

    fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [name, value],
            )?;
            Ok(())
        })
    }

    fn create_workspace(&self, ws: &Workspace, admin: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![ws.id, ws.name, ws.created_at],
            )
            .map_err(|e| map_unique(e, "workspace"))?;
            insert_root_key_tx(tx, admin)?;
            append_audit(tx, audit)
        })
    }

    fn workspace_count(&self) -> Result<u64> {
        self.with(|c| Ok(c.query_row("SELECT COUNT(*) FROM workspaces", [], |r| r.get::<_, i64>(0))? as u64))
    }

    fn insert_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO keyspaces ({KS_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ),
                params![
                    ks.id,
                    ks.workspace_id,
                    ks.name,
                    ks.prefix,
                    ks.default_ttl_ms,
                    ks.created_at,
                    ks.updated_at,
                    to_json(&ks.default_scopes),
                    to_json(&ks.default_ip_allowlist),
                    to_json(&ks.default_ratelimits),
                    to_json(&ks.path_rules),
                    ks.pseudonymize_ips,
                    ks.max_age_ms,
                    ks.auto_disable_on_critical,
                    ks.recoverable
                ],
            )
            .map_err(|e| map_unique(e, "keyspace"))?;
            append_audit(tx, audit)
        })
    }

    fn update_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE keyspaces SET name = ?3, prefix = ?4, default_ttl_ms = ?5, updated_at = ?6,
                        default_scopes = ?7, default_ip_allowlist = ?8, default_ratelimits = ?9, path_rules = ?10,
                        pseudonymize_ips = ?11, max_age_ms = ?12, auto_disable_on_critical = ?13, recoverable = ?14
                 WHERE workspace_id = ?1 AND id = ?2",
                params![
                    ks.workspace_id,
                    ks.id,
                    ks.name,
                    ks.prefix,
                    ks.default_ttl_ms,
                    ks.updated_at,
                    to_json(&ks.default_scopes),
                    to_json(&ks.default_ip_allowlist),
                    to_json(&ks.default_ratelimits),
                    to_json(&ks.path_rules),
                    ks.pseudonymize_ips,
                    ks.max_age_ms,
                    ks.auto_disable_on_critical,
                    ks.recoverable
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("keyspace"));
            }
            append_audit(tx, audit)
        })
    }

    fn get_keyspace(&self, workspace_id: &str, id: &str) -> Result<Option<Keyspace>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {KS_COLS} FROM keyspaces WHERE workspace_id = ?1 AND id = ?2"),
                [workspace_id, id],
                keyspace_from_row,
            )
            .optional()?)
        })
    }

    fn list_keyspaces(&self, workspace_id: &str) -> Result<Vec<Keyspace>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {KS_COLS} FROM keyspaces WHERE workspace_id = ?1 ORDER BY id"))?;
            let rows = st.query_map([workspace_id], keyspace_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn all_keyspaces(&self) -> Result<Vec<Keyspace>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {KS_COLS} FROM keyspaces ORDER BY id"))?;
            let rows = st.query_map([], keyspace_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn insert_key_with(&self, k: &KeyRecord, sealed: Option<&[u8]>, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            insert_key_tx(tx, k)?;
            if let Some(sealed) = sealed {
                insert_sealed_tx(tx, k, sealed)?;
            }
            append_audit(tx, audit)
        })
    }

    fn sealed_key(&self, workspace_id: &str, key_id: &str) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT sealed FROM sealed_keys WHERE workspace_id = ?1 AND key_id = ?2",
                [workspace_id, key_id],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn update_key(&self, k: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            update_key_tx(tx, k)?;
            append_audit(tx, audit)
        })
    }

    fn insert_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            for k in keys {
                insert_key_tx(tx, k)?;
            }
            append_audit(tx, audit)
        })
    }

    fn update_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            for k in keys {
                update_key_tx(tx, k)?;
            }
            append_audit(tx, audit)
        })
    }

    fn rotate_key_with(
        &self,
        new: &KeyRecord,
        sealed: Option<&[u8]>,
        changed: &[KeyRecord],
        audit: &AuditEntry,
    ) -> Result<()> {
        self.tx(|tx| {
            insert_key_tx(tx, new)?;
            if let Some(sealed) = sealed {
                insert_sealed_tx(tx, new, sealed)?;
            }
            for k in changed {
                update_key_tx(tx, k)?;
            }
            append_audit(tx, audit)
        })
    }

    fn keys_rotated_to(&self, workspace_id: &str, id: &str) -> Result<Vec<KeyRecord>> {
        self.with(|c| {
            let mut st =
                c.prepare(&format!("SELECT {KEY_COLS} FROM keys WHERE workspace_id = ?1 AND rotated_to = ?2"))?;
            let rows = st.query_map([workspace_id, id], key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn revoked_since(&self, since: i64) -> Result<Vec<KeyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {KEY_COLS} FROM keys WHERE revoked_at >= ?1 ORDER BY id"))?;
            let rows = st.query_map([since], key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn record_revocation_checks(&self, checks: &[(String, i64, String)]) -> Result<()> {
        self.tx(|tx| {
            let mut st = tx
                .prepare_cached("UPDATE keys SET revocation_check_at = ?2, revocation_check_code = ?3 WHERE id = ?1")?;
            for (id, at, code) in checks {
                st.execute(params![id, at, code])?;
            }
            Ok(())
        })
    }

    fn insert_reminders(&self, reminders: &[Reminder], notices: &[Option<crate::alerts::Notice>]) -> Result<Vec<bool>> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO reminders (id, workspace_id, key_id, days, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut new = Vec::with_capacity(reminders.len());
            let mut to_send = Vec::new();
            for (i, r) in reminders.iter().enumerate() {
                let inserted =
                    st.execute(params![r.id, r.workspace_id, r.key_id, r.days, r.expires_at, r.created_at])? > 0;
                if inserted && let Some(Some(n)) = notices.get(i) {
                    to_send.push(n.clone());
                }
                new.push(inserted);
            }
            alerts::enqueue(tx, &to_send)?;
            Ok(new)
        })
    }

    fn list_reminders(
        &self,
        workspace_id: &str,
        key_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Reminder>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, workspace_id, key_id, days, expires_at, created_at FROM reminders
                 WHERE workspace_id = ?1 AND (?2 IS NULL OR key_id = ?2) AND (?3 IS NULL OR id > ?3)
                 ORDER BY id LIMIT ?4",
            )?;
            let rows = st.query_map(params![workspace_id, key_id, after, limit], |r| {
                Ok(Reminder {
                    id: r.get(0)?,
                    workspace_id: r.get(1)?,
                    key_id: r.get(2)?,
                    days: r.get(3)?,
                    expires_at: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn put_incident(&self, i: &IncidentRecord, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO incidents (id, workspace_id, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at
                 WHERE incidents.workspace_id = excluded.workspace_id",
                params![i.id, i.workspace_id, i.body.to_string(), i.created_at, i.updated_at],
            )?;
            append_audit(tx, audit)
        })
    }

    fn get_incident(&self, workspace_id: &str, id: &str) -> Result<Option<IncidentRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, workspace_id, body, created_at, updated_at FROM incidents WHERE workspace_id = ?1 AND id = ?2",
                [workspace_id, id],
                incident_from_row,
            )
            .optional()?)
        })
    }

    fn list_incidents(&self, workspace_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, workspace_id, body, created_at, updated_at FROM incidents
                 WHERE workspace_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![workspace_id, after, limit], incident_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<KeyRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE workspace_id = ?1 AND id = ?2"),
                [workspace_id, id],
                key_from_row,
            )
            .optional()?)
        })
    }

    fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        self.with(|c| {
            Ok(c.query_row(&format!("SELECT {KEY_COLS} FROM keys WHERE hash = ?1"), [&hash.0[..]], key_from_row)
                .optional()?)
        })
    }

    fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>> {
        // Only the filters given, so each is a seek: `id > cursor` on
        // `keys_ws`, and a search drives the query from its matches.
        let mut args: Vec<rusqlite::types::Value> = vec![f.workspace_id.clone().into()];
        let mut arg = |v: rusqlite::types::Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        let mut clauses = vec!["workspace_id = ?1".to_owned()];
        if let Some(ks) = &f.keyspace_id {
            clauses.push(format!("keyspace_id = {}", arg(ks.clone().into())));
        }
        if let Some(o) = &f.owner_id {
            clauses.push(format!("owner_id = {}", arg(o.clone().into())));
        }
        if let Some(a) = &f.after {
            clauses.push(format!("id > {}", arg(a.clone().into())));
        }
        match f.status {
            None => {}
            Some(KeyStatus::Revoked) => clauses.push("revoked_at IS NOT NULL".into()),
            Some(KeyStatus::Disabled) => clauses.push("revoked_at IS NULL AND enabled = 0".into()),
            Some(KeyStatus::Expired) => {
                let now = arg(f.now.into());
                clauses.push(format!(
                    "revoked_at IS NULL AND enabled = 1 AND expires_at IS NOT NULL AND expires_at <= {now}"
                ))
            }
            Some(KeyStatus::Active) => {
                let now = arg(f.now.into());
                clauses
                    .push(format!("revoked_at IS NULL AND enabled = 1 AND (expires_at IS NULL OR expires_at > {now})"))
            }
        }
        let Some((q, hi, tail)) = f.search_terms() else {
            let limit = arg(f.limit.into());
            let sql = format!("SELECT {KEY_COLS} FROM keys WHERE {} ORDER BY id LIMIT {limit}", clauses.join(" AND "));
            return self.with(|c| query_keys(c, &sql, &args));
        };
        // A search. Its terms (id, owner, name prefix, hint tail) as one
        // predicate, and as a union of covering-index lookups.
        let (q, hi) = (arg(q.into()), arg(hi.into()));
        let tail = tail.map(|t| arg(t.into()));
        let mut terms = vec![
            format!("id = {q}"),
            format!("owner_id = {q}"),
            format!("(name >= {q} COLLATE NOCASE AND name < {hi} COLLATE NOCASE)"),
        ];
        if let Some(tail) = &tail {
            terms.push(format!("(substr(hint, -4) = {tail} AND substr(hint, -length({q})) = {q})"));
        }
        let branches: Vec<String> =
            terms.iter().map(|t| format!("SELECT id FROM keys WHERE workspace_id = ?1 AND {t}")).collect();
        let limit = arg(f.limit.into());
        let window = arg(SEARCH_WINDOW.into());
        let after = f.after.as_ref().map(|a| arg(a.clone().into()));
        // First the next `SEARCH_WINDOW` keys in id order: when they hold a
        // page of matches (a broad search), those are the first matches.
        // (CROSS JOIN keeps the window outermost: with the search's OR, the
        // planner would otherwise walk the whole workspace.)
        let scan = format!(
            "SELECT {KEY_COLS} FROM (SELECT rowid AS r FROM keys WHERE workspace_id = ?1 {} ORDER BY id LIMIT {window}) AS w
             CROSS JOIN keys ON keys.rowid = w.r WHERE {} AND ({}) ORDER BY id LIMIT {limit}",
            after.as_ref().map(|a| format!("AND id > {a}")).unwrap_or_default(),
            clauses.join(" AND "),
            terms.join(" OR ")
        );
        // Else (a narrow search) the ids of all matches, gathered from the
        // indexes into a sorted set the query walks in id order.
        let lookup = format!(
            "SELECT {KEY_COLS} FROM keys WHERE {} AND id IN ({}) ORDER BY id LIMIT {limit}",
            clauses.join(" AND "),
            branches.join(" UNION ")
        );
        self.with(|c| {
            let first = query_keys(c, &scan, &args)?;
            if first.len() >= f.limit as usize {
                return Ok(first);
            }
            query_keys(c, &lookup, &args)
        })
    }

    fn for_each_key(&self, f: &mut dyn FnMut(KeyRecord)) -> Result<()> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {KEY_COLS} FROM keys"))?;
            let rows = st.query_map([], key_from_row)?;
            for r in rows {
                f(r?);
            }
            Ok(())
        })
    }

    fn record_last_used(&self, batch: &[LastUse]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE keys SET last_used_at = ?2, last_used_ip = COALESCE(?3, last_used_ip)
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)",
            )?;
            for u in batch {
                st.execute(params![u.key_id, u.at, u.ip])?;
            }
            Ok(())
        })
    }

    fn record_quotas(&self, batch: &[QuotaMark]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE keys SET remaining = ?2, refilled_at = ?3 WHERE id = ?1 AND remaining IS NOT NULL",
            )?;
            for q in batch {
                st.execute(params![q.key_id, q.remaining, q.refilled_at])?;
            }
            Ok(())
        })
    }

    fn insert_root_key(&self, rk: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            insert_root_key_tx(tx, rk)?;
            append_audit(tx, audit)
        })
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| append_audit(tx, audit))
    }

    fn rotate_root_key(&self, new: &RootKeyRecord, old: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE root_keys SET revoked_at = ?3, expires_at = ?4
                 WHERE workspace_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![old.workspace_id, old.id, old.revoked_at, old.expires_at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("root key"));
            }
            insert_root_key_tx(tx, new)?;
            append_audit(tx, audit)
        })
    }

    fn record_root_key_uses(&self, batch: &[(String, i64)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE root_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (id, at) in batch {
                st.execute(params![id, at])?;
            }
            Ok(())
        })
    }

    fn revoke_root_key(&self, workspace_id: &str, id: &str, at: i64, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE root_keys SET revoked_at = ?3 WHERE workspace_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![workspace_id, id, at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("root key"));
            }
            append_audit(tx, audit)
        })
    }

    fn list_root_keys(&self, workspace_id: &str) -> Result<Vec<RootKeyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {RK_COLS} FROM root_keys WHERE workspace_id = ?1 ORDER BY id"))?;
            let rows = st.query_map([workspace_id], root_key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn all_root_keys(&self) -> Result<Vec<RootKeyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {RK_COLS} FROM root_keys ORDER BY id"))?;
            let rows = st.query_map([], root_key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {AUDIT_COLS} FROM audit
                 WHERE workspace_id = ?1 AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR target_id = ?3)
                   AND (?4 IS NULL OR seq < ?4)
                 ORDER BY seq DESC LIMIT ?5"
            ))?;
            let rows =
                st.query_map(params![f.workspace_id, f.action, f.target_id, f.before_seq, f.limit], audit_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn verify_audit(&self, workspace_id: &str) -> Result<AuditCheck> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {AUDIT_COLS} FROM audit WHERE workspace_id = ?1 ORDER BY seq"))?;
            let mut rows = st.query([workspace_id])?;
            let mut prev = String::new();
            let mut entries = 0;
            while let Some(r) = rows.next()? {
                let e = audit_from_row(r)?;
                // Hash the stored text, not a re-serialisation of it.
                let before: Option<String> = r.get(10)?;
                let after: Option<String> = r.get(11)?;
                entries += 1;
                if audit_hash(&prev, e.seq, &e, before.as_deref(), after.as_deref()) != e.hash {
                    return Ok(AuditCheck { entries, first_bad_seq: Some(e.seq) });
                }
                prev = e.hash;
            }
            Ok(AuditCheck { entries, first_bad_seq: None })
        })
    }
}

#[cfg(test)]
mod tests;
