//! keyward's detection: rules over the usage stream (`rules`: what each rule
//! measures and its defaults; `engine`: bounded state per key and per source
//! address, evaluated event by event), the alert lifecycle (`tracker`: one
//! alert per rule and subject, escalated, resolved after a quiet period) and
//! webhook signatures (`webhook`, Standard Webhooks).

pub mod delivery;
pub mod engine;
pub mod error;
pub mod monitor;
pub mod rules;
pub mod tracker;
pub mod view;
pub mod webhook;

pub use delivery::{Deliverer, DeliveryConfig};
pub use engine::{Engine, EngineConfig, Finding, Learned, RuleBook, Signal, Subject};
pub use error::AlertsError;
pub use monitor::{Monitor, MonitorConfig, Responder};
pub use rules::{Level, RuleId, RulePatch, RuleSet, RuleSettings, Severity};
pub use tracker::{Alert, AlertStatus, Change, ChangeKind, Tracker, TrackerConfig};
