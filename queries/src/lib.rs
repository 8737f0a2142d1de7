//! The SQL surface of the warehouse: what a psql user, a BI tool or an ETL
//! job sees.
//!
//! | table | what |
//! | --- | --- |
//! | `reports` | the current value per (unit, period, indicator): corrections applied |
//! | `reports_history` | every submitted value, with who sent it and when |
//! | `reports_as_of(moment)` | `reports` as it stood at a past moment |
//! | `units` | units per hierarchy version, with their ancestors per level |
//! | `unit_ancestors` | (unit, ancestor, depth) pairs per version, for roll-ups |
//! | `unit_changes` | old ward -> new ward mapping of a reform |
//! | `rollup` | every indicator at every level and period type, by its rules, along the hierarchy in force |
//! | `rollup_current` | the same along the newest hierarchy, comparable across reforms |
//! | `report_status` | per (unit, period, form) the schedule expects: received, on time, late, missing |
//! | `completeness` | `report_status` added up to every ancestor |
//! | `report_forms` | the schedule: forms, owing level, period type, deadline rule |
//! | `indicators` | the indicator catalog and its aggregation rules |
//! | `periods` | months, quarters, half-years, years with their spans |
//!
//! The catalog tables are in memory (they are small and change only with
//! the catalog files); the report tables read the Delta table live.

mod as_of;
mod functions;
mod latest;
mod live;
mod rollup;
mod status;

use std::sync::Arc;

use baocao_catalog::{Catalog, tables};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

pub use functions::InvalidArgument;
pub use latest::LatestReports;
pub use live::LiveDeltaTable;
pub use rollup::{Frame, Rollup, RollupExec};
pub use status::{Status, StatusView, today};

/// Every table `register` adds. What each shows is fixed by the version of
/// the Delta table `register` returns and the date in Hanoi (`today`): the
/// report tables read the table, `report_status` and `completeness` judge
/// deadlines by the date, and the catalog tables never change while the
/// server runs.
pub const TABLES: &[&str] = &[
    "units",
    "unit_ancestors",
    "unit_changes",
    "indicators",
    "periods",
    "report_forms",
    "reports",
    "reports_history",
    "rollup",
    "rollup_current",
    "report_status",
    "completeness",
];

/// The years the `periods` table lists.
pub const PERIOD_YEARS: std::ops::RangeInclusive<i32> = 2000..=2050;

fn catalog_err(e: baocao_catalog::CatalogError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn mem(batch: datafusion::arrow::array::RecordBatch) -> Result<Arc<MemTable>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

/// Registers the catalog tables and the report tables on `ctx`. The report
/// tables keep computed partitions in memory within `cache_bytes` (half
/// for `reports`' latest rows, a quarter for the arrivals of
/// `report_status` and `completeness`, a quarter for the roll-ups' cells).
///
/// Returns the Delta table every report table reads: its newest version
/// is what a query planned now sees of them all. The catalog tables never
/// change while the server runs.
pub async fn register(
    ctx: &SessionContext,
    catalog: &Catalog,
    reports: DeltaTable,
    cache_bytes: usize,
) -> Result<Arc<LiveDeltaTable>> {
    ctx.register_table("units", mem(tables::units(catalog).map_err(catalog_err)?)?)?;
    ctx.register_table(
        "unit_ancestors",
        mem(tables::unit_ancestors(catalog).map_err(catalog_err)?)?,
    )?;
    ctx.register_table(
        "unit_changes",
        mem(tables::unit_changes(catalog).map_err(catalog_err)?)?,
    )?;
    ctx.register_table(
        "indicators",
        mem(tables::indicators(catalog).map_err(catalog_err)?)?,
    )?;
    ctx.register_table(
        "periods",
        mem(tables::periods(PERIOD_YEARS).map_err(catalog_err)?)?,
    )?;
    let history = Arc::new(LiveDeltaTable::open(reports).await?);
    // The budget: half for each period's latest rows, a quarter for the
    // arrivals, a quarter for the roll-ups' cells (one memo for both
    // frames, so that the one in use may have it all).
    let latest = Arc::new(LatestReports::live(history.clone(), cache_bytes / 2)?);
    let cells = Arc::new(live::PartitionMemo::new(cache_bytes / 4));
    let shared = Arc::new(catalog.clone());
    ctx.register_table(
        "rollup",
        Arc::new(Rollup::new(
            shared.clone(),
            latest.clone(),
            Frame::InForce,
            cells.clone(),
        )),
    )?;
    let shared_for_functions = shared.clone();
    ctx.register_table(
        "rollup_current",
        Arc::new(Rollup::new(shared, latest.clone(), Frame::Current, cells)),
    )?;
    ctx.register_table("reports", latest)?;
    let arrivals = Arc::new(status::ArrivalsCache::new(
        history.clone(),
        shared_for_functions.clone(),
        cache_bytes / 4,
    ));
    ctx.register_table(
        "report_status",
        Arc::new(Status::new(
            shared_for_functions.clone(),
            arrivals.clone(),
            StatusView::ReportStatus,
        )),
    )?;
    ctx.register_table(
        "completeness",
        Arc::new(Status::new(
            shared_for_functions.clone(),
            arrivals,
            StatusView::Completeness,
        )),
    )?;
    ctx.register_table(
        "report_forms",
        mem(tables::forms(catalog).map_err(catalog_err)?)?,
    )?;
    for f in functions::all(shared_for_functions) {
        ctx.register_udf(f);
    }
    ctx.register_udtf(
        "reports_as_of",
        Arc::new(as_of::ReportsAsOf::new(history.clone())),
    );
    ctx.register_table("reports_history", history.clone())?;
    Ok(history)
}
