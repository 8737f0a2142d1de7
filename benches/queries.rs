//! Times the canonical queries (`queries/sql/*.sql`) through the Postgres
//! protocol against a running `baocao serve`, as a client sees them.
//!
//! ```sh
//! cargo bench --bench queries                        # builds a demo warehouse first
//! BAOCAO_BENCH_WAREHOUSE=warehouse cargo bench --bench queries
//! ```
//!
//! Prints a Markdown table: median and fastest of `RUNS` runs after one
//! warm-up run. The side-by-side comparison with DuckDB and PostgreSQL is
//! the performance issue's work; this is the baseline it starts from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_baocao");
const RUNS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let _temp;
    let warehouse: PathBuf = match std::env::var_os("BAOCAO_BENCH_WAREHOUSE") {
        Some(w) => w.into(),
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("warehouse");
            _temp = dir;
            eprintln!("generating the demo warehouse (2021-01 to the last full month)...");
            let status = Command::new(BIN)
                .args(["demo", "--no-serve", "--warehouse"])
                .arg(&path)
                .status()?;
            if !status.success() {
                return Err("demo generation failed".into());
            }
            path
        }
    };
    let mut server = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--warehouse"])
        .arg(&warehouse)
        .env("BAOCAO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(server.stdout.take().ok_or("no stdout")?).lines();
    let mut port = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(addr) = line.strip_prefix("baocao is listening on ") {
            port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.ok_or("the server did not start")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=bench dbname=baocao"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    println!("| query | rows | median | fastest |");
    println!("| --- | ---: | ---: | ---: |");
    for file in files {
        let sql = std::fs::read_to_string(&file)?;
        let rows = client
            .simple_query(&sql)
            .await?
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            client.simple_query(&sql).await?;
            times.push(start.elapsed());
        }
        times.sort();
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        println!(
            "| {name} | {rows} | {:.1} ms | {:.1} ms |",
            times[RUNS / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
    }
    let _ = server.start_kill();
    Ok(())
}
