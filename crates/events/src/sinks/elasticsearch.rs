//! `kind = "elasticsearch"`: the `_bulk` API with `create` actions whose `_id`
//! is the event's, so a re-sent batch makes no duplicates (409s are fine).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Output;
use super::http::{Client, endpoint_problems};
use crate::error::SinkError;
use crate::format::Record;

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

impl ElasticsearchSink {
    pub(super) fn problems(&self, at: &str) -> Vec<String> {
        endpoint_problems(at, &self.url, self.ca_file.as_deref())
    }

    pub(super) fn output(&self, host: &str) -> Box<dyn Output> {
        Box::new(BulkOut {
            client: Client::new(self.ca_file.as_deref(), self.headers.clone().unwrap_or_default()),
            url: format!("{}/_bulk", self.url.trim_end_matches('/')),
            index: self.index.clone().unwrap_or_else(|| "keyward-events".to_owned()),
            host: host.to_owned(),
        })
    }
}

struct BulkOut {
    client: Client,
    url: String,
    index: String,
    host: String,
}

impl Output for BulkOut {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut body = String::with_capacity(batch.len() * 800);
        for e in batch {
            let action = serde_json::json!({"create": {"_index": self.index, "_id": e.doc_id()}});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(&e.ecs(&self.host).to_string());
            body.push('\n');
        }
        let res = self.client.post(&self.url, "application/x-ndjson", &body)?;
        let v: serde_json::Value = res.into_json().map_err(|e| SinkError::Transport(e.to_string()))?;
        if v["errors"] == true {
            // 409: the document exists already (a re-send); anything else fails the batch.
            let bad = v["items"].as_array().into_iter().flatten().find(|i| {
                let status = i["create"]["status"].as_u64().unwrap_or(200);
                status >= 300 && status != 409
            });
            if let Some(item) = bad {
                return Err(SinkError::Rejected(item["create"]["error"].to_string().chars().take(200).collect()));
            }
        }
        Ok(())
    }
}
