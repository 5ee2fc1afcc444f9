//! TLS for the API and proxy listeners: rustls (ring), TLS 1.3 by default and
//! 1.2 on request, certificates reloaded without a restart (on SIGHUP, and
//! when the files change, checked every `reload_check_ms`), HSTS on every
//! answer given over TLS, and optional client certificates (mTLS): required
//! of every connection, or only of callers that present a root key.
//!
//! A reload that fails (a half-written file, a key that does not match)
//! keeps the certificate in use and logs why; new connections take the new
//! configuration, open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::error::TlsError;

/// The `[tls]` section: also used by the gateway's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Env `KEYWARD_TLS_CERT`.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Env `KEYWARD_TLS_KEY`.
    pub key: Option<PathBuf>,
    /// Oldest protocol accepted: `"1.3"` (default) or `"1.2"`.
    pub min_version: String,
    /// PEM CA certificates that sign client certificates; turns on mTLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `"root_keys"` (default: any client may connect, but a
    /// request with a root key needs a verified client certificate) or
    /// `"required"` (no connection without one).
    pub client_auth: ClientAuth,
    /// `Strict-Transport-Security: max-age` on TLS answers, seconds; 0 sends
    /// none. Default 31536000 (a year).
    pub hsts_max_age_s: u64,
    /// How often the certificate files are checked for changes, ms. Default 2000.
    pub reload_check_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    RootKeys,
    Required,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            min_version: "1.3".into(),
            client_ca: None,
            client_auth: ClientAuth::RootKeys,
            hsts_max_age_s: 31_536_000,
            reload_check_ms: 2_000,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// Whether requests with a root key must come with a verified client certificate.
    pub fn root_keys_need_client_cert(&self) -> bool {
        self.enabled() && self.client_ca.is_some()
    }

    /// Every problem with these values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.cert.is_some() != self.key.is_some() {
            p.push("tls: give both cert and key (KEYWARD_TLS_CERT and KEYWARD_TLS_KEY), or neither".into());
        }
        if !matches!(self.min_version.as_str(), "1.2" | "1.3") {
            p.push(format!("tls.min_version: {:?} must be \"1.2\" or \"1.3\"", self.min_version));
        }
        if self.client_ca.is_some() && self.cert.is_none() {
            p.push("tls.client_ca: client certificates need TLS: give tls.cert and tls.key too".into());
        }
        if self.reload_check_ms < 100 {
            p.push("tls.reload_check_ms: must be at least 100".into());
        }
        p
    }
}

/// Whether the connection a request came on presented a verified client
/// certificate (set on every request of a TLS connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCert(pub bool);

/// A listener's TLS state: the configuration new connections get.
pub struct Tls {
    cfg: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// Modification times and sizes of the files, to see a change.
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
    hsts: Option<HeaderValue>,
}

impl Tls {
    /// Loads the certificate and key; `alpn` names the protocols offered
    /// (`http/1.1` for the API, `h2` too for the gateway).
    pub fn load(cfg: &TlsConfig, alpn: &[&[u8]]) -> Result<Tls, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = build(cfg, &alpn)?;
        let hsts = (cfg.hsts_max_age_s > 0)
            .then(|| HeaderValue::try_from(format!("max-age={}", cfg.hsts_max_age_s)).expect("digits"));
        Ok(Tls { stamp: Mutex::new(stamps(cfg)), cfg: cfg.clone(), alpn, current: RwLock::new(Arc::new(config)), hsts })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }

    /// The `Strict-Transport-Security` value, unless turned off.
    pub fn hsts(&self) -> Option<&HeaderValue> {
        self.hsts.as_ref()
    }

    pub fn root_keys_need_client_cert(&self) -> bool {
        self.cfg.root_keys_need_client_cert()
    }

    /// Reads the files again and uses them for new connections; on failure
    /// the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamp.lock() = stamps(&self.cfg);
        let config = build(&self.cfg, &self.alpn)?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// Reloads when a file changed since the last load.
    fn reload_if_changed(&self) {
        if *self.stamp.lock() == stamps(&self.cfg) {
            return;
        }
        self.reload_logged("the certificate files changed");
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.cert_path().display(), why, "Reloaded the TLS certificate."),
            Err(e) => tracing::error!(
                error = %e,
                why,
                "Reloading the TLS certificate failed; the one in use stays. Fix the files, then send SIGHUP."
            ),
        }
    }

    fn cert_path(&self) -> &Path {
        self.cfg.cert.as_deref().unwrap_or(Path::new("-"))
    }

    /// Watches for SIGHUP and for changed files, for as long as the process runs.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(tls.cfg.reload_check_ms);
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    () = hangup => {
                        let tls = tls.clone();
                        let _ = tokio::task::spawn_blocking(move || tls.reload_logged("SIGHUP")).await;
                    }
                    () = tokio::time::sleep(every) => {
                        let tls = tls.clone();
                        let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
                    }
                }
            }
        })
    }
}

fn stamps(cfg: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [&cfg.cert, &cfg.key, &cfg.client_ca]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

fn read_err(path: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |e| match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read { path: path.display().to_string(), source },
        _ => TlsError::Pem { path: path.display().to_string(), what: "valid PEM section" },
    }
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(path))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.display().to_string(), what });
    }
    Ok(certs)
}

fn build(cfg: &TlsConfig, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Err(TlsError::Config("tls.cert and tls.key are both needed".into()));
    };
    let chain = certs(cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read { path: key.display().to_string(), source },
        _ => TlsError::Pem { path: key.display().to_string(), what: "private key" },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if cfg.min_version == "1.2" {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "CA certificate")? {
                roots.add(c).map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match cfg.client_auth {
                ClientAuth::RootKeys => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
