//! Row-level access: every table that carries unit data shows a session
//! only the rows of its scope, whatever SQL reaches it.
//!
//! The tables are wrapped where they are registered, so every way of
//! naming them — joins, subqueries, CTEs, UNION, views of the engine,
//! prepared statements, either protocol — plans through the wrapper. When
//! the wrapper is scanned, it reads the session's [`Access`] (set around
//! each statement by the session service, see `postgres::session`) and
//! puts a filter straight above the scan: no operator above it, no
//! aggregate, no join, ever sees a row outside the scope. A scan outside any
//! session is refused, so forgetting to set the access fails closed.
//!
//! The filter is `__row_scope(unit_code, period)`: a row is visible when
//! its unit is in the session's scope for the hierarchy version its period
//! rolls up along (`baocao_access::scope`).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use baocao_access::{Access, AuditLog, Scope, UnitScope};
use baocao_catalog::{Catalog, Period};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, Volatility, col,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::SessionContext;

tokio::task_local! {
    /// The rights of the session whose statement is being planned.
    static ACCESS: Arc<Access>;
}

/// Runs `work` (a statement of a session) with that session's rights.
pub async fn with_access<F: std::future::Future>(access: Arc<Access>, work: F) -> F::Output {
    ACCESS.scope(access, work).await
}

/// `work` with the rights of the session whose statement the current task
/// serves, for a task of its own (see `postgres::session`); without them
/// if there are none.
pub fn carried<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    let access = ACCESS.try_with(Arc::clone).ok();
    async move {
        match access {
            Some(access) => ACCESS.scope(access, work).await,
            None => work.await,
        }
    }
}

/// Refused for lack of privilege: SQLSTATE 42501.
#[derive(Debug, thiserror::Error)]
#[error("permission denied: {0}")]
pub struct PermissionDenied(pub String);

fn denied(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(PermissionDenied(message)))
}

/// The rights of the session whose statement the current task serves.
pub fn current() -> Result<Arc<Access>> {
    ACCESS.try_with(Arc::clone).map_err(|_| {
        denied("the warehouse's tables are read only within a client session".to_string())
    })
}

/// Which hierarchy version a row's unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    /// The version in force for the row's period.
    InForce,
    /// The newest version, whatever the period (`rollup_current`).
    Current,
}

/// The tables with unit data, and the frame their unit codes are in.
const PROTECTED: &[(&str, Frame)] = &[
    ("reports", Frame::InForce),
    ("reports_history", Frame::InForce),
    ("rollup", Frame::InForce),
    ("rollup_current", Frame::Current),
    ("report_status", Frame::InForce),
    ("completeness", Frame::InForce),
];
const UNIT: &str = "unit_code";
const PERIOD: &str = "period";

/// Wraps the unit-data tables (and `reports_as_of`) of `ctx` in their
/// row scope, and registers the admins' `audit_log`.
pub async fn protect(ctx: &SessionContext, catalog: Arc<Catalog>, audit: AuditLog) -> Result<()> {
    for (name, frame) in PROTECTED {
        let inner = ctx.table_provider(*name).await?;
        ctx.deregister_table(*name)?;
        ctx.register_table(
            *name,
            Arc::new(ScopedTable::new(inner, catalog.clone(), *frame)?),
        )?;
    }
    let as_of = ctx
        .state()
        .table_functions()
        .get("reports_as_of")
        .map(|f| f.function().clone())
        .ok_or_else(|| DataFusionError::Plan("reports_as_of is not registered".into()))?;
    ctx.register_udtf(
        "reports_as_of",
        Arc::new(ScopedFunction {
            inner: as_of,
            catalog,
        }),
    );
    ctx.register_table("audit_log", Arc::new(AuditTable { log: audit }))?;
    Ok(())
}

/// A table whose scans keep only the session's rows.
#[derive(Debug)]
struct ScopedTable {
    inner: Arc<dyn TableProvider>,
    catalog: Arc<Catalog>,
    frame: Frame,
    unit: usize,
    period: usize,
}

impl ScopedTable {
    fn new(inner: Arc<dyn TableProvider>, catalog: Arc<Catalog>, frame: Frame) -> Result<Self> {
        let schema = inner.schema();
        Ok(ScopedTable {
            unit: schema.index_of(UNIT)?,
            period: schema.index_of(PERIOD)?,
            inner,
            catalog,
            frame,
        })
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let everything = current().is_ok_and(|a| *a.read_scope() == Scope::Everything);
        if everything {
            return self.inner.supports_filters_pushdown(filters);
        }
        // Below the scope filter, a predicate runs on rows outside the
        // scope: one that can fail (a cast, a division) would tell of them
        // in its error. Only a bare column compared with literals may go
        // down (it narrows the inner table's work and cannot fail), and
        // DataFusion applies it again above.
        let answers = self.inner.supports_filters_pushdown(filters)?;
        Ok(filters
            .iter()
            .zip(answers)
            .map(|(f, inner)| {
                if cannot_fail(f) && inner != TableProviderFilterPushDown::Unsupported {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let access = current()?;
        let units = match access.read_scope() {
            Scope::Everything => return self.inner.scan(state, projection, filters, limit).await,
            Scope::Nothing => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema().project(p)?),
                    None => self.schema(),
                };
                return Ok(Arc::new(EmptyExec::new(schema)));
            }
            Scope::Units(units) => units.clone(),
        };
        // Scan what was asked for plus the two columns the scope needs; no
        // limit below the filter (it would count rows the filter drops).
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema().fields().len()).collect());
        let mut read = wanted.clone();
        for c in [self.unit, self.period] {
            if !read.contains(&c) {
                read.push(c);
            }
        }
        let narrowing: Vec<Expr> = filters.iter().filter(|f| cannot_fail(f)).cloned().collect();
        let scan = self
            .inner
            .scan(state, Some(&read), &narrowing, None)
            .await?;
        let schema = scan.schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let visible = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_impl(RowScope::new(
                units,
                self.catalog.clone(),
                self.frame,
            ))),
            vec![col(UNIT), col(PERIOD)],
        ));
        let predicate = state.create_physical_expr(visible, &df_schema)?;
        let filter = FilterExec::try_new(predicate, scan)?;
        if read.len() == wanted.len() {
            return Ok(Arc::new(ScopeBarrier::new(Arc::new(filter))));
        }
        // Drop the columns added for the filter.
        let keep = (0..wanted.len())
            .map(|i| {
                let field = schema.field(i);
                (
                    Arc::new(datafusion::physical_expr::expressions::Column::new(
                        field.name(),
                        i,
                    )) as _,
                    field.name().clone(),
                )
            })
            .collect::<Vec<_>>();
        let projection = ProjectionExec::try_new(keep, Arc::new(filter))?;
        Ok(Arc::new(ScopeBarrier::new(Arc::new(projection))))
    }
}

/// A bare column compared with literals: it cannot fail on any row.
fn cannot_fail(e: &Expr) -> bool {
    use datafusion::logical_expr::Operator;
    let column = |e: &Expr| matches!(e, Expr::Column(_));
    let literal = |e: &Expr| matches!(e, Expr::Literal(..));
    match e {
        Expr::BinaryExpr(b)
            if matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
            ) =>
        {
            (column(&b.left) && literal(&b.right)) || (literal(&b.left) && column(&b.right))
        }
        Expr::InList(l) => column(&l.expr) && l.list.iter().all(literal),
        _ => false,
    }
}

/// Keeps every filter of the plan above where it is: the physical
/// optimizer would otherwise push a query's predicate into the scope's
/// filter, or below it, where it runs on rows outside the scope. The
/// default filter-pushdown answers of an execution plan refuse both ways.
#[derive(Debug)]
struct ScopeBarrier {
    input: Arc<dyn ExecutionPlan>,
}

impl ScopeBarrier {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        ScopeBarrier { input }
    }
}

impl datafusion::physical_plan::DisplayAs for ScopeBarrier {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter,
    ) -> std::fmt::Result {
        write!(f, "ScopeBarrier")
    }
}

impl ExecutionPlan for ScopeBarrier {
    fn name(&self) -> &str {
        "ScopeBarrier"
    }

    fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("ScopeBarrier has one child".to_string()))?;
        Ok(Arc::new(ScopeBarrier::new(input)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> Result<datafusion::execution::SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// `reports_as_of(moment)`, its rows scoped like `reports`.
#[derive(Debug)]
struct ScopedFunction {
    inner: Arc<dyn TableFunctionImpl>,
    catalog: Arc<Catalog>,
}

impl TableFunctionImpl for ScopedFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> Result<Arc<dyn TableProvider>> {
        let inner = self.inner.call_with_args(args)?;
        Ok(Arc::new(ScopedTable::new(
            inner,
            self.catalog.clone(),
            Frame::InForce,
        )?))
    }
}

/// `__row_scope(unit_code, period)`: whether the row is in the scope.
#[derive(Debug)]
struct RowScope {
    units: UnitScope,
    catalog: Arc<Catalog>,
    frame: Frame,
    signature: Signature,
}

impl RowScope {
    fn new(units: UnitScope, catalog: Arc<Catalog>, frame: Frame) -> Self {
        RowScope {
            units,
            catalog,
            frame,
            signature: Signature::any(2, Volatility::Stable),
        }
    }

    /// The hierarchy version rows of `period` belong to.
    fn version(&self, period: &str) -> Option<usize> {
        let versions = self.catalog.hierarchies().versions().len();
        match self.frame {
            Frame::Current => versions.checked_sub(1),
            Frame::InForce => {
                let period = Period::from_str(period).ok()?;
                self.catalog.hierarchies().index_for(period.last_day())
            }
        }
    }
}

impl PartialEq for RowScope {
    fn eq(&self, other: &Self) -> bool {
        self.units == other.units
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.frame == other.frame
    }
}

impl Eq for RowScope {}

impl Hash for RowScope {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.frame.hash(state);
        Arc::as_ptr(&self.catalog).hash(state);
    }
}

fn text(value: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = cast(&value.to_array(rows)?, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(rows)))
}

impl ScalarUDFImpl for RowScope {
    fn name(&self) -> &str {
        "__row_scope"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [unit, period] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "__row_scope takes two arguments".into(),
            ));
        };
        let (unit, period) = (text(unit, rows)?, text(period, rows)?);
        let mut versions: HashMap<&str, Option<usize>> = HashMap::new();
        let visible: BooleanArray = (0..rows)
            .map(|i| {
                if unit.is_null(i) || period.is_null(i) {
                    return Some(false);
                }
                let p = period.value(i);
                let version = *versions.entry(p).or_insert_with(|| self.version(p));
                Some(version.is_some_and(|v| self.units.sees(v, unit.value(i))))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(visible) as ArrayRef))
    }
}

/// `audit_log`: the audit trail, for admins only.
#[derive(Debug)]
struct AuditTable {
    log: AuditLog,
}

fn audit_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("event", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("client", DataType::Utf8, true),
        Field::new("unit_code", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("detail", DataType::Utf8, false),
    ]))
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        audit_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let access = current()?;
        if !access.is_admin() {
            return Err(denied(format!(
                "only admins may read audit_log (role {} is {})",
                access.user(),
                access
                    .grant()
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "without a role".into())
            )));
        }
        let records = self
            .log
            .read_all()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let at: TimestampMicrosecondArray = records
            .iter()
            .map(|r| {
                chrono::DateTime::parse_from_rfc3339(&r.at)
                    .ok()
                    .map(|t| t.timestamp_micros())
            })
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(at),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.event.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.user.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.client.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.unit.as_deref()),
            )),
            Arc::new(UInt64Array::from_iter(records.iter().map(|r| r.rows))),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.detail.as_str()),
            )),
        ];
        let batch = RecordBatch::try_new(audit_schema(), columns)?;
        MemTable::try_new(audit_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
