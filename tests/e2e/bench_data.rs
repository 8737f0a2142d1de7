//! `baocao bench-data`: the reporting benchmark's data, committed as it
//! arrives, and the same rows for the peers.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{TestServer, TestWarehouse, baocao, stderr, ward_districts};

/// Every row of the peers' CSV: (unit, period, indicator, value, submitted_at).
type Submitted = Vec<(String, String, String, f64, String)>;

fn read_values(path: &std::path::Path) -> Submitted {
    let text = std::fs::read_to_string(path).expect("values.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("unit_code,period,indicator_code,value,submitted_at")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].parse().expect("value"),
                f[4].to_string(),
            )
        })
        .collect()
}

/// `baocao bench-data` of June 2024 into `warehouse`, the CSV at `values`,
/// with the `more` options.
fn bench_data(
    warehouse: &std::path::Path,
    values: &std::path::Path,
    more: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "bench-data",
        "--warehouse",
        warehouse.to_str().expect("path"),
        "--values",
        values.to_str().expect("path"),
        "--from",
        "2024-06",
        "--to",
        "2024-06",
    ];
    args.extend_from_slice(more);
    baocao(&args)
}

/// Generates one month of Hanoi with 30 indicators per report into a new
/// warehouse; returns it and the peers' rows.
fn generate(commits: &str) -> (TestWarehouse, Submitted) {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = TestWarehouse { dir };
    let warehouse = w.path().join("w");
    let values = w.path().join("values.csv");
    let out = bench_data(
        &warehouse,
        &values,
        &["--indicators", "30", "--commits", commits],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The same command again refuses to mix into existing data.
    let again = baocao(&[
        "bench-data",
        "--warehouse",
        warehouse.to_str().expect("path"),
        "--values",
        values.to_str().expect("path"),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let rows = read_values(&values);
    // The test's warehouse is the generated one.
    let moved = TestWarehouse {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    std::fs::remove_dir(moved.path()).expect("empty dir");
    std::fs::rename(&warehouse, moved.path()).expect("move");
    (moved, rows)
}

/// The number of Parquet files in a period's partition.
fn files(w: &TestWarehouse, period: &str) -> usize {
    std::fs::read_dir(w.path().join(format!("reports/period={period}")))
        .expect("partition")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count()
}

/// What the server serves must be the CSV's rows, the latest submission of
/// each value winning.
async fn check_served(w: &TestWarehouse, rows: &Submitted) {
    let mut latest: BTreeMap<(String, String), (String, f64)> = BTreeMap::new();
    for (unit, _, indicator, value, at) in rows {
        let e = latest
            .entry((unit.clone(), indicator.clone()))
            .or_insert((at.clone(), *value));
        if *at > e.0 {
            *e = (at.clone(), *value);
        }
    }
    let server = TestServer::start(w).await;
    let client = server.client().await;
    let served: BTreeMap<(String, String), f64> = client
        .query(
            "SELECT unit_code, indicator_code, value FROM reports WHERE period = '2024-06'",
            &[],
        )
        .await
        .expect("reports")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let expected: BTreeMap<(String, String), f64> =
        latest.into_iter().map(|(k, (_, v))| (k, v)).collect();
    assert_eq!(served, expected);
    let history: i64 = client
        .query_one("SELECT count(*) FROM reports_history", &[])
        .await
        .expect("history")
        .get(0);
    assert_eq!(history as usize, rows.len());
    // 17 ward-monthly indicators in the catalog, 13 synthetic ones added.
    let synthetic: Vec<String> = client
        .query(
            "SELECT code FROM indicators WHERE code LIKE 'bench_indicator_%' ORDER BY code",
            &[],
        )
        .await
        .expect("indicators")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(synthetic.len(), 13);
    assert_eq!(
        synthetic.first().map(String::as_str),
        Some("bench_indicator_018")
    );
    assert_eq!(
        synthetic.last().map(String::as_str),
        Some("bench_indicator_030")
    );
}

#[tokio::test]
async fn every_report_is_its_own_commit_and_the_csv_holds_the_same_rows() {
    let (w, rows) = generate("submission");
    let units: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // About 2% of the 526 wards never report.
    assert!(units.len() < 526 && units.len() > 490, "{}", units.len());
    // Each report carries every indicator; about 1% are corrected (the
    // first three values again, later).
    let mut per_unit: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *per_unit.entry(r.0.as_str()).or_default() += 1;
    }
    let corrected = per_unit.values().filter(|n| **n == 33).count();
    assert!(per_unit.values().all(|n| *n == 30 || *n == 33));
    assert!(corrected > 0 && corrected < 20, "{corrected}");
    // One commit and one Parquet file per report (the first commit creates
    // the table).
    let reports = units.len() + corrected;
    assert_eq!(w.commits(), reports + 1);
    assert_eq!(files(&w, "2024-06"), reports);
    check_served(&w, &rows).await;
}

#[tokio::test]
async fn district_commits_group_the_reports_of_a_districts_wards() {
    let (w, rows) = generate("district");
    let districts = ward_districts();
    let groups: BTreeSet<&String> = rows.iter().filter_map(|r| districts.get(&r.0)).collect();
    assert_eq!(groups.len(), 30);
    // One commit per district for the reports, one per district that had
    // corrections, one creating the table.
    let commits = w.commits() - 1;
    assert!(commits > 30 && commits < 60, "{commits}");
    assert_eq!(files(&w, "2024-06"), commits);
    check_served(&w, &rows).await;
}

#[tokio::test]
async fn a_generation_cut_off_goes_on_from_its_newest_commit() {
    let (w, rows) = generate("district");
    let commits = w.commits();
    // Cut the generation off: its newest ten commits never landed (their
    // Parquet files, written before the commit, stay behind unreferenced,
    // as after a crash).
    let log = w.path().join("reports/_delta_log");
    for entry in std::fs::read_dir(&log).expect("delta log").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let version: Option<usize> = name.split('.').next().and_then(|v| v.parse().ok());
        if version.is_some_and(|v| v >= commits - 10) {
            std::fs::remove_file(entry.path()).expect("remove a commit");
        }
    }
    assert_eq!(w.commits(), commits - 10);
    let out = tempfile::tempdir().expect("tempdir");
    let values = out.path().join("values.csv");
    let partial = values.with_extension("csv.partial");
    std::fs::write(&partial, "cut off\n").expect("partial CSV");
    let resume = |indicators: &str, seed: &str| {
        bench_data(
            w.path(),
            &values,
            &[
                "--resume",
                "--indicators",
                indicators,
                "--commits",
                "district",
                "--seed",
                seed,
            ],
        )
    };

    // Other options than the first run's (another seed; more indicators,
    // which the submission ids do not show and which would have been added
    // to the catalog) are refused before anything is changed.
    for (indicators, seed) in [("30", "1"), ("40", "173")] {
        let other = resume(indicators, seed);
        assert!(!other.status.success());
        assert!(
            stderr(&other).contains("resume with the first run's"),
            "{}",
            stderr(&other)
        );
        assert_eq!(w.commits(), commits - 10);
    }

    // The first run's options commit the ten missing groups, and the CSV
    // holds every row again.
    let resumed = resume("30", "173");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(w.commits(), commits);
    assert!(!partial.exists());
    assert_eq!(read_values(&values), rows);
    check_served(&w, &rows).await;
}
