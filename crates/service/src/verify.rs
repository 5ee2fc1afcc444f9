//! The verify use case. [`Service::verify_cached`] decides from memory and is
//! what the benchmarks and an in-process caller use; [`Service::verify`] adds
//! the bounded store lookup for hashes the index does not know.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::key::check_format;
use keyward_core::time::{UnixMs, now_ms};
use keyward_core::verify::check_lifecycle;
use keyward_core::{KeyHash, Outcome};

use crate::index::CachedKey;
use crate::{Result, Service, ServiceError};

/// What a caller asks to verify, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct VerifyInput<'a> {
    /// The key as presented.
    pub key: &'a str,
    pub ip: Option<IpAddr>,
}

/// The decision, with the key's cached record when one was found.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub key: Option<Arc<CachedKey>>,
}

impl Decision {
    fn bare(outcome: Outcome) -> Self {
        Decision { outcome, key: None }
    }
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
        if check_format(input.key).is_err() {
            return Cached::Decided(Decision::bare(Outcome::Malformed));
        }
        let mut first = None;
        for (_, hash) in self.hasher.hash_all(input.key) {
            if let Some(k) = self.index.get(&hash) {
                return Cached::Decided(self.decide(workspace_id, k, input, now));
            }
            first.get_or_insert(hash);
        }
        let hash = first.expect("the hasher has a current pepper");
        if self.negative.contains(&hash, now) {
            return Cached::Decided(Decision::bare(Outcome::NotFound));
        }
        Cached::Miss(hash)
    }

    /// Verifies a key for a caller in `workspace_id`.
    pub async fn verify(&self, workspace_id: &str, input: &VerifyInput<'_>) -> Result<Decision> {
        let now = now_ms();
        let hash = match self.verify_cached(workspace_id, input, now) {
            Cached::Decided(d) => return Ok(d),
            Cached::Miss(h) => h,
        };
        // A well-formed key we do not know: perhaps made by another node.
        // Lookups are few at a time; past a short wait the answer is
        // NOT_FOUND rather than a queue an attacker could grow.
        let Ok(Ok(_permit)) = tokio::time::timeout(Duration::from_millis(250), self.miss_lookups.acquire()).await
        else {
            return Ok(Decision::bare(Outcome::NotFound));
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
                let k = self.index.put(record);
                Ok(self.decide(workspace_id, k, input, now_ms()))
            }
            Ok(None) => {
                self.negative.insert(hash, now);
                Ok(Decision::bare(Outcome::NotFound))
            }
            Err(e) => {
                tracing::error!(error = %e, "Store lookup for an unknown key failed.");
                Err(ServiceError::Task)
            }
        }
    }

    fn decide(&self, workspace_id: &str, k: Arc<CachedKey>, input: &VerifyInput<'_>, now: UnixMs) -> Decision {
        // Another workspace's key is, to this caller, no key at all.
        if k.record.workspace_id != workspace_id {
            return Decision::bare(Outcome::NotFound);
        }
        let outcome = check_lifecycle(&k.lifecycle, now);
        if outcome.is_valid() {
            self.index.touch(&k, now, input.ip);
        }
        Decision { outcome, key: Some(k) }
    }
}
