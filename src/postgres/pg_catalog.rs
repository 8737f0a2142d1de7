//! Corrections to datafusion-pg-catalog's `pg_catalog` where clients'
//! introspection queries need more than it has. The schema is wrapped, so
//! every other table stays datafusion-pg-catalog's own.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, col, lit};
use datafusion::prelude::SessionContext;

pub const SCHEMA: &str = "pg_catalog";

/// `pg_catalog` with some tables replaced.
#[derive(Debug)]
struct Overridden {
    inner: Arc<dyn SchemaProvider>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for Overridden {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        match self.tables.get(name) {
            Some(t) => Ok(Some(t.clone())),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.inner.table_exist(name)
    }
}

/// datafusion-pg-catalog's table `name`.
async fn original(inner: &Arc<dyn SchemaProvider>, name: &str) -> Result<Arc<dyn TableProvider>> {
    inner
        .table(name)
        .await?
        .with_context(|| format!("pg_catalog has no {name}"))
}

/// A view over `inner`'s table `name` with extra columns of NULL.
async fn with_null_columns(
    inner: &Arc<dyn SchemaProvider>,
    name: &str,
    extra: &[(&str, DataType)],
) -> Result<Arc<dyn TableProvider>> {
    let table = original(inner, name).await?;
    let mut columns: Vec<Expr> = table
        .schema()
        .fields()
        .iter()
        .filter(|f| !extra.iter().any(|(n, _)| n == f.name()))
        .map(|f| col(Field::name(f).as_str()))
        .collect();
    for (column, data_type) in extra {
        columns.push(cast(lit(ScalarValue::Null), data_type.clone()).alias(*column));
    }
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
        .project(columns)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// An empty table with the columns of `inner`'s table `name`, the given
/// ones as arrays of the given element type.
///
/// datafusion-pg-catalog ships pg_constraint and pg_index as rows of a
/// real PostgreSQL's own catalog with their array columns as text
/// (`'{1,2}'`), which `unnest`, `= ANY` and `generate_subscripts` cannot
/// read. None of those rows can join to a table here (their oids are
/// below the 16384 the tables here start at), and no table here has a
/// constraint or an index, so the tables are empty, with array columns.
async fn empty_with_arrays(
    inner: &Arc<dyn SchemaProvider>,
    name: &str,
    arrays: &[(&str, DataType)],
) -> Result<Arc<dyn TableProvider>> {
    let table = original(inner, name).await?;
    let fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| match arrays.iter().find(|(n, _)| n == f.name()) {
            Some((_, element)) => Field::new(
                f.name(),
                DataType::List(Arc::new(Field::new_list_field(element.clone(), true))),
                true,
            ),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The SQL functions baocao adds (`baocao_queries::functions`, and the
/// `reports_as_of` table function), as pg_proc lists them for psql's `\df`
/// and other tools: (name, argument type names, result type name, whether
/// it returns a set). One row per accepted number of arguments.
const FUNCTIONS: &[(&str, &[&str], &str, bool)] = &[
    ("unit_parent", &["text"], "text", false),
    ("unit_parent", &["text", "date"], "text", false),
    ("unit_ancestor", &["text", "text"], "text", false),
    ("unit_ancestor", &["text", "text", "date"], "text", false),
    ("unit_path", &["text"], "text", false),
    ("unit_path", &["text", "date"], "text", false),
    ("unit_name", &["text"], "text", false),
    ("unit_name", &["text", "date"], "text", false),
    ("is_within", &["text", "text"], "boolean", false),
    ("is_within", &["text", "text", "date"], "boolean", false),
    ("period_parent", &["text", "text"], "text", false),
    ("period_start", &["text"], "date", false),
    ("period_end", &["text"], "date", false),
    ("period_type", &["text"], "text", false),
    (
        "reports_as_of",
        &["timestamp with time zone"],
        "SETOF reports",
        true,
    ),
];

/// The oids of the functions above: far above the oids datafusion-pg-catalog
/// hands out to tables (from 16384 up, one per relation).
const FIRST_FUNCTION_OID: i32 = 900_000;

fn type_oid(name: &str) -> i32 {
    match name {
        "text" => 25,
        "date" => 1082,
        "boolean" => 16,
        "timestamp with time zone" => 1184,
        // A set of rows: PostgreSQL's `record`.
        _ => 2249,
    }
}

/// What `pg_get_function_result(oid)` and `pg_get_function_arguments(oid)`
/// say of baocao's functions; NULL for the built-in ones.
pub fn function_text(oid: i32, result: bool) -> Option<String> {
    let i = usize::try_from(oid.checked_sub(FIRST_FUNCTION_OID)?).ok()?;
    let (_, args, returns, _) = FUNCTIONS.get(i)?;
    Some(if result {
        returns.to_string()
    } else {
        args.join(", ")
    })
}

/// pg_proc: datafusion-pg-catalog's rows, then baocao's functions in the
/// `public` schema.
async fn pg_proc(
    ctx: &SessionContext,
    inner: &Arc<dyn SchemaProvider>,
) -> Result<Arc<dyn TableProvider>> {
    let table = original(inner, "pg_proc").await?;
    let public: i32 = {
        let batches = ctx
            .sql("SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public'")
            .await?
            .collect()
            .await?;
        let oids = batches
            .first()
            .context("no public schema in pg_namespace")?
            .column(0)
            .clone();
        datafusion::common::cast::as_int32_array(&oids)?
            .iter()
            .flatten()
            .next()
            .context("no public schema in pg_namespace")?
    };
    let schema = table.schema();
    let value = |field: &str, i: usize| -> Option<String> {
        let (name, args, returns, set) = FUNCTIONS[i];
        let v = match field {
            "oid" => (FIRST_FUNCTION_OID + i as i32).to_string(),
            "proname" => name.to_string(),
            "pronamespace" => public.to_string(),
            "proowner" => "10".to_string(),
            "prolang" => "12".to_string(),
            "procost" => "1".to_string(),
            "prorows" => if set { "1000" } else { "0" }.to_string(),
            "provariadic" => "0".to_string(),
            "prokind" => "f".to_string(),
            "prosecdef" | "proleakproof" => "false".to_string(),
            "proisstrict" => "false".to_string(),
            "proretset" => set.to_string(),
            "provolatile" => "s".to_string(),
            "proparallel" => "s".to_string(),
            "pronargs" => args.len().to_string(),
            "pronargdefaults" => "0".to_string(),
            "prorettype" => type_oid(returns).to_string(),
            "proargtypes" => args
                .iter()
                .map(|a| type_oid(a).to_string())
                .collect::<Vec<_>>()
                .join(" "),
            "prosrc" => name.to_string(),
            _ => return None,
        };
        Some(v)
    };
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            // A column pg_catalog declares NOT NULL gets PostgreSQL's
            // "nothing" there: `-` for a regproc, false, 0 or ''.
            let nothing = match f.data_type() {
                _ if f.is_nullable() => None,
                DataType::Boolean => Some("false"),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    Some(if f.name() == "prosupport" { "-" } else { "" })
                }
                _ => Some("0"),
            };
            let text: StringArray = (0..FUNCTIONS.len())
                .map(|i| value(f.name(), i).or(nothing.map(str::to_string)))
                .collect();
            Ok(arrow_cast(&text, f.data_type())?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let ours = RecordBatch::try_new(schema.clone(), columns)?;
    let ours = MemTable::try_new(schema, vec![vec![ours]])?;
    let plan = LogicalPlanBuilder::scan("pg_proc", provider_as_source(table), None)?
        .union(
            LogicalPlanBuilder::scan("baocao_functions", provider_as_source(Arc::new(ours)), None)?
                .build()?,
        )?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Wraps the `pg_catalog` of `database` with the corrections.
pub async fn register(ctx: &SessionContext, database: &str) -> Result<()> {
    let catalog = ctx
        .catalog(database)
        .with_context(|| format!("no catalog {database}"))?;
    let inner = catalog
        .schema(SCHEMA)
        .context("datafusion-pg-catalog registered no pg_catalog")?;
    let mut tables = HashMap::new();
    // psql's \d+ and SQLAlchemy's get_indexes read pg_class.reloptions.
    tables.insert(
        "pg_class".to_string(),
        with_null_columns(&inner, "pg_class", &[("reloptions", text_array())]).await?,
    );
    tables.insert(
        "pg_constraint".to_string(),
        empty_with_arrays(
            &inner,
            "pg_constraint",
            &[
                ("conkey", DataType::Int16),
                ("confkey", DataType::Int16),
                ("confdelsetcols", DataType::Int16),
                ("conpfeqop", DataType::Int32),
                ("conppeqop", DataType::Int32),
                ("conffeqop", DataType::Int32),
                ("conexclop", DataType::Int32),
            ],
        )
        .await?,
    );
    tables.insert(
        "pg_index".to_string(),
        empty_with_arrays(
            &inner,
            "pg_index",
            &[
                ("indkey", DataType::Int16),
                ("indoption", DataType::Int16),
                ("indclass", DataType::Int32),
                ("indcollation", DataType::Int32),
            ],
        )
        .await?,
    );
    // psql's \df lists baocao's functions.
    tables.insert("pg_proc".to_string(), pg_proc(ctx, &inner).await?);
    catalog.register_schema(SCHEMA, Arc::new(Overridden { inner, tables }))?;
    Ok(())
}
