//! Serving the warehouse over the Postgres wire protocol.
//!
//! The query engine is a DataFusion `SessionContext` with the warehouse's
//! tables and the `pg_catalog` of `datafusion-postgres`; the wire protocol is
//! `pgwire` driven by `datafusion-postgres`' session service. We own the
//! accept loop (instead of `datafusion_postgres::serve`) so that the caller
//! binds the listener — tests bind port 0, and a busy port is reported
//! before anything else starts — and so that shutdown is graceful.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use tokio::net::{TcpListener, TcpStream};

use baocao_access::{AccountStore, AuditLog};
use baocao_catalog::Catalog;
use baocao_ingest::ReportStore;

use crate::plan_cache::PlanCache;
use crate::postgres;
use crate::postgres::login::{Login, LoginPolicy, Method};
use crate::sqlstate;
use crate::warehouse::Warehouse;
use crate::writes::{CopyIn, TransactionHook, WriteHook, Writer};

/// The database name clients see (`current_database()`, psql's `\l`).
pub const DATABASE: &str = "baocao";
pub const SCHEMA: &str = "public";

/// What a server serves: the query engine and the writer behind INSERT/COPY.
pub struct Engine {
    pub ctx: Arc<SessionContext>,
    pub writer: Arc<Writer>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<ReportStore>,
    pub accounts: AccountStore,
    pub audit: AuditLog,
    /// The physical plans of queries that come again.
    pub plans: Arc<PlanCache>,
}

/// Builds the query engine and the writer over a warehouse; the queries
/// running at once may hold `memory_limit` bytes together for their sorts,
/// joins and aggregations (0: no limit), and the computed partitions kept
/// between queries about `cache` bytes.
pub async fn engine(warehouse: &Warehouse, memory_limit: usize, cache: usize) -> Result<Engine> {
    let catalog = warehouse.load_catalog()?;
    let config = SessionConfig::new()
        // PostgreSQL's information_schema is registered below instead.
        .with_information_schema(false)
        .with_default_catalog_and_schema(DATABASE, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        // `timestamptz` is a timestamp in UTC, as the reports' times are.
        .set_str("datafusion.execution.time_zone", "UTC")
        // A few hundred rows (a district's wards, a filtered catalog
        // table) are not split across threads: handing them to another
        // thread costs more than the work, and on an idle server that
        // thread must be woken first. The estimates are good here: the
        // warehouse's tables hand their rows to the plan in memory.
        .set_bool(
            "datafusion.execution.use_row_number_estimates_to_optimize_partitioning",
            true,
        );
    let mut runtime = RuntimeEnvBuilder::new();
    if memory_limit > 0 {
        // Each spilling operator gets a fair share; one that cannot spill
        // takes what is free and fails alone (53200) past it.
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)));
    }
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(YieldAfterJoins))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let table = deltalake::open_table(warehouse.reports_url()?)
        .await
        .context("cannot open the reports table")?;
    let reports = baocao_queries::register(&ctx, &catalog, table, cache).await?;
    let plans = Arc::new(PlanCache::new(reports));
    let catalog = Arc::new(catalog);
    let audit = AuditLog::new(warehouse.root());
    // Every table with unit data shows each session its own rows.
    crate::row_scope::protect(&ctx, catalog.clone(), audit.clone()).await?;
    let store = Arc::new(warehouse.reports().await?);
    let writer = Arc::new(Writer::new(catalog.clone(), store.clone(), audit.clone()));
    datafusion_pg_catalog::setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("cannot set up pg_catalog: {e}"))?;
    postgres::register(&ctx);
    postgres::pg_catalog::register(&ctx, DATABASE).await?;
    postgres::information_schema::register(&ctx, DATABASE).await?;
    postgres::register_to_regclass(&ctx)
        .await
        .map_err(|e| anyhow::anyhow!("cannot list the tables for to_regclass: {e}"))?;
    Ok(Engine {
        ctx: Arc::new(ctx),
        writer,
        catalog,
        store,
        accounts: AccountStore::new(warehouse.root()),
        audit,
        plans,
    })
}

/// Makes every join yield to the runtime as it produces batches.
///
/// DataFusion's scans yield every so many batches, which is when a
/// statement's task notices that it was cancelled (a statement timeout, a
/// client that left). A join can turn one input batch into millions of
/// output batches (a cross join of four catalog tables, say) without ever
/// returning to its scans, so a cancelled statement would go on computing.
/// Above each join, a `CooperativeExec` spends the task's budget per batch.
#[derive(Debug)]
struct YieldAfterJoins;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for YieldAfterJoins {
    fn optimize(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::coop::CooperativeExec;
        use datafusion::physical_plan::joins::{
            CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
        };
        plan.transform_up(|node| {
            let join = node.is::<CrossJoinExec>()
                || node.is::<NestedLoopJoinExec>()
                || node.is::<HashJoinExec>()
                || node.is::<SortMergeJoinExec>();
            Ok(if join {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as _)
            } else {
                Transformed::no(node)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "yield_after_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Binds the listening socket, with an error a person can act on.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let advice = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another server is using it; choose another with --listen)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (no interface of this machine has that address)"
            }
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{advice}")
    })
}

/// Gives every error its SQLSTATE before it reaches the client.
struct Errors;

impl ErrorHandler for Errors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        sqlstate::classify(error);
        tracing::debug!("query failed: {error}");
    }
}

/// The pgwire handlers of one server.
struct Handlers {
    session: Arc<postgres::Session>,
    copy: Arc<CopyIn>,
    login: Arc<LoginPolicy>,
    cancel: Arc<postgres::cancel::Cancels>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    /// pgwire asks once per connection: each gets its own login.
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::new(Login::new(self.login.clone()))
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.copy.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves one client until it leaves. A client that goes away in the middle
/// of a statement takes the statement with it: while a statement runs, the
/// watchdog peeks at a second handle on the socket (`cancel::Cancels::
/// hung_up`), and on the hang-up cancels the session's statement and
/// aborts this connection's task, instead of computing an answer nobody
/// will read. The second handle is never polled by a runtime: its
/// readiness would wake a thread at every message the client sends.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    handlers: Arc<Handlers>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
) {
    tracing::debug!(%peer, "connection opened");
    // A second handle on the same socket, to see the hang-up while the
    // first is busy with a statement.
    let watch = socket
        .into_std()
        .and_then(|s| Ok((s.try_clone()?, s)))
        .and_then(|(w, s)| {
            // Shared with the first handle (one open file): peeks never wait.
            w.set_nonblocking(true)?;
            Ok((w, TcpStream::from_std(s)?))
        });
    let (watch, socket) = match watch {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, "cannot serve a connection: {e}");
            return;
        }
    };
    let connection = tokio::spawn(pgwire::tokio::process_socket(socket, tls, handlers.clone()));
    let _watched = handlers
        .cancel
        .watch_connection(peer, watch, connection.abort_handle());
    match connection.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(%peer, "connection ended with an error: {e}"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(%peer, "connection task failed: {e}"),
    }
}

/// Who may connect, and how (see `postgres::login`).
pub struct Security {
    /// `None`: scram-sha-256 once the warehouse has accounts, trust before.
    pub method: Option<Method>,
    pub tls: Option<pgwire::tokio::TlsAcceptor>,
    pub require_tls: bool,
}

/// A TLS acceptor from a PEM certificate chain and its PEM private key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<pgwire::tokio::TlsAcceptor> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|c| c.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot set up TLS")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS key does not fit the certificate")?;
    // Direct TLS (PostgreSQL 17's sslnegotiation=direct) asks for it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// Refuses to start a server that anyone on the network could use as an
/// admin: one listening beyond this machine while the warehouse has no
/// accounts, or with trust.
pub fn check_exposure(
    addr: SocketAddr,
    method: Option<Method>,
    accounts: &AccountStore,
) -> Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if method == Some(Method::Trust) {
        anyhow::bail!(
            "refusing to listen on {addr} with --auth trust: trust lets anyone who can connect act as an admin, so it is for loopback addresses only"
        );
    }
    if accounts.load()?.is_empty() {
        anyhow::bail!(
            "refusing to listen on {addr}: the warehouse has no accounts, so no one could log in (create an admin first: baocao user add NAME --admin, or set BAOCAO_ADMIN_PASSWORD), or listen on a loopback address such as 127.0.0.1"
        );
    }
    Ok(())
}

/// What the server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Every session's `statement_timeout` until it sets one (0: none).
    pub statement_timeout_ms: u64,
    /// Clients connected at once; one more is refused with 53300.
    pub max_connections: usize,
}

/// Tells a client over the connection limit why, as PostgreSQL does: its
/// startup packet is read (an SSL or GSS encryption request first gets a
/// "no"), then FATAL 53300, then the connection is closed. Clients show
/// the message only when it answers their startup packet.
async fn refuse(mut socket: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: i32 = 80_877_103;
    const GSSENC_REQUEST: i32 = 80_877_104;
    // Reads one startup-phase packet; its request code, if it has one.
    async fn packet(socket: &mut TcpStream) -> Option<i32> {
        let length = socket.read_i32().await.ok()?;
        // PostgreSQL's limit on a startup packet.
        let body = usize::try_from(length)
            .ok()
            .filter(|l| (8..=10_000).contains(l))?
            - 4;
        let mut bytes = vec![0; body];
        socket.read_exact(&mut bytes).await.ok()?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut code = packet(&mut socket).await?;
        while code == SSL_REQUEST || code == GSSENC_REQUEST {
            socket.write_all(b"N").await.ok()?;
            code = packet(&mut socket).await?;
        }
        Some(())
    })
    .await;
    if !matches!(answered, Ok(Some(()))) {
        return;
    }
    let mut fields = Vec::new();
    for (kind, text) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        fields.push(kind);
        fields.extend_from_slice(text.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = socket.write_all(&message).await;
    let _ = socket.shutdown().await;
}

/// Serves connections from `listener` until `shutdown` completes. Each
/// connection runs in its own task: a failing client ends only its own
/// connection.
pub async fn run(
    listener: TcpListener,
    engine: Engine,
    queries: tokio::runtime::Handle,
    limits: Limits,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let Engine {
        ctx,
        writer,
        catalog,
        accounts,
        audit,
        plans,
        ..
    } = engine;
    // The transaction hooks come first: a failed block refuses every other
    // statement until it ends.
    // PostgreSQL's SELECT comes last: it answers every query the others
    // leave.
    // The settings guard comes before anything that applies a setting.
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(postgres::privileges::SettingsGuard {
            statement_timeout_ms: limits.statement_timeout_ms,
        }),
        Arc::new(TransactionHook::new(writer.clone())),
        Arc::new(TransactionStatementHook),
        Arc::new(WriteHook::new(writer.clone())),
        Arc::new(CursorStatementHook),
        Arc::new(postgres::SettingsHook),
        Arc::new(SetShowHook),
        Arc::new(postgres::SelectHook::new(queries.clone(), plans)),
    ];
    let cancels = Arc::new(postgres::cancel::Cancels::default());
    let handlers = Arc::new(Handlers {
        session: Arc::new(postgres::Session::new(
            DfSessionService::new_with_hooks(ctx, hooks),
            queries.clone(),
            Arc::new(postgres::privileges::Roles {
                accounts: accounts.clone(),
                catalog: catalog.clone(),
                audit: audit.clone(),
            }),
        )),
        copy: Arc::new(CopyIn::new(writer)),
        login: Arc::new(LoginPolicy {
            method: security.method,
            loopback,
            require_tls: security.require_tls,
            accounts,
            catalog,
            audit,
            cancels: cancels.clone(),
            statement_timeout_ms: limits.statement_timeout_ms,
            decoy_secret: baocao_access::scram::secret()?,
        }),
        cancel: cancels,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let handlers = handlers.clone();
                        let tls = security.tls.clone();
                        tokio::spawn(async move {
                            serve_connection(socket, peer, handlers, tls).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max = limits.max_connections, "connection refused: too many clients");
                        tokio::spawn(refuse(socket));
                    }
                },
                Err(e) => {
                    // Running out of file descriptors must not end the server.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
