//! Errors of loading and querying the catalog.

use std::path::PathBuf;

/// Everything that can go wrong while loading catalog files. Each error
/// names the file and, where there is one, the line, so an administrator
/// editing a CSV file can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<u64>,
        message: String,
    },
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl CatalogError {
    pub(crate) fn invalid(file: &str, line: Option<u64>, message: impl Into<String>) -> Self {
        CatalogError::Invalid {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}
