use super::*;

fn cfg(kind: SinkKind) -> SinkConfig {
    SinkConfig {
        name: "s".into(),
        kind,
        format: None,
        path: None,
        max_bytes: None,
        rotate_daily: None,
        keep: None,
        address: None,
        protocol: None,
        facility: None,
        url: None,
        index: None,
        token: None,
        headers: None,
        ca_file: None,
        batch_size: None,
        from_beginning: None,
    }
}

#[test]
fn config_problems_name_the_field() {
    assert_eq!(cfg(SinkKind::File).problems("sinks[0]"), ["sinks[0].path: required for kind File"]);
    let mut s = cfg(SinkKind::Splunk);
    s.url = Some("ftp://x".into());
    let p = s.problems("sinks[1]");
    assert!(p.iter().any(|m| m.starts_with("sinks[1].token")), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("sinks[1].url")), "{p:?}");
    let mut s = cfg(SinkKind::Syslog);
    s.address = Some("nowhere".into());
    assert!(s.problems("x").iter().any(|m| m.contains("host:port")));
}

#[test]
fn file_output_rotates_by_size_and_keeps_n() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(SinkKind::File);
    c.path = Some(dir.path().join("events.ndjson"));
    c.max_bytes = Some(2000);
    c.keep = Some(2);
    let mut out = Output::new(&c, "h");
    let e = crate::pipeline::tests::event(1, "ws");
    for _ in 0..10 {
        out.ship(std::slice::from_ref(&e)).unwrap();
        // Distinct rotation stamps.
        std::thread::sleep(Duration::from_millis(2));
    }
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"events.ndjson".to_string()), "{names:?}");
    assert_eq!(names.len(), 3, "the live file and two rotated ones: {names:?}");
    let live = std::fs::read_to_string(dir.path().join("events.ndjson")).unwrap();
    for line in live.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["keyward"]["key_id"], "key_1");
    }
}
