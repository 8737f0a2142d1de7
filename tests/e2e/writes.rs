//! INSERT and COPY over the Postgres protocol: one statement, one atomic
//! commit through the validator; every other write is refused.

use futures::SinkExt;
use tokio_postgres::error::SqlState;

use crate::support::{TestServer, TestWarehouse, stderr, stdout};

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT COUNT(*) FROM reports_history", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn insert_with_literals_and_parameters() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    // Simple protocol: the command tag carries the row count.
    let messages = client
        .simple_query("INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ('00004', '2024-07', 'births', 12), ('00007', '2024-07', 'births', 9)")
        .await
        .expect("insert");
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(2)))
    );

    // Extended protocol with $n parameters, the statement prepared once and reused.
    let insert = client
        .prepare("INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, $2, $3, $4)")
        .await
        .expect("prepare");
    assert_eq!(
        insert.params(),
        &[
            tokio_postgres::types::Type::TEXT,
            tokio_postgres::types::Type::TEXT,
            tokio_postgres::types::Type::TEXT,
            tokio_postgres::types::Type::FLOAT8
        ]
    );
    for (unit, value) in [("00008", 4.0f64), ("00013", 6.0)] {
        let n = client
            .execute(&insert, &[&unit, &"2024-07", &"births", &value])
            .await
            .expect("execute");
        assert_eq!(n, 1);
    }
    // Columns in another order.
    let n = client
        .execute("INSERT INTO reports (value, indicator_code, period, unit_code) VALUES ($1, $2, $3, $4)", &[&3.0f64, &"deaths", &"2024-07", &"00004"])
        .await
        .expect("reordered");
    assert_eq!(n, 1);

    // Read your writes: the next query on any connection sees them, roll-ups included.
    let other = server.client().await;
    let rows = other
        .query("SELECT unit_code, value, submitted_by FROM reports WHERE indicator_code = 'births' ORDER BY unit_code", &[])
        .await
        .expect("read");
    let got: Vec<(String, f64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("00004".into(), 12.0, "tester".into()),
            ("00007".into(), 9.0, "tester".into()),
            ("00008".into(), 4.0, "tester".into()),
            ("00013".into(), 6.0, "tester".into()),
        ]
    );
    let sources: Vec<String> = other
        .query("SELECT DISTINCT source FROM reports_history", &[])
        .await
        .expect("sources")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sources, ["INSERT"]);
    let district: f64 = other
        .query_one("SELECT value FROM rollup WHERE unit_code = '001' AND period = '2024-07' AND indicator_code = 'births'", &[])
        .await
        .expect("rollup")
        .get(0);
    assert_eq!(district, 31.0);
}

#[tokio::test]
async fn an_invalid_row_refuses_the_whole_statement() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let before = count(&client).await;

    let cases: [(&str, SqlState, &str); 5] = [
        (
            "INSERT INTO reports VALUES ('00004', '2024-07', 'births', 1), ('99999', '2024-07', 'births', 2)",
            SqlState::FOREIGN_KEY_VIOLATION,
            "row 2: unit_code '99999' is not a unit of the hierarchy in force in 2024-07",
        ),
        (
            "INSERT INTO reports VALUES ('00004', '2024-07', 'births', 1), ('00004', '2024-07', 'births', 2)",
            SqlState::UNIQUE_VIOLATION,
            "row 2: unit 00004 period 2024-07 indicator births appears more than once",
        ),
        (
            "INSERT INTO reports VALUES ('00004', '2024-07', 'health_insurance_coverage', 101)",
            SqlState::INVALID_PARAMETER_VALUE,
            "row 1: value 101 of 'health_insurance_coverage' is above its maximum 100",
        ),
        (
            "INSERT INTO reports VALUES ('00004', '2024-7', 'births', 1)",
            SqlState::INVALID_PARAMETER_VALUE,
            "row 1: '2024-7' is not a period",
        ),
        (
            "INSERT INTO reports (unit_code, period, indicator_code, value, submitted_by) VALUES ('00004', '2024-07', 'births', 1, 'someone')",
            SqlState::UNDEFINED_COLUMN,
            "column \"submitted_by\" of reports cannot be written",
        ),
    ];
    for (sql, state, needle) in cases {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().expect("server error");
        assert_eq!(db.code(), &state, "{sql}: {}", db.message());
        assert!(db.message().contains(needle), "{sql}: {}", db.message());
        // The connection goes on, and nothing was written.
        assert_eq!(count(&client).await, before);
    }
    // With parameters too.
    let err = client
        .execute(
            "INSERT INTO reports VALUES ($1, $2, $3, $4)",
            &[&"00004", &"2024-07", &"population", &12.5f64],
        )
        .await
        .expect_err("fraction");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    assert_eq!(count(&client).await, before);
}

#[tokio::test]
async fn other_writes_and_ddl_are_refused() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    for sql in [
        "INSERT INTO units (code) VALUES ('1')",
        "UPDATE reports SET value = 1",
        "DELETE FROM units WHERE code = '01'",
        "DROP TABLE reports",
        "CREATE TABLE x (a INT)",
        "CREATE VIEW v AS SELECT 1",
        "COPY units FROM STDIN",
        "SELECT code INTO copied FROM units",
    ] {
        let err = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
        let err = client.prepare(sql).await.expect_err(sql);
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}, extended protocol: {err}"
        );
    }
    // SELECT INTO made no table.
    let err = client
        .simple_query("SELECT * FROM copied")
        .await
        .expect_err("no such table");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err}");
    // The tables are all still there.
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM units", &[])
        .await
        .expect("units")
        .get(0);
    assert!(n > 600);
    client
        .query_one("SELECT COUNT(*) FROM reports", &[])
        .await
        .expect("reports");
}

#[tokio::test]
async fn copy_from_stdin_with_tokio_postgres_and_psql() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    let sink = client
        .copy_in("COPY reports (unit_code, period, indicator_code, value) FROM STDIN WITH (FORMAT csv, HEADER)")
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    let data = "unit_code,period,indicator_code,value\n00004,2024-07,births,12\n00007,2024-07,births,9\n00008,2024-07,births,4\n";
    sink.send(bytes::Bytes::from(data)).await.expect("send");
    let n = sink.finish().await.expect("finish");
    assert_eq!(n, 3);

    // psql's \copy, text format from a file, as an officer's export would be.
    let file = w.path().join("july.tsv");
    std::fs::write(
        &file,
        "00016\t2024-07\tbirths\t6\n00013\t2024-07\tbirths\t2\n",
    )
    .expect("write");
    let out = server.psql(&["-c", &format!("\\copy reports FROM '{}'", file.display())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "COPY 2");

    // A bad row refuses the whole COPY, with the row and the field.
    let bad = w.path().join("bad.csv");
    std::fs::write(
        &bad,
        "unit_code,period,indicator_code,value\n00004,2024-08,births,3\n00004,2024-08,births,abc\n",
    )
    .expect("write");
    let out = server.psql(&[
        "-c",
        &format!(
            "\\copy reports FROM '{}' WITH (FORMAT csv, HEADER)",
            bad.display()
        ),
    ]);
    assert!(
        stderr(&out).contains("row 2: value 'abc' is not a number"),
        "{}",
        stderr(&out)
    );

    let total: f64 = client
        .query_one(
            "SELECT SUM(value) FROM reports WHERE indicator_code = 'births'",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert_eq!(total, 12.0 + 9.0 + 4.0 + 6.0 + 2.0);
    assert_eq!(count(&client).await, 5);
}

#[tokio::test]
async fn copy_to_stdout_exports_query_results() {
    let w = TestWarehouse::empty();
    assert!(
        w.ingest(
            "july.parquet",
            &[
                crate::support::row("00004", "2024-07", "births", 12.0),
                crate::support::row("00007", "2024-07", "ward_budget_revenue", 9.5)
            ]
        )
        .status
        .success()
    );
    let server = TestServer::start(&w).await;

    let out = server.psql(&[
        "-c",
        "\\copy (SELECT unit_code, unit_name(unit_code, period) AS name, value FROM reports ORDER BY unit_code) TO STDOUT WITH (FORMAT csv, HEADER)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "unit_code,name,value\n00004,Phường Trúc Bạch,12\n00007,Phường Cống Vị,9.5\n"
    );

    // Text format, NULL as \N, through tokio-postgres.
    let client = server.client().await;
    let stream = client
        .copy_out("COPY (SELECT code, parent_code FROM units WHERE code IN ('01', '001') AND version = DATE '2025-01-01' ORDER BY code) TO STDOUT")
        .await
        .expect("copy out");
    futures::pin_mut!(stream);
    let mut text = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(
        String::from_utf8(text).expect("utf-8"),
        "001\t01\n01\t\\N\n"
    );

    // Never to a server file.
    let err = client
        .simple_query("COPY units TO '/tmp/units.csv'")
        .await
        .expect_err("to file");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

#[tokio::test]
async fn delete_withdraws_values_and_history_keeps_them() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    client
        .simple_query("INSERT INTO reports VALUES ('00004', '2024-07', 'births', 12), ('00007', '2024-07', 'births', 9), ('00004', '2024-07', 'deaths', 3)")
        .await
        .expect("insert");

    // A withdrawal, with a parameter, through the extended protocol.
    let n = client
        .execute("DELETE FROM reports WHERE unit_code = $1 AND period = '2024-07' AND indicator_code = 'births'", &[&"00004"])
        .await
        .expect("delete");
    assert_eq!(n, 1);
    let births = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .expect("query")
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, f64>(1)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        births("SELECT unit_code, value FROM reports WHERE indicator_code = 'births' ORDER BY 1")
            .await,
        vec![("00007".to_string(), 9.0)]
    );
    // Roll-ups follow: the district now counts one ward.
    assert_eq!(
        births("SELECT unit_code, value FROM rollup WHERE unit_code = '001' AND period = '2024-07' AND indicator_code = 'births'").await,
        vec![("001".to_string(), 9.0)]
    );
    // The history keeps the value and its withdrawal.
    let rows = client
        .query("SELECT value, withdrawn FROM reports_history WHERE unit_code = '00004' AND indicator_code = 'births' ORDER BY submitted_at", &[])
        .await
        .expect("history");
    let got: Vec<(f64, Option<bool>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(12.0, Some(false)), (0.0, Some(true))]);
    // Submitting again brings a value back.
    client
        .simple_query("INSERT INTO reports VALUES ('00004', '2024-07', 'births', 13)")
        .await
        .expect("again");
    assert_eq!(
        births("SELECT unit_code, value FROM reports WHERE indicator_code = 'births' ORDER BY 1")
            .await
            .len(),
        2
    );

    // Nothing matched: nothing written. No WHERE: refused.
    let before = count(&client).await;
    let messages = client
        .simple_query("DELETE FROM reports WHERE unit_code = '00001'")
        .await
        .expect("no match");
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(0)))
    );
    let err = client
        .simple_query("DELETE FROM reports")
        .await
        .expect_err("no where");
    assert!(
        err.as_db_error()
            .expect("db")
            .message()
            .contains("needs a WHERE clause")
    );
    assert_eq!(count(&client).await, before);
}

/// The version in `_delta_log/_last_checkpoint`, if there is one.
fn last_checkpoint(w: &TestWarehouse) -> Option<u64> {
    let text =
        std::fs::read_to_string(w.path().join("reports/_delta_log/_last_checkpoint")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("version")?.as_u64()
}

#[tokio::test]
async fn the_server_checkpoints_the_log_in_the_background() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let insert = "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ('00004', '2024-07', 'births', $1)";
    for i in 0..100 {
        client
            .execute(insert, &[&f64::from(i)])
            .await
            .expect("insert");
    }
    assert_eq!(count(&client).await, 100);
    // Not inside a commit (that would stall one submission in twenty) but
    // soon after, every twenty commits.
    let mut checkpoint = None;
    for _ in 0..300 {
        checkpoint = last_checkpoint(&w);
        if checkpoint.is_some_and(|c| c > 80) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Once the commits stop, the last checkpoint is less than twenty
    // commits behind the newest version, 100.
    assert!(
        checkpoint.is_some_and(|c| (81..=100).contains(&c)),
        "a checkpoint of a version after 80: {checkpoint:?}"
    );
    // Version 0 created the table, then one commit per INSERT.
    let checkpoints = std::fs::read_dir(w.path().join("reports/_delta_log"))
        .expect("log")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    assert!(
        (1..=5).contains(&checkpoints),
        "checkpoints every 20 commits, not at every commit: {checkpoints}"
    );
    // A new server starts from the checkpoint and sees every value.
    drop(client);
    drop(server);
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    assert_eq!(count(&client).await, 100);
    let last: f64 = client
        .query_one(
            "SELECT value FROM reports WHERE unit_code = '00004' AND period = '2024-07' AND indicator_code = 'births'",
            &[],
        )
        .await
        .expect("latest")
        .get(0);
    assert_eq!(last, 99.0);
}
