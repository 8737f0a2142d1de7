//! End-to-end tests: the real `baocao` binary, a server on a free loopback
//! port, and real Postgres clients (tokio-postgres and psql).
//!
//! One test binary on purpose: each file directly under `tests/` would link
//! the whole engine again.

mod support;

mod access;
mod bench_data;
mod catalog_tables;
mod cli_errors;
mod clients;
mod corpus;
mod crash;
mod cube;
mod demo;
mod examples;
mod hardening;
mod history;
mod landing;
mod plan_cache;
mod reports;
mod rollup;
mod sql_errors;
mod status;
mod writes;
