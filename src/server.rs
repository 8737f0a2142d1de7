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
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use tokio::net::TcpListener;

use baocao_catalog::Catalog;
use baocao_ingest::ReportStore;

use crate::postgres;
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
}

/// Builds the query engine and the writer over a warehouse.
pub async fn engine(warehouse: &Warehouse) -> Result<Engine> {
    let catalog = warehouse.load_catalog()?;
    let config = SessionConfig::new()
        // PostgreSQL's information_schema is registered below instead.
        .with_information_schema(false)
        .with_default_catalog_and_schema(DATABASE, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        // `timestamptz` is a timestamp in UTC, as the reports' times are.
        .set_str("datafusion.execution.time_zone", "UTC");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    let table = deltalake::open_table(warehouse.reports_url()?)
        .await
        .context("cannot open the reports table")?;
    baocao_queries::register(&ctx, &catalog, table).await?;
    let catalog = Arc::new(catalog);
    let store = Arc::new(warehouse.reports().await?);
    let writer = Arc::new(Writer::new(catalog.clone(), store.clone()));
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
    })
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

struct Startup {
    connections: Arc<ConnectionManager>,
}

#[async_trait::async_trait]
impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
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
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
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

/// Serves connections from `listener` until `shutdown` completes. Each
/// connection runs in its own task: a failing client ends only its own
/// connection.
pub async fn run(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let Engine { ctx, writer, .. } = engine;
    // The transaction hooks come first: a failed block refuses every other
    // statement until it ends.
    // PostgreSQL's SELECT comes last: it answers every query the others
    // leave.
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(TransactionHook::new(writer.clone())),
        Arc::new(TransactionStatementHook),
        Arc::new(WriteHook::new(writer.clone())),
        Arc::new(CursorStatementHook),
        Arc::new(postgres::SettingsHook),
        Arc::new(SetShowHook),
        Arc::new(postgres::SelectHook),
    ];
    let connections = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        session: Arc::new(postgres::Session::new(DfSessionService::new_with_hooks(
            ctx, hooks,
        ))),
        copy: Arc::new(CopyIn::new(writer)),
        startup: Arc::new(Startup {
            connections: connections.clone(),
        }),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        tracing::debug!(%peer, "connection opened");
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::info!(%peer, "connection ended with an error: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Running out of file descriptors must not end the server.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
