//! `baocao`: the warehouse for hierarchical government reporting.
//!
//! The binary wires the crates to the outside world: `catalog` (reference
//! data), `ingest` (validate + commit), `queries` (the SQL surface) and the
//! Postgres wire protocol.

mod bench_data;
mod cli;
mod demo;
mod ingest_files;
mod plan_cache;
mod postgres;
mod row_scope;
mod server;
mod sqlstate;
mod users;
mod warehouse;
mod writes;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc rather than the system allocator: validating and writing a
/// bulk load, and planning every query, make many small allocations, which
/// glibc's allocator serves slowly (a tenth of a COPY's time went to its
/// free-list upkeep). Version 2 of it (see `Cargo.toml`), which gives freed
/// memory back to the system soon after a load. The `system-allocator`
/// feature leaves it out, for heap profilers (heaptrack) that see only the
/// system allocator's calls.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stack of every runtime thread. Parsing, planning and dropping a
/// query recurse over its expression tree; 64 MiB holds the deepest
/// statement accepted (`postgres::complexity::MAX_DEPTH`) with room to
/// spare. It is address space: only the pages a thread touches are memory.
const THREAD_STACK: usize = 64 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    // Connections run on the main runtime, statements on the query
    // runtime (see `postgres::session`).
    // A thread that parks gives back what it freed (see `baocao-memory`).
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .thread_stack_size(THREAD_STACK)
            .on_thread_park(|| {
                baocao_memory::collect_now_and_then();
            })
            .build()
    };
    let (runtime, queries) = match (runtime("baocao"), runtime("baocao-query")) {
        (Ok(main), Ok(queries)) => (main, queries),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, queries.handle().clone()));
    queries.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the cause chain joined, as a person reads it.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BAOCAO_LOG")
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(command: Command, queries: tokio::runtime::Handle) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => {
            let w = warehouse::Warehouse::create(&args.warehouse.warehouse).await?;
            println!("warehouse ready at {}", w.root().display());
            Ok(())
        }
        Command::Serve(args) => {
            let w = warehouse::Warehouse::open(&args.warehouse.warehouse)?;
            serve(
                &w,
                &args.listen,
                &args.security,
                &args.landing,
                &args.compaction,
                &args.limits,
                queries,
            )
            .await
        }
        Command::Demo(args) => {
            let w = demo::prepare(&args).await?;
            if !args.no_demo_accounts {
                users::demo_accounts(&w)?;
                println!(
                    "demo accounts (the password is the name): {}",
                    users::DEMO_ACCOUNTS
                        .iter()
                        .map(|(name, _, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if args.no_serve {
                return Ok(());
            }
            serve(
                &w,
                &args.listen,
                &args.security,
                &args.landing,
                &args.compaction,
                &args.limits,
                queries,
            )
            .await
        }
        Command::User(args) => users::run(&args),
        Command::BenchData(args) => bench_data::run(&args).await,
        Command::Ingest(args) => ingest_files::run(&args).await,
        Command::Check(args) => ingest_files::check(&args),
        Command::Compact(args) => {
            let w = warehouse::Warehouse::open(&args.warehouse.warehouse)?;
            let store = w.reports().await?;
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message("compacting the reports table");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let done = store
                .compact(chrono::Duration::hours(i64::from(args.retention_hours)))
                .await?;
            spinner.finish_and_clear();
            println!(
                "compacted {} files into {} in {} partition(s); deleted {} unreferenced file(s) older than {} h (table version {})",
                done.files_removed,
                done.files_added,
                done.partitions,
                done.files_deleted,
                args.retention_hours,
                done.version
            );
            Ok(())
        }
    }
}

async fn serve(
    w: &warehouse::Warehouse,
    listen: &cli::ListenArgs,
    security: &cli::SecurityArgs,
    landing: &cli::LandingArgs,
    compaction: &cli::CompactionArgs,
    limits: &cli::LimitsArgs,
    queries: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let addr = listen.listen;
    users::first_admin_from_env(w)?;
    let accounts = baocao_access::AccountStore::new(w.root());
    server::check_exposure(addr, security.auth, &accounts)?;
    let tls = match (&security.tls_cert, &security.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
        _ => None,
    };
    pgwire::messages::set_large_message_limit(limits.max_message_mb.saturating_mul(1 << 20));
    let listener = server::bind(addr).await?;
    let engine = server::engine(
        w,
        limits.memory_limit_mb.saturating_mul(1 << 20),
        limits.cache_mb.saturating_mul(1 << 20),
    )
    .await?;
    let landing_dir = landing
        .landing
        .clone()
        .unwrap_or_else(|| w.root().join("landing"));
    std::fs::create_dir_all(&landing_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the landing folder {}: {e}",
            landing_dir.display()
        )
    })?;
    let watcher = baocao_ingest::Landing::new(
        landing_dir.clone(),
        w.root().join("quarantine"),
        engine.catalog.clone(),
        engine.store.clone(),
    );
    let interval = std::time::Duration::from_millis(landing.landing_interval_ms.max(10));
    tokio::spawn(watcher.watch(interval, std::future::pending()));
    tracing::info!(landing = %landing_dir.display(), "watching the landing folder");
    tokio::spawn(auto_checkpoint(engine.store.clone()));
    if compaction.auto_compact_secs > 0 {
        tokio::spawn(auto_compact(
            engine.store.clone(),
            std::time::Duration::from_secs(compaction.auto_compact_secs),
            compaction.auto_compact_commits.max(1),
            chrono::Duration::hours(i64::from(compaction.retention_hours)),
        ));
    }
    let local = listener.local_addr()?;
    tracing::info!(warehouse = %w.root().display(), "serving on {local}");
    println!("baocao is listening on {local}");
    if accounts.load()?.is_empty() && security.auth != Some(postgres::login::Method::Password) {
        println!(
            "connect with: psql -h {} -p {} -d {}",
            local.ip(),
            local.port(),
            server::DATABASE
        );
    } else {
        println!(
            "connect with: psql -h {} -p {} -U <account> -d {} (it asks for the account's password)",
            local.ip(),
            local.port(),
            server::DATABASE
        );
    }
    server::run(
        listener,
        engine,
        queries,
        server::Limits {
            statement_timeout_ms: limits.statement_timeout_ms,
            max_connections: limits.max_connections.max(1),
        },
        server::Security {
            method: security.auth,
            tls,
            require_tls: security.require_tls,
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await
}

/// Checkpoints the reports table every [`baocao_ingest::CHECKPOINT_INTERVAL`]
/// commits, off the commit path (a checkpoint inside a commit would stall
/// that submission): as soon as this server's commits make one due, and
/// every second for commits of other processes. A failure is logged and
/// retried.
async fn auto_checkpoint(store: std::sync::Arc<baocao_ingest::ReportStore>) {
    loop {
        tokio::select! {
            () = store.checkpoint_due() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        match store.checkpoint(baocao_ingest::CHECKPOINT_INTERVAL).await {
            Ok(Some(version)) => tracing::info!(version, "checkpoint written"),
            Ok(None) => {}
            Err(e) => tracing::warn!("checkpoint failed, will retry: {e}"),
        }
    }
}

/// The background compaction policy: every `every`, if at least `commits`
/// commits landed since the last compaction, merge the small files and
/// vacuum those older than `retention`. Readers and writers go on meanwhile;
/// a failure is logged and retried at the next check.
async fn auto_compact(
    store: std::sync::Arc<baocao_ingest::ReportStore>,
    every: std::time::Duration,
    commits: u64,
    retention: chrono::Duration,
) {
    let mut last = store.version().await.unwrap_or_default();
    loop {
        tokio::time::sleep(every).await;
        let now = match store.version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("auto-compaction: cannot read the table version: {e}");
                continue;
            }
        };
        if now < last + commits {
            continue;
        }
        match store.compact(retention).await {
            Ok(done) => {
                tracing::info!(
                    files_removed = done.files_removed,
                    files_added = done.files_added,
                    files_deleted = done.files_deleted,
                    "auto-compaction done"
                );
                last = done.version;
            }
            Err(e) => tracing::warn!("auto-compaction failed, will retry: {e}"),
        }
    }
}
