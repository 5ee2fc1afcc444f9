//! The CLI's client side: `keyward keyspaces …` and `keyward keys …` talk to
//! a running server over HTTP with a root key. Answers print for people by
//! default (a line or a table), as the server's JSON with `--json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and how to authenticate.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Base URL of the server.
    #[arg(long, env = "KEYWARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Root key (prefer the env var: flags show up in process listings).
    #[arg(long, env = "KEYWARD_ROOT_KEY", hide_env_values = true)]
    root_key: String,
    /// Print the server's JSON answer (for scripts) instead of text.
    #[arg(long)]
    json: bool,
}

/// A key's descriptive fields, as flags (create and update).
#[derive(Args, Clone, Debug, Default)]
pub struct KeyFields {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    owner_id: Option<String>,
    /// JSON object returned on every verify.
    #[arg(long)]
    meta: Option<String>,
    /// RFC 3339 expiry instant.
    #[arg(long)]
    expires_at: Option<String>,
}

impl KeyFields {
    /// Adds the given flags to a create or patch body.
    fn apply(self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(n) = self.name {
            body["name"] = n.into();
        }
        if let Some(o) = self.owner_id {
            body["owner_id"] = o.into();
        }
        if let Some(m) = self.meta {
            body["meta"] =
                serde_json::from_str(&m).context("--meta must be a JSON object, e.g. '{\"plan\":\"pro\"}'")?;
        }
        if let Some(e) = self.expires_at {
            body["expires_at"] = e.into();
        }
        Ok(())
    }
}

/// A key's policy, as flags (create and update).
#[derive(Args, Clone, Debug, Default)]
pub struct PolicyFlags {
    /// A scope the key grants (repeat): read, write, admin, invoices:read, invoices:*.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// A CIDR the key may be used from (repeat): 10.0.0.0/8, 2001:db8::/32.
    #[arg(long = "ip", value_name = "CIDR")]
    ips: Vec<String>,
    /// A rate-limit window (repeat): NAME=LIMIT/WINDOW_MS, e.g. minute=1000/60000.
    #[arg(long = "ratelimit", value_name = "NAME=LIMIT/WINDOW_MS")]
    ratelimits: Vec<String>,
    /// Usage quota: uses left.
    #[arg(long)]
    remaining: Option<i64>,
    /// Quota refill: AMOUNT/INTERVAL_MS, e.g. 10000/86400000 (daily).
    #[arg(long, value_name = "AMOUNT/INTERVAL_MS")]
    refill: Option<String>,
}

impl PolicyFlags {
    /// Adds the given flags to a create or patch body.
    fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        if !self.scopes.is_empty() {
            body["scopes"] = json!(self.scopes);
        }
        if !self.ips.is_empty() {
            body["ip_allowlist"] = json!(self.ips);
        }
        if !self.ratelimits.is_empty() {
            let windows = self
                .ratelimits
                .iter()
                .map(|r| {
                    let parsed = r.split_once('=').and_then(|(name, rest)| {
                        let (limit, window) = rest.split_once('/')?;
                        Some(json!({"name": name, "limit": limit.parse::<u64>().ok()?, "window_ms": window.parse::<i64>().ok()?}))
                    });
                    parsed.with_context(|| format!("--ratelimit {r:?}: write NAME=LIMIT/WINDOW_MS, e.g. minute=1000/60000"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            body["ratelimits"] = json!(windows);
        }
        if let Some(r) = self.remaining {
            body["remaining"] = r.into();
        }
        if let Some(r) = &self.refill {
            let (amount, interval) = r
                .split_once('/')
                .and_then(|(a, i)| Some((a.parse::<i64>().ok()?, i.parse::<i64>().ok()?)))
                .with_context(|| format!("--refill {r:?}: write AMOUNT/INTERVAL_MS, e.g. 10000/86400000"))?;
            body["refill"] = json!({"amount": amount, "interval_ms": interval});
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum KeyspacesCmd {
    /// Create a keyspace.
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        name: String,
        /// Key prefix, e.g. sk_live (default kw_live).
        #[arg(long)]
        prefix: Option<String>,
        /// Lifetime of new keys, milliseconds.
        #[arg(long)]
        default_ttl_ms: Option<i64>,
    },
    /// List keyspaces.
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a key; prints it once, with its id.
    #[command(
        after_help = "Examples:\n  keyward keys create --keyspace ks_01J... --owner-id acme --ttl-ms 86400000\n  keyward keys create --keyspace ks_01J... --scope read --scope invoices:write \\\n      --ip 10.0.0.0/8 --ratelimit minute=600/60000 --remaining 10000 --refill 10000/86400000"
    )]
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Keyspace id.
        #[arg(long)]
        keyspace: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Lifetime from now, milliseconds.
        #[arg(long, conflicts_with = "expires_at")]
        ttl_ms: Option<i64>,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// Change a key: name, owner, meta, expiry, scopes, allowlist, limits, quota, enabled.
    #[command(
        after_help = "Examples:\n  keyward keys update key_01J... --scope read --scope write   # replaces the scopes\n  keyward keys update key_01J... --disable\n  keyward keys update key_01J... --ip 203.0.113.0/24 --ratelimit minute=100/60000"
    )]
    Update {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[command(flatten)]
        fields: KeyFields,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// Verify a key as your API would; exits 0 when valid, 1 when refused.
    #[command(
        after_help = "Examples:\n  keyward keys verify \"$KEY\"\n  keyward keys verify \"$KEY\" --ip 203.0.113.7 --method POST --path /v1/invoices --scope invoices:write"
    )]
    Verify {
        #[command(flatten)]
        conn: Conn,
        /// The key (prefer stdin: `-` reads it from there, out of the shell history).
        key: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        path: Option<String>,
        /// A scope the request needs (repeat).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List keys.
    #[command(after_help = "Example:\n  keyward keys list --owner-id acme --status active --limit 50")]
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        keyspace: Option<String>,
        #[arg(long)]
        owner_id: Option<String>,
        /// active, disabled, expired or revoked.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one key (its hint, never the key).
    Show {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Import keys from another system by their SHA-256 hashes, from CSV or NDJSON.
    #[command(after_help = "CSV has a header row; columns: hash (hex SHA-256 of the key), prefix, and optionally\n\
last4, owner_id, name, expires_at (RFC 3339), scopes (space-separated), meta (JSON object).\n\
NDJSON lines are objects with the same fields (scopes as a list, meta as an object).\n\n\
Example:\n  keyward keys import old-keys.csv --keyspace ks_01J...")]
    Import {
        #[command(flatten)]
        conn: Conn,
        /// A .csv or .ndjson/.jsonl file.
        file: PathBuf,
        /// Keyspace to import into.
        #[arg(long)]
        keyspace: String,
        /// csv or ndjson (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// Rotate a key: prints the new key once; the old one keeps working for the overlap.
    #[command(
        after_help = "Examples:\n  keyward keys rotate key_01J...                 # 24 h overlap\n  keyward keys rotate key_01J... --overlap-ms 0  # old key stops now"
    )]
    Rotate {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// How long the old key keeps working, ms (default 86400000).
        #[arg(long)]
        overlap_ms: Option<i64>,
    },
    /// Revoke a key at once.
    #[command(
        after_help = "Example:\n  keyward keys revoke key_01J... --reason compromised --note 'found in a public gist'"
    )]
    Revoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// compromised, leaked, rotated, unused or other.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        incident: Option<String>,
    },
}

impl Conn {
    pub fn new(server: &str, root_key: &str) -> Conn {
        Conn { server: server.to_owned(), root_key: root_key.to_owned(), json: false }
    }
}

/// One API call; a problem answer becomes an error with its status and detail.
pub fn call(conn: &Conn, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let url = format!("{}{}", conn.server.trim_end_matches('/'), path);
    let req = ureq::request(method, &url).set("Authorization", &format!("Bearer {}", conn.root_key));
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
            bail!("server answered {code}: {detail}")
        }
        Err(e) => {
            Err(anyhow::Error::new(e)).with_context(|| format!("reaching {}; is `keyward serve` running?", conn.server))
        }
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// What a CLI answer shows people.
#[derive(Clone, Copy)]
enum Shape {
    Key,
    Keys,
    Keyspace,
    Keyspaces,
}

fn text(v: &Value, field: &str) -> String {
    match &v[field] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

/// Prints `v` as JSON with `--json`, else for people.
fn show(conn: &Conn, shape: Shape, v: &Value) -> anyhow::Result<()> {
    if conn.json {
        return print(v);
    }
    match shape {
        Shape::Key => {
            for field in [
                "id",
                "name",
                "keyspace_id",
                "owner_id",
                "hint",
                "status",
                "scopes",
                "ip_allowlist",
                "remaining",
                "expires_at",
                "last_used_at",
                "last_used_ip",
                "created_at",
                "rotated_to",
                "overlap_until",
            ] {
                println!("{field:<14} {}", text(v, field));
            }
            if let Some(r) = v["ratelimits"].as_array() {
                let windows: Vec<String> =
                    r.iter().map(|w| format!("{}={}/{}", text(w, "name"), w["limit"], w["window_ms"])).collect();
                println!("{:<14} {}", "ratelimits", if windows.is_empty() { "none".into() } else { windows.join(" ") });
            }
            println!("{:<14} {}", "meta", v["meta"]);
        }
        Shape::Keys => {
            println!("{:<26} {:<20} {:<16} {:<9} {:<18} LAST USED", "ID", "NAME", "OWNER", "STATUS", "HINT");
            for k in v["data"].as_array().into_iter().flatten() {
                println!(
                    "{:<26} {:<20} {:<16} {:<9} {:<18} {}",
                    text(k, "id"),
                    text(k, "name"),
                    text(k, "owner_id"),
                    text(k, "status"),
                    text(k, "hint"),
                    text(k, "last_used_at")
                );
            }
            if let Some(c) = v["next_cursor"].as_str() {
                eprintln!("more: --cursor {c}");
            }
        }
        Shape::Keyspace => println!("{}  {}  prefix {}", text(v, "id"), text(v, "name"), text(v, "prefix")),
        Shape::Keyspaces => {
            println!("{:<25} {:<24} PREFIX", "ID", "NAME");
            for k in v.as_array().or(v["data"].as_array()).into_iter().flatten() {
                println!("{:<25} {:<24} {}", text(k, "id"), text(k, "name"), text(k, "prefix"));
            }
        }
    }
    Ok(())
}

/// Prints a created or rotated key: the secret alone on stdout for people.
fn show_secret(conn: &Conn, v: &Value, what: &str) -> anyhow::Result<()> {
    if conn.json {
        return print(v);
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

pub fn keyspaces(cmd: KeyspacesCmd) -> anyhow::Result<()> {
    match cmd {
        KeyspacesCmd::Create { conn, name, prefix, default_ttl_ms } => {
            let mut body = json!({ "name": name });
            if let Some(p) = prefix {
                body["prefix"] = p.into();
            }
            if let Some(t) = default_ttl_ms {
                body["default_ttl_ms"] = t.into();
            }
            show(&conn, Shape::Keyspace, &call(&conn, "POST", "/v1/keyspaces", Some(body))?)
        }
        KeyspacesCmd::List { conn } => show(&conn, Shape::Keyspaces, &call(&conn, "GET", "/v1/keyspaces", None)?),
    }
}

pub fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create { conn, keyspace, fields, ttl_ms, policy } => {
            let mut body = json!({ "keyspace_id": keyspace });
            fields.apply(&mut body)?;
            if let Some(t) = ttl_ms {
                body["ttl_ms"] = t.into();
            }
            policy.apply(&mut body)?;
            let created = call(&conn, "POST", "/v1/keys", Some(body))?;
            show_secret(&conn, &created, "Created key")
        }
        KeysCmd::Update { conn, id, fields, enable, disable, policy } => {
            let mut body = json!({});
            fields.apply(&mut body)?;
            if enable || disable {
                body["enabled"] = enable.into();
            }
            policy.apply(&mut body)?;
            if body.as_object().is_some_and(|o| o.is_empty()) {
                bail!("nothing to change: give at least one flag (see keyward keys update --help)");
            }
            show(&conn, Shape::Key, &call(&conn, "PATCH", &format!("/v1/keys/{}", encode(&id)), Some(body))?)
        }
        KeysCmd::Verify { conn, key, ip, method, path, scopes } => {
            let key = if key == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).context("reading the key from stdin")?;
                line.trim().to_owned()
            } else {
                key
            };
            let mut body = json!({ "key": key });
            if let Some(v) = ip {
                body["ip"] = v.into();
            }
            if let Some(v) = method {
                body["method"] = v.into();
            }
            if let Some(v) = path {
                body["path"] = v.into();
            }
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let d = call(&conn, "POST", "/v1/keys/verify", Some(body))?;
            if conn.json {
                print(&d)?;
            } else if d["valid"] == true {
                let deprecated = if d["deprecated"] == true { " (deprecated: rotated, in its overlap)" } else { "" };
                println!(
                    "VALID {} owner {} scopes {}{deprecated}",
                    text(&d, "key_id"),
                    text(&d, "owner_id"),
                    text(&d, "scopes")
                );
            } else {
                println!(
                    "REFUSED {} {} {}",
                    text(&d, "code"),
                    text(&d, "key_id"),
                    d["message"].as_str().unwrap_or_default()
                );
            }
            if d["valid"] != true {
                std::process::exit(1);
            }
            Ok(())
        }
        KeysCmd::List { conn, keyspace, owner_id, status, cursor, limit } => {
            let limit = limit.map(|l| l.to_string());
            let q = query(&[
                ("keyspace_id", &keyspace),
                ("owner_id", &owner_id),
                ("status", &status),
                ("cursor", &cursor),
                ("limit", &limit),
            ]);
            show(&conn, Shape::Keys, &call(&conn, "GET", &format!("/v1/keys{q}"), None)?)
        }
        KeysCmd::Import { conn, file, keyspace, format } => import(&conn, &file, &keyspace, format.as_deref()),
        KeysCmd::Rotate { conn, id, overlap_ms } => {
            let body = match overlap_ms {
                Some(o) => json!({ "overlap_ms": o }),
                None => json!({}),
            };
            let rotated = call(&conn, "POST", &format!("/v1/keys/{}/rotate", encode(&id)), Some(body))?;
            show_secret(&conn, &rotated, &format!("Rotated {id} (the old key keeps working for its overlap) to"))
        }
        KeysCmd::Show { conn, id } => {
            show(&conn, Shape::Key, &call(&conn, "GET", &format!("/v1/keys/{}", encode(&id)), None)?)
        }
        KeysCmd::Revoke { conn, id, reason, note, incident } => {
            let mut body = json!({ "reason": reason });
            if let Some(n) = note {
                body["note"] = n.into();
            }
            if let Some(i) = incident {
                body["incident"] = i.into();
            }
            show(&conn, Shape::Key, &call(&conn, "POST", &format!("/v1/keys/{}/revoke", encode(&id)), Some(body))?)
        }
    }
}

/// `keyward events`: usage events of the workspace, one JSON object a line.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  keyward events --key-id key_01J... --since 2026-11-01T00:00:00Z\n  keyward events --code NOT_FOUND --follow"
)]
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

pub fn events(cmd: EventsCmd) -> anyhow::Result<()> {
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
    if !cmd.follow {
        let page = call(&cmd.conn, "GET", &format!("/v1/events{}", query(&base)), None)?;
        // Oldest first reads naturally in a terminal.
        for e in page["data"].as_array().into_iter().flatten().rev() {
            println!("{e}");
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
            println!("{e}");
            cursor = e["id"].as_i64().map(|i| i.to_string());
        }
        if page["next_cursor"].is_null() {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

#[derive(Subcommand)]
pub enum IncidentCmd {
    /// Print an incident, with the usage review of its keys, as Markdown.
    #[command(after_help = "Example:\n  keyward incident report inc_01J... --review-days 14 > incident.md")]
    Report {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// Days of usage to review (default 7).
        #[arg(long)]
        review_days: Option<i64>,
    },
}

pub fn incident(cmd: IncidentCmd) -> anyhow::Result<()> {
    match cmd {
        IncidentCmd::Report { conn, id, review_days } => {
            let days = review_days.map(|d| d.to_string());
            let v = call(
                &conn,
                "GET",
                &format!("/v1/incidents/{}{}", encode(&id), query(&[("review_days", &days)])),
                None,
            )?;
            let view: keyward_service::incidents::IncidentView =
                serde_json::from_value(v).context("reading the incident from the server")?;
            print!("{}", keyward_service::incidents::markdown(&view));
            Ok(())
        }
    }
}

/// One row of an import file, as the CSV columns name it.
#[derive(serde::Deserialize)]
struct CsvRow {
    hash: String,
    prefix: String,
    last4: Option<String>,
    owner_id: Option<String>,
    name: Option<String>,
    expires_at: Option<String>,
    scopes: Option<String>,
    meta: Option<String>,
}

fn read_import(file: &Path, format: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut rows = Vec::new();
    match format {
        "csv" => {
            let mut r = csv::Reader::from_reader(text.as_bytes());
            for (i, row) in r.deserialize::<CsvRow>().enumerate() {
                let row = row.with_context(|| format!("{} row {}", file.display(), i + 2))?;
                let mut v = json!({"hash": row.hash, "prefix": row.prefix});
                let opt = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
                if let Some(x) = opt(row.last4) {
                    v["last4"] = x.into();
                }
                if let Some(x) = opt(row.owner_id) {
                    v["owner_id"] = x.into();
                }
                if let Some(x) = opt(row.name) {
                    v["name"] = x.into();
                }
                if let Some(x) = opt(row.expires_at) {
                    v["expires_at"] = x.into();
                }
                if let Some(x) = opt(row.scopes) {
                    v["scopes"] = x.split_whitespace().collect::<Vec<_>>().into();
                }
                if let Some(x) = opt(row.meta) {
                    v["meta"] = serde_json::from_str(&x)
                        .with_context(|| format!("{} row {}: meta is not JSON", file.display(), i + 2))?;
                }
                rows.push(v);
            }
        }
        "ndjson" => {
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                rows.push(serde_json::from_str(line).with_context(|| format!("{} line {}", file.display(), i + 1))?);
            }
        }
        other => bail!("unknown format {other:?}: use csv or ndjson"),
    }
    Ok(rows)
}

/// Draws `[#####.....] 50% 500/1000` on stderr.
fn progress(done: usize, total: usize) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    eprint!("\r[{}{}] {pct:3}% {done}/{total}", "#".repeat(filled), ".".repeat(width - filled));
    let _ = std::io::stderr().flush();
}

fn import(conn: &Conn, file: &Path, keyspace: &str, format: Option<&str>) -> anyhow::Result<()> {
    let format = match format {
        Some(f) => f.to_owned(),
        None => match file.extension().and_then(|e| e.to_str()) {
            Some("csv") => "csv".into(),
            Some("ndjson" | "jsonl") => "ndjson".into(),
            _ => bail!("cannot tell the format of {}: pass --format csv or --format ndjson", file.display()),
        },
    };
    let rows = read_import(file, &format)?;
    let total = rows.len();
    let (mut imported, mut duplicates, mut without_scopes) = (0, 0, 0);
    progress(0, total);
    for (n, chunk) in rows.chunks(500).enumerate() {
        let res = call(conn, "POST", "/v1/keys/import", Some(json!({"keyspace_id": keyspace, "keys": chunk})))
            .with_context(|| format!("importing rows {} to {}", n * 500 + 1, n * 500 + chunk.len()))?;
        imported += res["imported"].as_u64().unwrap_or(0) as usize;
        duplicates += res["duplicates"].as_array().map_or(0, Vec::len);
        without_scopes += res["without_scopes"].as_u64().unwrap_or(0) as usize;
        progress((n * 500 + chunk.len()).min(total), total);
    }
    eprintln!();
    if without_scopes > 0 {
        eprintln!(
            "warning: {without_scopes} imported keys have no scope and are refused for any method, path or scope; \
             add a scopes column, set the keyspace's default_scopes, or set them with PATCH /v1/keys/ID"
        );
    }
    println!(
        "{}",
        json!({"imported": imported, "duplicates_skipped": duplicates, "without_scopes": without_scopes, "total": total})
    );
    Ok(())
}
