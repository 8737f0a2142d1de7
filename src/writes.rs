//! Writes over the Postgres protocol: `INSERT INTO reports ...` and
//! `COPY reports FROM STDIN`, both through the one validator and one atomic
//! commit per statement — or per transaction block, at its COMMIT; every
//! other write or DDL statement is refused.
//!
//! `submitted_by` is the connected user and `submitted_at` the commit time;
//! a client cannot set them. An invalid row refuses the whole statement
//! with an error naming the row and field, and the connection goes on.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baocao_access::{AuditEvent, AuditLog, AuditRecord};
use baocao_catalog::Catalog;
use baocao_catalog::report::{INDICATOR_CODE, PERIOD, UNIT_CODE, VALUE};
use baocao_ingest::{
    Delimited, IngestError, Problem, Receipt, Rejection, ReportStore, RowError, Submission,
    ValidBatch, Validator, parse_delimited, to_long,
};
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    Cast, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, FromTable, Ident,
    ObjectName, SetExpr, Statement, TableFactor, TableObject,
};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use futures::{Sink, SinkExt};
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::TransactionStatus;

use crate::postgres::access_of;
use crate::sqlstate::{self, df_error, user_error};

/// The columns a client may write, in their default order.
const WRITABLE: [&str; 4] = [UNIT_CODE, PERIOD, INDICATOR_CODE, VALUE];

/// The largest COPY input kept in memory before it is refused.
const MAX_COPY_BYTES: usize = 1 << 30;

/// Validates and commits batches written by clients.
pub struct Writer {
    catalog: Arc<Catalog>,
    store: Arc<ReportStore>,
    audit: AuditLog,
}

impl Writer {
    pub fn new(catalog: Arc<Catalog>, store: Arc<ReportStore>, audit: AuditLog) -> Self {
        Writer {
            catalog,
            store,
            audit,
        }
    }

    /// Refuses (42501, recorded) a batch with a unit the session may not
    /// submit for.
    fn check_units(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        valid: &ValidBatch,
        source: &str,
    ) -> PgWireResult<()> {
        let access = access_of(client)?;
        let Some(unit) = valid.units().into_iter().find(|u| !access.may_submit(u)) else {
            return Ok(());
        };
        self.audit.record(
            AuditRecord::new(
                AuditEvent::Denied,
                access.user(),
                format!("{source} refused"),
            )
            .client(client.socket_addr())
            .unit(unit),
        );
        let role = access
            .grant()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no role".into());
        Err(user_error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied: role \"{}\" ({role}) may not submit reports for unit {unit}",
                access.user()
            ),
        ))
    }

    /// The audit line of a submission (recorded once it is committed).
    fn submission_record<'a>(
        client: &(dyn ClientInfo + Send + Sync),
        user: &str,
        source: &str,
        batches: impl IntoIterator<Item = &'a ValidBatch>,
    ) -> AuditRecord {
        let mut units = std::collections::BTreeSet::new();
        let mut rows = 0;
        for b in batches {
            units.extend(b.units().into_iter().map(str::to_string));
            rows += b.len() as u64;
        }
        let mut record = AuditRecord::new(
            AuditEvent::Submission,
            user,
            format!("{source}: {} unit(s)", units.len()),
        )
        .client(client.socket_addr())
        .rows(rows);
        if units.len() == 1
            && let Some(unit) = units.pop_first()
        {
            record = record.unit(unit);
        }
        record
    }

    /// Records the withdrawal of the values of `keys` (unit, period,
    /// indicator); returns the number of keys.
    async fn withdraw(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        keys: &RecordBatch,
    ) -> PgWireResult<usize> {
        self.write(client, keys, "DELETE", false).await
    }

    /// Submits the values of `batch`; returns the number of rows.
    async fn submit(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        batch: &RecordBatch,
        source: &str,
    ) -> PgWireResult<usize> {
        self.write(client, batch, source, true).await
    }

    /// Validates `batch` (values, or keys to withdraw) and commits it as one
    /// submission by the connected user from `source` — or, inside a
    /// transaction block, keeps it for the block's COMMIT.
    async fn write(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        batch: &RecordBatch,
        source: &str,
        values: bool,
    ) -> PgWireResult<usize> {
        let validator = Validator::new(&self.catalog, chrono::Utc::now().date_naive());
        let valid = if values {
            validator.validate(batch, source)
        } else {
            validator.validate_withdrawal(batch, source)
        }
        .map_err(|r| rejection_error(&r))?;
        self.check_units(client, &valid, source)?;
        let rows = valid.len();
        if client.transaction_status() == TransactionStatus::Transaction {
            open_transaction(client).push(valid, source);
            return Ok(rows);
        }
        let user = access_of(client)?.user().to_string();
        let record = Self::submission_record(client, &user, source, [&valid]);
        self.commit(vec![(valid, Submission::now(user.as_str(), source))])
            .await?;
        self.audit.record(record);
        Ok(rows)
    }

    /// Commits what the connection's transaction block wrote, as one atomic
    /// commit: the net effect of its statements in order (see
    /// `ValidBatch::net_effect`). Nothing to do when it wrote nothing.
    pub async fn commit_transaction(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<()> {
        let (batches, sources) = open_transaction(client).take();
        if batches.is_empty() {
            return Ok(());
        }
        let user = access_of(client)?.user().to_string();
        let source = sources.join("+");
        let batches = ValidBatch::net_effect(batches);
        // The role may have changed since the statements were checked: the
        // block commits only what the session may submit now.
        for batch in &batches {
            self.check_units(client, batch, &source)?;
        }
        let record = Self::submission_record(client, &user, &source, &batches);
        let submissions = batches
            .into_iter()
            .map(|b| (b, Submission::now(user.as_str(), source.as_str())))
            .collect();
        self.commit(submissions).await?;
        self.audit.record(record);
        Ok(())
    }

    /// Forgets what the connection's transaction block wrote.
    pub fn rollback_transaction(&self, client: &(dyn ClientInfo + Send + Sync)) {
        open_transaction(client).take();
    }

    async fn commit(&self, submissions: Vec<(ValidBatch, Submission)>) -> PgWireResult<Receipt> {
        self.store.commit(submissions).await.map_err(|e| match e {
            IngestError::Rejected(r) => rejection_error(&r),
            other => user_error(
                sqlstate::INTERNAL_ERROR,
                format!("the commit failed, nothing was written: {other}"),
            ),
        })
    }
}

/// The writes of a connection's open transaction block, kept in the
/// connection's session until COMMIT (written) or ROLLBACK (forgotten); they
/// go with the connection if it ends first.
#[derive(Default)]
struct OpenTransaction(Mutex<Staged>);

#[derive(Default)]
struct Staged {
    batches: Vec<ValidBatch>,
    sources: Vec<String>,
    /// Savepoints by name, with the number of batches written before each.
    savepoints: Vec<(String, usize)>,
}

impl OpenTransaction {
    fn push(&self, batch: ValidBatch, source: &str) {
        if let Ok(mut open) = self.0.lock() {
            open.batches.push(batch);
            if !open.sources.iter().any(|s| s == source) {
                open.sources.push(source.to_string());
            }
        }
    }

    fn take(&self) -> (Vec<ValidBatch>, Vec<String>) {
        self.0
            .lock()
            .map(|mut open| {
                let open = std::mem::take(&mut *open);
                (open.batches, open.sources)
            })
            .unwrap_or_default()
    }

    fn savepoint(&self, name: &str) {
        if let Ok(mut open) = self.0.lock() {
            let at = open.batches.len();
            open.savepoints.push((name.to_string(), at));
        }
    }

    /// Forgets the savepoint `name` and those after it (RELEASE), and with
    /// `undo` the writes made since (ROLLBACK TO, which keeps the
    /// savepoint). False when there is no such savepoint.
    fn back_to(&self, name: &str, undo: bool) -> bool {
        let Ok(mut open) = self.0.lock() else {
            return false;
        };
        let Some(i) = open.savepoints.iter().rposition(|(n, _)| n == name) else {
            return false;
        };
        let at = open.savepoints[i].1;
        if undo {
            open.savepoints.truncate(i + 1);
            open.batches.truncate(at);
        } else {
            open.savepoints.truncate(i);
        }
        true
    }
}

fn open_transaction(client: &(impl ClientInfo + ?Sized)) -> Arc<OpenTransaction> {
    client
        .session_extensions()
        .get_or_insert_with(OpenTransaction::default)
}

/// A refused batch as a Postgres error: class 22 for bad values, 23 for
/// keys that break the catalog's integrity.
fn rejection_error(r: &Rejection) -> PgWireError {
    let code = match r.errors.first().map(|e| e.problem) {
        Some(Problem::Unknown) => "23503",
        Some(Problem::Duplicate) => "23505",
        Some(Problem::Missing) => "23502",
        Some(Problem::Shape) => "22P04",
        _ => sqlstate::INVALID_PARAMETER_VALUE,
    };
    user_error(code, format!("refused {r}; nothing was written"))
}

fn read_only(what: &str) -> PgWireError {
    user_error(
        "42501",
        format!(
            "{what} is not allowed: the only writable table is reports (INSERT INTO reports or COPY reports FROM STDIN); \
             the catalog is changed through its files"
        ),
    )
}

fn is_reports(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .collect();
    matches!(parts.as_slice(), [t] if t == "reports")
        || matches!(parts.as_slice(), [s, t] if s == "public" && t == "reports")
}

/// The target columns of a write, checked against the writable ones.
fn target_columns(columns: &[String]) -> PgWireResult<Vec<&'static str>> {
    if columns.is_empty() {
        return Ok(WRITABLE.to_vec());
    }
    columns
        .iter()
        .map(|c| {
            let c = c.trim_matches('"').to_lowercase();
            WRITABLE.iter().copied().find(|w| *w == c).ok_or_else(|| {
                user_error(
                    "42703",
                    format!(
                        "column \"{c}\" of reports cannot be written: write unit_code, period, indicator_code and value \
                         (submitted_at, submitted_by and submission_id are set by the server)"
                    ),
                )
            })
        })
        .collect()
}

/// Names the columns of `batch` after `targets`, as text and number.
fn as_reports_batch(batch: &RecordBatch, targets: &[&'static str]) -> PgWireResult<RecordBatch> {
    if batch.num_columns() != targets.len() {
        return Err(user_error(
            "42601",
            format!(
                "INSERT has {} target columns but {} values per row",
                targets.len(),
                batch.num_columns()
            ),
        ));
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, name) in targets.iter().enumerate() {
        let to = if *name == VALUE {
            DataType::Float64
        } else {
            DataType::Utf8
        };
        let column = cast(batch.column(i), &to)
            .map_err(|e| user_error("22P02", format!("column {name}: {e}")))?;
        fields.push(Field::new(*name, to, true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| user_error(sqlstate::INTERNAL_ERROR, e.to_string()))
}

async fn collect_plan(ctx: &SessionContext, plan: LogicalPlan) -> PgWireResult<RecordBatch> {
    let df = ctx.execute_logical_plan(plan).await.map_err(df_error)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(df_error)?;
    concat_batches(&schema, &batches)
        .map_err(|e| user_error(sqlstate::INTERNAL_ERROR, e.to_string()))
}

/// The write hook: INSERT and COPY into reports, a refusal for other writes.
pub struct WriteHook {
    writer: Arc<Writer>,
}

impl WriteHook {
    pub fn new(writer: Arc<Writer>) -> Self {
        WriteHook { writer }
    }

    /// Withdraws the current values of `keys`; `DELETE n` with n the count.
    async fn withdraw_keys(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        keys: &RecordBatch,
    ) -> PgWireResult<Response> {
        if keys.num_rows() == 0 {
            return Ok(Response::Execution(Tag::new("DELETE").with_rows(0)));
        }
        let rows = self.writer.withdraw(client, keys).await?;
        Ok(Response::Execution(Tag::new("DELETE").with_rows(rows)))
    }

    /// Plans the rows of `INSERT INTO reports ...`, with each `$n` in a
    /// VALUES list typed by its target column so drivers know what to send.
    async fn plan_rows(
        &self,
        stmt: &Statement,
        ctx: &SessionContext,
    ) -> PgWireResult<(LogicalPlan, Vec<&'static str>)> {
        let Statement::Insert(insert) = stmt else {
            return Err(user_error(
                sqlstate::INTERNAL_ERROR,
                "not an INSERT".to_string(),
            ));
        };
        let names: Vec<String> = insert.columns.iter().map(|c| c.to_string()).collect();
        let targets = target_columns(&names)?;
        let Some(source) = &insert.source else {
            return Err(user_error(
                "42601",
                "INSERT INTO reports needs VALUES or a SELECT".to_string(),
            ));
        };
        let plan = ctx
            .state()
            .create_logical_plan(&source.to_string())
            .await
            .map_err(df_error)?;
        let typed = type_placeholders(plan, &targets).map_err(df_error)?;
        Ok((typed, targets))
    }
}

/// Gives every untyped `$n` of a VALUES list the type of its target column.
fn type_placeholders(
    plan: LogicalPlan,
    targets: &[&'static str],
) -> datafusion::error::Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Values(values) = &node else {
            return Ok(Transformed::no(node));
        };
        let mut changed = false;
        let rows: Vec<Vec<Expr>> = values
            .values
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, e)| match e {
                        Expr::Placeholder(p) if p.field.is_none() => {
                            changed = true;
                            let to = if targets.get(i) == Some(&VALUE) {
                                DataType::Float64
                            } else {
                                DataType::Utf8
                            };
                            Expr::Cast(Cast::new(Box::new(e.clone()), to))
                        }
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect();
        if !changed {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(LogicalPlanBuilder::values(rows)?.build()?))
    })
    .map(|t| t.data)
}

/// The query selecting the keys a `DELETE FROM reports WHERE ...` withdraws.
fn delete_keys_sql(stmt: &Statement) -> Option<PgWireResult<String>> {
    let Statement::Delete(delete) = stmt else {
        return None;
    };
    let tables = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [only] = tables.as_slice() else {
        return None;
    };
    let TableFactor::Table { name, .. } = &only.relation else {
        return None;
    };
    if !is_reports(name) || !only.joins.is_empty() || delete.using.is_some() {
        return None;
    }
    let Some(selection) = &delete.selection else {
        return Some(Err(user_error(
            "21000",
            "DELETE FROM reports needs a WHERE clause naming the values to withdraw".into(),
        )));
    };
    Some(Ok(format!(
        "SELECT unit_code, period, indicator_code FROM reports WHERE {selection}"
    )))
}

fn insert_target(stmt: &Statement) -> Option<bool> {
    match stmt {
        Statement::Insert(insert) => Some(match &insert.table {
            TableObject::TableName(name) => is_reports(name),
            _ => false,
        }),
        _ => None,
    }
}

/// Statements that change data or schema, other than the ones we handle.
fn refused(stmt: &Statement) -> Option<&'static str> {
    Some(match stmt {
        Statement::Insert(_) => "INSERT into this table",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => {
            "DELETE from this table (DELETE FROM reports WHERE ... withdraws values)"
        }
        Statement::Merge { .. } => "MERGE",
        Statement::Truncate { .. } => "TRUNCATE",
        Statement::Drop { .. } => "DROP",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView { .. } => "CREATE VIEW",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::AlterTable { .. } => "ALTER TABLE",
        Statement::Copy { .. } => {
            "this COPY (COPY reports FROM STDIN and COPY ... TO STDOUT are supported)"
        }
        // DataFusion would plan it as a table in the engine every session
        // shares, filled with this session's rows.
        Statement::Query(q) if selects_into(&q.body) => "SELECT INTO",
        _ => return None,
    })
}

/// Whether a query body has an `INTO` clause (in any branch of a set
/// operation).
fn selects_into(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.into.is_some(),
        SetExpr::SetOperation { left, right, .. } => selects_into(left) || selects_into(right),
        SetExpr::Query(q) => selects_into(&q.body),
        _ => false,
    }
}

/// The COPY options we honour.
#[derive(Debug, Clone)]
struct CopyFormat {
    csv: bool,
    header: bool,
    delimiter: u8,
    null: String,
}

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> PgWireResult<CopyFormat> {
    let mut f = CopyFormat {
        csv: false,
        header: false,
        delimiter: b'\t',
        null: "\\N".to_string(),
    };
    let mut delimiter_set = false;
    let mut null_set = false;
    for o in options {
        match o {
            CopyOption::Format(name) => match name.value.to_lowercase().as_str() {
                "csv" => f.csv = true,
                "text" => f.csv = false,
                other => {
                    return Err(user_error(
                        "0A000",
                        format!("COPY format {other} is not supported: use csv or text"),
                    ));
                }
            },
            CopyOption::Header(h) => f.header = *h,
            CopyOption::Delimiter(c) => {
                f.delimiter = u8::try_from(u32::from(*c)).map_err(|_| {
                    user_error("22023", "COPY delimiter must be one ASCII character".into())
                })?;
                delimiter_set = true;
            }
            CopyOption::Null(s) => {
                f.null = s.clone();
                null_set = true;
            }
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(csv) => {
                f.csv = true;
                f.header |= csv.iter().any(|c| matches!(c, CopyLegacyCsvOption::Header));
            }
            CopyLegacyOption::Header => f.header = true,
            CopyLegacyOption::Delimiter(c) => {
                f.delimiter = u8::try_from(u32::from(*c)).map_err(|_| {
                    user_error("22023", "COPY delimiter must be one ASCII character".into())
                })?;
                delimiter_set = true;
            }
            CopyLegacyOption::Null(s) => {
                f.null = s.clone();
                null_set = true;
            }
            _ => {}
        }
    }
    if f.csv {
        if !delimiter_set {
            f.delimiter = b',';
        }
        if !null_set {
            f.null = String::new();
        }
    }
    Ok(f)
}

/// A COPY in progress on one connection.
struct CopyState {
    targets: Vec<&'static str>,
    format: CopyFormat,
    data: Vec<u8>,
}

/// The per-connection slot for a COPY in progress.
#[derive(Default)]
struct CopySlot(Mutex<Option<CopyState>>);

fn slot(client: &(impl ClientInfo + ?Sized)) -> Arc<CopySlot> {
    client
        .session_extensions()
        .get_or_insert_with(CopySlot::default)
}

#[async_trait]
impl QueryHook for WriteHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if insert_target(statement) == Some(true) {
            let result = async {
                let (plan, targets) = self.plan_rows(statement, ctx).await?;
                let rows = as_reports_batch(&collect_plan(ctx, plan).await?, &targets)?;
                let rows = self.writer.submit(&*client, &rows, "INSERT").await?;
                Ok(Response::Execution(
                    Tag::new("INSERT").with_oid(0).with_rows(rows),
                ))
            }
            .await;
            return Some(result);
        }
        if let Some(copy) = start_copy_either_way(statement, &*client, ctx).await {
            return Some(copy);
        }
        if let Some(sql) = delete_keys_sql(statement) {
            let result = async {
                let plan = ctx
                    .state()
                    .create_logical_plan(&sql?)
                    .await
                    .map_err(df_error)?;
                let keys = collect_plan(ctx, plan).await?;
                self.withdraw_keys(&*client, &keys).await
            }
            .await;
            return Some(result);
        }
        refused(statement).map(|what| Err(read_only(what)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if insert_target(statement) == Some(true) {
            let plan = self.plan_rows(statement, ctx).await.map(|(plan, _)| plan);
            return Some(match plan {
                Ok(plan) => as_write(ctx, WriteOp::Insert(InsertOp::Append), plan).await,
                Err(e) => Err(e),
            });
        }
        if let Some(sql) = delete_keys_sql(statement) {
            let plan = match sql {
                Ok(sql) => ctx
                    .state()
                    .create_logical_plan(&sql)
                    .await
                    .map_err(df_error),
                Err(e) => Err(e),
            };
            return Some(match plan {
                Ok(plan) => as_write(ctx, WriteOp::Delete, plan).await,
                Err(e) => Err(e),
            });
        }
        if is_copy_in(statement) || is_copy_out(statement) {
            // Nothing to plan now: the data comes in CopyData messages, or
            // the query runs at execution.
            return Some(LogicalPlanBuilder::empty(false).build().map_err(df_error));
        }
        refused(statement).map(|what| Err(read_only(what)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(copy) = start_copy_either_way(statement, &*client, ctx).await {
            return Some(copy);
        }
        if delete_keys_sql(statement).is_some() {
            let result = async {
                let plan = written_rows(logical_plan)
                    .replace_params_with_values(params)
                    .map_err(df_error)?;
                let keys = collect_plan(ctx, plan).await?;
                self.withdraw_keys(&*client, &keys).await
            }
            .await;
            return Some(result);
        }
        if insert_target(statement) != Some(true) {
            return None;
        }
        let result = async {
            let Statement::Insert(insert) = statement else {
                return Err(user_error(sqlstate::INTERNAL_ERROR, "not an INSERT".into()));
            };
            let names: Vec<String> = insert.columns.iter().map(|c| c.to_string()).collect();
            let targets = target_columns(&names)?;
            let plan = written_rows(logical_plan)
                .replace_params_with_values(params)
                .map_err(df_error)?;
            let rows = as_reports_batch(&collect_plan(ctx, plan).await?, &targets)?;
            let rows = self.writer.submit(&*client, &rows, "INSERT").await?;
            Ok(Response::Execution(
                Tag::new("INSERT").with_oid(0).with_rows(rows),
            ))
        }
        .await;
        Some(result)
    }
}

/// Makes COMMIT and ROLLBACK meaningful for writes: a transaction block's
/// INSERT, COPY and DELETE statements are validated as they come and kept
/// (see `Writer::write`); COMMIT writes them in one atomic commit, ROLLBACK
/// (or a COMMIT of a failed block) forgets them. The response itself, and
/// the block's state, are left to datafusion-postgres' transaction hook,
/// which runs after this one.
pub struct TransactionHook {
    writer: Arc<Writer>,
}

impl TransactionHook {
    pub fn new(writer: Arc<Writer>) -> Self {
        TransactionHook { writer }
    }

    async fn end(
        &self,
        statement: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<Response>> {
        let in_block = client.transaction_status() != TransactionStatus::Idle;
        let no_savepoint = |name: &Ident| {
            user_error(
                "3B001",
                format!("savepoint \"{}\" does not exist", name.value),
            )
        };
        match statement {
            Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } if !in_block => {
                Some(Err(user_error(
                    "25P01",
                    format!("{statement} can only be used in transaction blocks"),
                )))
            }
            Statement::Rollback {
                savepoint: Some(_), ..
            } if !in_block => Some(Err(user_error(
                "25P01",
                "ROLLBACK TO SAVEPOINT can only be used in transaction blocks".into(),
            ))),
            Statement::Savepoint { name } => {
                open_transaction(client).savepoint(&name.value);
                Some(Ok(Response::Execution(Tag::new("SAVEPOINT"))))
            }
            Statement::ReleaseSavepoint { name } => {
                Some(if open_transaction(client).back_to(&name.value, false) {
                    Ok(Response::Execution(Tag::new("RELEASE")))
                } else {
                    Err(no_savepoint(name))
                })
            }
            // Rolling back to a savepoint cannot clear a failed block:
            // pgwire keeps a failed block failed until it ends.
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => Some(if open_transaction(client).back_to(&name.value, true) {
                Ok(Response::Execution(Tag::new("ROLLBACK")))
            } else {
                Err(no_savepoint(name))
            }),
            Statement::Commit { .. }
                if client.transaction_status() == TransactionStatus::Transaction =>
            {
                // A failed COMMIT has written nothing and forgotten the
                // block's writes; the client sees the error and rolls back.
                self.writer.commit_transaction(client).await.err().map(Err)
            }
            // A BEGIN inside a block is ignored (as PostgreSQL does, with a
            // warning), and must not drop the block's writes.
            Statement::StartTransaction { .. } if in_block => None,
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::StartTransaction { .. } => {
                self.writer.rollback_transaction(client);
                None
            }
            _ => None,
        }
    }
}

#[async_trait]
impl QueryHook for TransactionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.end(statement, &*client).await
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.end(statement, &*client).await
    }
}

/// Wraps the rows a write takes (values to insert, keys to withdraw) in a
/// DML node, so that a client describing the prepared statement learns that
/// it returns no rows (pgjdbc refuses an update that does); the rows are
/// taken out again to execute (`written_rows`).
async fn as_write(
    ctx: &SessionContext,
    op: WriteOp,
    rows: LogicalPlan,
) -> PgWireResult<LogicalPlan> {
    let table = ctx.table_provider("reports").await.map_err(df_error)?;
    Ok(LogicalPlan::Dml(DmlStatement::new(
        TableReference::bare("reports"),
        provider_as_source(table),
        op,
        Arc::new(rows),
    )))
}

/// The rows of a write planned by `as_write`.
fn written_rows(plan: &LogicalPlan) -> LogicalPlan {
    match plan {
        LogicalPlan::Dml(dml) => dml.input.as_ref().clone(),
        other => other.clone(),
    }
}

/// Whether `statement` is `COPY ... TO STDOUT`.
fn is_copy_out(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Copy {
            to: true,
            target: CopyTarget::Stdout,
            ..
        }
    )
}

/// Whether `statement` is `COPY reports [(cols)] FROM STDIN ...`.
fn is_copy_in(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            to: false,
            target: CopyTarget::Stdin,
            ..
        } if is_reports(table_name)
    )
}

/// Starts `COPY reports FROM STDIN` on this connection, if that is the statement.
fn start_copy(
    statement: &Statement,
    client: &(dyn ClientInfo + Send + Sync),
) -> Option<PgWireResult<Response>> {
    let Statement::Copy {
        source: CopySource::Table { columns, .. },
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    if !is_copy_in(statement) {
        return None;
    }
    let result = (|| {
        let names: Vec<String> = columns.iter().map(|c| c.value.clone()).collect();
        let targets = target_columns(&names)?;
        let format = copy_format(options, legacy_options)?;
        let n = targets.len();
        if let Ok(mut s) = slot(client).0.lock() {
            *s = Some(CopyState {
                targets,
                format,
                data: Vec::new(),
            });
        }
        let stream = futures::stream::empty::<PgWireResult<CopyData>>();
        Ok(Response::CopyIn(CopyResponse::new(0, n, stream)))
    })();
    Some(result)
}

/// Starts `COPY reports FROM STDIN` or runs `COPY ... TO STDOUT`, if that is
/// the statement (the same in the simple and the extended protocol).
async fn start_copy_either_way(
    statement: &Statement,
    client: &(dyn ClientInfo + Send + Sync),
    ctx: &SessionContext,
) -> Option<PgWireResult<Response>> {
    if let Some(start) = start_copy(statement, client) {
        return Some(start);
    }
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::Stdout,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    Some(copy_out(source, options, legacy_options, ctx).await)
}

/// `COPY (query) TO STDOUT` and `COPY table TO STDOUT` (psql's `\\copy ... TO`):
/// the rows as CSV or text, one CopyData message per row.
async fn copy_out(
    source: &CopySource,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    ctx: &SessionContext,
) -> PgWireResult<Response> {
    let sql = match source {
        CopySource::Query(q) => q.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => format!(
            "SELECT {} FROM {table_name}",
            columns
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let format = copy_format(options, legacy)?;
    let df = ctx.sql(&sql).await.map_err(df_error)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(df_error)?;
    let mut rows: Vec<PgWireResult<CopyData>> = Vec::new();
    let mut header = format.header.then(|| {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        encode_row(&format, names.iter().map(|n| Some(n.as_str())))
    });
    for batch in &batches {
        let columns: Vec<Vec<Option<String>>> = batch
            .columns()
            .iter()
            .map(column_text)
            .collect::<PgWireResult<_>>()?;
        for r in 0..batch.num_rows() {
            let mut line = header.take().unwrap_or_default();
            line.extend(encode_row(&format, columns.iter().map(|c| c[r].as_deref())));
            rows.push(Ok(CopyData::new(bytes::Bytes::from(line))));
        }
    }
    if let Some(h) = header {
        rows.push(Ok(CopyData::new(bytes::Bytes::from(h))));
    }
    Ok(Response::CopyOut(CopyResponse::new(
        0,
        schema.fields().len(),
        futures::stream::iter(rows),
    )))
}

/// A column as text the way PostgreSQL prints it (`12`, not `12.0`).
fn column_text(array: &ArrayRef) -> PgWireResult<Vec<Option<String>>> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if let Some(f) = array.as_any().downcast_ref::<Float64Array>() {
        return Ok((0..f.len())
            .map(|i| (!f.is_null(i)).then(|| f.value(i).to_string()))
            .collect());
    }
    let options =
        FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:::z"));
    let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
        .map_err(|e| user_error(sqlstate::INTERNAL_ERROR, e.to_string()))?;
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return Ok(None);
            }
            formatter.value(i).try_to_string().map(Some).map_err(|e| {
                user_error(
                    sqlstate::INTERNAL_ERROR,
                    format!("cannot print a value: {e}"),
                )
            })
        })
        .collect()
}

/// One line of COPY output.
fn encode_row<'a>(format: &CopyFormat, values: impl Iterator<Item = Option<&'a str>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(format.delimiter);
        }
        match v {
            None => out.extend_from_slice(format.null.as_bytes()),
            Some(text) if format.csv => {
                let needs_quotes = text.is_empty()
                    || text
                        .bytes()
                        .any(|b| b == format.delimiter || b == b'"' || b == b'\n' || b == b'\r');
                if needs_quotes {
                    out.push(b'"');
                    out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
                    out.push(b'"');
                } else {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            Some(text) => {
                for b in text.bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        other => out.push(other),
                    }
                }
            }
        }
    }
    out.push(b'\n');
    out
}

/// Receives the data of `COPY reports FROM STDIN`.
pub struct CopyIn {
    writer: Arc<Writer>,
}

impl CopyIn {
    pub fn new(writer: Arc<Writer>) -> Self {
        CopyIn { writer }
    }
}

/// Parses COPY input into the writable columns, the value as a number.
fn parse_copy(state: &CopyState) -> Result<RecordBatch, Rejection> {
    let f = &state.format;
    let layout = Delimited {
        header: f.header,
        delimiter: f.delimiter,
        quoting: f.csv,
        null: f.null.clone(),
        trim: false,
    };
    let text = parse_delimited(&state.data, &layout, Some(&state.targets), "COPY").map_err(
        |e| match e {
            IngestError::Rejected(r) => *r,
            other => Rejection {
                source: "COPY".to_string(),
                errors: vec![RowError {
                    problem: Problem::Shape,
                    row: None,
                    field: None,
                    reason: other.to_string(),
                }],
                total: 1,
            },
        },
    )?;
    Ok(to_long(&text, "COPY")?.batch)
}

#[async_trait]
impl CopyHandler for CopyIn {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let slot = slot(client);
        let mut guard = slot
            .0
            .lock()
            .map_err(|_| user_error(sqlstate::INTERNAL_ERROR, "COPY state poisoned".into()))?;
        let Some(state) = guard.as_mut() else {
            return Err(user_error(
                "08P01",
                "COPY data without a COPY in progress".into(),
            ));
        };
        if state.data.len() + copy_data.data.len() > MAX_COPY_BYTES {
            *guard = None;
            return Err(user_error(
                "54000",
                format!("COPY input is larger than {MAX_COPY_BYTES} bytes; split it"),
            ));
        }
        state.data.extend_from_slice(&copy_data.data);
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = slot(client).0.lock().ok().and_then(|mut s| s.take());
        let Some(state) = state else {
            return Err(user_error(
                "08P01",
                "COPY done without a COPY in progress".into(),
            ));
        };
        let batch = parse_copy(&state).map_err(|r| rejection_error(&r))?;
        let rows = self.writer.submit(&*client, &batch, "COPY").await?;
        let tag = Tag::new("COPY").with_rows(rows);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(mut s) = slot(client).0.lock() {
            *s = None;
        }
        user_error(
            "57014",
            format!(
                "COPY from stdin failed: {}; nothing was written",
                fail.message
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_and_csv() {
        let state = CopyState {
            targets: WRITABLE.to_vec(),
            format: copy_format(&[CopyOption::Format("csv".into()), CopyOption::Header(true)], &[]).unwrap(),
            data: b"unit_code,period,indicator_code,value\n00004,2024-07,births,12\n00007,2024-07,births,\n".to_vec(),
        };
        let b = parse_copy(&state).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(3).is_null(1));
        let state = CopyState {
            targets: WRITABLE.to_vec(),
            format: copy_format(&[], &[]).unwrap(),
            data: b"00004\t2024-07\tbirths\tabc\n".to_vec(),
        };
        let err = parse_copy(&state).unwrap_err();
        assert_eq!(err.errors[0].reason, "value 'abc' is not a number");
    }
}
