//! `rollup` and `rollup_current`: every indicator at every level and every
//! period type, aggregated by the indicator's own rules.
//!
//! For a target unit U, period P and indicator I the value is computed in
//! three steps, the way DHIS2 applies an aggregation-type pair:
//!
//! 1. **map**: every reported value in P is carried onto the *frame*
//!    hierarchy — the one in force on P's last day (`rollup`) or the newest
//!    one (`rollup_current`). A value reported under an older hierarchy goes
//!    through the ward mapping: a whole old ward into its new ward; a split
//!    old ward to each receiving ward in proportion to that ward's area
//!    (the area of the parts is not published), for additive rules only.
//! 2. **across time**, per reporting unit of the frame: `sum`, `last`
//!    (latest reported sub-period), `average`, `min`, `max`; `none` only
//!    gives the indicator's own period type.
//! 3. **across units**, over the reporting units under U: `sum`,
//!    `average`, `min`, `max`, `count`, `weighted_average` (by the weight
//!    indicator's value in each unit), `ratio` (`scale × Σ numerator /
//!    Σ denominator`, over units that reported both), `none` (the
//!    reporting level only).
//!
//! Filters on `unit_code`, `period`, `indicator_code`, `period_type` and
//! `unit_level` are read from the query before anything is fetched: only
//! the source periods and indicators they need are scanned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use baocao_catalog::report::{INDICATOR_CODE, PERIOD, UNIT_CODE, VALUE};
use baocao_catalog::{
    AcrossTime, AcrossUnits, Catalog, Hierarchies, Indicator, Level, Period, PeriodType,
};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Builder, Float64Array, Float64Builder, Int64Builder, RecordBatch,
    RecordBatchOptions, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    BinaryExpr, Expr, LogicalPlanBuilder, Operator, TableProviderFilterPushDown, col, lit,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Partitioning, PlanProperties};
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::latest::LatestReports;
use crate::live::PartitionMemo;

/// Which hierarchy a period rolls up along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The hierarchy in force on the period's last day.
    InForce,
    /// The newest hierarchy, for series comparable across reforms.
    Current,
}

/// Filterable columns, and the output schema.
const C_UNIT: &str = "unit_code";
const C_LEVEL: &str = "unit_level";
const C_PERIOD: &str = "period";
const C_PTYPE: &str = "period_type";
const C_INDICATOR: &str = "indicator_code";
const FILTERABLE: [&str; 5] = [C_UNIT, C_LEVEL, C_PERIOD, C_PTYPE, C_INDICATOR];

pub fn rollup_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(C_UNIT, DataType::Utf8, false),
        Field::new("unit_name", DataType::Utf8, false),
        Field::new(C_LEVEL, DataType::Utf8, false),
        Field::new(C_PERIOD, DataType::Utf8, false),
        Field::new(C_PTYPE, DataType::Utf8, false),
        Field::new(C_INDICATOR, DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("reporting_units", DataType::Int64, false),
        Field::new("expected_units", DataType::Int64, false),
        Field::new("hierarchy_version", DataType::Date32, false),
    ]))
}

/// The roll-up table provider.
pub struct Rollup {
    catalog: Arc<Catalog>,
    reports: Arc<LatestReports>,
    frame: Frame,
    schema: SchemaRef,
    index: Arc<HashMap<usize, VersionIndex>>,
    /// The rows of each (target period, indicator) cell computed so far,
    /// kept in two parts (see [`Part`]), each with the identity of the
    /// partitions it was computed from (see [`Rollup::cell_identity`]).
    cells: Arc<PartitionMemo<Cell>>,
    /// About how many rows one step of the computation makes (see
    /// `Rollup::cached_rows`).
    step_rows: usize,
}

impl std::fmt::Debug for Rollup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollup")
            .field("frame", &self.frame)
            .finish()
    }
}

impl Rollup {
    /// The roll-up of `reports` in `frame`, keeping computed cells in
    /// `cells` (which both frames may share: each keys its own).
    pub fn new(
        catalog: Arc<Catalog>,
        reports: Arc<LatestReports>,
        frame: Frame,
        cells: Arc<PartitionMemo<Cell>>,
    ) -> Self {
        let step_rows = (cells.budget() / CELL_ROW_BYTES).clamp(1, STEP_ROWS);
        Rollup {
            index: Arc::new(version_index(&catalog)),
            catalog,
            reports,
            frame,
            schema: rollup_schema(),
            cells,
            // A step's cells are kept: a step larger than the budget holds
            // would compute rows that go again before the step ends.
            step_rows,
        }
    }

    /// The key of `part` of the cell of period `p` and indicator `code` in
    /// `cells`.
    fn cell_key(&self, p: &Period, code: &str, part: Part) -> String {
        let frame = match self.frame {
            Frame::InForce => "in_force",
            Frame::Current => "current",
        };
        format!("{frame}/{p}/{code}/{}", part.as_str())
    }

    /// Which parts of a cell hold rows the filters on units and levels
    /// allow: a query of districts needs no ward's rows, and a query of
    /// wards none of their ancestors'.
    fn parts_wanted(&self, wanted: &Wanted) -> Vec<Part> {
        let versions = self.catalog.hierarchies().versions();
        Part::ALL
            .into_iter()
            .filter(|part| {
                let by_level = wanted
                    .get(C_LEVEL)
                    .is_none_or(|levels| levels.iter().any(|l| part.holds_level_named(l)));
                let by_unit = wanted.get(C_UNIT).is_none_or(|units| {
                    units.iter().any(|code| {
                        versions
                            .iter()
                            .filter_map(|v| v.get_str(code))
                            .any(|u| Part::of(u.level) == *part)
                    })
                });
                by_level && by_unit
            })
            .collect()
    }

    /// What a cell of target period `p` is a function of: the files of
    /// every period inside `p` (its source periods of any type), hashed
    /// with their identities; `None` when none of them has data. The
    /// catalog and the hierarchy are fixed for the life of the table.
    fn cell_identity(p: &Period, identities: &HashMap<String, u64>) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        let mut any = false;
        for kind in PeriodType::ALL {
            for sp in source_periods(kind, p) {
                let name = sp.to_string();
                if let Some(id) = identities.get(&name) {
                    any = true;
                    name.hash(&mut hasher);
                    id.hash(&mut hasher);
                }
            }
        }
        any.then(|| hasher.finish())
    }

    /// The rows of `periods` × the wanted indicators, from kept cells
    /// where their partitions are unchanged, computing the others (every
    /// unit's rows; the unit and level filters apply afterwards).
    async fn cached_rows(
        &self,
        state: &dyn Session,
        engine: &Engine<'_>,
        wanted: &Wanted,
        periods: Vec<Period>,
        identities: &HashMap<String, u64>,
        rows: &mut Gather<'_>,
    ) -> Result<()> {
        let parts = self.parts_wanted(wanted);
        if parts.is_empty() {
            return Ok(());
        }
        let targets: Vec<String> = engine
            .target_indicators(wanted)
            .iter()
            .map(|i| i.code.clone())
            .collect();
        let mut found: Vec<Vec<Arc<Cell>>> = Vec::new();
        let mut missing: Vec<(Period, &str, u64)> = Vec::new();
        for p in &periods {
            // No data inside the period: no rows.
            let Some(identity) = Self::cell_identity(p, identities) else {
                continue;
            };
            for code in &targets {
                let kept: Option<Vec<Arc<Cell>>> = parts
                    .iter()
                    .map(|part| self.cells.get(&self.cell_key(p, code, *part), identity))
                    .collect();
                match kept {
                    Some(kept) => found.push(kept),
                    None => missing.push((*p, code.as_str(), identity)),
                }
            }
        }
        tracing::debug!(
            frame = ?self.frame,
            kept = found.len(),
            computed = missing.len(),
            "roll-up cells"
        );
        for kept in found {
            rows.keep(kept);
        }
        // The missing cells are computed a few periods at a time, so that
        // the values read and the rows made for them stay within about
        // `step_rows` (the whole country's 60 months of every indicator
        // would be tens of millions), each period's cells together.
        let per_cell = engine.units().max(1);
        let mut chunk: Vec<(Period, &str, u64)> = Vec::new();
        let mut missing = missing.into_iter().peekable();
        while let Some(cell) = missing.next() {
            let period = cell.0;
            chunk.push(cell);
            let period_ends = missing.peek().is_none_or(|next| next.0 != period);
            if period_ends && (chunk.len() * per_cell >= self.step_rows || missing.peek().is_none())
            {
                let step = std::mem::take(&mut chunk);
                self.compute_cells(state, engine, step, &parts, rows)
                    .await?;
            }
        }
        Ok(())
    }

    /// Computes `cells` (every unit's rows of each period and indicator)
    /// together, keeps the wanted `parts` of each with its identity, and
    /// adds the rows of the wanted units and levels to `rows`. Each cell is
    /// cut as soon as it is computed: a step holds the values it read, the
    /// kept parts, and one cell of every unit's rows.
    async fn compute_cells(
        &self,
        state: &dyn Session,
        engine: &Engine<'_>,
        cells: Vec<(Period, &str, u64)>,
        parts: &[Part],
        rows: &mut Gather<'_>,
    ) -> Result<()> {
        let mut w = Wanted::default();
        w.sets.insert(
            C_PERIOD,
            cells.iter().map(|(p, _, _)| p.to_string()).collect(),
        );
        w.sets.insert(
            C_INDICATOR,
            cells.iter().map(|(_, c, _)| c.to_string()).collect(),
        );
        let plan = engine.plan(&w);
        let data = self.fetch(state, &plan).await?;
        // The step computes every pair of its periods and indicators; only
        // the cells asked for are kept and used.
        let mut asked: HashMap<(Period, String), u64> = cells
            .iter()
            .map(|(p, code, identity)| ((*p, code.to_string()), *identity))
            .collect();
        engine.compute_each(&w, &plan, &data, |cell| {
            let Some(identity) = asked.remove(&(cell.period, cell.indicator.clone())) else {
                return Ok(());
            };
            rows.cut(&cell);
            for part in parts {
                let kept = cell.part(*part, &self.index);
                let key = self.cell_key(&cell.period, &cell.indicator, *part);
                let bytes = kept.bytes();
                self.cells.insert(&key, identity, Arc::new(kept), bytes);
            }
            Ok(())
        })?;
        // Cells without rows are kept too, so that they are not computed again.
        for ((p, code), identity) in asked {
            for part in parts {
                let empty = Cell::empty(p, &code);
                let bytes = empty.bytes();
                self.cells.insert(
                    &self.cell_key(&p, &code, *part),
                    identity,
                    Arc::new(empty),
                    bytes,
                );
            }
        }
        Ok(())
    }
}

/// The most roll-up rows computed at once (see `Rollup::cached_rows`): a
/// Hanoi query of every month and indicator is one step, the whole
/// country's takes a period or two per step.
const STEP_ROWS: usize = 2_000_000;

/// The bytes of one kept row of a cell.
const CELL_ROW_BYTES: usize = std::mem::size_of::<CellRow>();

/// The two parts of a cell, kept apart: the rows of the units above the
/// wards (a period of the whole country has 760 of them beside 10,035
/// wards), which the city's and districts' queries read, and the wards'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Above,
    Wards,
}

impl Part {
    const ALL: [Part; 2] = [Part::Above, Part::Wards];

    fn of(level: Level) -> Part {
        match level {
            Level::Ward => Part::Wards,
            Level::Province | Level::District => Part::Above,
        }
    }

    fn holds_level_named(self, level: &str) -> bool {
        level.parse::<Level>().is_ok_and(|l| Part::of(l) == self)
    }

    fn as_str(self) -> &'static str {
        match self {
            Part::Above => "above",
            Part::Wards => "wards",
        }
    }
}

/// One row of a cell: a unit of the cell's frame version, by its place in
/// that version's units (`VersionIndex::units`), and its value.
#[derive(Debug, Clone, Copy)]
struct CellRow {
    value: f64,
    unit: u32,
    reporting: u32,
    expected: u32,
    has_value: bool,
}

/// The rows of one (target period, indicator) cell, or of one part of it,
/// in the order of the version's units. The text columns are the unit's,
/// the period's and the indicator's: they are written out only for the
/// rows a query wants, so that a kept row takes `CELL_ROW_BYTES`, not the
/// hundred bytes of its output row.
#[derive(Debug)]
pub struct Cell {
    period: Period,
    indicator: String,
    version: usize,
    rows: Vec<CellRow>,
}

impl Cell {
    fn empty(period: Period, indicator: &str) -> Cell {
        Cell {
            period,
            indicator: indicator.to_string(),
            version: 0,
            rows: Vec::new(),
        }
    }

    /// About the bytes the cell holds.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Cell>() + self.indicator.len() + self.rows.capacity() * CELL_ROW_BYTES
    }

    /// The rows of the units of `part`, cut to their length.
    fn part(&self, part: Part, index: &HashMap<usize, VersionIndex>) -> Cell {
        let units = index.get(&self.version).map(|v| v.units.as_slice());
        let mut rows: Vec<CellRow> = self
            .rows
            .iter()
            .filter(|r| {
                units
                    .and_then(|u| u.get(r.unit as usize))
                    .is_some_and(|u| Part::of(u.level) == part)
            })
            .copied()
            .collect();
        rows.shrink_to_fit();
        Cell {
            period: self.period,
            indicator: self.indicator.clone(),
            version: self.version,
            rows,
        }
    }
}

/// Per frame version, whether each of its units (by place) is wanted.
type Masks = HashMap<usize, Vec<bool>>;

/// The cells a scan answers from, each cut to the wanted units and levels
/// as it comes: a kept part as it is (shared with the memo), a computed
/// cell as a copy of its wanted rows, so that a query of districts does not
/// hold every ward's rows of the cells it computed.
struct Gather<'w> {
    wanted: &'w Wanted,
    index: &'w Arc<HashMap<usize, VersionIndex>>,
    masks: Masks,
    cells: Vec<Vec<Arc<Cell>>>,
    rows: usize,
    bytes: usize,
}

impl<'w> Gather<'w> {
    fn new(wanted: &'w Wanted, index: &'w Arc<HashMap<usize, VersionIndex>>) -> Self {
        Gather {
            wanted,
            index,
            masks: Masks::new(),
            cells: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Whether each unit of `version` is wanted.
    fn mask(&mut self, version: usize) -> &[bool] {
        let (wanted, index) = (self.wanted, self.index);
        self.masks.entry(version).or_insert_with(|| {
            index
                .get(&version)
                .map(|v| {
                    v.units
                        .iter()
                        .map(|u| {
                            wanted.allows(C_UNIT, &u.code)
                                && wanted.allows(C_LEVEL, u.level.as_str())
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Adds the kept parts of one cell.
    fn keep(&mut self, parts: Vec<Arc<Cell>>) {
        let Some(version) = parts.first().map(|p| p.version) else {
            return;
        };
        let mask = self.mask(version);
        let rows: usize = parts
            .iter()
            .flat_map(|p| &p.rows)
            .filter(|r| mask.get(r.unit as usize).copied().unwrap_or(false))
            .count();
        if rows > 0 {
            self.rows += rows;
            self.bytes += parts.iter().map(|p| p.bytes()).sum::<usize>();
            self.cells.push(parts);
        }
    }

    /// Adds the wanted rows of a computed cell.
    fn cut(&mut self, cell: &Cell) {
        let mask = self.mask(cell.version);
        let mut rows: Vec<CellRow> = cell
            .rows
            .iter()
            .filter(|r| mask.get(r.unit as usize).copied().unwrap_or(false))
            .copied()
            .collect();
        if rows.is_empty() {
            return;
        }
        rows.shrink_to_fit();
        let cut = Cell {
            period: cell.period,
            indicator: cell.indicator.clone(),
            version: cell.version,
            rows,
        };
        self.rows += cut.rows.len();
        self.bytes += cut.bytes();
        self.cells.push(vec![Arc::new(cut)]);
    }

    /// The plan that writes the gathered rows out, `projection`'s columns.
    fn finish(self, projection: Option<&Vec<usize>>) -> Result<RollupExec> {
        let full = rollup_schema();
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..full.fields().len()).collect(),
        };
        let schema = Arc::new(full.project(&columns)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(RollupExec {
            cells: Arc::new(self.cells),
            masks: Arc::new(self.masks),
            index: self.index.clone(),
            columns,
            schema,
            rows: self.rows,
            bytes: self.bytes,
            properties: Arc::new(properties),
        })
    }
}

/// The rows of a roll-up scan: its cells, held compactly, written out as
/// Arrow batches only as the plan above asks for them. The whole country's
/// districts × months × indicators are four million output rows, which
/// as one set of batches took 750 MB; as cells they take 110.
pub struct RollupExec {
    /// The parts of each cell, each part in the order of its units.
    cells: Arc<Vec<Vec<Arc<Cell>>>>,
    masks: Arc<Masks>,
    index: Arc<HashMap<usize, VersionIndex>>,
    /// The columns of `rollup_schema` written, in this order.
    columns: Vec<usize>,
    schema: SchemaRef,
    rows: usize,
    bytes: usize,
    properties: Arc<PlanProperties>,
}

impl RollupExec {
    /// About the bytes of the cells the plan holds (kept parts among them
    /// are shared with the cells' memo).
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for RollupExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupExec")
            .field("cells", &self.cells.len())
            .field("rows", &self.rows)
            .field("columns", &self.columns)
            .finish()
    }
}

impl DisplayAs for RollupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "RollupExec: cells={}, rows={}",
            self.cells.len(),
            self.rows
        )
    }
}

impl ExecutionPlan for RollupExec {
    fn name(&self) -> &str {
        "RollupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RollupExec has one partition, not {partition}"
            )));
        }
        let writer = Writer {
            cells: self.cells.clone(),
            masks: self.masks.clone(),
            index: self.index.clone(),
            out: Output::new(&self.columns, self.schema.clone()),
            batch_size: context.session_config().batch_size().max(1),
            cell: 0,
            next: Vec::new(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(writer),
        )))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(
            Statistics::new_unknown(&self.schema).with_num_rows(Precision::Exact(self.rows)),
        ))
    }
}

/// Writes the wanted rows of a scan's cells into batches of the session's
/// size, one batch per call, the parts of each cell in the order of the
/// version's units.
struct Writer {
    cells: Arc<Vec<Vec<Arc<Cell>>>>,
    masks: Arc<Masks>,
    index: Arc<HashMap<usize, VersionIndex>>,
    out: Output,
    batch_size: usize,
    /// The cell being written, and the next row of each of its parts.
    cell: usize,
    next: Vec<usize>,
}

impl Iterator for Writer {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        let (cells, masks, index) = (self.cells.clone(), self.masks.clone(), self.index.clone());
        while let Some(parts) = cells.get(self.cell) {
            let Some(first) = parts.first() else {
                self.cell += 1;
                continue;
            };
            let (Some(version), Some(mask)) =
                (index.get(&first.version), masks.get(&first.version))
            else {
                self.cell += 1;
                continue;
            };
            self.next.resize(parts.len(), 0);
            let period = first.period.to_string();
            let period_type = first.period.period_type().as_str();
            loop {
                // The part whose next row has the first unit.
                let mut pick: Option<(usize, CellRow)> = None;
                for (i, part) in parts.iter().enumerate() {
                    if let Some(row) = part.rows.get(self.next[i])
                        && pick.is_none_or(|(_, p)| row.unit < p.unit)
                    {
                        pick = Some((i, *row));
                    }
                }
                let Some((i, row)) = pick else { break };
                self.next[i] += 1;
                let unit = row.unit as usize;
                if !mask.get(unit).copied().unwrap_or(false) {
                    continue;
                }
                let Some(u) = version.units.get(unit) else {
                    continue;
                };
                self.out.push(
                    u,
                    &period,
                    period_type,
                    &first.indicator,
                    row.has_value.then_some(row.value),
                    i64::from(row.reporting),
                    i64::from(row.expected),
                    version.effective,
                );
                if self.out.len() >= self.batch_size {
                    return Some(self.out.finish());
                }
            }
            self.cell += 1;
            self.next.clear();
        }
        (!self.out.is_empty()).then(|| self.out.finish())
    }
}

/// Values allowed per filterable column (`None`: unconstrained), and the
/// comparisons of the period with text (`period >= '2024-01'`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Wanted {
    sets: HashMap<&'static str, BTreeSet<String>>,
    period_comparisons: Vec<Expr>,
}

impl Wanted {
    fn from_filters(filters: &[Expr]) -> Wanted {
        Self::from_filters_on(filters, &FILTERABLE)
    }

    /// The values `filters` allow for each of `columns`.
    pub(crate) fn from_filters_on(filters: &[Expr], columns: &[&'static str]) -> Wanted {
        let mut w = Wanted::default();
        for f in filters {
            if columns.contains(&C_PERIOD) && period_comparison(f, "").is_some() {
                w.period_comparisons.push(f.clone());
            }
            if let Some((column, values)) = column_values_for(f, columns) {
                let set: BTreeSet<String> = values.into_iter().collect();
                w.sets
                    .entry(column)
                    .and_modify(|s| *s = s.intersection(&set).cloned().collect())
                    .or_insert(set);
            }
        }
        w
    }

    pub(crate) fn get(&self, column: &str) -> Option<&BTreeSet<String>> {
        self.sets.get(column)
    }

    pub(crate) fn allows(&self, column: &str, value: &str) -> bool {
        self.sets.get(column).is_none_or(|s| s.contains(value))
            && (column != C_PERIOD
                || self
                    .period_comparisons
                    .iter()
                    .all(|f| period_comparison(f, value) != Some(false)))
    }

    /// The periods of `PERIOD_YEARS` the filters allow, when they name
    /// some or bound them (`None`: every period is allowed).
    pub(crate) fn periods(&self) -> Option<Vec<Period>> {
        let allowed = |p: &Period| {
            self.allows(C_PERIOD, &p.to_string()) && self.allows(C_PTYPE, p.period_type().as_str())
        };
        if let Some(set) = self.sets.get(C_PERIOD) {
            return Some(
                set.iter()
                    .filter_map(|s| s.parse::<Period>().ok())
                    .filter(allowed)
                    .collect(),
            );
        }
        if self.period_comparisons.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for year in crate::PERIOD_YEARS {
            for kind in PeriodType::ALL {
                if !self.allows(C_PTYPE, kind.as_str()) {
                    continue;
                }
                out.extend(Period::all_of_year(year, kind));
            }
        }
        out.retain(allowed);
        out.sort();
        Some(out)
    }
}

pub(crate) fn string_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        // A partition column is dictionary-encoded, and so is a literal
        // compared with it.
        Expr::Literal(ScalarValue::Dictionary(_, inner), _) => match inner.as_ref() {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
            _ => None,
        },
        Expr::Cast(c) => string_literal(&c.expr),
        _ => None,
    }
}

/// What `filter` says of the rows of period `period`, when it is a
/// comparison of the period column with a text literal (`None` otherwise).
pub(crate) fn period_comparison(filter: &Expr, period: &str) -> Option<bool> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    let text = |e: &Expr| match e {
        Expr::Literal(..) => string_literal(e),
        _ => None,
    };
    let is_period = |e: &Expr| matches!(e, Expr::Column(c) if c.name == PERIOD);
    // `period op literal`, or `literal op period` turned around.
    let (op, literal) = if is_period(left) {
        (*op, text(right)?)
    } else if is_period(right) {
        (op.swap()?, text(left)?)
    } else {
        return None;
    };
    let p = period;
    let l = literal.as_str();
    Some(match op {
        Operator::Eq => p == l,
        Operator::NotEq => p != l,
        Operator::Lt => p < l,
        Operator::LtEq => p <= l,
        Operator::Gt => p > l,
        Operator::GtEq => p >= l,
        _ => return None,
    })
}

fn filter_column(e: &Expr, columns: &[&'static str]) -> Option<&'static str> {
    let name = match e {
        Expr::Column(c) => c.name.as_str(),
        Expr::Cast(c) => return filter_column(&c.expr, columns),
        _ => return None,
    };
    columns.iter().copied().find(|c| *c == name)
}

/// The pushdown answer of a table that reads `col = 'x'` / `col IN (...)`
/// filters on `columns` to narrow its work: inexact, since DataFusion still
/// applies them; any other filter is left to DataFusion.
pub(crate) fn narrowing(
    filters: &[&Expr],
    columns: &[&'static str],
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if column_values_for(f, columns).is_some()
                || (columns.contains(&C_PERIOD) && period_comparison(f, "").is_some())
            {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// `col = 'x'`, `'x' = col` or `col IN ('x', 'y')` on one of `columns`.
pub(crate) fn column_values_for(
    e: &Expr,
    columns: &[&'static str],
) -> Option<(&'static str, Vec<String>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if let (Some(c), Some(v)) = (filter_column(left, columns), string_literal(right)) {
                Some((c, vec![v]))
            } else if let (Some(c), Some(v)) = (filter_column(right, columns), string_literal(left))
            {
                Some((c, vec![v]))
            } else {
                None
            }
        }
        Expr::InList(list) if !list.negated => {
            let c = filter_column(&list.expr, columns)?;
            let values = list
                .list
                .iter()
                .map(string_literal)
                .collect::<Option<Vec<_>>>()?;
            Some((c, values))
        }
        // DataFusion's simplifier writes an IN list of up to three values
        // as equalities joined by OR (`inlist_simplifier`): a quarter's
        // three months, or a roll-up's own fetch of a few periods.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (c, mut values) = column_values_for(left, columns)?;
            let (other, more) = column_values_for(right, columns)?;
            (c == other).then(|| {
                values.extend(more);
                (c, values)
            })
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for Rollup {
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
        Ok(narrowing(filters, &FILTERABLE))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted = Wanted::from_filters(filters);
        let engine = Engine::new(&self.catalog, self.frame, &self.index);
        let mut rows = Gather::new(&wanted, &self.index);
        match self.reports.identities(state).await? {
            Some(identities) => {
                // Without a period filter: every period that holds data,
                // and the periods enclosing them.
                let periods = wanted.periods().unwrap_or_else(|| {
                    let mut all = BTreeSet::new();
                    for p in identities.keys().filter_map(|p| p.parse::<Period>().ok()) {
                        for kind in PeriodType::ALL {
                            if let Some(e) = p.enclosing(kind)
                                && wanted.allows(C_PTYPE, kind.as_str())
                            {
                                all.insert(e);
                            }
                        }
                    }
                    all.into_iter().collect()
                });
                self.cached_rows(state, &engine, &wanted, periods, &identities, &mut rows)
                    .await?;
            }
            None => {
                let plan = engine.plan(&wanted);
                let data = self.fetch(state, &plan).await?;
                engine.compute_each(&wanted, &plan, &data, |cell| {
                    rows.cut(&cell);
                    Ok(())
                })?;
            }
        }
        Ok(Arc::new(rows.finish(projection)?))
    }
}

/// The reported values needed, by indicator code.
/// indicator code -> period -> (unit, value)
type Data = HashMap<String, BTreeMap<Period, Vec<(String, f64)>>>;

impl Rollup {
    /// Reads the current reported values of the planned indicators and
    /// source periods from `reports`.
    async fn fetch(&self, state: &dyn Session, plan: &FetchPlan) -> Result<Data> {
        let mut builder =
            LogicalPlanBuilder::scan("reports", provider_as_source(self.reports.clone()), None)?;
        builder = builder.filter(col(INDICATOR_CODE).in_list(
            plan.indicators.iter().map(|i| lit(i.as_str())).collect(),
            false,
        ))?;
        if let Some(periods) = &plan.periods {
            if periods.is_empty() {
                return Ok(Data::new());
            }
            builder = builder.filter(
                col(PERIOD).in_list(periods.iter().map(|p| lit(p.to_string())).collect(), false),
            )?;
        }
        let logical = builder
            .project([col(UNIT_CODE), col(PERIOD), col(INDICATOR_CODE), col(VALUE)])?
            .build()?;
        let physical = state.create_physical_plan(&logical).await?;
        let batches = collect(physical, state.task_ctx()).await?;
        let mut data = Data::new();
        for b in batches {
            let text = |i: usize| -> Result<StringArray> {
                let a = cast(b.column(i), &DataType::Utf8)?;
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::from(Vec::<String>::new())))
            };
            let (units, periods, inds) = (text(0)?, text(1)?, text(2)?);
            let values = cast(b.column(3), &DataType::Float64)?;
            let Some(values) = values.as_any().downcast_ref::<Float64Array>() else {
                continue;
            };
            // A batch holds few periods and indicators: each is parsed and
            // looked up once per run of rows.
            let mut parsed: HashMap<&str, Option<Period>> = HashMap::new();
            for r in 0..b.num_rows() {
                if values.is_null(r) || units.is_null(r) || periods.is_null(r) || inds.is_null(r) {
                    continue;
                }
                let text = periods.value(r);
                let Some(p) = *parsed
                    .entry(text)
                    .or_insert_with(|| text.parse::<Period>().ok())
                else {
                    continue;
                };
                let ind = inds.value(r);
                if !data.contains_key(ind) {
                    data.insert(ind.to_string(), BTreeMap::new());
                }
                if let Some(by_period) = data.get_mut(ind) {
                    by_period
                        .entry(p)
                        .or_default()
                        .push((units.value(r).to_string(), values.value(r)));
                }
            }
        }
        Ok(data)
    }
}

/// What to fetch: the indicators (with their ratio and weight components)
/// and, when the periods are known, the source periods.
#[derive(Debug)]
struct FetchPlan {
    indicators: BTreeSet<String>,
    /// The target indicators (before adding components).
    targets: Vec<String>,
    /// `None` when periods are not constrained: fetch every period.
    periods: Option<BTreeSet<Period>>,
    target_periods: Option<Vec<Period>>,
}

/// Which units of a frame version contribute to which target unit.
#[derive(Debug)]
struct VersionIndex {
    /// For each level: unit -> the units of that level under it (or itself).
    under: HashMap<Level, HashMap<String, Vec<String>>>,
    /// The version's units in code order: a cell's rows name them by place.
    units: Vec<UnitColumns>,
    /// The day the version takes effect, as Date32.
    effective: i32,
}

/// What a roll-up row shows of its unit.
#[derive(Debug)]
struct UnitColumns {
    code: String,
    name: String,
    level: Level,
}

struct Engine<'a> {
    catalog: &'a Catalog,
    frame: Frame,
    index: &'a HashMap<usize, VersionIndex>,
}

/// Per hierarchy version, which units sit under which: built once per
/// table, not per query.
fn version_index(catalog: &Catalog) -> HashMap<usize, VersionIndex> {
    let mut index = HashMap::new();
    for (i, v) in catalog.hierarchies().versions().iter().enumerate() {
        let mut under: HashMap<Level, HashMap<String, Vec<String>>> = HashMap::new();
        for u in v.units() {
            for a in v.ancestors(&u.code) {
                under
                    .entry(u.level)
                    .or_default()
                    .entry(a.code.to_string())
                    .or_default()
                    .push(u.code.to_string());
            }
        }
        let units = v
            .units()
            .map(|u| UnitColumns {
                code: u.code.to_string(),
                name: u.name.clone(),
                level: u.level,
            })
            .collect();
        index.insert(
            i,
            VersionIndex {
                under,
                units,
                effective: days(v.effective),
            },
        );
    }
    index
}

/// Days since 1970-01-01, the Arrow Date32 encoding.
fn days(d: chrono::NaiveDate) -> i32 {
    datafusion::arrow::datatypes::Date32Type::from_naive_date(d)
}

impl<'a> Engine<'a> {
    fn new(catalog: &'a Catalog, frame: Frame, index: &'a HashMap<usize, VersionIndex>) -> Self {
        Engine {
            catalog,
            frame,
            index,
        }
    }

    fn hierarchies(&self) -> &Hierarchies {
        self.catalog.hierarchies()
    }

    /// The most units a period rolls up to (the largest hierarchy version):
    /// the rows of one cell.
    fn units(&self) -> usize {
        self.hierarchies()
            .versions()
            .iter()
            .map(|v| v.len())
            .max()
            .unwrap_or(0)
    }

    /// The frame version a target period rolls up along.
    fn frame_version(&self, p: &Period) -> Option<usize> {
        match self.frame {
            Frame::InForce => self.hierarchies().index_for(p.last_day()),
            Frame::Current => self.hierarchies().versions().len().checked_sub(1),
        }
    }

    fn target_indicators(&self, wanted: &Wanted) -> Vec<&'a Indicator> {
        self.catalog
            .indicators()
            .iter()
            .filter(|i| wanted.allows(C_INDICATOR, &i.code))
            .collect()
    }

    fn components(ind: &Indicator) -> Vec<String> {
        ind.across_units
            .references()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn plan(&self, wanted: &Wanted) -> FetchPlan {
        let targets = self.target_indicators(wanted);
        let mut indicators = BTreeSet::new();
        for t in &targets {
            indicators.insert(t.code.clone());
            indicators.extend(Self::components(t));
        }
        let target_periods: Option<Vec<Period>> = wanted.periods();
        let periods = target_periods.as_ref().map(|tps| {
            let mut out = BTreeSet::new();
            for p in tps {
                for code in &indicators {
                    if let Some(ind) = self.catalog.indicator(code) {
                        out.extend(source_periods(ind.period_type, p));
                    }
                }
            }
            out
        });
        FetchPlan {
            indicators,
            targets: targets.iter().map(|i| i.code.clone()).collect(),
            periods,
            target_periods,
        }
    }

    /// Values of `ind` per reporting unit of frame version `t`, aggregated
    /// across time over `p` (steps 1 and 2).
    fn unit_values(
        &self,
        ind: &Indicator,
        p: &Period,
        t: usize,
        data: &Data,
        maps: &mut MapCache,
    ) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        if ind.period_type > p.period_type()
            || (ind.period_type != p.period_type() && ind.across_time == AcrossTime::None)
        {
            return out;
        }
        let Some(rows) = data.get(&ind.code) else {
            return out;
        };
        let additive = matches!(
            ind.across_units,
            AcrossUnits::Sum | AcrossUnits::Count | AcrossUnits::Ratio { .. }
        );
        // Frame unit -> (source period, value). A source period's values
        // are all of the frame's version or all of an older one.
        let mut series: HashMap<String, Vec<(Period, f64)>> = HashMap::new();
        // (frame unit, source period) -> parts mapped from older units.
        let mut parts: HashMap<(String, Period), Vec<f64>> = HashMap::new();
        for sp in source_periods(ind.period_type, p) {
            let Some(rows) = rows.get(&sp) else {
                continue;
            };
            let Some(s) = self.hierarchies().index_for(sp.last_day()) else {
                continue;
            };
            if s == t {
                // One current value per unit and period.
                for (unit, v) in rows {
                    series.entry(unit.clone()).or_default().push((sp, *v));
                }
                continue;
            }
            if ind.across_units == AcrossUnits::None {
                continue;
            }
            for (unit, v) in rows {
                for (target, share) in maps.map(self.hierarchies(), s, t, unit) {
                    let mapped = if additive { v * share } else { *v };
                    parts.entry((target, sp)).or_default().push(mapped);
                }
            }
        }
        // Combine the parts mapped into one unit and sub-period.
        for ((unit, sp), vs) in parts {
            let v = if additive {
                vs.iter().sum()
            } else {
                match ind.across_units {
                    AcrossUnits::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                    AcrossUnits::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    _ => vs.iter().sum::<f64>() / vs.len() as f64,
                }
            };
            series.entry(unit).or_default().push((sp, v));
        }
        for (unit, mut s) in series {
            s.sort_by_key(|a| a.0);
            let values = s.iter().map(|(_, v)| *v);
            let v = match ind.across_time {
                AcrossTime::Sum => values.sum(),
                AcrossTime::Last => s.last().map(|(_, v)| *v).unwrap_or_default(),
                AcrossTime::Average => values.sum::<f64>() / s.len() as f64,
                AcrossTime::Min => values.fold(f64::INFINITY, f64::min),
                AcrossTime::Max => values.fold(f64::NEG_INFINITY, f64::max),
                AcrossTime::None => match s.iter().find(|(sp, _)| sp == p) {
                    Some((_, v)) => *v,
                    None => continue,
                },
            };
            out.insert(unit, v);
        }
        out
    }

    /// The rows of each (target period, target indicator) cell that has
    /// any, handed to `cell` one cell at a time: a step of the whole
    /// country's cells holds each cell's rows once, not a batch of all of
    /// them and then its cells' copies.
    fn compute_each(
        &self,
        wanted: &Wanted,
        plan: &FetchPlan,
        data: &Data,
        mut cell: impl FnMut(Cell) -> Result<()>,
    ) -> Result<()> {
        let target_periods: Vec<Period> = match &plan.target_periods {
            Some(p) => p.clone(),
            None => {
                let mut set = BTreeSet::new();
                for by_period in data.values() {
                    for sp in by_period.keys() {
                        for k in PeriodType::ALL {
                            if let Some(e) = sp.enclosing(k)
                                && wanted.allows(C_PTYPE, k.as_str())
                            {
                                set.insert(e);
                            }
                        }
                    }
                }
                set.into_iter().collect()
            }
        };
        let mut maps = MapCache::default();
        let versions = self.hierarchies().versions();
        for p in &target_periods {
            let Some(t) = self.frame_version(p) else {
                continue;
            };
            let version = &versions[t];
            let Some(index) = self.index.get(&t) else {
                continue;
            };
            for code in &plan.targets {
                let Some(ind) = self.catalog.indicator(code) else {
                    continue;
                };
                if ind.period_type > p.period_type() {
                    continue;
                }
                let level = ind.reporting_level(version);
                // Per reporting unit: (value or (num, den) / (value, weight)).
                let unit_vals: HashMap<String, (f64, f64)> = match &ind.across_units {
                    AcrossUnits::Ratio {
                        numerator,
                        denominator,
                    } => {
                        let (Some(n), Some(d)) = (
                            self.catalog.indicator(numerator),
                            self.catalog.indicator(denominator),
                        ) else {
                            continue;
                        };
                        let nv = self.unit_values(n, p, t, data, &mut maps);
                        let dv = self.unit_values(d, p, t, data, &mut maps);
                        nv.into_iter()
                            .filter_map(|(u, n)| dv.get(&u).map(|d| (u, (n, *d))))
                            .collect()
                    }
                    AcrossUnits::WeightedAverage { weight } => {
                        let Some(w) = self.catalog.indicator(weight) else {
                            continue;
                        };
                        let wv = self.unit_values(w, p, t, data, &mut maps);
                        self.unit_values(ind, p, t, data, &mut maps)
                            .into_iter()
                            .filter_map(|(u, v)| wv.get(&u).map(|w| (u, (v, *w))))
                            .collect()
                    }
                    _ => self
                        .unit_values(ind, p, t, data, &mut maps)
                        .into_iter()
                        .map(|(u, v)| (u, (v, 0.0)))
                        .collect(),
                };
                if unit_vals.is_empty() {
                    continue;
                }
                let Some(under) = index.under.get(&level) else {
                    continue;
                };
                let mut rows = Vec::new();
                for (place, unit) in version.units().enumerate() {
                    if unit.level > level
                        || (ind.across_units == AcrossUnits::None && unit.level != level)
                    {
                        continue;
                    }
                    let code_s = unit.code.as_str();
                    if !wanted.allows(C_UNIT, code_s)
                        || !wanted.allows(C_LEVEL, unit.level.as_str())
                    {
                        continue;
                    }
                    let Some(members) = under.get(code_s) else {
                        continue;
                    };
                    let vals: Vec<(f64, f64)> = members
                        .iter()
                        .filter_map(|m| unit_vals.get(m).copied())
                        .collect();
                    if vals.is_empty() {
                        continue;
                    }
                    let n = vals.len() as f64;
                    let value = match &ind.across_units {
                        AcrossUnits::Sum => Some(vals.iter().map(|v| v.0).sum()),
                        AcrossUnits::Average => Some(vals.iter().map(|v| v.0).sum::<f64>() / n),
                        AcrossUnits::Min => {
                            Some(vals.iter().map(|v| v.0).fold(f64::INFINITY, f64::min))
                        }
                        AcrossUnits::Max => {
                            Some(vals.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max))
                        }
                        AcrossUnits::Count => Some(n),
                        AcrossUnits::None => Some(vals[0].0),
                        AcrossUnits::WeightedAverage { .. } => {
                            let w: f64 = vals.iter().map(|v| v.1).sum();
                            (w > 0.0).then(|| vals.iter().map(|v| v.0 * v.1).sum::<f64>() / w)
                        }
                        AcrossUnits::Ratio { .. } => {
                            let d: f64 = vals.iter().map(|v| v.1).sum();
                            (d != 0.0)
                                .then(|| ind.scale * vals.iter().map(|v| v.0).sum::<f64>() / d)
                        }
                    };
                    // Apportioned shares leave float dust
                    // (116490.00000000001): round to a millionth, far below
                    // any indicator's precision.
                    let value = value.map(|v| {
                        if v.abs() < 1e9 {
                            (v * 1e6).round() / 1e6
                        } else {
                            v
                        }
                    });
                    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    rows.push(CellRow {
                        value: value.unwrap_or_default(),
                        has_value: value.is_some(),
                        unit: count(place),
                        reporting: count(vals.len()),
                        expected: count(members.len()),
                    });
                }
                if !rows.is_empty() {
                    rows.shrink_to_fit();
                    cell(Cell {
                        period: *p,
                        indicator: code.clone(),
                        version: t,
                        rows,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Periods of `kind` inside `p` (empty when `kind` is longer than `p`).
fn source_periods(kind: PeriodType, p: &Period) -> Vec<Period> {
    if kind > p.period_type() {
        return Vec::new();
    }
    let first = p.start();
    let last = p.last_day();
    Period::range(kind, Period::month_of(first), Period::month_of(last))
        .into_iter()
        .filter(|s| p.contains(s))
        .collect()
}

/// Unit mappings between hierarchy versions, built on demand.
#[derive(Default)]
struct MapCache {
    steps: HashMap<usize, HashMap<String, Vec<(String, f64)>>>,
}

impl MapCache {
    /// The step from version `k` to `k + 1`: ward changes with area shares
    /// for split wards; a unit not in the changes keeps its code if the
    /// next version has it.
    fn step(&mut self, h: &Hierarchies, k: usize) -> &HashMap<String, Vec<(String, f64)>> {
        self.steps.entry(k).or_insert_with(|| {
            let versions = h.versions();
            let (old, new) = (&versions[k], &versions[k + 1]);
            let mut by_old: HashMap<String, Vec<String>> = HashMap::new();
            for c in h.changes().iter().filter(|c| c.effective == new.effective) {
                by_old
                    .entry(c.old_code.to_string())
                    .or_default()
                    .push(c.new_code.to_string());
            }
            let mut step = HashMap::new();
            for u in old.units() {
                let code = u.code.to_string();
                let targets: Vec<(String, f64)> = match by_old.get(&code) {
                    Some(news) => {
                        let areas: Vec<f64> = news
                            .iter()
                            .map(|n| new.get_str(n).and_then(|x| x.area_km2).unwrap_or(0.0))
                            .collect();
                        let total: f64 = areas.iter().sum();
                        news.iter()
                            .zip(areas)
                            .map(|(n, a)| {
                                (
                                    n.clone(),
                                    if total > 0.0 {
                                        a / total
                                    } else {
                                        1.0 / news.len() as f64
                                    },
                                )
                            })
                            .collect()
                    }
                    None => match new.get_str(&code) {
                        Some(same) if same.level == u.level => vec![(code.clone(), 1.0)],
                        _ => Vec::new(),
                    },
                };
                step.insert(code, targets);
            }
            step
        })
    }

    /// Where `unit` of version `s` goes in version `t` (`s < t`), with shares.
    fn map(&mut self, h: &Hierarchies, s: usize, t: usize, unit: &str) -> Vec<(String, f64)> {
        let mut cur = vec![(unit.to_string(), 1.0)];
        for k in s..t {
            let step = self.step(h, k);
            let mut next = Vec::new();
            for (u, share) in cur {
                if let Some(targets) = step.get(&u) {
                    next.extend(targets.iter().map(|(n, s2)| (n.clone(), share * s2)));
                }
            }
            cur = next;
        }
        cur
    }
}

/// Roll-up rows as they are written out, straight into Arrow buffers, of
/// the projected columns only.
struct Output {
    /// The columns of `rollup_schema` written, in the output's order.
    columns: Vec<usize>,
    /// Per column of `rollup_schema`, whether it is written.
    written: [bool; 10],
    schema: SchemaRef,
    rows: usize,
    unit: StringBuilder,
    name: StringBuilder,
    level: StringBuilder,
    period: StringBuilder,
    ptype: StringBuilder,
    indicator: StringBuilder,
    value: Float64Builder,
    reporting: Int64Builder,
    expected: Int64Builder,
    version: Date32Builder,
}

impl Output {
    fn new(columns: &[usize], schema: SchemaRef) -> Output {
        let mut written = [false; 10];
        for c in columns {
            if let Some(w) = written.get_mut(*c) {
                *w = true;
            }
        }
        Output {
            columns: columns.to_vec(),
            written,
            schema,
            rows: 0,
            unit: StringBuilder::new(),
            name: StringBuilder::new(),
            level: StringBuilder::new(),
            period: StringBuilder::new(),
            ptype: StringBuilder::new(),
            indicator: StringBuilder::new(),
            value: Float64Builder::new(),
            reporting: Int64Builder::new(),
            expected: Int64Builder::new(),
            version: Date32Builder::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        unit: &UnitColumns,
        period: &str,
        period_type: &str,
        indicator: &str,
        value: Option<f64>,
        reporting: i64,
        expected: i64,
        version: i32,
    ) {
        let w = self.written;
        if w[0] {
            self.unit.append_value(&unit.code);
        }
        if w[1] {
            self.name.append_value(&unit.name);
        }
        if w[2] {
            self.level.append_value(unit.level.as_str());
        }
        if w[3] {
            self.period.append_value(period);
        }
        if w[4] {
            self.ptype.append_value(period_type);
        }
        if w[5] {
            self.indicator.append_value(indicator);
        }
        if w[6] {
            self.value.append_option(value);
        }
        if w[7] {
            self.reporting.append_value(reporting);
        }
        if w[8] {
            self.expected.append_value(expected);
        }
        if w[9] {
            self.version.append_value(version);
        }
        self.rows += 1;
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows pushed since the last call, as a batch; empties the builders.
    fn finish(&mut self) -> Result<RecordBatch> {
        // A projection may name a column twice: each builder is finished
        // once and its array shared.
        let mut finished: [Option<ArrayRef>; 10] = Default::default();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            if let Some(Some(array)) = finished.get(*c) {
                arrays.push(array.clone());
                continue;
            }
            let array: ArrayRef = match c {
                0 => Arc::new(self.unit.finish()),
                1 => Arc::new(self.name.finish()),
                2 => Arc::new(self.level.finish()),
                3 => Arc::new(self.period.finish()),
                4 => Arc::new(self.ptype.finish()),
                5 => Arc::new(self.indicator.finish()),
                6 => Arc::new(self.value.finish()),
                7 => Arc::new(self.reporting.finish()),
                8 => Arc::new(self.expected.finish()),
                9 => Arc::new(self.version.finish()),
                other => {
                    return Err(DataFusionError::Internal(format!(
                        "rollup has no column {other}"
                    )));
                }
            };
            if let Some(slot) = finished.get_mut(*c) {
                *slot = Some(array.clone());
            }
            arrays.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &options,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::in_list;

    /// A version of a province, a district and three wards, in code order.
    fn small_index() -> Arc<HashMap<usize, VersionIndex>> {
        let unit = |code: &str, level| UnitColumns {
            code: code.to_string(),
            name: format!("unit {code}"),
            level,
        };
        let version = VersionIndex {
            under: HashMap::new(),
            units: vec![
                unit("01", Level::Province),
                unit("001", Level::District),
                unit("00001", Level::Ward),
                unit("00002", Level::Ward),
                unit("00003", Level::Ward),
            ],
            effective: 0,
        };
        Arc::new(HashMap::from([(0, version)]))
    }

    fn cell(rows: &[(u32, Option<f64>)]) -> Cell {
        Cell {
            period: "2024-05".parse().expect("period"),
            indicator: "births".to_string(),
            version: 0,
            rows: rows
                .iter()
                .map(|(unit, value)| CellRow {
                    value: value.unwrap_or_default(),
                    unit: *unit,
                    reporting: 1,
                    expected: 2,
                    has_value: value.is_some(),
                })
                .collect(),
        }
    }

    async fn written(exec: RollupExec, batch_size: usize) -> Vec<RecordBatch> {
        let config = datafusion::prelude::SessionConfig::new().with_batch_size(batch_size);
        let ctx = Arc::new(TaskContext::default().with_session_config(config));
        collect(Arc::new(exec), ctx).await.expect("written")
    }

    fn texts(batches: &[RecordBatch], column: usize) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(column)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("text");
                a.iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn kept_parts_are_written_in_unit_order_projected_and_cut() -> Result<()> {
        let index = small_index();
        let whole = cell(&[(0, Some(10.0)), (1, Some(6.0)), (2, Some(1.0)), (4, None)]);
        let above = Arc::new(whole.part(Part::Above, &index));
        let wards = Arc::new(whole.part(Part::Wards, &index));
        assert_eq!(above.rows.len(), 2);
        assert_eq!(wards.rows.len(), 2);

        // Both parts, every unit, in batches of three: merged back into
        // the version's order.
        let all = Wanted::default();
        let mut gather = Gather::new(&all, &index);
        gather.keep(vec![above.clone(), wards.clone()]);
        let exec = gather.finish(Some(&vec![0, 6]))?;
        assert_eq!(exec.rows, 4);
        let batches = written(exec, 3).await;
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [3, 1]
        );
        assert_eq!(batches[0].num_columns(), 2, "the projected columns only");
        assert_eq!(texts(&batches, 0), ["01", "001", "00001", "00003"]);
        let values: Vec<Option<f64>> = batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("value");
                a.iter().collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(values, [Some(10.0), Some(6.0), Some(1.0), None]);

        // A level filter on kept parts and on a computed cell.
        let districts = Wanted::from_filters(&[col(C_LEVEL).eq(lit("district"))]);
        let mut gather = Gather::new(&districts, &index);
        gather.keep(vec![above.clone()]);
        gather.cut(&whole);
        let batches = written(gather.finish(None)?, 8192).await;
        assert_eq!(texts(&batches, 0), ["001", "001"]);
        assert_eq!(texts(&batches, 1), ["unit 001", "unit 001"]);
        // A projection naming a column twice.
        let mut gather = Gather::new(&districts, &index);
        gather.keep(vec![above.clone()]);
        let batches = written(gather.finish(Some(&vec![5, 0, 5]))?, 8192).await;
        assert_eq!(texts(&batches, 0), ["births"]);
        assert_eq!(texts(&batches, 1), ["001"]);
        assert_eq!(texts(&batches, 2), ["births"]);
        // A cell with no wanted row is not held.
        let mut gather = Gather::new(&districts, &index);
        gather.keep(vec![wards]);
        assert!(gather.cells.is_empty());
        assert!(written(gather.finish(None)?, 8192).await.is_empty());
        Ok(())
    }

    #[test]
    fn filters_become_wanted_values() {
        let filters = vec![
            col(C_UNIT).eq(lit("001")),
            lit("2024Q3").eq(col(C_PERIOD)),
            in_list(
                col(C_INDICATOR),
                vec![lit("births"), lit("population")],
                false,
            ),
            in_list(col(C_INDICATOR), vec![lit("births"), lit("deaths")], false),
            col("value").gt(lit(3.0)),
        ];
        let w = Wanted::from_filters(&filters);
        assert!(w.allows(C_UNIT, "001") && !w.allows(C_UNIT, "002"));
        assert!(w.allows(C_PERIOD, "2024Q3"));
        // Two IN lists on one column intersect.
        assert_eq!(
            w.get(C_INDICATOR)
                .map(|s| s.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["births".to_string()])
        );
        // Unconstrained columns allow everything.
        assert!(w.allows(C_LEVEL, "ward"));
        assert!(column_values_for(&col("value").gt(lit(3.0)), &FILTERABLE).is_none());
        assert!(
            column_values_for(&in_list(col(C_UNIT), vec![lit("001")], true), &FILTERABLE).is_none(),
            "NOT IN is not a constraint"
        );
        // A short IN list as DataFusion's simplifier writes it.
        let or = col(C_PERIOD)
            .eq(lit("2024-04"))
            .or(col(C_PERIOD).eq(lit("2024-05")))
            .or(lit("2024-06").eq(col(C_PERIOD)));
        assert_eq!(
            column_values_for(&or, &FILTERABLE),
            Some((
                C_PERIOD,
                vec!["2024-04".into(), "2024-05".into(), "2024-06".into()]
            ))
        );
        // ... but not an OR across columns, nor with anything else.
        let across = col(C_PERIOD)
            .eq(lit("2024-04"))
            .or(col(C_UNIT).eq(lit("001")));
        assert!(column_values_for(&across, &FILTERABLE).is_none());
        let other = col(C_PERIOD)
            .eq(lit("2024-04"))
            .or(col("value").gt(lit(3.0)));
        assert!(column_values_for(&other, &FILTERABLE).is_none());
        // A Delta partition column is dictionary-encoded, and so is the
        // literal DataFusion compares it with.
        let dictionary = lit(ScalarValue::Dictionary(
            Box::new(DataType::UInt16),
            Box::new(ScalarValue::Utf8(Some("2024-07".into()))),
        ));
        assert_eq!(
            column_values_for(&col(C_PERIOD).eq(dictionary), &FILTERABLE),
            Some((C_PERIOD, vec!["2024-07".to_string()]))
        );
    }

    #[test]
    fn period_comparisons_bound_the_periods() {
        // As text, a year's months sort before its quarters and halves
        // ('-' < 'Q' < 'S'), and the year itself before all of them.
        let w = Wanted::from_filters(&[
            col(C_PERIOD).gt_eq(lit("2024-11")),
            lit("2025-02").gt_eq(col(C_PERIOD)),
        ]);
        let names = |w: &Wanted| {
            w.periods().map(|ps| {
                let mut names: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                names.sort();
                names
            })
        };
        assert_eq!(
            names(&w),
            Some(
                [
                    "2024-11", "2024-12", "2024Q1", "2024Q2", "2024Q3", "2024Q4", "2024S1",
                    "2024S2", "2025", "2025-01", "2025-02",
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert!(!w.allows(C_PERIOD, "2024-10") && w.allows(C_PERIOD, "2025-01"));
        // With a period type, only that type.
        let months = Wanted::from_filters(&[
            col(C_PERIOD).gt_eq(lit("2024-11")),
            col(C_PERIOD).lt_eq(lit("2025-02")),
            col(C_PTYPE).eq(lit("month")),
        ]);
        assert_eq!(names(&months).map(|v| v.len()), Some(4));
        // A named set is bounded too; no period filter leaves all.
        let named = Wanted::from_filters(&[
            in_list(col(C_PERIOD), vec![lit("2024-01"), lit("2024-05")], false),
            col(C_PERIOD).lt(lit("2024-03")),
        ]);
        assert_eq!(names(&named), Some(vec!["2024-01".to_string()]));
        assert!(
            Wanted::from_filters(&[col(C_UNIT).eq(lit("01"))])
                .periods()
                .is_none()
        );
        assert_eq!(
            narrowing(&[&col(C_PERIOD).lt(lit("2024-03"))], &FILTERABLE),
            vec![TableProviderFilterPushDown::Inexact]
        );
    }

    #[test]
    fn source_periods_of_a_quarter() {
        let q: Period = "2024Q3".parse().expect("period");
        let months: Vec<String> = source_periods(PeriodType::Month, &q)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(months, ["2024-07", "2024-08", "2024-09"]);
        assert!(source_periods(PeriodType::Year, &q).is_empty());
        let y: Period = "2024".parse().expect("period");
        assert_eq!(source_periods(PeriodType::Quarter, &y).len(), 4);
        assert_eq!(source_periods(PeriodType::HalfYear, &y).len(), 2);
    }
}
