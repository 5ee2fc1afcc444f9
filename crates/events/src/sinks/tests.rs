use super::*;

fn cfg(kind: SinkKind) -> SinkSettings {
    SinkSettings { name: "s".into(), ..SinkSettings::blank(kind) }
}

/// Options of another kind, or a missing required one, do not parse.
#[test]
fn sink_tables_are_typed_by_kind() {
    let parse = |t: &str| toml::from_str::<SinkConfig>(t).map_err(|e| e.to_string());
    assert!(parse("kind = \"file\"\nname = \"f\"\npath = \"/tmp/x\"").is_ok());
    let e = parse("kind = \"file\"\nname = \"f\"\npath = \"/tmp/x\"\ntoken = \"t\"").unwrap_err();
    assert!(e.contains("unknown field `token`"), "{e}");
    let e = parse("kind = \"splunk\"\nname = \"s\"\nurl = \"https://x\"").unwrap_err();
    assert!(e.contains("missing field `token`"), "{e}");
    let e = parse("kind = \"smtp\"\nname = \"s\"").unwrap_err();
    assert!(e.contains("unknown variant `smtp`"), "{e}");
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
