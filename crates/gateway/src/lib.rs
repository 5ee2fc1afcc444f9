//! keyward in front of an HTTP API, with no change to the API's code.
//!
//! * [`proxy`]: the reverse proxy `keyward serve --proxy-listen ADDR
//!   --upstream URL` runs beside the management API, in the same process.
//! * [`layer`]: [`KeywardLayer`], the same checks as a tower layer for an
//!   axum or tonic app, deciding in process or against a keyward server.
//!
//! Invariants:
//! * A key is taken off the request before anything is forwarded, and is
//!   never in a header, log line or problem body this crate writes.
//! * Identity headers are the gateway's only: the client's copies are removed.
//! * Every refusal is problem+json: 401 (no usable key), 403 (scope, address),
//!   429 (rate limit, quota; with `Retry-After`).

pub mod body;
pub mod check;
pub mod config;
pub mod layer;
pub mod proxy;
pub mod upstream;

pub use config::{ProxyConfig, RouteConfig};
pub use layer::{KeyIdentity, KeywardLayer};
pub use proxy::Gateway;
