//! SQL functions PostgreSQL clients call at start-up.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, Volatility};
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

/// Registers the functions, replacing DataFusion's `version()`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(to_regtype());
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
