//! What can go wrong when limits live on Redis.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LimitsError {
    #[error("KEYWARD_REDIS_URL is not a Redis URL such as redis://127.0.0.1:6379/0: {0}")]
    Url(String),
    /// Redis could not be reached or refused the script; no decision was made.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
}
