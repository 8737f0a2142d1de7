//! Roll-ups checked cell by cell against values computed here, in plain
//! Rust, from the rows the test wrote and the shipped hierarchy files.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::error::SqlState;

use crate::support::{Row, TestServer, TestWarehouse, row, shipped_units, stderr};

fn h(parts: &[&str]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.bytes().chain([0xff]))
        .fold(1469598103934665603u64, |acc, b| {
            (acc ^ u64::from(b)).wrapping_mul(1099511628211)
        })
}

/// Ward -> (district, city) of a hierarchy file.
fn parents(version: &str) -> BTreeMap<String, Vec<String>> {
    let units = shipped_units(version);
    let by: BTreeMap<String, String> = units
        .iter()
        .map(|u| (u.code.clone(), u.parent.clone()))
        .collect();
    units
        .iter()
        .map(|u| {
            let mut chain = Vec::new();
            let mut cur = u.parent.clone();
            while !cur.is_empty() {
                chain.push(cur.clone());
                cur = by.get(&cur).cloned().unwrap_or_default();
            }
            (u.code.clone(), chain)
        })
        .collect()
}

type Cells = BTreeMap<(String, String, String), (f64, i64)>;

/// Adds `value` of a reporting unit to every ancestor-or-self cell.
fn add_up(
    cells: &mut BTreeMap<(String, String, String), Vec<f64>>,
    chains: &BTreeMap<String, Vec<String>>,
    unit: &str,
    period: &str,
    ind: &str,
    value: f64,
) {
    let mut targets = vec![unit.to_string()];
    targets.extend(chains.get(unit).cloned().unwrap_or_default());
    for t in targets {
        cells
            .entry((t, period.to_string(), ind.to_string()))
            .or_default()
            .push(value);
    }
}

async fn fetch(client: &tokio_postgres::Client, sql: &str) -> Cells {
    client
        .query(sql, &[])
        .await
        .expect("rollup query")
        .iter()
        .map(|r| {
            (
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                ),
                (
                    r.get::<_, Option<f64>>(3).unwrap_or(f64::NAN),
                    r.get::<_, i64>(4),
                ),
            )
        })
        .collect()
}

fn assert_cells(got: &Cells, expected: &Cells) {
    let gk: BTreeSet<_> = got.keys().collect();
    let ek: BTreeSet<_> = expected.keys().collect();
    assert_eq!(
        gk.len(),
        ek.len(),
        "cell count; missing {:?}, extra {:?}",
        ek.difference(&gk).take(5).collect::<Vec<_>>(),
        gk.difference(&ek).take(5).collect::<Vec<_>>()
    );
    for (k, (v, n)) in expected {
        let (gv, gn) = got.get(k).unwrap_or_else(|| panic!("missing cell {k:?}"));
        assert!(
            (gv - v).abs() <= 1e-6 * v.abs().max(1.0),
            "{k:?}: got {gv}, expected {v}"
        );
        assert_eq!(gn, n, "{k:?}: reporting units");
    }
}

#[tokio::test]
async fn every_cell_follows_the_indicator_rules() {
    let w = TestWarehouse::empty();
    let chains = parents("2025-01-01");
    let wards: Vec<String> = shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code)
        .collect();
    let months = ["2024-07", "2024-08", "2024-09"];
    let mut rows: Vec<Row> = Vec::new();
    for wd in &wards {
        for m in months {
            // Some wards miss a month: "last" must fall back to their latest.
            if h(&[wd, m, "skip"]).is_multiple_of(10) {
                continue;
            }
            let pop = (5_000 + h(&[wd, m, "pop"]) % 20_000) as f64;
            rows.push(row(wd, m, "population", pop));
            rows.push(row(wd, m, "births", (h(&[wd, m, "b"]) % 40) as f64));
            rows.push(row(wd, m, "households", (pop / 3.8).round()));
            rows.push(row(
                wd,
                m,
                "health_insurance_participants",
                (pop * 0.9).round(),
            ));
        }
        if !h(&[wd, "poor"]).is_multiple_of(7) {
            rows.push(row(
                wd,
                "2024",
                "poor_households",
                (h(&[wd, "p"]) % 12) as f64,
            ));
        }
    }
    let out = w.ingest("q3.parquet", &rows);
    assert!(out.status.success(), "{}", stderr(&out));

    // Expected cells, computed here: time first per ward, then up the tree.
    let mut by_ward: BTreeMap<(&str, &str), Vec<(&str, f64)>> = BTreeMap::new();
    for r in &rows {
        by_ward
            .entry((r.unit.as_str(), r.indicator.as_str()))
            .or_default()
            .push((r.period.as_str(), r.value));
    }
    let mut sums: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut ratio_parts: BTreeMap<(String, String, String), (f64, f64, i64)> = BTreeMap::new();
    for p in ["2024-07", "2024-08", "2024-09", "2024Q3", "2024S2", "2024"] {
        let inside = |m: &str| {
            p == m
                || (p != m
                    && m.len() == 7
                    && months.contains(&m)
                    && (p.starts_with("2024Q3") || p == "2024S2" || p == "2024"))
        };
        let mut per_ward: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for ((wd, ind), series) in &by_ward {
            let mut s: Vec<(&str, f64)> =
                series.iter().copied().filter(|(m, _)| inside(m)).collect();
            if s.is_empty() {
                continue;
            }
            s.sort_by(|a, b| a.0.cmp(b.0));
            let v = match *ind {
                "births" => s.iter().map(|x| x.1).sum(),
                _ => s.last().map(|x| x.1).unwrap_or_default(),
            };
            per_ward.insert((wd, ind), v);
        }
        for ((wd, ind), v) in &per_ward {
            if *ind == "population" || *ind == "births" || *ind == "households" {
                add_up(&mut sums, &chains, wd, p, ind, *v);
            }
        }
        // Ratios over wards that reported both parts.
        for (name, num, den) in [
            (
                "health_insurance_coverage",
                "health_insurance_participants",
                "population",
            ),
            ("poverty_rate", "poor_households", "households"),
        ] {
            for wd in &wards {
                let (Some(n), Some(d)) = (
                    per_ward.get(&(wd.as_str(), num)),
                    per_ward.get(&(wd.as_str(), den)),
                ) else {
                    continue;
                };
                let mut targets = vec![wd.clone()];
                targets.extend(chains.get(wd.as_str()).cloned().unwrap_or_default());
                for t in targets {
                    let e = ratio_parts
                        .entry((t, p.to_string(), name.to_string()))
                        .or_default();
                    e.0 += n;
                    e.1 += d;
                    e.2 += 1;
                }
            }
        }
    }
    let mut expected: Cells = sums
        .into_iter()
        .map(|(k, v)| (k, (v.iter().sum(), v.len() as i64)))
        .collect();
    for (k, (n, d, c)) in ratio_parts {
        expected.insert(k, (100.0 * n / d, c));
    }

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let got = fetch(
        &client,
        "SELECT unit_code, period, indicator_code, value, reporting_units FROM rollup
         WHERE indicator_code IN ('population', 'births', 'households', 'health_insurance_coverage', 'poverty_rate')
           AND period IN ('2024-07', '2024-08', '2024-09', '2024Q3', '2024S2', '2024')",
    )
    .await;
    assert_cells(&got, &expected);

    // expected_units and levels of a few cells.
    let cell = client
        .query_one(
            "SELECT unit_level, period_type, expected_units, CAST(hierarchy_version AS VARCHAR) FROM rollup WHERE unit_code = '001' AND period = '2024Q3' AND indicator_code = 'births'",
            &[],
        )
        .await
        .expect("cell");
    let wards_in_001 = chains
        .iter()
        .filter(|(c, ch)| c.len() == 5 && ch.first().map(String::as_str) == Some("001"))
        .count() as i64;
    assert_eq!(
        (
            cell.get::<_, String>(0),
            cell.get::<_, String>(1),
            cell.get::<_, i64>(2),
            cell.get::<_, String>(3)
        ),
        (
            "district".to_string(),
            "quarter".to_string(),
            wards_in_001,
            "2025-01-01".to_string()
        )
    );

    // A rate is never summed: no quarter or month cell of a yearly ratio.
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM rollup WHERE indicator_code = 'poverty_rate' AND period_type <> 'year'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);

    // The table is live: a new submission changes the roll-up at once.
    let before: f64 = client
        .query_one("SELECT value FROM rollup WHERE unit_code = '01' AND period = '2024Q3' AND indicator_code = 'births'", &[])
        .await
        .expect("before")
        .get(0);
    let first = &wards[0];
    let old: f64 = rows
        .iter()
        .filter(|r| &r.unit == first && r.period == "2024-09" && r.indicator == "births")
        .map(|r| r.value)
        .sum();
    let out = w.ingest(
        "fix.parquet",
        &[row(first, "2024-09", "births", old + 100.0)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after: f64 = client
        .query_one("SELECT value FROM rollup WHERE unit_code = '01' AND period = '2024Q3' AND indicator_code = 'births'", &[])
        .await
        .expect("after")
        .get(0);
    assert_eq!(after, before + 100.0);
}

#[tokio::test]
async fn the_reform_maps_old_wards_onto_new_ones() {
    let w = TestWarehouse::empty();
    let old_wards: Vec<String> = shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code)
        .collect();
    let new_units = shipped_units("2025-07-01");
    let new_wards: Vec<String> = new_units
        .iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code.clone())
        .collect();
    let births = |u: &str, p: &str| (1 + h(&[u, p]) % 30) as f64;
    let mut rows: Vec<Row> = old_wards
        .iter()
        .map(|u| row(u, "2025-06", "births", births(u, "2025-06")))
        .collect();
    rows.extend(
        new_wards
            .iter()
            .map(|u| row(u, "2025-07", "births", births(u, "2025-07"))),
    );
    let out = w.ingest("reform.parquet", &rows);
    assert!(out.status.success(), "{}", stderr(&out));

    // Shares computed here from the mapping file and the new wards' areas.
    let area: BTreeMap<String, f64> = {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("catalog/data/hierarchy/units_2025-07-01.csv");
        let mut r = csv::Reader::from_path(path).expect("csv");
        r.records()
            .map(|x| {
                let x = x.expect("record");
                (x[0].to_string(), x[6].parse::<f64>().unwrap_or(0.0))
            })
            .collect()
    };
    let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("catalog/data/hierarchy/ward_changes_2025-07-01.csv");
        let mut r = csv::Reader::from_path(path).expect("csv");
        for x in r.records() {
            let x = x.expect("record");
            targets
                .entry(x[0].to_string())
                .or_default()
                .push(x[1].to_string());
        }
    }
    let mut june_new: BTreeMap<String, f64> = BTreeMap::new();
    for old in &old_wards {
        let ts = targets.get(old).cloned().unwrap_or_default();
        let total: f64 = ts.iter().map(|t| area[t]).sum();
        for t in &ts {
            *june_new.entry(t.clone()).or_default() += births(old, "2025-06") * area[t] / total;
        }
    }
    let june_total: f64 = old_wards.iter().map(|u| births(u, "2025-06")).sum();
    let july_total: f64 = new_wards.iter().map(|u| births(u, "2025-07")).sum();

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    // rollup: June along the old hierarchy (30 districts), July without districts.
    let levels = |period: &'static str| {
        let client = &client;
        async move {
            client
                .query(&format!("SELECT DISTINCT unit_level FROM rollup WHERE period = '{period}' AND indicator_code = 'births' ORDER BY 1"), &[])
                .await
                .expect("levels")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(levels("2025-06").await, ["district", "province", "ward"]);
    assert_eq!(levels("2025-07").await, ["province", "ward"]);
    // The year spanning the reform rolls up along the hierarchy of its last
    // day: the new one, June's old wards mapped in.
    let year = client
        .query_one("SELECT value, reporting_units, expected_units FROM rollup WHERE unit_code = '01' AND period = '2025' AND indicator_code = 'births'", &[])
        .await
        .expect("year");
    assert!((year.get::<_, f64>(0) - (june_total + july_total)).abs() < 1e-6);
    assert_eq!((year.get::<_, i64>(1), year.get::<_, i64>(2)), (126, 126));

    // rollup_current: June per new ward, apportioned by the real mapping.
    let got: BTreeMap<String, f64> = client
        .query("SELECT unit_code, value FROM rollup_current WHERE period = '2025-06' AND indicator_code = 'births' AND unit_level = 'ward'", &[])
        .await
        .expect("current")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got.len(), june_new.len());
    for (code, v) in &june_new {
        assert!((got[code] - v).abs() < 1e-4, "{code}: {} vs {v}", got[code]);
    }
    let city: f64 = client
        .query_one("SELECT value FROM rollup_current WHERE period = '2025-06' AND indicator_code = 'births' AND unit_code = '01'", &[])
        .await
        .expect("city")
        .get(0);
    assert!((city - june_total).abs() < 1e-6, "{city} vs {june_total}");
}

#[tokio::test]
async fn unit_and_period_functions() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let row = client
        .query_one(
            "SELECT unit_parent('00004', '2024-07'), unit_parent('00004'), unit_ancestor('00004', 'district', DATE '2024-07-01'),
                    unit_path('00004', '2024-07'), unit_path('00004'), unit_name('00004', '2024-07'), unit_name('00004'),
                    is_within('00004', '001', '2024-07'), is_within('00004', '002', '2024-07'), unit_name('99999'),
                    period_parent('2024-08', 'quarter'), period_parent('2024Q3', 'year'), CAST(period_start('2024Q3') AS VARCHAR),
                    CAST(period_end('2024-02') AS VARCHAR), period_type('2024S1')",
            &[],
        )
        .await
        .expect("functions");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("001"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("01"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("001"));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("01/001/00004")
    );
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("01/00004"));
    assert_eq!(
        row.get::<_, Option<String>>(5).as_deref(),
        Some("Phường Trúc Bạch")
    );
    assert_eq!(
        row.get::<_, Option<String>>(6).as_deref(),
        Some("Phường Ba Đình")
    );
    assert_eq!(row.get::<_, Option<bool>>(7), Some(true));
    assert_eq!(row.get::<_, Option<bool>>(8), Some(false));
    assert_eq!(row.get::<_, Option<String>>(9), None);
    assert_eq!(row.get::<_, Option<String>>(10).as_deref(), Some("2024Q3"));
    assert_eq!(row.get::<_, Option<String>>(11).as_deref(), Some("2024"));
    assert_eq!(
        row.get::<_, Option<String>>(12).as_deref(),
        Some("2024-07-01")
    );
    assert_eq!(
        row.get::<_, Option<String>>(13).as_deref(),
        Some("2024-02-29")
    );
    assert_eq!(
        row.get::<_, Option<String>>(14).as_deref(),
        Some("half_year")
    );

    // Over a column, too.
    let rows = client
        .query("SELECT code, unit_path(code, '2024-01') FROM units WHERE level = 'district' AND version = DATE '2025-01-01' ORDER BY code LIMIT 2", &[])
        .await
        .expect("column");
    let got: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            ("001".into(), Some("01/001".into())),
            ("002".into(), Some("01/002".into()))
        ]
    );

    for (sql, needle) in [
        (
            "SELECT period_start('2024-13')",
            "period_start: '2024-13' is not a period: the month must be 01 to 12",
        ),
        (
            "SELECT period_parent('2024', 'month')",
            "period_parent: a month cannot contain the year 2024",
        ),
        (
            "SELECT unit_ancestor('00004', 'county')",
            "unit_ancestor: 'county' is not a level",
        ),
        (
            "SELECT unit_name('00004', 'yesterday')",
            "unit_name: as_of 'yesterday' is neither a date",
        ),
    ] {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().expect("server error");
        assert_eq!(
            db.code(),
            &SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: {}",
            db.message()
        );
        assert!(db.message().starts_with(needle), "{sql}: {}", db.message());
    }
    let err = client
        .simple_query("SELECT period_type()")
        .await
        .expect_err("arity");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::UNDEFINED_FUNCTION);
    assert!(
        db.message()
            .contains("Candidate functions:\n\tperiod_type(Any)"),
        "{}",
        db.message()
    );
}
