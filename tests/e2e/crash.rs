//! Crash safety: the server dies while files land and INSERTs are
//! acknowledged; after a restart every acknowledged submission is there,
//! nothing is there twice, no partial submission is visible, and every
//! landed file is committed exactly once. Twice over: killed with SIGKILL at
//! varied moments, and stopped at each named crash point of the ingest path
//! (`BAOCAO_CRASH_AT`, see `ingest/src/crash.rs`).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command as TokioCommand;

use crate::support::{BIN, TestServer, TestWarehouse, row, shipped_units, write_parquet};

/// SIGABRT: how a crash point ends the process.
const ABORTED: i32 = 6;

/// One file per ward as an ETL job drops it (written under a temporary
/// name, then renamed): births = its position + 1, deaths = 1, 2024-07.
fn drop_ward_files(landing: &Path, wards: &[String]) {
    for (i, ward) in wards.iter().enumerate() {
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
}

/// Waits until the server has taken every landed file (a guard against a
/// hang, not a timing check).
async fn wait_until_taken(landing: &Path) {
    for _ in 0..600 {
        if landed(landing).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("files left in {}: {:?}", landing.display(), landed(landing));
}

/// The files in the quarantine folder.
fn quarantined(w: &TestWarehouse) -> usize {
    std::fs::read_dir(w.path().join("quarantine")).map_or(0, |d| d.count())
}

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
    drop_ward_files(&landing, &wards[..60]);

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
    wait_until_taken(&landing).await;
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
    assert_eq!(quarantined(&w), 0);

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

/// The names in `dir` a reader would take (not the writers' temporary ones).
fn landed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("landing")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    names
}

/// Data files in the table's folders, referenced by the log or not.
fn data_files(w: &TestWarehouse) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            walk(&p)
                        } else {
                            usize::from(p.extension().is_some_and(|x| x == "parquet"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let reports = w.path().join("reports");
    std::fs::read_dir(&reports)
        .expect("reports")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("period="))
        .map(|e| walk(&e.path()))
        .sum()
}

/// Runs `serve` with `BAOCAO_CRASH_AT=spec` until it dies there, as the
/// landed files make it reach the point; returns its standard error.
async fn serve_until_crash(w: &TestWarehouse, spec: &str) -> String {
    let run = TokioCommand::new(BIN)
        .args([
            "serve",
            "--warehouse",
            w.path_str(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("BAOCAO_LOG", "warn")
        .env("BAOCAO_CRASH_AT", spec)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    // A guard against a server that never gets there, not a performance bound.
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("the server never reached {spec}"))
        .expect("run the server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let point = spec.split(':').next().unwrap_or(spec);
    assert!(
        stderr.contains(&format!("crash point {point} reached")),
        "the server ended otherwise than at {spec}: {stderr}"
    );
    assert_eq!(out.status.signal(), Some(ABORTED), "{stderr}");
    stderr
}

#[tokio::test]
async fn landed_files_survive_a_crash_at_every_point_of_their_way() {
    let wards: Vec<String> = shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| u.code)
        .take(5)
        .collect();
    // The five files are ready together, so they are committed together
    // (one commit, five submissions).
    // (point and when, commits when it stops, files still in landing/ then)
    let points = [
        // The third file read, the first two read and checked: none is in.
        ("landing-read:3", 0, 5),
        // The group's data written, its log entry not: none is in.
        ("commit-publish:1", 0, 5),
        // The group committed, no file removed yet: all five are in.
        ("landing-committed:1", 1, 5),
    ];
    for (spec, committed, waiting) in points {
        let point = spec.split(':').next().unwrap_or(spec);
        let w = TestWarehouse::empty();
        let landing = w.path().join("landing");
        std::fs::create_dir_all(&landing).expect("landing");
        drop_ward_files(&landing, &wards);
        // A writer still busy with its file when the server dies.
        std::fs::write(landing.join("late.parquet.tmp"), b"PAR1 half written").expect("tmp");
        let commits = w.commits();

        serve_until_crash(&w, spec).await;
        assert_eq!(
            w.commits(),
            commits + committed,
            "{point}: commits at the crash"
        );
        assert_eq!(landed(&landing).len(), waiting, "{point}: files left");
        if point == "commit-publish" {
            // Mid-commit for real: a data file (the five files' rows, one
            // period) no log entry names.
            assert_eq!(data_files(&w), 1, "{point}: the orphan data file");
        }

        // The restart takes the rest, each file once.
        let server = TestServer::start(&w).await;
        wait_until_taken(&landing).await;
        assert_eq!(
            w.commits(),
            commits + 1,
            "{point}: one commit for the five files, made once"
        );
        assert!(
            landing.join("late.parquet.tmp").exists(),
            "{point}: a file being written is never taken"
        );
        assert_eq!(quarantined(&w), 0, "{point}: nothing quarantined");
        let client = server.client().await;
        let history = client
            .query(
                "SELECT unit_code, COUNT(*) FROM reports_history GROUP BY unit_code ORDER BY unit_code",
                &[],
            )
            .await
            .expect("history");
        let mut expected: Vec<(String, i64)> = wards.iter().map(|w| (w.clone(), 2)).collect();
        expected.sort();
        let got: Vec<(String, i64)> = history.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, expected, "{point}: every file's rows, once");
        let births: f64 = client
            .query_one(
                "SELECT SUM(value) FROM reports WHERE indicator_code = 'births'",
                &[],
            )
            .await
            .expect("births")
            .get(0);
        assert_eq!(births, 15.0, "{point}: 1 + 2 + 3 + 4 + 5");
    }
}

#[tokio::test]
async fn an_insert_cut_off_mid_commit_is_not_acknowledged_and_not_visible() {
    let w = TestWarehouse::empty();
    let insert = "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, '2024-07', 'births', $2)";
    let mut server =
        TestServer::start_with_env(&w, &[], &[("BAOCAO_CRASH_AT", "commit-publish:2")]).await;
    let client = server.client().await;
    let acknowledged = client
        .execute(insert, &[&"00004", &10.0f64])
        .await
        .expect("the first commit completes");
    assert_eq!(acknowledged, 1);
    let cut_off = client.execute(insert, &[&"00007", &20.0f64]).await;
    assert!(
        cut_off.is_err(),
        "a commit that never finished was acknowledged"
    );
    assert_eq!(server.exited().await.signal(), Some(ABORTED));
    drop(client);

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT unit_code, value FROM reports_history ORDER BY unit_code",
            &[],
        )
        .await
        .expect("history");
    let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("00004".to_string(), 10.0)]);
    // The table takes the next commit as if nothing happened.
    let n = client
        .execute(insert, &[&"00007", &20.0f64])
        .await
        .expect("insert after the restart");
    assert_eq!(n, 1);
    let total: f64 = client
        .query_one("SELECT SUM(value) FROM reports", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(total, 30.0);
}
