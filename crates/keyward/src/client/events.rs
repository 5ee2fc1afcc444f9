//! `keyward events`: usage events of the workspace, a line each (oldest
//! first), or one JSON object a line with `--json`; `--follow` keeps going.

use clap::Args;
use serde_json::Value;

use super::output::{Paint, text};
use super::{Conn, call, query};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  keyward events --key-id key_01J... --since 2026-11-01T00:00:00Z
  keyward events --code NOT_FOUND --follow
  keyward events --status 5xx --json | jq .ip")]
pub struct EventsCmd {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    key_id: Option<String>,
    #[arg(long)]
    owner_id: Option<String>,
    #[arg(long)]
    ip: Option<String>,
    /// Outcome code, e.g. RATE_LIMITED.
    #[arg(long)]
    code: Option<String>,
    /// Status class: 2xx, 4xx, 5xx.
    #[arg(long)]
    status: Option<String>,
    /// RFC 3339 instant.
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 instant.
    #[arg(long)]
    until: Option<String>,
    /// Most events to print (default 100; with --follow, per poll).
    #[arg(long)]
    limit: Option<u32>,
    /// Keep printing new events as they arrive (Ctrl-C to stop).
    #[arg(long, short)]
    follow: bool,
}

/// One event on one line: fixed columns, so a followed stream stays aligned.
fn line(paint: Paint, e: &Value) -> String {
    let request = match (e["method"].as_str(), e["path"].as_str()) {
        (Some(m), Some(p)) => format!("{m} {p}"),
        (None, Some(p)) => p.to_owned(),
        (Some(m), None) => m.to_owned(),
        (None, None) => "-".to_owned(),
    };
    let code = text(e, "code");
    let pad = 15usize.saturating_sub(code.len());
    format!(
        "{}  {}{}  {:<30}  {:<15}  {:<3}  {}",
        text(e, "timestamp"),
        paint.status(&code),
        " ".repeat(pad),
        text(e, "key_id"),
        text(e, "ip"),
        text(e, "status"),
        request
    )
}

fn print(conn: &Conn, paint: Paint, e: &Value) {
    if conn.json { println!("{e}") } else { println!("{}", line(paint, e)) }
}

pub fn events(cmd: EventsCmd) -> anyhow::Result<()> {
    let paint = Paint::stdout();
    let limit = cmd.limit.map(|l| l.to_string());
    let base = [
        ("key_id", &cmd.key_id),
        ("owner_id", &cmd.owner_id),
        ("ip", &cmd.ip),
        ("code", &cmd.code),
        ("status", &cmd.status),
        ("since", &cmd.since),
        ("until", &cmd.until),
        ("limit", &limit),
    ];
    if !cmd.conn.json {
        println!(
            "{}",
            paint.bold(&format!("{:<24}  {:<15}  {:<30}  {:<15}  {:<3}  REQUEST", "TIME", "CODE", "KEY", "IP", "ST"))
        );
    }
    if !cmd.follow {
        let page = call(&cmd.conn, "GET", &format!("/v1/events{}", query(&base)), None)?;
        // Oldest first reads naturally in a terminal.
        for e in page["data"].as_array().into_iter().flatten().rev() {
            print(&cmd.conn, paint, e);
        }
        return Ok(());
    }
    // Follow: start from the newest event, then poll for newer ones in order.
    let newest = call(&cmd.conn, "GET", &format!("/v1/events{}", query(&[("limit", &Some("1".to_owned()))])), None)?;
    let mut cursor = newest["data"][0]["id"].as_i64().map(|i| i.to_string()).or_else(|| Some("0".to_owned()));
    let order = Some("asc".to_owned());
    loop {
        let mut q: Vec<(&str, &Option<String>)> = base.to_vec();
        q.push(("order", &order));
        q.push(("cursor", &cursor));
        let page = call(&cmd.conn, "GET", &format!("/v1/events{}", query(&q)), None)?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for e in &data {
            print(&cmd.conn, paint, e);
            cursor = e["id"].as_i64().map(|i| i.to_string());
        }
        if data.is_empty() || page["next_cursor"].is_null() {
            std::io::Write::flush(&mut std::io::stdout()).ok();
        }
        if page["next_cursor"].is_null() {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
