//! The in-memory side of verification: every key by hash ([`KeyIndex`]), a
//! bounded cache of hashes known to be absent ([`NegativeCache`]), and the
//! last-use marks that are batched to the store ([`Usage`]).
//!
//! Invariant: a verify that finds its hash here touches neither the store nor
//! any lock other than the index's read lock and the key's own usage cell.

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;
use keyward_core::KeyHash;
use keyward_core::policy::{Limiter, PathRule, Quota, RateLimit, parse_cidr};
use keyward_core::time::UnixMs;
use keyward_core::verify::Lifecycle;
use keyward_store::{KeyRecord, Keyspace, LastUse, QuotaMark};
use serde_json::Value;

/// Key hashes are HMAC outputs under a secret: already uniform and not
/// chosen by an attacker, so their first eight bytes are a fine table hash.
/// (A test below guards against the collapse where every key hashes alike.)
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        // `KeyHash` hashes as exactly one u64 taken from its bytes.
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `KeyHash`; a plain fold keeps other inputs correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

type HashIndexMap<V> = HashMap<KeyHash, V, BuildHasherDefault<PrefixHasher>>;

/// A key in the index's set, found by its hash (which it holds: a map
/// would store each hash twice).
struct Entry(Arc<CachedKey>);

impl std::hash::Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash.hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash == other.0.hash
    }
}

impl Eq for Entry {}

impl std::borrow::Borrow<KeyHash> for Entry {
    fn borrow(&self) -> &KeyHash {
        &self.0.hash
    }
}

type KeySet = std::collections::HashSet<Entry, BuildHasherDefault<PrefixHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn distinct_key_hashes_hash_apart() {
        let b = BuildHasherDefault::<PrefixHasher>::default();
        let mut a = [0u8; 32];
        a[0] = 1;
        let mut c = [0u8; 32];
        c[0] = 2;
        assert_ne!(b.hash_one(KeyHash(a)), b.hash_one(KeyHash(c)));
    }
}

/// When and from where a key was last used. A new version of the key's
/// cached record starts with the old one's marks; a mark made on the old
/// version meanwhile is still flushed from it (the flush list holds it).
#[derive(Debug, Default)]
pub struct Usage {
    at: AtomicI64,
    ip: Mutex<Option<IpAddr>>,
    dirty: AtomicBool,
    /// Set while the key waits in the quota flush list.
    quota_queued: AtomicBool,
}

impl Usage {
    /// A new cell holding `from`'s marks (for a new version of a record).
    fn carried(from: &Usage) -> Usage {
        let ip = *from.ip.lock();
        Usage { at: AtomicI64::new(from.at.load(Ordering::Relaxed)), ip: Mutex::new(ip), ..Usage::default() }
    }
}

/// A keyspace's policy as the verify path uses it.
#[derive(Debug, Default)]
pub struct KeyspacePolicy {
    pub ip_allowlist: Vec<IpNet>,
    pub ratelimits: Vec<RateLimit>,
    pub path_rules: Vec<PathRule>,
    pub pseudonymize_ips: bool,
    pub auto_disable_on_critical: bool,
}

impl KeyspacePolicy {
    pub fn from_record(ks: &Keyspace) -> Self {
        KeyspacePolicy {
            ip_allowlist: ks.default_ip_allowlist.iter().filter_map(|c| parse_cidr(c)).collect(),
            ratelimits: ks.default_ratelimits.clone(),
            path_rules: ks.path_rules.clone(),
            pseudonymize_ips: ks.pseudonymize_ips,
            auto_disable_on_critical: ks.auto_disable_on_critical,
        }
    }
}

/// The current policy of one keyspace, shared by all its cached keys, so a
/// keyspace change reaches every key's next verify with one write.
#[derive(Debug, Default)]
pub struct KeyspaceCell(RwLock<Arc<KeyspacePolicy>>);

impl KeyspaceCell {
    pub fn new(p: KeyspacePolicy) -> Self {
        KeyspaceCell(RwLock::new(Arc::new(p)))
    }
    pub fn get(&self) -> Arc<KeyspacePolicy> {
        self.0.read().clone()
    }
    pub fn set(&self, p: KeyspacePolicy) {
        *self.0.write() = Arc::new(p);
    }
}

/// What to do with the in-memory quota when a key's record is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFrom {
    /// Take the record's quota (load, create, or a PATCH that sets it).
    Record,
    /// Keep the live in-memory count (any other change).
    Live,
}

/// A key as the verify path sees it: compact (issue 8, defect 9: a million
/// keys took 1.36 GB as full records). Ids shared by many keys (workspace,
/// keyspace, hash kind) and the key's own policy are interned; name and meta
/// sit behind one optional box; the limiter is made on first use. What only
/// the management API needs stays in the store.
#[derive(Debug)]
pub struct CachedKey {
    pub hash: KeyHash,
    pub id: Box<str>,
    /// Workspace and keyspace ids, interned as a pair.
    scope: Arc<KeyScope>,
    pub owner_id: Option<Box<str>>,
    extra: Option<Box<Extra>>,
    /// The hint up to its last four characters (interned: `kw_live_…`), and those.
    hint_head: Arc<str>,
    hint_tail: [u8; 4],
    hint_tail_len: u8,
    enabled: bool,
    /// Instants, [`NONE`] when unset (an `Option<i64>` takes twice the room).
    expires_at: i64,
    revoked_at: i64,
    overlap_until: i64,
    pub hash_kind: Arc<str>,
    /// Scopes, own allowlist (parsed) and own rate limits, interned.
    pub policy: Arc<KeyPolicy>,
    /// The stored quota, for a limiter made on first use.
    quota: Option<Box<Quota>>,
    pub usage: Usage,
    /// Windows and quota, made on first use; shared by every version of the
    /// cached record (and by a rotation's two keys during the overlap).
    limiter: OnceLock<Arc<Mutex<Limiter>>>,
    pub keyspace: Arc<KeyspaceCell>,
}

/// Where a key lives: one allocation shared by every key of a keyspace.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyScope {
    workspace_id: Box<str>,
    keyspace_id: Box<str>,
}

/// The rarely set parts of a key.
#[derive(Debug, Clone)]
struct Extra {
    name: Option<String>,
    meta: Value,
    rotated_to: Option<String>,
}

/// An unset instant in [`CachedKey`].
const NONE: i64 = i64::MIN;

fn packed(t: Option<i64>) -> i64 {
    t.unwrap_or(NONE)
}

fn unpacked(t: i64) -> Option<i64> {
    (t != NONE).then_some(t)
}

/// A key's own policy: many keys share one.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPolicy {
    pub scopes: Vec<String>,
    /// Own allowlist, parsed; `None` when the keyspace's applies.
    pub ip_allowlist: Option<Vec<IpNet>>,
    /// Own windows; `None` when the keyspace's apply.
    pub ratelimits: Option<Vec<RateLimit>>,
}

/// Interned values of the index: few distinct ones, many keys.
#[derive(Default)]
struct Interner {
    strings: HashMap<Box<str>, Arc<str>>,
    scopes: std::collections::HashSet<Arc<KeyScope>>,
    policies: std::collections::HashSet<Arc<KeyPolicy>>,
}

impl Interner {
    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(s.into(), a.clone());
        a
    }

    fn scope(&mut self, workspace_id: &str, keyspace_id: &str) -> Arc<KeyScope> {
        let s = KeyScope { workspace_id: workspace_id.into(), keyspace_id: keyspace_id.into() };
        if let Some(a) = self.scopes.get(&s) {
            return a.clone();
        }
        let a = Arc::new(s);
        self.scopes.insert(a.clone());
        a
    }

    fn policy(&mut self, p: KeyPolicy) -> Arc<KeyPolicy> {
        if let Some(a) = self.policies.get(&p) {
            return a.clone();
        }
        let a = Arc::new(p);
        self.policies.insert(a.clone());
        a
    }
}

impl CachedKey {
    fn with_limiter(&self, limiter: Arc<Mutex<Limiter>>) -> CachedKey {
        CachedKey {
            hash: self.hash,
            id: self.id.clone(),
            scope: self.scope.clone(),
            owner_id: self.owner_id.clone(),
            extra: self.extra.clone(),
            hint_head: self.hint_head.clone(),
            hint_tail: self.hint_tail,
            hint_tail_len: self.hint_tail_len,
            enabled: self.enabled,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            overlap_until: self.overlap_until,
            hash_kind: self.hash_kind.clone(),
            policy: self.policy.clone(),
            quota: self.quota.clone(),
            usage: Usage::carried(&self.usage),
            limiter: OnceLock::from(limiter),
            keyspace: self.keyspace.clone(),
        }
    }

    pub fn workspace_id(&self) -> &str {
        &self.scope.workspace_id
    }

    /// The name of this key's limits in a shared limiter (Redis): its own id,
    /// or, for an old key in its rotation overlap, its successor's, so the two
    /// count against one set of limits on every node alike (the successor's
    /// windows start fresh at the rotation; its quota is the one they share).
    pub fn limiter_id(&self, now: UnixMs) -> &str {
        match self.rotated_to() {
            Some(next)
                if unpacked(self.revoked_at).is_none() && unpacked(self.overlap_until).is_some_and(|t| t > now) =>
            {
                next
            }
            _ => &self.id,
        }
    }

    pub fn keyspace_id(&self) -> &str {
        &self.scope.keyspace_id
    }

    /// What the lifecycle checks need.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            enabled: self.enabled,
            expires_at: unpacked(self.expires_at),
            revoked_at: unpacked(self.revoked_at),
            overlap_until: unpacked(self.overlap_until),
        }
    }

    /// The display hint, e.g. `kw_live_…x9Qz`.
    pub fn hint(&self) -> String {
        let tail = std::str::from_utf8(&self.hint_tail[..self.hint_tail_len as usize]).unwrap_or_default();
        format!("{}{tail}", self.hint_head)
    }

    /// The key this one was rotated to, if any.
    pub fn rotated_to(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.rotated_to.as_deref())
    }

    pub fn name(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.name.as_deref())
    }

    /// The key's meta (an empty object when it has none).
    pub fn meta(&self) -> Value {
        self.extra.as_ref().map_or_else(|| Value::Object(Default::default()), |e| e.meta.clone())
    }

    /// The key's limiter, made on first use from the stored quota.
    pub fn limiter(&self) -> &Arc<Mutex<Limiter>> {
        self.limiter.get_or_init(|| Arc::new(Mutex::new(Limiter::new(&[], self.quota.as_deref().copied()))))
    }

    /// The live quota, as it should be written back to the store (none for
    /// a key whose limiter was never used: the store holds it already).
    pub fn quota_mark(&self) -> Option<QuotaMark> {
        let l = self.limiter.get()?.lock();
        l.quota.map(|q| QuotaMark { key_id: self.id.to_string(), remaining: q.remaining, refilled_at: q.refilled_at })
    }

    /// The last use, newest of the stored one and the pending mark.
    pub fn last_used(&self, stored_at: Option<UnixMs>, stored_ip: Option<&str>) -> (Option<UnixMs>, Option<String>) {
        let at = self.usage.at.load(Ordering::Relaxed);
        match stored_at {
            Some(stored) if stored >= at => (Some(stored), stored_ip.map(str::to_owned)),
            _ if at > 0 => {
                // A use without an address keeps the last address known.
                let ip = *self.usage.ip.lock();
                (Some(at), ip.map(|ip| ip.to_string()).or_else(|| stored_ip.map(str::to_owned)))
            }
            _ => (None, None),
        }
    }
}

/// Every known key, by hash.
#[derive(Default)]
pub struct KeyIndex {
    map: RwLock<KeySet>,
    interner: Mutex<Interner>,
    /// Keys used since the last last-use flush.
    dirty: Mutex<Vec<Arc<CachedKey>>>,
    /// Keys whose quota was consumed since the last quota flush.
    quota_dirty: Mutex<Vec<Arc<CachedKey>>>,
}

impl KeyIndex {
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<CachedKey>> {
        self.map.read().get(hash).map(|e| e.0.clone())
    }

    /// The compact form of a record, with the given usage cell and limiter.
    fn compact(
        &self,
        record: KeyRecord,
        keyspace: Arc<KeyspaceCell>,
        usage: Usage,
        limiter: Option<Arc<Mutex<Limiter>>>,
    ) -> CachedKey {
        let quota = record.remaining.map(|remaining| {
            Box::new(Quota {
                remaining,
                refill: record.refill,
                refilled_at: record.refilled_at.unwrap_or(record.created_at),
            })
        });
        let has_meta = record.meta.as_object().is_none_or(|m| !m.is_empty());
        let extra = (record.name.is_some() || has_meta || record.rotated_to.is_some())
            .then(|| Box::new(Extra { name: record.name, meta: record.meta, rotated_to: record.rotated_to }));
        // The last four characters inline (when they fit in four bytes), the rest interned.
        let hint = record.hint;
        let split =
            hint.char_indices().rev().nth(3).map(|(i, _)| i).filter(|&i| hint.len() - i <= 4).unwrap_or(hint.len());
        let (head, tail) = hint.split_at(split);
        let mut hint_tail = [0u8; 4];
        hint_tail[..tail.len()].copy_from_slice(tail.as_bytes());
        let policy = KeyPolicy {
            ip_allowlist: record.ip_allowlist.as_ref().map(|l| l.iter().filter_map(|c| parse_cidr(c)).collect()),
            scopes: record.scopes,
            ratelimits: record.ratelimits,
        };
        let mut i = self.interner.lock();
        CachedKey {
            hash: record.hash,
            id: record.id.into_boxed_str(),
            scope: i.scope(&record.workspace_id, &record.keyspace_id),
            owner_id: record.owner_id.map(String::into_boxed_str),
            extra,
            hint_head: i.string(head),
            hint_tail,
            hint_tail_len: tail.len() as u8,
            enabled: record.enabled,
            expires_at: packed(record.expires_at),
            revoked_at: packed(record.revoked_at),
            overlap_until: packed(record.overlap_until),
            hash_kind: i.string(&record.hash_kind),
            policy: i.policy(policy),
            quota,
            usage,
            limiter: limiter.map_or_else(OnceLock::new, OnceLock::from),
            keyspace,
        }
    }

    /// Inserts or replaces a key, keeping its usage cell and limiter state
    /// if it had them; the quota comes from the record or stays live.
    pub fn put(&self, record: KeyRecord, keyspace: Arc<KeyspaceCell>, quota: QuotaFrom) -> Arc<CachedKey> {
        let old = self.get(&record.hash);
        let usage = old.as_ref().map(|c| Usage::carried(&c.usage)).unwrap_or_default();
        let record_quota = record.remaining.map(|remaining| Quota {
            remaining,
            refill: record.refill,
            refilled_at: record.refilled_at.unwrap_or(record.created_at),
        });
        // The old version's limiter carries over, with the record's quota or its
        // own live one. It is made here if it was not yet: a verify racing this
        // put on the old version then meets the same limiter, and loses no use.
        let limiter = old.as_ref().map(|c| c.limiter().clone()).inspect(|l| {
            let mut g = l.lock();
            if quota == QuotaFrom::Record || record_quota.is_none() {
                g.quota = record_quota;
            } else if let Some(q) = &mut g.quota {
                q.refill = record.refill;
            } else {
                g.quota = record_quota;
            }
        });
        let cached = Arc::new(self.compact(record, keyspace, usage, limiter));
        self.map.write().replace(Entry(cached.clone()));
        cached
    }

    /// Inserts a new key that shares its limiter (windows and quota) with
    /// `with`: a rotation's successor counts against the same limits as the
    /// old key during the overlap.
    pub fn put_sharing(&self, record: KeyRecord, keyspace: Arc<KeyspaceCell>, with: &CachedKey) -> Arc<CachedKey> {
        let cached = Arc::new(self.compact(record, keyspace, Usage::default(), Some(with.limiter().clone())));
        self.map.write().replace(Entry(cached.clone()));
        cached
    }

    /// Makes a rotated key in its overlap share its successor's limiter again
    /// after a restart. The shared quota is the smaller of the two stored
    /// values: a restart never hands back quota.
    pub fn share_limiter(&self, old: &Arc<CachedKey>, successor: &Arc<CachedKey>) {
        let old_quota = old.limiter().lock().quota;
        {
            let mut l = successor.limiter().lock();
            if let (Some(q), Some(o)) = (l.quota.as_mut(), old_quota) {
                q.remaining = q.remaining.min(o.remaining);
            }
        }
        let shared = old.with_limiter(successor.limiter().clone());
        self.map.write().replace(Entry(Arc::new(shared)));
    }

    /// Every cached key (for periodic jobs that scan keys in memory).
    pub fn all(&self) -> Vec<Arc<CachedKey>> {
        self.map.read().iter().map(|e| e.0.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks a use of the key. Cheap: two atomics and an uncontended lock;
    /// the key joins the flush list only on its first use since the last flush.
    pub fn touch(&self, key: &Arc<CachedKey>, now: UnixMs, ip: Option<IpAddr>) {
        let u = &key.usage;
        u.at.fetch_max(now, Ordering::Relaxed);
        if ip.is_some() {
            *u.ip.lock() = ip;
        }
        if !u.dirty.swap(true, Ordering::AcqRel) {
            self.dirty.lock().push(key.clone());
        }
    }

    /// Queues a key whose quota was just consumed for the next quota flush
    /// (frequent: the quota's crash bound is that flush's interval).
    pub fn mark_quota(&self, key: &Arc<CachedKey>) {
        if !key.usage.quota_queued.swap(true, Ordering::AcqRel) {
            self.quota_dirty.lock().push(key.clone());
        }
    }

    /// Takes the quota states changed since the last call. Keys are handed
    /// back with their marks so a failed write can [`KeyIndex::requeue_quotas`].
    pub fn take_pending_quotas(&self) -> (Vec<Arc<CachedKey>>, Vec<QuotaMark>) {
        let pending = std::mem::take(&mut *self.quota_dirty.lock());
        let mut marks = Vec::with_capacity(pending.len());
        for k in &pending {
            // Clear first: a use racing with this read re-queues the key.
            k.usage.quota_queued.store(false, Ordering::Release);
            marks.extend(k.quota_mark());
        }
        (pending, marks)
    }

    /// Puts keys back in the quota flush list after a failed write.
    pub fn requeue_quotas(&self, keys: Vec<Arc<CachedKey>>) {
        for k in keys {
            self.mark_quota(&k);
        }
    }

    /// Takes the last-use marks changed since the last call, for one
    /// batched store write.
    pub fn take_pending(&self) -> (Vec<Arc<CachedKey>>, Vec<LastUse>) {
        let pending = std::mem::take(&mut *self.dirty.lock());
        let mut uses = Vec::with_capacity(pending.len());
        for k in &pending {
            // Clear first: a use racing with this read re-queues the key.
            k.usage.dirty.store(false, Ordering::Release);
            let ip = *k.usage.ip.lock();
            uses.push(LastUse {
                key_id: k.id.to_string(),
                at: k.usage.at.load(Ordering::Relaxed),
                ip: ip.map(|i| i.to_string()),
            });
        }
        (pending, uses)
    }

    /// Puts keys back in the last-use list after a failed write.
    pub fn requeue_uses(&self, keys: Vec<Arc<CachedKey>>) {
        for k in keys {
            if !k.usage.dirty.swap(true, Ordering::AcqRel) {
                self.dirty.lock().push(k);
            }
        }
    }
}

/// Hashes recently looked up in the store and not found there. Bounded in
/// entries (oldest evicted first) and in age, so neither a flood of unknown
/// keys nor a key created on another node is remembered for long.
pub struct NegativeCache {
    inner: Mutex<NegInner>,
    capacity: usize,
    ttl_ms: i64,
}

#[derive(Default)]
struct NegInner {
    until: HashIndexMap<UnixMs>,
    order: VecDeque<KeyHash>,
}

impl NegativeCache {
    pub fn new(capacity: usize, ttl_ms: i64) -> Self {
        NegativeCache { inner: Mutex::default(), capacity: capacity.max(1), ttl_ms }
    }

    pub fn contains(&self, hash: &KeyHash, now: UnixMs) -> bool {
        let inner = self.inner.lock();
        inner.until.get(hash).is_some_and(|&t| t > now)
    }

    pub fn insert(&self, hash: KeyHash, now: UnixMs) {
        let mut inner = self.inner.lock();
        if inner.until.insert(hash, now + self.ttl_ms).is_none() {
            inner.order.push_back(hash);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.until.remove(&old);
            }
        }
    }

    pub fn remove(&self, hash: &KeyHash) {
        let mut inner = self.inner.lock();
        if inner.until.remove(hash).is_some() {
            inner.order.retain(|h| h != hash);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
