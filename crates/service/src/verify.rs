//! The verify use case. [`Service::verify_cached`] decides from memory and is
//! what the benchmarks and an in-process caller use; [`Service::verify`] adds
//! the bounded store lookup for hashes the index does not know.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::key::check_format;
use keyward_core::policy::{Admission, RateLimit, ScopeRequest, ip_allowed, missing_scopes};
use keyward_core::time::{UnixMs, now_ms};
use keyward_core::verify::check_lifecycle;
use keyward_core::{KeyHash, Outcome};

use crate::decision::Decision;
use crate::index::{CachedKey, KeyspacePolicy};
use crate::{Result, Service, ServiceError};

/// What a caller asks to verify, already parsed.
#[derive(Clone, Copy)]
pub struct VerifyInput<'a> {
    /// The key as presented.
    pub key: &'a str,
    pub ip: Option<IpAddr>,
    /// Method and path of the request being authorized, if given.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Scopes the request needs, all of them.
    pub scopes: &'a [String],
    /// Units to count against limits and quota.
    pub cost: u64,
    /// Only a key of this keyspace is accepted (a gateway route's pin); any
    /// other is, to this request, no key at all.
    pub keyspace_id: Option<&'a str>,
}

impl std::fmt::Debug for VerifyInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyInput")
            .field("key", &crate::api::Redacted)
            .field("ip", &self.ip)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("scopes", &self.scopes)
            .field("cost", &self.cost)
            .field("keyspace_id", &self.keyspace_id)
            .finish()
    }
}

impl<'a> VerifyInput<'a> {
    /// A plain verify of `key`: no IP, no scopes, cost 1.
    pub fn key(key: &'a str) -> Self {
        VerifyInput { key, ip: None, method: None, path: None, scopes: &[], cost: 1, keyspace_id: None }
    }

    /// The checks after the lookup, for a key found by hash (the revocation
    /// health check): no request context, cost 0, so nothing is consumed.
    pub(crate) fn probe() -> Self {
        VerifyInput { cost: 0, ..VerifyInput::key("") }
    }
}

/// A presented key, looked up in memory: the one lookup verify, leak reports
/// and secret scanning share.
pub(crate) enum Presented {
    /// In the index: a keyward key under the current or an older pepper, or
    /// an imported key.
    Known(Arc<CachedKey>),
    /// Well-formed but not in the index. `hash` (under the current pepper) is
    /// given for a keyward key, which the store may still know (made on
    /// another node); an imported key's shape needs no store lookup.
    Unknown { hash: Option<KeyHash> },
    /// Neither a keyward key (format, checksum) nor an imported one's shape.
    Malformed,
}

/// Where a verification came from, for its usage event.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCtx<'a> {
    /// The id of the request being authorized (the verify call's `X-Request-Id`).
    pub request_id: &'a str,
    /// The end client's user agent, as the caller saw it.
    pub user_agent: Option<&'a str>,
}

/// The result of looking in memory only.
#[derive(Debug)]
pub enum Cached {
    Decided(Decision),
    /// Not in the index nor in the negative cache: the store must be asked.
    Miss(KeyHash),
}

impl Service {
    /// Decides from memory alone: format and checksum, index by hash,
    /// negative cache. No store access, no allocation on a hit.
    pub fn verify_cached(&self, workspace_id: &str, input: &VerifyInput<'_>, now: UnixMs) -> Cached {
        match self.presented(input.key) {
            Presented::Known(k) => Cached::Decided(self.decide(workspace_id, k, input, now)),
            Presented::Malformed => Cached::Decided(Decision::bare(Outcome::Malformed)),
            Presented::Unknown { hash: Some(hash) } if !self.negative.contains(&hash, now) => Cached::Miss(hash),
            Presented::Unknown { .. } => Cached::Decided(Decision::bare(Outcome::NotFound)),
        }
    }

    /// Finds a presented key in memory: format and checksum, the index by
    /// hash (current pepper first, then older ones), imported keys.
    pub(crate) fn presented(&self, key: &str) -> Presented {
        if check_format(key).is_err() {
            // Keys imported from another system have their own format.
            return match self.imported_lookup(key) {
                Some(k) => Presented::Known(k),
                None if self.imported.matches(key) => Presented::Unknown { hash: None },
                None => Presented::Malformed,
            };
        }
        let hash = self.hasher.hash(key);
        let found = self.index.get(&hash).or_else(|| self.hasher.hash_older(key).find_map(|h| self.index.get(&h)));
        match found.or_else(|| self.imported_lookup(key)) {
            Some(k) => Presented::Known(k),
            None => Presented::Unknown { hash: Some(hash) },
        }
    }

    /// Verifies a key for a caller in `workspace_id`, and records one usage
    /// event for it (never waiting on disk).
    pub async fn verify(&self, workspace_id: &str, input: &VerifyInput<'_>, ctx: &RequestCtx<'_>) -> Result<Decision> {
        let started = std::time::Instant::now();
        let d = self.decide_any(workspace_id, input).await?;
        self.time_verify(started);
        self.count_outcome(d.outcome);
        if let Some(p) = &self.events {
            p.emit(self.usage_event(workspace_id, input, ctx, &d)).await;
        }
        Ok(d)
    }

    /// Decides without recording anything: the gateway records the event
    /// itself once the upstream has answered (with status, bytes, latency).
    pub async fn decide_only(&self, workspace_id: &str, input: &VerifyInput<'_>) -> Result<Decision> {
        let started = std::time::Instant::now();
        let d = self.decide_any(workspace_id, input).await?;
        self.time_verify(started);
        self.count_outcome(d.outcome);
        Ok(d)
    }

    /// `keyward_verifications_total{code}`, by handles made once.
    fn count_outcome(&self, o: Outcome) {
        let counters = self.outcome_counters.get_or_init(|| {
            Outcome::ALL.map(|o| metrics::counter!("keyward_verifications_total", "code" => o.as_str()))
        });
        if let Some(i) = Outcome::ALL.iter().position(|x| *x == o) {
            counters[i].increment(1);
        }
    }

    /// `POST /v1/keys/verify`: checks the request's fields, verifies, and
    /// answers the decision (always a decision, never an error, for a bad key).
    pub async fn verify_request(
        &self,
        actor: &crate::Actor,
        req: &crate::api::VerifyRequest,
        request_id: &str,
    ) -> Result<(crate::api::VerifyResponse, Option<keyward_core::policy::RateLimitFields>)> {
        actor.require(keyward_core::Permission::Verify, "verify keys")?;
        let scopes = req.scopes.as_deref().unwrap_or_default();
        let fields = crate::validate::verify_fields(
            req.ip.as_deref(),
            req.method.as_deref(),
            req.path.as_deref(),
            scopes,
            req.cost,
        )?;
        let input = VerifyInput {
            key: &req.key,
            ip: fields.ip,
            method: req.method.as_deref(),
            path: req.path.as_deref(),
            scopes,
            cost: fields.cost,
            keyspace_id: None,
        };
        let ctx = RequestCtx { request_id, user_agent: req.user_agent.as_deref() };
        let decision = self.verify(&actor.workspace_id, &input, &ctx).await?;
        let fields = decision.ratelimit_fields(now_ms());
        Ok((crate::views::verify_response(decision), fields))
    }

    async fn decide_any(&self, workspace_id: &str, input: &VerifyInput<'_>) -> Result<Decision> {
        self.check_fresh()?;
        let Some(shared) = self.limits.get() else {
            let now = now_ms();
            return match self.verify_cached(workspace_id, input, now) {
                Cached::Decided(d) => Ok(d),
                Cached::Miss(hash) => match self.look_up(input, hash, now).await? {
                    Some(k) => Ok(self.decide(workspace_id, k, input, now_ms())),
                    None => Ok(Decision::bare(Outcome::NotFound)),
                },
            };
        };
        // Limits on Redis: the checks before them in memory, then one script call.
        let now = now_ms();
        let k = match self.presented(input.key) {
            Presented::Known(k) => k,
            Presented::Malformed => return Ok(Decision::bare(Outcome::Malformed)),
            Presented::Unknown { hash: Some(hash) } if !self.negative.contains(&hash, now) => {
                match self.look_up(input, hash, now).await? {
                    Some(k) => k,
                    None => return Ok(Decision::bare(Outcome::NotFound)),
                }
            }
            Presented::Unknown { .. } => return Ok(Decision::bare(Outcome::NotFound)),
        };
        let (k, ks) = match self.precheck(workspace_id, k, input, now) {
            Err(d) => return Ok(d),
            Ok(pair) => pair,
        };
        let limits = k.policy.ratelimits.as_deref().unwrap_or(&ks.ratelimits);
        let quota = k.limiter().lock().quota;
        let limiter_id = k.limiter_id(now).to_owned();
        let admission = match shared.redis.admit(&limiter_id, limits, quota.as_ref(), None, input.cost).await {
            Ok(a) => {
                shared.mark(true);
                // Mirror the shared quota here, so the key's record follows it.
                if let (Some(left), Some(q)) = (a.remaining, k.limiter().lock().quota.as_mut()) {
                    q.remaining = left;
                }
                a
            }
            Err(e) => {
                shared.mark(false);
                metrics::counter!("keyward_redis_errors_total").increment(1);
                tracing::debug!(error = %e, "Redis limit check failed.");
                match shared.on_unavailable {
                    crate::cluster::OnUnavailable::Closed => {
                        return Err(ServiceError::Unavailable(
                            "rate limits cannot be checked: Redis, which holds them for the cluster, is not answering; \
                             retry shortly (or set redis.on_unavailable = \"local\" to fall back to per-node limits)"
                                .into(),
                        ));
                    }
                    crate::cluster::OnUnavailable::Local => self.admit_locally(&k, limits, now, input.cost),
                }
            }
        };
        Ok(self.finish(k, admission, input, now))
    }

    /// A well-formed key not in memory: perhaps made by another node. Lookups
    /// are few at a time; past a short wait the answer is NOT_FOUND rather
    /// than a queue an attacker could grow.
    async fn look_up(&self, input: &VerifyInput<'_>, hash: KeyHash, now: UnixMs) -> Result<Option<Arc<CachedKey>>> {
        let Ok(Ok(_permit)) = tokio::time::timeout(Duration::from_millis(250), self.miss_lookups.acquire()).await
        else {
            return Ok(None);
        };
        let hashes: Vec<KeyHash> = self.hasher.hash_all(input.key).map(|(_, h)| h).collect();
        let found = self
            .blocking(move |s| {
                for h in &hashes {
                    if let Some(k) = s.find_key_by_hash(h)? {
                        return Ok(Some(k));
                    }
                }
                Ok(None)
            })
            .await;
        match found {
            Ok(Some(record)) => {
                let cell = self.keyspace_cell(&record.keyspace_id);
                Ok(Some(self.index.put(record, cell, crate::index::QuotaFrom::Record)))
            }
            Ok(None) => {
                self.negative.insert(hash, now);
                Ok(None)
            }
            Err(e) => {
                tracing::error!(error = %e, "Store lookup for an unknown key failed.");
                Err(ServiceError::Task)
            }
        }
    }

    /// The decision for a key already found in the index (the revocation
    /// health check enters the verify path here, by hash).
    pub(crate) fn decide_cached(
        &self,
        workspace_id: &str,
        k: Arc<CachedKey>,
        input: &VerifyInput<'_>,
        now: UnixMs,
    ) -> Decision {
        self.decide(workspace_id, k, input, now)
    }

    /// The checks after the lookup, in their documented order: lifecycle
    /// (REVOKED, ROTATED, DISABLED, EXPIRED), IP allowlist, scopes, then rate
    /// limits and quota together (consumed only when both admit).
    fn decide(&self, workspace_id: &str, k: Arc<CachedKey>, input: &VerifyInput<'_>, now: UnixMs) -> Decision {
        match self.precheck(workspace_id, k, input, now) {
            Err(d) => d,
            Ok((k, ks)) => {
                let limits = k.policy.ratelimits.as_deref().unwrap_or(&ks.ratelimits);
                let admission = self.admit_locally(&k, limits, now, input.cost);
                self.finish(k, admission, input, now)
            }
        }
    }

    /// The checks before the limits; the key and its windows when they all pass.
    fn precheck(
        &self,
        workspace_id: &str,
        k: Arc<CachedKey>,
        input: &VerifyInput<'_>,
        now: UnixMs,
    ) -> Result<(Arc<CachedKey>, Arc<KeyspacePolicy>), Decision> {
        // Another workspace's key is, to this caller, no key at all; so is
        // another keyspace's, where the request pins one.
        if k.workspace_id() != workspace_id || input.keyspace_id.is_some_and(|ks| ks != k.keyspace_id()) {
            return Err(Decision::bare(Outcome::NotFound));
        }
        let outcome = check_lifecycle(&k.lifecycle(), now);
        if !outcome.is_valid() {
            return Err(Decision { outcome, key: Some(k), message: None, window: None, remaining: None });
        }
        let ks = k.keyspace.get();
        let nets = k.policy.ip_allowlist.as_deref().unwrap_or(&ks.ip_allowlist);
        if !nets.is_empty() {
            match input.ip {
                None => {
                    return Err(Decision::refuse(
                        Outcome::IpNotAllowed,
                        k,
                        "the key has an IP allowlist and the verify gave no ip".into(),
                    ));
                }
                Some(ip) if !ip_allowed(nets, ip) => {
                    return Err(Decision::refuse(
                        Outcome::IpNotAllowed,
                        k,
                        format!("{ip} is not in the key's IP allowlist"),
                    ));
                }
                Some(_) => {}
            }
        }
        let req = ScopeRequest { method: input.method, path: input.path, scopes: input.scopes };
        if input.method.is_some() || input.path.is_some() || !input.scopes.is_empty() {
            let missing = missing_scopes(&k.policy.scopes, &ks.path_rules, &req);
            if !missing.is_empty() {
                return Err(Decision::refuse(Outcome::Forbidden, k, format!("missing scope: {}", missing.join(", "))));
            }
        }
        Ok((k, ks))
    }

    /// The limits in this node's memory.
    fn admit_locally(&self, k: &CachedKey, limits: &[RateLimit], now: UnixMs, cost: u64) -> Admission {
        let mut l = k.limiter().lock();
        l.reconfigure(limits);
        l.admit(now, cost)
    }

    /// The decision once the limits have answered.
    fn finish(&self, k: Arc<CachedKey>, admission: Admission, input: &VerifyInput<'_>, now: UnixMs) -> Decision {
        let message = match admission.outcome {
            Outcome::RateLimited => {
                admission.window.as_ref().map(|w| format!("rate limit {} of {} reached", w.name, w.limit))
            }
            Outcome::UsageExceeded => Some("usage quota exhausted".to_owned()),
            _ => None,
        };
        if admission.outcome.is_valid() {
            self.index.touch(&k, now, input.ip);
            if input.cost > 0 && admission.remaining.is_some() {
                self.index.mark_quota(&k);
            }
        }
        Decision {
            outcome: admission.outcome,
            key: Some(k),
            message,
            window: admission.window,
            remaining: admission.remaining,
        }
    }
}
