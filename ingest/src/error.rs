//! Errors of validating and committing report batches.

use std::fmt;

/// One problem with one input row (or with the input as a whole when `row`
/// is `None`).
/// What kind of problem a row has; decides the SQLSTATE a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A column is missing or of the wrong type.
    Shape,
    /// A required field is empty.
    Missing,
    /// The unit or indicator is not in the catalog.
    Unknown,
    /// A value, period or level is not acceptable.
    Invalid,
    /// The same key twice in one batch.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    pub problem: Problem,
    /// 1-based data row within the input (the header is not counted).
    pub row: Option<usize>,
    /// The column the problem is in, if it is about one.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Some(r) => write!(f, "row {r}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Why a whole batch was refused. Nothing of a refused batch is committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The input the batch came from (file name, `INSERT`, `COPY`).
    pub source: String,
    /// Every problem found, in row order (capped, see [`MAX_ERRORS`]).
    pub errors: Vec<RowError>,
    /// How many problems there were in all.
    pub total: usize,
}

/// At most this many row errors are kept per batch; the rest are counted.
pub const MAX_ERRORS: usize = 100;

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source)?;
        for (i, e) in self.errors.iter().take(5).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        if self.total > 5 {
            write!(f, " (and {} more)", self.total - 5)?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

// Not `#[from]`: that would make the rejection the error's source too, and
// every cause-chain printer would say it twice.
impl From<Rejection> for IngestError {
    fn from(r: Rejection) -> Self {
        IngestError::Rejected(Box::new(r))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input is invalid; nothing was written.
    #[error("refused {0}")]
    Rejected(Box<Rejection>),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("the reports table at {location}: {source}")]
    Table {
        location: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}
