//! `kind = "splunk"`: the HTTP Event Collector (`/services/collector/event`),
//! one JSON event envelope a line, `Authorization: Splunk <token>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Output;
use super::http::{Client, endpoint_problems};
use crate::error::SinkError;
use crate::format::Record;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkSink {
    pub name: String,
    /// The HEC URL; `/services/collector/event` is added.
    pub url: String,
    /// The HEC token.
    pub token: String,
    /// For `https://`: a PEM file of CA certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

impl SplunkSink {
    pub(super) fn problems(&self, at: &str) -> Vec<String> {
        let mut p = endpoint_problems(at, &self.url, self.ca_file.as_deref());
        if self.token.is_empty() {
            p.push(format!("{at}.token: must not be empty"));
        }
        p
    }

    pub(super) fn output(&self, host: &str) -> Box<dyn Output> {
        let headers = BTreeMap::from([("Authorization".to_owned(), format!("Splunk {}", self.token))]);
        Box::new(HecOut {
            client: Client::new(self.ca_file.as_deref(), headers),
            url: format!("{}/services/collector/event", self.url.trim_end_matches('/')),
            host: host.to_owned(),
        })
    }
}

struct HecOut {
    client: Client,
    url: String,
    host: String,
}

impl Output for HecOut {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut body = String::with_capacity(batch.len() * 800);
        for e in batch {
            let envelope = serde_json::json!({
                "time": e.ts() as f64 / 1000.0,
                "host": self.host,
                "source": "keyward",
                "sourcetype": "keyward:usage",
                "event": e.ecs(&self.host),
            });
            body.push_str(&envelope.to_string());
            body.push('\n');
        }
        self.client.post(&self.url, "application/json", &body).map(drop)
    }
}
