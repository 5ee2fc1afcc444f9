//! Errors of exporters.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP {status} from the endpoint: {body}")]
    Status { status: u16, body: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("the endpoint rejected some events: {0}")]
    Rejected(String),
    #[error("event log: {0}")]
    Log(#[from] keyward_store::StoreError),
}
