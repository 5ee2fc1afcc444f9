//! keyward's use cases over a [`Store`]: verify, keyspaces, keys, root keys,
//! workspaces, audit. Holds the in-memory key index (see `index`), so the
//! verify path can decide on a cache hit without touching the store.
//!
//! Invariants:
//! * Every write goes to the store first (durable, with its audit record in
//!   the same transaction), then to the index; the API answers after both.
//! * A raw key is made here (create) and handed back once; it is never stored,
//!   logged or put in an error.

pub mod alerts;
pub mod analytics;
pub mod api;
pub mod cluster;
mod decision;
pub mod error;
pub mod events;
pub mod github;
pub mod import;
pub mod incidents;
pub mod index;
pub mod leaks;
pub mod lifecycle;
mod manage;
mod observe;
pub mod secrets;
pub mod validate;
pub mod verify;
mod views;

use parking_lot::RwLock;
use std::sync::Arc;

use keyward_core::hash::{self, KeyHash, KeyHasher};
use keyward_core::{Permission, Role};
use keyward_store::{RootKeyRecord, Store, StoreError};

pub use decision::Decision;
pub use error::{AuthError, ServiceError};
pub use index::{CachedKey, KeyIndex, KeyspaceCell, KeyspacePolicy, NegativeCache, QuotaFrom};
pub use keyward_events::SinkHealth;
pub use verify::{RequestCtx, VerifyInput};

/// Result of a use case.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Tunables of the service layer: the `[cache]` section of the config file,
/// so each default is defined here once.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Unknown key hashes remembered, to spare the store repeated lookups.
    /// Default 100000.
    pub negative_capacity: usize,
    /// How long an unknown hash is remembered, ms. Default 30000.
    pub negative_ttl_ms: i64,
    /// Store lookups for index misses allowed at once. Default 4.
    pub miss_lookup_concurrency: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { negative_capacity: 100_000, negative_ttl_ms: 30_000, miss_lookup_concurrency: 4 }
    }
}

impl ServiceConfig {
    /// Every problem with these values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.negative_capacity == 0 || self.negative_ttl_ms <= 0 || self.miss_lookup_concurrency == 0 {
            p.push("cache: negative_capacity, negative_ttl_ms and miss_lookup_concurrency must be positive".into());
        }
        p
    }
}

/// Who is calling: the authenticated root key, and where from.
#[derive(Debug, Clone)]
pub struct Actor {
    pub workspace_id: String,
    pub root_key_id: String,
    pub role: Role,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    /// Refuses the call unless the role allows `p`; `action` names it for the error.
    pub fn require(&self, p: Permission, action: &'static str) -> Result<()> {
        if self.role.allows(p) { Ok(()) } else { Err(ServiceError::Forbidden { role: self.role.as_str(), action }) }
    }
}

/// The use cases, shared by every request handler.
pub struct Service {
    store: Arc<dyn Store>,
    hasher: KeyHasher,
    index: KeyIndex,
    negative: NegativeCache,
    roots: RwLock<std::collections::HashMap<KeyHash, Arc<RootEntry>>>,
    /// Each keyspace's verify-path policy, by keyspace id.
    keyspaces: RwLock<std::collections::HashMap<String, Arc<KeyspaceCell>>>,
    miss_lookups: tokio::sync::Semaphore,
    /// Where usage events go; `None` in setups that log nothing (benchmarks).
    events: Option<Arc<keyward_events::EventPipeline>>,
    /// The running exporters, for readiness.
    sinks: std::sync::OnceLock<Arc<keyward_events::Sinks>>,
    /// The rules engine, once started: use cases send it their signals.
    monitor: std::sync::OnceLock<Arc<keyward_alerts::Monitor>>,
    /// Whether any rule in force watches sensitive scopes (`off_hours`): only
    /// then does a verify work out the scopes its request needed for the event.
    scopes_wanted: std::sync::atomic::AtomicBool,
    /// `keyward_verifications_total` by outcome, made at the first verify
    /// (after the binary has installed its recorder).
    outcome_counters: std::sync::OnceLock<[metrics::Counter; 11]>,
    /// IP enrichment (country, autonomous system), when configured.
    geo: std::sync::OnceLock<Arc<keyward_events::geo::Geo>>,
    /// The data dir's keys when it is encrypted (see `secrets`).
    secrets: std::sync::OnceLock<secrets::Secrets>,
    /// Prefixes of keys imported from other systems (see `import`).
    imported: import::ImportedPrefixes,
    usage_durable_through: std::sync::atomic::AtomicI64,
    /// (key id, days, expiry) of reminders already stored, so each is written once.
    reminded: parking_lot::Mutex<std::collections::HashSet<(String, i64, i64)>>,
    /// Set on a node of a cluster (see `cluster`).
    cluster: std::sync::OnceLock<cluster::ClusterState>,
    /// Set when Redis holds the limits (see `cluster`).
    limits: std::sync::OnceLock<cluster::SharedLimits>,
    /// `keyward_verify_duration_seconds` (see `observe`).
    verify_latency: keyward_core::histogram::Histogram,
}

impl Service {
    /// Checks the pepper against the data dir and loads every key and root key.
    /// A service over a fresh in-memory store, with no event pipeline: for
    /// tests of the layers above (the server's handler tests), so they need
    /// not depend on the store crate.
    pub fn in_memory(hasher: KeyHasher) -> Result<Self> {
        let store = keyward_store::sqlite::SqliteStore::open_in_memory()?;
        Service::open(Arc::new(store), hasher, ServiceConfig::default())
    }

    pub fn open(store: Arc<dyn Store>, hasher: KeyHasher, config: ServiceConfig) -> Result<Self> {
        check_pepper(store.as_ref(), &hasher)?;
        let keyspaces: std::collections::HashMap<String, Arc<KeyspaceCell>> = store
            .all_keyspaces()?
            .iter()
            .map(|ks| (ks.id.clone(), Arc::new(KeyspaceCell::new(KeyspacePolicy::from_record(ks)))))
            .collect();
        let index = KeyIndex::default();
        let imported = import::ImportedPrefixes::default();
        store.for_each_key(&mut |k| {
            imported.note(&k);
            let cell = keyspaces.get(&k.keyspace_id).cloned().unwrap_or_default();
            index.put(k, cell, QuotaFrom::Record);
        })?;
        // Keys still in a rotation overlap share their successor's limits again.
        // Usually there are none, so the full scan for successors is skipped.
        let now = keyward_core::time::now_ms();
        let all = index.all();
        let overlapping: Vec<&Arc<CachedKey>> = all
            .iter()
            .filter(|k| {
                k.rotated_to().is_some()
                    && k.lifecycle().revoked_at.is_none()
                    && k.lifecycle().overlap_until.is_some_and(|t| t > now)
            })
            .collect();
        if !overlapping.is_empty() {
            let by_id: std::collections::HashMap<&str, &Arc<CachedKey>> = all.iter().map(|k| (&*k.id, k)).collect();
            for k in overlapping {
                if let Some(next) = k.rotated_to().and_then(|id| by_id.get(id)) {
                    index.share_limiter(k, next);
                }
            }
        }
        let roots = store.all_root_keys()?.into_iter().map(|r| (r.hash, Arc::new(RootEntry::new(r)))).collect();
        tracing::info!(keys = index.len(), "Loaded the key index.");
        Ok(Service {
            store,
            hasher,
            index,
            negative: NegativeCache::new(config.negative_capacity, config.negative_ttl_ms),
            roots: RwLock::new(roots),
            keyspaces: RwLock::new(keyspaces),
            miss_lookups: tokio::sync::Semaphore::new(config.miss_lookup_concurrency.max(1)),
            events: None,
            sinks: std::sync::OnceLock::new(),
            monitor: std::sync::OnceLock::new(),
            geo: std::sync::OnceLock::new(),
            secrets: std::sync::OnceLock::new(),
            scopes_wanted: std::sync::atomic::AtomicBool::new(false),
            outcome_counters: std::sync::OnceLock::new(),
            imported,
            usage_durable_through: std::sync::atomic::AtomicI64::new(0),
            reminded: Default::default(),
            cluster: std::sync::OnceLock::new(),
            limits: std::sync::OnceLock::new(),
            verify_latency: observe::verify_histogram(),
        })
    }

    /// Sends one usage event per verification to `pipeline`.
    pub fn with_events(mut self, pipeline: Arc<keyward_events::EventPipeline>) -> Self {
        self.events = Some(pipeline);
        self
    }

    /// Attaches the running exporters (started after the service, from its log).
    /// Enriches usage events with the country and network of their source from now on.
    pub fn attach_geo(&self, geo: Arc<keyward_events::geo::Geo>) {
        let _ = self.geo.set(geo);
    }

    pub fn attach_sinks(&self, sinks: Arc<keyward_events::Sinks>) {
        let _ = self.sinks.set(sinks);
    }

    /// The health of every exporter (empty when none runs).
    pub fn sink_health(&self) -> Vec<SinkHealth> {
        self.sinks.get().map(|s| s.health()).unwrap_or_default()
    }

    pub fn events(&self) -> Option<&Arc<keyward_events::EventPipeline>> {
        self.events.as_ref()
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    pub fn negative_cache(&self) -> &NegativeCache {
        &self.negative
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.blocking(|s| s.workspace_count()).await.is_ok()
    }

    /// Identifies the root key presented to the management API.
    /// The workspaces that have root keys (a fresh `keyward init` makes one).
    pub fn workspace_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.roots.read().values().map(|r| r.workspace_id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Records a usage event built by the caller (the gateway's, with status,
    /// bytes and latency): pushed without waiting; on a full queue a task
    /// waits for room within the usual bound.
    pub fn record_event(self: &Arc<Self>, e: keyward_core::event::UsageEvent) {
        if let Some(p) = &self.events
            && let Err(e) = p.try_emit(e)
        {
            let p = p.clone();
            tokio::spawn(async move { p.emit(*e).await });
        }
    }

    pub fn authenticate(&self, presented: &str) -> Result<(String, String, Role), AuthError> {
        let key = keyward_core::RawKey::parse(presented).map_err(|_| AuthError::Malformed)?;
        if key.prefix() != keyward_core::key::ROOT_PREFIX {
            return Err(AuthError::Malformed);
        }
        let roots = self.roots.read();
        for (_, h) in self.hasher.hash_all(key.expose()) {
            if let Some(r) = roots.get(&h) {
                if r.revoked_at.is_some() {
                    return Err(AuthError::Revoked);
                }
                let now = keyward_core::time::now_ms();
                if r.expires_at.is_some_and(|e| e <= now) {
                    return Err(AuthError::Expired);
                }
                r.mark_used(now);
                return Ok((r.workspace_id.clone(), r.id.clone(), r.role));
            }
        }
        Err(AuthError::Unknown)
    }

    /// The workspace and role of root key `id` while it can still be used
    /// (not revoked, not expired): a dashboard session re-checks the key it
    /// was opened with on every request, so revoking the key ends it.
    pub fn root_key_live(&self, id: &str) -> Result<(String, Role), AuthError> {
        let roots = self.roots.read();
        let r = roots.values().find(|r| r.rec.id == id).ok_or(AuthError::Unknown)?;
        if r.rec.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let now = keyward_core::time::now_ms();
        if r.rec.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        r.mark_used(now);
        Ok((r.rec.workspace_id.clone(), r.rec.role))
    }

    /// Writes pending last-use marks (and quota states) to the store; returns
    /// how many keys' marks were written. A failed write keeps them queued.
    pub async fn flush_last_used(&self) -> Result<usize> {
        self.flush_quotas().await?;
        self.flush_root_uses().await?;
        let (keys, uses) = self.index.take_pending();
        let n = uses.len();
        if n > 0
            && let Err(e) = self.blocking(move |s| s.record_last_used(&uses)).await
        {
            self.index.requeue_uses(keys);
            return Err(e);
        }
        Ok(n)
    }

    /// Writes the quota states consumed since the last call, in one store
    /// transaction. Run every `quota.flush_interval_ms` (100 ms): a crash
    /// gives back at most the quota used in that interval. A failed write
    /// keeps them queued for the next round.
    pub async fn flush_quotas(&self) -> Result<usize> {
        let cut = keyward_core::time::now_ms();
        let (keys, marks) = self.index.take_pending_quotas();
        let n = marks.len();
        if n > 0
            && let Err(e) = self.blocking(move |s| s.record_quotas(&marks)).await
        {
            self.index.requeue_quotas(keys);
            return Err(e);
        }
        self.usage_durable_through.store(cut, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Whether caller text holds anything key-shaped: a keyward key (by
    /// checksum, anywhere, decoded), a prefix-less body, or a string that
    /// starts like an imported key (see `core::redact`).
    pub fn holds_secret(&self, text: &str) -> bool {
        keyward_core::redact::holds_secret(text, &self.imported.list())
    }

    /// When the last successful quota flush began (ms): every quota use
    /// before then is durable.
    pub fn usage_durable_through(&self) -> i64 {
        self.usage_durable_through.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The policy cell of a keyspace (an empty one if it is unknown).
    fn keyspace_cell(&self, id: &str) -> Arc<KeyspaceCell> {
        if let Some(c) = self.keyspaces.read().get(id) {
            return c.clone();
        }
        self.keyspaces.write().entry(id.to_owned()).or_default().clone()
    }

    /// Runs a store call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|_| ServiceError::Task)?
            .map_err(ServiceError::from)
    }

    fn put_root(&self, r: RootKeyRecord) {
        let entry = RootEntry::new(r);
        let mut roots = self.roots.write();
        // A change to a key keeps its unwritten last use.
        if let Some(old) = roots.get(&entry.rec.hash) {
            entry.mark_used(old.last_used.load(std::sync::atomic::Ordering::Relaxed));
        }
        roots.insert(entry.rec.hash, Arc::new(entry));
    }

    /// The last use of a root key: the written one or a newer one in memory.
    pub(crate) fn root_last_used(&self, r: &RootKeyRecord) -> Option<i64> {
        let mem = self.roots.read().get(&r.hash).map_or(0, |e| e.last_used.load(std::sync::atomic::Ordering::Relaxed));
        r.last_used_at.max((mem > 0).then_some(mem))
    }

    /// Writes root keys' last uses newer than what was written.
    async fn flush_root_uses(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let pending: Vec<(String, i64)> = self
            .roots
            .read()
            .values()
            .filter_map(|e| {
                let at = e.last_used.load(Relaxed);
                (at > e.written.load(Relaxed)).then(|| (e.rec.id.clone(), at))
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let batch = pending.clone();
        self.blocking(move |s| s.record_root_key_uses(&batch)).await?;
        let roots = self.roots.read();
        for e in roots.values() {
            if let Some((_, at)) = pending.iter().find(|(id, _)| *id == e.rec.id) {
                e.written.fetch_max(*at, Relaxed);
            }
        }
        Ok(())
    }
}

/// A root key in memory, with its last use (kept to the second: a verify
/// with the same root key writes the shared atomic at most once a second).
pub(crate) struct RootEntry {
    rec: RootKeyRecord,
    last_used: std::sync::atomic::AtomicI64,
    /// The last use written to the store.
    written: std::sync::atomic::AtomicI64,
}

impl RootEntry {
    fn new(rec: RootKeyRecord) -> RootEntry {
        let at = rec.last_used_at.unwrap_or(0);
        RootEntry { rec, last_used: at.into(), written: at.into() }
    }

    fn mark_used(&self, now: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        if now - self.last_used.load(Relaxed) >= 1000 {
            self.last_used.fetch_max(now, Relaxed);
        }
    }
}

impl std::ops::Deref for RootEntry {
    type Target = RootKeyRecord;
    fn deref(&self) -> &RootKeyRecord {
        &self.rec
    }
}

/// Records a check value of each pepper on first use and refuses a different
/// pepper later, which would silently turn every key into `NOT_FOUND`.
fn check_pepper(store: &dyn Store, hasher: &KeyHasher) -> Result<()> {
    // An older pepper that was used here but is no longer configured would
    // turn its keys into NOT_FOUND: refuse to start instead.
    for v in 1..hasher.current_version() {
        if !hasher.versions().any(|k| k == v) && store.get_setting(&format!("pepper_check_v{v}"))?.is_some() {
            return Err(ServiceError::PepperMissing(v));
        }
    }
    for (v, h) in hasher.hash_all("keyward pepper check") {
        let name = format!("pepper_check_v{v}");
        let check = hex_of(&h);
        match store.get_setting(&name)? {
            Some(stored) if stored != check => return Err(ServiceError::PepperMismatch(v)),
            Some(_) => {}
            None => store.put_setting(&name, &check)?,
        }
    }
    Ok(())
}

fn hex_of(h: &KeyHash) -> String {
    hex::encode(h.0)
}

/// The hash-kind label for new hashes.
fn current_hash_kind(h: &KeyHasher) -> String {
    hash::hash_kind(h.current_version())
}

#[cfg(test)]
mod tests;
