//! The configuration tree. Lowest to highest: defaults, the TOML file
//! (`--config`, `KEYWARD_CONFIG`, or `./keyward.toml` if present), `KEYWARD_*`
//! environment variables, command-line flags. [`Config::validate`] reports
//! every problem at once, each with its key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Everything `keyward serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`. Env `KEYWARD_LISTEN`.
    pub listen: String,
    /// Where the embedded store and the pepper live. Default `./keyward-data`.
    /// Env `KEYWARD_DATA_DIR`.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub pepper: PepperConfig,
    /// Limits of the HTTP listener (see `keyward_server::HttpConfig`).
    pub http: keyward_server::HttpConfig,
    /// The verify path's caches (see `keyward_service::ServiceConfig`).
    pub cache: keyward_service::ServiceConfig,
    pub last_used: LastUsedSection,
    /// The usage-event pipeline (see `keyward_events::PipelineConfig`).
    pub events: keyward_events::PipelineConfig,
    pub lifecycle: LifecycleSection,
    pub github: GithubSection,
    /// Exporters of usage events, each a `[[sinks]]` table.
    pub sinks: Vec<keyward_events::SinkConfig>,
    /// The rules engine and the alert lifecycle (see `keyward_alerts::MonitorConfig`).
    pub alerts: keyward_alerts::MonitorConfig,
    /// Webhook delivery (see `keyward_alerts::DeliveryConfig`).
    pub webhooks: keyward_alerts::DeliveryConfig,
    /// IP enrichment from MaxMind-format databases (see `keyward_events::geo::GeoConfig`).
    pub geoip: keyward_events::geo::GeoConfig,
    /// The gateway (see `keyward_gateway::ProxyConfig`).
    pub proxy: keyward_gateway::ProxyConfig,
    pub encryption: EncryptionConfig,
    /// TLS for the API listener and the gateway's (see `keyward_server::tls::TlsConfig`).
    pub tls: keyward_server::tls::TlsConfig,
    pub store: StoreSection,
    pub redis: RedisSection,
    /// Usage rollups by minute, hour and day (see `keyward_events::rollups::RollupConfig`).
    pub rollups: keyward_events::rollups::RollupConfig,
}

/// Rate limits and quotas shared by several nodes, on Redis 7.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://host:6379/0` or `unix:///run/redis.sock`. Env `KEYWARD_REDIS_URL`.
    pub url: Option<String>,
    /// When Redis cannot be reached: `closed` (default: verifications get 503,
    /// no limit is ever exceeded) or `local` (each node enforces limits alone).
    /// Env `KEYWARD_REDIS_ON_UNAVAILABLE`.
    pub on_unavailable: keyward_service::cluster::OnUnavailable,
    /// A limit check that takes longer counts as Redis unreachable, ms. Default 250.
    pub timeout_ms: u64,
    /// Prefix of keyward's Redis keys. Default `keyward:limits`.
    pub prefix: String,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: None,
            on_unavailable: keyward_service::cluster::OnUnavailable::Closed,
            timeout_ms: 250,
            prefix: "keyward:limits".into(),
        }
    }
}

/// Where the state lives: the embedded SQLite store in the data dir (the
/// default), or a PostgreSQL database shared by several nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `postgres://user:password@host:port/db`. Env `KEYWARD_DATABASE_URL`.
    pub url: Option<String>,
    /// Connections each node keeps to PostgreSQL. Default 16.
    pub pool_size: u32,
    /// A node that has not read the change feed for this long refuses to
    /// verify (503) rather than risk a stale answer, ms. Default 5000.
    /// Env `KEYWARD_MAX_STALENESS_MS`.
    pub max_staleness_ms: i64,
    /// How long a node waits for a change notification before it reads the
    /// feed anyway (the repair of a lost notification), ms. Default 1000.
    pub poll_ms: u64,
    /// How often a node asks for the leader's lock (the leader runs the sinks
    /// and the rules engine), and how often the leader checks it still has it, ms.
    /// Default 2000.
    pub leader_retry_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        let c = keyward_service::cluster::ClusterConfig::default();
        StoreSection {
            url: None,
            pool_size: 16,
            max_staleness_ms: c.max_staleness_ms,
            poll_ms: c.poll_ms,
            leader_retry_ms: 2000,
        }
    }
}

impl StoreSection {
    /// The PostgreSQL URL, when the store is shared.
    pub fn postgres(&self) -> Option<&str> {
        self.url.as_deref()
    }

    pub fn cluster(&self) -> keyward_service::cluster::ClusterConfig {
        keyward_service::cluster::ClusterConfig { max_staleness_ms: self.max_staleness_ms, poll_ms: self.poll_ms }
    }
}

/// Encryption at rest: the master key (KEK) that wraps the data dir's data
/// keys. Give it in exactly one way; none means the data dir is not encrypted
/// (said at start). It is never written to the data dir.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// 64 hex characters. Env `KEYWARD_MASTER_KEY`. Prefer a file or a command
    /// in production: the environment of a process can be read by its user.
    pub master_key: Option<String>,
    /// A file holding the key (64 hex characters). Env `KEYWARD_MASTER_KEY_FILE`.
    pub master_key_file: Option<PathBuf>,
    /// A shell command that prints the key on stdout (a KMS or vault client),
    /// run once at start and on `master-key rotate`. Env `KEYWARD_MASTER_KEY_COMMAND`.
    pub master_key_command: Option<String>,
    /// Master keys used before the current one, which may still wrap data keys
    /// (an offline rotation: the new key current, the old one here; keyward
    /// re-wraps at start). Env `KEYWARD_MASTER_KEY_PREVIOUS`, comma-separated.
    pub previous: Vec<String>,
}

/// Runs the master key command and returns what it printed on stdout.
fn run_key_command(cmd: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("running the master key command {cmd:?}"))?;
    let deadline = std::time::Instant::now() + EncryptionConfig::COMMAND_TIMEOUT;
    // A key is a line: far below a pipe's buffer, so waiting before reading cannot block the command.
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the master key command")? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the master key command {cmd:?} did not finish within {} s; check that the vault or KMS answers",
                EncryptionConfig::COMMAND_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if !status.success() {
        bail!("the master key command {cmd:?} failed ({status}); see its output above");
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // At most a few KiB: a key is 64 hex characters.
        stdout.by_ref().take(64 * 1024).read_to_string(&mut out).context("reading the master key command's output")?;
    }
    Ok(out)
}

impl EncryptionConfig {
    /// The configured master key, read from its source, if one is configured.
    pub fn master_key(&self) -> anyhow::Result<Option<keyward_core::seal::SecretKey>> {
        let text = match (&self.master_key, &self.master_key_file, &self.master_key_command) {
            (Some(hex), None, None) => zeroize::Zeroizing::new(hex.clone()),
            (None, Some(path), None) => zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the master key file {}", path.display()))?,
            ),
            (None, None, Some(cmd)) => zeroize::Zeroizing::new(run_key_command(cmd)?),
            (None, None, None) => return Ok(None),
            _ => bail!(
                "encryption: give the master key in one way only (master_key, master_key_file or master_key_command)"
            ),
        };
        keyward_core::seal::SecretKey::from_hex(&text).map(Some).map_err(|_| {
            anyhow::anyhow!("the master key must be 64 hex characters; make one with `keyward master-key generate`")
        })
    }

    /// How long the master key command may take (a vault that hangs must not
    /// hang the start or a rotation).
    const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn previous_keys(&self) -> anyhow::Result<Vec<keyward_core::seal::SecretKey>> {
        self.previous
            .iter()
            .enumerate()
            .map(|(i, h)| {
                keyward_core::seal::SecretKey::from_hex(h)
                    .map_err(|_| anyhow::anyhow!("encryption.previous[{i}]: must be 64 hex characters"))
            })
            .collect()
    }
}

/// GitHub secret scanning (partner program): the public keys GitHub signs
/// its alerts with, as published at api.github.com/meta/public_keys/secret_scanning.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubSection {
    pub public_keys: Vec<GithubKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubKey {
    /// `key_identifier`.
    pub id: String,
    /// `key`: an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub pem: String,
}

/// Periodic lifecycle jobs: expiry reminders and revocation re-checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// How often the jobs run, ms. Default 60000. Env `KEYWARD_LIFECYCLE_INTERVAL_MS`.
    pub check_interval_ms: u64,
    /// Keys revoked within this many days are re-checked on every run. Default 30.
    pub recheck_revoked_days: i64,
}

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection { check_interval_ms: 60_000, recheck_revoked_days: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`. Env `KEYWARD_LOG_FORMAT`.
    pub format: String,
    /// A tracing filter such as `info` or `keyward=debug`. Default `info`.
    /// Env `KEYWARD_LOG` (or `RUST_LOG`).
    pub level: String,
}

/// The server secret keying every key hash. Give it as hex (env
/// `KEYWARD_PEPPER`) or as a file (env `KEYWARD_PEPPER_FILE`); by default the
/// file `<data_dir>/pepper`, created with a random pepper on first start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepperConfig {
    pub hex: Option<String>,
    pub file: Option<PathBuf>,
    /// Version recorded beside every hash. Default 1.
    pub version: Option<u32>,
    /// Peppers used before the current one, still accepted for the keys hashed
    /// with them: to change the pepper, give the new one a higher version and
    /// list the old one here. New keys and rotations use the current pepper.
    pub previous: Vec<PreviousPepper>,
}

/// An older pepper, by version, as hex or as a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousPepper {
    pub version: u32,
    pub hex: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LastUsedSection {
    /// How often last-use marks are written, ms. Default 5000.
    /// Env `KEYWARD_LAST_USED_FLUSH_MS`.
    pub flush_interval_ms: u64,
    /// How often consumed quotas are written, ms: a crash (kill -9) gives
    /// back at most the quota used in this interval. Default 100.
    /// Env `KEYWARD_QUOTA_FLUSH_MS`.
    pub quota_flush_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./keyward-data"),
            log: LogConfig::default(),
            pepper: PepperConfig::default(),
            http: keyward_server::HttpConfig::default(),
            cache: keyward_service::ServiceConfig::default(),
            last_used: LastUsedSection::default(),
            events: keyward_events::PipelineConfig::default(),
            lifecycle: LifecycleSection::default(),
            github: GithubSection::default(),
            sinks: Vec::new(),
            alerts: keyward_alerts::MonitorConfig::default(),
            webhooks: keyward_alerts::DeliveryConfig::default(),
            geoip: keyward_events::geo::GeoConfig::default(),
            proxy: keyward_gateway::ProxyConfig::default(),
            encryption: EncryptionConfig::default(),
            tls: keyward_server::tls::TlsConfig::default(),
            store: StoreSection::default(),
            redis: RedisSection::default(),
            rollups: keyward_events::rollups::RollupConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

impl Default for LastUsedSection {
    fn default() -> Self {
        LastUsedSection { flush_interval_ms: 5_000, quota_flush_interval_ms: 100 }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub proxy_listen: Option<String>,
    pub upstream: Option<String>,
}

impl Config {
    /// Builds the configuration from all four layers and validates it.
    pub fn load(flags: &Overrides) -> anyhow::Result<Config> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let file = flags.config.clone().or_else(|| env("KEYWARD_CONFIG").map(PathBuf::from)).or_else(|| {
            let p = PathBuf::from("keyward.toml");
            p.exists().then_some(p)
        });
        let mut problems = Vec::new();
        let mut cfg = match &file {
            Some(path) => Self::from_file(path, &mut problems)?,
            None => Config::default(),
        };
        if let Some(v) = env("KEYWARD_LISTEN") {
            cfg.listen = v;
        }
        if let Some(v) = env("KEYWARD_DATA_DIR") {
            cfg.data_dir = v.into();
        }
        if let Some(v) = env("KEYWARD_LOG_FORMAT") {
            cfg.log.format = v;
        }
        if let Some(v) = env("KEYWARD_LOG").or_else(|| env("RUST_LOG")) {
            cfg.log.level = v;
        }
        if let Some(v) = env("KEYWARD_DATABASE_URL") {
            cfg.store.url = Some(v);
        }
        if let Some(v) = env("KEYWARD_REDIS_URL") {
            cfg.redis.url = Some(v);
        }
        if let Some(v) = env("KEYWARD_REDIS_ON_UNAVAILABLE") {
            match v.as_str() {
                "closed" => cfg.redis.on_unavailable = keyward_service::cluster::OnUnavailable::Closed,
                "local" => cfg.redis.on_unavailable = keyward_service::cluster::OnUnavailable::Local,
                _ => problems.push(format!("KEYWARD_REDIS_ON_UNAVAILABLE: {v:?} must be \"closed\" or \"local\"")),
            }
        }
        if let Some(v) = env("KEYWARD_MAX_STALENESS_MS") {
            match v.parse() {
                Ok(n) => cfg.store.max_staleness_ms = n,
                Err(_) => problems.push(format!("KEYWARD_MAX_STALENESS_MS: {v:?} is not a whole number")),
            }
        }
        if let Some(v) = env("KEYWARD_PEPPER") {
            cfg.pepper.hex = Some(v);
        }
        if let Some(v) = env("KEYWARD_PEPPER_FILE") {
            cfg.pepper.file = Some(v.into());
        }
        if let Some(v) = env("KEYWARD_TLS_CERT") {
            cfg.tls.cert = Some(v.into());
        }
        if let Some(v) = env("KEYWARD_TLS_KEY") {
            cfg.tls.key = Some(v.into());
        }
        if let Some(v) = env("KEYWARD_TLS_CLIENT_CA") {
            cfg.tls.client_ca = Some(v.into());
        }
        if let Some(v) = env("KEYWARD_MASTER_KEY") {
            cfg.encryption.master_key = Some(v);
        }
        if let Some(v) = env("KEYWARD_MASTER_KEY_FILE") {
            cfg.encryption.master_key_file = Some(v.into());
        }
        if let Some(v) = env("KEYWARD_MASTER_KEY_COMMAND") {
            cfg.encryption.master_key_command = Some(v);
        }
        if let Some(v) = env("KEYWARD_MASTER_KEY_PREVIOUS") {
            cfg.encryption.previous = v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = env("KEYWARD_MAX_BODY_BYTES") {
            match v.parse() {
                Ok(n) => cfg.http.max_body_bytes = n,
                Err(_) => problems.push(format!("KEYWARD_MAX_BODY_BYTES: {v:?} is not a whole number")),
            }
        }
        if let Some(v) = env("KEYWARD_ROOT_AUTH_FAILURES_PER_MINUTE") {
            match v.parse() {
                Ok(n) => cfg.http.root_auth_failures_per_minute = n,
                Err(_) => problems.push(format!("KEYWARD_ROOT_AUTH_FAILURES_PER_MINUTE: {v:?} is not a whole number")),
            }
        }
        if let Some(v) = env("KEYWARD_OPS_NEED_ROOT_KEY") {
            match v.as_str() {
                "1" | "true" => cfg.http.ops_need_root_key = true,
                "0" | "false" => cfg.http.ops_need_root_key = false,
                _ => problems.push(format!("KEYWARD_OPS_NEED_ROOT_KEY: {v:?} must be 1/true or 0/false")),
            }
        }
        if let Some(v) = env("KEYWARD_LAST_USED_FLUSH_MS") {
            match v.parse() {
                Ok(n) => cfg.last_used.flush_interval_ms = n,
                Err(_) => problems.push(format!("KEYWARD_LAST_USED_FLUSH_MS: {v:?} is not a whole number")),
            }
        }
        for (var, field) in [
            ("KEYWARD_QUOTA_FLUSH_MS", &mut cfg.last_used.quota_flush_interval_ms),
            ("KEYWARD_EVENTS_FLUSH_MS", &mut cfg.events.flush_interval_ms),
            ("KEYWARD_RETENTION_DAYS", &mut cfg.events.retention_days),
            ("KEYWARD_LIFECYCLE_INTERVAL_MS", &mut cfg.lifecycle.check_interval_ms),
        ] {
            if let Some(v) = env(var) {
                match v.parse() {
                    Ok(n) => *field = n,
                    Err(_) => problems.push(format!("{var}: {v:?} is not a whole number")),
                }
            }
        }
        let proxy_listen = flags.proxy_listen.clone().or_else(|| env("KEYWARD_PROXY_LISTEN"));
        if let Some(v) = proxy_listen {
            match v.parse() {
                Ok(a) => cfg.proxy.listen = Some(a),
                Err(_) => problems.push(format!("proxy listen address {v:?} is not an address such as 127.0.0.1:8081")),
            }
        }
        if let Some(v) = flags.upstream.clone().or_else(|| env("KEYWARD_UPSTREAM")) {
            cfg.proxy.upstream = Some(v);
        }
        if let Some(v) = &flags.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = &flags.data_dir {
            cfg.data_dir = v.clone();
        }
        if let Some(v) = &flags.log_format {
            cfg.log.format = v.clone();
        }
        if let Some(v) = &flags.log_level {
            cfg.log.level = v.clone();
        }
        problems.extend(cfg.problems());
        if !problems.is_empty() {
            bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
        }
        Ok(cfg)
    }

    /// Reads the TOML file. A syntax error stops here; otherwise every
    /// section is read on its own, so that each bad or unknown section is
    /// reported (in `problems`), not just the first.
    fn from_file(path: &Path, problems: &mut Vec<String>) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
        const KNOWN: &str = "listen, data_dir, log, pepper, http, cache, last_used, events, lifecycle, github, sinks, alerts, webhooks, geoip, proxy, encryption, tls, store, redis, rollups";
        let mut cfg = Config::default();
        for (key, value) in table {
            fn take<T: serde::de::DeserializeOwned>(v: toml::Value, into: &mut T) -> Result<(), toml::de::Error> {
                *into = v.try_into()?;
                Ok(())
            }
            let read = match key.as_str() {
                "listen" => take(value, &mut cfg.listen),
                "data_dir" => take(value, &mut cfg.data_dir),
                "log" => take(value, &mut cfg.log),
                "pepper" => take(value, &mut cfg.pepper),
                "http" => take(value, &mut cfg.http),
                "cache" => take(value, &mut cfg.cache),
                "last_used" => take(value, &mut cfg.last_used),
                "events" => take(value, &mut cfg.events),
                "lifecycle" => take(value, &mut cfg.lifecycle),
                "github" => take(value, &mut cfg.github),
                "sinks" => take(value, &mut cfg.sinks),
                "alerts" => take(value, &mut cfg.alerts),
                "webhooks" => take(value, &mut cfg.webhooks),
                "proxy" => take(value, &mut cfg.proxy),
                "geoip" => take(value, &mut cfg.geoip),
                "encryption" => take(value, &mut cfg.encryption),
                "tls" => take(value, &mut cfg.tls),
                "store" => take(value, &mut cfg.store),
                "redis" => take(value, &mut cfg.redis),
                "rollups" => take(value, &mut cfg.rollups),
                other => {
                    problems.push(format!("{other}: unknown key in {} (known: {KNOWN})", path.display()));
                    continue;
                }
            };
            if let Err(e) = read {
                problems.push(format!("{key}: {}", e.message()));
            }
        }
        Ok(cfg)
    }

    /// Every problem with the values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("listen: {:?} is not an address such as 127.0.0.1:8080", self.listen));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            p.push(format!("log.format: {:?} must be \"text\" or \"json\"", self.log.format));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!("log.level: {:?} is not a tracing filter such as \"info\"", self.log.level));
        }
        if let Some(h) = &self.pepper.hex
            && keyward_core::Pepper::from_hex(1, h).is_err()
        {
            p.push("pepper.hex: must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`".into());
        }
        if self.pepper.version == Some(0) {
            p.push("pepper.version: must be at least 1".into());
        }
        let current = self.pepper.version.unwrap_or(1);
        for (i, old) in self.pepper.previous.iter().enumerate() {
            if old.version == current || self.pepper.previous[..i].iter().any(|o| o.version == old.version) {
                p.push(format!("pepper.previous[{i}].version: {} is used twice", old.version));
            }
            match (&old.hex, &old.file) {
                (Some(h), None) if keyward_core::Pepper::from_hex(old.version, h).is_err() => {
                    p.push(format!("pepper.previous[{i}].hex: must be 64 hex characters"))
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => p.push(format!("pepper.previous[{i}]: give exactly one of hex and file")),
            }
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            p.push("store.url: must be a PostgreSQL URL such as postgres://keyward@db.internal:5432/keyward".into());
        }
        if self.store.max_staleness_ms < 100 {
            p.push("store.max_staleness_ms: must be at least 100".into());
        }
        if !(10..=60_000).contains(&self.store.poll_ms) {
            p.push("store.poll_ms: must be between 10 and 60000".into());
        }
        if self.store.url.is_some() && self.store.poll_ms as i64 >= self.store.max_staleness_ms {
            p.push("store.poll_ms: must be below store.max_staleness_ms, or a quiet cluster would look stale".into());
        }
        if let Some(url) = &self.redis.url
            && !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| url.starts_with(p))
        {
            p.push("redis.url: must be a Redis URL such as redis://127.0.0.1:6379/0 or unix:///run/redis.sock".into());
        }
        p.extend(self.rollups.problems());
        if !(10..=10_000).contains(&self.redis.timeout_ms) {
            p.push("redis.timeout_ms: must be between 10 and 10000".into());
        }
        if !(100..=60_000).contains(&self.store.leader_retry_ms) {
            p.push("store.leader_retry_ms: must be between 100 and 60000".into());
        }
        if !(1..=1000).contains(&self.store.pool_size) {
            p.push("store.pool_size: must be between 1 and 1000".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            p.push("http.max_body_bytes: must be between 1024 and 16777216".into());
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.http.max_bulk_body_bytes) {
            p.push("http.max_bulk_body_bytes: must be between 1024 and 268435456".into());
        }
        p.extend(self.http.problems());
        p.extend(self.cache.problems());
        if !(100..=3_600_000).contains(&self.last_used.flush_interval_ms) {
            p.push("last_used.flush_interval_ms: must be between 100 and 3600000".into());
        }
        if !(10..=60_000).contains(&self.last_used.quota_flush_interval_ms) {
            p.push("last_used.quota_flush_interval_ms: must be between 10 and 60000".into());
        }
        p.extend(self.events.problems());
        if self.lifecycle.check_interval_ms < 100 {
            p.push("lifecycle.check_interval_ms: must be at least 100".into());
        }
        if !(1..=3650).contains(&self.lifecycle.recheck_revoked_days) {
            p.push("lifecycle.recheck_revoked_days: must be between 1 and 3650".into());
        }
        for (i, k) in self.github.public_keys.iter().enumerate() {
            if let Err(e) = keyward_service::github::GithubKeys::parse(&[(k.id.clone(), k.pem.clone())]) {
                p.push(format!("github.public_keys[{i}].pem: not a P-256 public key in PEM ({e})"));
            }
        }
        p.extend(self.alerts.problems());
        p.extend(self.webhooks.problems());
        p.extend(self.geoip.problems());
        p.extend(self.proxy.problems());
        p.extend(self.tls.problems());
        let e = &self.encryption;
        if [e.master_key.is_some(), e.master_key_file.is_some(), e.master_key_command.is_some()]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            p.push(
                "encryption: give the master key in one way only (master_key, master_key_file or master_key_command)"
                    .into(),
            );
        }
        if let Some(h) = &e.master_key
            && keyward_core::seal::SecretKey::from_hex(h).is_err()
        {
            p.push(
                "encryption.master_key: must be 64 hex characters; make one with `keyward master-key generate`".into(),
            );
        }
        for (i, h) in e.previous.iter().enumerate() {
            if keyward_core::seal::SecretKey::from_hex(h).is_err() {
                p.push(format!("encryption.previous[{i}]: must be 64 hex characters"));
            }
        }
        for (i, s) in self.sinks.iter().enumerate() {
            p.extend(s.problems(&format!("sinks[{i}]")));
            if self.sinks[..i].iter().any(|o| o.name() == s.name()) {
                p.push(format!("sinks[{i}].name: {:?} is used twice", s.name()));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg: Config =
            toml::from_str("listen = \"nope\"\n[log]\nformat = \"xml\"\n[http]\nmax_body_bytes = 1\n").unwrap();
        let p = cfg.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("listen:") && p[1].starts_with("log.format:") && p[2].starts_with("http.max_body_bytes:")
        );
    }

    /// The configuration shown in the README parses and validates.
    #[test]
    fn readme_config_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let block = readme.split("```toml\n").nth(1).expect("a toml block").split("```").next().unwrap();
        let cfg: Config = toml::from_str(block).unwrap_or_else(|e| panic!("README config: {e}"));
        assert_eq!(cfg.sinks.len(), 5);
        assert_eq!(cfg.problems(), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `lisen`"), "{e}");
    }
}
