//! How reports enter the warehouse: one validator, one atomic commit.
//!
//! ```text
//! file / INSERT / COPY ──> Validator ──> ValidBatch ──> ReportStore::commit ──> Delta table
//!                              └──> Rejection (file, row, field, reason); nothing written
//! ```
//!
//! Every entry point goes through [`Validator::validate`]; only a
//! [`ValidBatch`] can be committed, and a commit is one Delta transaction.

pub mod crash;
mod error;
mod landing;
mod read;
mod store;
mod validate;

pub use error::{IngestError, MAX_ERRORS, Problem, Rejection, RowError};
pub use landing::{Landing, Outcome, landing_key};
pub use read::{Delimited, Input, parse_delimited, read_file, read_input, to_long};
pub use store::{
    CHECKPOINT_INTERVAL, Compaction, Keyed, OnceReceipt, Receipt, ReportStore,
    SUBMISSIONS_METADATA, Submission,
};
pub use validate::{ValidBatch, Validator};
