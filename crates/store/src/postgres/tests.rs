use super::*;

const MIGRATIONS: &[&str] = &[
    // Fails if run twice: the test's proof that each runs once.
    "CREATE TABLE m1 (v INTEGER); CREATE TABLE applied (n INTEGER NOT NULL, at TIMESTAMPTZ DEFAULT now()); INSERT INTO applied (n) VALUES (1);",
    "CREATE TABLE m2 (v INTEGER); INSERT INTO applied (n) VALUES (2);",
    "ALTER TABLE m1 ADD COLUMN w TEXT; INSERT INTO applied (n) VALUES (3);",
];

#[test]
fn three_nodes_starting_at_once_apply_each_migration_exactly_once() {
    let Some(pg) = keyward_testkit::Postgres::start() else { return };
    for round in 0..3 {
        let db = format!("race{round}");
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        let url = pg.url(&db);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut client = connect(&url).unwrap();
                    barrier.wait();
                    migrate(&mut client, MIGRATIONS).unwrap()
                })
            })
            .collect();
        let applied: usize = nodes.into_iter().map(|n| n.join().unwrap()).sum();
        assert_eq!(applied, 3, "round {round}: three migrations applied in all");
        assert_eq!(pg.psql(&db, "SELECT string_agg(n::text, ',' ORDER BY n) FROM applied"), "1,2,3");
        assert_eq!(pg.psql(&db, "SELECT version FROM keyward_schema"), "3");
        assert_eq!(pg.psql(&db, "SELECT count(*) FROM keyward_schema"), "1");
    }
}

#[test]
fn a_database_from_a_newer_binary_is_refused_and_an_older_one_is_brought_up() {
    let Some(pg) = keyward_testkit::Postgres::start() else { return };
    let mut client = connect(&pg.url("postgres")).unwrap();
    assert_eq!(migrate(&mut client, &MIGRATIONS[..1]).unwrap(), 1);
    assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), 2, "the two newer ones");
    assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), 0, "nothing left");
    match migrate(&mut client, &MIGRATIONS[..2]) {
        Err(StoreError::TooNew { found: 3, supported: 2 }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
    let err = connect(&format!("postgres://keyward@127.0.0.1:{}/postgres", closed_port())).err().unwrap();
    assert!(err.to_string().contains("connecting"), "{err}");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
