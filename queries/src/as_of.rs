//! `reports_as_of(moment)`: the reports as they stood at a past moment —
//! the latest value per key among the submissions made up to then — so the
//! city can see exactly what it saw at a deadline.
//!
//! `moment` is a timestamp (`'2024-08-20 17:00:00'`, UTC unless it carries
//! an offset such as `+07`) or a date, meaning the end of that day (UTC).

use std::sync::Arc;

use async_trait::async_trait;
use baocao_catalog::report::SUBMITTED_AT;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;

use crate::LatestReports;

/// The table function.
#[derive(Debug)]
pub struct ReportsAsOf {
    history: Arc<dyn TableProvider>,
}

impl ReportsAsOf {
    pub fn new(history: Arc<dyn TableProvider>) -> Self {
        ReportsAsOf { history }
    }
}

const USAGE: &str = "reports_as_of takes one argument, a moment such as '2024-08-20 17:00:00', '2024-08-20 17:00:00+07' or '2024-08-20' (the end of that day)";

/// Parses the moment into microseconds since the epoch.
fn moment(e: &Expr) -> Result<i64> {
    let text = match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => s.clone(),
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), _), _) => return Ok(*v),
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(v), _), _) => return Ok(v / 1000),
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => return Ok(v * 1000),
        Expr::Literal(ScalarValue::TimestampSecond(Some(v), _), _) => return Ok(v * 1_000_000),
        Expr::Cast(c) => return moment(&c.expr),
        _ => return plan_err!("{USAGE}"),
    };
    let t = text.trim();
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.with_timezone(&Utc).timestamp_micros());
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Utc.from_utc_datetime(&d).timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let end = d
            .succ_opt()
            .unwrap_or(d)
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default();
        return Ok(Utc.from_utc_datetime(&end).timestamp_micros() - 1);
    }
    plan_err!("'{t}' is not a moment: {USAGE}")
}

impl TableFunctionImpl for ReportsAsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [arg] = args.exprs() else {
            return plan_err!("{USAGE}");
        };
        let until = moment(arg)?;
        let history = Arc::new(HistoryUntil {
            history: self.history.clone(),
            until,
        });
        Ok(Arc::new(LatestReports::new(history)?))
    }
}

/// The history restricted to submissions made up to a moment.
#[derive(Debug)]
struct HistoryUntil {
    history: Arc<dyn TableProvider>,
    until: i64,
}

#[async_trait]
impl TableProvider for HistoryUntil {
    fn schema(&self) -> SchemaRef {
        self.history.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Applied below our own filter, on the same rows: exact.
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut plan =
            LogicalPlanBuilder::scan(
                "reports_history",
                provider_as_source(self.history.clone()),
                None,
            )?
            .filter(col(SUBMITTED_AT).lt_eq(lit(
                ScalarValue::TimestampMicrosecond(Some(self.until), Some("UTC".into())),
            )))?;
        for f in filters {
            plan = plan.filter(crate::latest::unqualify(f.clone())?)?;
        }
        if let Some(p) = projection {
            let schema = self.history.schema();
            plan = plan.project(p.iter().map(|i| col(schema.field(*i).name())))?;
        }
        if let Some(n) = limit {
            plan = plan.limit(0, Some(n))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}
