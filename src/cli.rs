//! Command-line flags. Each flag has a `BAOCAO_*` environment variable; the
//! doc comment of each is its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baocao",
    version,
    about = "Warehouse for hierarchical government reporting, served over the Postgres protocol"
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, or a tracing filter such as `baocao=debug`).
    #[arg(
        long,
        global = true,
        env = "BAOCAO_LOG_LEVEL",
        default_value = "warn,baocao=info,baocao_ingest=info,baocao_queries=info,baocao_catalog=info"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an empty warehouse with the shipped catalog (Hanoi units and indicators).
    Init(InitArgs),
    /// Serve a warehouse over the Postgres wire protocol.
    Serve(ServeArgs),
    /// Create (or reuse) the Hanoi demo warehouse with generated reports, then serve it.
    Demo(DemoArgs),
    /// Validate report files (Parquet or CSV, long or wide layout) and commit them all in one atomic commit.
    Ingest(IngestArgs),
    /// Validate report files without committing anything (a dry run for ETL jobs).
    Check(CheckArgs),
    /// Merge small report files and delete files no longer referenced.
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
pub struct WarehouseArgs {
    /// The warehouse folder.
    #[arg(long, env = "BAOCAO_WAREHOUSE", default_value = "warehouse")]
    pub warehouse: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on for Postgres clients (port 0 picks a free port).
    #[arg(long, env = "BAOCAO_LISTEN", default_value = "127.0.0.1:5433")]
    pub listen: SocketAddr,
}

/// What one client may take of the server.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// The largest message a client may send, in MiB: a query's text, a
    /// prepared statement's parameters, a chunk of COPY data (clients send
    /// COPY in chunks of a few KiB). A larger one ends that connection with
    /// an error before it is read into memory. At most 1023 (PostgreSQL's
    /// limit).
    #[arg(long, env = "BAOCAO_MAX_MESSAGE_MB", default_value_t = 64)]
    pub max_message_mb: usize,
    /// Clients connected at once (PostgreSQL's default). One more is
    /// refused with SQLSTATE 53300 "sorry, too many clients already".
    #[arg(long, env = "BAOCAO_MAX_CONNECTIONS", default_value_t = 100)]
    pub max_connections: usize,
    /// Every session's `statement_timeout` until it sets its own, in
    /// milliseconds (0: none, as in PostgreSQL). A statement that runs
    /// longer is cancelled with SQLSTATE 57014.
    #[arg(long, env = "BAOCAO_STATEMENT_TIMEOUT_MS", default_value_t = 0)]
    pub statement_timeout_ms: u64,
    /// The memory all running queries may hold together for sorts, joins
    /// and aggregations, in MiB (0: no limit). A sort or an aggregation
    /// over its share spills to disk; a query that still needs more fails
    /// alone with SQLSTATE 53200.
    #[arg(long, env = "BAOCAO_MEMORY_LIMIT_MB", default_value_t = 4096)]
    pub memory_limit_mb: usize,
}

impl ListenArgs {
    /// The address, refused if it is reachable from other machines: there is
    /// no authentication yet, so only this machine may connect.
    pub fn checked_addr(&self) -> Result<SocketAddr> {
        if !self.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {}: this server has no user accounts, so it only listens on a loopback address such as 127.0.0.1",
                self.listen
            );
        }
        Ok(self.listen)
    }
}

#[derive(Debug, Args)]
pub struct LandingArgs {
    /// Folder watched for dropped report files (default: <warehouse>/landing).
    #[arg(long, env = "BAOCAO_LANDING")]
    pub landing: Option<PathBuf>,
    /// How often the landing folder is also scanned, in milliseconds (file-system events trigger a scan at once).
    #[arg(long, env = "BAOCAO_LANDING_INTERVAL_MS", default_value_t = 1000)]
    pub landing_interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// How often the server checks whether to compact, in seconds (0: never; run `baocao compact` instead).
    #[arg(long, env = "BAOCAO_AUTO_COMPACT_SECS", default_value_t = 60)]
    pub auto_compact_secs: u64,
    /// Compact when at least this many commits landed since the last compaction.
    #[arg(long, env = "BAOCAO_AUTO_COMPACT_COMMITS", default_value_t = 100)]
    pub auto_compact_commits: u64,
    /// Keep files that versions of the last N hours still read.
    #[arg(
        long = "auto-compact-retention-hours",
        env = "BAOCAO_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub retention_hours: u32,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub landing: LandingArgs,
    #[command(flatten)]
    pub compaction: CompactionArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub landing: LandingArgs,
    #[command(flatten)]
    pub compaction: CompactionArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    /// Seed of the generated values: the same seed gives the same warehouse.
    #[arg(long, env = "BAOCAO_DEMO_SEED", default_value_t = 173)]
    pub seed: u64,
    /// First month to generate.
    #[arg(long, default_value = "2021-01")]
    pub from: String,
    /// Last month to generate (default: the last full month).
    #[arg(long)]
    pub to: Option<String>,
    /// Build the warehouse and exit without serving.
    #[arg(long)]
    pub no_serve: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    /// Who the submissions are recorded as sent by.
    #[arg(long, env = "BAOCAO_SUBMITTED_BY", default_value = "ingest")]
    pub submitted_by: String,
    /// Parquet or CSV files: long (unit_code, period, indicator_code, value) or wide (unit_code, period, <indicator>...).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    /// Keep files that versions of the last N hours still read (time travel, long queries).
    #[arg(long, env = "BAOCAO_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u32,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    /// Parquet or CSV files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}
