//! Starting warehouses and servers for the tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as TokioCommand};

pub const BIN: &str = env!("CARGO_BIN_EXE_baocao");

/// Runs the binary with `args` and returns its output.
pub fn baocao(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("BAOCAO_WAREHOUSE")
        .env_remove("BAOCAO_LISTEN")
        .stdin(Stdio::null())
        .output()
        .expect("run baocao")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A warehouse in a temporary folder, removed at the end of the test.
pub struct TestWarehouse {
    pub dir: tempfile::TempDir,
}

impl TestWarehouse {
    /// An empty warehouse (`baocao init`).
    pub fn empty() -> TestWarehouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = TestWarehouse { dir };
        let out = baocao(&["init", "--warehouse", w.path_str()]);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        w
    }

    /// A demo warehouse for the months `from..=to`, without accounts
    /// (trust on loopback: the access tests make their own).
    pub fn demo(from: &str, to: &str) -> TestWarehouse {
        Self::demo_warehouse(from, to, &["--no-demo-accounts"])
    }

    /// A demo warehouse with the demo's accounts (password = name).
    pub fn demo_with_accounts(from: &str, to: &str) -> TestWarehouse {
        Self::demo_warehouse(from, to, &[])
    }

    fn demo_warehouse(from: &str, to: &str, extra: &[&str]) -> TestWarehouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = TestWarehouse { dir };
        let mut args = vec![
            "demo",
            "--warehouse",
            w.path_str(),
            "--from",
            from,
            "--to",
            to,
            "--no-serve",
        ];
        args.extend_from_slice(extra);
        let out = baocao(&args);
        assert!(out.status.success(), "demo failed: {}", stderr(&out));
        w
    }

    /// Runs `baocao user <args>` on this warehouse, the password (if any)
    /// given in BAOCAO_PASSWORD.
    pub fn user(&self, args: &[&str], password: Option<&str>) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("user")
            .args(args)
            .args(["--warehouse", self.path_str()])
            .env_remove("BAOCAO_PASSWORD")
            .env("BAOCAO_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(p) = password {
            command.env("BAOCAO_PASSWORD", p);
        }
        command.output().expect("run baocao user")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Commits `rows` with `baocao ingest`, returning the command's output.
    pub fn ingest(&self, name: &str, rows: &[Row]) -> Output {
        let file = self.write_parquet(name, rows);
        baocao(&[
            "ingest",
            "--warehouse",
            self.path_str(),
            "--submitted-by",
            "test",
            file.to_str().expect("path"),
        ])
    }

    pub fn write_parquet(&self, name: &str, rows: &[Row]) -> PathBuf {
        let path = self.path().join(name);
        write_parquet(&path, rows);
        path
    }

    /// The number of commits in the reports table's log.
    pub fn commits(&self) -> usize {
        std::fs::read_dir(self.path().join("reports/_delta_log"))
            .expect("delta log")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
    }
}

/// One report value, as an ETL job would write it.
#[derive(Debug, Clone)]
pub struct Row {
    pub unit: String,
    pub period: String,
    pub indicator: String,
    pub value: f64,
}

pub fn row(unit: &str, period: &str, indicator: &str, value: f64) -> Row {
    Row {
        unit: unit.into(),
        period: period.into(),
        indicator: indicator.into(),
        value,
    }
}

pub fn write_parquet(path: &Path, rows: &[Row]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("indicator_code", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.unit.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.period.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| r.indicator.as_str())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch");
    let file = std::fs::File::create(path).expect("create parquet");
    let mut writer = ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// A unit of the shipped hierarchy files, read straight from the CSV (not
/// through baocao), so expected values are computed independently.
#[derive(Debug, Clone)]
pub struct CsvUnit {
    pub code: String,
    pub name: String,
    pub level: String,
    pub parent: String,
}

pub fn shipped_units(version: &str) -> Vec<CsvUnit> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("catalog/data/hierarchy/units_{version}.csv"));
    let mut reader = csv::Reader::from_path(&path).expect("units csv");
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            CsvUnit {
                code: r[0].to_string(),
                name: r[1].to_string(),
                level: r[2].to_string(),
                parent: r[3].to_string(),
            }
        })
        .collect()
}

/// Ward code -> district code, for the pre-2025 hierarchy.
pub fn ward_districts() -> BTreeMap<String, String> {
    shipped_units("2025-01-01")
        .into_iter()
        .filter(|u| u.level == "ward")
        .map(|u| (u.code, u.parent))
        .collect()
}

/// A running `baocao serve`, stopped when dropped. Dropping it also
/// asserts that the server never panicked (a panic in a connection's task
/// ends that connection only, so a test would not see it otherwise).
pub struct TestServer {
    child: Child,
    pub port: u16,
    /// The lines of the server's standard error that report a panic.
    panics: Arc<std::sync::Mutex<Vec<String>>>,
    /// The last `KEPT_LOG_LINES` lines of the server's standard error.
    log: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// How many of the server's last log lines a `TestServer` keeps.
const KEPT_LOG_LINES: usize = 1_000;

impl TestServer {
    pub async fn start(warehouse: &TestWarehouse) -> TestServer {
        Self::start_with(warehouse, &[]).await
    }

    /// Starts a server with extra `serve` flags.
    pub async fn start_with(warehouse: &TestWarehouse, extra: &[&str]) -> TestServer {
        Self::start_with_env(warehouse, extra, &[]).await
    }

    /// Starts a server with extra `serve` flags and environment variables.
    pub async fn start_with_env(
        warehouse: &TestWarehouse,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let mut child = TokioCommand::new(BIN)
            .args([
                "serve",
                "--warehouse",
                warehouse.path_str(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("BAOCAO_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        // Pass the server's log on, and keep the panics it reports and its
        // last lines.
        let panics = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recent = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut log = BufReader::new(child.stderr.take().expect("stderr"));
        let kept = panics.clone();
        let kept_lines = recent.clone();
        tokio::spawn(async move {
            // Any bytes, to the end: a full pipe would block the server.
            let mut line = Vec::new();
            while let Ok(n) = log.read_until(b'\n', &mut line).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                let _ = writeln!(std::io::stderr(), "{text}");
                if text.contains("panicked")
                    && let Ok(mut kept) = kept.lock()
                {
                    kept.push(text.clone());
                }
                if let Ok(mut lines) = kept_lines.lock() {
                    if lines.len() == KEPT_LOG_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(text);
                }
                line.clear();
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // A guard against a hung start-up, not a performance bound.
        let port = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.expect("read server output") {
                if let Some(addr) = line.strip_prefix("baocao is listening on ") {
                    let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
                    return port.expect("port in the listening line");
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("server start-up");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        TestServer {
            child,
            port,
            panics,
            log: recent,
        }
    }

    /// The server's last log lines that contain `text`.
    pub fn log_lines(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().filter(|l| l.contains(text)).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the server has logged `count` lines that contain `text`
    /// and returns them. The wait is a guard against a hang (panics after
    /// two minutes), not a performance bound.
    pub async fn logged(&self, text: &str, count: usize) -> Vec<String> {
        for _ in 0..1_200 {
            let lines = self.log_lines(text);
            if lines.len() >= count {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the server did not log {count} lines with {text:?}; it logged: {:#?}",
            self.log_lines("")
        );
    }

    /// The panics the server has reported so far.
    pub fn panics(&self) -> Vec<String> {
        self.panics.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The CPU time the server process has used so far, in clock ticks
    /// (user + system, from /proc).
    pub fn cpu_ticks(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// The server's resident memory, in KiB (VmRSS from /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Whether the server process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the server to end by itself (a test that made it crash).
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        // A guard against a server that never ends, not a performance bound.
        tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("the server did not end")
            .expect("wait for the server")
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=tester dbname=baocao",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// A connection as `user` with `password` (SCRAM-SHA-256 when the
    /// server asks for it), or the server's refusal.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname("baocao");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs psql as `user` with `password`, with `args`.
    pub fn psql_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "baocao",
            ])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "30")
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .expect("psql must be installed (scripts/test installs it)")
    }

    /// Runs psql with `args` (unaligned, tuples only unless overridden).
    pub fn psql(&self, args: &[&str]) -> Output {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "tester",
                "-d",
                "baocao",
            ])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "30")
            .stdin(Stdio::null())
            .output()
            .expect("psql must be installed (scripts/test installs it)")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if !std::thread::panicking() {
            assert_no_panics(self);
        }
    }
}

/// Asserts that `server` has reported no panic, showing the first ones.
pub fn assert_no_panics(server: &TestServer) {
    let panics = server.panics();
    assert!(
        panics.is_empty(),
        "the server panicked {} times, first: {:#?}",
        panics.iter().filter(|l| l.starts_with("thread")).count(),
        &panics[..panics.len().min(4)]
    );
}

/// The rows of `sql` (simple protocol) as text, one line per row, columns
/// joined by `|`, NULL as `NULL`.
pub async fn dump(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}
