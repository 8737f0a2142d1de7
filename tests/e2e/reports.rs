//! Reports committed with `baocao ingest`, read through the server: roll-ups
//! equal the sums computed here from the rows we wrote, corrections
//! supersede, and the running server sees new commits at once.

use std::collections::BTreeMap;

use crate::support::{Row, TestServer, TestWarehouse, dump, row, stderr, ward_districts};

/// A deterministic, varied population per ward.
fn population(code: &str) -> f64 {
    let n: u64 = code
        .bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (8_000 + n % 20_000) as f64
}

const DISTRICT_TOTALS: &str = "
    SELECT u.district_code, CAST(SUM(r.value) AS DOUBLE) AS total, COUNT(*) AS wards
    FROM reports r
    JOIN periods p ON p.period = r.period
    JOIN units u ON u.code = r.unit_code
        AND (u.valid_from IS NULL OR u.valid_from <= p.end_date)
        AND (u.valid_to IS NULL OR p.end_date < u.valid_to)
    WHERE r.indicator_code = 'population' AND r.period = $1
    GROUP BY ROLLUP (u.district_code)
    ORDER BY u.district_code NULLS FIRST";

#[tokio::test]
async fn district_and_city_totals_equal_the_sum_of_their_wards() {
    let w = TestWarehouse::empty();
    let wards = ward_districts();
    assert_eq!(wards.len(), 526);
    let rows: Vec<Row> = wards
        .keys()
        .map(|c| row(c, "2024-06", "population", population(c)))
        .collect();
    let out = w.ingest("june.parquet", &rows);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut expected: BTreeMap<String, (f64, i64)> = BTreeMap::new();
    for (ward, district) in &wards {
        let e = expected.entry(district.clone()).or_default();
        e.0 += population(ward);
        e.1 += 1;
    }
    let city: f64 = wards.keys().map(|c| population(c)).sum();

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let got = client
        .query(DISTRICT_TOTALS, &[&"2024-06"])
        .await
        .expect("roll-up");
    assert_eq!(got.len(), 31, "the city and 30 districts");
    // ROLLUP's grand total row first: the city.
    assert_eq!(got[0].get::<_, Option<String>>(0), None);
    assert_eq!(got[0].get::<_, f64>(1), city);
    assert_eq!(got[0].get::<_, i64>(2), 526);
    let by_district: BTreeMap<String, (f64, i64)> = got[1..]
        .iter()
        .map(|r| {
            (
                r.get::<_, Option<String>>(0).unwrap_or_default(),
                (r.get(1), r.get(2)),
            )
        })
        .collect();
    assert_eq!(by_district, expected);

    // The same through unit_ancestors: every level in one GROUP BY.
    let rows = client
        .query(
            "SELECT a.ancestor_level, COUNT(DISTINCT a.ancestor_code), CAST(SUM(r.value) AS DOUBLE)
             FROM reports r JOIN unit_ancestors a ON a.unit_code = r.unit_code AND a.valid_from IS NULL
             WHERE r.period = '2024-06' AND r.indicator_code = 'population'
             GROUP BY a.ancestor_level ORDER BY a.ancestor_level",
            &[],
        )
        .await
        .expect("ancestors roll-up");
    let got: Vec<(String, i64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("district".into(), 30, city),
            ("province".into(), 1, city),
            ("ward".into(), 526, city)
        ]
    );
}

#[tokio::test]
async fn after_the_reform_new_wards_roll_up_straight_to_the_city() {
    let w = TestWarehouse::empty();
    let new_wards: Vec<String> = crate::support::shipped_units("2025-07-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code)
        .collect();
    assert_eq!(new_wards.len(), 126);
    let rows: Vec<Row> = new_wards
        .iter()
        .map(|c| row(c, "2025-08", "population", population(c)))
        .collect();
    let out = w.ingest("aug.parquet", &rows);
    assert!(out.status.success(), "{}", stderr(&out));
    // An old ward code that was not reused is refused for a post-reform period.
    let out = w.ingest("old.parquet", &[row("00007", "2025-08", "births", 3.0)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("unit_code '00007' is not a unit of the hierarchy in force in 2025-08"),
        "{}",
        stderr(&out)
    );

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let got = client
        .query(DISTRICT_TOTALS, &[&"2025-08"])
        .await
        .expect("roll-up");
    let city: f64 = new_wards.iter().map(|c| population(c)).sum();
    // No districts: the ROLLUP has the city row and one NULL-district group.
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].get::<_, f64>(1), city);
    assert_eq!(got[0].get::<_, i64>(2), 126);
}

#[tokio::test]
async fn a_correction_supersedes_and_history_keeps_both() {
    let w = TestWarehouse::empty();
    let out = w.ingest(
        "first.parquet",
        &[
            row("00004", "2024-07", "births", 20.0),
            row("00004", "2024-07", "deaths", 7.0),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The server is running while the correction lands: no restart needed.
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let value = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, f64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let q = "SELECT indicator_code, value FROM reports WHERE unit_code = '00004' AND period = '2024-07' ORDER BY indicator_code";
    assert_eq!(
        value(client.query(q, &[]).await.expect("before")),
        vec![("births".into(), 20.0), ("deaths".into(), 7.0)]
    );

    let out = w.ingest("fix.parquet", &[row("00004", "2024-07", "births", 23.0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        value(client.query(q, &[]).await.expect("after")),
        vec![("births".into(), 23.0), ("deaths".into(), 7.0)]
    );

    let rows = client
        .query(
            "SELECT value, submitted_by FROM reports_history WHERE unit_code = '00004' AND period = '2024-07' AND indicator_code = 'births' ORDER BY submitted_at",
            &[],
        )
        .await
        .expect("history");
    let got: Vec<(f64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(20.0, "test".into()), (23.0, "test".into())]);

    // A filter on the value applies to the latest value only.
    let n: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM reports WHERE indicator_code = 'births' AND value = 20",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn an_invalid_file_commits_nothing() {
    let w = TestWarehouse::empty();
    let before = w.commits();
    let rows = vec![
        row("00004", "2024-07", "births", 20.0),
        row("99999", "2024-07", "births", 1.0),
        row("00004", "2024-07", "no_such_indicator", 1.0),
        row("00004", "2024-7", "births", 1.0),
        row("00004", "2024-07", "population", 12.5),
        row("00004", "2024-07", "health_insurance_coverage", 130.0),
        row("001", "2024-07", "births", 5.0),
    ];
    let out = w.ingest("bad.parquet", &rows);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for part in [
        "bad.parquet",
        "row 2: unit_code '99999' is not a unit of the hierarchy in force in 2024-07",
        "row 3: indicator_code 'no_such_indicator' is not in the indicator catalog",
        "row 4: '2024-7' is not a period",
        "row 5: value 12.5 of 'population' must be a whole number",
        "(and 1 more)",
    ] {
        assert!(err.contains(part), "missing {part:?} in {err}");
    }
    assert_eq!(w.commits(), before, "nothing was committed");

    // The same checks one by one, for the rows the summary line leaves out.
    let out = w.ingest("rate.parquet", &[rows[5].clone()]);
    assert!(
        stderr(&out)
            .contains("row 1: value 130 of 'health_insurance_coverage' is above its maximum 100"),
        "{}",
        stderr(&out)
    );
    let out = w.ingest("level.parquet", &[rows[6].clone()]);
    assert!(stderr(&out).contains("row 1: unit_code '001' is a district but indicator 'births' is reported by each ward in 2024-07"), "{}", stderr(&out));
    let out = w.ingest("dup.parquet", &[rows[0].clone(), rows[0].clone()]);
    assert!(
        stderr(&out)
            .contains("row 2: unit 00004 period 2024-07 indicator births appears more than once"),
        "{}",
        stderr(&out)
    );
    let out = w.ingest("future.parquet", &[row("00004", "2999-01", "births", 1.0)]);
    assert!(
        stderr(&out).contains("period '2999-01' has not started yet"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.commits(), before, "still nothing committed");
}

#[tokio::test]
async fn a_file_with_the_wrong_columns_is_refused() {
    let w = TestWarehouse::empty();
    let path = w.path().join("wide.parquet");
    {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_code", DataType::Int64, false),
            Field::new("period", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![4])),
                Arc::new(datafusion::arrow::array::StringArray::from(vec!["2024-07"])),
            ],
        )
        .expect("batch");
        let file = std::fs::File::create(&path).expect("create");
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }
    let out = crate::support::baocao(&[
        "ingest",
        "--warehouse",
        w.path_str(),
        path.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("column unit_code must be text, not Int64"),
        "{err}"
    );
    assert!(
        err.contains("column unit_code must be text, not Int64"),
        "{err}"
    );
    assert_eq!(err.matches("must be text").count(), 1, "said once: {err}");

    let junk = w.path().join("junk.parquet");
    std::fs::write(&junk, b"not parquet at all").expect("write");
    let out = crate::support::baocao(&[
        "ingest",
        "--warehouse",
        w.path_str(),
        junk.to_str().expect("path"),
    ]);
    assert!(
        stderr(&out).contains("not a readable Parquet file"),
        "{}",
        stderr(&out)
    );
}

/// A correlated subquery in a select list answers per row (datafusion-pg-
/// catalog used to replace it by NULL; see the patch in Cargo.toml).
#[tokio::test]
async fn a_correlated_aggregate_in_the_select_list_answers_per_row() {
    let w = TestWarehouse::demo("2025-06", "2025-07");
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let per_row = client
        .query(
            "SELECT u.code, (SELECT count(*) FROM reports r WHERE r.unit_code = u.code) AS n \
             FROM units u WHERE u.version = DATE '2025-07-01' AND u.level = 'ward' ORDER BY u.code",
            &[],
        )
        .await
        .expect("correlated subquery");
    let grouped: BTreeMap<String, i64> = client
        .query(
            "SELECT unit_code, count(*) FROM reports GROUP BY unit_code",
            &[],
        )
        .await
        .expect("grouped")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_row.len(), 126);
    for r in &per_row {
        let code: String = r.get(0);
        let n: i64 = r.get(1);
        assert_eq!(n, grouped.get(&code).copied().unwrap_or(0), "ward {code}");
    }
    assert!(per_row.iter().any(|r| r.get::<_, i64>(1) > 0));
}

#[tokio::test]
async fn lookups_by_unit_read_the_same_rows_as_the_uncached_table() {
    // `reports` answers from per-period partitions kept in memory, taking a
    // named unit's rows through an index; `reports_as_of` computes the
    // latest values afresh from the history. They must agree on every
    // filter shape, corrections included.
    let w = TestWarehouse::demo("2025-05", "2025-07");
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let first = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("pick")
                .get::<_, String>(0)
        }
    };
    // A ward with a correction, and another ward.
    let corrected = first(
        "SELECT MIN(unit_code) FROM (SELECT unit_code, period, indicator_code FROM reports_history
         GROUP BY 1, 2, 3 HAVING COUNT(*) > 1)",
    )
    .await;
    let other = first("SELECT MAX(unit_code) FROM reports WHERE period = '2025-06'").await;
    let shapes = [
        format!("unit_code = '{corrected}' AND period = '2025-06'"),
        format!("unit_code = '{corrected}'"),
        format!(
            "unit_code IN ('{corrected}', '{other}', '99999') AND indicator_code IN ('births', 'deaths', 'population')"
        ),
        format!("'{other}' = unit_code AND period >= '2025-06' AND indicator_code = 'births'"),
        format!("unit_code = '{corrected}' AND unit_code = '{other}'"),
        format!("unit_code <> '{corrected}' AND period = '2025-06' AND indicator_code = 'births'"),
        "unit_code LIKE '0000%' AND period = '2025-07'".to_string(),
        format!("unit_code = '{other}' AND value > 100"),
        // Lists of up to three reach the table as ORs of equalities.
        "period IN ('2025-05', '2025-07') AND indicator_code = 'births'".to_string(),
        format!(
            "(period = '2025-06' OR period = '2025-07') AND (unit_code = '{corrected}' OR unit_code = '{other}')"
        ),
        format!("(unit_code = '{corrected}' OR period = '2025-05') AND indicator_code = 'births'"),
    ];
    let mut rows = 0;
    for shape in &shapes {
        let columns = "unit_code, period, indicator_code, value, submission_id";
        let cached = dump(
            &client,
            &format!("SELECT {columns} FROM reports WHERE {shape} ORDER BY 1, 2, 3"),
        )
        .await;
        let fresh = dump(
            &client,
            &format!(
                "SELECT {columns} FROM reports_as_of('2999-01-01') WHERE {shape} ORDER BY 1, 2, 3"
            ),
        )
        .await;
        assert_eq!(cached, fresh, "{shape}");
        rows += cached.len();
    }
    assert!(rows > 100, "the shapes selected only {rows} rows");
    // A limit under exact filters is applied once, on the chosen rows.
    let limited = dump(
        &client,
        &format!("SELECT indicator_code FROM reports WHERE unit_code = '{other}' AND period = '2025-06' LIMIT 3"),
    )
    .await;
    assert_eq!(limited.len(), 3);
    // And the lookup sees a correction at once.
    let out = w.ingest("fix.parquet", &[row(&other, "2025-06", "births", 4321.0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        dump(
            &client,
            &format!("SELECT CAST(value AS BIGINT) FROM reports WHERE unit_code = '{other}' AND period = '2025-06' AND indicator_code = 'births'"),
        )
        .await,
        ["4321"]
    );
}
