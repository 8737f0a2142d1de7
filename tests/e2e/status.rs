//! Completeness and timeliness against the schedule.

use chrono::Datelike;

use crate::support::{Row, TestServer, TestWarehouse, row, shipped_units, stderr};

const MONTHLY: [&str; 17] = [
    "population",
    "population_female",
    "households",
    "household_size",
    "working_age_population",
    "births",
    "deaths",
    "marriages",
    "ward_budget_revenue",
    "ward_budget_revenue_retained",
    "ward_budget_revenue_shared",
    "ward_budget_expenditure",
    "health_insurance_participants",
    "health_insurance_coverage",
    "fires",
    "fire_casualties",
    "fire_damage",
];

#[tokio::test]
async fn report_status_and_completeness_follow_submissions() {
    let w = TestWarehouse::empty();
    let wards_001: Vec<String> = shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward" && u.parent == "001")
        .map(|u| u.code)
        .collect();
    assert_eq!(wards_001.len(), 13);
    // 11 of the 13 wards of district 001 report births for 2024-07, one of
    // them the whole form. Submitted today: long after the deadline.
    let mut rows: Vec<Row> = wards_001[..11]
        .iter()
        .map(|u| row(u, "2024-07", "births", 10.0))
        .collect();
    for ind in MONTHLY.iter().filter(|i| **i != "births") {
        let v = match *ind {
            "household_size" => 3.5,
            "health_insurance_coverage" => 90.0,
            _ => 100.0,
        };
        rows.push(row(&wards_001[0], "2024-07", ind, v));
    }
    let out = w.ingest("july.parquet", &rows);
    assert!(out.status.success(), "{}", stderr(&out));

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let statuses = client
        .query(
            "SELECT status, COUNT(*), SUM(CASE WHEN complete THEN 1 ELSE 0 END) FROM report_status
             WHERE period = '2024-07' AND form = 'ward_monthly' GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .expect("status");
    let got: Vec<(String, i64, i64)> = statuses
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![("late".into(), 11, 1), ("missing".into(), 515, 0)]
    );

    let one = client
        .query_one(
            "SELECT status, received, on_time, complete, received_indicators, expected_indicators, CAST(deadline AS VARCHAR), first_submitted_at IS NOT NULL
             FROM report_status WHERE unit_code = $1 AND period = '2024-07' AND form = 'ward_monthly'",
            &[&wards_001[1]],
        )
        .await
        .expect("one");
    assert_eq!(one.get::<_, String>(0), "late");
    assert!(one.get::<_, bool>(1));
    assert_eq!(one.get::<_, Option<bool>>(2), Some(false));
    assert!(!one.get::<_, bool>(3));
    assert_eq!((one.get::<_, i64>(4), one.get::<_, i64>(5)), (1, 17));
    assert_eq!(one.get::<_, String>(6), "2024-08-20");
    assert!(one.get::<_, bool>(7));

    let cell = |unit: &'static str| {
        let client = &client;
        async move {
            let r = client
                .query_one(
                    "SELECT expected, received, on_time, late, missing, completeness_percent FROM completeness
                     WHERE unit_code = $1 AND period = '2024-07' AND form = 'ward_monthly'",
                    &[&unit],
                )
                .await
                .expect("completeness");
            (
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, Option<f64>>(5),
            )
        }
    };
    assert_eq!(cell("001").await, (13, 11, 0, 11, 2, Some(84.6)));
    assert_eq!(cell("01").await, (526, 11, 0, 11, 515, Some(2.1)));
    assert_eq!(cell("002").await.1, 0);

    // Every month from the first with data to this one is expected.
    let months: i64 = client
        .query_one(
            "SELECT COUNT(DISTINCT period) FROM report_status WHERE form = 'ward_monthly'",
            &[],
        )
        .await
        .expect("months")
        .get(0);
    let today = chrono::Utc::now().date_naive();
    let expected_months = (i64::from(today.year()) - 2024) * 12 + i64::from(today.month()) - 7 + 1;
    assert_eq!(months, expected_months);

    // A new submission changes the views at once.
    let out = w.ingest(
        "late.parquet",
        &[row(&wards_001[12], "2024-07", "births", 4.0)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cell("001").await, (13, 12, 0, 12, 1, Some(92.3)));
}

#[tokio::test]
async fn demo_reports_are_mostly_on_time_and_views_agree() {
    let w = TestWarehouse::demo("2025-05", "2025-07");
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    for period in ["2025-06", "2025-07"] {
        let r = client
            .query_one(
                "SELECT expected, received, on_time, late, missing, pending FROM completeness WHERE unit_code = '01' AND period = $1 AND form = 'ward_monthly'",
                &[&period],
            )
            .await
            .expect("city");
        let (expected, received, on_time, late, missing, pending): (i64, i64, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        assert_eq!(expected, if period == "2025-06" { 526 } else { 126 });
        assert_eq!(received, on_time + late);
        assert_eq!(expected, received + missing + pending);
        assert!(
            on_time > late && late > 0,
            "{period}: {on_time} on time, {late} late"
        );
        // The same count straight from the submitted values.
        let units: i64 = client
            .query_one("SELECT COUNT(DISTINCT unit_code) FROM reports_history WHERE period = $1 AND indicator_code = 'births'", &[&period])
            .await
            .expect("units")
            .get(0);
        assert_eq!(units, received);
        // And from report_status, row by row.
        let rows: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM report_status WHERE period = $1 AND form = 'ward_monthly' AND status IN ('on_time', 'late')",
                &[&period],
            )
            .await
            .expect("rows")
            .get(0);
        assert_eq!(rows, received);
    }
    // Districts add up to the city before the reform.
    let sum: i64 = client
        .query_one("SELECT CAST(SUM(received) AS BIGINT) FROM completeness WHERE unit_level = 'district' AND period = '2025-06' AND form = 'ward_monthly'", &[])
        .await
        .expect("districts")
        .get(0);
    let city: i64 = client
        .query_one("SELECT received FROM completeness WHERE unit_code = '01' AND period = '2025-06' AND form = 'ward_monthly'", &[])
        .await
        .expect("city")
        .get(0);
    assert_eq!(sum, city);
}
