use keyward_core::{KeyPrefix, RawKey};

use super::*;

fn key() -> String {
    RawKey::generate(&KeyPrefix::new("kw_live").unwrap()).expose().to_owned()
}

/// Runs `f`; `expect` is `Ok(())` or the exact detail of the 400.
fn check<T: std::fmt::Debug>(got: Result<T>, expect: std::result::Result<(), &str>) {
    match (got, expect) {
        (Ok(_), Ok(())) => {}
        (Err(ServiceError::Invalid(d)), Err(e)) => assert_eq!(d, e),
        (got, expect) => panic!("got {got:?}, expected {expect:?}"),
    }
}

#[test]
fn details_never_repeat_a_key() {
    let k = key();
    let scope_rule = "is not a scope; use read, write, admin, or resource:action such as invoices:read or invoices:*";
    check(check_scopes("scopes", std::slice::from_ref(&k)), Err(&format!("scopes[0]: the value {scope_rule}")));
    check(check_scopes("scopes", &[format!("x:{k}!")]), Err(&format!("scopes[0]: the value {scope_rule}")));
    check(check_scopes("scopes", &["x y".into()]), Err(&format!("scopes[0]: \"x y\" {scope_rule}")));
    let cidr_rule = "is not an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or 2001:db8::/32";
    check(
        check_cidrs("ip_allowlist", std::slice::from_ref(&k)),
        Err(&format!("ip_allowlist[0]: the value {cidr_rule}")),
    );
    check(
        check_cidrs("ip_allowlist", &["10.0.0.0/33".into()]),
        Err(&format!("ip_allowlist[0]: \"10.0.0.0/33\" {cidr_rule}")),
    );
    // A key is well-formed as a scope word, so it must be refused for its shape.
    check(
        verify_fields(None, None, None, std::slice::from_ref(&k), None),
        Err(&format!("scopes[0]: the value {scope_rule}")),
    );
}

#[test]
fn verify_fields_are_bounded() {
    check(verify_fields(Some("10.0.0.1"), Some("GET"), Some("/a/b"), &["read".into()], Some(3)), Ok(()));
    check(verify_fields(Some("10.0.0"), None, None, &[], None), Err("ip is not an IPv4 or IPv6 address"));
    check(verify_fields(None, Some("GE T"), None, &[], None), Err("method must be an HTTP method such as GET or POST"));
    check(verify_fields(None, None, Some("a"), &[], None), Err("path must start with / and be at most 4096 bytes"));
    check(verify_fields(None, None, Some(&"/a".repeat(257)), &[], None), Err("path may have at most 256 segments"));
    check(verify_fields(None, None, Some(&"/a".repeat(256)), &[], None), Ok(()));
    check(verify_fields(None, None, None, &[], Some(MAX_COST + 1)), Err("cost must be between 0 and 1000000"));
    check(verify_fields(None, None, None, &[], Some(0)), Ok(()));
}

#[test]
fn path_rules_are_normalized() {
    let mut rules = vec![PathRule { pattern: "/a//**/**/b".into(), scopes: vec!["admin".into()], methods: None }];
    check(check_rules(&mut rules), Ok(()));
    assert_eq!(rules[0].pattern, "/a/**/b");
    let mut rules =
        vec![PathRule { pattern: "/a/**/b/**/c/**/d/**/e/**".into(), scopes: vec!["admin".into()], methods: None }];
    check(check_rules(&mut rules), Err("path_rules[0].pattern may hold ** at most 4 times"));
}

#[test]
fn stored_text_never_holds_a_key() {
    let k = key();
    let rule = "holds what looks like an API key or another secret; keys must never be stored in names, owners, notes or meta (revoke it if it was real)";
    check(check_text("name", &k, 200), Err(&format!("name {rule}")));
    check(check_text("owner_id", &format!("user-{k}"), 200), Err(&format!("owner_id {rule}")));
    check(check_meta(&serde_json::json!({"token": k})), Err(&format!("meta {rule}")));
    check(check_text("name", "billing service (prod)", 200), Ok(()));
    check(check_text("owner_id", "auth0|5f7c8ec7c33c6c004bbafe82", 200), Ok(()));
    check(check_meta(&serde_json::json!({"plan": "pro", "seats": 12})), Ok(()));
}
