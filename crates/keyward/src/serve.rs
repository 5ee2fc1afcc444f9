//! `keyward init` and `keyward serve`: open the data dir (exclusively), the
//! store, the pepper and the service; bootstrap the first root key; run the
//! HTTP server until SIGINT/SIGTERM, then flush what is pending.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keyward_core::{KeyHasher, Pepper};
use keyward_events::EventPipeline;
use keyward_service::Service;
use keyward_store::KeyringError;
use keyward_store::Store;
use keyward_store::cipher::{self, Keyring, Purpose};
use keyward_store::datadir;
use keyward_store::events::{EventLog, SqliteEventLog};
use keyward_store::postgres::changes::ChangeFeed;
use keyward_store::postgres::{PgEventLog, PgStore};
use keyward_store::sqlite::SqliteStore;

use crate::config::{Config, Overrides};
use crate::duties::{self, Duties, Feed};

/// An opened data dir; the lock file is held for as long as this lives.
struct DataDir {
    service: Arc<Service>,
    events: Arc<keyward_events::EventPipeline>,
    /// The store, as the alerting side sees it.
    alert_store: Arc<dyn keyward_store::alerts::AlertStore>,
    _lock: File,
}

fn open(cfg: &Config) -> anyhow::Result<DataDir> {
    let dir = &cfg.data_dir;
    let loose = datadir::prepare(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    for warning in loose {
        tracing::warn!("{warning}");
    }
    let lock = datadir::create_private(&dir.join("lock"))
        .with_context(|| format!("creating lock file in {}", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!("another keyward process is using data dir {}; stop it first or pass another --data-dir", dir.display());
    }
    // A cluster keeps its keyring in the shared store (opened below); a single node in its data dir.
    let keyring = if cfg.store.postgres().is_some() { None } else { open_keyring(cfg)? };
    if cfg.store.postgres().is_some() && cfg.pepper.hex.is_none() && cfg.pepper.file.is_none() {
        bail!(
            "a shared store (KEYWARD_DATABASE_URL) needs the same pepper on every node: set KEYWARD_PEPPER \
             (64 hex characters; make one with `openssl rand -hex 32`) or KEYWARD_PEPPER_FILE on each node"
        );
    }
    let pepper = load_pepper(cfg, keyring.as_deref())?;
    let (store_key, events_key) = match &keyring {
        Some(k) => (Some(k.dek(Purpose::Store)), Some(k.dek(Purpose::Events))),
        None => (None, None),
    };
    let store_path = dir.join("keyward.db");
    let events_path = dir.join("events.db");
    if let Some(ring) = &keyring {
        for (path, purpose) in [(&store_path, Purpose::Store), (&events_path, Purpose::Events)] {
            encrypt_if_plain(path, &ring.dek(purpose))?;
        }
    }
    // On a shared store, the feed position is read before the state is loaded:
    // whatever changes in between is applied again, and nothing is missed.
    let (store, feed): (Arc<dyn Store>, _) = match cfg.store.postgres() {
        Some(url) => {
            let pg = PgStore::open(url, cfg.store.pool_size)
                .context("opening the PostgreSQL store (KEYWARD_DATABASE_URL / store.url)")?;
            let head = ChangeFeed::head(url).context("reading the change feed")?;
            tracing::info!(node = pg.node(), "Shared store: PostgreSQL; following the other nodes' changes.");
            let node = pg.node().to_owned();
            (Arc::new(pg), Some((ChangeFeed::new(url, head), node)))
        }
        None => (
            Arc::new(SqliteStore::open_with(&store_path, store_key.as_ref()).context("opening the embedded store")?),
            None,
        ),
    };
    let keyring = match cfg.store.postgres() {
        Some(_) => open_shared_keyring(cfg, store.clone())?,
        None => keyring,
    };
    let log: Arc<dyn EventLog> = match cfg.store.postgres() {
        Some(url) => Arc::new(PgEventLog::open(url, 4).context("opening the event log in PostgreSQL")?),
        None => {
            Arc::new(SqliteEventLog::open_with(&events_path, events_key.as_ref()).context("opening the event log")?)
        }
    };
    let events = EventPipeline::start(log, cfg.events.clone()).context("starting the event writer")?;
    let older = cfg
        .pepper
        .previous
        .iter()
        .map(|p| {
            let text = match (&p.hex, &p.file) {
                (Some(h), _) => h.clone(),
                (None, Some(f)) => {
                    std::fs::read_to_string(f).with_context(|| format!("reading pepper file {}", f.display()))?
                }
                (None, None) => anyhow::bail!("pepper.previous: give hex or file"),
            };
            Pepper::from_hex(p.version, &text).with_context(|| format!("previous pepper v{}", p.version))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let alert_store: Arc<dyn keyward_store::alerts::AlertStore> = store.clone();
    let service = Service::open(store, KeyHasher::new(&pepper, &older), cfg.cache.clone())?.with_events(events.clone());
    if let Some(ring) = &keyring {
        // A key file or command can name a new key while the server runs; an env value cannot.
        let e = &cfg.encryption;
        let source: Option<keyward_service::secrets::KeySource> =
            if e.master_key_file.is_some() || e.master_key_command.is_some() {
                let e = e.clone();
                Some(Arc::new(move || match e.master_key() {
                    Ok(Some(k)) => Ok(k),
                    Ok(None) => Err("no master key is configured".to_owned()),
                    Err(err) => Err(format!("{err:#}")),
                }))
            } else {
                None
            };
        service.attach_keyring(ring.clone(), source);
    }
    let service = Arc::new(service);
    if let Some((feed, node)) = feed {
        let cluster = cfg.store.cluster();
        service.join_cluster(&node, &cluster);
        let runtime = tokio::runtime::Handle::current();
        keyward_service::cluster::follow(service.clone(), feed, cluster, Default::default(), runtime)
            .context("starting the change follower")?;
    }
    Ok(DataDir { service, events, alert_store, _lock: lock })
}

/// The data dir's keyring when a master key is configured; without one, says
/// that data is not encrypted (and refuses a data dir that is).
pub(crate) fn open_keyring(cfg: &Config) -> anyhow::Result<Option<Arc<Keyring>>> {
    let dir = &cfg.data_dir;
    let Some(kek) = cfg.encryption.master_key()? else {
        if let Some(wanted) = cipher::encrypted_by(dir)? {
            return Err(KeyringError::MasterKeyMissing { dir: dir.display().to_string(), wanted }.into());
        }
        tracing::warn!(
            data_dir = %dir.display(),
            "Data at rest is NOT encrypted: key hashes, owner ids, IPs and the pepper are readable by anyone who can \
             read the data dir. Set KEYWARD_MASTER_KEY (make one with `keyward master-key generate`) to encrypt it."
        );
        return Ok(None);
    };
    let previous = cfg.encryption.previous_keys()?;
    let (ring, opened) = Keyring::open(dir, kek, &previous)?;
    if opened.created > 0 {
        tracing::info!(data_keys = opened.created, master_key_id = %ring.kek_id(), "Created data keys wrapped by the master key.");
    }
    if opened.rewrapped > 0 {
        tracing::info!(
            data_keys = opened.rewrapped,
            master_key_id = %ring.kek_id(),
            "Re-wrapped data keys found under a previous master key; the previous key is no longer needed."
        );
    }
    tracing::info!(master_key_id = %ring.kek_id(), "Data at rest is encrypted (AES-256, envelope).");
    Ok(Some(Arc::new(ring)))
}

/// A cluster's keyring, kept in its database, when a master key is configured.
fn open_shared_keyring(cfg: &Config, store: Arc<dyn Store>) -> anyhow::Result<Option<Arc<Keyring>>> {
    let Some(kek) = cfg.encryption.master_key()? else {
        tracing::info!(
            "No master key: recoverable keys are off. PostgreSQL's data is as protected as the database itself \
             (use its encryption at rest and TLS)."
        );
        return Ok(None);
    };
    let previous = cfg.encryption.previous_keys()?;
    let (ring, opened) = Keyring::open_shared(store, kek, &previous)?;
    if opened.created > 0 {
        tracing::info!(master_key_id = %ring.kek_id(), "Created the cluster's data keys, wrapped by the master key.");
    }
    if opened.rewrapped > 0 {
        tracing::info!(master_key_id = %ring.kek_id(), "Re-wrapped the cluster's data keys under the current master key.");
    }
    tracing::info!(master_key_id = %ring.kek_id(), "The cluster's keyring is open; every node must use this master key.");
    Ok(Some(Arc::new(ring)))
}

/// A data dir that gets a master key after it ran without one: its plain
/// database files are encrypted in place before they are opened.
fn encrypt_if_plain(path: &Path, dek: &keyward_core::seal::SecretKey) -> anyhow::Result<()> {
    if !cipher::is_plain_sqlite(path) {
        return Ok(());
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(path = %path.display(), bytes = size, "Encrypting a plain database file; this rewrites it once.");
    let started = std::time::Instant::now();
    cipher::encrypt_in_place(path, dek).with_context(|| format!("encrypting {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        ms = started.elapsed().as_millis() as u64,
        "Encrypted. The old plain pages may survive in free disk blocks: wipe or re-provision the volume for full protection."
    );
    Ok(())
}

/// The AEAD label the pepper is sealed under.
const PEPPER_AAD: &[u8] = b"keyward pepper";

/// The pepper from hex, from its file, or made and saved on first start. With
/// a keyring, the data dir's pepper is sealed in `pepper.enc` (a plain
/// `pepper` left from before encryption is sealed, then removed).
pub(crate) fn load_pepper(cfg: &Config, keyring: Option<&Keyring>) -> anyhow::Result<Pepper> {
    let version = cfg.pepper.version.unwrap_or(1);
    if let Some(h) = &cfg.pepper.hex {
        return Pepper::from_hex(version, h).context("reading the pepper from KEYWARD_PEPPER / pepper.hex");
    }
    let path = cfg.pepper.file.clone().unwrap_or_else(|| cfg.data_dir.join("pepper"));
    if let (Some(ring), None) = (keyring, &cfg.pepper.file) {
        let sealed_path = cfg.data_dir.join("pepper.enc");
        let dek = ring.dek(Purpose::Secrets);
        if sealed_path.exists() {
            let text =
                std::fs::read_to_string(&sealed_path).with_context(|| format!("reading {}", sealed_path.display()))?;
            let bytes =
                hex::decode(text.trim()).ok().and_then(|b: Vec<u8>| dek.open(PEPPER_AAD, &b).ok()).with_context(
                    || format!("{} is damaged; restore it from the data dir's backup", sealed_path.display()),
                )?;
            let bytes: [u8; 32] = bytes.as_slice().try_into().context("the sealed pepper is not 32 bytes")?;
            return Ok(Pepper::new(version, bytes));
        }
        let pepper = if path.exists() {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading pepper file {}", path.display()))?;
            Pepper::from_hex(version, &text).with_context(|| format!("pepper file {}", path.display()))?
        } else {
            Pepper::generate(version)
        };
        write_secret(&sealed_path, &hex::encode(dek.seal(PEPPER_AAD, pepper.expose())))
            .with_context(|| format!("writing {}", sealed_path.display()))?;
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing the plain {}", path.display()))?;
            tracing::info!(path = %sealed_path.display(), "Sealed the pepper under the data dir's keys; the plain file is removed.");
        }
        return Ok(pepper);
    }
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading pepper file {}", path.display()))?;
        return Pepper::from_hex(version, &text).with_context(|| format!("pepper file {}", path.display()));
    }
    let pepper = Pepper::generate(version);
    write_secret(&path, &pepper.to_hex()).with_context(|| format!("writing pepper file {}", path.display()))?;
    tracing::info!(path = %path.display(), "Created a new pepper; back it up with the data dir.");
    Ok(pepper)
}

pub(crate) fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

pub(crate) fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| "info".into());
    // Colour only for a person at a terminal, never into a redirected log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if cfg.log.format == "json" {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// `keyward init`: prints the new admin root key alone on stdout.
pub fn init(flags: &Overrides, generate_master_key: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = Config::load(flags)?;
    init_tracing(&cfg);
    if let Some(file) = generate_master_key {
        let e = &cfg.encryption;
        if e.master_key.is_some() || e.master_key_file.is_some() || e.master_key_command.is_some() {
            bail!("--generate-master-key: a master key is already configured; drop one or the other");
        }
        // Before anything exists, compare absolute paths (symlinks resolved where they exist).
        let abs =
            |p: &Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p)).unwrap_or_else(|_| p.to_owned());
        let dir = abs(&cfg.data_dir);
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if abs(parent).starts_with(&dir) {
            bail!("--generate-master-key: keep the master key outside the data dir ({})", dir.display());
        }
        if cipher::encrypted_by(&cfg.data_dir)?.is_some() || cfg.data_dir.join("keyward.db").exists() {
            bail!(
                "data dir {} already exists; --generate-master-key is for a new one (give an existing dir a key with KEYWARD_MASTER_KEY_FILE at the next start)",
                cfg.data_dir.display()
            );
        }
        let key = keyward_core::seal::SecretKey::generate();
        write_secret(file, key.to_hex().as_str()).with_context(|| {
            format!("writing the master key to {} (its directory must exist, the file must not)", file.display())
        })?;
        eprintln!(
            "Wrote a new master key (id {}) to {}: keep it safe and apart from the data dir.",
            key.id(),
            file.display()
        );
        cfg.encryption.master_key_file = Some(file.to_owned());
    }
    runtime()?.block_on(async {
        let dd = open(&cfg)?;
        match dd.service.bootstrap().await? {
            Some(root) => {
                dd.events.shutdown();
                println!("{}", root.key);
                eprintln!(
                    "Created data dir {} with an admin root key (id {}). It is shown only this once: store it safely.",
                    cfg.data_dir.display(),
                    root.view.id
                );
                Ok(())
            }
            None if cfg.store.postgres().is_some() => {
                dd.events.shutdown();
                bail!(
                    "the cluster's database (KEYWARD_DATABASE_URL) is already initialized; create more root keys with POST /v1/root-keys"
                )
            }
            None => {
                dd.events.shutdown();
                bail!(
                    "data dir {} is already initialized; create more root keys with POST /v1/root-keys",
                    cfg.data_dir.display()
                )
            }
        }
    })
}

/// `keyward serve`.
pub fn serve(flags: &Overrides) -> anyhow::Result<()> {
    let cfg = Config::load(flags)?;
    init_tracing(&cfg);
    runtime()?.block_on(run(cfg))
}

/// Tests that move time (rule learning periods, quiet periods) write a skew
/// in ms to the file named by `KEYWARD_TEST_CLOCK_FILE`; it is read every 20 ms.
fn follow_test_clock() {
    let Some(path) = std::env::var_os("KEYWARD_TEST_CLOCK_FILE") else { return };
    tracing::warn!(path = %Path::new(&path).display(), "TEST CLOCK: this process's clock follows a file. Never in production.");
    let read = move || std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<i64>().ok());
    if let Some(ms) = read() {
        keyward_core::time::set_skew_ms(ms);
    }
    let _ = std::thread::Builder::new().name("keyward-test-clock".into()).spawn(move || {
        loop {
            if let Some(ms) = read() {
                keyward_core::time::set_skew_ms(ms);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    follow_test_clock();
    let dd = open(&cfg)?;
    let service = dd.service.clone();
    if let Some(root) = service.bootstrap().await? {
        println!("{}", root.key);
        eprintln!("First start: created an admin root key (id {}), printed above once. Store it safely.", root.view.id);
    }
    if let Some(url) = &cfg.redis.url {
        let timeout = Duration::from_millis(cfg.redis.timeout_ms);
        let redis = keyward_limits::RedisLimiter::connect(url, &cfg.redis.prefix, timeout).await.with_context(|| {
            "connecting to Redis (KEYWARD_REDIS_URL / redis.url); start it, or drop the setting to keep limits per node"
        })?;
        tracing::info!(on_unavailable = ?cfg.redis.on_unavailable, "Rate limits and quotas are shared on Redis.");
        service.share_limits(redis, cfg.redis.on_unavailable);
    }
    let addr: SocketAddr = cfg.listen.parse().context("listen address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}; is another server on that port?"))?;
    let local = listener.local_addr()?;
    let http = cfg.http.clone();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    keyward_server::metrics_catalog::describe();
    // The exporter keeps every histogram sample until it is drained; with no
    // scrape of /metrics they would pile up without bound (about 8 bytes per
    // request, found in issue 11), so drain them every 5 s.
    let upkeep = every(Duration::from_secs(5), {
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            async move { metrics.run_upkeep() }
        }
    });
    let github_keys = keyward_service::github::GithubKeys::parse(
        &cfg.github.public_keys.iter().map(|k| (k.id.clone(), k.pem.clone())).collect::<Vec<_>>(),
    )
    .map_err(anyhow::Error::msg)
    .context("github.public_keys")?;
    if let Some(geo) =
        keyward_events::geo::Geo::open(&cfg.geoip).map_err(anyhow::Error::msg).context("opening [geoip]")?
    {
        tracing::info!("IP enrichment on: events carry the country and network of their source.");
        service.attach_geo(Arc::new(geo));
    }
    // The sinks and the rules engine: here, or on the cluster's leader only.
    let duties: Arc<parking_lot::Mutex<Option<Duties>>> = Arc::default();
    let leader = match cfg.store.postgres() {
        None => {
            let d = duties::start(&cfg, &service, &dd.events, &dd.alert_store, Feed::Writer).await?;
            *duties.lock() = Some(d);
            None
        }
        Some(url) => Some(duties::lead(
            url.to_owned(),
            cfg.clone(),
            service.clone(),
            dd.events.clone(),
            dd.alert_store.clone(),
            duties.clone(),
        )),
    };
    let deliverer = keyward_alerts::Deliverer::start(dd.alert_store.clone(), cfg.webhooks.clone())
        .context("starting webhook delivery")?;
    let tls = match cfg.tls.enabled() {
        true => {
            let tls = keyward_server::tls::Tls::load(&cfg.tls, &[b"http/1.1"]).context("loading [tls]")?;
            Some(Arc::new(tls))
        }
        false => None,
    };
    let tls_watch = tls.as_ref().map(|t| t.watch());
    let ops = keyward_server::Ops {
        metrics: Some(metrics),
        github_keys,
        client_cert_for_root_keys: cfg.tls.root_keys_need_client_cert(),
    };
    let app = keyward_server::api(service.clone(), &http, ops);

    let flusher = every(Duration::from_millis(cfg.last_used.flush_interval_ms), {
        let service = service.clone();
        move || {
            let service = service.clone();
            async move {
                if let Err(e) = service.flush_last_used().await {
                    tracing::error!(error = %e, "Writing last-use marks failed; will retry.");
                }
            }
        }
    });
    let quota_flusher = every(Duration::from_millis(cfg.last_used.quota_flush_interval_ms), {
        let service = service.clone();
        move || {
            let service = service.clone();
            async move {
                if let Err(e) = service.flush_quotas().await {
                    tracing::error!(error = %e, "Writing quota states failed; will retry.");
                }
            }
        }
    });

    let lifecycle = {
        let service = service.clone();
        let every = Duration::from_millis(cfg.lifecycle.check_interval_ms);
        let days = cfg.lifecycle.recheck_revoked_days;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = service.record_expiry_reminders().await {
                    tracing::error!(error = %e, "Recording expiry reminders failed; will retry.");
                }
                match service.recheck_revoked(days).await {
                    Ok((_, 0)) => {}
                    Ok((checked, failed)) => {
                        tracing::error!(checked, failed, "Revocation re-check found keys not rejected.")
                    }
                    Err(e) => tracing::error!(error = %e, "Re-checking revoked keys failed; will retry."),
                }
            }
        })
    };

    // One stop signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let proxy = match cfg.proxy.listen {
        Some(paddr) => {
            let gateway = keyward_gateway::Gateway::new(service.clone(), &cfg.proxy).map_err(anyhow::Error::msg)?;
            let plistener = tokio::net::TcpListener::bind(paddr)
                .await
                .with_context(|| format!("binding the proxy on {paddr}; is another server on that port?"))?;
            tracing::info!(proxy_listen = %plistener.local_addr()?, "The gateway is forwarding.");
            let mut stop = stop_rx.clone();
            let grace = Duration::from_millis(http.shutdown_grace_ms);
            // The same certificate, with h2 offered; client certificates only
            // when every connection must have one (root keys do not pass here).
            let ptls = match cfg.tls.enabled() {
                true => {
                    let mut pcfg = cfg.tls.clone();
                    if pcfg.client_auth != keyward_server::tls::ClientAuth::Required {
                        pcfg.client_ca = None;
                    }
                    let tls = keyward_server::tls::Tls::load(&pcfg, &[b"h2", b"http/1.1"])
                        .context("loading [tls] for the proxy")?;
                    let tls = Arc::new(tls);
                    let _watch = tls.watch();
                    Some(tls)
                }
                false => None,
            };
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                keyward_gateway::proxy::serve(plistener, Arc::new(gateway), ptls, stopped, grace).await
            }))
        }
        None => None,
    };
    let scheme = if cfg.tls.enabled() { "https" } else { "http" };
    tracing::info!(listen = %local, scheme, data_dir = %cfg.data_dir.display(), "keyward is serving.");
    let stopping = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    keyward_server::listen::serve(listener, app, &http, tls, stopping).await.context("serving HTTP")?;
    if let Some(w) = tls_watch {
        w.abort();
    }
    if let Some(p) = proxy {
        let _ = p.await;
    }
    flusher.abort();
    quota_flusher.abort();
    upkeep.abort();
    lifecycle.abort();
    let n = service.flush_last_used().await?;
    let events = dd.events.clone();
    tokio::task::spawn_blocking(move || events.shutdown()).await.ok();
    // After the events: the engine sees the last batch, writes its alerts, then stops.
    if let Some(l) = leader {
        l.abort();
    }
    let running = duties.lock().take();
    if let Some(d) = running {
        tokio::task::spawn_blocking(move || d.stop()).await.ok();
    }
    tokio::task::spawn_blocking(move || deliverer.stop()).await.ok();
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        last_used_marks = n,
        events_written = dd.events.stats().written.load(Relaxed),
        events_dropped = dd.events.stats().dropped.load(Relaxed),
        "Stopped; pending writes flushed."
    );
    // Everything is on disk: the process exits now without freeing the key
    // index piece by piece (0.8 s for a million keys, 2.4 s before the index
    // was compacted: most of the 3.6 s a stop took with 1M keys, issue 8).
    // The data-dir lock is released by the exit itself.
    std::mem::forget(service);
    std::mem::forget(dd);
    Ok(())
}

/// Runs `job` every `period` (a late tick is not made up), until aborted.
fn every<F, Fut>(period: Duration, job: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            job().await;
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("Shutdown requested; finishing requests in flight.");
}
