//! `information_schema` as PostgreSQL has it, for the tools that read it
//! rather than pg_catalog (Metabase, Grafana, Power BI, Npgsql's
//! `GetSchema`): `tables`, `columns` with the `udt_*` columns, `schemata`,
//! `views`, `character_sets`, and the constraint views — empty, as no table
//! here declares a constraint.
//!
//! DataFusion's own information_schema has fewer views and columns. The
//! tables are fixed once the server starts (no DDL reaches the engine), so
//! these are built once, from the catalog, after every schema is in place.

use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

pub const SCHEMA: &str = "information_schema";

/// PostgreSQL's `data_type` and `udt_name` for an Arrow type, as
/// arrow-pg maps it on the wire.
fn pg_type(t: &DataType) -> (&'static str, &'static str) {
    match t {
        DataType::Boolean => ("boolean", "bool"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint", "int2"),
        DataType::Int32 | DataType::UInt16 => ("integer", "int4"),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ("bigint", "int8"),
        DataType::Float16 | DataType::Float32 => ("real", "float4"),
        DataType::Float64 => ("double precision", "float8"),
        DataType::Decimal128(..) | DataType::Decimal256(..) => ("numeric", "numeric"),
        DataType::Date32 | DataType::Date64 => ("date", "date"),
        DataType::Time32(_) | DataType::Time64(_) => ("time without time zone", "time"),
        DataType::Timestamp(_, None) => ("timestamp without time zone", "timestamp"),
        DataType::Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz"),
        DataType::Interval(_) => ("interval", "interval"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ("bytea", "bytea"),
        DataType::List(f) | DataType::LargeList(f) => match f.data_type() {
            DataType::Int16 => ("ARRAY", "_int2"),
            DataType::Int32 => ("ARRAY", "_int4"),
            DataType::Int64 => ("ARRAY", "_int8"),
            DataType::Float64 => ("ARRAY", "_float8"),
            DataType::Boolean => ("ARRAY", "_bool"),
            _ => ("ARRAY", "_text"),
        },
        _ => ("text", "text"),
    }
}

/// `numeric_precision`, `numeric_precision_radix`, `numeric_scale`,
/// `datetime_precision` of a type.
fn precision(t: &DataType) -> [Option<i32>; 4] {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => [Some(16), Some(2), Some(0), None],
        DataType::Int32 | DataType::UInt16 => [Some(32), Some(2), Some(0), None],
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => [Some(64), Some(2), Some(0), None],
        DataType::Float16 | DataType::Float32 => [Some(24), Some(2), None, None],
        DataType::Float64 => [Some(53), Some(2), None, None],
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            [Some(*p as i32), Some(10), Some(*s as i32), None]
        }
        DataType::Date32 | DataType::Date64 => [None, None, None, Some(0)],
        DataType::Timestamp(unit, _) => {
            let digits = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                _ => 6,
            };
            [None, None, None, Some(digits)]
        }
        _ => [None; 4],
    }
}

/// Columns of text (`None`) or integers (`Some`), built row by row.
struct Rows {
    fields: Vec<Field>,
    text: Vec<Vec<Option<String>>>,
    ints: Vec<Vec<Option<i32>>>,
}

#[derive(Clone, Copy)]
enum Col {
    Text(&'static str),
    Int(&'static str),
}

use Col::{Int, Text};

/// A cell of a row, in the order of the view's columns.
enum Cell {
    S(Option<String>),
    I(Option<i32>),
}

fn s(v: impl Into<String>) -> Cell {
    Cell::S(Some(v.into()))
}

const NULL: Cell = Cell::S(None);

impl Rows {
    fn new(columns: &[Col]) -> Rows {
        Rows {
            fields: columns
                .iter()
                .map(|c| match c {
                    Text(n) => Field::new(*n, DataType::Utf8, true),
                    Int(n) => Field::new(*n, DataType::Int32, true),
                })
                .collect(),
            text: vec![Vec::new(); columns.len()],
            ints: vec![Vec::new(); columns.len()],
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        for (i, cell) in row.into_iter().enumerate() {
            match cell {
                Cell::S(v) => self.text[i].push(v),
                Cell::I(v) => self.ints[i].push(v),
            }
        }
    }

    fn table(self) -> Result<Arc<MemTable>> {
        let schema: SchemaRef = Arc::new(Schema::new(self.fields.clone()));
        let columns: Vec<ArrayRef> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| -> ArrayRef {
                if f.data_type() == &DataType::Int32 {
                    Arc::new(Int32Array::from(self.ints[i].clone()))
                } else {
                    Arc::new(StringArray::from(self.text[i].clone()))
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

const TABLES: &[Col] = &[
    Text("table_catalog"),
    Text("table_schema"),
    Text("table_name"),
    Text("table_type"),
    Text("self_referencing_column_name"),
    Text("reference_generation"),
    Text("user_defined_type_catalog"),
    Text("user_defined_type_schema"),
    Text("user_defined_type_name"),
    Text("is_insertable_into"),
    Text("is_typed"),
    Text("commit_action"),
];

const COLUMNS: &[Col] = &[
    Text("table_catalog"),
    Text("table_schema"),
    Text("table_name"),
    Text("column_name"),
    Int("ordinal_position"),
    Text("column_default"),
    Text("is_nullable"),
    Text("data_type"),
    Int("character_maximum_length"),
    Int("character_octet_length"),
    Int("numeric_precision"),
    Int("numeric_precision_radix"),
    Int("numeric_scale"),
    Int("datetime_precision"),
    Text("interval_type"),
    Int("interval_precision"),
    Text("character_set_catalog"),
    Text("character_set_schema"),
    Text("character_set_name"),
    Text("collation_catalog"),
    Text("collation_schema"),
    Text("collation_name"),
    Text("domain_catalog"),
    Text("domain_schema"),
    Text("domain_name"),
    Text("udt_catalog"),
    Text("udt_schema"),
    Text("udt_name"),
    Text("scope_catalog"),
    Text("scope_schema"),
    Text("scope_name"),
    Int("maximum_cardinality"),
    Text("dtd_identifier"),
    Text("is_self_referencing"),
    Text("is_identity"),
    Text("identity_generation"),
    Text("identity_start"),
    Text("identity_increment"),
    Text("identity_maximum"),
    Text("identity_minimum"),
    Text("identity_cycle"),
    Text("is_generated"),
    Text("generation_expression"),
    Text("is_updatable"),
];

const SCHEMATA: &[Col] = &[
    Text("catalog_name"),
    Text("schema_name"),
    Text("schema_owner"),
    Text("default_character_set_catalog"),
    Text("default_character_set_schema"),
    Text("default_character_set_name"),
    Text("sql_path"),
];

const VIEWS: &[Col] = &[
    Text("table_catalog"),
    Text("table_schema"),
    Text("table_name"),
    Text("view_definition"),
    Text("check_option"),
    Text("is_updatable"),
    Text("is_insertable_into"),
    Text("is_trigger_updatable"),
    Text("is_trigger_deletable"),
    Text("is_trigger_insertable_into"),
];

const CHARACTER_SETS: &[Col] = &[
    Text("character_set_catalog"),
    Text("character_set_schema"),
    Text("character_set_name"),
    Text("character_repertoire"),
    Text("form_of_use"),
    Text("default_collate_catalog"),
    Text("default_collate_schema"),
    Text("default_collate_name"),
];

/// The constraint views, empty: (name, columns).
const CONSTRAINT_VIEWS: &[(&str, &[Col])] = &[
    (
        "table_constraints",
        &[
            Text("constraint_catalog"),
            Text("constraint_schema"),
            Text("constraint_name"),
            Text("table_catalog"),
            Text("table_schema"),
            Text("table_name"),
            Text("constraint_type"),
            Text("is_deferrable"),
            Text("initially_deferred"),
            Text("enforced"),
            Text("nulls_distinct"),
        ],
    ),
    (
        "key_column_usage",
        &[
            Text("constraint_catalog"),
            Text("constraint_schema"),
            Text("constraint_name"),
            Text("table_catalog"),
            Text("table_schema"),
            Text("table_name"),
            Text("column_name"),
            Int("ordinal_position"),
            Int("position_in_unique_constraint"),
        ],
    ),
    (
        "referential_constraints",
        &[
            Text("constraint_catalog"),
            Text("constraint_schema"),
            Text("constraint_name"),
            Text("unique_constraint_catalog"),
            Text("unique_constraint_schema"),
            Text("unique_constraint_name"),
            Text("match_option"),
            Text("update_rule"),
            Text("delete_rule"),
        ],
    ),
    (
        "constraint_column_usage",
        &[
            Text("table_catalog"),
            Text("table_schema"),
            Text("table_name"),
            Text("column_name"),
            Text("constraint_catalog"),
            Text("constraint_schema"),
            Text("constraint_name"),
        ],
    ),
    (
        "check_constraints",
        &[
            Text("constraint_catalog"),
            Text("constraint_schema"),
            Text("constraint_name"),
            Text("check_clause"),
        ],
    ),
];

/// A table: its name and its columns (name, type, nullable).
type Described = (String, Vec<(String, DataType, bool)>);

/// Registers `information_schema` in `database`, describing every schema
/// there (call it last, when all tables are registered).
pub async fn register(ctx: &SessionContext, database: &str) -> Result<()> {
    let catalog = ctx
        .catalog(database)
        .with_context(|| format!("no catalog {database}"))?;
    let mut tables = Rows::new(TABLES);
    let mut columns = Rows::new(COLUMNS);
    let mut schemata = Rows::new(SCHEMATA);
    let views = Rows::new(VIEWS);
    let mut schema_names = catalog.schema_names();
    schema_names.retain(|n| n != SCHEMA);
    schema_names.sort();
    // The views describe themselves too, as in PostgreSQL.
    let own: Vec<(&str, &[Col])> = [
        ("tables", TABLES),
        ("columns", COLUMNS),
        ("schemata", SCHEMATA),
        ("views", VIEWS),
        ("character_sets", CHARACTER_SETS),
    ]
    .into_iter()
    .chain(CONSTRAINT_VIEWS.iter().copied())
    .collect();
    for schema_name in schema_names.iter().map(String::as_str).chain([SCHEMA]) {
        schemata.push(vec![
            s(database),
            s(schema_name),
            s("postgres"),
            NULL,
            NULL,
            NULL,
            NULL,
        ]);
        let described: Vec<Described> = if schema_name == SCHEMA {
            own.iter()
                .map(|(name, cols)| {
                    let fields = Rows::new(cols).fields;
                    (
                        name.to_string(),
                        fields
                            .iter()
                            .map(|f| (f.name().clone(), f.data_type().clone(), true))
                            .collect(),
                    )
                })
                .collect()
        } else {
            let Some(schema) = catalog.schema(schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            let mut out = Vec::new();
            for name in names {
                let Ok(Some(table)) = schema.table(&name).await else {
                    continue;
                };
                let fields = table
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                    .collect();
                out.push((name, fields));
            }
            out
        };
        for (table, fields) in described {
            tables.push(vec![
                s(database),
                s(schema_name),
                s(table.as_str()),
                s("BASE TABLE"),
                NULL,
                NULL,
                NULL,
                NULL,
                NULL,
                s(if schema_name == "public" && table == "reports" {
                    "YES"
                } else {
                    "NO"
                }),
                s("NO"),
                NULL,
            ]);
            for (i, (column, data_type, nullable)) in fields.iter().enumerate() {
                let (type_name, udt) = pg_type(data_type);
                let [precision, radix, scale, datetime] = precision(data_type);
                let mut row = vec![
                    s(database),
                    s(schema_name),
                    s(table.as_str()),
                    s(column.as_str()),
                    Cell::I(i32::try_from(i + 1).ok()),
                    NULL,
                    s(if *nullable { "YES" } else { "NO" }),
                    s(type_name),
                    Cell::I(None),
                    Cell::I((udt == "text").then_some(1_073_741_824)),
                    Cell::I(precision),
                    Cell::I(radix),
                    Cell::I(scale),
                    Cell::I(datetime),
                    NULL,
                    Cell::I(None),
                ];
                // character set, collation and domain: none
                row.extend((0..9).map(|_| NULL));
                row.extend([s(database), s("pg_catalog"), s(udt)]);
                row.extend([NULL, NULL, NULL, Cell::I(None), s((i + 1).to_string())]);
                row.extend([s("NO"), s("NO")]);
                row.extend((0..6).map(|_| NULL));
                row.extend([s("NEVER"), NULL, s("NO")]);
                columns.push(row);
            }
        }
    }
    let mut character_sets = Rows::new(CHARACTER_SETS);
    character_sets.push(vec![
        NULL,
        NULL,
        s("UTF8"),
        s("UCS"),
        s("UTF8"),
        s(database),
        s("pg_catalog"),
        s("C.UTF-8"),
    ]);
    let provider = MemorySchemaProvider::new();
    provider.register_table("tables".into(), tables.table()?)?;
    provider.register_table("columns".into(), columns.table()?)?;
    provider.register_table("schemata".into(), schemata.table()?)?;
    provider.register_table("views".into(), views.table()?)?;
    provider.register_table("character_sets".into(), character_sets.table()?)?;
    for (name, cols) in CONSTRAINT_VIEWS {
        provider.register_table(name.to_string(), Rows::new(cols).table()?)?;
    }
    catalog.register_schema(SCHEMA, Arc::new(provider))?;
    Ok(())
}
