//! The bad-input corpus: each malformed file is quarantined with its own
//! specific reason, and nothing committed changes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::support::{TestServer, TestWarehouse, row, write_parquet};

fn parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch");
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).expect("create"), schema, None)
        .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn text(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[tokio::test]
async fn every_bad_file_is_quarantined_with_its_reason() {
    let w = TestWarehouse::empty();
    // Something committed first, to check it is unchanged at the end.
    assert!(
        w.ingest("base.parquet", &[row("00004", "2024-07", "births", 12.0)])
            .status
            .success()
    );
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let before: Vec<(String, f64)> = client
        .query(
            "SELECT unit_code || period || indicator_code, value FROM reports_history ORDER BY 1",
            &[],
        )
        .await
        .expect("before")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let staging = w.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging");
    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut add = |name: &'static str, expected: &str, make: &dyn Fn(&Path)| {
        make(&staging.join(name));
        cases.push((name, expected.to_string()));
    };
    add("truncated.parquet", "not a readable Parquet file", &|p| {
        write_parquet(p, &[row("00004", "2024-07", "births", 1.0)]);
        let bytes = std::fs::read(p).expect("read");
        std::fs::write(p, &bytes[..bytes.len() / 2]).expect("truncate");
    });
    add("not-parquet.parquet", "not a readable Parquet file", &|p| {
        std::fs::write(p, "unit_code,period\n").expect("write")
    });
    add(
        "wrong-types.parquet",
        "column unit_code must be text, not Int64",
        &|p| {
            parquet(
                p,
                vec![
                    ("unit_code", Arc::new(Int64Array::from(vec![4])) as ArrayRef),
                    ("period", text(&["2024-07"])),
                    ("indicator_code", text(&["births"])),
                    ("value", Arc::new(Float64Array::from(vec![1.0]))),
                ],
            )
        },
    );
    add("missing-columns.csv", "column period is missing", &|p| {
        std::fs::write(p, "unit_code,births\n00004,1\n").expect("write")
    });
    add(
        "unknown-unit.csv",
        "row 1: unit_code '99999' is not a unit of the hierarchy in force in 2024-07",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n99999,2024-07,births,1\n",
            )
            .expect("write")
        },
    );
    add(
        "old-ward-new-period.csv",
        "row 1: unit_code '00007' is not a unit of the hierarchy in force in 2025-09 (version of 2025-07-01)",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00007,2025-09,births,1\n",
            )
            .expect("write")
        },
    );
    add(
        "unknown-indicator.csv",
        "row 1: indicator_code 'gdp_of_mars' is not in the indicator catalog",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00004,2024-07,gdp_of_mars,1\n",
            )
            .expect("write")
        },
    );
    add(
        "bad-period.csv",
        "row 1: '2024-13' is not a period: the month must be 01 to 12",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00004,2024-13,births,1\n",
            )
            .expect("write")
        },
    );
    add(
        "future-period.csv",
        "row 1: period '2999-01' has not started yet",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00004,2999-01,births,1\n",
            )
            .expect("write")
        },
    );
    add(
        "nan.parquet",
        "row 1: value NaN of 'births' is not a finite number",
        &|p| write_parquet(p, &[row("00004", "2024-07", "births", f64::NAN)]),
    );
    add(
        "infinity.csv",
        "row 1: value inf of 'births' is not a finite number",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00004,2024-07,births,inf\n",
            )
            .expect("write")
        },
    );
    add(
        "negative-count.csv",
        "row 1: value -3 of 'births' is below its minimum 0",
        &|p| {
            std::fs::write(
                p,
                "unit_code,period,indicator_code,value\n00004,2024-07,births,-3\n",
            )
            .expect("write")
        },
    );
    add(
        "duplicate.csv",
        "row 2: unit 00004 period 2024-07 indicator births appears more than once",
        &|p| {
            std::fs::write(p, "unit_code,period,indicator_code,value\n00004,2024-07,births,1\n00004,2024-07,births,2\n").expect("write")
        },
    );
    add("empty.csv", "the file is empty", &|p| {
        std::fs::write(p, "").expect("write")
    });
    add("header-only.csv", "the input has no rows", &|p| {
        std::fs::write(p, "unit_code,period,indicator_code,value\n").expect("write")
    });
    add(
        "huge-field.csv",
        "row 1: unit_code is 10485760 bytes long",
        &|p| {
            let mut s = String::from("unit_code,period,indicator_code,value\n");
            s.push_str(&"7".repeat(10 * 1024 * 1024));
            s.push_str(",2024-07,births,1\n");
            std::fs::write(p, s).expect("write")
        },
    );
    add("latin1.csv", "is not UTF-8 text", &|p| {
        let mut bytes = b"unit_code,period,indicator_code,value\n00004,2024-07,births,1\n".to_vec();
        bytes.extend_from_slice(b"0000\xe9,2024-07,births,1\n");
        std::fs::write(p, bytes).expect("write")
    });

    let landing = w.path().join("landing");
    for (name, _) in &cases {
        std::fs::rename(staging.join(name), landing.join(name)).expect("drop");
    }
    for _ in 0..600 {
        if std::fs::read_dir(&landing).expect("landing").count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quarantine = w.path().join("quarantine");
    for (name, expected) in &cases {
        assert!(quarantine.join(name).exists(), "{name} was not quarantined");
        let report = std::fs::read_to_string(quarantine.join(format!("{name}.error.json")))
            .expect("error file");
        // "row N: reason" is stored as a row number and a reason.
        let (row, reason) = match expected
            .strip_prefix("row ")
            .and_then(|r| r.split_once(": "))
        {
            Some((n, reason)) => (Some(n), reason),
            None => (None, expected.as_str()),
        };
        let shown = &report[..report.len().min(600)];
        assert!(
            report.contains(reason),
            "{name}: expected {reason:?} in {shown}"
        );
        if let Some(n) = row {
            assert!(
                report.contains(&format!("\"row\": {n}")),
                "{name}: expected row {n} in {shown}"
            );
        }
        assert!(
            report.len() < 100_000,
            "{name}: the error file echoes the input ({} bytes)",
            report.len()
        );
    }

    let after: Vec<(String, f64)> = client
        .query(
            "SELECT unit_code || period || indicator_code, value FROM reports_history ORDER BY 1",
            &[],
        )
        .await
        .expect("after")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(after, before, "nothing committed changed");
}
