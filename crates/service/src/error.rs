//! What can go wrong in a use case. `ServiceError` carries a public detail
//! (safe to show a caller: never a key, never a header) apart from internal
//! causes, which only the server's log sees.

use keyward_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServiceError {
    /// The request is well-formed JSON but its content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist in the caller's workspace.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The root key's role does not allow the action.
    #[error("a root key with role {role} may not {action}")]
    Forbidden { role: &'static str, action: &'static str },
    /// The action contradicts the current state (e.g. revoking twice).
    #[error("{0}")]
    Conflict(String),
    /// The store failed; the detail stays internal.
    #[error("store failure")]
    Store(StoreError),
    /// A signed call (GitHub's alerts) whose signature does not hold.
    #[error("{0}")]
    BadSignature(&'static str),
    /// The feature the call needs is not configured on this server.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// The store cannot take writes now (a full disk); nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// The data dir was made with another pepper: keys would never match.
    #[error(
        "the pepper does not match the one this store was created with (version {0}); every restart, and every node of a cluster, must use the same pepper: restore the original pepper file or KEYWARD_PEPPER"
    )]
    PepperMismatch(u32),
    /// Keys were hashed with a pepper version that is not configured any more.
    #[error(
        "keys in this data dir were hashed with pepper version {0}, which is not configured; list it under pepper.previous"
    )]
    PepperMissing(u32),
    /// Too many calls of a rate-limited kind (e.g. key reveals).
    #[error("{detail}")]
    TooMany { detail: String, retry_after_s: u64 },
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed")]
    Task,
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            e if e.is_disk_full() => ServiceError::Unavailable(
                "the server's disk is full, so nothing was changed; an operator must free space in the data dir, then retry"
                    .into(),
            ),
            e if e.is_unreachable() => {
                tracing::error!(error = %e, "The database cannot be reached.");
                ServiceError::Unavailable(
                    "the database cannot be reached, so nothing was changed; retry shortly (an operator should check the database)"
                        .into(),
                )
            }
            e => ServiceError::Store(e),
        }
    }
}

impl ServiceError {
    pub fn not_found(what: &'static str, id: &str) -> Self {
        // Ids come from URLs and bodies, where a key may be pasted by
        // mistake: echo only what has the shape of an id.
        let plain = id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let id = if plain { id.to_owned() } else { "(as given)".to_owned() };
        ServiceError::NotFound { what, id }
    }
}

/// Why a management call's root key was refused. Deliberately vague towards
/// the caller: which of these it was goes to the log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no root key given")]
    Missing,
    #[error("root key is malformed")]
    Malformed,
    #[error("root key is unknown")]
    Unknown,
    #[error("root key is revoked")]
    Revoked,
    #[error("root key is expired")]
    Expired,
}
