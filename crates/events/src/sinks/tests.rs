use super::*;

fn parse(toml_text: &str) -> Result<SinkConfig, String> {
    toml::from_str::<SinkConfig>(toml_text).map_err(|e| e.to_string())
}

/// Options of another kind, or a missing required one, do not parse.
#[test]
fn sink_tables_are_typed_by_kind() {
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
    let splunk = parse("kind = \"splunk\"\nname = \"s p\"\nurl = \"ftp://x\"\ntoken = \"\"\nbatch_size = 0").unwrap();
    let p = splunk.problems("sinks[1]");
    for field in ["name", "batch_size", "url", "token"] {
        assert!(p.iter().any(|m| m.starts_with(&format!("sinks[1].{field}:"))), "{field}: {p:?}");
    }
    let syslog = parse("kind = \"syslog\"\nname = \"s\"\naddress = \"nowhere\"\nfacility = 24").unwrap();
    let p = syslog.problems("x");
    assert!(p.iter().any(|m| m.contains("host:port")) && p.iter().any(|m| m.starts_with("x.facility")), "{p:?}");
    let http = parse("kind = \"http\"\nname = \"h\"\nurl = \"https://x\"\nca_file = \"/nonexistent.pem\"").unwrap();
    assert!(http.problems("y").iter().any(|m| m.starts_with("y.ca_file")));
    assert_eq!(parse("kind = \"file\"\nname = \"f\"\npath = \"/tmp/x\"").unwrap().problems("z"), Vec::<String>::new());
}

#[test]
fn file_output_rotates_by_size_and_keeps_n() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SinkConfig::File(FileSink {
        name: "f".into(),
        path: dir.path().join("events.ndjson"),
        format: None,
        max_bytes: Some(2000),
        rotate_daily: None,
        keep: Some(2),
        batch_size: None,
        from_beginning: None,
    });
    let mut out = cfg.output("h");
    let e = crate::pipeline::tests::event(1, "ws");
    for _ in 0..10 {
        out.ship(&[crate::format::Record::Usage(e.clone())]).unwrap();
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
