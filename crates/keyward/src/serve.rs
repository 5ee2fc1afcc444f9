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
use keyward_events::{EventPipeline, Sinks};
use keyward_service::Service;
use keyward_store::events::SqliteEventLog;
use keyward_store::sqlite::SqliteStore;

use crate::config::{Config, Overrides};

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
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let lock = File::create(dir.join("lock")).with_context(|| format!("creating lock file in {}", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!("another keyward process is using data dir {}; stop it first or pass another --data-dir", dir.display());
    }
    let pepper = load_pepper(cfg)?;
    let store = Arc::new(SqliteStore::open(&dir.join("keyward.db")).context("opening the embedded store")?);
    let log = SqliteEventLog::open(&dir.join("events.db")).context("opening the event log")?;
    let events = EventPipeline::start(Arc::new(log), cfg.events.clone()).context("starting the event writer")?;
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
    Ok(DataDir { service: Arc::new(service), events, alert_store, _lock: lock })
}

/// The pepper from hex, from its file, or made and saved on first start.
fn load_pepper(cfg: &Config) -> anyhow::Result<Pepper> {
    let version = cfg.pepper.version.unwrap_or(1);
    if let Some(h) = &cfg.pepper.hex {
        return Pepper::from_hex(version, h).context("reading the pepper from KEYWARD_PEPPER / pepper.hex");
    }
    let path = cfg.pepper.file.clone().unwrap_or_else(|| cfg.data_dir.join("pepper"));
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading pepper file {}", path.display()))?;
        return Pepper::from_hex(version, &text).with_context(|| format!("pepper file {}", path.display()));
    }
    let pepper = Pepper::generate(version);
    write_secret(&path, &pepper.to_hex()).with_context(|| format!("writing pepper file {}", path.display()))?;
    tracing::info!(path = %path.display(), "Created a new pepper; back it up with the data dir.");
    Ok(pepper)
}

fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn init_tracing(cfg: &Config) {
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
pub fn init(flags: &Overrides) -> anyhow::Result<()> {
    let cfg = Config::load(flags)?;
    init_tracing(&cfg);
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
    let host = cfg.events.hostname.clone().unwrap_or_else(hostname);
    let sinks = Arc::new(
        Sinks::start(&cfg.sinks, dd.events.log().clone(), dd.events.shared_stats(), host, Some(dd.alert_store.clone()))
            .context("starting the sinks")?,
    );
    let github_keys = keyward_service::github::GithubKeys::parse(
        &cfg.github.public_keys.iter().map(|k| (k.id.clone(), k.pem.clone())).collect::<Vec<_>>(),
    )
    .map_err(anyhow::Error::msg)
    .context("github.public_keys")?;
    service.attach_sinks(sinks.clone());
    if let Some(geo) =
        keyward_events::geo::Geo::open(&cfg.geoip).map_err(anyhow::Error::msg).context("opening [geoip]")?
    {
        tracing::info!("IP enrichment on: events carry the country and network of their source.");
        service.attach_geo(Arc::new(geo));
    }
    // The rules engine takes the written stream from the event writer; webhooks go out from the outbox.
    let monitor = if cfg.alerts.enabled {
        let responder = keyward_service::alerts::AutoResponse::new(&service, tokio::runtime::Handle::current());
        let monitor = keyward_alerts::Monitor::start(dd.alert_store.clone(), cfg.alerts.clone(), Some(responder))
            .context("starting the alert monitor")?;
        dd.events.observe(monitor.clone());
        service.attach_monitor(monitor.clone());
        service.reload_rules().await.context("reading the alert rules")?;
        Some(monitor)
    } else {
        tracing::warn!("Alerting is off (alerts.enabled = false): no rule runs.");
        None
    };
    let deliverer = keyward_alerts::Deliverer::start(dd.alert_store.clone(), cfg.webhooks.clone())
        .context("starting webhook delivery")?;
    let ops = keyward_server::Ops { metrics: Some(metrics), github_keys };
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
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                keyward_gateway::proxy::serve(plistener, Arc::new(gateway), stopped, grace).await
            }))
        }
        None => None,
    };
    tracing::info!(listen = %local, data_dir = %cfg.data_dir.display(), "keyward is serving.");
    let stopping = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    keyward_server::listen::serve(listener, app, &http, stopping).await.context("serving HTTP")?;
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
    // After the events: the monitor sees the last batch, writes its alerts, then stops.
    if let Some(m) = monitor {
        tokio::task::spawn_blocking(move || m.stop()).await.ok();
    }
    tokio::task::spawn_blocking(move || deliverer.stop()).await.ok();
    let sinks2 = sinks.clone();
    tokio::task::spawn_blocking(move || sinks2.stop(Duration::from_secs(3))).await.ok();
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

/// The machine's host name, for exported events.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_owned())
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
