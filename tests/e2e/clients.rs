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
