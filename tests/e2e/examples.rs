//! Every canonical query under `queries/sql/` runs on a demo warehouse and
//! returns rows; some are checked value by value.

use std::path::Path;

use crate::support::{TestServer, TestWarehouse};

#[tokio::test]
async fn every_example_query_runs() {
    let w = TestWarehouse::demo("2024-06", "2025-08");
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("queries/sql")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    for file in &files {
        let sql = std::fs::read_to_string(file).expect("read");
        let messages = client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rows = messages
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert!(rows > 0, "{} returned no rows", file.display());
        // psql runs it too.
        let out = server.psql(&["-v", "ON_ERROR_STOP=1", "-f", file.to_str().expect("path")]);
        assert!(
            out.status.success(),
            "psql {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Completeness: the expected wards follow the hierarchy of each month.
    let sql = std::fs::read_to_string(dir.join("reporting_completeness.sql")).expect("read");
    let rows = client.query(&sql, &[]).await.expect("completeness");
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 12);
    for (period, reported, expected) in &got {
        let (all, present) = match period.as_str() {
            p if p < "2025-07" => (526, true),
            p if p <= "2025-08" => (126, true),
            _ => (126, false),
        };
        assert_eq!(*expected, all, "{period}");
        if present {
            assert!(
                *reported > all * 95 / 100 && *reported < all,
                "{period}: {reported}"
            );
        } else {
            assert_eq!(*reported, 0, "{period}");
        }
    }

    // Births per quarter equal the sum of the monthly births.
    let quarter: i64 = client
        .query_one("SELECT CAST(SUM(value) AS BIGINT) FROM reports WHERE indicator_code = 'births' AND period IN ('2024-10', '2024-11', '2024-12')", &[])
        .await
        .expect("sum")
        .get(0);
    let sql = std::fs::read_to_string(dir.join("births_by_quarter.sql")).expect("read");
    let rows = client.query(&sql, &[]).await.expect("by quarter");
    let q4 = rows
        .iter()
        .find(|r| r.get::<_, String>(0) == "2024Q4")
        .expect("2024Q4");
    assert_eq!(q4.get::<_, i64>(1), quarter);
}
