use proptest::prelude::*;

use super::*;
use crate::key::{KeyPrefix, RawKey};

fn key(prefix: &str) -> String {
    RawKey::generate(&KeyPrefix::new(prefix).unwrap()).expose().to_owned()
}

fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// `text` redacted with `prefixes` must equal `expect`.
fn check(text: &str, prefixes: &[&str], expect: &str) {
    let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    assert_eq!(redact(text, &prefixes), expect, "text {text:?}");
}

#[test]
fn keys_in_every_disguise_are_cut() {
    let k = key("kw_live");
    let body = &k["kw_live_".len()..];
    check(&k, &[], "[key]");
    check(&format!("/api/{k}"), &[], "/api/[key]");
    check(&format!("/api/token_{k}"), &[], "/api/token_[key]");
    check(&format!("/api/{k}abc"), &[], "/api/[key]");
    check(&format!("k_{k}"), &[], "k_[key]");
    check(&format!("/x/{}", k.replace('_', "%5F")), &[], "/x/[key]");
    check(&format!("/x/{}", pct(&k)), &[], "/x/[key]");
    check(&format!("/x/{}", k.replace('_', "%255F")), &[], "/x/[key]");
    check(&format!("/x/{body}"), &[], "/x/[key]");
    check(&format!("Mozilla/5.0 ({k})"), &[], "Mozilla/5.0 ([key])");
    check(&format!("{k},{k}"), &[], "[key],[key]");
}

#[test]
fn imported_prefixes_are_cut() {
    check("/v/legacy_abcdefghijklmnopqrstuvwx/y", &["legacy_"], "/v/[key]/y");
    check("/v/xlegacy_abcdefghijklmnop", &["legacy_"], "/v/x[key]");
    // Too short after the prefix to be a key.
    check("/v/legacy_short", &["legacy_"], "/v/legacy_short");
}

#[test]
fn ordinary_text_is_kept() {
    for t in [
        "/v1/invoices/42/lines",
        "/files/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "/users/123e4567-e89b-12d3-a456-426614174000",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "curl/8.5.0",
        "/a%2Fb/%E2%82%AC",
        "key_01JABCDEFGHJKMNPQRSTVWXYZ0",
        "%",
        "%%4",
    ] {
        check(t, &[], t);
    }
}

#[test]
fn multibyte_text_survives() {
    let k = key("sk_test");
    check(&format!("é/{k}/ü"), &[], "é/[key]/ü");
    check(&format!("€{k}"), &["€"], "[key]");
}

proptest! {
    /// A key planted anywhere in arbitrary text, in any of the forms, is cut,
    /// and redaction never panics.
    #[test]
    fn planted_keys_never_survive(
        before in "\\PC{0,40}",
        after in "\\PC{0,40}",
        form in 0usize..4,
    ) {
        let k = key("pk_live");
        let planted = match form {
            0 => k.clone(),
            1 => k.replace('_', "%5F"),
            2 => pct(&k),
            _ => k["pk_live_".len()..].to_owned(),
        };
        let text = format!("{before}{planted}{after}");
        let out = redact(&text, &[]);
        prop_assert!(!out.contains(&k[8..]), "{:?}", out);
        prop_assert!(!out.contains(&planted), "{:?}", out);
    }

    #[test]
    fn redaction_never_panics(text in "\\PC{0,200}", p in "\\PC{0,4}") {
        let _ = redact(&text, &[p]);
    }
}

#[test]
fn cost_is_linear_on_adversarial_text() {
    // Underscores every 39 bytes, each followed by a 38-character body: the
    // checksum is tried at every one of them.
    let unit = format!("_{}", "A".repeat(38));
    let text = unit.repeat(4096 / unit.len() + 1);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let _ = redact(&text, &["A".into(), "AA".into()]);
    }
    // Generous: this takes well under a millisecond per call.
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}
