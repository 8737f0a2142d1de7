//! Crash safety: the server is killed with SIGKILL while files land and
//! INSERTs are acknowledged; after a restart every acknowledged submission
//! is there, nothing is there twice, and every landed file is committed
//! exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{TestServer, TestWarehouse, row, shipped_units, write_parquet};

#[tokio::test]
async fn killed_servers_lose_nothing_acknowledged_and_duplicate_nothing() {
    let w = TestWarehouse::empty();
    let landing = w.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    let wards: Vec<String> = shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code)
        .collect();

    // 60 one-ward files, as ETL jobs drop them.
    for (i, ward) in wards.iter().take(60).enumerate() {
        let tmp = landing.join(format!(".{ward}.parquet.tmp"));
        write_parquet(
            &tmp,
            &[
                row(ward, "2024-07", "births", (i + 1) as f64),
                row(ward, "2024-07", "deaths", 1.0),
            ],
        );
        std::fs::rename(&tmp, landing.join(format!("{ward}.parquet"))).expect("rename");
    }

    let mut acknowledged: BTreeMap<String, f64> = BTreeMap::new();
    let mut next = 60;
    // Several rounds: start, let it work a little, insert, kill -9.
    for round in 0..6u64 {
        let server = TestServer::start(&w).await;
        let client = server.client().await;
        for _ in 0..3 {
            let ward = &wards[next];
            next += 1;
            let value = next as f64;
            let sent = client
                .execute(
                    "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, '2024-07', 'births', $2)",
                    &[ward, &value],
                )
                .await;
            if sent.is_ok() {
                acknowledged.insert(ward.clone(), value);
            }
        }
        // Kill at a different moment each round, while the watcher commits.
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        drop(client);
        drop(server); // SIGKILL
    }

    // A last start processes whatever is left.
    let server = TestServer::start(&w).await;
    for _ in 0..600 {
        let left = std::fs::read_dir(&landing)
            .expect("landing")
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = server.client().await;

    // Every landed file exactly once: two values per ward, never four.
    let rows = client
        .query(
            "SELECT unit_code, COUNT(*) FROM reports_history WHERE submitted_by LIKE 'landing:%' GROUP BY unit_code",
            &[],
        )
        .await
        .expect("landed");
    assert_eq!(rows.len(), 60, "every file committed");
    for r in &rows {
        assert_eq!(
            r.get::<_, i64>(1),
            2,
            "ward {} committed more than once",
            r.get::<_, String>(0)
        );
    }
    assert!(
        !w.path().join("quarantine").exists()
            || std::fs::read_dir(w.path().join("quarantine"))
                .expect("q")
                .count()
                == 0
    );

    // Every acknowledged INSERT is there, with its value.
    assert!(!acknowledged.is_empty());
    for (ward, value) in &acknowledged {
        let got: f64 = client
            .query_one(
                "SELECT value FROM reports WHERE unit_code = $1 AND period = '2024-07' AND indicator_code = 'births'",
                &[ward],
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged insert of {ward} lost: {e}"))
            .get(0);
        assert_eq!(got, *value);
    }
    // And the table is consistent: no key twice in the current view.
    let dup: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM (SELECT unit_code, period, indicator_code FROM reports GROUP BY 1, 2, 3 HAVING COUNT(*) > 1)",
            &[],
        )
        .await
        .expect("dups")
        .get(0);
    assert_eq!(dup, 0);
}
