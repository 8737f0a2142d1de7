//! The one place where errors become Postgres SQLSTATE codes.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use pgwire::error::{ErrorInfo, PgWireError};

pub const SYNTAX_ERROR: &str = "42601";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const UNDEFINED_COLUMN: &str = "42703";
pub const UNDEFINED_FUNCTION: &str = "42883";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const DATA_EXCEPTION: &str = "22000";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const DIVISION_BY_ZERO: &str = "22012";
pub const OUT_OF_MEMORY: &str = "53200";
pub const STATEMENT_TOO_COMPLEX: &str = "54001";
pub const QUERY_CANCELED: &str = "57014";
pub const INTERNAL_ERROR: &str = "XX000";

pub const UNDEFINED_OBJECT: &str = "42704";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const DUPLICATE_OBJECT: &str = "42710";
pub const INVALID_AUTHORIZATION: &str = "28000";

/// A Postgres error with `code` and a message for the client.
pub fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

/// A DataFusion error, to be classified by `classify` on its way out.
pub fn df_error(e: DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// The SQLSTATE for a DataFusion error.
pub fn for_datafusion(e: &DataFusionError) -> &'static str {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::SQL(e, _) if matches!(**e, ParserError::RecursionLimitExceeded) => {
            STATEMENT_TOO_COMPLEX
        }
        DataFusionError::SQL(..) => SYNTAX_ERROR,
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound { .. } => UNDEFINED_COLUMN,
            _ => SYNTAX_ERROR,
        },
        DataFusionError::NotImplemented(_) => FEATURE_NOT_SUPPORTED,
        DataFusionError::Plan(msg) => {
            if msg.contains("table") && msg.contains("not found") {
                UNDEFINED_TABLE
            } else if msg.contains("Invalid function") || msg.contains("No function matches") {
                UNDEFINED_FUNCTION
            } else {
                SYNTAX_ERROR
            }
        }
        DataFusionError::ResourcesExhausted(_) => OUT_OF_MEMORY,
        DataFusionError::ArrowError(ae, _) => match ae.as_ref() {
            datafusion::arrow::error::ArrowError::DivideByZero => DIVISION_BY_ZERO,
            datafusion::arrow::error::ArrowError::ExternalError(inner) => {
                match inner.downcast_ref::<DataFusionError>() {
                    Some(df) => for_datafusion(df),
                    None => DATA_EXCEPTION,
                }
            }
            _ => DATA_EXCEPTION,
        },
        DataFusionError::Execution(msg) if msg.contains("Divide by zero") => DIVISION_BY_ZERO,
        DataFusionError::Context(_, inner) => for_datafusion(inner),
        DataFusionError::Diagnostic(_, inner) => for_datafusion(inner),
        DataFusionError::Shared(inner) => for_datafusion(inner),
        DataFusionError::Collection(v) => v.first().map(for_datafusion).unwrap_or(INTERNAL_ERROR),
        DataFusionError::External(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                for_datafusion(df)
            } else if inner
                .downcast_ref::<baocao_queries::InvalidArgument>()
                .is_some()
            {
                INVALID_PARAMETER_VALUE
            } else if inner
                .downcast_ref::<crate::row_scope::PermissionDenied>()
                .is_some()
            {
                INSUFFICIENT_PRIVILEGE
            } else {
                INTERNAL_ERROR
            }
        }
        _ => INTERNAL_ERROR,
    }
}

/// Rewrites an error of the query layer into a Postgres error with the right
/// SQLSTATE and a message without Rust type names.
pub fn classify(error: &mut PgWireError) {
    let PgWireError::ApiError(inner) = error else {
        return;
    };
    let (code, message) = if let Some(df) = inner.downcast_ref::<DataFusionError>() {
        let code = for_datafusion(df);
        let mut message = df.strip_backtrace();
        if code == INVALID_PARAMETER_VALUE || code == INSUFFICIENT_PRIVILEGE {
            // The function's own message says it all.
            message = message.trim_start_matches("External error: ").to_string();
        }
        (code, message)
    } else if let Some(e) = inner.downcast_ref::<ParserError>() {
        match e {
            ParserError::RecursionLimitExceeded => (
                STATEMENT_TOO_COMPLEX,
                "statement too complex: it nests more brackets or subqueries than the parser accepts".to_string(),
            ),
            _ => (SYNTAX_ERROR, inner.to_string()),
        }
    } else {
        (INTERNAL_ERROR, inner.to_string())
    };
    *error = PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )));
}
