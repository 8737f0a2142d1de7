//! `reports`: the current value of every (unit, period, indicator) — the
//! latest submission wins, so a correction supersedes what it corrects.
//!
//! Written as a table provider over `reports_history` rather than a view so
//! that filters on the key columns are applied *below* the "latest per key"
//! step, where they prune partitions and files; a filter on another column
//! (value, submitted_at) must be applied after it and is left to DataFusion.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use baocao_catalog::report::{
    INDICATOR_CODE, KEY, PERIOD, SUBMISSION_ID, SUBMITTED_AT, SUBMITTED_BY, UNIT_CODE, VALUE,
    WITHDRAWN,
};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StringViewArray,
    StringViewBuilder, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{
    cast, concat_batches, filter_record_batch, sort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::functions_aggregate::expr_fn::last_value;
use datafusion::logical_expr::{
    Expr, LogicalPlanBuilder, TableProviderFilterPushDown, col, lit, when,
};
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::live::{LiveDeltaTable, PERIODS_PER_PASS, PartitionMemo};
use crate::rollup::{Wanted, column_values_for, period_comparison};

/// Output columns, in order.
const COLUMNS: [&str; 7] = [
    UNIT_CODE,
    PERIOD,
    INDICATOR_CODE,
    VALUE,
    SUBMITTED_AT,
    SUBMITTED_BY,
    SUBMISSION_ID,
];

/// The latest value per key of a history table.
#[derive(Debug)]
pub struct LatestReports {
    history: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Per period, the latest rows computed at a partition identity; only
    /// for the live table (`reports_as_of` computes afresh).
    cache: Option<PartitionCache>,
}

/// The latest rows of each period partition, kept while the partition's
/// files are unchanged: a query computes only the partitions that changed
/// since (a commit touches one or a few periods), and reads the others
/// from memory. Exact by construction: a partition's rows are a function
/// of its files (see `live::Partitions`).
struct PartitionCache {
    live: Arc<LiveDeltaTable>,
    entries: PartitionMemo<Partition>,
}

/// One period's latest rows, ordered by indicator, with where each
/// indicator's rows are and which rows each unit has: a query naming
/// indicators takes slices, one naming units takes their rows.
struct Partition {
    rows: RecordBatch,
    by_indicator: HashMap<String, (usize, usize)>,
    by_unit: HashMap<String, Vec<u32>>,
}

/// The key values a query names, which choose a partition's rows.
struct Named<'a> {
    indicators: Option<&'a BTreeSet<String>>,
    units: Option<&'a BTreeSet<String>>,
}

impl Partition {
    fn new(rows: RecordBatch) -> Result<Partition> {
        let indicators = cast(rows.column(2), &DataType::Utf8)?;
        let order = sort_to_indices(&indicators, None, None)?;
        // Taken views still point into the buffers of every period computed
        // in the same pass: copy this period's strings out, so that it holds
        // (and its memory budget counts) its own data only.
        let rows = own_text(&take_record_batch(&rows, &order)?)?;
        let indicators = cast(rows.column(2), &DataType::Utf8)?;
        let mut by_indicator: HashMap<String, (usize, usize)> = HashMap::new();
        if let Some(codes) = indicators.as_any().downcast_ref::<StringArray>() {
            for (i, code) in codes.iter().enumerate() {
                let Some(code) = code else { continue };
                by_indicator
                    .entry(code.to_string())
                    .and_modify(|(_, len)| *len += 1)
                    .or_insert((i, 1));
            }
        }
        let units = cast(rows.column(0), &DataType::Utf8)?;
        let mut by_unit: HashMap<String, Vec<u32>> = HashMap::new();
        if let Some(codes) = units.as_any().downcast_ref::<StringArray>() {
            for (i, code) in codes.iter().enumerate() {
                let (Some(code), Ok(i)) = (code, u32::try_from(i)) else {
                    continue;
                };
                match by_unit.get_mut(code) {
                    Some(rows) => rows.push(i),
                    None => {
                        by_unit.insert(code.to_string(), vec![i]);
                    }
                }
            }
        }
        Ok(Partition {
            rows,
            by_indicator,
            by_unit,
        })
    }

    /// About the bytes the partition holds.
    fn bytes(&self) -> usize {
        let index: usize = self
            .by_unit
            .iter()
            .map(|(u, rows)| u.len() + 4 * rows.len() + 64)
            .sum();
        self.rows.get_array_memory_size() + index + 64 * self.by_indicator.len()
    }

    /// The rows of the named units and indicators (all when not named), as
    /// one batch: many small batches would cost more downstream than one copy.
    fn rows(&self, named: &Named<'_>) -> Result<RecordBatch> {
        if let Some(units) = named.units {
            return self.rows_of_units(units, named.indicators);
        }
        let Some(codes) = named.indicators else {
            return Ok(self.rows.clone());
        };
        if self.by_indicator.keys().all(|c| codes.contains(c)) {
            return Ok(self.rows.clone());
        }
        let slices: Vec<RecordBatch> = codes
            .iter()
            .filter_map(|c| self.by_indicator.get(c))
            .map(|(offset, len)| self.rows.slice(*offset, *len))
            .collect();
        match slices.as_slice() {
            [one] => Ok(one.clone()),
            _ => Ok(concat_batches(&self.rows.schema(), &slices)?),
        }
    }

    /// The rows of `units`, of `indicators` only when named: a point
    /// lookup reads a unit's rows, not the whole period.
    fn rows_of_units(
        &self,
        units: &BTreeSet<String>,
        indicators: Option<&BTreeSet<String>>,
    ) -> Result<RecordBatch> {
        let ranges: Option<Vec<(usize, usize)>> = indicators.map(|codes| {
            codes
                .iter()
                .filter_map(|c| self.by_indicator.get(c).copied())
                .collect()
        });
        let carried = |row: u32| {
            ranges.as_ref().is_none_or(|ranges| {
                let row = row as usize;
                ranges
                    .iter()
                    .any(|(offset, len)| (*offset..offset + len).contains(&row))
            })
        };
        let mut rows: Vec<u32> = units
            .iter()
            .filter_map(|u| self.by_unit.get(u))
            .flatten()
            .copied()
            .filter(|r| carried(*r))
            .collect();
        // In the partition's order (by indicator), as a scan would give.
        rows.sort_unstable();
        Ok(take_record_batch(&self.rows, &UInt32Array::from(rows))?)
    }
}

impl std::fmt::Debug for PartitionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionCache").finish()
    }
}

impl LatestReports {
    /// `reports` over the live table, with the partition cache holding
    /// about `budget` bytes; past it, the least recently used periods are
    /// computed again when asked for.
    pub fn live(history: Arc<LiveDeltaTable>, budget: usize) -> Result<Self> {
        let mut latest = Self::new(history.clone())?;
        latest.cache = Some(PartitionCache {
            live: history,
            entries: PartitionMemo::new(budget),
        });
        Ok(latest)
    }

    /// The partition identities of the newest version, for a live table
    /// (`None` for a table read as of a moment, which keeps nothing).
    pub(crate) async fn identities(
        &self,
        state: &dyn Session,
    ) -> Result<Option<Arc<HashMap<String, u64>>>> {
        match &self.cache {
            Some(cache) => Ok(Some(cache.live.partitions(state).await?.identities)),
            None => Ok(None),
        }
    }

    pub fn new(history: Arc<dyn TableProvider>) -> Result<Self> {
        let h = history.schema();
        // The key columns keep their nullability; the others come out of an
        // aggregate, which DataFusion always declares nullable.
        let fields = COLUMNS
            .iter()
            .map(|c| {
                h.field_with_name(c)
                    .map(|f| f.clone().with_nullable(f.is_nullable() || !KEY.contains(c)))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(LatestReports {
            history,
            schema: Arc::new(Schema::new(fields)),
            cache: None,
        })
    }

    /// The latest rows of `periods`, each from memory when its partition
    /// is unchanged, computed otherwise; in the order of `periods`.
    async fn cached_batches(
        &self,
        cache: &PartitionCache,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<Vec<RecordBatch>> {
        let parts = cache.live.partitions(state).await?;
        let mut wanted = parts.periods(Wanted::from_filters_on(filters, &[PERIOD]).get(PERIOD));
        // Every row of a partition has its period: a comparison of the
        // period with a literal keeps or drops the partition whole.
        wanted.retain(|p| {
            filters
                .iter()
                .all(|f| period_comparison(f, p).unwrap_or(true))
        });
        let keys = Wanted::from_filters_on(filters, &[INDICATOR_CODE, UNIT_CODE]);
        let named = Named {
            indicators: keys.get(INDICATOR_CODE),
            units: keys.get(UNIT_CODE),
        };
        let (found, missing) = cache.entries.split(&parts, wanted.clone());
        // Each partition is cut to the named rows as soon as it is had, so
        // that a scan of many months holds their named rows, not every
        // month's partition (the memo keeps only what its budget holds).
        let mut rows: HashMap<String, RecordBatch> = found
            .into_iter()
            .map(|(p, partition)| Ok((p, partition.rows(&named)?)))
            .collect::<Result<_>>()?;
        // The first pass computes one period; the next as many as keep a
        // pass within `ROWS_PER_PASS` rows at the size it found, up to
        // `PERIODS_PER_PASS` (a Hanoi period is tens of thousands of rows,
        // the whole country's a million).
        let mut pass = 1;
        let mut rest = missing.as_slice();
        while !rest.is_empty() {
            let (missing, after) = rest.split_at(pass.min(rest.len()));
            rest = after;
            let filter =
                col(PERIOD).in_list(missing.iter().map(|p| lit(p.as_str())).collect(), false);
            let plan = history_plan(parts.provider.clone(), filter)?;
            let physical = state.create_physical_plan(&plan).await?;
            let rows_schema = physical.schema();
            let batches = collect(physical, state.task_ctx()).await?;
            let submitted = concat_batches(&rows_schema, &batches)?;
            drop(batches);
            let all = latest_rows(&submitted, &self.schema)?;
            drop(submitted);
            let per_period = (all.num_rows() / missing.len()).max(1);
            pass = (ROWS_PER_PASS / per_period).clamp(1, PERIODS_PER_PASS);
            let periods = cast(all.column(1), &DataType::Utf8)?;
            let mut computed = Vec::new();
            for p in missing {
                let mask = eq(&periods, &StringArray::new_scalar(p.as_str()))?;
                let batch = filter_record_batch(&all, &mask)?;
                computed.push((p.clone(), Arc::new(Partition::new(batch)?)));
            }
            drop(all);
            for (p, partition) in computed {
                let bytes = partition.bytes();
                let mut named_rows = partition.rows(&named)?;
                // Some of the rows: copied out, since a slice (or a take of
                // text views) would keep the whole partition's buffers after
                // the memo lets it go.
                if named_rows.num_rows() < partition.rows.num_rows() {
                    named_rows = detached(&named_rows)?;
                }
                rows.insert(p.clone(), named_rows);
                cache.entries.keep(&parts, &p, partition, bytes);
            }
        }
        Ok(wanted
            .iter()
            .filter_map(|p| rows.remove(p))
            .filter(|rows| rows.num_rows() > 0)
            .collect())
    }
}

/// A copy of `batch` that shares no buffer with it.
fn detached(batch: &RecordBatch) -> Result<RecordBatch> {
    let all = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    own_text(&take_record_batch(batch, &all)?)
}

/// `batch` with the strings of its text views copied into buffers of its
/// own (a take copies the views, not the strings they point into), each
/// distinct string once: a month's million rows name a hundred indicators
/// and ten thousand submissions, whose codes and ids, longer than a view
/// holds inline, took more than a third of a partition copied row by row.
fn own_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_any().downcast_ref::<StringViewArray>() {
            Some(views) => {
                let mut text =
                    StringViewBuilder::with_capacity(views.len()).with_deduplicate_strings();
                for v in views {
                    text.append_option(v);
                }
                let mut text = text.finish();
                text.shrink_to_fit();
                Arc::new(text) as ArrayRef
            }
            None => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// About how many latest rows one pass of `cached_batches` computes.
const ROWS_PER_PASS: usize = 1_000_000;

/// The submitted rows of `history` that `filter` (key-only) keeps, with
/// the columns `latest_rows` reads.
fn history_plan(
    history: Arc<dyn TableProvider>,
    filter: Expr,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let has_withdrawn = history.schema().column_with_name(WITHDRAWN).is_some();
    let mut columns: Vec<Expr> = COLUMNS.iter().map(|c| col(*c)).collect();
    if has_withdrawn {
        columns.push(col(WITHDRAWN));
    }
    LogicalPlanBuilder::scan("reports_history", provider_as_source(history), None)?
        .filter(unqualify(filter)?)?
        .project(columns)?
        .build()
}

/// The latest row of each key in `submitted` (the rows of whole
/// partitions, from `history_plan`), as `schema` (`COLUMNS`), leaving out
/// keys whose latest submission withdrew them: what `latest_plan`
/// computes, by one hash of the keys instead of DataFusion's ordered
/// aggregation, which held about a kilobyte per key: a month of the whole
/// country (a million keys) took 4.2 s and 1.2 GB at the peak, against
/// 2.4 s and 0.5 GB this way, the scan included. Latest is the greatest (submitted_at, submission_id), a NULL
/// above any value, as `latest_plan` orders them.
fn latest_rows(submitted: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let column = |name: &str| {
        submitted.column_by_name(name).cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("no {name} column"))
        })
    };
    let text = |name: &str| -> Result<StringArray> {
        let a = cast(&column(name)?, &DataType::Utf8)?;
        a.as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!("{name} is not text"))
            })
    };
    let (units, periods, indicators, ids) = (
        text(UNIT_CODE)?,
        text(PERIOD)?,
        text(INDICATOR_CODE)?,
        text(SUBMISSION_ID)?,
    );
    let at = cast(&column(SUBMITTED_AT)?, &DataType::Int64)?;
    let at = at
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("submitted_at".into()))?;
    let withdrawn = match submitted.column_by_name(WITHDRAWN) {
        Some(w) => w.as_any().downcast_ref::<BooleanArray>().cloned(),
        None => None,
    };
    let order = |r: usize| {
        (
            at.is_null(r),
            at.value(r),
            ids.is_null(r),
            if ids.is_null(r) { "" } else { ids.value(r) },
        )
    };
    let mut latest: HashMap<(&str, &str, &str), usize> =
        HashMap::with_capacity(submitted.num_rows());
    for r in 0..submitted.num_rows() {
        if units.is_null(r) || periods.is_null(r) || indicators.is_null(r) {
            continue;
        }
        let key = (units.value(r), periods.value(r), indicators.value(r));
        latest
            .entry(key)
            .and_modify(|best| {
                if order(r) > order(*best) {
                    *best = r;
                }
            })
            .or_insert(r);
    }
    let mut keep: Vec<u32> = latest
        .into_values()
        .filter(|r| {
            !withdrawn
                .as_ref()
                .is_some_and(|w| w.is_valid(*r) && w.value(*r))
        })
        .filter_map(|r| u32::try_from(r).ok())
        .collect();
    keep.sort_unstable();
    let taken = take_record_batch(submitted, &UInt32Array::from(keep))?;
    let columns = COLUMNS
        .iter()
        .map(|c| {
            taken.column_by_name(c).cloned().ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!("no {c} column"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// "Latest per key" over `history`, with `filters` (key-only) below it and
/// the `columns` of `COLUMNS` out.
fn latest_plan(
    history: Arc<dyn TableProvider>,
    filters: &[Expr],
    columns: &[&str],
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let has_withdrawn = history.schema().column_with_name(WITHDRAWN).is_some();
    let mut plan = LogicalPlanBuilder::scan("reports_history", provider_as_source(history), None)?;
    for f in filters {
        // DataFusion only hands us the filters we declared exact: key-only ones.
        plan = plan.filter(unqualify(f.clone())?)?;
    }
    // Latest per key as a hash aggregation (last value in submission
    // order) rather than a sort-based window: the same rows, measured
    // 1.5 to 3 times faster on the demo data. The order (time, then id)
    // is total per key, so every column comes from the same submission.
    let order = || {
        vec![
            col(SUBMITTED_AT).sort(true, false),
            col(SUBMISSION_ID).sort(true, false),
        ]
    };
    // A withdrawal reads as a NULL value, so that one aggregate carries
    // both (a boolean last_value measured three times slower than the
    // float one); a key whose latest submission withdrew it then has no
    // current value and is left out. A table from before withdrawals has
    // no `withdrawn` column.
    let value = if has_withdrawn {
        when(col(WITHDRAWN).is_true(), lit(ScalarValue::Float64(None))).otherwise(col(VALUE))?
    } else {
        col(VALUE)
    };
    let mut latest = vec![last_value(value, order()).alias(VALUE)];
    latest.extend(
        [SUBMITTED_AT, SUBMITTED_BY, SUBMISSION_ID]
            .into_iter()
            .map(|c| last_value(col(c), order()).alias(c)),
    );
    let mut plan = plan.aggregate(KEY.iter().map(|k| col(*k)).collect::<Vec<_>>(), latest)?;
    if has_withdrawn {
        plan = plan.filter(col(VALUE).is_not_null())?;
    }
    plan.project(columns.iter().map(|c| col(*c)))?.build()
}

/// Whether `e` only reads key columns, so that it selects whole keys and
/// commutes with "latest per key".
fn on_key_only(e: &Expr) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| KEY.contains(&c.name.as_str()))
}

pub(crate) fn unqualify(e: Expr) -> Result<Expr> {
    e.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
            c.name,
        )))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for LatestReports {
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
        Ok(filters
            .iter()
            .map(|f| {
                if !on_key_only(f) {
                    TableProviderFilterPushDown::Unsupported
                } else if self.cache.is_none() || answered_by_partitions(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    // The cached rows are already latest per key: DataFusion
                    // applies the filter on them.
                    TableProviderFilterPushDown::Inexact
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
        let Some(cache) = &self.cache else {
            let wanted: Vec<&str> = match projection {
                Some(p) => p.iter().filter_map(|i| COLUMNS.get(*i).copied()).collect(),
                None => COLUMNS.to_vec(),
            };
            let mut plan =
                LogicalPlanBuilder::from(latest_plan(self.history.clone(), filters, &wanted)?);
            if let Some(n) = limit {
                plan = plan.limit(0, Some(n))?;
            }
            return state.create_physical_plan(&plan.build()?).await;
        };
        // The partitions' rows the filters name, straight to execution:
        // the filters this chose by are exact, and DataFusion applies the
        // others above (it passes a limit only when there are none).
        let batches = self.cached_batches(cache, state, filters).await?;
        let rows: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?;
        Ok(match limit {
            Some(n) => Arc::new(GlobalLimitExec::new(rows, 0, Some(n))),
            None => rows,
        })
    }
}

/// Whether the cached partitions answer `f` exactly: a list of periods,
/// indicators or units chooses rows, and a comparison of the period keeps
/// or drops a partition whole.
fn answered_by_partitions(f: &Expr) -> bool {
    column_values_for(f, &[PERIOD, INDICATOR_CODE, UNIT_CODE]).is_some()
        || period_comparison(f, "").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::error::DataFusionError;

    #[test]
    fn own_text_keeps_each_distinct_string_once_and_every_value() -> Result<()> {
        let ids = [
            "bench-2024-05-00004-0",
            "bench-2024-05-00007-0",
            "bench-2024-05-00010-1",
        ];
        let values: Vec<Option<&str>> = (0..3000)
            .map(|i| (i % 7 != 0).then_some(ids[i % 3]))
            .collect();
        let views: StringViewArray = values.iter().copied().collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "submission_id",
            DataType::Utf8View,
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(views)])?;

        let owned = own_text(&batch)?;
        let text = owned
            .column(0)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .ok_or_else(|| DataFusionError::Internal("not text views".into()))?;
        assert_eq!(text.iter().collect::<Vec<_>>(), values);
        let data: usize = text.data_buffers().iter().map(|b| b.len()).sum();
        assert_eq!(
            data,
            ids.iter().map(|s| s.len()).sum::<usize>(),
            "each distinct string once"
        );
        Ok(())
    }
}
