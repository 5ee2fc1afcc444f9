//! Runs the README's five-minute walkthrough word for word against the real
//! binary. The only changes: the binary path points at this build, and the
//! port is a free one instead of 8080. Needs `curl` and `jq`.

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// The ```sh blocks of the walkthrough section, in order.
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    blocks_of(readme, "## Five-minute walkthrough")
}

/// The ```sh blocks of the section under `heading`, in order.
fn blocks_of(readme: &str, heading: &str) -> Vec<String> {
    let section = readme.split(heading).nth(1).expect("README has the walkthrough");
    let section = section.split("\n## ").next().unwrap();
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").expect("closed code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn readme_walkthrough_works_word_for_word() {
    if std::env::var("KEYWARD_SKIP_WALKTHROUGH").is_ok_and(|v| v == "1") {
        eprintln!("skipped: KEYWARD_SKIP_WALKTHROUGH=1");
        return;
    }
    for tool in ["curl", "jq", "bash"] {
        assert!(
            have(tool),
            "the README walkthrough test needs `{tool}`: install it (Debian/Ubuntu: sudo apt-get install curl jq), or set KEYWARD_SKIP_WALKTHROUGH=1 to skip this test"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let blocks = walkthrough_blocks(&readme);
    assert!(blocks.len() >= 5, "{blocks:?}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(crate::util::BIN, dir.path().join("target/release/keyward")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = format!(
        "set -euo pipefail\ntrap 'kill %1 2>/dev/null || true' EXIT\n{}",
        blocks.join("\n").replace("localhost:8080", &format!("localhost:{port}"))
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("KEYWARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("KEYWARD_SERVER", format!("http://127.0.0.1:{port}"))
        .env_remove("KEYWARD_ROOT_KEY")
        .env_remove("KEYWARD_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expect in [
        r#"{"status":"ok"}"#,
        r#""code": "VALID""#,
        r#""owner_id": "acme""#,
        r#""status": "revoked""#,
        r#""code": "REVOKED""#,
        "key.revoke",
        r#""ok":true"#,
        r#""revoke_reason": "compromised""#,
    ] {
        assert!(stdout.contains(expect), "missing {expect}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
    assert!(dir.path().join("keyward-data/keyward.db").exists());
}

#[test]
fn readme_gateway_walkthrough_works_word_for_word() {
    if std::env::var("KEYWARD_SKIP_WALKTHROUGH").is_ok_and(|v| v == "1") {
        eprintln!("skipped: KEYWARD_SKIP_WALKTHROUGH=1");
        return;
    }
    for tool in ["curl", "jq", "bash", "python3"] {
        assert!(
            have(tool),
            "the README gateway walkthrough test needs `{tool}`: install it (Debian/Ubuntu: sudo apt-get install curl jq python3), or set KEYWARD_SKIP_WALKTHROUGH=1 to skip this test"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let blocks = blocks_of(&readme, "## Gateway walkthrough");
    assert!(blocks.len() >= 5, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(crate::util::BIN, dir.path().join("target/release/keyward")).unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (api, proxy, upstream) = (free(), free(), free());
    let script = format!(
        "set -euo pipefail\ntrap 'kill %1 %2 2>/dev/null || true' EXIT\n{}",
        blocks
            .join("\n")
            .replace("8080", &api.to_string())
            .replace("8081", &proxy.to_string())
            .replace("3000", &upstream.to_string())
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_remove("KEYWARD_ROOT_KEY")
        .env_remove("KEYWARD_DATA_DIR")
        .env_remove("KEYWARD_LISTEN")
        .env("KEYWARD_LISTEN", format!("127.0.0.1:{api}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gateway walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expect in [
        "HTTP/1.1 200",
        "ratelimit: \"minute\";r=99;",
        r#"{"orders": []}"#,
        r#""status": 401"#,
        r#""code": "MALFORMED""#,
        r#"{"kind":"proxy","code":"VALID","status":200,"bytes_out":15"#,
    ] {
        assert!(stdout.contains(expect), "missing {expect}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
}
