//! `keyward alerts …` and `keyward webhooks …`: alerts raised by the rules
//! engine (list, follow, show, acknowledge, resolve), the rules in force, and
//! webhook endpoints with their deliveries.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{Paint, Table, fields, text, when};
use super::{Conn, call, encode, print_json, query};

/// `keyward alerts`: lists by default; subcommands act on one alert.
#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  keyward alerts                          # open and acknowledged alerts, newest first
  keyward alerts --status resolved --severity critical
  keyward alerts --follow                 # print alerts as they are raised (Ctrl-C to stop)
  keyward alerts show alr_01J...
  keyward alerts ack alr_01J... --note 'looking into it'
  keyward alerts resolve alr_01J...
  keyward alerts rules --keyspace ks_01J..."
)]
pub struct AlertsCmd {
    #[command(subcommand)]
    action: Option<AlertAction>,
    #[command(flatten)]
    list: AlertList,
}

#[derive(Args, Debug)]
struct AlertList {
    #[command(flatten)]
    conn: Conn,
    /// open, acknowledged or resolved (default: open and acknowledged).
    #[arg(long)]
    status: Option<String>,
    /// notice, medium, warning, high or critical.
    #[arg(long)]
    severity: Option<String>,
    /// A rule id, e.g. requests_per_minute.
    #[arg(long)]
    rule: Option<String>,
    #[arg(long)]
    key_id: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    /// Keep printing alerts as they are raised or change.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Subcommand, Debug)]
enum AlertAction {
    /// One alert with the events that crossed it.
    #[command(after_help = "Example:\n  keyward alerts show alr_01J...")]
    Show {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Acknowledge an alert: someone is on it.
    #[command(after_help = "Example:\n  keyward alerts ack alr_01J... --note 'on it'")]
    Ack {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve an alert.
    #[command(after_help = "Example:\n  keyward alerts resolve alr_01J... --note 'load test'")]
    Resolve {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The rules in force for the workspace, a keyspace or a key.
    #[command(after_help = "Examples:\n  keyward alerts rules\n  keyward alerts rules --key key_01J... --json")]
    Rules {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        keyspace: Option<String>,
        #[arg(long)]
        key: Option<String>,
    },
}

fn subject(a: &Value) -> String {
    match a["subject"]["kind"].as_str() {
        Some("ip") => text(&a["subject"], "ip"),
        _ => format!("{} {}", text(&a["subject"], "key_id"), text(&a["subject"], "key_hint")),
    }
}

fn alert_line(paint: Paint, a: &Value) -> String {
    format!(
        "{}  {:<8}  {:<12}  {:<24}  {}  ({})",
        text(a, "id"),
        paint.status(&text(a, "severity")),
        text(a, "status"),
        text(a, "rule"),
        subject(a),
        text(a, "detail")
    )
}

pub fn alerts(cmd: AlertsCmd) -> anyhow::Result<()> {
    match cmd.action {
        Some(AlertAction::Show { conn, id }) => {
            let a = call(&conn, "GET", &format!("/v1/alerts/{}", encode(&id)), None)?;
            if conn.json {
                return print_json(&a);
            }
            let paint = Paint::stdout();
            fields(
                paint,
                &[
                    ("id", text(&a, "id")),
                    ("rule", text(&a, "rule")),
                    ("severity", text(&a, "severity")),
                    ("status", text(&a, "status")),
                    ("subject", subject(&a)),
                    ("detail", text(&a, "detail")),
                    ("count", text(&a, "count")),
                    ("first seen", format!("{} ({})", when(&a, "first_seen"), text(&a, "first_seen"))),
                    ("last seen", format!("{} ({})", when(&a, "last_seen"), text(&a, "last_seen"))),
                    ("acknowledged", text(&a, "acknowledged_by")),
                    ("resolved", text(&a, "resolved_by")),
                ],
            );
            let events = a["events"].as_array().cloned().unwrap_or_default();
            if !events.is_empty() {
                println!();
                let mut table = Table::new(&["EVENT", "TIME", "CODE", "IP", "REQUEST"]).status_column(2);
                for e in &events {
                    let req = format!("{} {}", text(e, "method"), text(e, "path"));
                    table.row(vec![text(e, "id"), text(e, "timestamp"), text(e, "code"), text(e, "ip"), req]);
                }
                table.print(paint);
            }
            Ok(())
        }
        Some(AlertAction::Ack { conn, id, note }) => act(&conn, &id, "ack", note),
        Some(AlertAction::Resolve { conn, id, note }) => act(&conn, &id, "resolve", note),
        Some(AlertAction::Rules { conn, keyspace, key }) => {
            let q = query(&[("keyspace_id", &keyspace), ("key_id", &key)]);
            let rules = call(&conn, "GET", &format!("/v1/alert-rules{q}"), None)?;
            if conn.json {
                return print_json(&rules);
            }
            let paint = Paint::stdout();
            let mut table = Table::new(&["RULE", "ON", "WINDOW", "LEVELS"]);
            for r in rules["rules"].as_array().into_iter().flatten() {
                let levels: Vec<String> = r["levels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| match l["above"].as_f64() {
                        Some(v) if v > 0.0 => format!("{} > {v}", text(l, "severity")),
                        _ => text(l, "severity"),
                    })
                    .collect();
                let window = r["window_ms"].as_i64().map_or("-".to_owned(), super::format_duration);
                let on = if r["enabled"] == true { "yes" } else { "off" };
                table.row(vec![text(r, "rule"), on.to_owned(), window, levels.join(", ")]);
            }
            println!("{} {} {}", paint.dim("rules in force for the"), text(&rules, "level"), text(&rules, "target_id"));
            table.print(paint);
            Ok(())
        }
        None => list(cmd.list),
    }
}

fn act(conn: &Conn, id: &str, what: &str, note: Option<String>) -> anyhow::Result<()> {
    let body = match note {
        Some(n) => json!({ "note": n }),
        None => json!({}),
    };
    let a = call(conn, "POST", &format!("/v1/alerts/{}/{what}", encode(id)), Some(body))?;
    if conn.json {
        return print_json(&a);
    }
    println!("{}", alert_line(Paint::stdout(), &a));
    Ok(())
}

fn list(cmd: AlertList) -> anyhow::Result<()> {
    let conn = cmd.conn;
    let paint = Paint::stdout();
    let limit = cmd.limit.map(|l| l.to_string());
    let fetch = |status: &Option<String>| {
        let q = query(&[
            ("status", status),
            ("severity", &cmd.severity),
            ("rule", &cmd.rule),
            ("key_id", &cmd.key_id),
            ("limit", &limit),
        ]);
        call(&conn, "GET", &format!("/v1/alerts{q}"), None)
    };
    // Default: what needs attention (open and acknowledged).
    let statuses: Vec<Option<String>> = match &cmd.status {
        Some(s) => vec![Some(s.clone())],
        None => vec![Some("open".into()), Some("acknowledged".into())],
    };
    let mut seen = std::collections::HashMap::<String, String>::new();
    let mut first = true;
    loop {
        let mut rows = Vec::new();
        for status in &statuses {
            rows.extend(fetch(status)?["data"].as_array().cloned().unwrap_or_default());
        }
        if cmd.follow && cmd.status.is_none() {
            rows.extend(fetch(&Some("resolved".into()))?["data"].as_array().cloned().unwrap_or_default());
        }
        rows.sort_by_key(|a| text(a, "id"));
        if !cmd.follow {
            if conn.json {
                return print_json(&json!({ "data": rows }));
            }
            let mut table =
                Table::new(&["ID", "SEVERITY", "STATUS", "RULE", "SUBJECT", "COUNT", "LAST SEEN", "DETAIL"])
                    .status_column(1);
            for a in rows.iter().rev() {
                table.row(vec![
                    text(a, "id"),
                    text(a, "severity"),
                    text(a, "status"),
                    text(a, "rule"),
                    subject(a),
                    text(a, "count"),
                    when(a, "last_seen"),
                    text(a, "detail"),
                ]);
            }
            table.print(paint);
            return Ok(());
        }
        for a in &rows {
            let state = format!("{}/{}", text(a, "severity"), text(a, "status"));
            let id = text(a, "id");
            let changed = seen.get(&id) != Some(&state);
            if changed {
                // At the start, only what is still open: the resolved history is for `--status resolved`.
                if !(first && a["status"] == "resolved") {
                    if conn.json { println!("{a}") } else { println!("{}", alert_line(paint, a)) }
                }
                seen.insert(id, state);
            }
        }
        first = false;
        std::io::Write::flush(&mut std::io::stdout()).ok();
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[derive(Subcommand)]
pub enum WebhooksCmd {
    /// Add an endpoint; prints its signing secret once, alone on stdout.
    #[command(after_help = "Examples:
  keyward webhooks create --url https://ops.example.com/keyward
  keyward webhooks create --url https://hooks.slack.com/services/... --format slack --event alert.opened")]
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        url: String,
        /// An event type to send (repeat; default all): alert.opened, alert.escalated, alert.resolved,
        /// key.revoked, key.rotated, key.disabled, key.expiring.
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// webhook (Standard Webhooks JSON, default) or slack.
        #[arg(long)]
        format: Option<String>,
    },
    /// List endpoints.
    #[command(after_help = "Example:\n  keyward webhooks list")]
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an endpoint.
    #[command(after_help = "Example:\n  keyward webhooks delete wh_01J...")]
    Delete {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// An endpoint's deliveries, newest first.
    #[command(after_help = "Example:\n  keyward webhooks deliveries wh_01J...")]
    Deliveries {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Send a delivery again.
    #[command(after_help = "Example:\n  keyward webhooks redeliver wh_01J... dlv_01J...")]
    Redeliver {
        #[command(flatten)]
        conn: Conn,
        id: String,
        delivery: String,
    },
}

pub fn webhooks(cmd: WebhooksCmd) -> anyhow::Result<()> {
    let paint = Paint::stdout();
    match cmd {
        WebhooksCmd::Create { conn, url, events, description, format } => {
            let mut body = json!({ "url": url });
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(d) = description {
                body["description"] = d.into();
            }
            if let Some(f) = format {
                body["format"] = f.into();
            }
            let created = call(&conn, "POST", "/v1/webhooks", Some(body))?;
            if conn.json {
                return print_json(&created);
            }
            eprintln!(
                "Created webhook {}. Its signing secret is below, shown only this once: give it to the receiver.",
                text(&created, "id")
            );
            println!("{}", text(&created, "secret"));
            Ok(())
        }
        WebhooksCmd::List { conn } => {
            let list = call(&conn, "GET", "/v1/webhooks", None)?;
            if conn.json {
                return print_json(&list);
            }
            let mut table = Table::new(&["ID", "URL", "FORMAT", "EVENTS", "CREATED"]);
            for w in list.as_array().into_iter().flatten() {
                let events =
                    if w["events"].as_array().is_some_and(|e| e.is_empty()) { "all".into() } else { text(w, "events") };
                table.row(vec![text(w, "id"), text(w, "url"), text(w, "format"), events, when(w, "created_at")]);
            }
            table.print(paint);
            Ok(())
        }
        WebhooksCmd::Delete { conn, id } => {
            let w = call(&conn, "DELETE", &format!("/v1/webhooks/{}", encode(&id)), None)?;
            if conn.json {
                return print_json(&w);
            }
            println!("deleted {} {}", text(&w, "id"), text(&w, "url"));
            Ok(())
        }
        WebhooksCmd::Deliveries { conn, id } => {
            let page = call(&conn, "GET", &format!("/v1/webhooks/{}/deliveries", encode(&id)), None)?;
            if conn.json {
                return print_json(&page);
            }
            let mut table =
                Table::new(&["DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "LAST", "CREATED"]).status_column(2);
            for d in page["data"].as_array().into_iter().flatten() {
                let last = match (d["last_status"].as_u64(), d["last_error"].as_str()) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(e)) => e.chars().take(40).collect(),
                    _ => "-".into(),
                };
                table.row(vec![
                    text(d, "id"),
                    text(d, "event_type"),
                    text(d, "status"),
                    text(d, "attempts"),
                    last,
                    when(d, "created_at"),
                ]);
            }
            table.print(paint);
            Ok(())
        }
        WebhooksCmd::Redeliver { conn, id, delivery } => {
            call(
                &conn,
                "POST",
                &format!("/v1/webhooks/{}/deliveries/{}/redeliver", encode(&id), encode(&delivery)),
                None,
            )?;
            println!("queued {delivery} again");
            Ok(())
        }
    }
}
