//! What runs once per deployment: the exporters (sinks), the rollups and the rules engine.
//! On a single node they run in the process, the engine fed by the event
//! writer. In a cluster they run on the leader only (the node holding
//! `store::postgres::leader`'s lock): its sinks export every node's events
//! from the shared log, and its engine reads that log too, so each event is
//! exported and evaluated once for the cluster, and each alert fires once.
//! When the leader dies its lock is released and another node takes over
//! from the durable cursors (at least once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use keyward_events::{EventPipeline, Sinks};
use keyward_service::Service;
use keyward_store::alerts::AlertStore;
use keyward_store::events::EventLog;

use crate::config::Config;

/// The rules engine's position in a shared log.
const ALERTS_CURSOR: &str = "_alerts";

/// The running exporters and engine.
pub struct Duties {
    sinks: Arc<Sinks>,
    roller: Option<keyward_events::rollups::Roller>,
    monitor: Option<Arc<keyward_alerts::Monitor>>,
    tail: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    watch: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Where the engine takes events from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// This node's event writer, as it writes (a single node).
    Writer,
    /// The shared log, every node's events (the leader of a cluster).
    SharedLog,
}

/// Starts the sinks and, when alerting is on, the rules engine.
pub async fn start(
    cfg: &Config,
    service: &Arc<Service>,
    events: &Arc<EventPipeline>,
    store: &Arc<dyn AlertStore>,
    feed: Feed,
) -> anyhow::Result<Duties> {
    let host = cfg.events.hostname.clone().unwrap_or_else(hostname);
    // Sinks read up to the newest event they know of: this node's writer's on
    // a single node; on the leader, the shared log's, read by a watcher.
    let (stats, watch) = match feed {
        Feed::Writer => (events.shared_stats(), None),
        Feed::SharedLog => {
            let stats = Arc::new(keyward_events::PipelineStats::default());
            (stats.clone(), Some(watch_newest(events.log().clone(), stats).context("starting the log watcher")?))
        }
    };
    let sinks = Arc::new(
        Sinks::start(&cfg.sinks, events.log().clone(), stats, host, Some(store.clone()))
            .context("starting the sinks")?,
    );
    service.attach_sinks(sinks.clone());
    let roller = match cfg.rollups.enabled {
        true => Some(
            keyward_events::rollups::Roller::start(events.log().clone(), cfg.rollups.clone())
                .context("starting the rollups")?,
        ),
        false => None,
    };
    if !cfg.alerts.enabled {
        tracing::warn!("Alerting is off (alerts.enabled = false): no rule runs.");
        return Ok(Duties { sinks, roller, monitor: None, tail: None, watch });
    }
    let responder = keyward_service::alerts::AutoResponse::new(service, tokio::runtime::Handle::current());
    let monitor = keyward_alerts::Monitor::start(store.clone(), cfg.alerts.clone(), Some(responder))
        .context("starting the alert monitor")?;
    let tail = match feed {
        Feed::Writer => {
            events.observe(monitor.clone());
            None
        }
        Feed::SharedLog => {
            let log = events.log().clone();
            let start = tokio::task::spawn_blocking({
                let log = log.clone();
                move || -> keyward_store::Result<i64> {
                    match log.cursor(ALERTS_CURSOR)? {
                        Some(at) => Ok(at),
                        None => log.max_id(),
                    }
                }
            })
            .await?
            .context("reading the rules engine's position in the event log")?;
            Some(tail(log, monitor.clone(), start).context("starting the rules feed")?)
        }
    };
    service.attach_monitor(monitor.clone());
    service.reload_rules().await.context("reading the alert rules")?;
    Ok(Duties { sinks, roller, monitor: Some(monitor), tail, watch })
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

/// Keeps `stats.last_id` at the shared log's newest id (every 100 ms), for the sinks.
fn watch_newest(
    log: Arc<dyn EventLog>,
    stats: Arc<keyward_events::PipelineStats>,
) -> std::io::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new().name("keyward-log-watch".into()).spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match log.max_id() {
                Ok(id) => stats.last_id.store(id, Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "Reading the shared log's newest id failed."),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })?;
    Ok((stop, thread))
}

/// Feeds the engine every event of the shared log after `from`, in order,
/// and keeps its position there.
fn tail(
    log: Arc<dyn EventLog>,
    monitor: Arc<keyward_alerts::Monitor>,
    from: i64,
) -> std::io::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    use keyward_events::EventObserver;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("keyward-alerts-tail".into())
        .spawn(move || {
            let mut at = from;
            while !flag.load(Ordering::Relaxed) {
                match log.after(at, 2_000) {
                    Ok(batch) if batch.is_empty() => std::thread::sleep(Duration::from_millis(100)),
                    Ok(batch) => {
                        at = batch.last().map_or(at, |e| e.id);
                        monitor.written(batch);
                        if let Err(e) = log.set_cursor(ALERTS_CURSOR, at, keyward_core::time::now_ms()) {
                            tracing::warn!(error = %e, "Could not save the rules engine's position; it may see events again.");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading the shared event log for the rules failed; retrying.");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        ?;
    Ok((stop, thread))
}

impl Duties {
    /// Stops them, the engine after its feed (it writes what it has), then the sinks.
    pub fn stop(self) {
        if let Some((flag, thread)) = self.tail {
            flag.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        if let Some(m) = self.monitor {
            m.stop();
        }
        if let Some(r) = self.roller {
            r.stop();
        }
        self.sinks.stop(Duration::from_secs(3));
        if let Some((flag, thread)) = self.watch {
            flag.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

/// In a cluster: tries for the leader lock every `retry`; once held, runs the
/// duties until the lock is lost (then stops them: another node takes over).
pub fn lead(
    url: String,
    cfg: Config,
    service: Arc<Service>,
    events: Arc<EventPipeline>,
    store: Arc<dyn AlertStore>,
    held: Arc<parking_lot::Mutex<Option<Duties>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let retry = Duration::from_millis(cfg.store.leader_retry_ms);
        loop {
            let u = url.clone();
            let taken = tokio::task::spawn_blocking(move || keyward_store::postgres::leader::Leadership::try_take(&u))
                .await
                .ok()
                .and_then(|r| r.map_err(|e| tracing::warn!(error = %e, "Could not ask for the leader lock.")).ok())
                .flatten();
            let Some(leadership) = taken else {
                tokio::time::sleep(retry).await;
                continue;
            };
            tracing::info!("This node leads the cluster: it runs the sinks and the rules engine.");
            match start(&cfg, &service, &events, &store, Feed::SharedLog).await {
                Ok(d) => *held.lock() = Some(d),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "Could not start the leader's duties; giving the lead up.");
                    return;
                }
            }
            let mut lock = Some(leadership);
            loop {
                tokio::time::sleep(retry).await;
                // A check that could not run counts as the lock lost (its connection goes with it).
                let alive = match lock.take() {
                    Some(mut l) => match tokio::task::spawn_blocking(move || (l.holds(), l)).await {
                        Ok((alive, back)) => {
                            lock = Some(back);
                            alive
                        }
                        Err(_) => false,
                    },
                    None => false,
                };
                if !alive {
                    tracing::warn!(
                        "Lost the leader lock: stopping the sinks and the rules engine; another node takes over."
                    );
                    let running = held.lock().take();
                    if let Some(d) = running {
                        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
                    }
                    // The service keeps its first sinks and engine (attached once):
                    // this node stays a follower until it restarts.
                    return;
                }
            }
        }
    })
}
