//! Reading input files (Parquet, CSV) in the long or the wide layout.
//!
//! Long: `unit_code, period, indicator_code, value` (other columns ignored).
//! Wide, as spreadsheets and ETL jobs produce it: `unit_code, period` and
//! one column per indicator code; each non-empty cell becomes one value.

use std::path::Path;
use std::sync::Arc;

use baocao_catalog::report::{INDICATOR_CODE, PERIOD, UNIT_CODE, VALUE};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{IngestError, Problem, Rejection, RowError};

/// An input in the long layout, with the input row of each long row.
#[derive(Debug, Clone)]
pub struct Input {
    pub batch: RecordBatch,
    /// 1-based input row of each batch row.
    pub rows: Vec<usize>,
}

/// Parses a whole Parquet file's content as one batch.
fn parse_parquet(content: Vec<u8>, source: &str) -> Result<RecordBatch, IngestError> {
    let read_err = |message: String| IngestError::Read {
        path: source.to_string(),
        message,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(content))
        .map_err(|e| read_err(format!("not a readable Parquet file ({e})")))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| read_err(e.to_string()))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    Ok(concat_batches(&schema, &batches)?)
}

/// How delimited text (a CSV file, COPY data) is laid out.
#[derive(Debug, Clone)]
pub struct Delimited {
    /// The first line names the columns (or, with given names, is skipped).
    pub header: bool,
    pub delimiter: u8,
    /// CSV quoting; off for PostgreSQL's text format.
    pub quoting: bool,
    /// The text of a NULL field (`""` in CSV, `\N` in text format).
    pub null: String,
    /// Trim spaces around fields (spreadsheet exports).
    pub trim: bool,
}

impl Delimited {
    /// A CSV file as spreadsheets and ETL jobs write it.
    pub fn csv_file() -> Self {
        Delimited {
            header: true,
            delimiter: b',',
            quoting: true,
            null: String::new(),
            trim: true,
        }
    }
}

/// Parses delimited text into a batch of text columns, named by `names` or,
/// without them, by the header line. Errors name the line and the field.
pub fn parse_delimited(
    data: &[u8],
    format: &Delimited,
    names: Option<&[&str]>,
    source: &str,
) -> Result<RecordBatch, IngestError> {
    let read_err = |message: String| IngestError::Read {
        path: source.to_string(),
        message,
    };
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(format.header)
        .delimiter(format.delimiter)
        .flexible(true)
        .quoting(format.quoting);
    let mut reader = builder.from_reader(data);
    let names: Vec<String> = match names {
        Some(n) => n.iter().map(|s| s.to_string()).collect(),
        None => {
            let headers = reader
                .byte_headers()
                .map_err(|e| read_err(format!("cannot read the header: {e}")))?
                .clone();
            let names = headers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    std::str::from_utf8(h)
                        .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
                        .map_err(|_| {
                            read_err(format!("column {} of the header is not UTF-8 text", i + 1))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if names.is_empty() || names.iter().all(String::is_empty) {
                return Err(read_err(
                    "the file is empty: a CSV file starts with a header line naming its columns"
                        .into(),
                ));
            }
            names
        }
    };
    let n = names.len();
    let mut columns: Vec<StringBuilder> = (0..n).map(|_| StringBuilder::new()).collect();
    let mut errors = Vec::new();
    for (i, record) in reader.byte_records().enumerate() {
        let row = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError {
                    problem: Problem::Shape,
                    row: Some(row),
                    field: None,
                    reason: format!("cannot read the line: {e}"),
                });
                break;
            }
        };
        if record.len() != n {
            errors.push(RowError {
                problem: Problem::Shape,
                row: Some(row),
                field: None,
                reason: format!(
                    "{} fields where {n} were expected ({})",
                    record.len(),
                    names.join(", ")
                ),
            });
            continue;
        }
        for (k, cell) in record.iter().enumerate() {
            match std::str::from_utf8(cell) {
                Ok(t) => {
                    let t = if format.trim { t.trim() } else { t };
                    if t == format.null {
                        columns[k].append_null();
                    } else {
                        columns[k].append_value(t);
                    }
                }
                Err(_) => {
                    errors.push(RowError {
                        problem: Problem::Shape,
                        row: Some(row),
                        field: Some(names[k].clone()),
                        reason: format!("{} is not UTF-8 text (save the file as UTF-8)", names[k]),
                    });
                    columns[k].append_null();
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(rejection(source, errors).into());
    }
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(n, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(|c| Arc::new(c.finish()) as ArrayRef)
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Reads a `.parquet` or `.csv` file into the long layout.
pub fn read_file(path: &Path) -> Result<Input, IngestError> {
    let shown = path.display().to_string();
    let content = std::fs::read(path).map_err(|e| IngestError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    read_input(&shown, content)
}

/// Brings the content of a `.parquet` or `.csv` file called `name` into
/// the long layout (for a caller that already holds the bytes).
pub fn read_input(name: &str, content: Vec<u8>) -> Result<Input, IngestError> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase);
    let batch = match ext.as_deref() {
        Some("parquet") => parse_parquet(content, name)?,
        Some("csv") => parse_delimited(&content, &Delimited::csv_file(), None, name)?,
        _ => {
            return Err(IngestError::Read {
                path: name.to_string(),
                message: "only .parquet and .csv files are read".into(),
            });
        }
    };
    Ok(to_long(&batch, name)?)
}

fn numbers(
    column: &ArrayRef,
    name: &str,
    rows: impl Fn(usize) -> usize,
    errors: &mut Vec<RowError>,
) -> Option<Float64Array> {
    if column.data_type().is_numeric() {
        return cast(column, &DataType::Float64)
            .ok()?
            .as_any()
            .downcast_ref::<Float64Array>()
            .cloned();
    }
    let text = cast(column, &DataType::Utf8).ok()?;
    let text = text.as_any().downcast_ref::<StringArray>()?.clone();
    let mut out = Vec::with_capacity(text.len());
    for i in 0..text.len() {
        if text.is_null(i) {
            out.push(None);
            continue;
        }
        let t = text.value(i).trim();
        match t.parse::<f64>() {
            Ok(v) => out.push(Some(v)),
            Err(_) => {
                errors.push(RowError {
                    problem: Problem::Invalid,
                    row: Some(rows(i)),
                    field: Some(name.to_string()),
                    reason: format!("{name} '{t}' is not a number"),
                });
                out.push(None);
            }
        }
    }
    Some(Float64Array::from(out))
}

fn rejection(source: &str, errors: Vec<RowError>) -> Rejection {
    let total = errors.len();
    Rejection {
        source: source.to_string(),
        errors: errors.into_iter().take(crate::MAX_ERRORS).collect(),
        total,
    }
}

/// Brings a batch in either layout into the long one.
pub fn to_long(batch: &RecordBatch, source: &str) -> Result<Input, Rejection> {
    let schema = batch.schema();
    let has = |c: &str| schema.column_with_name(c).is_some();
    let mut errors = Vec::new();
    if batch.num_rows() == 0 {
        return Err(rejection(
            source,
            vec![RowError {
                problem: Problem::Shape,
                row: None,
                field: None,
                reason: "the input has no rows".into(),
            }],
        ));
    }
    if has(INDICATOR_CODE) {
        // Long layout: only the value may need parsing.
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut fields = Vec::new();
        for f in schema.fields() {
            let col = batch
                .column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| Arc::new(StringArray::new_null(0)));
            if f.name() == VALUE
                && !col.data_type().is_numeric()
                && let Some(v) = numbers(&col, VALUE, |i| i + 1, &mut errors)
            {
                fields.push(Field::new(VALUE, DataType::Float64, true));
                columns.push(Arc::new(v));
                continue;
            }
            fields.push(f.as_ref().clone());
            columns.push(col);
        }
        if !errors.is_empty() {
            return Err(rejection(source, errors));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| {
            rejection(
                source,
                vec![RowError {
                    problem: Problem::Shape,
                    row: None,
                    field: None,
                    reason: e.to_string(),
                }],
            )
        })?;
        let rows = (1..=batch.num_rows()).collect();
        return Ok(Input { batch, rows });
    }
    // Wide layout.
    for c in [UNIT_CODE, PERIOD] {
        if !has(c) {
            errors.push(RowError {
                problem: Problem::Shape,
                row: None,
                field: Some(c.to_string()),
                reason: format!(
                    "column {c} is missing (a file has either the long layout unit_code, period, indicator_code, value, \
                     or the wide one unit_code, period, <indicator>...)"
                ),
            });
        }
    }
    for c in [UNIT_CODE, PERIOD] {
        if let Some(col) = batch.column_by_name(c)
            && !matches!(
                col.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        {
            errors.push(RowError {
                problem: Problem::Shape,
                row: None,
                field: Some(c.to_string()),
                reason: format!(
                    "column {c} must be text, not {} (codes keep their leading zeros only as text)",
                    col.data_type()
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(rejection(source, errors));
    }
    let text = |c: &str| -> Option<StringArray> {
        let col = batch.column_by_name(c)?;
        let t = cast(col, &DataType::Utf8).ok()?;
        t.as_any().downcast_ref::<StringArray>().cloned()
    };
    let (Some(units), Some(periods)) = (text(UNIT_CODE), text(PERIOD)) else {
        return Err(rejection(
            source,
            vec![RowError {
                problem: Problem::Shape,
                row: None,
                field: Some(UNIT_CODE.into()),
                reason: "unit_code and period must be text".into(),
            }],
        ));
    };
    let indicator_columns: Vec<(String, Float64Array)> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != UNIT_CODE && f.name() != PERIOD)
        .filter_map(|f| {
            let col = batch.column_by_name(f.name())?;
            numbers(col, f.name(), |i| i + 1, &mut errors).map(|v| (f.name().clone(), v))
        })
        .collect();
    if indicator_columns.is_empty() {
        errors.push(RowError {
            problem: Problem::Shape,
            row: None,
            field: None,
            reason: "the file has no indicator column (long layout: indicator_code and value; wide: one column per indicator)".into(),
        });
    }
    if !errors.is_empty() {
        return Err(rejection(source, errors));
    }
    let (mut u, mut p, mut ind, mut val, mut rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..batch.num_rows() {
        for (code, values) in &indicator_columns {
            if values.is_null(r) {
                continue;
            }
            u.push((!units.is_null(r)).then(|| units.value(r).to_string()));
            p.push((!periods.is_null(r)).then(|| periods.value(r).to_string()));
            ind.push(Some(code.clone()));
            val.push(Some(values.value(r)));
            rows.push(r + 1);
        }
    }
    let long = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new(UNIT_CODE, DataType::Utf8, true),
            Field::new(PERIOD, DataType::Utf8, true),
            Field::new(INDICATOR_CODE, DataType::Utf8, true),
            Field::new(VALUE, DataType::Float64, true),
        ])),
        vec![
            Arc::new(StringArray::from(u)),
            Arc::new(StringArray::from(p)),
            Arc::new(StringArray::from(ind)),
            Arc::new(Float64Array::from(val)),
        ],
    )
    .map_err(|e| {
        rejection(
            source,
            vec![RowError {
                problem: Problem::Shape,
                row: None,
                field: None,
                reason: e.to_string(),
            }],
        )
    })?;
    Ok(Input { batch: long, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str, v: Vec<Option<&str>>) -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Utf8, true),
            Arc::new(StringArray::from(v)),
        )
    }

    fn batch(cols: Vec<(Field, ArrayRef)>) -> RecordBatch {
        let (fields, arrays): (Vec<_>, Vec<_>) = cols.into_iter().unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
    }

    #[test]
    fn wide_rows_unpivot_and_keep_their_row_numbers() {
        let b = batch(vec![
            text("unit_code", vec![Some("00004"), Some("00007")]),
            text("period", vec![Some("2024-07"), Some("2024-07")]),
            text("births", vec![Some("12"), None]),
            text("deaths", vec![Some("5"), Some("2")]),
        ]);
        let input = to_long(&b, "x.csv").expect("wide");
        assert_eq!(input.batch.num_rows(), 3);
        assert_eq!(input.rows, vec![1, 1, 2]);
        let codes = input.batch.column_by_name(INDICATOR_CODE).expect("codes");
        let codes = codes.as_any().downcast_ref::<StringArray>().expect("text");
        assert_eq!(
            (codes.value(0), codes.value(1), codes.value(2)),
            ("births", "deaths", "deaths")
        );
    }

    #[test]
    fn text_values_are_parsed_with_row_errors() {
        let b = batch(vec![
            text("unit_code", vec![Some("00004"), Some("00004")]),
            text("period", vec![Some("2024-07"), Some("2024-08")]),
            text("indicator_code", vec![Some("births"), Some("births")]),
            text("value", vec![Some("12"), Some("twelve")]),
        ]);
        let err = to_long(&b, "x.csv").expect_err("bad number");
        assert_eq!(err.errors[0].row, Some(2));
        assert_eq!(err.errors[0].reason, "value 'twelve' is not a number");
    }

    #[test]
    fn a_file_without_rows_or_indicators_is_refused() {
        let empty = batch(vec![text("unit_code", vec![]), text("period", vec![])]);
        assert_eq!(
            to_long(&empty, "x").expect_err("empty").errors[0].reason,
            "the input has no rows"
        );
        let none = batch(vec![
            text("unit_code", vec![Some("00004")]),
            text("period", vec![Some("2024-07")]),
        ]);
        assert!(
            to_long(&none, "x").expect_err("no indicators").errors[0]
                .reason
                .starts_with("the file has no indicator column")
        );
    }
}
