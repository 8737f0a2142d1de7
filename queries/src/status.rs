//! `report_status` and `completeness`: what each unit owes by the schedule,
//! what arrived, and when.
//!
//! `report_status` has one row per (unit, period, form) that the schedule
//! expects: the owing units of the hierarchy in force in the period, for
//! every period from the first one with data up to the one containing today.
//! A report is *received* when any value of the form's indicators arrived;
//! its timeliness is judged on the first submission, in Hanoi time (UTC+7),
//! against the form's deadline. `completeness` adds those rows up to every
//! ancestor unit. Both read `reports_history` at each query, so a
//! submission changes them at once.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use baocao_catalog::report::{INDICATOR_CODE, PERIOD, SUBMITTED_AT, UNIT_CODE, WITHDRAWN};
use baocao_catalog::{Catalog, Form, Period, Unit};
use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::live::{LiveDeltaTable, PERIODS_PER_PASS, PartitionMemo};
use crate::rollup::{Wanted, narrowing};

/// Which of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusView {
    /// One row per (unit, period, form).
    ReportStatus,
    /// Rolled up to every ancestor.
    Completeness,
}

const FILTER_COLUMNS: [&str; 4] = ["unit_code", "period", "form", "unit_level"];

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn report_status_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("unit_name", DataType::Utf8, false),
        Field::new("unit_level", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("form", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("received", DataType::Boolean, false),
        Field::new("on_time", DataType::Boolean, true),
        Field::new("complete", DataType::Boolean, false),
        Field::new("expected_indicators", DataType::Int64, false),
        Field::new("received_indicators", DataType::Int64, false),
        Field::new("first_submitted_at", ts(), true),
        Field::new("last_submitted_at", ts(), true),
        Field::new("deadline", DataType::Date32, false),
        Field::new("data_from", DataType::Date32, false),
        Field::new("data_to", DataType::Date32, false),
    ]))
}

pub fn completeness_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_code", DataType::Utf8, false),
        Field::new("unit_name", DataType::Utf8, false),
        Field::new("unit_level", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("form", DataType::Utf8, false),
        Field::new("expected", DataType::Int64, false),
        Field::new("received", DataType::Int64, false),
        Field::new("on_time", DataType::Int64, false),
        Field::new("late", DataType::Int64, false),
        Field::new("missing", DataType::Int64, false),
        Field::new("pending", DataType::Int64, false),
        Field::new("completeness_percent", DataType::Float64, true),
        Field::new("on_time_percent", DataType::Float64, true),
    ]))
}

/// unit, name, level, period, form, [expected, received, on_time, late, missing, pending]
type CompletenessRow<'a> = (&'a str, &'a str, &'static str, String, &'a str, [i64; 6]);

/// The table provider of both views.
#[derive(Debug)]
pub struct Status {
    catalog: Arc<Catalog>,
    arrivals: Arc<ArrivalsCache>,
    view: StatusView,
    schema: SchemaRef,
}

impl Status {
    /// One of the two views; both may share `arrivals`.
    pub fn new(catalog: Arc<Catalog>, arrivals: Arc<ArrivalsCache>, view: StatusView) -> Self {
        let schema = match view {
            StatusView::ReportStatus => report_status_schema(),
            StatusView::Completeness => completeness_schema(),
        };
        Status {
            catalog,
            arrivals,
            view,
            schema,
        }
    }
}

/// What one unit sent of one form for one period, withdrawals left out.
#[derive(Debug, Clone, Copy)]
struct Received {
    /// How many of the form's indicators arrived.
    indicators: i64,
    /// The first and last submission time (µs) of any of them.
    first: i64,
    last: i64,
}

/// One period's arrivals: form -> unit -> what arrived. Summed per form
/// when computed, so that a status query does one lookup per expected
/// report rather than one per indicator.
type PeriodArrivals = HashMap<String, HashMap<String, Received>>;

/// Period -> its arrivals.
type Arrivals = HashMap<String, Arc<PeriodArrivals>>;

/// Each period's arrivals, kept while the period's files are unchanged
/// (see `live::Partitions`): a query computes only the periods a commit
/// touched since the last one.
pub struct ArrivalsCache {
    live: Arc<LiveDeltaTable>,
    catalog: Arc<Catalog>,
    entries: PartitionMemo<PeriodArrivals>,
}

/// About what one (form, unit) entry takes in the maps.
const BYTES_PER_ARRIVAL: usize = 96;

impl std::fmt::Debug for ArrivalsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrivalsCache").finish()
    }
}

impl ArrivalsCache {
    /// Arrivals of `catalog`'s forms kept within about `budget` bytes.
    pub fn new(live: Arc<LiveDeltaTable>, catalog: Arc<Catalog>, budget: usize) -> Self {
        ArrivalsCache {
            live,
            catalog,
            entries: PartitionMemo::new(budget),
        }
    }

    /// The arrivals of the wanted periods (every period when none is
    /// named), at the table's newest version.
    async fn get(&self, state: &dyn Session, wanted: &Wanted) -> Result<Arrivals> {
        let parts = self.live.partitions(state).await?;
        let periods: Vec<String> = parts
            .periods(wanted.get("period"))
            .into_iter()
            .filter(|p| wanted.allows("period", p))
            .collect();
        let (mut found, missing) = self.entries.split(&parts, periods);
        if missing.is_empty() {
            return Ok(found);
        }
        let mut computed = Arrivals::new();
        for chunk in missing.chunks(PERIODS_PER_PASS) {
            computed.extend(
                compute_arrivals(state, parts.provider.clone(), &self.catalog, chunk).await?,
            );
        }
        for (p, a) in &computed {
            let arrivals: usize = a.values().map(HashMap::len).sum();
            self.entries
                .keep(&parts, p, a.clone(), arrivals * BYTES_PER_ARRIVAL);
        }
        found.extend(computed);
        Ok(found)
    }
}

/// The arrivals of `periods` for each of `catalog`'s forms, from the history.
async fn compute_arrivals(
    state: &dyn Session,
    history: Arc<dyn TableProvider>,
    catalog: &Catalog,
    periods: &[String],
) -> Result<Arrivals> {
    let mut builder =
        LogicalPlanBuilder::scan("reports_history", provider_as_source(history.clone()), None)?
            .filter(
                col(PERIOD).in_list(periods.iter().map(|p| lit(p.as_str())).collect(), false),
            )?;
    // A withdrawal is not a report.
    if history.schema().column_with_name(WITHDRAWN).is_some() {
        builder = builder.filter(col(WITHDRAWN).is_not_true())?;
    }
    let plan = builder
        .aggregate(
            vec![col(UNIT_CODE), col(PERIOD), col(INDICATOR_CODE)],
            vec![
                min(col(SUBMITTED_AT)).alias("first"),
                max(col(SUBMITTED_AT)).alias("last"),
            ],
        )?
        .build()?;
    let physical = state.create_physical_plan(&plan).await?;
    // Indicator -> the forms carrying it, each once (a form's pushes for
    // one indicator are consecutive).
    let mut forms_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for form in catalog.forms() {
        for i in &form.indicators {
            let forms = forms_of.entry(i.as_str()).or_default();
            if forms.last() != Some(&form.code.as_str()) {
                forms.push(form.code.as_str());
            }
        }
    }
    let mut by_period: HashMap<String, PeriodArrivals> = periods
        .iter()
        .map(|p| {
            let forms = catalog.forms().iter();
            let empty = forms.map(|f| (f.code.clone(), HashMap::new())).collect();
            (p.clone(), empty)
        })
        .collect();
    for b in collect(physical, state.task_ctx()).await? {
        let text = |i: usize| -> Result<StringArray> {
            let a = cast(b.column(i), &DataType::Utf8)?;
            Ok(a.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::new_null(0)))
        };
        let (units, periods, inds) = (text(0)?, text(1)?, text(2)?);
        let micros = |i: usize| -> Result<TimestampMicrosecondArray> {
            let a = cast(
                b.column(i),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            Ok(a.as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .cloned()
                .unwrap_or_else(|| TimestampMicrosecondArray::new_null(0)))
        };
        let (first, last) = (micros(3)?, micros(4)?);
        for r in 0..b.num_rows().min(units.len()).min(first.len()) {
            if units.is_null(r)
                || periods.is_null(r)
                || inds.is_null(r)
                || first.is_null(r)
                || last.is_null(r)
            {
                continue;
            }
            // Rows are distinct per (unit, period, indicator): each counts
            // once for every form carrying the indicator.
            let (Some(period), Some(forms)) = (
                by_period.get_mut(periods.value(r)),
                forms_of.get(inds.value(r)),
            ) else {
                continue;
            };
            let (f, l) = (first.value(r), last.value(r));
            for form in forms {
                let Some(units_of_form) = period.get_mut(*form) else {
                    continue;
                };
                match units_of_form.get_mut(units.value(r)) {
                    Some(got) => {
                        got.indicators += 1;
                        got.first = got.first.min(f);
                        got.last = got.last.max(l);
                    }
                    None => {
                        let got = Received {
                            indicators: 1,
                            first: f,
                            last: l,
                        };
                        units_of_form.insert(units.value(r).to_string(), got);
                    }
                }
            }
        }
    }
    Ok(by_period
        .into_iter()
        .map(|(p, a)| (p, Arc::new(a)))
        .collect())
}

/// Days since 1970-01-01, the Arrow Date32 encoding.
fn days(d: chrono::NaiveDate) -> i32 {
    datafusion::arrow::datatypes::Date32Type::from_naive_date(d)
}

/// Hanoi's clock, for judging deadlines.
fn hanoi() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The date in Hanoi, by which `report_status` and `completeness` judge
/// deadlines (missing or pending) and list periods (up to today's).
pub fn today() -> NaiveDate {
    Utc::now().with_timezone(&hanoi()).date_naive()
}

#[async_trait]
impl TableProvider for Status {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(narrowing(filters, &FILTER_COLUMNS))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = Wanted::from_filters_on(filters, &FILTER_COLUMNS);
        let forms: Vec<&Form> = self
            .catalog
            .forms()
            .iter()
            .filter(|f| wanted.allows("form", &f.code))
            .collect();
        let today = today();
        let arrivals = self.arrivals.get(state, &wanted).await?;
        let rows = self.statuses(&forms, &wanted, &arrivals, today);
        let batch = match self.view {
            StatusView::ReportStatus => status_batch(&rows)?,
            StatusView::Completeness => self.completeness_batch(&rows, &wanted)?,
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// One expected report.
struct StatusRow<'a> {
    unit: &'a Unit,
    level: &'static str,
    period: Period,
    form: &'a Form,
    /// Index of the hierarchy version of the period.
    version: usize,
    received_indicators: i64,
    first: Option<i64>,
    last: Option<i64>,
    deadline: NaiveDate,
    status: &'static str,
}

impl Status {
    /// The periods a form is expected for: the wanted ones, or every one
    /// from the first with data to the one containing today.
    fn periods(
        &self,
        form: &Form,
        wanted: &Wanted,
        arrivals: &Arrivals,
        today: NaiveDate,
    ) -> Vec<Period> {
        if let Some(set) = wanted.get("period") {
            return set
                .iter()
                .filter_map(|p| p.parse::<Period>().ok())
                .filter(|p| p.period_type() == form.period_type && p.start() <= today)
                .filter(|p| wanted.allows("period", &p.to_string()))
                .collect();
        }
        let first = arrivals
            .iter()
            .filter(|(_, forms)| forms.get(&form.code).is_some_and(|u| !u.is_empty()))
            .filter_map(|(p, _)| p.parse::<Period>().ok())
            .filter(|p| p.period_type() == form.period_type)
            .min();
        let Some(first) = first else {
            return Vec::new();
        };
        let now = Period::month_of(today);
        Period::range(form.period_type, first, now)
            .into_iter()
            .filter(|p| p.start() <= today && wanted.allows("period", &p.to_string()))
            .collect()
    }

    fn statuses<'a>(
        &'a self,
        forms: &[&'a Form],
        wanted: &Wanted,
        arrivals: &Arrivals,
        today: NaiveDate,
    ) -> Vec<StatusRow<'a>> {
        let h = self.catalog.hierarchies();
        let mut rows = Vec::new();
        for form in forms {
            for period in self.periods(form, wanted, arrivals, today) {
                let Some(vi) = h.index_for(period.last_day()) else {
                    continue;
                };
                let version = &h.versions()[vi];
                let level = form.owing_level(version);
                let deadline = form.deadline(&period);
                let sent = arrivals
                    .get(&period.to_string())
                    .and_then(|a| a.get(&form.code));
                for unit in version.units().filter(|u| u.level == level) {
                    let code = unit.code.as_str();
                    // In report_status the unit filter is on the owing unit;
                    // completeness filters after rolling up.
                    if self.view == StatusView::ReportStatus
                        && (!wanted.allows("unit_code", code)
                            || !wanted.allows("unit_level", level.as_str()))
                    {
                        continue;
                    }
                    let got = sent.and_then(|units| units.get(code));
                    let received = got.map_or(0, |g| g.indicators);
                    let (first, last) = (got.map(|g| g.first), got.map(|g| g.last));
                    let status = match first {
                        Some(f) => {
                            let day = DateTime::from_timestamp_micros(f)
                                .map(|t| t.with_timezone(&hanoi()).date_naive())
                                .unwrap_or(deadline);
                            if day <= deadline { "on_time" } else { "late" }
                        }
                        None if today > deadline => "missing",
                        None => "pending",
                    };
                    rows.push(StatusRow {
                        unit,
                        level: level.as_str(),
                        period,
                        form,
                        version: vi,
                        received_indicators: received,
                        first,
                        last,
                        deadline,
                        status,
                    });
                }
            }
        }
        rows
    }

    fn completeness_batch(&self, rows: &[StatusRow<'_>], wanted: &Wanted) -> Result<RecordBatch> {
        let h = self.catalog.hierarchies();
        // (unit, period, form) -> (the unit, [expected, received, on_time,
        // late, missing, pending]); only the units the filters keep.
        let mut cells: HashMap<(&str, Period, &str), (&Unit, [i64; 6])> = HashMap::new();
        for r in rows {
            let version = &h.versions()[r.version];
            let kept = version.ancestors(&r.unit.code).filter(|a| {
                wanted.allows("unit_level", a.level.as_str())
                    && wanted.allows("unit_code", a.code.as_str())
            });
            for a in kept {
                let c = cells
                    .entry((a.code.as_str(), r.period, r.form.code.as_str()))
                    .or_insert((a, [0; 6]));
                c.1[0] += 1;
                match r.status {
                    "on_time" => {
                        c.1[1] += 1;
                        c.1[2] += 1;
                    }
                    "late" => {
                        c.1[1] += 1;
                        c.1[3] += 1;
                    }
                    "missing" => c.1[4] += 1,
                    _ => c.1[5] += 1,
                }
            }
        }
        let mut cells: Vec<_> = cells.into_iter().collect();
        cells.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let out: Vec<CompletenessRow> = cells
            .into_iter()
            .map(|((code, period, form), (u, n))| {
                (
                    code,
                    u.name.as_str(),
                    u.level.as_str(),
                    period.to_string(),
                    form,
                    n,
                )
            })
            .collect();
        let pct = |a: i64, b: i64| (b > 0).then(|| (1000.0 * a as f64 / b as f64).round() / 10.0);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                out.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                out.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                out.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                out.iter().map(|r| r.3.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                out.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[0]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[1]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[2]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[3]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[4]).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                out.iter().map(|r| r.5[5]).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                out.iter().map(|r| pct(r.5[1], r.5[0])).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                out.iter().map(|r| pct(r.5[2], r.5[0])).collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(completeness_schema(), columns)?)
    }
}

fn status_batch(rows: &[StatusRow<'_>]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.unit.code.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.unit.name.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.level).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.period.to_string())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.form.code.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.first.is_some()).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|r| match r.status {
                    "on_time" => Some(true),
                    "late" => Some(false),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|r| r.received_indicators == r.form.indicators.len() as i64)
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|r| r.form.indicators.len() as i64)
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|r| r.received_indicators)
                .collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.first).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.last).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from(
            rows.iter().map(|r| days(r.deadline)).collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(
            rows.iter()
                .map(|r| days(r.form.data_window(&r.period).0))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(
            rows.iter()
                .map(|r| days(r.form.data_window(&r.period).1))
                .collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(report_status_schema(), columns)?)
}
