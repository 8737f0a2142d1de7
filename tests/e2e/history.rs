//! As-of queries and compaction.

use crate::support::{TestServer, TestWarehouse, baocao, dump, row, stderr, stdout};

#[tokio::test]
async fn reports_as_of_a_past_moment() {
    let w = TestWarehouse::empty();
    assert!(
        w.ingest(
            "first.parquet",
            &[
                row("00004", "2024-07", "births", 20.0),
                row("00007", "2024-07", "births", 9.0)
            ]
        )
        .status
        .success()
    );
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let between: String = client
        .query_one(
            "SELECT CAST(MAX(submitted_at) AS VARCHAR) FROM reports_history",
            &[],
        )
        .await
        .expect("time")
        .get(0);
    let out = w.ingest("fix.parquet", &[row("00004", "2024-07", "births", 23.0)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let births = |sql: String| {
        let client = &client;
        async move { dump(client, &sql).await }
    };
    assert_eq!(
        births("SELECT unit_code, CAST(value AS BIGINT) FROM reports ORDER BY 1".into()).await,
        ["00004|23", "00007|9"]
    );
    assert_eq!(
        births(format!(
            "SELECT unit_code, CAST(value AS BIGINT) FROM reports_as_of('{between}') ORDER BY 1"
        ))
        .await,
        ["00004|20", "00007|9"]
    );
    assert_eq!(
        births("SELECT COUNT(*) FROM reports_as_of('2020-01-01')".into()).await,
        ["0"]
    );
    assert_eq!(
        births("SELECT unit_code, CAST(value AS BIGINT) FROM reports_as_of('2999-01-01 00:00:00+07') WHERE unit_code = '00004'".into()).await,
        ["00004|23"]
    );
    let err = client
        .simple_query("SELECT * FROM reports_as_of('yesterday')")
        .await
        .expect_err("bad moment");
    assert!(
        err.as_db_error()
            .expect("server error")
            .message()
            .contains("'yesterday' is not a moment"),
        "{err}"
    );
}

#[tokio::test]
async fn compaction_merges_files_and_changes_no_result() {
    let w = TestWarehouse::empty();
    for (i, unit) in ["00001", "00004", "00006", "00007", "00008"]
        .iter()
        .enumerate()
    {
        let out = w.ingest(
            &format!("f{i}.parquet"),
            &[
                row(unit, "2024-07", "births", i as f64 + 1.0),
                row(unit, "2024-07", "deaths", 1.0),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = w.ingest("fix.parquet", &[row("00004", "2024-07", "births", 40.0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let partition = w.path().join("reports/period=2024-07");
    let files = || std::fs::read_dir(&partition).expect("partition").count();
    assert_eq!(files(), 6);

    let queries = [
        "SELECT * FROM reports ORDER BY unit_code, indicator_code",
        "SELECT * FROM reports_history ORDER BY unit_code, indicator_code, submitted_at",
        "SELECT unit_code, value FROM rollup WHERE period = '2024-07' AND indicator_code = 'births' ORDER BY 1",
    ];
    let before = {
        let server = TestServer::start(&w).await;
        let client = server.client().await;
        let mut all = Vec::new();
        for q in queries {
            all.push(dump(&client, q).await);
        }
        all
    };
    let out = baocao(&[
        "compact",
        "--warehouse",
        w.path_str(),
        "--retention-hours",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("compacted 6 files into 1 in 1 partition(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(files(), 1);
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    for (q, expected) in queries.iter().zip(before) {
        assert_eq!(dump(&client, q).await, expected, "{q}");
    }
}

#[tokio::test]
async fn the_server_compacts_by_itself() {
    let w = TestWarehouse::empty();
    let server = TestServer::start_with(
        &w,
        &[
            "--auto-compact-secs",
            "1",
            "--auto-compact-commits",
            "3",
            "--auto-compact-retention-hours",
            "0",
        ],
    )
    .await;
    for (i, unit) in ["00001", "00004", "00006", "00007"].iter().enumerate() {
        let out = w.ingest(
            &format!("f{i}.parquet"),
            &[row(unit, "2024-07", "births", i as f64 + 1.0)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let partition = w.path().join("reports/period=2024-07");
    let files = || std::fs::read_dir(&partition).expect("partition").count();
    // Wait (bounded) for the policy to run: 4 commits >= 3.
    for _ in 0..600 {
        if files() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(files(), 1, "the four small files were merged");
    let client = server.client().await;
    assert_eq!(
        dump(
            &client,
            "SELECT unit_code, CAST(value AS BIGINT) FROM reports ORDER BY 1"
        )
        .await,
        ["00001|1", "00004|2", "00006|3", "00007|4"]
    );
}
