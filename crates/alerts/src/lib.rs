//! keyward's detection: rules over the usage stream (`rules`: what each rule
//! measures and its defaults; `engine`: bounded state per key and per source
//! address, evaluated event by event), the alert lifecycle (`tracker`: one
//! alert per rule and subject, escalated, resolved after a quiet period) and
//! webhook signatures (`webhook`, Standard Webhooks).

pub mod engine;
pub mod rules;
pub mod tracker;
pub mod webhook;

pub use engine::{Engine, EngineConfig, Finding, Learned, RuleBook, Signal, Subject};
pub use rules::{Level, RuleId, RulePatch, RuleSet, RuleSettings, Severity};
pub use tracker::{Alert, AlertStatus, Change, ChangeKind, Tracker, TrackerConfig};
