//! `keyward keys …`: create, update, enable/disable, verify, list, show,
//! import, rotate, revoke.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{Paint, Table, fields, text, when};
use super::{Conn, call, encode, format_duration, parse_duration, print_json, query, show_secret};

/// A key's descriptive fields, as flags (create and update).
#[derive(Args, Clone, Debug, Default)]
pub struct KeyFields {
    #[arg(long)]
    name: Option<String>,
    /// Your identifier for who holds the key (a customer, a service).
    #[arg(long)]
    owner_id: Option<String>,
    /// JSON object returned on every verify, e.g. '{"plan":"pro"}'.
    #[arg(long)]
    meta: Option<String>,
    /// RFC 3339 expiry instant, e.g. 2027-01-01T00:00:00Z.
    #[arg(long)]
    expires_at: Option<String>,
}

impl KeyFields {
    /// Adds the given flags to a create or patch body.
    fn apply(self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(name) = self.name {
            body["name"] = name.into();
        }
        if let Some(owner) = self.owner_id {
            body["owner_id"] = owner.into();
        }
        if let Some(meta) = self.meta {
            body["meta"] =
                serde_json::from_str(&meta).context("--meta must be a JSON object, e.g. '{\"plan\":\"pro\"}'")?;
        }
        if let Some(at) = self.expires_at {
            body["expires_at"] = at.into();
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
    /// A network the key may be used from (repeat): 10.0.0.0/8, 2001:db8::/32, 203.0.113.7.
    #[arg(long = "ip-allow", visible_alias = "ip", value_name = "CIDR")]
    ips: Vec<String>,
    /// A rate-limit window (repeat): NAME=LIMIT/WINDOW, e.g. burst=10/1s, minute=1000/1m.
    #[arg(long = "ratelimit", value_name = "NAME=LIMIT/WINDOW")]
    ratelimits: Vec<String>,
    /// Usage quota: uses left.
    #[arg(long, visible_alias = "remaining", value_name = "USES")]
    quota: Option<i64>,
    /// Quota refill: AMOUNT/INTERVAL, e.g. 10000/1d.
    #[arg(long, value_name = "AMOUNT/INTERVAL")]
    refill: Option<String>,
}

/// `NAME=LIMIT/WINDOW` as a rate-limit window.
fn parse_window(flag: &str) -> anyhow::Result<Value> {
    let parsed = flag.split_once('=').and_then(|(name, rest)| {
        let (limit, window) = rest.split_once('/')?;
        Some(json!({"name": name, "limit": limit.parse::<u64>().ok()?, "window_ms": parse_duration(window)?}))
    });
    parsed.with_context(|| format!("--ratelimit {flag:?}: write NAME=LIMIT/WINDOW, e.g. minute=1000/1m or burst=10/1s"))
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
            let windows = self.ratelimits.iter().map(|r| parse_window(r)).collect::<anyhow::Result<Vec<_>>>()?;
            body["ratelimits"] = json!(windows);
        }
        if let Some(uses) = self.quota {
            body["remaining"] = uses.into();
        }
        if let Some(refill) = &self.refill {
            let (amount, interval) = refill
                .split_once('/')
                .and_then(|(a, i)| Some((a.parse::<i64>().ok()?, parse_duration(i)?)))
                .with_context(|| format!("--refill {refill:?}: write AMOUNT/INTERVAL, e.g. 10000/1d"))?;
            body["refill"] = json!({"amount": amount, "interval_ms": interval});
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a key; prints it once, alone on stdout.
    #[command(after_help = "Examples:
  KEY=$(keyward keys create --keyspace ks_01J... --owner-id acme --ttl 30d --scope read)
  keyward keys create --keyspace ks_01J... --scope read --scope invoices:write \\
      --ip-allow 10.0.0.0/8 --ratelimit burst=10/1s --ratelimit minute=600/1m \\
      --quota 10000 --refill 10000/1d")]
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Keyspace id.
        #[arg(long)]
        keyspace: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Lifetime from now: 30d, 12h, 90m (a bare number is milliseconds).
        #[arg(long, visible_alias = "ttl-ms", conflicts_with = "expires_at", value_name = "DURATION")]
        ttl: Option<String>,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// Change a key: name, owner, meta, expiry, scopes, allowlist, limits, quota, enabled.
    #[command(after_help = "Examples:
  keyward keys update key_01J... --scope read --scope write   # replaces the scopes
  keyward keys update key_01J... --ip-allow 203.0.113.0/24 --ratelimit minute=100/1m
  keyward keys update key_01J... --quota 500 --disable")]
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
    /// Switch a key back on.
    #[command(after_help = "Example:\n  keyward keys enable key_01J...")]
    Enable {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Switch a key off (verifies answer DISABLED) until enabled again.
    #[command(after_help = "Example:\n  keyward keys disable key_01J...")]
    Disable {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Verify a key as your API would; prints the code, exits 0 when VALID, 1 when refused.
    #[command(after_help = "Examples:
  keyward keys verify \"$KEY\"
  echo \"$KEY\" | keyward keys verify - --ip 203.0.113.7 --method POST --path /v1/invoices --scope invoices:write")]
    Verify {
        #[command(flatten)]
        conn: Conn,
        /// The key (`-` reads it from stdin, out of the shell history).
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
    /// List keys, newest first, as a table.
    #[command(after_help = "Examples:
  keyward keys list --owner-id acme --status active --limit 50
  keyward keys list --json | jq -r '.data[].id'")]
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
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one key: its policy, hint and dates (never the key).
    #[command(after_help = "Example:\n  keyward keys show key_01J...")]
    Show {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
    /// Import keys from another system by their SHA-256 hashes, from CSV or NDJSON.
    #[command(after_help = "CSV has a header row; columns: hash (hex SHA-256 of the key), prefix, and optionally
last4, owner_id, name, expires_at (RFC 3339), scopes (space-separated), meta (JSON object).
NDJSON lines are objects with the same fields (scopes as a list, meta as an object).

Example:
  keyward keys import old-keys.csv --keyspace ks_01J...")]
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
    #[command(after_help = "Examples:
  keyward keys rotate key_01J...              # 24 h overlap
  keyward keys rotate key_01J... --overlap 1h
  keyward keys rotate key_01J... --overlap 0  # the old key stops now")]
    Rotate {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// How long the old key keeps working: 1h, 7d (default 1d; at most 30d).
        #[arg(long, visible_alias = "overlap-ms", value_name = "DURATION")]
        overlap: Option<String>,
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
        /// An incident id to attach the revocation to.
        #[arg(long)]
        incident: Option<String>,
    },
}

/// A duration flag in milliseconds, or an error naming the flag.
fn duration_flag(flag: &str, value: &str) -> anyhow::Result<i64> {
    parse_duration(value).with_context(|| format!("{flag} {value:?}: write a duration such as 30d, 12h, 90m or 500ms"))
}

/// One key for people.
fn show_key(conn: &Conn, key: &Value) -> anyhow::Result<()> {
    if conn.json {
        return print_json(key);
    }
    let paint = Paint::stdout();
    let windows: Vec<String> = key["ratelimits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!("{}={}/{}", text(w, "name"), w["limit"], format_duration(w["window_ms"].as_i64().unwrap_or(0)))
        })
        .collect();
    let dated = |field: &str| match key[field].as_str() {
        Some(at) => format!("{} ({at})", when(key, field)),
        None => "-".to_owned(),
    };
    fields(
        paint,
        &[
            ("id", text(key, "id")),
            ("name", text(key, "name")),
            ("status", paint.status(&text(key, "status"))),
            ("keyspace", text(key, "keyspace_id")),
            ("owner", text(key, "owner_id")),
            ("hint", text(key, "hint")),
            ("scopes", text(key, "scopes")),
            ("ip allowlist", text(key, "ip_allowlist")),
            ("ratelimits", if windows.is_empty() { "keyspace default".into() } else { windows.join(" ") }),
            ("quota", text(key, "remaining")),
            ("expires", dated("expires_at")),
            ("last used", dated("last_used_at")),
            ("last ip", text(key, "last_used_ip")),
            ("created", dated("created_at")),
            ("rotated to", text(key, "rotated_to")),
            ("overlap until", dated("overlap_until")),
            ("meta", key["meta"].to_string()),
        ],
    );
    Ok(())
}

fn list_keys(conn: &Conn, page: &Value) -> anyhow::Result<()> {
    if conn.json {
        return print_json(page);
    }
    let mut table =
        Table::new(&["ID", "NAME", "OWNER", "STATUS", "HINT", "SCOPES", "LAST USED", "EXPIRES"]).status_column(3);
    for k in page["data"].as_array().into_iter().flatten() {
        table.row(vec![
            text(k, "id"),
            text(k, "name"),
            text(k, "owner_id"),
            text(k, "status"),
            text(k, "hint"),
            text(k, "scopes"),
            when(k, "last_used_at"),
            when(k, "expires_at"),
        ]);
    }
    table.print(Paint::stdout());
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(())
}

pub fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create { conn, keyspace, fields, ttl, policy } => {
            let mut body = json!({ "keyspace_id": keyspace });
            fields.apply(&mut body)?;
            if let Some(ttl) = ttl {
                body["ttl_ms"] = duration_flag("--ttl", &ttl)?.into();
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
            show_key(&conn, &call(&conn, "PATCH", &format!("/v1/keys/{}", encode(&id)), Some(body))?)
        }
        KeysCmd::Enable { conn, id } => set_enabled(&conn, &id, true),
        KeysCmd::Disable { conn, id } => set_enabled(&conn, &id, false),
        KeysCmd::Verify { conn, key, ip, method, path, scopes } => verify(&conn, key, ip, method, path, scopes),
        KeysCmd::List { conn, keyspace, owner_id, status, cursor, limit } => {
            let limit = limit.map(|l| l.to_string());
            let q = query(&[
                ("keyspace_id", &keyspace),
                ("owner_id", &owner_id),
                ("status", &status),
                ("cursor", &cursor),
                ("limit", &limit),
            ]);
            list_keys(&conn, &call(&conn, "GET", &format!("/v1/keys{q}"), None)?)
        }
        KeysCmd::Import { conn, file, keyspace, format } => import(&conn, &file, &keyspace, format.as_deref()),
        KeysCmd::Rotate { conn, id, overlap } => {
            let body = match overlap {
                Some(o) => json!({ "overlap_ms": duration_flag("--overlap", &o)? }),
                None => json!({}),
            };
            let rotated = call(&conn, "POST", &format!("/v1/keys/{}/rotate", encode(&id)), Some(body))?;
            show_secret(&conn, &rotated, &format!("Rotated {id} (the old key keeps working for its overlap) to"))
        }
        KeysCmd::Show { conn, id } => show_key(&conn, &call(&conn, "GET", &format!("/v1/keys/{}", encode(&id)), None)?),
        KeysCmd::Revoke { conn, id, reason, note, incident } => {
            let mut body = json!({ "reason": reason });
            if let Some(note) = note {
                body["note"] = note.into();
            }
            if let Some(incident) = incident {
                body["incident"] = incident.into();
            }
            show_key(&conn, &call(&conn, "POST", &format!("/v1/keys/{}/revoke", encode(&id)), Some(body))?)
        }
    }
}

fn set_enabled(conn: &Conn, id: &str, enabled: bool) -> anyhow::Result<()> {
    let key = call(conn, "PATCH", &format!("/v1/keys/{}", encode(id)), Some(json!({ "enabled": enabled })))?;
    if conn.json {
        return print_json(&key);
    }
    let paint = Paint::stdout();
    println!("{} {}", text(&key, "id"), paint.status(&text(&key, "status")));
    Ok(())
}

fn verify(
    conn: &Conn,
    key: String,
    ip: Option<String>,
    method: Option<String>,
    path: Option<String>,
    scopes: Vec<String>,
) -> anyhow::Result<()> {
    let key = if key == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("reading the key from stdin")?;
        line.trim().to_owned()
    } else {
        key
    };
    let mut body = json!({ "key": key });
    if let Some(ip) = ip {
        body["ip"] = ip.into();
    }
    if let Some(method) = method {
        body["method"] = method.into();
    }
    if let Some(path) = path {
        body["path"] = path.into();
    }
    if !scopes.is_empty() {
        body["scopes"] = json!(scopes);
    }
    let decision = call(conn, "POST", "/v1/keys/verify", Some(body))?;
    let valid = decision["valid"] == true;
    if conn.json {
        print_json(&decision)?;
    } else if valid {
        let paint = Paint::stdout();
        let deprecated = if decision["deprecated"] == true { " (deprecated: rotated, in its overlap)" } else { "" };
        println!(
            "{} {} owner {} scopes {}{deprecated}",
            paint.status("VALID"),
            text(&decision, "key_id"),
            text(&decision, "owner_id"),
            text(&decision, "scopes")
        );
    } else {
        let paint = Paint::stdout();
        println!(
            "{} {} {} {}",
            paint.status("REFUSED"),
            paint.status(&text(&decision, "code")),
            text(&decision, "key_id"),
            decision["message"].as_str().unwrap_or_default()
        );
    }
    if !valid {
        std::process::exit(1);
    }
    Ok(())
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

fn progress(done: usize, total: usize) {
    super::output::progress("", done as u64, total as u64);
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
