//! The shape of a stored report value: the fact table's schema, shared by
//! the writer (ingest) and the readers (queries).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const UNIT_CODE: &str = "unit_code";
pub const PERIOD: &str = "period";
pub const INDICATOR_CODE: &str = "indicator_code";
pub const VALUE: &str = "value";
pub const SUBMITTED_AT: &str = "submitted_at";
pub const SUBMITTED_BY: &str = "submitted_by";
pub const SUBMISSION_ID: &str = "submission_id";
/// True on a row that withdraws the key's value instead of giving one.
pub const WITHDRAWN: &str = "withdrawn";
/// Where a submission came from: `INSERT`, `COPY`, `DELETE`, `landing/<file>`, `ingest:<files>`, `demo`.
pub const SOURCE: &str = "source";

/// The columns that identify one value; a later submission with the same key
/// corrects the earlier one.
pub const KEY: [&str; 3] = [UNIT_CODE, PERIOD, INDICATOR_CODE];

/// The stored table is partitioned by period: a query for one period reads
/// one folder, and rows inside a file are sorted by unit so that file and
/// row-group statistics skip the rest.
pub const PARTITION_COLUMNS: [&str; 1] = [PERIOD];

/// Schema of every stored report value (`reports_history`).
pub fn reports_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(UNIT_CODE, DataType::Utf8, false),
        Field::new(PERIOD, DataType::Utf8, false),
        Field::new(INDICATOR_CODE, DataType::Utf8, false),
        Field::new(VALUE, DataType::Float64, false),
        Field::new(
            SUBMITTED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(SUBMITTED_BY, DataType::Utf8, false),
        Field::new(SUBMISSION_ID, DataType::Utf8, false),
        Field::new(WITHDRAWN, DataType::Boolean, true),
        Field::new(SOURCE, DataType::Utf8, true),
    ]))
}
