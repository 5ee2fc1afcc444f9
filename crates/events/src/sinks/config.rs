//! The `[[sinks]]` tables of the configuration: one struct per kind, chosen by
//! `kind` (`#[serde(tag = "kind")]`), so an option that does not apply to a
//! kind cannot be written and a required one cannot be left out (as in
//! Vector's `src/sinks/http/config.rs`). Each converts into the flat
//! [`SinkSettings`] the running sink reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Protocol, SinkKind, SinkSettings};
use crate::format::Body;

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON lines (ECS) or CEF lines in a file, rotated by size and day.
    File(FileSink),
    /// RFC 5424 over UDP or TCP (octet-counted framing, RFC 6587).
    Syslog(SyslogSink),
    /// Elasticsearch `_bulk`.
    Elasticsearch(ElasticsearchSink),
    /// Splunk HTTP Event Collector.
    Splunk(SplunkSink),
    /// Any endpoint taking NDJSON (one ECS document per line).
    Http(HttpSink),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Unique; names the cursor and the metrics of this sink.
    pub name: String,
    /// Where to write.
    pub path: PathBuf,
    /// `ecs` (default) or `cef`.
    pub format: Option<Body>,
    /// Rotate past this size (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// Also rotate when the UTC day changes (default true).
    pub rotate_daily: Option<bool>,
    /// Rotated files kept (default 7).
    pub keep: Option<u32>,
    /// Events per shipment (default 500).
    pub batch_size: Option<u32>,
    /// Start from the oldest kept event instead of the first one after the
    /// sink's first start (default false).
    pub from_beginning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSink {
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// `udp` (default) or `tcp`.
    pub protocol: Option<Protocol>,
    /// Facility number (default 16, local0).
    pub facility: Option<u8>,
    /// `ecs` (default) or `cef` in the message.
    pub format: Option<Body>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSink {
    pub name: String,
    /// The base URL; `/_bulk` is added.
    pub url: String,
    /// Index or data stream (default `keyward-events`).
    pub index: Option<String>,
    /// Extra request headers (e.g. Authorization).
    pub headers: Option<BTreeMap<String, String>>,
    /// For `https://`: a PEM file of CA certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkSink {
    pub name: String,
    /// The HEC URL; `/services/collector/event` is added.
    pub url: String,
    /// The HEC token.
    pub token: String,
    pub ca_file: Option<PathBuf>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    pub name: String,
    /// The full URL NDJSON is posted to.
    pub url: String,
    pub headers: Option<BTreeMap<String, String>>,
    pub ca_file: Option<PathBuf>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::File(s) => &s.name,
            SinkConfig::Syslog(s) => &s.name,
            SinkConfig::Elasticsearch(s) => &s.name,
            SinkConfig::Splunk(s) => &s.name,
            SinkConfig::Http(s) => &s.name,
        }
    }

    /// What the running sink reads.
    pub fn settings(&self) -> SinkSettings {
        let base = |name: &str, kind, batch_size, from_beginning| SinkSettings {
            name: name.to_owned(),
            kind,
            batch_size,
            from_beginning,
            ..SinkSettings::blank(kind)
        };
        match self.clone() {
            SinkConfig::File(s) => SinkSettings {
                path: Some(s.path),
                format: s.format,
                max_bytes: s.max_bytes,
                rotate_daily: s.rotate_daily,
                keep: s.keep,
                ..base(&s.name, SinkKind::File, s.batch_size, s.from_beginning)
            },
            SinkConfig::Syslog(s) => SinkSettings {
                address: Some(s.address),
                protocol: s.protocol,
                facility: s.facility,
                format: s.format,
                ..base(&s.name, SinkKind::Syslog, s.batch_size, s.from_beginning)
            },
            SinkConfig::Elasticsearch(s) => SinkSettings {
                url: Some(s.url),
                index: s.index,
                headers: s.headers,
                ca_file: s.ca_file,
                ..base(&s.name, SinkKind::Elasticsearch, s.batch_size, s.from_beginning)
            },
            SinkConfig::Splunk(s) => SinkSettings {
                url: Some(s.url),
                token: Some(s.token),
                ca_file: s.ca_file,
                ..base(&s.name, SinkKind::Splunk, s.batch_size, s.from_beginning)
            },
            SinkConfig::Http(s) => SinkSettings {
                url: Some(s.url),
                headers: s.headers,
                ca_file: s.ca_file,
                ..base(&s.name, SinkKind::Http, s.batch_size, s.from_beginning)
            },
        }
    }

    /// Every problem of this entry's values, prefixed with `at` (e.g. `sinks[0]`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        self.settings().problems(at)
    }
}
