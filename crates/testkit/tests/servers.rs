//! The throwaway servers start, answer, run side by side, and go away.

use keyward_testkit::{Postgres, Redis};

#[test]
fn two_postgres_clusters_run_side_by_side_and_answer_sql() {
    let Some(a) = Postgres::start() else { return };
    let Some(b) = Postgres::start() else { return };
    assert_ne!(a.port, b.port);
    let version: u32 = a.psql("postgres", "SHOW server_version_num").parse().unwrap();
    assert!(version >= 150_000, "PostgreSQL 15 or newer, got {version}");
    a.psql("postgres", "CREATE TABLE t (v int); INSERT INTO t VALUES (7)");
    assert_eq!(a.psql("postgres", "SELECT v FROM t"), "7");
    assert_eq!(b.psql("postgres", "SELECT count(*) FROM pg_tables WHERE tablename = 't'"), "0");
    let port = a.port;
    drop(a);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the cluster stops when dropped");
}

#[test]
fn redis_starts_on_a_socket_and_stops() {
    let Some(mut r) = Redis::start() else { return };
    let sock = r.url().trim_start_matches("unix://").to_owned();
    assert!(std::path::Path::new(&sock).exists());
    let out = std::process::Command::new("redis-cli").args(["-s", &sock, "PING"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    r.kill();
    let out = std::process::Command::new("redis-cli").args(["-s", &sock, "PING"]).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}
