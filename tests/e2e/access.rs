//! Access control: SCRAM logins, roles bound to units, row scope through
//! any SQL, refused writes and server-side routes, TLS, the audit trail.
//! On the demo warehouse around the 2025 reform, with the demo accounts
//! (password = name): admin, analyst, etl, badinh (viewer of the old Ba
//! Đình district 001), phucxa (reporter of its ward 00001), badinh_ward
//! (reporter of the new Ba Đình ward 00004).

use std::collections::BTreeSet;

use crate::support::{TestServer, TestWarehouse, stderr, stdout};

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

async fn pairs(client: &tokio_postgres::Client, sql: &str) -> BTreeSet<(String, String)> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn logins_use_scram_and_refusals_are_audited() {
    let w = TestWarehouse::empty();
    let out = w.user(&["add", "boss", "--admin"], Some("s3cret pass"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = w.user(&["add", "nobody"], Some("pw"));
    assert!(out.status.success(), "{}", stderr(&out));
    // Only verifiers are stored.
    let stored = std::fs::read_to_string(w.path().join("access/accounts.json")).expect("accounts");
    assert!(stored.contains("SCRAM-SHA-256$4096:"));
    assert!(!stored.contains("s3cret"));
    let listed = stdout(&w.user(&["list"], None));
    assert!(
        listed.contains("boss") && listed.contains("admin"),
        "{listed}"
    );

    let server = TestServer::start(&w).await;
    let boss = server
        .login("boss", "s3cret pass")
        .await
        .expect("boss logs in");
    let row = boss
        .query_one("SELECT current_user", &[])
        .await
        .expect("current_user");
    assert_eq!(row.get::<_, String>(0), "boss");
    // Wrong password, unknown user: 28P01, the same message.
    for (user, password) in [("boss", "wrong"), ("ghost", "s3cret pass")] {
        let e = server
            .login(user, password)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}/{password} logged in"));
        assert_eq!(sqlstate(&e), "28P01", "{e}");
        assert_eq!(
            message(&e),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    // psql, asked for SCRAM, gets in with the password only.
    let out = server.psql_as("boss", "s3cret pass", &["-Atc", "SELECT 1"]);
    assert_eq!(stdout(&out).trim(), "1", "{}", stderr(&out));
    let out = server.psql_as("boss", "nope", &["-Atc", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("password authentication failed"));

    // An account without a role logs in and sees no unit data.
    let nobody = server.login("nobody", "pw").await.expect("nobody logs in");
    assert_eq!(count(&nobody, "SELECT count(*) FROM reports").await, 0);
    assert!(count(&nobody, "SELECT count(*) FROM units").await > 0);

    // The trail, for admins: logins and failures with the client address.
    let rows = boss
        .query(
            "SELECT event, user_name, client FROM audit_log ORDER BY at",
            &[],
        )
        .await
        .expect("audit_log");
    let events: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(events.iter().any(|(e, u, c)| e == "login_failed"
        && u == "ghost"
        && c.as_deref().is_some_and(|c| c.starts_with("127.0.0.1:"))));
    assert!(events.iter().any(|(e, u, _)| e == "login" && u == "nobody"));
    assert!(events.iter().any(|(e, _, _)| e == "admin"));
    let e = nobody
        .query("SELECT * FROM audit_log", &[])
        .await
        .expect_err("audit_log is for admins");
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test]
async fn roles_see_their_units_across_the_reform_whatever_the_sql() {
    let w = TestWarehouse::demo_with_accounts("2025-05", "2025-08");
    let server = TestServer::start(&w).await;
    let admin = server.login("admin", "admin").await.expect("admin");
    let badinh = server.login("badinh", "badinh").await.expect("badinh");
    let ward = server
        .login("badinh_ward", "badinh_ward")
        .await
        .expect("badinh_ward");
    let analyst = server.login("analyst", "analyst").await.expect("analyst");

    // What the rule says each may see, computed by the admin from the
    // units and the reform's mapping.
    let all = pairs(&admin, "SELECT DISTINCT unit_code, period FROM reports").await;
    let district = pairs(
        &admin,
        "SELECT DISTINCT r.unit_code, r.period FROM reports r \
         WHERE period_end(r.period) < DATE '2025-07-01' AND r.unit_code IN \
         (SELECT code FROM units WHERE valid_to = DATE '2025-07-01' AND (code = '001' OR district_code = '001'))",
    )
    .await;
    let new_ward = pairs(
        &admin,
        "SELECT DISTINCT r.unit_code, r.period FROM reports r \
         WHERE (period_end(r.period) >= DATE '2025-07-01' AND r.unit_code = '00004') \
            OR (period_end(r.period) < DATE '2025-07-01' AND r.unit_code IN \
                (SELECT old_code FROM unit_changes WHERE new_code = '00004'))",
    )
    .await;
    assert!(
        district.len() > 10 && new_ward.len() > 3,
        "demo data too thin"
    );
    assert!(district.iter().all(|(_, p)| p.as_str() < "2025-07"));
    // Old wards 00016 and 00019 went partly into the new ward 00004.
    assert!(new_ward.iter().any(|(u, _)| u == "00016"));

    let reads = [
        "SELECT DISTINCT unit_code, period FROM reports",
        // A join, a subquery, a CTE, a UNION, a history table, time travel.
        "SELECT DISTINCT r.unit_code, r.period FROM reports r JOIN units u ON u.code = r.unit_code",
        "SELECT DISTINCT unit_code, period FROM (SELECT * FROM reports WHERE value IS NOT NULL) s",
        "WITH t AS (SELECT unit_code, period FROM reports_history) SELECT DISTINCT unit_code, period FROM t",
        "SELECT unit_code, period FROM reports UNION SELECT unit_code, period FROM reports_history",
        "SELECT DISTINCT unit_code, period FROM reports_as_of(now())",
        "SELECT DISTINCT unit_code, period FROM reports WHERE unit_code IN (SELECT unit_code FROM reports_history)",
    ];
    for sql in reads {
        assert_eq!(pairs(&analyst, sql).await, all, "analyst: {sql}");
        assert_eq!(pairs(&badinh, sql).await, district, "badinh: {sql}");
        assert_eq!(pairs(&ward, sql).await, new_ward, "badinh_ward: {sql}");
    }
    // The simple protocol too (tokio-postgres' `query` is the extended one).
    let simple = badinh
        .simple_query("SELECT count(*) FROM reports")
        .await
        .expect("simple query");
    let n = simple.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    let expected = count(
        &admin,
        "SELECT count(*) FROM reports r WHERE period_end(r.period) < DATE '2025-07-01' AND r.unit_code IN \
         (SELECT code FROM units WHERE valid_to = DATE '2025-07-01' AND (code = '001' OR district_code = '001'))",
    )
    .await;
    assert_eq!(n, Some(expected.to_string()));
    // Aggregates are computed from visible rows only.
    let sum_admin: f64 = admin
        .query_one(
            "SELECT sum(value) FROM reports r WHERE indicator_code = 'population' AND period_end(r.period) < DATE '2025-07-01' \
             AND r.unit_code IN (SELECT code FROM units WHERE valid_to = DATE '2025-07-01' AND district_code = '001')",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    let sum_badinh: f64 = badinh
        .query_one(
            "SELECT sum(value) FROM reports WHERE indicator_code = 'population'",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert!((sum_admin - sum_badinh).abs() < 1e-6 * sum_admin.abs());

    // Roll-ups: the district's own row is there, the city's is not.
    let units = pairs(
        &badinh,
        "SELECT DISTINCT unit_code, period_type FROM rollup WHERE indicator_code = 'population'",
    )
    .await;
    assert!(units.iter().any(|(u, _)| u == "001"));
    assert!(units.iter().all(|(u, _)| u != "01"));
    let city = badinh
        .query(
            "SELECT value FROM rollup WHERE unit_code = '01' AND period = '2025-05'",
            &[],
        )
        .await
        .expect("rollup");
    assert!(city.is_empty());
    // rollup_current is keyed on the new hierarchy: the new ward sees its
    // comparable series back to before the reform; the old district none.
    let series = pairs(
        &ward,
        "SELECT DISTINCT unit_code, period FROM rollup_current WHERE indicator_code = 'population' AND period_type = 'month'",
    )
    .await;
    assert!(series.contains(&("00004".to_string(), "2025-05".to_string())));
    assert!(series.contains(&("00004".to_string(), "2025-08".to_string())));
    assert!(series.iter().all(|(u, _)| u == "00004"));
    assert_eq!(
        count(&badinh, "SELECT count(*) FROM rollup_current").await,
        0
    );
    // Status and completeness follow the same scope.
    let status = pairs(
        &ward,
        "SELECT DISTINCT unit_code, period FROM report_status WHERE period >= '2025-07'",
    )
    .await;
    assert!(!status.is_empty());
    assert!(status.iter().all(|(u, _)| u == "00004"));
    let e = count(
        &badinh,
        "SELECT count(*) FROM completeness WHERE unit_code = '01'",
    )
    .await;
    assert_eq!(e, 0);
    // A prepared statement planned once keeps its session's scope.
    let statement = ward
        .prepare("SELECT count(*) FROM reports WHERE unit_code = $1")
        .await
        .expect("prepare");
    let own: i64 = ward
        .query_one(&statement, &[&"00004"])
        .await
        .expect("own")
        .get(0);
    let other: i64 = ward
        .query_one(&statement, &[&"00097"])
        .await
        .expect("other")
        .get(0);
    assert!(own > 0);
    assert_eq!(other, 0);
    // A predicate that fails on a row outside the scope never sees one:
    // the scope filter runs first (else a division by zero, or a cast's
    // error message, would tell of other units' rows).
    for table in [
        "reports",
        "reports_history",
        "reports_as_of(now())",
        "rollup",
        "rollup_current",
        "report_status",
        "completeness",
    ] {
        for outside in ["00097", "01", "001"] {
            let sql = format!(
                "SELECT count(*) FROM {table} WHERE 1 / (CASE WHEN unit_code = '{outside}' THEN 0 ELSE 1 END) = 1"
            );
            ward.query_one(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    let e = ward
        .query_one(
            "SELECT count(*) FROM reports_as_of(now()) \
             WHERE CAST(concat(unit_code, '|', period, '|', indicator_code) AS INT) = 0",
            &[],
        )
        .await
        .expect_err("a failing cast");
    let text = message(&e);
    assert!(
        text.contains("00004") || text.contains("00016") || !text.contains('|'),
        "the error shows a row outside the scope: {text}"
    );
    assert!(!text.contains("00097"), "{text}");
    // The catalog is visible to everyone; it carries no report data.
    assert!(count(&badinh, "SELECT count(*) FROM information_schema.tables").await > 0);
    assert!(count(&badinh, "SELECT count(*) FROM pg_catalog.pg_class").await > 0);
}

#[tokio::test]
async fn writes_are_refused_outside_the_role_and_recorded() {
    let w = TestWarehouse::demo_with_accounts("2025-07", "2025-08");
    let server = TestServer::start(&w).await;
    let admin = server.login("admin", "admin").await.expect("admin");
    let reporter = server
        .login("badinh_ward", "badinh_ward")
        .await
        .expect("reporter");
    let viewer = server.login("badinh", "badinh").await.expect("viewer");
    let analyst = server.login("analyst", "analyst").await.expect("analyst");
    let etl = server.login("etl", "etl").await.expect("etl");
    let insert = |unit: &str| {
        format!(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ('{unit}', '2025-09', 'population', 1234)"
        )
    };
    // Its own unit: yes; another: 42501 naming the unit; nothing written.
    reporter
        .execute(&insert("00004"), &[])
        .await
        .expect("own unit");
    let e = reporter
        .execute(&insert("00097"), &[])
        .await
        .expect_err("another unit");
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("00097"), "{}", message(&e));
    // Inside a transaction block and through COPY, the same.
    reporter.batch_execute("BEGIN").await.expect("begin");
    let e = reporter
        .execute(&insert("00097"), &[])
        .await
        .expect_err("another unit in a block");
    assert_eq!(sqlstate(&e), "42501");
    reporter.batch_execute("ROLLBACK").await.expect("rollback");
    let sink = reporter
        .copy_in("COPY reports (unit_code, period, indicator_code, value) FROM STDIN")
        .await
        .expect("copy in");
    let rows = bytes::Bytes::from_static(b"00097\t2025-09\tpopulation\t1\n");
    let e = {
        use futures::SinkExt;
        let mut sink = Box::pin(sink);
        sink.send(rows).await.expect("copy data");
        sink.as_mut()
            .finish()
            .await
            .expect_err("COPY for another unit")
    };
    assert_eq!(sqlstate(&e), "42501");
    // Readers may not write at all; etl may write for any unit.
    for reader in [&viewer, &analyst] {
        let e = reader
            .execute(&insert("00004"), &[])
            .await
            .expect_err("a reader writes");
        assert_eq!(sqlstate(&e), "42501");
    }
    etl.execute(&insert("00097"), &[]).await.expect("etl");
    let written: Vec<(String, f64)> = admin
        .query(
            "SELECT unit_code, value FROM reports WHERE period = '2025-09' AND indicator_code = 'population' ORDER BY 1",
            &[],
        )
        .await
        .expect("written")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        written,
        vec![("00004".to_string(), 1234.0), ("00097".to_string(), 1234.0)]
    );
    // The trail has who, which unit, how many rows; and the refusals.
    let trail: Vec<(String, String, Option<String>, Option<i64>)> = admin
        .query(
            "SELECT event, user_name, unit_code, CAST(rows AS BIGINT) FROM audit_log WHERE event IN ('submission', 'denied') ORDER BY at",
            &[],
        )
        .await
        .expect("audit_log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(trail.contains(&(
        "submission".into(),
        "badinh_ward".into(),
        Some("00004".into()),
        Some(1)
    )));
    assert!(trail.contains(&(
        "submission".into(),
        "etl".into(),
        Some("00097".into()),
        Some(1)
    )));
    let denials = trail
        .iter()
        .filter(|(e, u, unit, _)| {
            e == "denied" && u == "badinh_ward" && unit.as_deref() == Some("00097")
        })
        .count();
    assert_eq!(denials, 3, "{trail:?}");
}

#[tokio::test]
async fn sql_is_no_way_into_the_server_for_non_admins() {
    let w = TestWarehouse::demo_with_accounts("2025-07", "2025-07");
    let server = TestServer::start_with(&w, &["--statement-timeout-ms", "60000"]).await;
    let analyst = server.login("analyst", "analyst").await.expect("analyst");
    let attempts = [
        "COPY (SELECT 1) TO '/tmp/baocao-access-test.csv'",
        "COPY reports TO '/tmp/baocao-access-test.csv'",
        "COPY reports FROM '/etc/passwd'",
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE TABLE pw AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM reports",
        "DROP TABLE reports",
        "SET datafusion.runtime.memory_limit = '100G'",
        "SET datafusion.execution.target_partitions = 64",
        "SET statement_timeout = 0",
        "SET statement_timeout = '10min'",
        "CREATE ROLE mallory LOGIN PASSWORD 'x'",
        "GRANT admin TO analyst",
        // Whatever datafusion-postgres cannot read, it takes as no limit.
        "SET statement_timeout = DEFAULT",
        "SET statement_timeout = '1 ms'",
        "SET statement_timeout = -1",
    ];
    for sql in attempts {
        let e = analyst
            .simple_query(sql)
            .await
            .expect_err(&format!("{sql} went through"));
        let code = sqlstate(&e);
        // CREATE EXTERNAL TABLE does not even parse in PostgreSQL's dialect.
        let ok = code == "42501" || (sql.contains("EXTERNAL") && code == "42601");
        assert!(ok, "{sql}: {code} {}", message(&e));
    }
    // Where the session's identity and its limit are kept cannot be
    // written, by anyone, however it is asked.
    let admin = server.login("admin", "admin").await.expect("admin");
    for session in [&analyst, &admin] {
        for sql in [
            "SET statement_timeout_ms = 0",
            "RESET statement_timeout_ms",
            "SELECT set_config('statement_timeout_ms', '0', false)",
            "SET user = 'admin'",
            "SELECT set_config('user', 'admin', false)",
            "RESET user",
        ] {
            let e = session.simple_query(sql).await.expect_err(sql);
            assert_eq!(sqlstate(&e), "55P02", "{sql}: {}", message(&e));
        }
    }
    assert!(!std::path::Path::new("/tmp/baocao-access-test.csv").exists());
    // No route reads a server file.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        match analyst.simple_query(sql).await {
            Ok(rows) => panic!("{sql} answered {} messages", rows.len()),
            Err(e) => assert!(!message(&e).contains("root:"), "{sql}: {}", message(&e)),
        }
    }
    // A shorter timeout is the session's own business.
    analyst
        .simple_query("SET statement_timeout = '5s'")
        .await
        .expect("shortening the timeout");
    // A session's time zone is its own: another session's casts do not
    // move (the engine's configuration is shared by every session).
    let cast =
        "SELECT CAST(CAST(CAST('2025-01-01 00:00:00' AS TIMESTAMP) AS TIMESTAMPTZ) AS VARCHAR)";
    let before: String = admin.query_one(cast, &[]).await.expect("cast").get(0);
    analyst
        .simple_query("SET timezone = 'Asia/Ho_Chi_Minh'")
        .await
        .expect("a session's time zone");
    analyst
        .simple_query("SET TIME ZONE 'Asia/Ho_Chi_Minh'")
        .await
        .expect("a session's time zone");
    let after: String = admin.query_one(cast, &[]).await.expect("cast").get(0);
    assert_eq!(before, after);
}

#[tokio::test]
async fn roles_are_managed_over_sql_and_shared_by_every_server() {
    let w = TestWarehouse::demo_with_accounts("2025-07", "2025-07");
    let a = TestServer::start(&w).await;
    let b = TestServer::start(&w).await;
    let admin = a.login("admin", "admin").await.expect("admin");
    admin
        .simple_query("CREATE ROLE Lan WITH LOGIN PASSWORD 'mật khẩu'")
        .await
        .expect("create role");
    // A ward that reported (the demo leaves some reports missing).
    let ward: String = admin
        .query_one("SELECT min(unit_code) FROM reports", &[])
        .await
        .expect("a ward")
        .get(0);
    admin
        .simple_query(&format!("GRANT viewer ON UNIT '{ward}' TO lan"))
        .await
        .expect("grant");
    // The other server lets her in at once, with her scope.
    let lan = b.login("lan", "mật khẩu").await.expect("lan on b");
    let units = pairs(&lan, "SELECT DISTINCT unit_code, period FROM reports").await;
    assert!(!units.is_empty());
    assert!(units.iter().all(|(u, _)| *u == ward));
    // She may change her own password, not anyone else's, and not her role.
    lan.simple_query("ALTER ROLE lan PASSWORD 'mới'")
        .await
        .expect("own password");
    let e = lan
        .simple_query("ALTER ROLE admin PASSWORD 'x'")
        .await
        .expect_err("another's password");
    assert_eq!(sqlstate(&e), "42501");
    assert!(b.login("lan", "mật khẩu").await.is_err());
    b.login("lan", "mới").await.expect("new password");
    // Errors name what is wrong.
    for (sql, code) in [
        ("CREATE ROLE lan LOGIN PASSWORD 'x'", "42710"),
        ("GRANT viewer TO lan", "22023"),
        ("GRANT viewer ON UNIT '99999' TO lan", "22023"),
        ("GRANT viewer ON UNIT '001' TO ghost", "42704"),
        ("REVOKE analyst FROM lan", "55000"),
        ("REVOKE admin FROM admin", "55000"),
        ("DROP ROLE admin", "55006"),
        ("GRANT viewer ON UNIT", "42601"),
    ] {
        let e = admin.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {}", message(&e));
    }
    // The extended protocol runs them too (psycopg 3, pgjdbc).
    admin
        .execute("CREATE ROLE temp LOGIN PASSWORD 't'", &[])
        .await
        .expect("create over the extended protocol");
    b.login("temp", "t").await.expect("temp logs in");
    admin
        .execute("DROP ROLE temp", &[])
        .await
        .expect("drop over the extended protocol");
    let e = admin
        .execute("GRANT viewer ON UNIT '99999' TO lan", &[])
        .await
        .expect_err("an unknown unit");
    assert_eq!(sqlstate(&e), "22023");
    // Revoked, she keeps her login and sees nothing — from the next
    // statement of the session she has open on the other server; dropped,
    // she is out, there too.
    let open = b.login("lan", "mới").await.expect("lan");
    assert!(count(&open, "SELECT count(*) FROM reports").await > 0);
    admin
        .simple_query(&format!("REVOKE viewer ON UNIT '{ward}' FROM lan"))
        .await
        .expect("revoke");
    assert_eq!(count(&open, "SELECT count(*) FROM reports").await, 0);
    let lan = b.login("lan", "mới").await.expect("lan");
    assert_eq!(count(&lan, "SELECT count(*) FROM reports").await, 0);
    admin.simple_query("DROP ROLE lan").await.expect("drop");
    assert!(b.login("lan", "mới").await.is_err());
    let e = open
        .query_one("SELECT 1", &[])
        .await
        .expect_err("a dropped role's session");
    assert_eq!(sqlstate(&e), "28000");
    // The trail has the admin actions, without the passwords.
    let details: Vec<String> = admin
        .query("SELECT detail FROM audit_log WHERE event = 'admin'", &[])
        .await
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        details
            .iter()
            .any(|d| *d == format!("GRANT viewer ON UNIT '{ward}' TO lan"))
    );
    assert!(details.iter().all(|d| !d.contains("mật khẩu")));
}

/// A self-signed certificate for 127.0.0.1, made with openssl.
fn certificate(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (scripts/install-deps installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// psql as boss (password pw) with `sslmode`.
fn psql_with_sslmode(port: u16, sslmode: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("psql")
        .arg("-X")
        .args(args)
        .arg(format!(
            "host=127.0.0.1 port={port} user=boss dbname=baocao sslmode={sslmode}"
        ))
        .env("PGPASSWORD", "pw")
        .output()
        .expect("psql")
}

#[tokio::test]
async fn tls_is_offered_and_can_be_required() {
    let w = TestWarehouse::empty();
    let out = w.user(&["add", "boss", "--admin"], Some("pw"));
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let server = TestServer::start_with(
        &w,
        &["--tls-cert", &cert, "--tls-key", &key, "--require-tls"],
    )
    .await;
    let out = psql_with_sslmode(server.port, "require", &["-Atc", "SELECT 42"]);
    assert_eq!(stdout(&out).trim(), "42", "{}", stderr(&out));
    let tls = psql_with_sslmode(server.port, "require", &["-c", "\\conninfo"]);
    assert!(stdout(&tls).contains("SSL connection"), "{}", stdout(&tls));
    let plain = psql_with_sslmode(server.port, "disable", &["-Atc", "SELECT 42"]);
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("no encryption"),
        "{}",
        stderr(&plain)
    );
}

#[tokio::test]
async fn a_server_beyond_loopback_needs_accounts_and_the_first_admin_can_come_from_the_environment()
{
    let w = TestWarehouse::empty();
    let out = crate::support::baocao(&[
        "serve",
        "--warehouse",
        w.path_str(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no accounts"), "{}", stderr(&out));
    let out = crate::support::baocao(&[
        "serve",
        "--warehouse",
        w.path_str(),
        "--listen",
        "0.0.0.0:0",
        "--auth",
        "trust",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
    // The first admin from BAOCAO_ADMIN_PASSWORD; trust ends with it.
    let server = TestServer::start_with_env(
        &w,
        &[],
        &[
            ("BAOCAO_ADMIN_USER", "root"),
            ("BAOCAO_ADMIN_PASSWORD", "first"),
        ],
    )
    .await;
    let root = server.login("root", "first").await.expect("first admin");
    assert_eq!(
        root.query_one("SELECT current_user", &[])
            .await
            .expect("current_user")
            .get::<_, String>(0),
        "root"
    );
    // Anyone else is now asked for a SCRAM proof, not let in.
    let (code, body) = first_authentication_request(server.port, "tester").await;
    assert_eq!((code, body.as_slice()), (10, &b"SCRAM-SHA-256\0\0"[..]));
}

#[tokio::test]
async fn a_cancel_request_stops_a_scoped_query() {
    // Ba Đình district's wards reported for 2025-06.
    let w = TestWarehouse::demo_with_accounts("2025-06", "2025-06");
    let server = TestServer::start(&w).await;
    let viewer = server.login("badinh", "badinh").await.expect("viewer");
    let cancel = viewer.cancel_token();
    let heavy = tokio::spawn(async move {
        viewer
            .simple_query("SELECT count(*) FROM reports a, reports b, reports c, reports d")
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let e = heavy
        .await
        .expect("the query task")
        .expect_err("the query was cancelled");
    assert_eq!(sqlstate(&e), "57014", "{e}");
}

#[tokio::test]
async fn cleartext_passwords_only_when_the_operator_asks_for_them() {
    let w = TestWarehouse::empty();
    let out = w.user(&["add", "boss", "--admin"], Some("pw"));
    assert!(out.status.success(), "{}", stderr(&out));
    // SCRAM by default: the server asks for SASL with SCRAM-SHA-256 only.
    let scram = TestServer::start(&w).await;
    let (code, body) = first_authentication_request(scram.port, "boss").await;
    assert_eq!(code, 10, "AuthenticationSASL");
    assert_eq!(body, b"SCRAM-SHA-256\0\0");
    // --auth password: a cleartext password, checked against the same
    // verifier.
    let cleartext = TestServer::start_with(&w, &["--auth", "password"]).await;
    let (code, _) = first_authentication_request(cleartext.port, "boss").await;
    assert_eq!(code, 3, "AuthenticationCleartextPassword");
    let out = cleartext.psql_as("boss", "pw", &["-Atc", "SELECT current_user"]);
    assert_eq!(stdout(&out).trim(), "boss", "{}", stderr(&out));
    let e = cleartext
        .login("boss", "wrong")
        .await
        .expect_err("a wrong cleartext password");
    assert_eq!(sqlstate(&e), "28P01");
}

/// The first authentication request the server sends to a client that
/// starts as `user`: its code and the rest of its body.
async fn first_authentication_request(port: u16, user: &str) -> (i32, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for field in ["user", user, "database", "baocao"] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    socket.write_all(&packet).await.expect("startup");
    let kind = socket.read_u8().await.expect("message type");
    assert_eq!(kind, b'R', "an authentication request");
    let length = socket.read_i32().await.expect("length");
    let mut rest = vec![0; usize::try_from(length - 4).expect("length")];
    socket.read_exact(&mut rest).await.expect("body");
    let code = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    (code, rest[4..].to_vec())
}
