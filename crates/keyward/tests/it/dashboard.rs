//! The web dashboard (issue 14): an operator's session in a real headless
//! Chromium over WebDriver (log in, search, open a key and its charts,
//! revoke, acknowledge an alert, log out, with screenshots kept under
//! `target/tmp/dashboard/`), and over plain HTTP what a page refuses: no
//! session, no CSRF token, another site, a role that may not, a revoked key.

use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::util::{Clock, Res, Server, eventually, send};

/// Keys, an hour of traffic (the server's clock moved two minutes at a time)
/// and alerts for the dashboard to show. Returns the busy key's id, raw key
/// and request count, the key to revoke and its raw key, and the leaked raw key.
struct Scene {
    busy: String,
    busy_key: String,
    requests: u64,
    old: String,
    old_key: String,
    leaked_key: String,
}

fn scene(s: &Server, clock: &mut Clock) -> Scene {
    let ks =
        s.create("/v1/keyspaces", json!({"name": "payments", "prefix": "sk_live"}))["id"].as_str().unwrap().to_owned();
    let (busy, busy_key) =
        s.key(json!({"keyspace_id": ks, "name": "checkout-service", "owner_id": "team-checkout", "scopes": ["read"]}));
    let (old, old_key) =
        s.key(json!({"keyspace_id": ks, "name": "legacy-batch", "owner_id": "team-ops", "scopes": ["read"]}));
    let (_, leaked_key) = s.key(json!({"keyspace_id": ks, "name": "intern-laptop", "owner_id": "team-ops"}));
    let root = s.root.clone();
    let mut requests = 0;
    for step in 0..30u64 {
        clock.set_quietly(step as i64 * 120_000);
        // A daily-looking curve, and a burst of refused scopes in the middle.
        let n = 6 + (step * 7) % 13 + if (10..20).contains(&step) { 8 } else { 0 };
        for i in 0..n {
            let ip = format!("198.51.100.{}", i % 3 + 1);
            assert_eq!(s.verify_as(&root, json!({"key": busy_key, "ip": ip, "scopes": ["read"]}))["code"], "VALID");
        }
        requests += n;
        if (18..22).contains(&step) {
            for _ in 0..4 {
                let v = s.verify_as(&root, json!({"key": busy_key, "ip": "203.0.113.9", "scopes": ["admin"]}));
                assert_eq!(v["code"], "FORBIDDEN");
            }
            requests += 4;
        }
        if step % 5 == 0 {
            s.verify_as(&root, json!({"key": old_key, "ip": "192.0.2.7"}));
        }
    }
    // A leak report revokes the key and raises a critical alert.
    let r = s.call("POST", "/v1/leaks", Some(json!({"keys": [leaked_key], "source": "paste site"})));
    assert_eq!(r.status, 200, "{}", r.text);
    // The rollups follow the event log within a second or so, the hour buckets a little later.
    eventually(20, "the busy key's rollups", || {
        let a = s.call("GET", &format!("/v1/keys/{busy}/analytics?granularity=minute"), None).json();
        (a["totals"]["requests"] == requests).then_some(())
    });
    eventually(30, "the hourly top list", || {
        let t = s.call("GET", "/v1/analytics/top", None).json();
        (t["items"][0]["requests"] == requests).then_some(())
    });
    eventually(10, "the leak alert", || {
        let a = s.call("GET", "/v1/alerts?status=open", None).json();
        a["data"].as_array().unwrap().iter().any(|a| a["rule"] == "leak").then_some(())
    });
    Scene { busy, busy_key, requests, old, old_key, leaked_key }
}

fn capabilities(browser: &keyward_testkit::Browser) -> serde_json::Map<String, Value> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": keyward_testkit::CHROMIUM, "args": browser.chromium_args() },
    });
    caps.as_object().unwrap().clone()
}

fn shots_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_operator_logs_in_finds_a_key_sees_its_chart_revokes_it_acknowledges_an_alert_and_logs_out() {
    let Some(browser) = keyward_testkit::Browser::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut clock = Clock::new(dir.path());
    let s = Server::start_with(&[("KEYWARD_TEST_CLOCK_FILE", clock.file.to_str().unwrap())]);
    let Scene { busy, busy_key, requests, old, old_key, leaked_key } = scene(&s, &mut clock);
    let base = s.url("");
    let root = s.root.clone();
    let shots = shots_dir();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sources = rt.block_on(async {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(capabilities(&browser))
            .connect(&browser.url())
            .await
            .expect("a WebDriver session with headless Chromium");
        let mut sources = Vec::new();
        // A screenshot of every step, and an accessibility audit of its page.
        let shot = |name: &'static str| {
            let c = c.clone();
            let path = shots.join(name);
            async move {
                let png = c.screenshot().await.unwrap();
                assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
                std::fs::write(&path, png).unwrap();
                let violations = accessibility_violations(&c).await;
                assert!(violations.is_empty(), "{name}: WCAG violations: {violations:#?}");
            }
        };

        // Without a session the dashboard sends the browser to the login form.
        c.goto(&format!("{base}/ui/keys")).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
        shot("01-login.png").await;
        c.find(Locator::Css("#root_key")).await.unwrap().send_keys(&root).await.unwrap();
        c.find(Locator::Css("form.login button[type=submit]")).await.unwrap().click().await.unwrap();
        at(&c, "/ui/").await;
        let h1 = c.wait().for_element(Locator::Css("main h1")).await.unwrap();
        assert_eq!(h1.text().await.unwrap(), "Overview");
        // The overview names the busiest key and the open alert, and draws the traffic.
        c.wait().for_element(Locator::Css(".charts[data-points] canvas")).await.unwrap();
        let page = c.source().await.unwrap();
        assert!(page.contains("checkout-service"), "the top keys list the busy key");
        assert!(page.contains("FORBIDDEN"), "denials by reason list FORBIDDEN");
        assert!(page.contains(">leak<"), "the open leak alert is listed");
        sources.push(page);
        shot("02-overview.png").await;

        // Search by name prefix, any case.
        c.find(Locator::LinkText("Keys")).await.unwrap().click().await.unwrap();
        let q = c.wait().for_element(Locator::Css("#q")).await.unwrap();
        q.send_keys("CHECKOUT").await.unwrap();
        c.find(Locator::Css("form.search button")).await.unwrap().click().await.unwrap();
        c.wait().for_url(&url_of(&format!("{base}/ui/keys?q=CHECKOUT&status=&keyspace_id="))).await.unwrap();
        c.wait().for_element(Locator::Css("table.keys")).await.unwrap();
        let rows = c.find_all(Locator::Css("table.keys tbody tr")).await.unwrap();
        assert_eq!(rows.len(), 1, "one key matches");
        let page = c.source().await.unwrap();
        assert!(page.contains("checkout-service") && !page.contains("legacy-batch"));
        sources.push(page);
        shot("03-search.png").await;

        // The key's page: its charts with data.
        c.find(Locator::LinkText("checkout-service")).await.unwrap().click().await.unwrap();
        at(&c, &format!("/ui/keys/{busy}")).await;
        let charts = c.wait().for_element(Locator::Css(".charts[data-points]")).await.unwrap();
        assert_eq!(charts.attr("data-requests").await.unwrap(), Some(requests.to_string()));
        let points: u32 = charts.attr("data-points").await.unwrap().unwrap().parse().unwrap();
        assert!(points >= 20, "an hour of traffic in two-minute steps fills {points} minute buckets");
        let canvases =
            c.execute("return document.querySelectorAll('.charts figure canvas').length", vec![]).await.unwrap();
        assert!(canvases.as_u64().unwrap() >= 4, "four uPlot charts: {canvases}");
        let page = c.source().await.unwrap();
        assert!(page.contains("198.51.100.1") && page.contains("203.0.113.9"), "recent addresses are listed");
        assert!(page.contains(&busy));
        sources.push(page);
        shot("04-key.png").await;

        // Revoke another key, with the confirmation box ticked.
        c.goto(&format!("{base}/ui/keys/{old}")).await.unwrap();
        c.wait().for_element(Locator::Css("#confirm")).await.unwrap().click().await.unwrap();
        c.find(Locator::Css("form.revoke button[type=submit]")).await.unwrap().click().await.unwrap();
        at_with_query(&c, &format!("/ui/keys/{old}")).await;
        let notice = c.wait().for_element(Locator::Css("p.notice")).await.unwrap();
        assert_eq!(notice.text().await.unwrap(), "Key revoked.");
        let status = c.find(Locator::Css("dl.facts .status")).await.unwrap().text().await.unwrap();
        assert_eq!(status, "revoked");
        sources.push(c.source().await.unwrap());
        shot("05-revoked.png").await;

        // Acknowledge the open alert.
        c.find(Locator::LinkText("Alerts")).await.unwrap().click().await.unwrap();
        at(&c, "/ui/alerts").await;
        let ack = c
            .wait()
            .for_element(Locator::Css("tr[data-rule=leak] button[aria-label^='Acknowledge alert']"))
            .await
            .unwrap();
        ack.click().await.unwrap();
        at_with_query(&c, "/ui/alerts").await;
        let notice = c.wait().for_element(Locator::Css("p.notice")).await.unwrap();
        assert_eq!(notice.text().await.unwrap(), "Alert acknowledged.");
        sources.push(c.source().await.unwrap());
        shot("06-alerts.png").await;

        // Log out: the session is gone, the pages send the browser back to the login form.
        c.find(Locator::Css(".who button")).await.unwrap().click().await.unwrap();
        at(&c, "/ui/login").await;
        c.wait().for_element(Locator::Css("#root_key")).await.unwrap();
        c.goto(&format!("{base}/ui/keys/{busy}")).await.unwrap();
        assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
        sources.push(c.source().await.unwrap());
        c.close().await.unwrap();
        sources
    });
    eprintln!("dashboard screenshots in {}", shots.display());

    // What the browser did happened: the key is revoked, the alert acknowledged by this root key.
    assert_eq!(s.code(&old_key), "REVOKED");
    assert_eq!(s.code(&busy_key), "VALID");
    let alerts = s.call("GET", "/v1/alerts?status=acknowledged", None).json();
    let ack =
        alerts["data"].as_array().unwrap().iter().find(|a| a["rule"] == "leak").expect("the leak alert, acknowledged");
    let me = s.call("GET", "/v1/root-keys", None).json();
    assert_eq!(ack["acknowledged_by"], me[0]["id"], "{ack}");
    // No raw key in any page the browser saw, nor in the server's log.
    let log = s.log.lock().clone();
    for k in [&busy_key, &old_key, &leaked_key, &root] {
        for (i, src) in sources.iter().enumerate() {
            assert!(!src.contains(k.as_str()), "page {i} holds a raw key");
        }
        assert!(!log.contains(k.as_str()), "the log holds a raw key");
    }
}

/// axe-core 4.10.3 (MPL-2.0), vendored for this test only: the accessibility
/// engine browsers' own audits use.
const AXE: &str = include_str!("../assets/axe-core/axe.min.js");

/// Runs axe-core's WCAG 2 A and AA rules (labels, names, contrast, landmarks,
/// keyboard traps…) on the page in the browser; returns the violations.
async fn accessibility_violations(c: &fantoccini::Client) -> Vec<String> {
    c.execute(AXE, vec![]).await.expect("axe-core loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
               .then(r => done({ passes: r.passes.map(p => p.id), violations: r.violations.map(v => v.id + ' ('
                 + v.impact + '): ' + v.help + ' at ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')) }))
               .catch(e => done({ passes: [], violations: ['axe failed: ' + e] }));",
            vec![],
        )
        .await
        .unwrap();
    // The audit ran for real: labels, names and contrast were among the rules that passed.
    let passes: Vec<&str> = found["passes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for rule in ["color-contrast", "document-title", "html-has-lang"] {
        assert!(
            passes.contains(&rule) || !found["violations"].as_array().unwrap().is_empty(),
            "axe did not check {rule}: {passes:?}"
        );
    }
    found["violations"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Waits until the browser shows `path` (navigation after a click is not instant).
async fn at(c: &fantoccini::Client, path: &str) {
    wait_url(c, path, false).await
}

/// Waits until the browser shows `path` with a query (a form's redirect with `?done=`).
async fn at_with_query(c: &fantoccini::Client, path: &str) {
    wait_url(c, path, true).await
}

async fn wait_url(c: &fantoccini::Client, path: &str, query: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let u = c.current_url().await.unwrap();
        if u.path() == path && u.query().is_some() == query {
            return;
        }
        assert!(Instant::now() < deadline, "the browser stayed at {u}, not {path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn url_of(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

// ------------------------------------------------------------ over HTTP ---

/// A browser-like client: no redirects followed, cookies kept by hand.
struct Tab<'a> {
    s: &'a Server,
    cookies: Vec<(String, String)>,
}

impl<'a> Tab<'a> {
    fn new(s: &'a Server) -> Self {
        Tab { s, cookies: Vec::new() }
    }

    fn req(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>, extra: &[(&str, &str)]) -> Res {
        let mut agent = ureq::AgentBuilder::new().redirects(0);
        if let Some(tls) = &self.s.tls_client {
            agent = agent.tls_config(tls.clone());
        }
        let agent = agent.build();
        let mut r = agent.request(method, &self.s.url(path));
        let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !jar.is_empty() {
            r = r.set("Cookie", &jar.join("; "));
        }
        for (k, v) in extra {
            r = r.set(k, v);
        }
        let body = form.map(|f| {
            r = r.clone().set("Content-Type", "application/x-www-form-urlencoded");
            serde_urlencoded::to_string(f).unwrap()
        });
        let res = send(r, body.as_deref()).unwrap();
        for (k, v) in &res.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
                let (name, value) = pair.split_once('=').unwrap();
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() && !attrs.contains("Max-Age=0") {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        res
    }

    fn get(&mut self, path: &str) -> Res {
        self.req("GET", path, None, &[])
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Res {
        self.req("POST", path, Some(form), &[])
    }

    fn login(&mut self, root: &str) -> Res {
        let form = self.get("/ui/login");
        assert_eq!(form.status, 200);
        let token = hidden(&form.text, "csrf");
        self.post("/ui/login", &[("root_key", root), ("csrf", &token)])
    }
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} field in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[test]
fn pages_without_a_session_show_nothing_and_forms_without_their_token_are_refused() {
    let s = Server::start();
    let ks = s.keyspace();
    let (id, key) = s.key(json!({"keyspace_id": ks, "name": "secret-project", "owner_id": "acme"}));

    // No session: redirected to the login form, no data in the answer; the chart API answers 401.
    let mut anon = Tab::new(&s);
    for path in ["/ui/", "/ui/keys", &format!("/ui/keys/{id}"), "/ui/alerts", "/ui/audit"] {
        let r = anon.get(path);
        assert_eq!(r.status, 303, "{path}");
        assert_eq!(r.header("location"), Some("/ui/login"));
        assert!(!r.text.contains("secret-project") && !r.text.contains(&id), "{path}: {}", r.text);
    }
    anon.get(&format!("/ui/api/keys/{id}/series")).problem(401);
    // Every answer carries the security headers.
    let login = anon.get("/ui/login");
    assert!(login.header("content-security-policy").unwrap().contains("script-src 'self'"));
    assert!(!login.header("content-security-policy").unwrap().contains("unsafe-inline"));
    assert_eq!(login.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(login.header("referrer-policy"), Some("same-origin"));
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");

    // The login form needs its own token (double submit), and a valid root key.
    let mut tab = Tab::new(&s);
    let r = tab.post("/ui/login", &[("root_key", &s.root), ("csrf", "0".repeat(64).as_str())]);
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.header("set-cookie").is_none_or(|c| !c.starts_with("kw_session")));
    let r = tab.login("kw_root_notarealkeynotarealkeynotarealkey0");
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("not valid"));
    let r = tab.login(&s.root);
    assert_eq!(r.status, 303, "{}", r.text);
    let session = r.headers.iter().find(|(k, v)| k == "set-cookie" && v.starts_with("kw_session=")).unwrap().1.clone();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/ui"));
    let page = tab.get(&format!("/ui/keys/{id}"));
    assert_eq!(page.status, 200);
    assert!(page.text.contains("secret-project"));
    let csrf = hidden(&page.text, "csrf");

    // A state change without the token, with a wrong one, or from another site is refused, and changes nothing.
    let revoke = format!("/ui/keys/{id}/revoke");
    for (form, extra) in [
        (vec![("confirm", "yes")], vec![]),
        (vec![("confirm", "yes"), ("csrf", "f".repeat(64).as_str())], vec![]),
        (vec![("confirm", "yes"), ("csrf", csrf.as_str())], vec![("Sec-Fetch-Site", "cross-site")]),
        (vec![("confirm", "yes"), ("csrf", csrf.as_str())], vec![("Origin", "https://evil.example")]),
        (vec![("confirm", "yes"), ("csrf", csrf.as_str())], vec![("Origin", "null")]),
    ] {
        let r = tab.req("POST", &revoke, Some(&form), &extra);
        assert_eq!(r.status, 403, "{form:?} {extra:?}: {}", r.text);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }
    assert_eq!(s.code(&key), "VALID");
    // Another session's token is not this one's.
    let mut other = Tab::new(&s);
    other.login(&s.root);
    let other_csrf = hidden(&other.get("/ui/keys").text, "csrf");
    assert_ne!(other_csrf, csrf);
    let r = tab.post(&revoke, &[("confirm", "yes"), ("csrf", &other_csrf)]);
    assert_eq!(r.status, 403);
    // Without the confirmation, every action asks first and changes nothing.
    for action in ["revoke", "disable", "rotate"] {
        let r = tab
            .post(&format!("/ui/keys/{id}/{action}"), &[("csrf", &csrf), ("reason", "leaked"), ("overlap_hours", "1")]);
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.contains("name=\"confirm\" value=\"yes\""), "{action}: a confirmation form: {}", r.text);
        assert!(r.text.contains(&format!("Yes, {action} secret-project")));
        assert_eq!(s.code(&key), "VALID", "{action} before its confirmation");
    }
    // Confirmed, a disable takes effect on the next verify; enabling brings the key back.
    let r = tab.post(&format!("/ui/keys/{id}/disable"), &[("csrf", &csrf), ("confirm", "yes")]);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(s.code(&key), "DISABLED");
    tab.post(&format!("/ui/keys/{id}/enable"), &[("csrf", &csrf), ("confirm", "yes")]);
    assert_eq!(s.code(&key), "VALID");

    // A key created in the dashboard is shown once, on the answer to the form.
    let r = tab
        .post("/ui/keys", &[("csrf", &csrf), ("keyspace_id", &ks), ("name", "made-in-ui"), ("scopes", "read, write")]);
    assert_eq!(r.status, 200, "{}", r.text);
    let made = hidden_value(&r.text);
    assert_eq!(s.code(&made), "VALID");
    let made_id = s.verify(&made)["key_id"].as_str().unwrap().to_owned();
    let later = tab.get(&format!("/ui/keys/{made_id}"));
    assert!(later.text.contains("made-in-ui") && !later.text.contains(&made));
    assert!(!s.log.lock().contains(&made));

    // A crafted link cannot write on a page: only the known `done` codes show a message.
    let crafted = tab.get("/ui/keys?done=Your+key+leaked.+Call+555-0100");
    assert_eq!(crafted.status, 200);
    assert!(!crafted.text.contains("555-0100") && !crafted.text.contains("class=\"notice\""), "{}", crafted.text);
    // The search finds by owner and by hint; bad input is a 400 page.
    let found = tab.get("/ui/keys?q=acme");
    assert!(found.text.contains("secret-project") && !found.text.contains("made-in-ui"));
    let tail = &key[key.len() - 4..];
    assert!(tab.get(&format!("/ui/keys?q={tail}")).text.contains("secret-project"));
    let bad = tab.get("/ui/keys?status=sideways");
    assert_eq!(bad.status, 400);
    assert!(bad.header("content-type").unwrap().starts_with("text/html"));

    // An auditor sees keys but gets no revoke form, and a forged post is refused by the service.
    let auditor = s.create("/v1/root-keys", json!({"name": "audit", "role": "auditor"}));
    let auditor_key = auditor["key"].as_str().unwrap().to_owned();
    let mut aud = Tab::new(&s);
    assert_eq!(aud.login(&auditor_key).status, 303);
    let page = aud.get(&format!("/ui/keys/{id}"));
    assert!(page.text.contains("secret-project") && !page.text.contains("form class=\"revoke\""));
    let aud_csrf = hidden(&page.text, "csrf");
    let r = aud.post(&revoke, &[("confirm", "yes"), ("csrf", &aud_csrf)]);
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(s.code(&key), "VALID");
    // A verifier may read nothing here: the navigation offers nothing but the overview, which is empty.
    let verifier =
        s.create("/v1/root-keys", json!({"name": "gw", "role": "verifier"}))["key"].as_str().unwrap().to_owned();
    let mut ver = Tab::new(&s);
    assert_eq!(ver.login(&verifier).status, 303);
    let home = ver.get("/ui/");
    assert_eq!(home.status, 200);
    assert!(!home.text.contains("href=\"/ui/keys\"") && !home.text.contains("secret-project"), "{}", home.text);
    assert_eq!(ver.get("/ui/keys").status, 403);
    // Revoking the session's root key ends the session at once.
    let r = s.call("DELETE", &format!("/v1/root-keys/{}", auditor["id"].as_str().unwrap()), None);
    assert!(r.status < 300, "{}", r.text);
    assert_eq!(aud.get("/ui/keys").status, 303);

    // Logging out needs the token too, then the session is gone.
    assert_eq!(tab.post("/ui/logout", &[]).status, 403);
    assert_eq!(tab.post("/ui/logout", &[("csrf", &csrf)]).status, 303);
    assert_eq!(tab.get("/ui/keys").status, 303);
    // The old cookie, replayed, is dead as well.
    let mut replay = Tab::new(&s);
    replay.cookies.push(("kw_session".into(), session.split(';').next().unwrap()[11..].to_owned()));
    assert_eq!(replay.get("/ui/keys").status, 303);
}

/// The raw key on a "shown once" page.
fn hidden_value(page: &str) -> String {
    let at = page.find("id=\"newkey\"").expect("the new key's field");
    let rest = &page[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    rest[v..v + rest[v..].find('"').unwrap()].to_owned()
}

#[test]
fn every_page_shows_what_the_api_holds_and_none_carries_inline_script_or_style() {
    let s = Server::start();
    let ks =
        s.create("/v1/keyspaces", json!({"name": "billing", "prefix": "sk_bill", "default_scopes": ["read"]}))["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (id, key) = s.key(json!({"keyspace_id": ks, "name": "invoice-worker", "owner_id": "acme"}));
    assert_eq!(s.code(&key), "VALID");
    let inc = s.create(
        "/v1/incidents",
        json!({"title": "Key pasted in a public gist", "key_ids": [id], "impact": "read access to invoices"}),
    );
    let hooks = crate::util::Capture::start();
    let hook = s.create("/v1/webhooks", json!({"url": format!("{}/keyward", hooks.url()), "description": "on-call"}));
    s.call("POST", "/v1/leaks", Some(json!({"keys": [key], "source": "gist"})));
    eventually(10, "a delivery", || {
        let d = s.call("GET", &format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap()), None).json();
        (!d["data"].as_array().unwrap().is_empty()).then_some(())
    });

    eventually(10, "the verify's event", || {
        let e = s.call("GET", &format!("/v1/events?key_id={id}"), None).json();
        (!e["data"].as_array().unwrap().is_empty()).then_some(())
    });
    let mut tab = Tab::new(&s);
    assert_eq!(tab.login(&s.root).status, 303);
    let inc_id = inc["id"].as_str().unwrap();
    let hook_id = hook["id"].as_str().unwrap();
    let alerts = s.call("GET", "/v1/alerts", None).json();
    let leak = alerts["data"].as_array().unwrap().iter().find(|a| a["rule"] == "leak").expect("the leak alert");
    let alert_id = leak["id"].as_str().unwrap();
    for (path, wants) in [
        ("/ui/".to_owned(), vec!["Traffic, last 24 hours", "Open alerts", ">leak<"]),
        ("/ui/keys".to_owned(), vec!["invoice-worker", "revoked"]),
        (format!("/ui/keys/{id}"), vec!["invoice-worker", "acme", "Recent events", "<code>VALID</code>", "(leaked)"]),
        ("/ui/keyspaces".to_owned(), vec!["billing", "sk_bill", "read"]),
        ("/ui/alerts?status=open".to_owned(), vec!["key found leaked (gist)", "Acknowledge"]),
        (
            format!("/ui/alerts/{alert_id}"),
            vec!["key found leaked (gist)", "The events that crossed it", "Findings folded in"],
        ),
        ("/ui/incidents".to_owned(), vec!["Key pasted in a public gist"]),
        (
            format!("/ui/incidents/{inc_id}"),
            vec!["read access to invoices", "Usage review", "<caption>Outcomes</caption>", "<code>VALID</code>", "# "],
        ),
        ("/ui/audit".to_owned(), vec!["The hash chain holds", "key.create", "incident.create"]),
        ("/ui/webhooks".to_owned(), vec!["/keyward", "on-call"]),
        (format!("/ui/webhooks/{hook_id}"), vec!["alert.opened", "key.revoked", "delivered"]),
    ] {
        let r = tab.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert!(r.header("content-type").unwrap().starts_with("text/html"), "{path}");
        for w in wants {
            assert!(r.text.contains(w), "{path} lacks {w:?}: {}", r.text);
        }
        // The CSP allows no inline script or style: none is written.
        assert!(!r.text.contains("<script>") && !r.text.contains(" style=") && !r.text.contains(" onclick="), "{path}");
        // Every form field has a label.
        for input in r.text.split("<input").skip(1) {
            let tag = &input[..input.find('>').unwrap()];
            if tag.contains("type=\"hidden\"") || tag.contains("type=\"checkbox\"") {
                continue;
            }
            let id = tag.split("id=\"").nth(1).map(|t| &t[..t.find('"').unwrap()]);
            let id = id.unwrap_or_else(|| panic!("{path}: an input without an id: {tag}"));
            assert!(r.text.contains(&format!("for=\"{id}\"")), "{path}: input {id} has no label");
        }
        assert!(!r.text.contains(&key), "{path} shows the raw key");
    }
    // An unknown page or key is an HTML 404, not a stack trace or JSON.
    let r = tab.get("/ui/keys/key_01M8ZZZZZZZZZZZZZZZZ");
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(tab.get("/ui/nowhere").status, 404);
    // The assets are embedded and typed; uPlot's licence ships with it.
    for (asset, ty) in [("uPlot.js", "text/javascript"), ("ui.js", "text/javascript"), ("ui.css", "text/css")] {
        let r = anon_get(&s, &format!("/ui/assets/{asset}"));
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)), "{asset}");
    }
    assert!(anon_get(&s, "/ui/assets/uPlot-LICENSE.txt").text.contains("MIT License"));
}

fn anon_get(s: &Server, path: &str) -> Res {
    Tab::new(s).get(path)
}

#[test]
fn over_tls_the_session_cookie_is_secure_and_failed_logins_share_the_api_throttle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::util::TestCa::new(dir.path());
    let (cert, key) = ca.leaf("server1", false);
    let ca_pem = ca.ca().display().to_string();
    let s = Server::start_full(
        &[
            ("KEYWARD_TLS_CERT", cert.to_str().unwrap()),
            ("KEYWARD_TLS_KEY", key.to_str().unwrap()),
            ("TEST_CA", &ca_pem),
        ],
        Some("[http]\nroot_auth_failures_per_minute = 5\n"),
    );
    assert!(s.url("").starts_with("https://"));
    let mut tab = Tab::new(&s);
    let login = tab.get("/ui/login");
    assert!(login.header("set-cookie").unwrap().contains("; Secure"), "{:?}", login.header("set-cookie"));
    let r = tab.login(&s.root);
    assert_eq!(r.status, 303, "{}", r.text);
    let session = r.headers.iter().find(|(k, v)| k == "set-cookie" && v.starts_with("kw_session=")).unwrap();
    assert!(session.1.contains("; Secure") && session.1.contains("HttpOnly"), "{}", session.1);
    assert_eq!(tab.get("/ui/keys").status, 200);

    // Wrong root keys through the form count like wrong keys on the API: past
    // the limit the address is refused, the right key included, with a page that says so.
    let mut guesser = Tab::new(&s);
    let statuses: Vec<u16> = (0..7).map(|i| guesser.login(&format!("kw_root_guess{i:0>35}")).status).collect();
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(statuses[6], 429, "{statuses:?}");
    let blocked = guesser.login(&s.root);
    assert_eq!(blocked.status, 429, "{}", blocked.text);
    assert!(blocked.text.contains("too many failed root-key authentications"), "{}", blocked.text);
    assert!(blocked.header("set-cookie").is_none_or(|c| !c.starts_with("kw_session")));
    // The API says the same to that address.
    assert_eq!(s.call("GET", "/v1/keys", None).status, 429);
    assert!(!s.log.lock().contains(&s.root), "the root key reached the log");
}
