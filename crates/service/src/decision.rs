//! The verify path's answer: an outcome, the key it concerns, and what the
//! API shows of its limits. Made by `verify`, shown by `views`.

use std::sync::Arc;

use keyward_core::Outcome;
use keyward_core::policy::WindowReport;
use keyward_core::time::UnixMs;

use crate::index::CachedKey;

/// The decision, with the key's cached record when one was found.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    pub key: Option<Arc<CachedKey>>,
    /// Why the key was refused, for people.
    pub message: Option<String>,
    /// The most constrained rate-limit window, when the key has any.
    pub window: Option<WindowReport>,
    /// Quota left, when the key has one.
    pub remaining: Option<i64>,
}

impl Decision {
    pub(crate) fn bare(outcome: Outcome) -> Self {
        Decision { outcome, key: None, message: None, window: None, remaining: None }
    }

    pub(crate) fn refuse(outcome: Outcome, key: Arc<CachedKey>, message: String) -> Self {
        Decision { outcome, key: Some(key), message: Some(message), window: None, remaining: None }
    }

    /// The IETF `RateLimit-Policy` / `RateLimit` (and, when refused by a
    /// window, `Retry-After`) of this decision, when the key has a window.
    pub fn ratelimit_fields(&self, now: UnixMs) -> Option<keyward_core::policy::RateLimitFields> {
        let w = self.window.as_ref()?;
        Some(w.fields(now, self.outcome == Outcome::RateLimited))
    }

    /// For an admitted old key inside its rotation overlap: when it stops working.
    pub fn deprecated_until(&self) -> Option<UnixMs> {
        self.key.as_ref().and_then(|k| k.lifecycle().overlap_until).filter(|_| self.outcome.is_valid())
    }
}
