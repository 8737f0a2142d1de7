//! SQL functions PostgreSQL clients call at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::{SessionContext, create_udf};

use super::settings::SERVER_VERSION;

/// `version()` as PostgreSQL words it — clients parse "PostgreSQL 16.6"
/// out of it (SQLAlchemy gives up on anything else) — naming baocao and
/// DataFusion after it.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (baocao {} on Apache DataFusion {}) on {}-{}, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// `pg_type_is_visible(oid)` and the like: every object is visible, as
/// there is one schema of tables and pg_catalog.
fn visible(name: &str) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let oids = ColumnarValue::values_to_arrays(args)?;
            let visible: BooleanArray = oids[0].logical_nulls().map_or_else(
                || BooleanArray::from(vec![true; oids[0].len()]),
                |nulls| {
                    (0..oids[0].len())
                        .map(|i| nulls.is_valid(i).then_some(true))
                        .collect()
                },
            );
            Ok(ColumnarValue::Array(Arc::new(visible)))
        }),
    )
}

/// The built-in types by the names `to_regtype` accepts, with their oids
/// (those of PostgreSQL, as in pg_catalog.pg_type).
const TYPES: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("char", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("regproc", 24),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("xml", 142),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("bpchar", 1042),
    ("character", 1042),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("time without time zone", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("timetz", 1266),
    ("time with time zone", 1266),
    ("numeric", 1700),
    ("decimal", 1700),
    ("regclass", 2205),
    ("regtype", 2206),
    ("uuid", 2950),
    ("jsonb", 3802),
];

/// `to_regtype(name)`: the oid of a type by name, NULL for a type that
/// does not exist here (clients probe for extension types such as hstore).
fn to_regtype() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&names[0])?;
            let oids: Int32Array = names
                .iter()
                .map(|name| {
                    let name = name?
                        .trim()
                        .trim_start_matches("pg_catalog.")
                        .to_lowercase();
                    TYPES.iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// `col_description(oid, column)` and the other comment functions: no
/// object here has a comment, so NULL.
fn no_description(name: &str, args: Vec<DataType>) -> ScalarUDF {
    create_udf(
        name,
        args,
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// `pg_get_function_result(oid)` / `pg_get_function_arguments(oid)`.
fn function_text(name: &str, result: bool) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let oids = ColumnarValue::values_to_arrays(args)?;
            let oids = datafusion::common::cast::as_int32_array(&oids[0])?;
            let text: StringArray = oids
                .iter()
                .map(|oid| super::pg_catalog::function_text(oid?, result))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(text)))
        }),
    )
}

/// A function of any of its signatures that returns NULL text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NoText {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for NoText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}

/// Registers the functions, replacing DataFusion's `version()`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(to_regtype());
    ctx.register_udf(format_udf());
    ctx.register_udf(function_text("pg_get_function_result", true));
    ctx.register_udf(function_text("pg_get_function_arguments", false));
    ctx.register_udf(no_description(
        "col_description",
        vec![DataType::Int32, DataType::Int32],
    ));
    // No table has an index: no index definition.
    ctx.register_udf(ScalarUDF::new_from_impl(NoText {
        name: "pg_get_indexdef",
        signature: Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(3)],
            Volatility::Stable,
        ),
    }));
    ctx.register_udf(no_description(
        "obj_description",
        vec![DataType::Int32, DataType::Utf8],
    ));
    ctx.register_udf(no_description(
        "shobj_description",
        vec![DataType::Int32, DataType::Utf8],
    ));
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
        "pg_conversion_is_visible",
        "pg_opclass_is_visible",
        "pg_operator_is_visible",
        "pg_ts_config_is_visible",
    ] {
        ctx.register_udf(visible(name));
    }
    let text = version_text();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    ));
}

/// PostgreSQL's `format(formatstr, args...)` with `%s`, `%I`, `%L` and
/// `%%` (Metabase names its types and tables with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn format_row(template: &str, args: &[Option<String>]) -> DfResult<String> {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next().ok_or_else(|| {
            DataFusionError::Execution("unterminated format() type specifier".into())
        })?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .get(next)
            .ok_or_else(|| DataFusionError::Execution("too few arguments for format()".into()))?;
        next += 1;
        match (spec, arg) {
            ('s', v) => out.push_str(v.as_deref().unwrap_or("")),
            ('I', Some(v)) => out.push_str(&quote_ident(v)),
            ('I', None) => {
                return Err(DataFusionError::Execution(
                    "null values cannot be formatted as an SQL identifier".into(),
                ));
            }
            ('L', Some(v)) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
            ('L', None) => out.push_str("NULL"),
            (other, _) => {
                return Err(DataFusionError::Execution(format!(
                    "unrecognized format() type specifier \"{other}\""
                )));
            }
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| {
                let array = a.to_array(rows)?;
                let text = cast(&array, &DataType::Utf8)?;
                Ok(datafusion::common::cast::as_string_array(&text)?.clone())
            })
            .collect::<DfResult<Vec<StringArray>>>()?;
        let Some((template, rest)) = columns.split_first() else {
            return Err(DataFusionError::Execution(
                "format() needs a format string".into(),
            ));
        };
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            if template.is_null(row) {
                out.push(None);
                continue;
            }
            let args: Vec<Option<String>> = rest
                .iter()
                .map(|c| (!c.is_null(row)).then(|| c.value(row).to_string()))
                .collect();
            out.push(Some(format_row(template.value(row), &args)?));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

fn format_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Format {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// Registers `to_regclass(name)`: the oid pg_class gives a table, by
/// `name` or `schema.name` (quoted or not), NULL for no such table. The
/// tables are fixed once the server runs, so their oids are read once,
/// after every schema is registered. `CAST(expr AS regclass)` of anything
/// but a literal becomes a call of it (see `select.rs`).
pub async fn register_to_regclass(ctx: &SessionContext) -> DfResult<()> {
    let batches = ctx
        .sql(
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        )
        .await?
        .collect()
        .await?;
    let mut oids: HashMap<String, i32> = HashMap::new();
    for batch in &batches {
        let oid = datafusion::common::cast::as_int32_array(batch.column(0))?;
        let schema = cast(batch.column(1), &DataType::Utf8)?;
        let schema = datafusion::common::cast::as_string_array(&schema)?;
        let name = cast(batch.column(2), &DataType::Utf8)?;
        let name = datafusion::common::cast::as_string_array(&name)?;
        for i in 0..batch.num_rows() {
            let (schema, name) = (schema.value(i), name.value(i));
            oids.insert(format!("{schema}.{name}"), oid.value(i));
            // Unqualified names resolve along the search path: public, then
            // pg_catalog.
            if schema == "public" || (schema == "pg_catalog" && !oids.contains_key(name)) {
                oids.insert(name.to_string(), oid.value(i));
            }
        }
    }
    let oids = Arc::new(oids);
    ctx.register_udf(create_udf(
        "to_regclass",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::common::cast::as_string_array(&names[0])?;
            let found: Int32Array = names
                .iter()
                .map(|n| {
                    let n = n?.replace('"', "");
                    oids.get(&n)
                        .or_else(|| oids.get(&n.to_lowercase()))
                        .copied()
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(found)))
        }),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_as_postgresql_does() {
        let args = [
            Some("public".to_string()),
            Some("Unit Names".to_string()),
            None,
        ];
        assert_eq!(
            format_row("%I.%I = %L, 100%%", &args).unwrap(),
            "public.\"Unit Names\" = NULL, 100%"
        );
        assert_eq!(
            format_row("%s-%s", &args[..2]).unwrap(),
            "public-Unit Names"
        );
        assert!(format_row("%s %s %s %s", &args).is_err());
        assert!(format_row("%x", &args).is_err());
    }
}
