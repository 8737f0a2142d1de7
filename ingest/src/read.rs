//! Reading input files into record batches.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::IngestError;

/// Reads a whole Parquet file as one batch.
pub fn read_parquet_file(path: &Path) -> Result<RecordBatch, IngestError> {
    let shown = path.display().to_string();
    let read_err = |message: String| IngestError::Read {
        path: shown.clone(),
        message,
    };
    let file = File::open(path).map_err(|e| read_err(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| read_err(format!("not a readable Parquet file ({e})")))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| read_err(e.to_string()))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    Ok(concat_batches(&schema, &batches)?)
}
