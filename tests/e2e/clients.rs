//! The client libraries analysts use, each against its own server over a
//! demo warehouse: psycopg2, psycopg 3, asyncpg, SQLAlchemy + pandas (the
//! Python suite in tests/clients/python), pgjdbc, node-postgres, and the
//! start-up and introspection queries of BI tools. Each client program
//! asserts the values it gets; this module starts the server, runs the
//! program and fails with its output. `scripts/install-deps` installs the
//! clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{TestServer, TestWarehouse};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A demo warehouse around the 2025 reform, and a server over it.
async fn demo_server() -> (TestWarehouse, TestServer) {
    let warehouse = TestWarehouse::demo("2025-05", "2025-07");
    let server = TestServer::start(&warehouse).await;
    (warehouse, server)
}

/// Runs `program` with the libpq environment pointing at `server`.
fn run(server: &TestServer, program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", server.port.to_string())
        .env("PGUSER", "analyst")
        .env("PGDATABASE", "baocao")
        .env("PGSSLMODE", "disable")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/install-deps installs the clients)",
                program.display()
            )
        })
}

fn assert_passed(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn pytest(file: &str) {
    let (_w, server) = demo_server().await;
    let python = root().join("target/client-venv/bin/python");
    let dir = root().join("tests/clients/python");
    let out = run(
        &server,
        &python,
        &["-m", "pytest", "-q", "-p", "no:cacheprovider", file],
        &dir,
    );
    assert_passed(file, &out);
}

#[tokio::test]
async fn psycopg2() {
    pytest("test_psycopg2.py").await;
}

#[tokio::test]
async fn psycopg3() {
    pytest("test_psycopg3.py").await;
}

#[tokio::test]
async fn asyncpg() {
    pytest("test_asyncpg.py").await;
}

#[tokio::test]
async fn sqlalchemy_and_pandas() {
    pytest("test_sqlalchemy.py").await;
}

#[tokio::test]
async fn bi_tools_introspection() {
    pytest("test_bi_tools.py").await;
}

#[tokio::test]
async fn jdbc() {
    let (_w, server) = demo_server().await;
    let dir = root().join("tests/clients/java");
    let out = run(
        &server,
        Path::new("java"),
        &["-cp", "/usr/share/java/postgresql.jar", "ClientTest.java"],
        &dir,
    );
    assert_passed("JDBC", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("JDBC: all checks passed"));
}

#[tokio::test]
async fn node_postgres() {
    let (_w, server) = demo_server().await;
    let dir = root().join("tests/clients/node");
    let out = run(&server, Path::new("node"), &["client_test.js"], &dir);
    assert_passed("node-postgres", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("node-postgres: all checks passed"));
}

/// Runs psql's commands one by one (`-c` each) and returns what it printed.
fn psql(server: &TestServer, commands: &[&str]) -> String {
    let mut args = vec!["-v", "ON_ERROR_STOP=0"];
    for c in commands {
        args.extend(["-c", c]);
    }
    let out = server.psql(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("FATAL"), "{text}");
    text
}

fn assert_lines(text: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(
            text.lines().any(|l| l.trim_end() == w.trim_end()),
            "no line {w:?} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn psql_meta_commands() {
    let (_w, server) = demo_server().await;
    // \dt lists the tables, \d and \d+ describe one.
    let out = psql(&server, &["\\dt"]);
    assert_lines(
        &out,
        &[
            " public | reports         | table | postgres",
            " public | rollup          | table | postgres",
            " public | units           | table | postgres",
        ],
    );
    assert!(!out.contains("pg_class"), "system tables listed:\n{out}");
    let out = psql(&server, &["\\d reports"]);
    assert_lines(
        &out,
        &[
            "                           Table \"public.reports\"",
            " unit_code      | text                     |           | not null | ",
            " value          | double precision         |           |          | ",
            " submitted_at   | timestamp with time zone |           |          | ",
        ],
    );
    let out = psql(&server, &["\\d+ units"]);
    assert!(out.contains("Table \"public.units\""), "{out}");
    assert!(
        out.contains(" area_km2      | double precision |           |          |         | plain "),
        "{out}"
    );
    assert!(!out.contains("ERROR"), "{out}");
    // \dn, \l, \dv, \df
    let out = psql(&server, &["\\dn"]);
    assert_lines(&out, &[" public | postgres", "(1 row)"]);
    let out = psql(&server, &["\\l"]);
    assert!(out.lines().any(|l| l.starts_with(" baocao ")), "{out}");
    let out = psql(&server, &["\\dv"]);
    assert_lines(&out, &["Did not find any relations."]);
    let out = psql(&server, &["\\df"]);
    assert_lines(
        &out,
        &[
            " public | is_within     | boolean          | text, text               | func",
            " public | reports_as_of | SETOF reports    | timestamp with time zone | func",
            " public | unit_parent   | text             | text, date               | func",
            "(15 rows)",
        ],
    );
    // \x: one record per block, UTF-8 names intact.
    let out = psql(
        &server,
        &[
            "\\x",
            "SELECT code, name, level FROM units WHERE code = '001' AND version = DATE '2025-01-01'",
        ],
    );
    assert_lines(
        &out,
        &[
            "-[ RECORD 1 ]-------",
            "code  | 001",
            "name  | Quận Ba Đình",
            "level | district",
        ],
    );
}

#[tokio::test]
async fn psql_copy_out_and_errors_that_leave_the_session_usable() {
    let (_w, server) = demo_server().await;
    let out = psql(
        &server,
        &[
            "\\copy (SELECT code, name FROM units WHERE parent_code = '001' AND version = DATE '2025-01-01' ORDER BY code LIMIT 3) TO STDOUT WITH (FORMAT csv, HEADER)",
        ],
    );
    assert_eq!(
        out,
        "code,name\n00001,Phường Phúc Xá\n00004,Phường Trúc Bạch\n00006,Phường Vĩnh Phúc\n"
    );
    // Floats in text exactly as PostgreSQL writes them, NULL as NULL.
    let out = server.psql(&[
        "-At",
        "-c",
        "SELECT CAST(12 AS DOUBLE PRECISION), CAST('Infinity' AS DOUBLE PRECISION), \
         CAST(1e20 AS DOUBLE PRECISION), CAST(1.5e-7 AS DOUBLE PRECISION), \
         CAST(0.1 AS DOUBLE PRECISION) + CAST(0.2 AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION) IS NULL, \
         CAST(-7 AS DOUBLE PRECISION), CAST(100 AS DOUBLE PRECISION), \
         CAST(999999999999999 AS DOUBLE PRECISION), CAST(1e15 AS DOUBLE PRECISION), \
         CAST(-2.5 AS DOUBLE PRECISION)",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "12|Infinity|1e+20|1.5e-07|0.30000000000000004|t|-7|100|999999999999999|1e+15|-2.5\n"
    );
    // One session: an error, then the session goes on.
    let out = server.psql(&[
        "-v",
        "ON_ERROR_STOP=0",
        "-At",
        "-c",
        "SELECT nope FROM units",
        "-c",
        "SELECT count(*) FROM units WHERE version = DATE '2025-07-01' AND level = 'ward'",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:") && stderr.contains("nope"),
        "{stderr}"
    );
    assert_eq!(stdout, "126\n");
}

/// The code block after `<!-- snippet: name -->` in README.md.
fn readme_snippet(name: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let marker = format!("<!-- snippet: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest)
        .expect("a code block after the marker");
    body.split_once("\n```")
        .expect("the end of the code block")
        .0
        .to_string()
}

/// Every client snippet of the README, run against a demo server with the
/// demo accounts (its port in place of 5433), prints the city's births of 2025-07 with the
/// wards that reported and the wards expected, as the server has them.
#[tokio::test]
async fn readme_snippets_run() {
    // With the demo's accounts, as a reader of the README has them: the
    // snippets log in as analyst with SCRAM-SHA-256.
    let _w = TestWarehouse::demo_with_accounts("2025-05", "2025-07");
    let server = TestServer::start(&_w).await;
    let client = server.login("analyst", "analyst").await.expect("analyst");
    let row = client
        .query_one(
            "SELECT value, reporting_units, expected_units FROM rollup \
             WHERE unit_code = '01' AND period = '2025-07' AND indicator_code = 'births'",
            &[],
        )
        .await
        .expect("births");
    let (value, reporting, expected): (f64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(expected, 126);
    let line = format!("births in Hanoi, 2025-07: {value:.0} from {reporting} of {expected} wards");
    let port = server.port.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let snippet = |name: &str| readme_snippet(name).replace("5433", &port);

    let out = run(
        &server,
        Path::new("sh"),
        &["-c", &snippet("psql")],
        dir.path(),
    );
    assert_passed("the psql snippet", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), line);

    let python = dir.path().join("births.py");
    std::fs::write(&python, snippet("python")).expect("write the snippet");
    let venv = root().join("target/client-venv/bin/python");
    let out = run(
        &server,
        &venv,
        &[python.to_str().expect("path")],
        dir.path(),
    );
    assert_passed("the Python snippet", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == line), "{stdout}");
    for month in ["2025-05", "2025-06", "2025-07"] {
        assert!(stdout.contains(month), "{stdout}");
    }

    let java = dir.path().join("Births.java");
    std::fs::write(&java, snippet("java")).expect("write the snippet");
    let out = run(
        &server,
        Path::new("java"),
        &["-cp", "/usr/share/java/postgresql.jar", "Births.java"],
        dir.path(),
    );
    assert_passed("the Java snippet", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), line);

    let node = dir.path().join("births.js");
    std::fs::write(&node, snippet("node")).expect("write the snippet");
    let out = Command::new("node")
        .arg(&node)
        .env("NODE_PATH", root().join("tests/clients/node/node_modules"))
        .stdin(Stdio::null())
        .output()
        .expect("node (scripts/install-deps installs it)");
    assert_passed("the Node snippet", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), line);
}
