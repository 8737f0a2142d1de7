//! datafusion-postgres' session service, with the parameter types a client
//! declares in its Parse message honoured, statements measured before they
//! are parsed (`complexity`), `statement_timeout` enforced over a whole
//! statement (planning, execution and sending the rows), and the work of
//! executing statements kept on the query runtime.
//!
//! Two runtimes: connections (the protocol, timers, hang-up watching) run
//! on the main one; what DataFusion spawns to execute a statement runs on a
//! query runtime of its own. A CPU-bound plan never yields while it has
//! input, so on a shared runtime two heavy statements would occupy every
//! worker and no timer, cancel request or other client would be served
//! until they finished. Planning never yields either: a long query is
//! planned on a thread of its own (`planned`), and the connection waits
//! for it under the statement's stops.
//! PostgreSQL takes a parameter's type from the client when the client
//! gives one (pgjdbc's `setLong`/`setDouble`, psycopg's binary parameters,
//! asyncpg's introspected types) and infers it only otherwise.
//! datafusion-postgres 0.19 ignores the declared types
//! (`Parser::parse_sql` drops its `types` argument) and infers every
//! parameter from the SQL, so `SELECT ? * 2` with a double fails to bind
//! as a bigint. This wrapper gives each declared type to its placeholder
//! after the plan is made; everything else is datafusion-postgres'.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, SendableRowStream};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;

type Statement = <Parser as QueryParser>::Statement;

/// The Arrow type a declared wire type binds as; `None` leaves the
/// parameter to inference (unspecified, or a type without a plain match).
fn declared(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::BYTEA => DataType::Binary,
        _ => return None,
    })
}

/// Gives the placeholders of `plan` the types the client declared.
fn apply_declared_types(plan: LogicalPlan, types: &[Option<Type>]) -> PgWireResult<LogicalPlan> {
    let wanted = |id: &str| -> Option<DataType> {
        let i: usize = id.strip_prefix('$')?.parse().ok()?;
        declared(types.get(i.checked_sub(1)?)?.as_ref()?)
    };
    if !types.iter().flatten().any(|t| declared(t).is_some()) {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Placeholder(mut p) => match wanted(&p.id) {
                    Some(t) if p.field.as_ref().map(|f| f.data_type()) != Some(&t) => {
                        p.field = Some(Arc::new(Field::new(&p.id, t, true)));
                        Ok(Transformed::yes(Expr::Placeholder(p)))
                    }
                    _ => Ok(Transformed::no(Expr::Placeholder(p))),
                },
                other => Ok(Transformed::no(other)),
            })
        })
    })
    .map(|t| t.data)
    .map_err(crate::sqlstate::df_error)
}

/// Describes `$n::oid` and `$n::oid[]` as oid and oid[] rather than the
/// int4 and int4[] they are stored as. asyncpg binds the oids of its type
/// introspection as `$1::oid[]`; it has a built-in codec for oid[] (and
/// text[]) for that query, but would have to introspect int4[] — with the
/// same query, for ever.
fn oid_parameters(statement: &ast::Statement, types: &mut [Type]) {
    let is_oid = |t: &ast::DataType| matches!(t, ast::DataType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("oid"));
    let _ = ast::visit_expressions(statement, |e| {
        if let ast::Expr::Cast {
            expr, data_type, ..
        } = e
            && let ast::Expr::Value(v) = expr.as_ref()
            && let ast::Value::Placeholder(id) = &v.value
            && let Some(slot) = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| types.get_mut(i))
        {
            match data_type {
                t if is_oid(t) => *slot = Type::OID,
                ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(elem, _))
                    if is_oid(elem) =>
                {
                    *slot = Type::OID_ARRAY
                }
                _ => {}
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

fn is_oid_alias(t: &Type) -> bool {
    matches!(
        *t,
        Type::OID
            | Type::REGTYPE
            | Type::REGCLASS
            | Type::REGPROC
            | Type::REGPROCEDURE
            | Type::REGNAMESPACE
            | Type::REGOPER
            | Type::REGOPERATOR
            | Type::REGROLE
    )
}

fn retyped(field: FieldInfo, t: Type) -> FieldInfo {
    FieldInfo::new(
        field.name().to_string(),
        field.table_id(),
        field.column_id(),
        t,
        field.format(),
    )
}

/// asyncpg's introspection result as PostgreSQL describes it: its oid
/// arrays are oid[] (stored as int4[], the same four bytes per element).
fn oid_column(field: FieldInfo) -> FieldInfo {
    if *field.datatype() == Type::INT4_ARRAY {
        retyped(field, Type::OID_ARRAY)
    } else {
        field
    }
}

/// datafusion-postgres' parser, then the declared types.
pub struct TypedParser {
    inner: Arc<Parser>,
}

#[async_trait]
impl QueryParser for TypedParser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        super::complexity::check(sql)?;
        // A role statement has no plan: it runs at Execute (see `do_query`).
        if let Some(statement) = super::privileges::recognize(sql) {
            statement?;
            return Ok(Some((sql.to_string(), None)));
        }
        // Planned apart (`SelectHook`), so a stop ends the wait.
        let parsed = until(Stops::now(client), self.inner.parse_sql(client, sql, types)).await?;
        Ok(match parsed {
            Some((sql, Some((statement, plan)))) => {
                Some((sql, Some((statement, apply_declared_types(plan, types)?))))
            }
            other => other,
        })
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        let mut types = self.inner.get_parameter_types(stmt)?;
        if let (_, Some((statement, _))) = stmt {
            oid_parameters(statement, &mut types);
        }
        Ok(types)
    }

    fn get_result_schema(
        &self,
        stmt: &Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self.inner.get_result_schema(stmt, column_format)?;
        let (_, Some((statement, plan))) = stmt else {
            return Ok(fields);
        };
        // A text value keeps the oid-alias tag of the column it was cast
        // from (`typelem::regtype::text`), and arrow-pg describes it as an
        // oid while it sends text: a binary client reads four bytes of a
        // one-byte string. Describe it as what is sent.
        let fields = fields
            .into_iter()
            .zip(plan.schema().fields().iter())
            .map(|(info, field)| {
                let text = matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                );
                if text && is_oid_alias(info.datatype()) {
                    retyped(info, Type::TEXT)
                } else {
                    info
                }
            });
        if super::rewrite::is_asyncpg_introspection(statement) {
            Ok(fields.map(oid_column).collect())
        } else {
            Ok(fields.collect())
        }
    }
}

/// The metadata key where datafusion-postgres keeps `statement_timeout`
/// (milliseconds; absent when there is none).
pub const STATEMENT_TIMEOUT_MS: &str = "statement_timeout_ms";

/// When the statement starting now must end, by the session's
/// `statement_timeout`.
fn deadline(client: &(impl ClientInfo + ?Sized)) -> Option<tokio::time::Instant> {
    let ms = client
        .metadata()
        .get(STATEMENT_TIMEOUT_MS)?
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)?;
    Some(tokio::time::Instant::now() + std::time::Duration::from_millis(ms))
}

fn timed_out() -> PgWireError {
    crate::sqlstate::user_error(
        crate::sqlstate::QUERY_CANCELED,
        "canceling statement due to statement timeout".to_string(),
    )
}

fn canceled() -> PgWireError {
    crate::sqlstate::user_error(
        crate::sqlstate::QUERY_CANCELED,
        "canceling statement due to user request".to_string(),
    )
}

/// What may end a statement before it finishes: its session's
/// `statement_timeout`, and a cancel request (see `cancel`).
#[derive(Clone)]
struct Stops {
    deadline: Option<tokio::time::Instant>,
    cancel: Option<super::cancel::StatementCancel>,
}

impl Stops {
    /// The stops of the statement starting now in `client`'s session.
    fn now(client: &(impl ClientInfo + ?Sized)) -> Stops {
        Stops {
            deadline: deadline(client),
            cancel: super::cancel::for_statement(client),
        }
    }

    fn none(&self) -> bool {
        self.deadline.is_none() && self.cancel.is_none()
    }

    /// A stop that has fired already.
    fn fired_already(&self) -> Option<PgWireError> {
        if self
            .deadline
            .is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            return Some(timed_out());
        }
        if self.cancel.as_ref().is_some_and(|c| {
            c.receiver.has_changed().unwrap_or(false) || super::cancel::gone(&c.receiver)
        }) {
            return Some(canceled());
        }
        None
    }

    /// Resolves when a stop fires, with the error the client gets.
    async fn fired(&mut self) -> PgWireError {
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let cancel = async {
            // A client that hung up before the statement started.
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| super::cancel::gone(&c.receiver))
            {
                return;
            }
            let ended = match &mut self.cancel {
                Some(c) => c.receiver.changed().await.is_err(),
                None => true,
            };
            // A session that ended cannot be cancelled any more.
            if ended {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = timeout => timed_out(),
            () = cancel => canceled(),
        }
    }
}

/// Statements with more expressions than this are planned apart (see
/// `planned`). DataFusion plans an expression of 64 nodes in about 2 ms;
/// its planning time grows with the square of the expression's length (a
/// chain of 1,990 terms, within the complexity bound, takes 4 s).
const PLANNED_INLINE_UP_TO: usize = 64;

/// Whether `statement` is long enough to be planned apart: it has more
/// than `PLANNED_INLINE_UP_TO` expressions.
pub(super) fn long(statement: &ast::Statement) -> bool {
    let mut n = 0;
    let _ = ast::visit_expressions(statement, |_| {
        n += 1;
        if n > PLANNED_INLINE_UP_TO {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    n > PLANNED_INLINE_UP_TO
}

/// A session plans one statement at a time. The planning of a statement
/// whose client was already answered (a stop fired) stops at its next
/// recursion (see `planned`), and the session's next statement waits for
/// it: like a PostgreSQL backend, a session keeps at most one planner busy.
#[derive(Default)]
struct PlanningSlot(Arc<tokio::sync::Mutex<()>>);

/// Long statements planned at once, across sessions: a client that hangs
/// up and connects again cannot pile up the plannings it abandoned either.
/// Twice the cores; short statements, planned inline, do not count.
fn planners() -> Arc<tokio::sync::Semaphore> {
    static PLANNERS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PLANNERS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Arc::new(tokio::sync::Semaphore::new(2 * cores))
        })
        .clone()
}

/// Runs `work`, which plans a statement for `client`'s session, apart if
/// the statement is `long`.
///
/// A short statement is planned inline: it takes a millisecond or two, less
/// than handing it to another thread. A long one is planned on a thread
/// of its own, from the blocking pool of `runtime` (the query runtime,
/// where what it spawns goes), with the session's rights (`row_scope`).
/// Planning never yields: inline in the connection's task it would hold
/// off the statement's timeout and cancel until it ended, and on a runtime
/// worker that worker's other tasks. Dropping the returned future (a stop
/// fired, or the client hung up) answers the client at once and sets the
/// thread's stop flag: DataFusion's planner recurses through the patched
/// `recursive` crate, which unwinds at the next recursion once the flag is
/// set (`recursive::stop_when`), so the thread lets go of the session's
/// `PlanningSlot` and its place among the `planners` within milliseconds.
/// The planning's state is the thread's own and is thrown away.
pub(super) async fn planned<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    client: &(dyn ClientInfo + Send + Sync),
    long: bool,
    work: impl std::future::Future<Output = PgWireResult<T>> + Send + 'static,
) -> PgWireResult<T> {
    let slot = client
        .session_extensions()
        .get_or_insert_with(PlanningSlot::default)
        .0
        .clone();
    let turn = slot.lock_owned().await;
    if !long {
        return work.await;
    }
    let Ok(planner) = planners().acquire_owned().await else {
        return Err(crate::sqlstate::user_error(
            crate::sqlstate::INTERNAL_ERROR,
            "the server is shutting down".to_string(),
        ));
    };
    let work = crate::row_scope::carried(work);
    let on = runtime.clone();
    let abandoned = AbandonedOnDrop::default();
    let stop = abandoned.flag.clone();
    let abandoned_at = abandoned.at.clone();
    let thread = runtime.spawn_blocking(move || {
        let _held = (turn, planner);
        let started = std::time::Instant::now();
        let planning = on.block_on(Stoppable {
            work: Box::pin(work),
            flag: stop.clone(),
        });
        let ms = started.elapsed().as_millis();
        let late = || abandoned_at.get().map_or(0, |at| at.elapsed().as_millis());
        match planning {
            Some(result) => {
                if stop.load(Ordering::Relaxed) {
                    tracing::info!(
                        "an abandoned planning ran to its end, {} ms after its client was answered ({ms} ms in all)",
                        late()
                    );
                }
                Some(result)
            }
            None => {
                tracing::info!(
                    "an abandoned planning stopped {} ms after its client was answered ({ms} ms in all)",
                    late()
                );
                None
            }
        }
    });
    let planning = thread.await;
    drop(abandoned);
    match planning {
        Ok(Some(result)) => result,
        // Only this future sets the flag, when dropped; it was not.
        Ok(None) => Err(canceled()),
        Err(e) => {
            tracing::error!("planning a statement failed: {e}");
            Err(crate::sqlstate::user_error(
                crate::sqlstate::INTERNAL_ERROR,
                "internal error while planning the statement".to_string(),
            ))
        }
    }
}

/// Sets its flag when dropped: the waiting side of a planning thread, which
/// the thread's `recursive::stop_when` watches.
#[derive(Default)]
struct AbandonedOnDrop {
    flag: Arc<AtomicBool>,
    /// When it was dropped, for the log.
    at: Arc<std::sync::OnceLock<std::time::Instant>>,
}

impl Drop for AbandonedOnDrop {
    fn drop(&mut self) {
        let _ = self.at.set(std::time::Instant::now());
        self.flag.store(true, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// The result column formats of the portal being executed.
    static RESULT_FORMAT: Format;
}

/// The result column formats the client bound for the statement the
/// current task executes (set by `Session`'s extended `do_query`, because
/// datafusion-postgres's hooks are not given the portal).
pub(super) fn result_format() -> Option<Format> {
    RESULT_FORMAT.try_with(Format::clone).ok()
}

/// Runs `work` (planning a statement) until a stop fires.
///
/// Where `work` waits, the stop answers at once. Where it computes without
/// yielding (DataFusion planning inline), the watchdog sets the
/// statement's stop flag and the planning unwinds at its next recursion
/// (`Stoppable`); either way the client gets the stop's error.
async fn until<T>(
    mut stops: Stops,
    work: impl std::future::Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    if stops.none() {
        return work.await;
    }
    if let Some(error) = stops.fired_already() {
        return Err(error);
    }
    let (flag, _registration) = watched(&stops);
    let work = Stoppable {
        work: Box::pin(work),
        flag,
    };
    tokio::select! {
        result = work => match result {
            Some(result) => result,
            None => {
                tracing::info!("a statement planned inline stopped when its stop fired");
                Err(stops.fired_already().unwrap_or_else(canceled))
            }
        },
        error = stops.fired() => Err(error),
    }
}

/// A stop flag for a statement that may plan inline, which the watchdog
/// sets once one of `stops` fires or the client hung up, while the
/// registration lives. The hang-up cancels the session, so the statement's
/// `Stops::fired` resolves too.
fn watched(stops: &Stops) -> (Arc<AtomicBool>, super::watchdog::Registration) {
    let flag = Arc::new(AtomicBool::new(false));
    let stops = stops.clone();
    let registration = super::watchdog::watch(
        move || {
            stops.fired_already().is_some()
                || stops
                    .cancel
                    .as_ref()
                    .is_some_and(super::cancel::StatementCancel::hung_up)
        },
        flag.clone(),
    );
    (flag, registration)
}

/// A future polled with its statement's stop flag on the polling thread
/// (`recursive::stop_when`): once the flag is set, DataFusion's next
/// recursion inside a poll unwinds, and the future ends with `None` and is
/// not polled again. Any other panic goes on unwinding.
struct Stoppable<F> {
    work: Pin<Box<F>>,
    flag: Arc<AtomicBool>,
}

impl<F: std::future::Future> std::future::Future for Stoppable<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = &mut *self;
        let _stop = recursive::stop_when(this.flag.clone());
        let work = &mut this.work;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Some(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) if payload.is::<recursive::Stopped>() => Poll::Ready(None),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

/// The response with its rows cut off when a stop fires: the rows are
/// computed while they are sent, so that is where a long statement spends
/// its time. The client gets SQLSTATE 57014 and the row stream is dropped,
/// which stops the query's execution.
fn rows_until(response: Response, stops: Stops) -> Response {
    if stops.none() {
        return response;
    }
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    // The first row may plan inline (a statement whose plan is made when
    // its rows are asked for): watched like `until`'s work.
    let (flag, registration) = watched(&stops);
    query.data_rows = Box::pin(futures::stream::unfold(
        Some((rows, stops, flag, registration)),
        move |state| async move {
            let (mut rows, mut stops, flag, registration) = state?;
            // A plan that computes inline is always ready: look at the
            // stops before each row, not only while waiting for one.
            if let Some(error) = stops.fired_already() {
                return Some((Err(error), None));
            }
            let next = Stoppable {
                work: Box::pin(rows.next()),
                flag: flag.clone(),
            };
            tokio::select! {
                row = next => match row {
                    Some(row) => row.map(|row| (row, Some((rows, stops, flag, registration)))),
                    None => {
                        tracing::info!("a statement planned inline stopped when its stop fired");
                        Some((Err(stops.fired_already().unwrap_or_else(canceled)), None))
                    }
                },
                error = stops.fired() => Some((Err(error), None)),
            }
        },
    ));
    Response::Query(query)
}

/// A future or stream polled with the query runtime entered, so that the
/// tasks it spawns (DataFusion's partitions) run there.
struct OnRuntime<T> {
    runtime: tokio::runtime::Handle,
    inner: T,
}

impl<F: std::future::Future> std::future::Future for OnRuntime<Pin<Box<F>>> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.runtime.enter();
        self.inner.as_mut().poll(cx)
    }
}

impl futures::Stream for OnRuntime<SendableRowStream> {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let _entered = self.runtime.enter();
        self.inner.as_mut().poll_next(cx)
    }
}

/// The session service the server runs.
pub struct Session {
    inner: Arc<DfSessionService>,
    parser: Arc<TypedParser>,
    /// Where statements execute (see the module's documentation).
    queries: tokio::runtime::Handle,
    roles: Arc<super::privileges::Roles>,
}

impl Session {
    pub fn new(
        inner: DfSessionService,
        queries: tokio::runtime::Handle,
        roles: Arc<super::privileges::Roles>,
    ) -> Self {
        let parser = Arc::new(TypedParser {
            inner: inner.query_parser(),
        });
        Session {
            inner: Arc::new(inner),
            parser,
            queries,
            roles,
        }
    }

    /// `work` polled on the query runtime.
    fn on_queries<F: std::future::Future>(&self, work: F) -> OnRuntime<Pin<Box<F>>> {
        OnRuntime {
            runtime: self.queries.clone(),
            inner: Box::pin(work),
        }
    }

    /// The response's rows computed on the query runtime, and cut off
    /// when a stop fires.
    fn rows(&self, response: Response, stops: Stops) -> Response {
        let Response::Query(mut query) = response else {
            return response;
        };
        let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
        query.data_rows = Box::pin(OnRuntime {
            runtime: self.queries.clone(),
            inner: rows,
        });
        rows_until(Response::Query(query), stops)
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stops = Stops::now(client);
        super::complexity::check(query)?;
        let access =
            super::privileges::refresh_access(client, &self.roles.accounts, &self.roles.catalog)?;
        if let Some(statement) = super::privileges::recognize(query) {
            return Ok(vec![self.roles.run(statement?, &access, client)?]);
        }
        // The statement's scans see the session's rows only (`row_scope`).
        let responses = crate::row_scope::with_access(
            access,
            until(
                stops.clone(),
                self.on_queries(SimpleQueryHandler::do_query(&*self.inner, client, query)),
            ),
        )
        .await?;
        Ok(responses
            .into_iter()
            .map(|r| self.rows(r, stops.clone()))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Statement;
    type QueryParser = TypedParser;

    fn query_parser(&self) -> Arc<TypedParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stops = Stops::now(client);
        let access =
            super::privileges::refresh_access(client, &self.roles.accounts, &self.roles.catalog)?;
        if let (sql, None) = &portal.statement.statement
            && let Some(statement) = super::privileges::recognize(sql)
        {
            return self.roles.run(statement?, &access, client);
        }
        let response = crate::row_scope::with_access(
            access,
            RESULT_FORMAT.scope(
                portal.result_column_format.clone(),
                until(
                    stops.clone(),
                    self.on_queries(ExtendedQueryHandler::do_query(
                        &*self.inner,
                        client,
                        portal,
                        max_rows,
                    )),
                ),
            ),
        )
        .await?;
        Ok(self.rows(response, stops))
    }
}
