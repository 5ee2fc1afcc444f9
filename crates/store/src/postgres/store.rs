//! [`Store`] on PostgreSQL: the same records and transactions as the
//! embedded store, for several nodes over one database.
//!
//! Every transaction that writes an audit entry or a change other nodes must
//! see first takes one cluster-wide advisory lock (`WRITE_LOCK`). Management
//! writes are rare, so serialising them costs little, and it buys two
//! invariants: each workspace's audit chain stays linear with any number of
//! writers (an entry always links to the one committed before it), and the
//! sequence numbers of `changes` are handed out in commit order, so a node
//! that has read up to `seq` has missed nothing before it.
//! Batched marks (last use, quotas, revocation checks) skip the lock.

use std::time::Duration;

use keyward_core::{KeyHash, Role};
use postgres::types::ToSql;
use postgres::{NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use serde_json::Value;

use crate::{
    AuditCheck, AuditEntry, AuditFilter, IncidentRecord, KeyFilter, KeyRecord, KeyStatus, Keyspace, LastUse, QuotaMark,
    Reminder, Result, RootKeyRecord, Store, StoreError, Workspace, audit_hash,
};

/// The lock every ordered write takes ("kwwr").
const WRITE_LOCK: i64 = 0x6b77_7772;
/// The channel `NOTIFY` wakes followers on.
pub const CHANNEL: &str = "keyward_changes";

pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The PostgreSQL store: a pool of connections to one database.
pub struct PgStore {
    /// Always `Some` but while dropping (see the `Drop` below).
    pool: Option<Pool>,
    url: String,
    node: String,
}

/// Closing a connection blocks on the client's own runtime, so the pool is
/// dropped off any async worker, as every call is.
impl Drop for PgStore {
    fn drop(&mut self) {
        let pool = self.pool.take();
        off_runtime(move || drop(pool));
    }
}

/// Names the node on each of its connections (`keyward.node`), so the rows
/// it adds to `changes` say who made them.
#[derive(Debug)]
struct NameNode(String);

impl r2d2::CustomizeConnection<postgres::Client, postgres::Error> for NameNode {
    fn on_acquire(&self, c: &mut postgres::Client) -> Result<(), postgres::Error> {
        c.batch_execute(&format!("SET keyward.node = '{}'", self.0))
    }
}

pub(super) type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A pool of up to `size` connections to `url`, each named `node` when given.
pub(super) fn pool(url: &str, size: u32, node: Option<&str>) -> Result<Pool> {
    let config: postgres::Config =
        url.parse().map_err(|source| StoreError::Postgres { context: "reading the database URL", source })?;
    let mut b =
        r2d2::Pool::builder().max_size(size.max(1)).min_idle(Some(1)).connection_timeout(Duration::from_secs(3));
    if let Some(n) = node {
        b = b.connection_customizer(Box::new(NameNode(n.to_owned())));
    }
    b.build(PostgresConnectionManager::new(config, NoTls)).map_err(|e| StoreError::Pool(e.to_string()))
}

impl PgStore {
    /// Connects (a pool of up to `pool_size` connections) and brings the schema up to date.
    pub fn open(url: &str, pool_size: u32) -> Result<Self> {
        // Hex only: safe to put in the SET above.
        let node = format!("{:016x}", fastrand::u64(..));
        let pool = off_runtime(|| pool(url, pool_size, Some(&node)))?;
        let store = PgStore { pool: Some(pool), url: url.to_owned(), node };
        store.with("migrating", |c| super::migrate(c, super::schema::MIGRATIONS).map(|_| ()))?;
        Ok(store)
    }

    /// The URL it was opened with (followers open their own connection to it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This process's name in `changes.node`.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn with<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T>,
    ) -> Result<T> {
        off_runtime(|| {
            let pool = self.pool.as_ref().expect("the pool lives as long as the store");
            let mut c = pool.get().map_err(|e| StoreError::Pool(e.to_string()))?;
            f(&mut c).map_err(|e| e.in_context(context))
        })
    }

    /// A transaction under the write lock (see the module docs).
    pub(super) fn tx<T>(&self, context: &'static str, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(context, |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// A transaction without the write lock, for batched marks.
    pub(super) fn tx_unordered<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.with(context, |c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn query<T>(
        &self,
        context: &'static str,
        sql: &str,
        params: &Params<'_>,
        map: impl Fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.with(context, |c| c.query(sql, params)?.iter().map(map).collect())
    }

    fn query_opt<T>(
        &self,
        context: &'static str,
        sql: &str,
        params: &Params<'_>,
        map: impl Fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.with(context, |c| c.query_opt(sql, params)?.as_ref().map(map).transpose())
    }
}

/// Runs a blocking client call. The `postgres` client drives its own small
/// runtime, which cannot start on a thread that is running async tasks: on
/// a worker of a multi-threaded tokio runtime the call is moved out of it
/// (`block_in_place`); elsewhere (blocking pool, plain threads) it runs as is.
pub(super) fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `$1, $2, …, $n`.
fn marks(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A unique violation as a conflict on `what`, anything else as it is.
fn unique(e: postgres::Error, what: &str) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(format!("{what} already exists"))
    } else {
        e.into()
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn json<T: serde::de::DeserializeOwned>(r: &Row, i: usize, table: &'static str) -> Result<T> {
    let text: String = r.try_get(i)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { table, detail: format!("column {i}: {e}") })
}

fn json_opt<T: serde::de::DeserializeOwned>(r: &Row, i: usize, table: &'static str) -> Result<Option<T>> {
    let text: Option<String> = r.try_get(i)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt { table, detail: format!("column {i}: {e}") })
    })
    .transpose()
}

pub(super) fn parse(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Records that `kind` `id` changed, for the other nodes; they are woken at commit.
pub(super) fn note_change(tx: &mut Transaction<'_>, kind: &str, workspace_id: &str, id: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO changes (kind, workspace_id, target_id, at, node)
         VALUES ($1, $2, $3, $4, current_setting('keyward.node', true))",
        &[&kind, &workspace_id, &id, &keyward_core::time::now_ms()],
    )?;
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
    Ok(())
}

pub(super) fn append_audit(tx: &mut Transaction<'_>, e: &AuditEntry) -> Result<()> {
    let prev: String = tx
        .query_opt("SELECT hash FROM audit WHERE workspace_id = $1 ORDER BY seq DESC LIMIT 1", &[&e.workspace_id])?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or_default();
    let seq: i64 = tx.query_one("SELECT nextval(pg_get_serial_sequence('audit', 'seq'))", &[])?.try_get(0)?;
    let before = e.before.as_ref().map(Value::to_string);
    let after = e.after.as_ref().map(Value::to_string);
    let hash = audit_hash(&prev, seq, e, before.as_deref(), after.as_deref());
    tx.execute(
        "INSERT INTO audit (seq, id, workspace_id, at, actor, action, target_type, target_id, source_ip,
                            request_id, before, after, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &seq,
            &e.id,
            &e.workspace_id,
            &e.at,
            &e.actor,
            &e.action,
            &e.target_type,
            &e.target_id,
            &e.source_ip,
            &e.request_id,
            &before,
            &after,
            &hash,
        ],
    )
    .map_err(|err| unique(err, "audit entry"))?;
    super::alerts::enqueue(tx, &e.notify)
}

pub(super) const KEY_COLS: &str = "id, workspace_id, keyspace_id, name, owner_id, meta, hash, hash_kind, hint, enabled,
    expires_at, revoked_at, revoke_reason, revoke_note, incident_id, created_at, updated_at,
    last_used_at, last_used_ip, scopes, ip_allowlist, ratelimits, remaining, refill, refilled_at, rotated_at,
    rotated_to, overlap_until, revocation_check_at, revocation_check_code";

pub(super) fn key_from_row(r: &Row) -> Result<KeyRecord> {
    let meta: String = r.try_get(5)?;
    let hash: Vec<u8> = r.try_get(6)?;
    Ok(KeyRecord {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        keyspace_id: r.try_get(2)?,
        name: r.try_get(3)?,
        owner_id: r.try_get(4)?,
        meta: serde_json::from_str(&meta).unwrap_or(Value::Object(Default::default())),
        hash: KeyHash::from_slice(&hash).unwrap_or(KeyHash([0; 32])),
        hash_kind: r.try_get(7)?,
        hint: r.try_get(8)?,
        enabled: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        revoked_at: r.try_get(11)?,
        revoke_reason: r.try_get(12)?,
        revoke_note: r.try_get(13)?,
        incident_id: r.try_get(14)?,
        created_at: r.try_get(15)?,
        updated_at: r.try_get(16)?,
        last_used_at: r.try_get(17)?,
        last_used_ip: r.try_get(18)?,
        scopes: json(r, 19, "keys")?,
        ip_allowlist: json_opt(r, 20, "keys")?,
        ratelimits: json_opt(r, 21, "keys")?,
        remaining: r.try_get(22)?,
        refill: json_opt(r, 23, "keys")?,
        refilled_at: r.try_get(24)?,
        rotated_at: r.try_get(25)?,
        rotated_to: r.try_get(26)?,
        overlap_until: r.try_get(27)?,
        revocation_check_at: r.try_get(28)?,
        revocation_check_code: r.try_get(29)?,
    })
}

const KS_COLS: &str = "id, workspace_id, name, prefix, default_ttl_ms, created_at, updated_at, default_scopes,
    default_ip_allowlist, default_ratelimits, path_rules, pseudonymize_ips, max_age_ms, auto_disable_on_critical,
    recoverable";

fn keyspace_from_row(r: &Row) -> Result<Keyspace> {
    Ok(Keyspace {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        default_ttl_ms: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        default_scopes: json(r, 7, "keyspaces")?,
        default_ip_allowlist: json(r, 8, "keyspaces")?,
        default_ratelimits: json(r, 9, "keyspaces")?,
        path_rules: json(r, 10, "keyspaces")?,
        pseudonymize_ips: r.try_get(11)?,
        max_age_ms: r.try_get(12)?,
        auto_disable_on_critical: r.try_get(13)?,
        recoverable: r.try_get(14)?,
    })
}

const RK_COLS: &str =
    "id, workspace_id, name, role, hash, hash_kind, hint, created_at, revoked_at, expires_at, last_used_at";

fn root_key_from_row(r: &Row) -> Result<RootKeyRecord> {
    let role: String = r.try_get(3)?;
    let hash: Vec<u8> = r.try_get(4)?;
    Ok(RootKeyRecord {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        name: r.try_get(2)?,
        // An unknown role reads as the least powerful one.
        role: Role::parse(&role).unwrap_or(Role::Verifier),
        hash: KeyHash::from_slice(&hash).unwrap_or(KeyHash([0; 32])),
        hash_kind: r.try_get(5)?,
        hint: r.try_get(6)?,
        created_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
        expires_at: r.try_get(9)?,
        last_used_at: r.try_get(10)?,
    })
}

const AUDIT_COLS: &str = "seq, id, workspace_id, at, actor, action, target_type, target_id, source_ip,
    request_id, before, after, hash";

fn audit_from_row(r: &Row) -> Result<AuditEntry> {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(AuditEntry {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        workspace_id: r.try_get(2)?,
        at: r.try_get(3)?,
        actor: r.try_get(4)?,
        action: r.try_get(5)?,
        target_type: r.try_get(6)?,
        target_id: r.try_get(7)?,
        source_ip: r.try_get(8)?,
        request_id: r.try_get(9)?,
        before: parse(r.try_get(10)?),
        after: parse(r.try_get(11)?),
        hash: r.try_get(12)?,
        notify: Vec::new(),
    })
}

fn insert_key_tx(tx: &mut Transaction<'_>, k: &KeyRecord) -> Result<()> {
    let meta = k.meta.to_string();
    let hash = &k.hash.0[..];
    let scopes = to_json(&k.scopes);
    let allow = k.ip_allowlist.as_ref().map(to_json);
    let limits = k.ratelimits.as_ref().map(to_json);
    let refill = k.refill.as_ref().map(to_json);
    tx.execute(
        &format!("INSERT INTO keys ({KEY_COLS}) VALUES ({})", marks(30)),
        &[
            &k.id,
            &k.workspace_id,
            &k.keyspace_id,
            &k.name,
            &k.owner_id,
            &meta,
            &hash,
            &k.hash_kind,
            &k.hint,
            &k.enabled,
            &k.expires_at,
            &k.revoked_at,
            &k.revoke_reason,
            &k.revoke_note,
            &k.incident_id,
            &k.created_at,
            &k.updated_at,
            &k.last_used_at,
            &k.last_used_ip,
            &scopes,
            &allow,
            &limits,
            &k.remaining,
            &refill,
            &k.refilled_at,
            &k.rotated_at,
            &k.rotated_to,
            &k.overlap_until,
            &k.revocation_check_at,
            &k.revocation_check_code,
        ],
    )
    .map_err(|e| unique(e, "key"))?;
    note_change(tx, "key", &k.workspace_id, &k.id)
}

/// Writes every mutable field of a key (not its hash, ids or creation time).
fn update_key_tx(tx: &mut Transaction<'_>, k: &KeyRecord) -> Result<()> {
    let meta = k.meta.to_string();
    let scopes = to_json(&k.scopes);
    let allow = k.ip_allowlist.as_ref().map(to_json);
    let limits = k.ratelimits.as_ref().map(to_json);
    let refill = k.refill.as_ref().map(to_json);
    let n = tx.execute(
        "UPDATE keys SET name = $3, owner_id = $4, meta = $5, enabled = $6, expires_at = $7,
                revoked_at = $8, revoke_reason = $9, revoke_note = $10, incident_id = $11,
                updated_at = $12, scopes = $13, ip_allowlist = $14, ratelimits = $15, remaining = $16,
                refill = $17, refilled_at = $18, rotated_at = $19, rotated_to = $20, overlap_until = $21
         WHERE workspace_id = $1 AND id = $2",
        &[
            &k.workspace_id,
            &k.id,
            &k.name,
            &k.owner_id,
            &meta,
            &k.enabled,
            &k.expires_at,
            &k.revoked_at,
            &k.revoke_reason,
            &k.revoke_note,
            &k.incident_id,
            &k.updated_at,
            &scopes,
            &allow,
            &limits,
            &k.remaining,
            &refill,
            &k.refilled_at,
            &k.rotated_at,
            &k.rotated_to,
            &k.overlap_until,
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound("key"));
    }
    note_change(tx, "key", &k.workspace_id, &k.id)
}

fn incident_from_row(r: &Row) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        body: json(r, 2, "incidents")?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}

fn insert_sealed_tx(tx: &mut Transaction<'_>, k: &KeyRecord, sealed: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO sealed_keys (key_id, workspace_id, sealed) VALUES ($1, $2, $3)",
        &[&k.id, &k.workspace_id, &sealed],
    )?;
    Ok(())
}

fn insert_root_key_tx(tx: &mut Transaction<'_>, rk: &RootKeyRecord) -> Result<()> {
    let hash = &rk.hash.0[..];
    tx.execute(
        &format!("INSERT INTO root_keys ({RK_COLS}) VALUES ({})", marks(11)),
        &[
            &rk.id,
            &rk.workspace_id,
            &rk.name,
            &rk.role.as_str(),
            &hash,
            &rk.hash_kind,
            &rk.hint,
            &rk.created_at,
            &rk.revoked_at,
            &rk.expires_at,
            &rk.last_used_at,
        ],
    )
    .map_err(|e| unique(e, "root key"))?;
    note_change(tx, "root_key", &rk.workspace_id, &rk.id)
}

fn write_keyspace_tx(tx: &mut Transaction<'_>, ks: &Keyspace, insert: bool) -> Result<()> {
    let scopes = to_json(&ks.default_scopes);
    let allow = to_json(&ks.default_ip_allowlist);
    let limits = to_json(&ks.default_ratelimits);
    let rules = to_json(&ks.path_rules);
    let params: &Params<'_> = &[
        &ks.id,
        &ks.workspace_id,
        &ks.name,
        &ks.prefix,
        &ks.default_ttl_ms,
        &ks.created_at,
        &ks.updated_at,
        &scopes,
        &allow,
        &limits,
        &rules,
        &ks.pseudonymize_ips,
        &ks.max_age_ms,
        &ks.auto_disable_on_critical,
        &ks.recoverable,
    ];
    if insert {
        tx.execute(&format!("INSERT INTO keyspaces ({KS_COLS}) VALUES ({})", marks(15)), params)
            .map_err(|e| unique(e, "keyspace"))?;
    } else {
        let mut changed = params.to_vec();
        changed.remove(5); // created_at stays
        let n = tx.execute(
            "UPDATE keyspaces SET name = $3, prefix = $4, default_ttl_ms = $5, updated_at = $6,
                    default_scopes = $7, default_ip_allowlist = $8, default_ratelimits = $9, path_rules = $10,
                    pseudonymize_ips = $11, max_age_ms = $12, auto_disable_on_critical = $13, recoverable = $14
             WHERE workspace_id = $2 AND id = $1",
            &changed,
        )?;
        if n == 0 {
            return Err(StoreError::NotFound("keyspace"));
        }
    }
    note_change(tx, "keyspace", &ks.workspace_id, &ks.id)
}

impl Store for PgStore {
    fn get_setting(&self, name: &str) -> Result<Option<String>> {
        self.query_opt("reading a setting", "SELECT value FROM settings WHERE name = $1", &[&name], |r| {
            Ok(r.try_get(0)?)
        })
    }

    fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.tx("writing a setting", |tx| {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&name, &value],
            )?;
            note_change(tx, "setting", "", name)
        })
    }

    fn create_workspace(&self, ws: &Workspace, admin: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx("creating a workspace", |tx| {
            tx.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
                &[&ws.id, &ws.name, &ws.created_at],
            )
            .map_err(|e| unique(e, "workspace"))?;
            insert_root_key_tx(tx, admin)?;
            append_audit(tx, audit)
        })
    }

    fn put_setting_if_absent(&self, name: &str, value: &str) -> Result<bool> {
        self.tx("writing a setting", |tx| {
            let n = tx.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )?;
            if n > 0 {
                note_change(tx, "setting", "", name)?;
            }
            Ok(n > 0)
        })
    }

    fn create_first_workspace(&self, ws: &Workspace, admin: &RootKeyRecord, audit: &AuditEntry) -> Result<bool> {
        self.tx("creating the first workspace", |tx| {
            let n: i64 = tx.query_one("SELECT COUNT(*) FROM workspaces", &[])?.try_get(0)?;
            if n > 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
                &[&ws.id, &ws.name, &ws.created_at],
            )?;
            insert_root_key_tx(tx, admin)?;
            append_audit(tx, audit)?;
            Ok(true)
        })
    }

    fn workspace_count(&self) -> Result<u64> {
        self.with("counting workspaces", |c| {
            let n: i64 = c.query_one("SELECT COUNT(*) FROM workspaces", &[])?.try_get(0)?;
            Ok(n as u64)
        })
    }

    fn insert_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()> {
        self.tx("creating a keyspace", |tx| {
            write_keyspace_tx(tx, ks, true)?;
            append_audit(tx, audit)
        })
    }

    fn update_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()> {
        self.tx("updating a keyspace", |tx| {
            write_keyspace_tx(tx, ks, false)?;
            append_audit(tx, audit)
        })
    }

    fn get_keyspace(&self, workspace_id: &str, id: &str) -> Result<Option<Keyspace>> {
        self.query_opt(
            "reading a keyspace",
            &format!("SELECT {KS_COLS} FROM keyspaces WHERE workspace_id = $1 AND id = $2"),
            &[&workspace_id, &id],
            keyspace_from_row,
        )
    }

    fn list_keyspaces(&self, workspace_id: &str) -> Result<Vec<Keyspace>> {
        self.query(
            "listing keyspaces",
            &format!("SELECT {KS_COLS} FROM keyspaces WHERE workspace_id = $1 ORDER BY id"),
            &[&workspace_id],
            keyspace_from_row,
        )
    }

    fn all_keyspaces(&self) -> Result<Vec<Keyspace>> {
        self.query("reading keyspaces", &format!("SELECT {KS_COLS} FROM keyspaces ORDER BY id"), &[], keyspace_from_row)
    }

    fn insert_key_with(&self, k: &KeyRecord, sealed: Option<&[u8]>, audit: &AuditEntry) -> Result<()> {
        self.tx("creating a key", |tx| {
            insert_key_tx(tx, k)?;
            if let Some(sealed) = sealed {
                insert_sealed_tx(tx, k, sealed)?;
            }
            append_audit(tx, audit)
        })
    }

    fn sealed_key(&self, workspace_id: &str, key_id: &str) -> Result<Option<Vec<u8>>> {
        self.query_opt(
            "reading a sealed key",
            "SELECT sealed FROM sealed_keys WHERE workspace_id = $1 AND key_id = $2",
            &[&workspace_id, &key_id],
            |r| Ok(r.try_get(0)?),
        )
    }

    fn update_key(&self, k: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx("updating a key", |tx| {
            update_key_tx(tx, k)?;
            append_audit(tx, audit)
        })
    }

    fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<KeyRecord>> {
        self.query_opt(
            "reading a key",
            &format!("SELECT {KEY_COLS} FROM keys WHERE workspace_id = $1 AND id = $2"),
            &[&workspace_id, &id],
            key_from_row,
        )
    }

    fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        let h = &hash.0[..];
        self.query_opt("finding a key", &format!("SELECT {KEY_COLS} FROM keys WHERE hash = $1"), &[&h], key_from_row)
    }

    fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>> {
        let status_sql = match f.status {
            None => "TRUE",
            Some(KeyStatus::Revoked) => "revoked_at IS NOT NULL",
            Some(KeyStatus::Disabled) => "revoked_at IS NULL AND NOT enabled",
            Some(KeyStatus::Expired) => {
                "revoked_at IS NULL AND enabled AND expires_at IS NOT NULL AND expires_at <= $5"
            }
            Some(KeyStatus::Active) => "revoked_at IS NULL AND enabled AND (expires_at IS NULL OR expires_at > $5)",
        };
        // A search is ORed index lookups (id, owner, name prefix, hint tail):
        // the planner answers it with a bitmap OR of those indexes.
        let terms = f.search_terms().map(|(q, _, tail)| {
            let pattern = format!("{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            (q, pattern, tail)
        });
        let search_sql = match &terms {
            None => "",
            Some(_) => {
                "AND (id = $7 OR owner_id = $7 OR lower(name) LIKE lower($8)
                      OR (right(hint, 4) = $9 AND right(hint, length($7)) = $7))"
            }
        };
        let sql = format!(
            "SELECT {KEY_COLS} FROM keys
             WHERE workspace_id = $1
               AND ($2::TEXT IS NULL OR keyspace_id = $2)
               AND ($3::TEXT IS NULL OR owner_id = $3)
               AND ($4::TEXT IS NULL OR id > $4)
               AND ($5::BIGINT IS NOT NULL) AND {status_sql}
               {search_sql}
             ORDER BY id LIMIT $6"
        );
        let limit = i64::from(f.limit);
        match &terms {
            None => self.query(
                "listing keys",
                &sql,
                &[&f.workspace_id, &f.keyspace_id, &f.owner_id, &f.after, &f.now, &limit],
                key_from_row,
            ),
            Some((q, pattern, tail)) => self.query(
                "searching keys",
                &sql,
                &[&f.workspace_id, &f.keyspace_id, &f.owner_id, &f.after, &f.now, &limit, q, pattern, tail],
                key_from_row,
            ),
        }
    }

    fn insert_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()> {
        self.tx("importing keys", |tx| {
            for k in keys {
                insert_key_tx(tx, k)?;
            }
            append_audit(tx, audit)
        })
    }

    fn update_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()> {
        self.tx("updating keys", |tx| {
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
        // The successor first: a follower that loads the old key then finds its successor.
        self.tx("rotating a key", |tx| {
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
        self.query(
            "reading predecessors",
            &format!("SELECT {KEY_COLS} FROM keys WHERE workspace_id = $1 AND rotated_to = $2"),
            &[&workspace_id, &id],
            key_from_row,
        )
    }

    fn revoked_since(&self, since: i64) -> Result<Vec<KeyRecord>> {
        self.query(
            "reading revoked keys",
            &format!("SELECT {KEY_COLS} FROM keys WHERE revoked_at >= $1 ORDER BY id"),
            &[&since],
            key_from_row,
        )
    }

    fn record_revocation_checks(&self, checks: &[(String, i64, String)]) -> Result<()> {
        self.tx_unordered("recording revocation checks", |tx| {
            let st =
                tx.prepare("UPDATE keys SET revocation_check_at = $2, revocation_check_code = $3 WHERE id = $1")?;
            for (id, at, code) in checks {
                tx.execute(&st, &[id, at, code])?;
            }
            Ok(())
        })
    }

    fn insert_reminders(&self, reminders: &[Reminder], notices: &[Option<crate::alerts::Notice>]) -> Result<Vec<bool>> {
        self.tx("storing reminders", |tx| {
            let st = tx.prepare(
                "INSERT INTO reminders (id, workspace_id, key_id, days, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )?;
            let mut new = Vec::with_capacity(reminders.len());
            let mut to_send = Vec::new();
            for (i, r) in reminders.iter().enumerate() {
                let inserted =
                    tx.execute(&st, &[&r.id, &r.workspace_id, &r.key_id, &r.days, &r.expires_at, &r.created_at])? > 0;
                if inserted && let Some(Some(n)) = notices.get(i) {
                    to_send.push(n.clone());
                }
                new.push(inserted);
            }
            super::alerts::enqueue(tx, &to_send)?;
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
        self.query(
            "listing reminders",
            "SELECT id, workspace_id, key_id, days, expires_at, created_at FROM reminders
             WHERE workspace_id = $1 AND ($2::TEXT IS NULL OR key_id = $2) AND ($3::TEXT IS NULL OR id > $3)
             ORDER BY id LIMIT $4",
            &[&workspace_id, &key_id, &after, &i64::from(limit)],
            |r| {
                Ok(Reminder {
                    id: r.try_get(0)?,
                    workspace_id: r.try_get(1)?,
                    key_id: r.try_get(2)?,
                    days: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                })
            },
        )
    }

    fn put_incident(&self, i: &IncidentRecord, audit: &AuditEntry) -> Result<()> {
        self.tx("writing an incident", |tx| {
            tx.execute(
                "INSERT INTO incidents (id, workspace_id, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at
                 WHERE incidents.workspace_id = excluded.workspace_id",
                &[&i.id, &i.workspace_id, &i.body.to_string(), &i.created_at, &i.updated_at],
            )?;
            append_audit(tx, audit)
        })
    }

    fn get_incident(&self, workspace_id: &str, id: &str) -> Result<Option<IncidentRecord>> {
        self.query_opt(
            "reading an incident",
            "SELECT id, workspace_id, body, created_at, updated_at FROM incidents WHERE workspace_id = $1 AND id = $2",
            &[&workspace_id, &id],
            incident_from_row,
        )
    }

    fn list_incidents(&self, workspace_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>> {
        self.query(
            "listing incidents",
            "SELECT id, workspace_id, body, created_at, updated_at FROM incidents
             WHERE workspace_id = $1 AND ($2::TEXT IS NULL OR id > $2) ORDER BY id LIMIT $3",
            &[&workspace_id, &after, &i64::from(limit)],
            incident_from_row,
        )
    }

    fn for_each_key(&self, f: &mut dyn FnMut(KeyRecord)) -> Result<()> {
        // A portal, so a million keys stream in pages instead of one result set in memory.
        self.with("loading keys", |c| {
            let mut tx = c.transaction()?;
            let portal = tx.bind(&format!("SELECT {KEY_COLS} FROM keys"), &[])?;
            loop {
                let rows = tx.query_portal(&portal, 10_000)?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    f(key_from_row(r)?);
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn record_last_used(&self, batch: &[LastUse]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx_unordered("recording last uses", |tx| {
            let st = tx.prepare(
                "UPDATE keys SET last_used_at = $2, last_used_ip = COALESCE($3, last_used_ip)
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $2)",
            )?;
            for u in batch {
                tx.execute(&st, &[&u.key_id, &u.at, &u.ip])?;
            }
            Ok(())
        })
    }

    fn record_quotas(&self, batch: &[QuotaMark]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx_unordered("recording quotas", |tx| {
            let st =
                tx.prepare("UPDATE keys SET remaining = $2, refilled_at = $3 WHERE id = $1 AND remaining IS NOT NULL")?;
            for q in batch {
                tx.execute(&st, &[&q.key_id, &q.remaining, &q.refilled_at])?;
            }
            Ok(())
        })
    }

    fn insert_root_key(&self, rk: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx("creating a root key", |tx| {
            insert_root_key_tx(tx, rk)?;
            append_audit(tx, audit)
        })
    }

    fn revoke_root_key(&self, workspace_id: &str, id: &str, at: i64, audit: &AuditEntry) -> Result<()> {
        self.tx("revoking a root key", |tx| {
            let n = tx.execute(
                "UPDATE root_keys SET revoked_at = $3 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
                &[&workspace_id, &id, &at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("root key"));
            }
            note_change(tx, "root_key", workspace_id, id)?;
            append_audit(tx, audit)
        })
    }

    fn rotate_root_key(&self, new: &RootKeyRecord, old: &RootKeyRecord, audit: &AuditEntry) -> Result<()> {
        self.tx("rotating a root key", |tx| {
            let n = tx.execute(
                "UPDATE root_keys SET revoked_at = $3, expires_at = $4
                 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
                &[&old.workspace_id, &old.id, &old.revoked_at, &old.expires_at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("root key"));
            }
            note_change(tx, "root_key", &old.workspace_id, &old.id)?;
            insert_root_key_tx(tx, new)?;
            append_audit(tx, audit)
        })
    }

    fn record_root_key_uses(&self, batch: &[(String, i64)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx_unordered("recording root key uses", |tx| {
            let st = tx.prepare(
                "UPDATE root_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )?;
            for (id, at) in batch {
                tx.execute(&st, &[id, at])?;
            }
            Ok(())
        })
    }

    fn list_root_keys(&self, workspace_id: &str) -> Result<Vec<RootKeyRecord>> {
        self.query(
            "listing root keys",
            &format!("SELECT {RK_COLS} FROM root_keys WHERE workspace_id = $1 ORDER BY id"),
            &[&workspace_id],
            root_key_from_row,
        )
    }

    fn all_root_keys(&self) -> Result<Vec<RootKeyRecord>> {
        self.query("reading root keys", &format!("SELECT {RK_COLS} FROM root_keys ORDER BY id"), &[], root_key_from_row)
    }

    fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.query(
            "listing the audit log",
            &format!(
                "SELECT {AUDIT_COLS} FROM audit
                 WHERE workspace_id = $1 AND ($2::TEXT IS NULL OR action = $2) AND ($3::TEXT IS NULL OR target_id = $3)
                   AND ($4::BIGINT IS NULL OR seq < $4)
                 ORDER BY seq DESC LIMIT $5"
            ),
            &[&f.workspace_id, &f.action, &f.target_id, &f.before_seq, &i64::from(f.limit)],
            audit_from_row,
        )
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<()> {
        self.tx("writing an audit entry", |tx| append_audit(tx, audit))
    }

    fn verify_audit(&self, workspace_id: &str) -> Result<AuditCheck> {
        self.with("checking the audit chain", |c| {
            let mut tx = c.transaction()?;
            let portal = tx.bind(
                &format!("SELECT {AUDIT_COLS} FROM audit WHERE workspace_id = $1 ORDER BY seq"),
                &[&workspace_id],
            )?;
            let mut prev = String::new();
            let mut entries = 0;
            loop {
                let rows = tx.query_portal(&portal, 10_000)?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    let e = audit_from_row(r)?;
                    // Hash the stored text, not a re-serialisation of it.
                    let before: Option<String> = r.try_get(10)?;
                    let after: Option<String> = r.try_get(11)?;
                    entries += 1;
                    if audit_hash(&prev, e.seq, &e, before.as_deref(), after.as_deref()) != e.hash {
                        return Ok(AuditCheck { entries, first_bad_seq: Some(e.seq) });
                    }
                    prev = e.hash;
                }
            }
            tx.commit()?;
            Ok(AuditCheck { entries, first_bad_seq: None })
        })
    }
}
