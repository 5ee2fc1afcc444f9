//! Usage events, from the verify path to where security teams look.
//!
//! * `pipeline`: a bounded queue in front of one writer thread that appends
//!   events to the event log in batches (one transaction per batch), applies
//!   usage reports, and purges old events. The verify path only enqueues.
//! * `format`: Elastic Common Schema JSON, RFC 5424 syslog lines, CEF.
//! * `sinks`: exporters that follow the event log by id, each with its own
//!   durable cursor; the log is their disk spool, so an outage loses nothing.
//!
//! Invariants: no event holds a raw key (the service builds events from key
//! ids, hints and fingerprints, and scrubs caller text); every event dropped
//! for lack of room is counted in `keyward_events_dropped_total` and logged.

pub mod error;
pub mod format;
pub mod geo;
pub mod pipeline;
pub mod rollups;
pub mod sinks;

pub use error::SinkError;
pub use pipeline::{EventObserver, EventPipeline, PipelineConfig, PipelineStats, Reported};
pub use sinks::{SinkConfig, SinkHealth, SinkKind, Sinks};
