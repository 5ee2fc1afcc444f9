//! Errors of the alerting side.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AlertsError {
    #[error("store: {0}")]
    Store(#[from] keyward_store::StoreError),
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
}
