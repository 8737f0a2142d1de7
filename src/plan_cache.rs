//! Physical plans of queries that come again, kept while nothing they
//! depend on changes.
//!
//! Planning a short query costs more than running it: DataFusion's logical
//! optimiser and physical planner take about 1 ms of a 1.4 ms lookup on a
//! district's wards (`EXPLAIN ANALYZE` and `perf`, see the README). A
//! dashboard, a report form or a driver's prepared statement sends the same
//! query again and again, so its physical plan is kept here and run again,
//! like PostgreSQL's cached plans of prepared statements.
//!
//! A kept plan is run only when it is exactly the plan the query would get
//! now:
//!
//! - the same query: the key is the query's logical plan as the SQL planner
//!   made it, its parameters' values, the session's settings and functions
//!   substituted (`LogicalPlan` is compared whole);
//! - the same data: every table it reads is one of the warehouse's
//!   (`baocao_queries::TABLES`), whose content is fixed by the version of
//!   the reports' Delta table and the date in Hanoi (by which
//!   `report_status` judges deadlines; the catalog tables never change
//!   while the server runs); the cache holds plans of one version and one
//!   date, and empties when a newer one is seen, so a commit is visible to
//!   the next query as before, and a report becomes missing at midnight;
//! - the same rows for the session: the plans of sessions whose read scope
//!   differs are apart (`row_scope` puts the scope into the plan);
//! - the same engine settings: the plans of one `ConfigOptions` (nothing
//!   changes the engine's options while the server runs, but should
//!   anything do so, DataFusion makes new ones, and the plans go);
//! - nothing that changes by itself: no function that is not immutable
//!   (`now()` is folded into the plan by the optimiser), no placeholder, no
//!   variable, no table function (not a warehouse table: its arguments are
//!   evaluated when planned);
//! - nothing a reset copy would share with another run: no scalar subquery
//!   (its `ScalarSubqueryExec` shares its results with the expressions of
//!   its input, which a reset does not rebuild).
//!
//! A plan is reset before each run (`reset_plan_states`: fresh operator
//! state), so sessions may run one plan at once. The plans that are kept are
//! made without dynamic filters: a top-k or join pushes its filter into the
//! scan below it, and a reset rebuilds the operator's filter but not the
//! scan's copy, which would still hold the last run's bound.
//!
//! Memory: at most `ENTRIES` plans holding `BYTES` of in-memory rows (the
//! warehouse's tables hand their rows to the plan) together, least
//! recently used out first, and no plan holding more than `PLAN_BYTES`.
//! The rows are mostly slices of the tables' own cached partitions, which
//! a slice keeps whole while the plan is kept; all go when a new version
//! is seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use baocao_access::Access;
use baocao_queries::{LiveDeltaTable, RollupExec};
use datafusion::common::TableReference;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;

/// How many plans are kept.
const ENTRIES: usize = 256;

/// The most in-memory rows, in bytes, a kept plan may hold.
const PLAN_BYTES: usize = 4 << 20;

/// The most in-memory rows, in bytes, the kept plans hold together.
const BYTES: usize = 64 << 20;

/// The physical plans of queries run before, for the whole server.
pub struct PlanCache {
    /// The table whose version fixes what every warehouse table shows.
    reports: Arc<LiveDeltaTable>,
    inner: Mutex<Kept>,
}

/// What the plans kept were made at.
#[derive(Clone)]
struct Epoch {
    version: Option<u64>,
    today: chrono::NaiveDate,
    /// Held, so that its address cannot be another's while it is kept:
    /// DataFusion copies options on write while they are shared.
    config: Arc<ConfigOptions>,
}

impl Epoch {
    fn same(&self, other: &Epoch) -> bool {
        self.version == other.version
            && self.today == other.today
            && Arc::ptr_eq(&self.config, &other.config)
    }
}

#[derive(Default)]
struct Kept {
    epoch: Option<Epoch>,
    /// By the hash of the logical plan.
    plans: HashMap<u64, Vec<Entry>>,
    count: usize,
    /// The in-memory rows of the plans (`rows_bytes`).
    bytes: usize,
    clock: u64,
    hits: u64,
}

struct Entry {
    plan: LogicalPlan,
    access: Arc<Access>,
    physical: Arc<dyn ExecutionPlan>,
    bytes: usize,
    used: u64,
}

/// A query's turn at the cache.
pub enum Lookup {
    /// The kept plan, ready to run.
    Hit(Arc<dyn ExecutionPlan>),
    /// Plan it; with a ticket, the plan may be kept.
    Miss(Option<Box<Ticket>>),
}

/// What a plan made after a miss is kept under.
pub struct Ticket {
    hash: u64,
    plan: LogicalPlan,
    access: Arc<Access>,
    epoch: Epoch,
}

impl PlanCache {
    pub fn new(reports: Arc<LiveDeltaTable>) -> PlanCache {
        PlanCache {
            reports,
            inner: Mutex::new(Kept::default()),
        }
    }

    /// The kept plan for `plan`, run by a session with `access` on
    /// `state`, if there is one for now; else whether the plan made may
    /// be kept. Without `access` (or outside a session) nothing is kept.
    pub async fn lookup(
        &self,
        plan: &LogicalPlan,
        access: Option<Arc<Access>>,
        state: &SessionState,
    ) -> Result<Lookup> {
        let Some(access) = access else {
            return Ok(Lookup::Miss(None));
        };
        if !keepable(plan) {
            return Ok(Lookup::Miss(None));
        }
        let epoch = Epoch {
            version: self.reports.newest_version(state).await?,
            today: baocao_queries::today(),
            config: state.config_options().clone(),
        };
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(plan);
        let Ok(mut kept) = self.inner.lock() else {
            return Ok(Lookup::Miss(None));
        };
        match &kept.epoch {
            Some(current) if current.same(&epoch) => {}
            // Versions and dates only grow: a statement that read older
            // ones than another already saw neither uses nor keeps plans.
            Some(current)
                if Arc::ptr_eq(&current.config, &epoch.config)
                    && (current.version > epoch.version || current.today > epoch.today) =>
            {
                return Ok(Lookup::Miss(None));
            }
            _ => {
                kept.plans.clear();
                kept.count = 0;
                kept.bytes = 0;
                kept.epoch = Some(epoch.clone());
            }
        }
        kept.clock += 1;
        let clock = kept.clock;
        let found = kept.plans.get_mut(&hash).and_then(|entries| {
            entries
                .iter_mut()
                .find(|e| same_scope(&e.access, &access) && e.plan == *plan)
        });
        if let Some(entry) = found {
            entry.used = clock;
            let physical = entry.physical.clone();
            kept.hits += 1;
            tracing::debug!("plan cache: hit ({} so far)", kept.hits);
            drop(kept);
            return Ok(Lookup::Hit(reset_plan_states(physical)?));
        }
        Ok(Lookup::Miss(Some(Box::new(Ticket {
            hash,
            plan: plan.clone(),
            access,
            epoch,
        }))))
    }

    /// Keeps `physical`, made for the ticket's plan on `state`, unless a
    /// newer version landed or the date changed while it was planned (its
    /// scans may have read either) or it holds too many rows.
    pub async fn keep(
        &self,
        ticket: Box<Ticket>,
        physical: &Arc<dyn ExecutionPlan>,
        state: &SessionState,
    ) -> Result<()> {
        if self.reports.newest_version(state).await? != ticket.epoch.version
            || baocao_queries::today() != ticket.epoch.today
        {
            return Ok(());
        }
        let bytes = rows_bytes(physical);
        if bytes > PLAN_BYTES {
            return Ok(());
        }
        let Ok(mut kept) = self.inner.lock() else {
            return Ok(());
        };
        if !kept.epoch.as_ref().is_some_and(|e| e.same(&ticket.epoch)) {
            return Ok(());
        }
        let duplicate = kept.plans.get(&ticket.hash).is_some_and(|entries| {
            entries
                .iter()
                .any(|e| same_scope(&e.access, &ticket.access) && e.plan == ticket.plan)
        });
        if duplicate {
            return Ok(());
        }
        while kept.count > 0 && (kept.count >= ENTRIES || kept.bytes + bytes > BYTES) {
            kept.evict_oldest();
        }
        kept.clock += 1;
        let used = kept.clock;
        let Ticket {
            hash, plan, access, ..
        } = *ticket;
        kept.plans.entry(hash).or_default().push(Entry {
            plan,
            access,
            // Kept as it was made; every run gets a reset copy.
            physical: physical.clone(),
            bytes,
            used,
        });
        kept.count += 1;
        kept.bytes += bytes;
        tracing::debug!("plan cache: kept a plan ({} in all)", kept.count);
        Ok(())
    }
}

impl Kept {
    fn evict_oldest(&mut self) {
        let oldest = self
            .plans
            .iter()
            .flat_map(|(hash, entries)| {
                entries
                    .iter()
                    .enumerate()
                    .map(move |(i, e)| (e.used, *hash, i))
            })
            .min();
        let Some((_, hash, i)) = oldest else {
            return;
        };
        if let Some(entries) = self.plans.get_mut(&hash) {
            let gone = entries.swap_remove(i);
            if entries.is_empty() {
                self.plans.remove(&hash);
            }
            self.count -= 1;
            self.bytes -= gone.bytes;
        }
    }
}

/// Whether sessions with `a` and `b` read the same rows.
fn same_scope(a: &Arc<Access>, b: &Arc<Access>) -> bool {
    Arc::ptr_eq(a, b) || a.read_scope() == b.read_scope()
}

/// `state` as a plan to be kept is made on: without dynamic filters (see
/// the module's documentation).
pub fn for_keeping(mut state: SessionState) -> SessionState {
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    state
}

/// Whether the physical plan of `plan` depends only on what the cache
/// compares: it reads the warehouse's tables only, and calls no function
/// whose value may change between runs.
fn keepable(plan: &LogicalPlan) -> bool {
    let mut keepable = true;
    let _ = plan.apply_with_subqueries(|node| {
        let node_ok = match node {
            LogicalPlan::TableScan(scan) => warehouse_table(&scan.table_name),
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Repartition(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Unnest(_) => true,
            // Statements, DDL, DML, EXPLAIN, recursive queries, extensions.
            _ => false,
        };
        if !node_ok {
            keepable = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                let fixed = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::AggregateFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::ScalarVariable(..) | Expr::Placeholder(_) => false,
                    // Planned as a `ScalarSubqueryExec`, whose results every
                    // reset copy shares with the original's expressions:
                    // two sessions running copies at once would mix them.
                    Expr::ScalarSubquery(_) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    keepable = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    keepable
}

/// Whether `name` is one of the warehouse's tables, as the SQL planner
/// resolved it.
fn warehouse_table(name: &TableReference) -> bool {
    let (catalog, schema) = match name {
        TableReference::Bare { .. } => (None, None),
        TableReference::Partial { schema, .. } => (None, Some(schema.as_ref())),
        TableReference::Full {
            catalog, schema, ..
        } => (Some(catalog.as_ref()), Some(schema.as_ref())),
    };
    catalog.is_none_or(|c| c == crate::server::DATABASE)
        && schema.is_none_or(|s| s == crate::server::SCHEMA)
        && baocao_queries::TABLES.contains(&name.table())
}

/// The bytes of the rows a physical plan holds in memory (as its slices
/// count them), and of the roll-up cells its scans hold.
fn rows_bytes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut bytes = 0;
    let _ = plan.apply(|node| {
        if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(memory) = source.data_source().downcast_ref::<MemorySourceConfig>()
        {
            bytes += memory
                .partitions()
                .iter()
                .flatten()
                .flat_map(|batch| batch.columns())
                .map(|column| column.to_data().get_slice_memory_size().unwrap_or(0))
                .sum::<usize>();
        }
        if let Some(rollup) = node.downcast_ref::<RollupExec>() {
            bytes += rollup.held_bytes();
        }
        Ok(TreeNodeRecursion::Continue)
    });
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(version: u64, day: u32, config: &Arc<ConfigOptions>) -> Epoch {
        Epoch {
            version: Some(version),
            today: chrono::NaiveDate::from_ymd_opt(2025, 7, day).unwrap_or_default(),
            config: config.clone(),
        }
    }

    #[test]
    fn plans_are_of_one_version_date_and_options() {
        let config = Arc::new(ConfigOptions::default());
        let same_values = Arc::new(ConfigOptions::default());
        let kept = epoch(7, 5, &config);
        assert!(kept.same(&epoch(7, 5, &config)));
        // A commit, midnight in Hanoi (a pending report becomes missing),
        // other options.
        assert!(!kept.same(&epoch(8, 5, &config)));
        assert!(!kept.same(&epoch(7, 6, &config)));
        assert!(!kept.same(&epoch(7, 5, &same_values)));
    }
}
