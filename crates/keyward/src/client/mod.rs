//! The CLI's client side: `keyward keys …`, `keyspaces`, `root-keys`,
//! `workspaces`, `audit`, `events`, `incident` talk to a running server over
//! HTTP with a root key. Answers print for people by default (a line or an
//! aligned table, relative times, colour on a terminal), as the server's JSON
//! with `--json`.

mod admin;
mod alerts;
mod events;
mod keys;
pub(crate) mod output;

pub use admin::{
    AuditCmd, IncidentCmd, KeyspacesCmd, MasterKeyCmd, RootKeysCmd, WorkspacesCmd, audit, incident, keyspaces,
    master_key, root_keys, workspaces,
};
pub use alerts::{AlertsCmd, WebhooksCmd, alerts, webhooks};
pub use events::{EventsCmd, events};
pub use keys::{KeysCmd, keys};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Base URL of the server.
    #[arg(long, env = "KEYWARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Root key (prefer the env var: flags show up in process listings).
    #[arg(long, env = "KEYWARD_ROOT_KEY", hide_env_values = true)]
    root_key: Option<String>,
    /// Print the server's JSON answer (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

impl Conn {
    pub fn new(server: &str, root_key: &str) -> Conn {
        Conn { server: server.to_owned(), root_key: Some(root_key.to_owned()), json: false }
    }
}

/// One API call; a problem answer becomes an error with its status and detail.
pub fn call(conn: &Conn, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let Some(root_key) = conn.root_key.as_deref().filter(|k| !k.is_empty()) else {
        bail!(
            "no root key: set KEYWARD_ROOT_KEY (the key `keyward init` or the first `keyward serve` printed), \
             e.g. export KEYWARD_ROOT_KEY=kw_root_..., or pass --root-key"
        );
    };
    let url = format!("{}{}", conn.server.trim_end_matches('/'), path);
    let req = agent()?.request(method, &url).set("Authorization", &format!("Bearer {root_key}"));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.into_json().context("reading the server's answer"),
        Err(ureq::Error::Status(code, r)) => {
            let detail = r
                .into_json::<Value>()
                .ok()
                .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            let hint = match code {
                401 => " (check KEYWARD_ROOT_KEY: it must be a root key of this server)",
                403 => " (this root key's role does not allow it; use an admin key)",
                _ => "",
            };
            bail!("server answered {code}: {detail}{hint}")
        }
        Err(e) => {
            Err(anyhow::Error::new(e)).with_context(|| format!("reaching {}; is `keyward serve` running?", conn.server))
        }
    }
}

/// The HTTP client: HTTPS trusts the usual roots plus `KEYWARD_CA_CERT` (a
/// PEM file, for a private CA), and presents `KEYWARD_CLIENT_CERT` /
/// `KEYWARD_CLIENT_KEY` when the server wants client certificates (mTLS).
fn agent() -> anyhow::Result<ureq::Agent> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let (ca, cert, key) = (env("KEYWARD_CA_CERT"), env("KEYWARD_CLIENT_CERT"), env("KEYWARD_CLIENT_KEY"));
    if ca.is_none() && cert.is_none() {
        return Ok(ureq::agent());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("KEYWARD_CA_CERT: reading {}", ca.display()))?;
        for c in certs {
            roots.add(c).with_context(|| format!("KEYWARD_CA_CERT: {} is not a CA certificate", ca.display()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("KEYWARD_CLIENT_CERT: reading {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&key)
                .with_context(|| format!("KEYWARD_CLIENT_KEY: reading {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("KEYWARD_CLIENT_CERT and KEYWARD_CLIENT_KEY do not match")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("give both KEYWARD_CLIENT_CERT and KEYWARD_CLIENT_KEY, or neither"),
    };
    Ok(ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(config)).build())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a created or rotated secret: alone on stdout for people (the id
/// and any warning go to stderr), so `KEY=$(keyward keys create …)` works.
fn show_secret(conn: &Conn, v: &Value, what: &str) -> anyhow::Result<()> {
    if conn.json {
        return print_json(v);
    }
    let id = v["id"].as_str().or(v["view"]["id"].as_str()).unwrap_or("-");
    eprintln!("{what} {id}. The key below is shown only this once: store it now.");
    if let Some(warning) = v["warning"].as_str() {
        eprintln!("warning: {warning}");
    }
    println!("{}", v["key"].as_str().unwrap_or_default());
    Ok(())
}

/// Appends `name=value` pairs that are present, URL-encoded.
fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A duration as people write it, in milliseconds: `500ms`, `10s`, `5m`,
/// `2h`, `30d`, `1w`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

/// A duration in milliseconds as `1m`, `90s`, `1500ms`: the largest unit that divides it.
pub fn format_duration(ms: i64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        for (text, ms) in [("1s", 1000), ("500ms", 500), ("1m", 60_000), ("2h", 7_200_000), ("30d", 2_592_000_000)] {
            assert_eq!(parse_duration(text), Some(ms), "{text}");
        }
        assert_eq!(parse_duration("60000"), Some(60_000));
        for bad in ["", "m", "1x", "-1s", "1.5s", "99999999999999999999"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(60_000), "1m");
        assert_eq!(format_duration(86_400_000), "1d");
        assert_eq!(format_duration(1500), "1500ms");
    }
}
