//! The catalog tables through the protocol: listing, counts of the real
//! Hanoi units, UTF-8 names.

use crate::support::{TestServer, TestWarehouse, shipped_units, stdout};

#[tokio::test]
async fn psql_lists_and_describes_the_tables() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;

    let out = server.psql(&["-A", "-t", "-c", "\\dt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = stdout(&out);
    let mut names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit_log",
            "completeness",
            "indicators",
            "periods",
            "report_forms",
            "report_status",
            "reports",
            "reports_history",
            "rollup",
            "rollup_current",
            "unit_ancestors",
            "unit_changes",
            "units"
        ]
    );

    let out = server.psql(&["-A", "-t", "-c", "\\d reports"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described = stdout(&out);
    let columns: Vec<(&str, &str)> = described
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('|');
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("unit_code", "text"),
            ("period", "text"),
            ("indicator_code", "text"),
            ("value", "double precision"),
            ("submitted_at", "timestamp with time zone"),
            ("submitted_by", "text"),
            ("submission_id", "text"),
        ]
    );
}

#[tokio::test]
async fn units_hold_both_hanoi_hierarchies() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    let rows = client
        .query(
            "SELECT CAST(version AS VARCHAR) AS v, level, COUNT(*) AS n FROM units GROUP BY version, level ORDER BY v, level",
            &[],
        )
        .await
        .expect("query");
    let got: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = |v: &str| {
        let units = shipped_units(v);
        let count = |l: &str| units.iter().filter(|u| u.level == l).count() as i64;
        (count("district"), count("province"), count("ward"))
    };
    assert_eq!(expected("2025-01-01"), (30, 1, 526));
    assert_eq!(expected("2025-07-01"), (0, 1, 126));
    assert_eq!(
        got,
        vec![
            ("2025-01-01".to_string(), "district".to_string(), 30),
            ("2025-01-01".to_string(), "province".to_string(), 1),
            ("2025-01-01".to_string(), "ward".to_string(), 526),
            ("2025-07-01".to_string(), "province".to_string(), 1),
            ("2025-07-01".to_string(), "ward".to_string(), 126),
        ]
    );

    // Ancestors per level: a pre-reform ward has a district, a new one none.
    let row = client
        .query_one(
            "SELECT province_code, district_code, ward_code, valid_from IS NULL, CAST(valid_to AS VARCHAR) FROM units WHERE code = '00004' AND version = DATE '2025-01-01'",
            &[],
        )
        .await
        .expect("old ward");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("01"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("001"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("00004"));
    assert!(row.get::<_, bool>(3));
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("2025-07-01")
    );

    // unit_ancestors: every old ward has exactly three rows (itself, district, city).
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT unit_code), MAX(depth) FROM unit_ancestors WHERE unit_level = 'ward' AND version = DATE '2025-01-01'",
            &[],
        )
        .await
        .expect("ancestors");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i32>(2)
        ),
        (526 * 3, 526, 2)
    );

    // The reform mapping is there, with the real row count.
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM unit_changes", &[])
        .await
        .expect("changes")
        .get(0);
    assert_eq!(n, 794);
}

#[tokio::test]
async fn utf8_names_round_trip() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    // Every name read back equals the file's bytes, Vietnamese diacritics and all.
    let file_names: std::collections::BTreeMap<String, String> = shipped_units("2025-07-01")
        .into_iter()
        .map(|u| (u.code, u.name))
        .collect();
    let rows = client
        .query(
            "SELECT code, name FROM units WHERE version = DATE '2025-07-01'",
            &[],
        )
        .await
        .expect("names");
    assert_eq!(rows.len(), file_names.len());
    for r in &rows {
        let code: String = r.get(0);
        let name: String = r.get(1);
        assert_eq!(Some(&name), file_names.get(&code), "name of {code}");
    }

    // A UTF-8 parameter finds its row, and psql prints the same text.
    let name = "Thành phố Hà Nội";
    let row = client
        .query_one(
            "SELECT code FROM units WHERE name = $1 AND version = DATE '2025-07-01'",
            &[&name],
        )
        .await
        .expect("by name");
    assert_eq!(row.get::<_, String>(0), "01");
    let out = server.psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT name FROM units WHERE code = '01' AND version = DATE '2025-07-01'",
    ]);
    assert_eq!(stdout(&out).trim(), name);

    let row = client
        .query_one(
            "SELECT name_vi FROM indicators WHERE code = 'poverty_rate'",
            &[],
        )
        .await
        .expect("indicator");
    assert_eq!(row.get::<_, String>(0), "Tỷ lệ hộ nghèo");
}

#[tokio::test]
async fn indicators_and_periods_describe_the_rules() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;

    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT sector) FROM indicators",
            &[],
        )
        .await
        .expect("indicators");
    assert!(row.get::<_, i64>(0) >= 60);
    assert!(row.get::<_, i64>(1) >= 8);
    let rules = client
        .query(
            "SELECT code, across_units, across_time, scale FROM indicators WHERE code IN ('population', 'births', 'poverty_rate') ORDER BY code",
            &[],
        )
        .await
        .expect("rules");
    let got: Vec<(String, String, String, f64)> = rules
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("births".into(), "sum".into(), "sum".into(), 1.0),
            ("population".into(), "sum".into(), "last".into(), 1.0),
            (
                "poverty_rate".into(),
                "ratio:poor_households/households".into(),
                "last".into(),
                100.0
            ),
        ]
    );

    let row = client
        .query_one(
            "SELECT period_type, CAST(start_date AS VARCHAR), CAST(end_date AS VARCHAR), quarter, half_year, year_period FROM periods WHERE period = '2024-08'",
            &[],
        )
        .await
        .expect("period");
    let got: (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(
        got,
        (
            "month".into(),
            "2024-08-01".into(),
            "2024-08-31".into(),
            Some("2024Q3".into()),
            Some("2024S2".into()),
            "2024".into()
        )
    );
}
