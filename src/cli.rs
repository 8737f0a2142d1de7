//! Command-line flags. Each flag has a `BAOCAO_*` environment variable; the
//! doc comment of each is its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Manage the accounts that may connect (kept in <warehouse>/access, shared by every server).
    User(UserArgs),
    /// Generate the reporting benchmark's data: a warehouse filled one submission at a time, and the same rows as CSV for the peers.
    BenchData(BenchDataArgs),
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
    /// The memory kept between queries for computed partitions (each
    /// period's latest values and arrivals) and roll-up cells, in MiB, on top of
    /// --memory-limit-mb. Past it, the least recently used periods are
    /// computed again when a query needs them.
    #[arg(long, env = "BAOCAO_CACHE_MB", default_value_t = 3072)]
    pub cache_mb: usize,
}

/// Who may connect, and how.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// How clients log in: scram-sha-256, password (cleartext; use with
    /// TLS) or trust (no password, everyone is an admin; loopback only).
    /// Default: scram-sha-256 once the warehouse has accounts, trust while
    /// it has none (loopback only).
    #[arg(long, env = "BAOCAO_AUTH", value_enum)]
    pub auth: Option<crate::postgres::login::Method>,
    /// The server's TLS certificate chain (PEM). With --tls-key, clients
    /// may connect with TLS (sslmode=require).
    #[arg(long, env = "BAOCAO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BAOCAO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse connections that did not negotiate TLS (needs --tls-cert).
    #[arg(long, env = "BAOCAO_REQUIRE_TLS", requires = "tls_cert")]
    pub require_tls: bool,
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The warehouse folder.
    #[arg(
        long,
        env = "BAOCAO_WAREHOUSE",
        default_value = "warehouse",
        global = true
    )]
    pub warehouse: PathBuf,
    #[command(subcommand)]
    pub action: UserAction,
}

/// Account commands. Passwords are read from BAOCAO_PASSWORD, or else from
/// the first line of standard input; only their SCRAM-SHA-256 verifiers
/// are stored.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account (with no role unless --admin or --role is given).
    Add {
        name: String,
        /// Make the account an admin.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// Its role: admin, analyst, etl, reporter or viewer.
        #[arg(long)]
        role: Option<String>,
        /// The unit a reporter or viewer is bound to (e.g. 001).
        #[arg(long)]
        unit: Option<String>,
    },
    /// Delete an account.
    Remove { name: String },
    /// Set an account's password.
    Passwd { name: String },
    /// Give an account its role (replacing the one it had).
    Grant {
        name: String,
        /// admin, analyst, etl, reporter or viewer.
        role: String,
        /// The unit a reporter or viewer is bound to.
        #[arg(long)]
        unit: Option<String>,
    },
    /// Take an account's role away (it keeps its login, and sees no unit data).
    Revoke { name: String },
    /// List the accounts and their roles.
    List,
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
    pub security: SecurityArgs,
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
    pub security: SecurityArgs,
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
    /// Do not create the demo accounts (the server then trusts loopback
    /// clients, as a warehouse without accounts does).
    #[arg(long)]
    pub no_demo_accounts: bool,
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

/// The reporting benchmark's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchScale {
    /// Every Hanoi ward before the 2025 reform (526).
    Hanoi,
    /// Every ward of Viet Nam before the 2025 reform (10,035).
    Vn,
}

/// How many submissions share a commit (and a Parquet file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchCommits {
    /// Every ward's report is its own commit, as it arrives in production.
    Submission,
    /// The reports of one district's wards for one month share a commit.
    District,
}

#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// The warehouse to create (it must not hold reports yet).
    #[arg(long)]
    pub warehouse: PathBuf,
    /// Continue a generation that was cut off: the warehouse's newest
    /// commit says which reports are in, those after it are committed, and
    /// the CSV is written afresh (same arguments as the first run).
    #[arg(long)]
    pub resume: bool,
    /// Which wards: hanoi (526) or vn (10,035).
    #[arg(long, value_enum, default_value = "hanoi")]
    pub scale: BenchScale,
    /// The whole country's hierarchy files (units_*.csv, ward_changes_*.csv), for --scale vn.
    #[arg(long, default_value = "benches/data/vietnam")]
    pub country: PathBuf,
    /// Every submitted row (corrections included) as CSV for the peers:
    /// unit_code, period, indicator_code, value, submitted_at.
    #[arg(long)]
    pub values: PathBuf,
    /// How submissions are grouped into commits (default: submission for
    /// hanoi, district for vn).
    #[arg(long, value_enum)]
    pub commits: Option<BenchCommits>,
    /// First month (the benchmark's 60 months end with the last month before the reform).
    #[arg(long, default_value = "2020-07")]
    pub from: String,
    /// Last month.
    #[arg(long, default_value = "2025-06")]
    pub to: String,
    /// Indicators per ward report: the catalog's ward-monthly ones, then
    /// synthetic counts (`bench_indicator_NNN`) up to this number.
    #[arg(long, default_value_t = 100)]
    pub indicators: usize,
    /// Seed of the generated values.
    #[arg(long, default_value_t = 173)]
    pub seed: u64,
}
