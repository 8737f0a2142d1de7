//! Bad SQL gets a Postgres error with the right SQLSTATE, and the
//! connection goes on working.

use tokio_postgres::error::SqlState;

use crate::support::{TestServer, TestWarehouse, stderr, stdout};

#[tokio::test]
async fn errors_carry_sqlstate_and_leave_the_connection_usable() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    let cases: [(&str, SqlState); 3] = [
        ("SELEC 1", SqlState::SYNTAX_ERROR),
        ("SELECT * FROM no_such_table", SqlState::UNDEFINED_TABLE),
        (
            "SELECT no_such_column FROM units",
            SqlState::UNDEFINED_COLUMN,
        ),
    ];
    for (sql, state) in cases {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: not a server error: {err}"));
        assert_eq!(db.code(), &state, "{sql}: {}", db.message());
        assert!(!db.message().is_empty());
        // The same connection still answers.
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM periods WHERE period_type = 'year'",
                &[],
            )
            .await
            .expect("after error")
            .get(0);
        assert_eq!(n, 51);
    }
    // Through the extended protocol too.
    let err = client
        .query("SELECT * FROM no_such_table WHERE x = $1", &[&1i64])
        .await
        .expect_err("prepare");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let n: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM indicators WHERE lowest_level = $1",
            &[&"ward"],
        )
        .await
        .expect("after")
        .get(0);
    assert!(n > 0);
}

#[tokio::test]
async fn psql_session_survives_an_error() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    // Without ON_ERROR_STOP psql goes on after the error, in the same session.
    let out = server.psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT * FROM nowhere",
        "-c",
        "SELECT COUNT(*) FROM units WHERE level = 'province'",
    ]);
    let err = stderr(&out);
    assert!(err.contains("ERROR:") && err.contains("nowhere"), "{err}");
    assert_eq!(stdout(&out).trim(), "2");
}
