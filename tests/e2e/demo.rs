//! The demo generator: real units, plausible values, missing reports and
//! corrections, deterministic, resumable.

use crate::support::{TestServer, TestWarehouse, baocao, stderr};

#[tokio::test]
async fn demo_spans_the_reform_and_resumes() {
    let w = TestWarehouse::demo("2025-05", "2025-06");
    let commits = w.commits();
    // Running again with a later end only adds the new months.
    let out = baocao(&[
        "demo",
        "--warehouse",
        w.path_str(),
        "--from",
        "2025-05",
        "--to",
        "2025-08",
        "--no-serve",
        "--no-demo-accounts",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.commits(), commits + 2);
    // And a third run has nothing to do.
    let out = baocao(&[
        "demo",
        "--warehouse",
        w.path_str(),
        "--from",
        "2025-05",
        "--to",
        "2025-08",
        "--no-serve",
        "--no-demo-accounts",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.commits(), commits + 2);

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT period, COUNT(DISTINCT unit_code) AS wards, CAST(SUM(value) AS BIGINT) AS population
             FROM reports WHERE indicator_code = 'population' GROUP BY period ORDER BY period",
            &[],
        )
        .await
        .expect("population");
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 4);
    for (period, wards, population) in &got {
        let all = if period.as_str() < "2025-07" {
            526
        } else {
            126
        };
        // About 2% of reports are missing: some, not many.
        assert!(
            *wards < all && *wards >= all * 95 / 100,
            "{period}: {wards} of {all}"
        );
        // Hanoi has about 8.6 million people; the reporting wards hold most of them.
        assert!(
            (7_500_000..10_500_000).contains(population),
            "{period}: {population}"
        );
    }
    // Every reporting ward exists in the hierarchy of its period.
    let orphans: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM reports r JOIN periods p ON p.period = r.period
             LEFT JOIN units u ON u.code = r.unit_code AND u.level = 'ward'
                AND (u.valid_from IS NULL OR u.valid_from <= p.end_date)
                AND (u.valid_to IS NULL OR p.end_date < u.valid_to)
             WHERE u.code IS NULL",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0);
    // Rates stay within 0–100; counts are whole.
    let row = client
        .query_one(
            "SELECT MIN(value), MAX(value) FROM reports WHERE indicator_code = 'health_insurance_coverage'",
            &[],
        )
        .await
        .expect("rates");
    let (lo, hi): (f64, f64) = (row.get(0), row.get(1));
    assert!(lo > 80.0 && hi <= 100.0, "{lo}..{hi}");
    let fractional: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM reports r JOIN indicators i ON i.code = r.indicator_code WHERE i.value_kind = 'count' AND r.value <> ROUND(r.value)",
            &[],
        )
        .await
        .expect("counts")
        .get(0);
    assert_eq!(fractional, 0);
    // Some values were corrected; the history keeps both versions.
    let corrected: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM (SELECT unit_code, period, indicator_code FROM reports_history GROUP BY 1, 2, 3 HAVING COUNT(*) > 1)",
            &[],
        )
        .await
        .expect("corrections")
        .get(0);
    assert!(corrected > 0);
}

#[test]
fn demo_is_deterministic_for_a_seed() {
    let a = TestWarehouse::demo("2024-12", "2024-12");
    let b = TestWarehouse::demo("2024-12", "2024-12");
    let data = |w: &TestWarehouse| {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for part in ["period=2024-12", "period=2024"] {
            let dir = w.path().join("reports").join(part);
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .expect("partition")
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                files.push((part.to_string(), std::fs::read(e.path()).expect("read")));
            }
        }
        files
    };
    // Same seed, same data files, byte for byte (one file per partition).
    let (da, db) = (data(&a), data(&b));
    assert_eq!(da.len(), 2);
    assert!(da == db, "the two demo warehouses differ");
    // Another seed, other values.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crate::support::baocao(&[
        "demo",
        "--warehouse",
        dir.path().to_str().expect("path"),
        "--from",
        "2024-12",
        "--to",
        "2024-12",
        "--seed",
        "7",
        "--no-serve",
    ]);
    assert!(out.status.success());
    let c = TestWarehouse { dir };
    assert!(data(&c) != da, "another seed gave the same data");
}
