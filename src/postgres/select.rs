//! Queries answered the way PostgreSQL answers them, where DataFusion's
//! planner differs in ways clients notice:
//!
//! - result columns are named as PostgreSQL names them (`count`, not
//!   `count(*)`; `?column?` for an unnamed expression), and two result
//!   columns may share a name;
//! - `current_setting(name)`, `set_config(name, value, is_local)` and
//!   `pg_backend_pid()` read and change this session;
//! - a `$n` in `LIMIT`/`OFFSET` is a bigint, so drivers that bind by the
//!   server's parameter types (asyncpg) send a number.
//!
//! The hook runs last, after every hook that handles its own statements.
//!
//! It also plans and runs the queries themselves rather than leaving them
//! to datafusion-postgres, for two reasons:
//!
//! - a long statement is planned on a thread of its own
//!   (`session::planned`), so `statement_timeout` and a cancel request end
//!   a statement whose planning takes long (an expression of thousands of
//!   terms), as they end its execution;
//! - a prepared statement's plan is optimised once per Execute;
//!   datafusion-postgres 0.19 optimises it, then hands it to
//!   `execute_logical_plan`, whose physical planning optimises it again.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef, ParamValues};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Expr as DfExpr, Filter, LogicalPlan, Projection, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Query,
    SelectItem, SetExpr, Statement, Value, visit_expressions_mut,
};
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use futures::StreamExt;
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::types::format::FormatOptions;

use super::session::{long, planned, result_format};
use super::{rewrite, settings};
use crate::plan_cache::{self, Lookup, PlanCache};
use crate::sqlstate::df_error;

pub struct SelectHook {
    /// Where queries are planned (see the module's documentation).
    queries: tokio::runtime::Handle,
    /// The logical plans of statements that come again.
    statements: StatementPlans,
    /// The physical plans of queries that come again.
    plans: Arc<PlanCache>,
    /// A copy of the engine's session state and a task context made from
    /// it, while the state's options stay the same (see `state`).
    state: std::sync::Mutex<Option<Arc<EngineState>>>,
}

/// The engine's session state as a statement runs on it.
struct EngineState {
    state: SessionState,
    task: Arc<TaskContext>,
}

impl SelectHook {
    pub fn new(queries: tokio::runtime::Handle, plans: Arc<PlanCache>) -> SelectHook {
        SelectHook {
            queries,
            statements: StatementPlans::default(),
            plans,
            state: std::sync::Mutex::new(None),
        }
    }

    /// The engine's session state, and a task context to run plans in.
    ///
    /// Copying the state and making a task context copy its registries of
    /// hundreds of functions: a tenth of a point lookup's server time. The
    /// engine's tables, functions and object stores are registered before
    /// the server starts, and the catalogs are shared, so one copy serves
    /// while the options are the same `Arc` (a change to them through the
    /// context makes a new one while this copy holds the old). Its start
    /// time is not a statement's: whatever plans or optimises (and so
    /// folds `now()`) takes a fresh copy, `SessionContext::state`; this
    /// one runs kept plans and finds the newest version.
    fn state(&self, ctx: &SessionContext) -> Arc<EngineState> {
        let current = ctx.state_ref();
        let current = current.read();
        let mut kept = self.state.lock().ok();
        if let Some(Some(engine)) = kept.as_deref()
            && Arc::ptr_eq(engine.state.config_options(), current.config_options())
        {
            return engine.clone();
        }
        let state = current.clone();
        drop(current);
        let engine = Arc::new(EngineState {
            task: state.task_ctx(),
            state,
        });
        if let Some(kept) = kept.as_deref_mut() {
            *kept = Some(engine.clone());
        }
        engine
    }

    /// Plans `statement` with PostgreSQL's names, session functions and
    /// parameter types.
    async fn plan(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<LogicalPlan> {
        // A statement that calls no session function is planned the same
        // for every session with the same search path (`$user` resolved:
        // the same user, by default). A long one (planned apart, see
        // `session::planned`) is not kept: its plan may be large.
        let fixed =
            !mentions_session(statement) && !calls_table_function(statement) && !long(statement);
        let kept = fixed.then(|| {
            let search_path = rewrite::search_path(client);
            let hash =
                BuildHasherDefault::<DefaultHasher>::default().hash_one((statement, &search_path));
            (hash, search_path)
        });
        if let Some((hash, search_path)) = &kept
            && let Some(plan) = self.statements.get(*hash, statement, search_path)
        {
            return Ok(plan);
        }
        let plan = self.plan_afresh(statement, ctx, client).await?;
        if let Some((hash, search_path)) = kept {
            self.statements
                .keep(hash, statement.clone(), search_path, plan.clone());
        }
        Ok(plan)
    }

    async fn plan_afresh(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<LogicalPlan> {
        let mut statement = statement.clone();
        let renames = name_columns(&mut statement);
        substitute_session_functions(&mut statement, client)?;
        rewrite::postgres_forms(&mut statement, client);
        // A copy with its own start time: `now()` in a table function's
        // arguments is evaluated as the statement is planned.
        let state = ctx.state();
        let long = long(&statement);
        planned(&self.queries, client, long, async move {
            let plan = state
                .statement_to_plan(DfStatement::Statement(Box::new(statement)))
                .await
                .map_err(df_error)?;
            let plan = type_limit_placeholders(plan).map_err(df_error)?;
            let plan = keep_parameter_positions(plan).map_err(df_error)?;
            let plan = rewrite::boolean_literals(plan).map_err(df_error)?;
            Ok(rename_outputs(plan, &renames))
        })
        .await
    }

    /// Runs `plan`, made from `statement`: optimised and planned
    /// physically (apart if long) unless its physical plan was kept
    /// (`plan_cache`), its rows computed as they are sent, in `format`.
    async fn run(
        &self,
        statement: &Statement,
        plan: LogicalPlan,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
        format: &Format,
    ) -> PgWireResult<Response> {
        let schema: DFSchemaRef = plan.schema().clone();
        let engine = self.state(ctx);
        let long = long(statement);
        // A long statement's plan is not kept: it may be large.
        let access = (!long).then(|| crate::row_scope::current().ok()).flatten();
        let batches: SendableRecordBatchStream = match self
            .plans
            .lookup(&plan, access, &engine.state)
            .await
            .map_err(df_error)?
        {
            Lookup::Hit(physical) => {
                datafusion::physical_plan::execute_stream(physical, engine.task.clone())
                    .map_err(df_error)?
            }
            Lookup::Miss(ticket) => {
                let plans = self.plans.clone();
                // A copy with its own start time, for `now()` (folded as
                // the plan is optimised).
                let state = ctx.state();
                planned(&self.queries, client, long, async move {
                    let made_on = match ticket {
                        Some(_) => plan_cache::for_keeping(state.clone()),
                        None => state.clone(),
                    };
                    // Optimises the plan, then plans it physically.
                    let physical = made_on
                        .create_physical_plan(&plan)
                        .await
                        .map_err(df_error)?;
                    // Not kept is only slower next time.
                    if let Some(ticket) = ticket
                        && let Err(e) = plans.keep(ticket, &physical, &state).await
                    {
                        tracing::warn!("a plan was not kept: {e}");
                    }
                    datafusion::physical_plan::execute_stream(physical, engine.task.clone())
                        .map_err(df_error)
                })
                .await?
            }
        };
        // As arrow-pg's `encode_dataframe` encodes a DataFrame's rows.
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            schema.as_arrow(),
            format,
            Some(options),
        )?);
        let row_fields = fields.clone();
        let rows = batches
            .map(move |batch| match batch {
                Ok(batch) => futures::stream::iter(encode_recordbatch(row_fields.clone(), batch))
                    .left_stream(),
                Err(e) => {
                    futures::stream::once(async move { Err(PgWireError::ApiError(e.into())) })
                        .right_stream()
                }
            })
            .flatten();
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

/// How many statements' logical plans `StatementPlans` keeps.
const STATEMENTS: usize = 1024;

/// The logical plans of statements planned before, by the statement and
/// the search path it was planned with (see `SelectHook::plan`). Parsing
/// is not saved (the statement is the key), the SQL planner's work is:
/// about a sixth of a short lookup's server time. Apart from the session
/// functions and table functions' arguments, which keep a statement out, a
/// logical plan depends on nothing else that changes while the server runs
/// (no DDL reaches the engine); the physical plan is `plan_cache`'s
/// business.
#[derive(Default)]
struct StatementPlans {
    /// By the hash of the statement and search path.
    kept: std::sync::Mutex<HashMap<u64, Vec<PlannedStatement>>>,
}

/// A statement, the search path it was planned with, and its plan.
type PlannedStatement = (Statement, Vec<String>, LogicalPlan);

impl StatementPlans {
    fn get(&self, hash: u64, statement: &Statement, search_path: &[String]) -> Option<LogicalPlan> {
        let kept = self.kept.lock().ok()?;
        kept.get(&hash)?
            .iter()
            .find(|(s, p, _)| s == statement && p.as_slice() == search_path)
            .map(|(_, _, plan)| plan.clone())
    }

    fn keep(&self, hash: u64, statement: Statement, search_path: Vec<String>, plan: LogicalPlan) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        // Plenty for the statements of dashboards, drivers and scripts; a
        // flood of different statements starts the set afresh.
        if kept.values().map(Vec::len).sum::<usize>() >= STATEMENTS {
            kept.clear();
        }
        let entries = kept.entry(hash).or_default();
        // Two sessions may have planned it at once.
        if !entries
            .iter()
            .any(|(s, p, _)| *s == statement && *p == search_path)
        {
            entries.push((statement, search_path, plan));
        }
    }
}

/// Whether `statement` reads from a table function (`reports_as_of(...)`,
/// `generate_series(...)`). DataFusion evaluates a table function's
/// arguments when it plans the statement, with the statement's start time
/// for `now()`: its logical plan holds the values, and is the statement's
/// only.
fn calls_table_function(statement: &Statement) -> bool {
    struct Calls;
    impl ast::Visitor for Calls {
        type Break = ();
        fn pre_visit_table_factor(&mut self, table: &ast::TableFactor) -> ControlFlow<()> {
            match table {
                ast::TableFactor::Table { args: Some(_), .. }
                | ast::TableFactor::Function { .. }
                | ast::TableFactor::TableFunction { .. } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    ast::Visit::visit(statement, &mut Calls).is_break()
}

/// Whether `statement` calls a function whose value is the session's
/// (`substitute_session_functions`, `apply_set_config`).
fn mentions_session(statement: &Statement) -> bool {
    ast::visit_expressions(statement, |e| {
        if call(e).is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Applies the `set_config(name, value, false)` calls of a query to the
/// session (their values were substituted when it was planned).
async fn apply_set_config(statement: &Statement, client: &mut dyn HookClient) -> PgWireResult<()> {
    let mut changes = Vec::new();
    let _ = ast::visit_expressions(statement, |e| {
        if let Some(("set_config", args)) = call(e)
            && let [Some(name), Some(value), ..] = args.as_slice()
        {
            changes.push((name.clone(), value.clone()));
        }
        ControlFlow::<()>::Continue(())
    });
    for (name, value) in changes {
        settings::set(client, &name, &value).await?;
    }
    Ok(())
}

#[async_trait]
impl QueryHook for SelectHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        let result = async {
            let plan = self.plan(statement, ctx, &*client).await?;
            apply_set_config(statement, client).await?;
            // `statement_timeout` is enforced around the whole statement,
            // rows included (see `session`).
            self.run(statement, plan, ctx, &*client, &Format::UnifiedText)
                .await
        }
        .await;
        Some(result)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        Some(self.plan(statement, ctx, client).await)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if !matches!(statement, Statement::Query(_)) {
            return None;
        }
        if let Err(e) = apply_set_config(statement, client).await {
            return Some(Err(e));
        }
        // The result formats the client bound; without them (a session
        // other than `session::Session`), datafusion-postgres runs it.
        let format = result_format()?;
        let result = async {
            // A statement without parameters (a point lookup a driver
            // prepared) is run as it is: substituting nothing rebuilds
            // the whole plan.
            let plan = if no_parameters(params, plan) {
                plan.clone()
            } else {
                plan.clone()
                    .replace_params_with_values(params)
                    .map_err(df_error)?
            };
            self.run(statement, plan, ctx, &*client, &format).await
        }
        .await;
        Some(result)
    }
}

/// Whether the client bound no values and `plan` has no `$n` for one.
fn no_parameters(params: &ParamValues, plan: &LogicalPlan) -> bool {
    let bound = match params {
        ParamValues::List(values) => values.len(),
        ParamValues::Map(values) => values.len(),
    };
    bound == 0 && plan.get_parameter_types().is_ok_and(|t| t.is_empty())
}

/// The function a call expression names (lower case, without schema) and
/// its arguments where they are literal text.
fn call(e: &Expr) -> Option<(&'static str, Vec<Option<String>>)> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    let name = [
        "current_setting",
        "set_config",
        "pg_backend_pid",
        "session_user",
        "current_user",
    ]
    .into_iter()
    .find(|n| *n == name)?;
    let args = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                    Value::SingleQuotedString(s) => Some(s.clone()),
                    Value::Boolean(b) => Some(b.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        FunctionArguments::None => Vec::new(),
        FunctionArguments::Subquery(_) => return None,
    };
    Some((name, args))
}

fn text(value: Option<String>) -> Expr {
    match value {
        Some(v) => Expr::Value(Value::SingleQuotedString(v).with_empty_span()),
        None => Expr::Cast {
            kind: ast::CastKind::Cast,
            expr: Box::new(Expr::Value(Value::Null.with_empty_span())),
            data_type: SqlType::Text,
            array: false,
            format: None,
        },
    }
}

/// Replaces `current_setting('name' [, missing_ok])`,
/// `set_config('name', 'value', is_local)`, `pg_backend_pid()` and the
/// session's user (`current_user`, `session_user`) by their values for
/// this session.
fn substitute_session_functions(
    statement: &mut Statement,
    client: &(dyn ClientInfo + Send + Sync),
) -> PgWireResult<()> {
    let mut error = None;
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = e
            && (matches!(data_type, SqlType::Regclass)
                || matches!(data_type, SqlType::Custom(n, _) if n.to_string().eq_ignore_ascii_case("regclass")))
            && !matches!(inner.as_ref(), Expr::Value(_))
        {
            // A literal is resolved by datafusion-pg-catalog; anything else
            // is looked up when it runs.
            *e = rewrite::function(
                "to_regclass",
                vec![Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: inner.clone(),
                    data_type: SqlType::Text,
                    array: false,
                    format: None,
                }],
            );
            return ControlFlow::Continue(());
        }
        let Some((name, args)) = call(e) else {
            return ControlFlow::Continue(());
        };
        match (name, args.as_slice()) {
            ("current_setting", [Some(setting), rest @ ..]) => {
                let missing_ok = matches!(rest, [Some(ok)] if ok == "true");
                match settings::value(client, setting) {
                    Some(v) => *e = text(Some(v)),
                    None if missing_ok => *e = text(None),
                    None => {
                        error = Some(settings::unrecognized(setting));
                        return ControlFlow::Break(());
                    }
                }
            }
            ("set_config", [Some(_), Some(value), Some(_)]) => *e = text(Some(value.clone())),
            ("session_user" | "current_user", []) => {
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned();
                *e = text(user);
            }
            ("pg_backend_pid", []) => {
                let pid = client.pid_and_secret_key().0;
                *e = Expr::Value(Value::Number(pid.to_string(), false).with_empty_span());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    error.map_or(Ok(()), Err)
}

/// The leftmost SELECT of a query, whose items name the result columns.
fn leftmost_select(body: &mut SetExpr) -> Option<&mut ast::Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        SetExpr::Query(q) => leftmost_select(&mut q.body),
        _ => None,
    }
}

/// PostgreSQL's name for a result column computed by `e` (its
/// `FigureColname`): a column's name, a function's name, a cast's operand's
/// name or else its type's, `case`, `array`, `exists`, else `?column?`.
fn pg_name(e: &Expr) -> String {
    let name = match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast {
            expr, data_type, ..
        } => {
            let inner = pg_name(expr);
            Some(if inner == "?column?" {
                pg_type_name(data_type)
            } else {
                inner
            })
        }
        Expr::TypedString(t) => Some(pg_type_name(&t.data_type)),
        Expr::Nested(inner) => Some(pg_name(inner)),
        Expr::Case { .. } => Some("case".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Subquery(q) => first_item_name(q),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::AtTimeZone { .. } => Some("timezone".into()),
        Expr::Interval(_) => Some("interval".into()),
        _ => None,
    };
    name.unwrap_or_else(|| "?column?".into())
}

fn first_item_name(q: &Query) -> Option<String> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    match s.projection.first()? {
        SelectItem::UnnamedExpr(e) => Some(pg_name(e)),
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        _ => None,
    }
}

/// PostgreSQL's internal name of a type, as it names a cast's column.
fn pg_type_name(t: &SqlType) -> String {
    match t {
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => "int4".into(),
        SqlType::BigInt(_) | SqlType::Int8(_) => "int8".into(),
        SqlType::SmallInt(_) | SqlType::Int2(_) => "int2".into(),
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => "float8".into(),
        SqlType::Real | SqlType::Float4 => "float4".into(),
        SqlType::Numeric(_) | SqlType::Decimal(_) => "numeric".into(),
        SqlType::Boolean | SqlType::Bool => "bool".into(),
        SqlType::Varchar(_) | SqlType::CharacterVarying(_) => "varchar".into(),
        SqlType::Char(_) | SqlType::Character(_) => "bpchar".into(),
        SqlType::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => {
            "timestamptz".into()
        }
        SqlType::Timestamp(..) => "timestamp".into(),
        SqlType::Custom(name, _) => name.to_string().to_lowercase(),
        other => other.to_string().to_lowercase(),
    }
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// Names the result columns of a query as PostgreSQL does, by aliasing its
/// unnamed expressions. A name that repeats an earlier column's gets a
/// unique placeholder instead (DataFusion refuses repeated names); those
/// are returned with their position, to be renamed after planning.
fn name_columns(statement: &mut Statement) -> Vec<(usize, String)> {
    let Statement::Query(q) = statement else {
        return Vec::new();
    };
    let Some(select) = leftmost_select(&mut q.body) else {
        return Vec::new();
    };
    let wildcard = select.projection.iter().any(|p| {
        matches!(
            p,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let mut used = HashSet::new();
    let mut renames = Vec::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        match item {
            SelectItem::UnnamedExpr(e) if is_column(e) => {
                // DataFusion names (and tells apart) columns itself.
                used.insert(pg_name(e));
            }
            SelectItem::UnnamedExpr(e) => {
                let name = pg_name(e);
                let alias = if used.insert(name.clone()) {
                    name
                } else if wildcard {
                    // Positions are unknown behind a wildcard: leave the
                    // name to DataFusion.
                    continue;
                } else {
                    renames.push((i, name));
                    format!("?column {i}?")
                };
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', alias),
                };
            }
            // The guard records the alias as used whatever it decides.
            SelectItem::ExprWithAlias { alias, .. }
                if !used.insert(alias.value.clone()) && !wildcard =>
            {
                renames.push((i, alias.value.clone()));
                *alias = Ident::with_quote('"', format!("?column {i}?"));
            }
            _ => {}
        }
    }
    renames
}

/// Gives the result columns at the given positions their names, each with
/// its own qualifier so that names may repeat as in PostgreSQL. Keeps the
/// plan as it is if that cannot be done.
fn rename_outputs(plan: LogicalPlan, renames: &[(usize, String)]) -> LogicalPlan {
    if renames.is_empty() {
        return plan;
    }
    let exprs: Vec<DfExpr> = plan
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            let column = DfExpr::Column(Column::new(qualifier.cloned(), field.name()));
            let name = renames
                .iter()
                .find(|(at, _)| *at == i)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| field.name().clone());
            column.alias_qualified(Some(format!("?{i}")), name)
        })
        .collect();
    let input = Arc::new(plan);
    match Projection::try_new(exprs, input.clone()) {
        Ok(p) => LogicalPlan::Projection(p),
        Err(_) => Arc::unwrap_or_clone(input),
    }
}

/// Makes every `$k` below the highest `$n` appear in the plan again.
///
/// datafusion-pg-catalog's `RemoveSubqueryFromProjection` replaces a
/// correlated subquery in a select list by NULL, and the `$k` inside it go
/// with it; datafusion-postgres then lists the remaining parameters in
/// order and binds the client's values by position, so every value after
/// the gap lands on the wrong parameter (SQLAlchemy's `get_columns` over
/// psycopg 3 fails with "invalid digit"). An always-true filter that
/// mentions the missing ones keeps the positions; the optimizer removes it.
fn keep_parameter_positions(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let present: HashSet<usize> = plan
        .get_parameter_types()?
        .keys()
        .filter_map(|id| id.strip_prefix('$')?.parse().ok())
        .collect();
    let Some(&max) = present.iter().max() else {
        return Ok(plan);
    };
    let missing: Vec<usize> = (1..max).filter(|k| !present.contains(k)).collect();
    if missing.is_empty() {
        return Ok(plan);
    }
    let predicate = missing.into_iter().fold(lit(true), |p, k| {
        p.or(DfExpr::Placeholder(Placeholder::new_with_field(format!("${k}"), None)).is_null())
    });
    Ok(LogicalPlan::Filter(Filter::try_new(
        predicate,
        Arc::new(plan),
    )?))
}

/// Types an untyped `$n` in `LIMIT`/`OFFSET` as bigint.
fn type_limit_placeholders(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    fn typed(e: &mut Option<Box<DfExpr>>) -> bool {
        if let Some(e) = e
            && let DfExpr::Placeholder(p) = e.as_mut()
            && p.field.is_none()
        {
            p.field = Some(Arc::new(Field::new(&p.id, DataType::Int64, true)));
            return true;
        }
        false
    }
    plan.transform_up(|node| {
        let LogicalPlan::Limit(mut limit) = node else {
            return Ok(Transformed::no(node));
        };
        let changed = typed(&mut limit.skip) | typed(&mut limit.fetch);
        Ok(Transformed::new_transformed(
            LogicalPlan::Limit(limit),
            changed,
        ))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn named(sql: &str) -> (String, Vec<(usize, String)>) {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let renames = name_columns(&mut s);
        (s.to_string(), renames)
    }

    #[test]
    fn columns_are_named_as_postgresql_names_them() {
        let (sql, renames) = named(
            "SELECT count(*), a.code, 1 + 1, CAST(NULL AS TEXT), x::int, CASE WHEN true THEN 1 END, \
             pg_catalog.version(), count(x) FROM a",
        );
        assert_eq!(
            sql,
            "SELECT count(*) AS \"count\", a.code, 1 + 1 AS \"?column?\", CAST(NULL AS TEXT) AS \"text\", \
             x::INT AS \"x\", CASE WHEN true THEN 1 END AS \"case\", pg_catalog.version() AS \"version\", \
             count(x) AS \"?column 7?\" FROM a"
        );
        assert_eq!(renames, [(7, "count".to_string())]);
    }

    #[test]
    fn names_behind_a_wildcard_are_left_alone() {
        let (sql, renames) = named("SELECT *, count(*), count(x) FROM a");
        assert_eq!(sql, "SELECT *, count(*) AS \"count\", count(x) FROM a");
        assert!(renames.is_empty());
    }
}
