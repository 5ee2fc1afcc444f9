//! `keyward scan PATH…`: finds keyward keys in files, offline. A hit is a
//! token with a valid prefix *and* a valid checksum, so look-alike text is not
//! reported. Walks directories respecting `.gitignore` (and `.ignore`), skips
//! binary files (a NUL byte in the first 8 KiB) and files over `--max-bytes`.
//! Prints `path:line:column: hint` (the key masked to its hint); exits 1 when
//! anything is found. `--report` sends the found keys to `POST /v1/leaks`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

/// `keyward scan`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  keyward scan .\n  keyward scan --json src config > findings.ndjson\n  KEYWARD_ROOT_KEY=kw_root_... keyward scan --report ./leaked-dump"
)]
pub struct ScanCmd {
    /// Files or directories to scan.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON object per finding instead of text lines.
    #[arg(long)]
    json: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_bytes: u64,
    /// Also scan files that .gitignore excludes.
    #[arg(long)]
    no_ignore: bool,
    /// Send the keys found to the server (POST /v1/leaks), which revokes live ones.
    #[arg(long)]
    report: bool,
    /// Server for --report.
    #[arg(long, env = "KEYWARD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Root key for --report (key_manager or admin).
    #[arg(long, env = "KEYWARD_ROOT_KEY", hide_env_values = true)]
    root_key: Option<String>,
}

/// One key found in a file.
struct Finding {
    path: String,
    line: usize,
    column: usize,
    key: keyward_core::RawKey,
}

/// Scans; returns whether anything was found.
pub fn scan(cmd: ScanCmd) -> anyhow::Result<bool> {
    let mut findings = Vec::new();
    let mut files = 0u64;
    let mut skipped = 0u64;
    let mut walk = ignore::WalkBuilder::new(&cmd.paths[0]);
    for p in &cmd.paths[1..] {
        walk.add(p);
    }
    walk.hidden(false).require_git(false).git_ignore(!cmd.no_ignore).ignore(!cmd.no_ignore).git_exclude(!cmd.no_ignore);
    for entry in walk.build() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                eprintln!("warning: {e}");
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if len > cmd.max_bytes {
            skipped += 1;
            continue;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("warning: {}: {e}", path.display());
                continue;
            }
        };
        if bytes[..bytes.len().min(8192)].contains(&0) {
            skipped += 1;
            continue;
        }
        files += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for r in keyward_core::key::find_keys(line) {
                let key = keyward_core::RawKey::parse(&line[r.clone()]).context("a found key parses")?;
                findings.push(Finding { path: path.display().to_string(), line: n + 1, column: r.start + 1, key });
            }
        }
    }
    for f in &findings {
        if cmd.json {
            println!(
                "{}",
                json!({"path": f.path, "line": f.line, "column": f.column, "hint": f.key.hint(), "prefix": f.key.prefix()})
            );
        } else {
            println!("{}:{}:{}: {}", f.path, f.line, f.column, f.key.hint());
        }
    }
    eprintln!("scanned {files} files ({skipped} binary or too large skipped): {} key(s) found", findings.len());
    if cmd.report && !findings.is_empty() {
        report(&cmd, &findings)?;
    }
    Ok(!findings.is_empty())
}

fn report(cmd: &ScanCmd, findings: &[Finding]) -> anyhow::Result<()> {
    let root = cmd.root_key.as_deref().context("--report needs a root key: set KEYWARD_ROOT_KEY or pass --root-key")?;
    let mut keys: Vec<&str> = findings.iter().map(|f| f.key.expose()).collect();
    keys.sort();
    keys.dedup();
    let source =
        format!("keyward scan {}", cmd.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "));
    let conn = crate::client::Conn::new(&cmd.server, root);
    let mut revoked = 0;
    for chunk in keys.chunks(1000) {
        let answer = crate::client::call(&conn, "POST", "/v1/leaks", Some(json!({ "keys": chunk, "source": source })))?;
        for r in answer["results"].as_array().into_iter().flatten() {
            let key = r["index"].as_u64().and_then(|i| chunk.get(i as usize));
            let hint = key.and_then(|k| keyward_core::RawKey::parse(k).ok()).map(|k| k.hint()).unwrap_or_default();
            eprintln!("reported {hint}: {}", r["status"].as_str().unwrap_or("?"));
        }
        revoked += answer["revoked"].as_u64().unwrap_or(0);
        if let Some(inc) = answer["incident_id"].as_str() {
            eprintln!("incident opened: {inc} (keyward incident report {inc})");
        }
    }
    eprintln!("{revoked} live key(s) revoked");
    Ok(())
}
