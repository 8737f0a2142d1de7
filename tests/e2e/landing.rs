//! The landing folder: dropped files are committed once, or quarantined
//! with the reasons; temporary names are left alone. And `baocao check`.

use std::path::Path;
use std::time::Duration;

use crate::support::{TestServer, TestWarehouse, baocao, row, stdout, write_parquet};

/// Waits until `path` no longer exists (a guard against hanging, not a timing check).
async fn gone(path: &Path) {
    for _ in 0..600 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was never processed", path.display());
}

fn drop_file(landing: &Path, name: &str, write: impl FnOnce(&Path)) -> std::path::PathBuf {
    // The writer protocol: a temporary name, then a rename.
    let tmp = landing.join(format!(".{name}.tmp"));
    write(&tmp);
    let target = landing.join(name);
    std::fs::rename(&tmp, &target).expect("rename");
    target
}

#[tokio::test]
async fn dropped_files_are_committed_once_or_quarantined() {
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let landing = w.path().join("landing");
    let quarantine = w.path().join("quarantine");

    // A long Parquet file and a wide CSV file.
    let long = drop_file(&landing, "ward-00004.parquet", |p| {
        write_parquet(
            p,
            &[
                row("00004", "2024-07", "births", 12.0),
                row("00004", "2024-07", "deaths", 5.0),
            ],
        )
    });
    let wide = drop_file(&landing, "district-001.csv", |p| {
        std::fs::write(
            p,
            "unit_code,period,births,marriages\n00007,2024-07,9,3\n00008,2024-07,4,\n",
        )
        .expect("csv")
    });
    // Names the protocol says are not ready.
    std::fs::write(landing.join(".half-written.csv"), "unit_code").expect("write");
    std::fs::write(landing.join("upload.csv.tmp"), "unit_code").expect("write");
    gone(&long).await;
    gone(&wide).await;

    let rows = client
        .query(
            "SELECT unit_code, indicator_code, value, submitted_by FROM reports ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("reports");
    let got: Vec<(String, String, f64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "00004".into(),
                "births".into(),
                12.0,
                "landing:ward-00004.parquet".into()
            ),
            (
                "00004".into(),
                "deaths".into(),
                5.0,
                "landing:ward-00004.parquet".into()
            ),
            (
                "00007".into(),
                "births".into(),
                9.0,
                "landing:district-001.csv".into()
            ),
            (
                "00007".into(),
                "marriages".into(),
                3.0,
                "landing:district-001.csv".into()
            ),
            (
                "00008".into(),
                "births".into(),
                4.0,
                "landing:district-001.csv".into()
            ),
        ]
    );
    let source: String = client
        .query_one(
            "SELECT DISTINCT source FROM reports_history WHERE unit_code = '00004'",
            &[],
        )
        .await
        .expect("source")
        .get(0);
    assert_eq!(source, "landing/ward-00004.parquet");
    assert!(landing.join(".half-written.csv").exists());
    assert!(landing.join("upload.csv.tmp").exists());

    // The same file again (as after a crash between commit and removal):
    // removed, not committed twice.
    let commits = w.commits();
    let again = drop_file(&landing, "ward-00004.parquet", |p| {
        write_parquet(
            p,
            &[
                row("00004", "2024-07", "births", 12.0),
                row("00004", "2024-07", "deaths", 5.0),
            ],
        )
    });
    gone(&again).await;
    assert_eq!(w.commits(), commits);
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM reports_history", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 5);

    // A bad file goes to quarantine whole, with the reasons beside it.
    let bad = drop_file(&landing, "bad.csv", |p| {
        std::fs::write(p, "unit_code,period,indicator_code,value\n00004,2024-08,births,1\n99999,2024-08,births,2\n00004,2024-8,births,3\n").expect("csv")
    });
    gone(&bad).await;
    assert!(quarantine.join("bad.csv").exists());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(quarantine.join("bad.csv.error.json")).expect("error file"),
    )
    .expect("json");
    assert_eq!(report["file"], "bad.csv");
    assert_eq!(report["problems"], 2);
    assert_eq!(report["errors"][0]["row"], 2);
    assert_eq!(report["errors"][0]["field"], "unit_code");
    assert_eq!(report["errors"][1]["row"], 3);
    assert_eq!(report["errors"][1]["field"], "period");
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM reports_history", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 5, "nothing of the bad file was committed");

    // A file that is not what its name says.
    let junk = drop_file(&landing, "junk.parquet", |p| {
        std::fs::write(p, b"not parquet").expect("write")
    });
    gone(&junk).await;
    let report =
        std::fs::read_to_string(quarantine.join("junk.parquet.error.json")).expect("error file");
    assert!(report.contains("not a readable Parquet file"), "{report}");
}

#[tokio::test]
async fn files_ready_together_are_committed_together_each_its_own_submission() {
    let w = TestWarehouse::empty();
    let landing = w.path().join("landing");
    std::fs::create_dir_all(&landing).expect("landing");
    // Dropped while no server runs, so one pass finds them all. Names sort
    // in arrival order too (files written in one clock tick share a time).
    drop_file(&landing, "a-first.csv", |p| {
        std::fs::write(
            p,
            "unit_code,period,indicator_code,value\n00004,2024-07,births,1\n00007,2024-07,births,2\n",
        )
        .expect("csv")
    });
    drop_file(&landing, "b-refused.csv", |p| {
        std::fs::write(
            p,
            "unit_code,period,indicator_code,value\n99999,2024-07,births,3\n",
        )
        .expect("csv")
    });
    // A correction of the first file's value for 00004: later, so it stands.
    drop_file(&landing, "c-correction.csv", |p| {
        std::fs::write(
            p,
            "unit_code,period,indicator_code,value\n00004,2024-07,births,10\n",
        )
        .expect("csv")
    });
    let commits = w.commits();

    let server = TestServer::start(&w).await;
    let client = server.client().await;
    for name in ["a-first.csv", "b-refused.csv", "c-correction.csv"] {
        gone(&landing.join(name)).await;
    }
    assert_eq!(
        w.commits(),
        commits + 1,
        "the two valid files in one commit"
    );
    assert!(w.path().join("quarantine/b-refused.csv").exists());
    let rows = client
        .query(
            "SELECT unit_code, value, submitted_by FROM reports ORDER BY unit_code",
            &[],
        )
        .await
        .expect("reports");
    let got: Vec<(String, f64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("00004".into(), 10.0, "landing:c-correction.csv".into()),
            ("00007".into(), 2.0, "landing:a-first.csv".into()),
        ]
    );
    let submissions: i64 = client
        .query_one(
            "SELECT COUNT(DISTINCT submission_id) FROM reports_history",
            &[],
        )
        .await
        .expect("submissions")
        .get(0);
    assert_eq!(submissions, 2, "each file its own submission");
}

#[test]
fn check_validates_without_committing() {
    let w = TestWarehouse::empty();
    let good = w.path().join("good.csv");
    std::fs::write(
        &good,
        "unit_code,period,births,deaths\n00004,2024-07,12,5\n",
    )
    .expect("write");
    let bad = w.path().join("bad.csv");
    std::fs::write(
        &bad,
        "unit_code,period,births,population\n00004,2024-07,12,16000.5\n99999,2024-07,1,1\n",
    )
    .expect("write");
    let commits = w.commits();

    let out = baocao(&[
        "check",
        "--warehouse",
        w.path_str(),
        good.to_str().expect("path"),
    ]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("good.csv: 2 values"),
        "{}",
        stdout(&out)
    );

    let out = baocao(&[
        "check",
        "--warehouse",
        w.path_str(),
        good.to_str().expect("path"),
        bad.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("refused") && text.contains("bad.csv: 2 problem(s)"),
        "{text}"
    );
    assert!(
        text.contains("row 1: value 16000.5 of 'population' must be a whole number"),
        "{text}"
    );
    // One line per problem, even when a wide row carries several values.
    assert_eq!(
        text.matches("row 2: unit_code '99999'").count(),
        1,
        "{text}"
    );
    assert_eq!(w.commits(), commits);
}

#[tokio::test]
async fn an_idle_watcher_stays_idle() {
    // The watcher once woke up on the events of its own pass (opening and
    // reading the folder) and so never slept: an idle server kept both
    // cores busy. After a file has landed, a server with nothing to do must
    // use almost no CPU.
    let w = TestWarehouse::empty();
    let server = TestServer::start(&w).await;
    let landing = w.path().join("landing");
    let file = drop_file(&landing, "00004.parquet", |p| {
        write_parquet(p, &[row("00004", "2024-07", "births", 3.0)])
    });
    gone(&file).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = server.cpu_ticks() - before;
    // 300 ticks (100 per second) would be one core busy all along; the
    // broken watcher used about 400. Idle work (a checkpoint check every
    // second, the polling pass) is a tick or two.
    assert!(used < 60, "an idle server used {used} CPU ticks in 3 s");
}
