//! Throwaway servers for tests, started from the machine's own binaries in a
//! temp dir and stopped when dropped: [`Postgres`] (a fresh cluster made
//! with `initdb`, on a free port) and [`Redis`] (on a Unix socket). Real
//! engines, never mocks. When a binary is missing the test fails with how
//! to install it, unless the suite was told to skip (`KEYWARD_SKIP_POSTGRES=1`,
//! `KEYWARD_SKIP_REDIS=1`), in which case `start` returns `None`. [`Browser`] is
//! a ChromeDriver over Debian's headless Chromium (`KEYWARD_SKIP_BROWSER=1`).
//!
//! PostgreSQL refuses to run as root, so as root the cluster is made and run
//! as the `postgres` user (Debian's package creates it) or else `nobody`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skip(var: &str) -> bool {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {var}=1");
        return true;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A throwaway PostgreSQL cluster with a superuser `keyward` (trust auth on loopback).
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<String>,
    pub port: u16,
}

impl Postgres {
    /// Makes and starts a cluster; `None` with `KEYWARD_SKIP_POSTGRES=1`.
    /// For speed it runs without fsync (`fsync=off`, `synchronous_commit=off`).
    pub fn start() -> Option<Postgres> {
        Self::start_inner(false)
    }

    /// [`Postgres::start`] with PostgreSQL's durable defaults (fsync on every
    /// commit), for benchmarks whose figures must be honest.
    pub fn start_durable() -> Option<Postgres> {
        Self::start_inner(true)
    }

    fn start_inner(durable: bool) -> Option<Postgres> {
        if skip("KEYWARD_SKIP_POSTGRES") {
            return None;
        }
        let bin = pg_bin().unwrap_or_else(|| {
            panic!(
                "these tests start a real PostgreSQL (15 or newer) and found no initdb/pg_ctl: install it \
                 (Debian: apt-get install postgresql), or set KEYWARD_SKIP_POSTGRES=1 to skip them"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let user = run_as();
        if let Some(u) = &user {
            chown(dir.path(), u);
        }
        let pg = Postgres { dir, bin, user, port: 0 };
        let data = pg.dir.path().join("data");
        pg.run("initdb", &["-D", data.to_str().unwrap(), "-U", "keyward", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let mut pg = pg;
        // A port can be taken between the probe and the bind: try a few.
        for _ in 0..5 {
            pg.port = free_port();
            let fast = if durable { "" } else { " -c fsync=off -c synchronous_commit=off" };
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1{fast} -c max_connections=200",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("postgres.log");
            let ok = pg.try_run(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "30", "start"],
            );
            if ok {
                return Some(pg);
            }
        }
        panic!("PostgreSQL did not start; see its log in {}", pg.dir.path().display());
    }

    /// `postgres://keyward@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://keyward@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with `psql` and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        self.command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).current_dir(self.dir.path()).output().expect("runs");
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once (as a crash would), keeping the files.
    pub fn kill(&self) {
        let data = self.dir.path().join("data");
        let _ = self.try_run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory of `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/N/bin`
/// (Debian keeps them off the PATH), else the PATH's.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("pg_ctl").exists() && p.join("postgres").exists())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    let out = Command::new("sh").args(["-c", "command -v pg_ctl"]).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.parent().filter(|p| p.join("initdb").exists()).map(Path::to_owned)
}

/// Who runs PostgreSQL: nobody special unless we are root.
fn run_as() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let has = |u: &str| Command::new("id").arg(u).output().is_ok_and(|o| o.status.success());
    Some(if has("postgres") { "postgres" } else { "nobody" }.to_owned())
}

fn chown(path: &Path, user: &str) {
    let ok = Command::new("chown").args(["-R", user]).arg(path).status().is_ok_and(|s| s.success());
    assert!(ok, "chown {user} {}", path.display());
}

/// A throwaway `redis-server` on a Unix socket, without persistence.
pub struct Redis {
    dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    /// Starts one; `None` with `KEYWARD_SKIP_REDIS=1`.
    pub fn start() -> Option<Redis> {
        if skip("KEYWARD_SKIP_REDIS") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700", "--unixsocket"])
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests start a real redis-server ({e}): install it (Debian: apt-get install redis-server), \
                     or set KEYWARD_SKIP_REDIS=1 to skip them"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "redis-server did not open its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Redis { dir, child })
    }

    /// `unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }

    /// Stops the server at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway ChromeDriver on a free port, driving Debian's headless
/// Chromium with a fresh profile; `None` with `KEYWARD_SKIP_BROWSER=1`.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    pub port: u16,
}

/// Debian's paths (packages `chromium` and `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    pub fn start() -> Option<Browser> {
        if skip("KEYWARD_SKIP_BROWSER") {
            return None;
        }
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "the dashboard tests drive a real headless Chromium and need {bin}: install it \
                 (Debian: apt-get install chromium chromium-driver), or set KEYWARD_SKIP_BROWSER=1 to skip them"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {CHROMEDRIVER}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Browser { child, profile: tempfile::tempdir().unwrap(), port })
    }

    /// The WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Chromium's arguments: headless, no sandbox (the suite runs as root),
    /// no background traffic (the machine's network is closed), a fresh
    /// profile, a laptop-sized window.
    pub fn chromium_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", self.profile.path().display()));
        args
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
