//! Bad command lines and bad environments: a one-line error naming the
//! cause, a non-zero exit, and nothing written.

use crate::support::{TestWarehouse, baocao, stderr};

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "should have failed");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    lines[0].to_string()
}

#[test]
fn unknown_flag_is_refused() {
    let out = baocao(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unexpected argument '--no-such-flag'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_warehouse_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere");
    let line = one_line_error(&baocao(&[
        "serve",
        "--warehouse",
        missing.to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(
        line.contains("no warehouse at") && line.contains("nowhere"),
        "{line}"
    );
    assert!(!missing.exists(), "serve must not create a warehouse");

    // A folder that is not a warehouse.
    let line = one_line_error(&baocao(&[
        "serve",
        "--warehouse",
        dir.path().to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(line.contains("is not a baocao warehouse"), "{line}");
}

#[test]
fn port_in_use_is_named() {
    let w = TestWarehouse::empty();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let line = one_line_error(&baocao(&[
        "serve",
        "--warehouse",
        w.path_str(),
        "--listen",
        &addr,
    ]));
    assert!(
        line.contains(&format!("cannot listen on {addr}")) && line.contains("in use"),
        "{line}"
    );
}

#[test]
fn non_loopback_address_is_refused() {
    let w = TestWarehouse::empty();
    let line = one_line_error(&baocao(&[
        "serve",
        "--warehouse",
        w.path_str(),
        "--listen",
        "0.0.0.0:0",
    ]));
    assert!(line.contains("refusing to listen on 0.0.0.0:0"), "{line}");
}

#[test]
fn malformed_catalog_names_file_and_line() {
    let w = TestWarehouse::empty();
    let path = w.path().join("catalog/indicators.csv");
    let text = std::fs::read_to_string(&path).expect("read");
    let broken = text.replacen(
        ",population_labour,người,count,sum,last,",
        ",population_labour,người,count,summ,last,",
        1,
    );
    assert_ne!(text, broken);
    std::fs::write(&path, broken).expect("write");
    let before = w.commits();
    let line = one_line_error(&baocao(&[
        "serve",
        "--warehouse",
        w.path_str(),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(
        line.contains("indicators.csv line 2: 'summ' is not an across-units rule"),
        "{line}"
    );
    let file = w.write_parquet(
        "x.parquet",
        &[crate::support::row("00004", "2024-07", "births", 1.0)],
    );
    let line = one_line_error(&baocao(&[
        "ingest",
        "--warehouse",
        w.path_str(),
        file.to_str().expect("path"),
    ]));
    assert!(line.contains("indicators.csv line 2"), "{line}");
    assert_eq!(w.commits(), before);
}

#[test]
fn unreadable_input_file_is_named() {
    let w = TestWarehouse::empty();
    let line = one_line_error(&baocao(&[
        "ingest",
        "--warehouse",
        w.path_str(),
        "/no/such/file.parquet",
    ]));
    assert!(line.contains("cannot read /no/such/file.parquet"), "{line}");
}
