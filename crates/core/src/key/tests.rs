use proptest::prelude::*;

use super::*;

fn check(input: &str, expect: Result<(), KeyFormatError>) {
    assert_eq!(check_format(input), expect, "input {input:?}");
}

fn key(prefix: &str) -> RawKey {
    RawKey::generate(&KeyPrefix::new(prefix).unwrap())
}

#[test]
fn generated_keys_parse() {
    for p in ["kw_live", "sk_test", "pk", "a1_b2_c3"] {
        let k = key(p);
        check(k.expose(), Ok(()));
        assert_eq!(k.prefix(), p);
        assert_eq!(k.expose().len(), p.len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
    }
}

#[test]
fn format_errors() {
    let k = key("kw_live");
    let s = k.expose();
    check("", Err(KeyFormatError::Length));
    check("kw_live_short", Err(KeyFormatError::Length));
    check(&format!("{s}x"), Err(KeyFormatError::Prefix));
    check(&s.replacen("kw_live_", "kw_live-", 1), Err(KeyFormatError::Prefix));
    check(&s.replacen("kw_live", "KW_LIVE", 1), Err(KeyFormatError::Prefix));
    check(&format!("{}!", &s[..s.len() - 1]), Err(KeyFormatError::Alphabet));
    check(&"a".repeat(MAX_KEY_LEN + 1), Err(KeyFormatError::Length));
    // Right shape, all zeros: the checksum cannot match.
    check(&format!("kw_live_{}", "0".repeat(RANDOM_LEN + CHECKSUM_LEN)), Err(KeyFormatError::Checksum));
    // Multi-byte characters never panic on a slice boundary.
    check(&format!("kw_liv€_{}", "0".repeat(RANDOM_LEN + CHECKSUM_LEN)), Err(KeyFormatError::Prefix));
    check(&"€".repeat(20), Err(KeyFormatError::Prefix));
}

#[test]
fn prefixes() {
    for ok in ["kw_live", "sk_test", "ab", "a1", "x_1_y"] {
        assert!(KeyPrefix::new(ok).is_ok(), "{ok}");
    }
    for bad in ["a", "_ab", "ab_", "a__b", "Ab", "1ab", "a-b", "a b", &"a".repeat(33)] {
        assert!(KeyPrefix::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_and_display_show_only_the_hint() {
    let k = key("kw_live");
    let secret = k.expose();
    let dbg = format!("{k:?} {k}");
    assert!(!dbg.contains(&secret[8..]), "{dbg}");
    assert!(dbg.contains(&secret[secret.len() - 4..]));
    assert!(k.hint().starts_with("kw_live_…"));
}

#[test]
fn random_is_spread_over_the_alphabet() {
    let s = random_base62(62 * 200);
    for c in ALPHABET {
        let n = s.bytes().filter(|b| b == c).count();
        // Expected 200 each; 100..300 fails with negligible probability.
        assert!((100..300).contains(&n), "{} appeared {n} times", *c as char);
    }
}

#[test]
fn scanner_finds_keys_in_text_and_skips_look_alikes() {
    let a = key("kw_live");
    let b = key("sk_test");
    let mut bad = b.expose().to_owned().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    let text = format!("token=\"{}\"\n{{\"k\":\"{}\"}} {bad}", a.expose(), b.expose());
    let found: Vec<&str> = find_keys(&text).into_iter().map(|r| &text[r]).collect();
    assert_eq!(found, vec![a.expose(), b.expose()]);
}

proptest! {
    #[test]
    fn round_trip(prefix in "[a-z][a-z0-9]{1,6}(_[a-z0-9]{1,6}){0,3}") {
        let k = key(&prefix);
        let parsed = RawKey::parse(k.expose()).unwrap();
        prop_assert_eq!(parsed.expose(), k.expose());
        prop_assert_eq!(parsed.prefix(), prefix.as_str());
    }

    #[test]
    fn every_single_character_change_is_caught(pos in 0usize..100, c in proptest::char::range(' ', '~')) {
        let k = key("kw_live");
        let s = k.expose();
        let pos = pos % s.len();
        prop_assume!(s.as_bytes()[pos] != c as u8);
        let mut changed = s.as_bytes().to_vec();
        changed[pos] = c as u8;
        let changed = String::from_utf8(changed).unwrap();
        prop_assert!(check_format(&changed).is_err(), "{} accepted", pos);
    }

    #[test]
    fn arbitrary_input_never_panics(s in ".{0,120}") {
        let _ = check_format(&s);
        let _ = find_keys(&s);
    }
}
