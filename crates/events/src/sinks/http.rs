//! `kind = "http"`: NDJSON (one ECS document a line) posted to any URL; and
//! what every HTTP sink shares: the TLS agent (public web roots plus an
//! optional CA file) and the POST that turns answers into [`SinkError`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Output;
use crate::error::SinkError;
use crate::format::Record;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    pub name: String,
    /// The full URL NDJSON is posted to.
    pub url: String,
    /// Extra request headers (e.g. Authorization).
    pub headers: Option<BTreeMap<String, String>>,
    /// For `https://`: a PEM file of CA certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

impl HttpSink {
    pub(super) fn problems(&self, at: &str) -> Vec<String> {
        endpoint_problems(at, &self.url, self.ca_file.as_deref())
    }

    pub(super) fn output(&self, host: &str) -> Box<dyn Output> {
        Box::new(NdjsonOut {
            client: Client::new(self.ca_file.as_deref(), self.headers.clone().unwrap_or_default()),
            url: self.url.clone(),
            host: host.to_owned(),
        })
    }
}

struct NdjsonOut {
    client: Client,
    url: String,
    host: String,
}

impl Output for NdjsonOut {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut body = String::with_capacity(batch.len() * 700);
        for e in batch {
            body.push_str(&e.ecs(&self.host).to_string());
            body.push('\n');
        }
        self.client.post(&self.url, "application/x-ndjson", &body).map(drop)
    }
}

/// Problems of an endpoint URL and CA file, prefixed with `at`.
pub(super) fn endpoint_problems(at: &str, url: &str, ca_file: Option<&Path>) -> Vec<String> {
    let mut p = Vec::new();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        p.push(format!("{at}.url: must start with http:// or https://"));
    }
    if let Some(f) = ca_file
        && let Err(e) = load_roots(Some(f))
    {
        p.push(format!("{at}.ca_file: {e}"));
    }
    p
}

/// An HTTP(S) client of one sink: its agent (or why TLS could not be set
/// up, reported on every shipment) and the headers sent with every request.
pub(super) struct Client {
    agent: Result<ureq::Agent, String>,
    headers: BTreeMap<String, String>,
}

impl Client {
    pub(super) fn new(ca_file: Option<&Path>, headers: BTreeMap<String, String>) -> Client {
        Client { agent: agent(ca_file), headers }
    }

    /// POSTs `body`; any answer but 2xx is an error with the start of its body.
    pub(super) fn post(&self, url: &str, content_type: &str, body: &str) -> Result<ureq::Response, SinkError> {
        let agent = self.agent.as_ref().map_err(|e| SinkError::Transport(format!("TLS setup: {e}")))?;
        let mut req = agent.post(url).set("Content-Type", content_type);
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        match req.send_string(body) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let body: String = r.into_string().unwrap_or_default().chars().take(200).collect();
                Err(SinkError::Status { status, body })
            }
            Err(e) => Err(SinkError::Transport(e.to_string())),
        }
    }
}

/// The public web roots, plus the certificates of `ca_file` if given.
fn load_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(f) = ca_file {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))? {
            let cert = cert.map_err(|e| format!("{}: {e}", f.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", f.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no PEM certificate in it", f.display()));
        }
    }
    Ok(roots)
}

/// An HTTP(S) agent: certificates are verified against the public web roots
/// and, if given, the sink's own CA file.
fn agent(ca_file: Option<&Path>) -> Result<ureq::Agent, String> {
    let roots = load_roots(ca_file)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tls_config(std::sync::Arc::new(tls))
        .build())
}
