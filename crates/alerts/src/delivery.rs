//! Webhook delivery: a thread that takes due deliveries from the store's
//! outbox, signs each attempt per Standard Webhooks (same `webhook-id` on
//! every retry, a fresh timestamp and signature), POSTs it, and records the
//! attempt. A 2xx delivers; anything else (or no answer within the timeout)
//! retries with exponential backoff and ±20 % jitter, up to `max_attempts`
//! over hours, then the delivery is dead (kept, visible, redeliverable).
//! The outbox is durable: a restart resumes where it stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_core::time::now_ms;
use keyward_store::alerts::{AlertStore, AttemptNext, AttemptRow, DueDelivery};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::webhook;

/// The `[webhooks]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How often the outbox is looked at, ms. Default 100.
    pub poll_ms: u64,
    /// Longest wait for an endpoint's answer, ms. Default 10000.
    pub timeout_ms: u64,
    /// Attempts before a delivery is dead. Default 15 (about 16 hours with the defaults).
    pub max_attempts: u32,
    /// Wait before the first retry, ms; each later one doubles. Default 5000.
    pub first_retry_ms: i64,
    /// Longest wait between two attempts, ms. Default 21600000 (6 h).
    pub max_retry_ms: i64,
    /// Deliveries sent at once. Default 4.
    pub concurrency: usize,
    /// Where `mailto:` endpoints are sent from (`[webhooks.smtp]`); none: they fail, visibly.
    pub smtp: Option<SmtpConfig>,
}

/// An SMTP relay for `mailto:` endpoints.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default 587 (submission with STARTTLS).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default), `tls` (implicit, usually port 465) or `none` (a local relay only).
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. `keyward@example.com`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .finish()
    }
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_tls() -> String {
    "starttls".into()
}

impl SmtpConfig {
    fn transport(&self) -> Result<lettre::SmtpTransport, String> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Tls, TlsParameters};
        let mut b = match self.tls.as_str() {
            "none" => lettre::SmtpTransport::builder_dangerous(&self.host),
            "tls" => lettre::SmtpTransport::relay(&self.host).map_err(|e| e.to_string())?,
            _ => lettre::SmtpTransport::starttls_relay(&self.host).map_err(|e| e.to_string())?,
        }
        .port(self.port)
        .timeout(Some(Duration::from_secs(10)));
        if self.tls == "none" {
            b = b.tls(Tls::None);
        } else if self.tls == "tls" {
            let params = TlsParameters::new(self.host.clone()).map_err(|e| e.to_string())?;
            b = b.tls(Tls::Wrapper(params));
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(b.build())
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            poll_ms: 100,
            timeout_ms: 10_000,
            max_attempts: 15,
            first_retry_ms: 5_000,
            max_retry_ms: 6 * 3_600_000,
            concurrency: 4,
            smtp: None,
        }
    }
}

impl DeliveryConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(10..=60_000).contains(&self.poll_ms) {
            p.push("webhooks.poll_ms: must be between 10 and 60000".into());
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            p.push("webhooks.timeout_ms: must be between 100 and 120000".into());
        }
        if !(1..=50).contains(&self.max_attempts) {
            p.push("webhooks.max_attempts: must be between 1 and 50".into());
        }
        if self.first_retry_ms < 10 || self.max_retry_ms < self.first_retry_ms {
            p.push("webhooks: first_retry_ms must be at least 10 and max_retry_ms at least first_retry_ms".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            p.push("webhooks.concurrency: must be between 1 and 64".into());
        }
        if let Some(s) = &self.smtp {
            if !matches!(s.tls.as_str(), "starttls" | "tls" | "none") {
                p.push("webhooks.smtp.tls: must be starttls, tls or none".into());
            }
            if s.from.parse::<lettre::message::Mailbox>().is_err() {
                p.push("webhooks.smtp.from: not an email address".into());
            }
            if s.username.is_some() != s.password.is_some() {
                p.push("webhooks.smtp: give both username and password, or neither".into());
            }
        }
        p
    }

    /// The wait after attempt `n` (from 1) failed, before jitter.
    pub fn backoff_ms(&self, n: u32) -> i64 {
        let doubled = self.first_retry_ms.saturating_mul(1i64 << (n.saturating_sub(1)).min(40));
        doubled.min(self.max_retry_ms)
    }
}

/// ±20 % of `ms`, from the OS's randomness.
fn jitter(ms: i64) -> i64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let unit = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    (ms as f64 * (0.8 + 0.4 * unit)) as i64
}

/// A one-line summary of a message for chat (`format = "slack"`).
pub fn chat_text(body: &Value) -> String {
    let kind = body["type"].as_str().unwrap_or("event");
    let data = &body["data"];
    match kind.split('.').next() {
        Some("alert") => {
            let subject = match data["subject"]["kind"].as_str() {
                Some("ip") => format!("address {}", data["subject"]["ip"].as_str().unwrap_or("?")),
                _ => format!(
                    "key {} ({})",
                    data["subject"]["key_id"].as_str().unwrap_or("?"),
                    data["subject"]["key_hint"].as_str().unwrap_or("-")
                ),
            };
            format!(
                "keyward {kind}: [{}] {} — {} for {subject} (alert {})",
                data["severity"].as_str().unwrap_or("?"),
                data["rule"].as_str().unwrap_or("?"),
                data["detail"].as_str().unwrap_or(""),
                data["id"].as_str().unwrap_or("?")
            )
        }
        _ => format!(
            "keyward {kind}: key {} ({}){}",
            data["key_id"].as_str().unwrap_or("?"),
            data["key_hint"].as_str().unwrap_or("-"),
            data["reason"].as_str().map(|r| format!(", reason {r}")).unwrap_or_default()
        ),
    }
}

/// A mail for a `mailto:` endpoint: the summary as subject, the message as body.
fn send_mail(
    smtp: Option<&(lettre::SmtpTransport, SmtpConfig)>,
    to: &str,
    d: &DueDelivery,
) -> (Option<u16>, Option<String>) {
    use lettre::Transport;
    let Some((transport, cfg)) = smtp else {
        return (None, Some("no SMTP relay configured ([webhooks.smtp])".into()));
    };
    let summary = chat_text(&d.body);
    let body = format!(
        "{summary}\n\nwebhook-id: {}\n\n{}\n",
        d.delivery.message_id,
        serde_json::to_string_pretty(&d.body).unwrap_or_default()
    );
    let mail = (|| {
        lettre::Message::builder()
            .from(cfg.from.parse().map_err(|e: lettre::address::AddressError| e.to_string())?)
            .to(to.parse().map_err(|e: lettre::address::AddressError| e.to_string())?)
            .subject(format!("[keyward] {}", summary.chars().take(150).collect::<String>()))
            .body(body)
            .map_err(|e| e.to_string())
    })();
    match mail.map(|m| transport.send(&m)) {
        // An SMTP 2xx reads as a delivered attempt.
        Ok(Ok(r)) if r.is_positive() => (Some(200), None),
        Ok(Ok(r)) => (None, Some(format!("SMTP {}: {}", r.code(), r.message().collect::<Vec<_>>().join(" ")))),
        Ok(Err(e)) => (None, Some(e.to_string().chars().take(300).collect())),
        Err(e) => (None, Some(e)),
    }
}

/// The running delivery thread.
pub struct Deliverer {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Deliverer {
    pub fn start(store: Arc<dyn AlertStore>, cfg: DeliveryConfig) -> std::io::Result<Deliverer> {
        let stop = Arc::new(AtomicBool::new(false));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirects(0)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build();
        let flag = stop.clone();
        let smtp = match &cfg.smtp {
            Some(s) => Some((s.transport().map_err(std::io::Error::other)?, s.clone())),
            None => None,
        };
        let thread = std::thread::Builder::new()
            .name("keyward-webhooks".into())
            .spawn(move || run(store.as_ref(), &agent, smtp.as_ref(), &cfg, &flag))?;
        Ok(Deliverer { stop, thread: Mutex::new(Some(thread)) })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

type Smtp = (lettre::SmtpTransport, SmtpConfig);

fn run(store: &dyn AlertStore, agent: &ureq::Agent, smtp: Option<&Smtp>, cfg: &DeliveryConfig, stop: &AtomicBool) {
    let mut last_gauge = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = match store.due_deliveries(now_ms(), 64) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "Reading the webhook outbox failed; retrying.");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if last_gauge.elapsed() > Duration::from_secs(5) {
            if let Ok(n) = store.pending_deliveries() {
                metrics::gauge!("keyward_webhook_deliveries_pending").set(n as f64);
            }
            last_gauge = Instant::now();
        }
        if due.is_empty() {
            std::thread::sleep(Duration::from_millis(cfg.poll_ms));
            continue;
        }
        for chunk in due.chunks(cfg.concurrency.max(1)) {
            std::thread::scope(|s| {
                for d in chunk {
                    s.spawn(move || attempt(store, agent, smtp, cfg, d));
                }
            });
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

/// Sends one delivery once and records how it went.
fn attempt(store: &dyn AlertStore, agent: &ureq::Agent, smtp: Option<&Smtp>, cfg: &DeliveryConfig, d: &DueDelivery) {
    let n = d.delivery.attempts + 1;
    let started = Instant::now();
    let (status, error) = match d.url.strip_prefix("mailto:") {
        Some(to) => send_mail(smtp, to, d),
        None => post(agent, d),
    };
    record(store, cfg, d, n, started, status, error);
}

/// One POST of a delivery, signed afresh.
fn post(agent: &ureq::Agent, d: &DueDelivery) -> (Option<u16>, Option<String>) {
    let body = match d.format.as_str() {
        "slack" => json!({ "text": chat_text(&d.body) }).to_string(),
        _ => d.body.to_string(),
    };
    let ts = now_ms() / 1000;
    let Some(signature) = webhook::sign(&d.secret, &d.delivery.message_id, ts, body.as_bytes()) else {
        return (None, Some("the endpoint's signing secret is not usable; create the endpoint again".into()));
    };
    let res = agent
        .post(&d.url)
        .set("Content-Type", "application/json")
        .set("webhook-id", &d.delivery.message_id)
        .set("webhook-timestamp", &ts.to_string())
        .set("webhook-signature", &signature)
        .send_string(&body);
    let (status, error) = match res {
        Ok(r) => (Some(r.status()), None),
        Err(ureq::Error::Status(code, r)) => {
            let text: String = r.into_string().unwrap_or_default().chars().take(200).collect();
            (Some(code), Some(format!("HTTP {code}: {text}")))
        }
        Err(e) => (None, Some(e.to_string().chars().take(300).collect())),
    };
    (status, error)
}

/// Records how an attempt went and what follows it.
fn record(
    store: &dyn AlertStore,
    cfg: &DeliveryConfig,
    d: &DueDelivery,
    n: u32,
    started: Instant,
    status: Option<u16>,
    error: Option<String>,
) {
    let now = now_ms();
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    let next = if delivered {
        AttemptNext::Delivered
    } else if n >= cfg.max_attempts {
        AttemptNext::Dead
    } else {
        AttemptNext::RetryAt(now + jitter(cfg.backoff_ms(n)))
    };
    let outcome = match next {
        AttemptNext::Delivered => "delivered",
        AttemptNext::RetryAt(_) => "retry",
        AttemptNext::Dead => "dead",
    };
    metrics::counter!("keyward_webhook_attempts_total", "outcome" => outcome).increment(1);
    match next {
        AttemptNext::Delivered => tracing::debug!(delivery_id = %d.delivery.id, attempt = n, "Webhook delivered."),
        AttemptNext::RetryAt(at) => tracing::warn!(
            delivery_id = %d.delivery.id, webhook_id = %d.delivery.webhook_id, attempt = n,
            error = error.as_deref().unwrap_or("-"), retry_in_ms = at - now, "Webhook delivery failed; will retry."
        ),
        AttemptNext::Dead => tracing::error!(
            delivery_id = %d.delivery.id, webhook_id = %d.delivery.webhook_id, attempts = n,
            error = error.as_deref().unwrap_or("-"), "Webhook delivery gave up after its last attempt."
        ),
    }
    let row = AttemptRow {
        delivery_id: d.delivery.id.clone(),
        n,
        at: now,
        status,
        error,
        duration_ms: started.elapsed().as_millis() as i64,
    };
    if let Err(e) = store.record_attempt(&row, next) {
        tracing::error!(delivery_id = %d.delivery.id, error = %e, "Recording a webhook attempt failed; it may be sent again.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_spans_hours() {
        let cfg = DeliveryConfig::default();
        assert_eq!(cfg.backoff_ms(1), 5_000);
        assert_eq!(cfg.backoff_ms(2), 10_000);
        assert_eq!(cfg.backoff_ms(14), 6 * 3_600_000);
        let total: i64 = (1..cfg.max_attempts).map(|n| cfg.backoff_ms(n)).sum();
        assert!(total > 12 * 3_600_000, "retries span {} h", total / 3_600_000);
        for _ in 0..100 {
            let j = jitter(10_000);
            assert!((8_000..=12_000).contains(&j), "{j}");
        }
    }

    #[test]
    fn chat_text_says_what_and_who() {
        let body = json!({"type": "alert.opened", "data": {"id": "alr_1", "rule": "leak", "severity": "critical",
            "detail": "key found leaked", "subject": {"kind": "key", "key_id": "key_1", "key_hint": "kw_live_…ab12"}}});
        assert_eq!(
            chat_text(&body),
            "keyward alert.opened: [critical] leak — key found leaked for key key_1 (kw_live_…ab12) (alert alr_1)"
        );
    }
}
