//! The reports table: an append-only Delta Lake table of every submitted
//! value, partitioned by period.
//!
//! A commit is one Delta transaction: either every row of every submission
//! in it becomes visible at once, or none does. Corrections are new rows
//! with a later `submitted_at`; nothing is ever rewritten in place, which is
//! what keeps the full history for audit and "as of" queries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baocao_catalog::report::{PARTITION_COLUMNS, reports_schema};
use baocao_table::CurrentTable;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{SortColumn, concat, lexsort_to_indices, take_record_batch};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{DataType, PrimitiveType, Transaction};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTableBuilder, DeltaTableError};
use tokio::sync::{Mutex, Notify};
use url::Url;

use crate::crash;
use crate::error::IngestError;
use crate::validate::ValidBatch;

/// Who sent a batch, when, and under which id.
#[derive(Debug, Clone)]
pub struct Submission {
    pub submission_id: String,
    pub submitted_by: String,
    pub submitted_at: DateTime<Utc>,
    /// Where it came from (protocol statement, file).
    pub source: String,
}

impl Submission {
    /// A new submission by `submitted_by` from `source`, stamped now, with a
    /// time-ordered id.
    pub fn now(submitted_by: impl Into<String>, source: impl Into<String>) -> Self {
        Submission {
            submission_id: uuid::Uuid::now_v7().to_string(),
            submitted_by: submitted_by.into(),
            submitted_at: Utc::now(),
            source: source.into(),
        }
    }
}

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The table version that holds the commit.
    pub version: u64,
    pub rows: usize,
    pub submissions: usize,
}

/// A submission committed at most once: `key` names it for good (a landed
/// file's name and content, say).
#[derive(Debug, Clone)]
pub struct Keyed {
    pub batch: ValidBatch,
    pub submission: Submission,
    pub key: String,
}

/// What [`ReportStore::commit_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceReceipt {
    /// The commit, if any submission was left to commit.
    pub receipt: Option<Receipt>,
    /// The keys a commit in the log already carried: left out.
    pub already_committed: Vec<String>,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub files_removed: u64,
    pub files_added: u64,
    pub partitions: u64,
    /// Files older than the retention deleted from storage.
    pub files_deleted: u64,
    pub version: u64,
}

/// How many commits may land between two checkpoints. Lower than
/// delta-rs' default of 100: a checkpoint is also when the writer's and the
/// readers' snapshots are loaded afresh, and each commit carried forward
/// since makes the next one a little slower (see `baocao_table`).
pub const CHECKPOINT_INTERVAL: u64 = 20;

/// The key of a commit's metadata that lists its submissions: each one's
/// `submission_id`, `submitted_by` and `rows`, in the order committed.
pub const SUBMISSIONS_METADATA: &str = "baocao.submissions";

/// How many commits may land between two clean-ups of expired log entries:
/// a clean-up lists the whole log folder, too slow to do at every checkpoint.
const LOG_CLEANUP_INTERVAL: u64 = 1000;

/// The stored reports table.
pub struct ReportStore {
    location: Url,
    table: Mutex<CurrentTable>,
    /// The session commits are written with (see [`writer_session`]).
    session: Arc<dyn datafusion::catalog::Session>,
    /// The version of the newest checkpoint: found at open, or made since.
    checkpointed: AtomicU64,
    /// Woken when a commit makes a checkpoint due (see [`Self::checkpoint_due`]).
    checkpoint_due: Notify,
}

fn table_err(location: &Url) -> impl Fn(DeltaTableError) -> IngestError + '_ {
    move |source| IngestError::Table {
        location: location.to_string(),
        source: Box::new(source),
    }
}

impl ReportStore {
    /// Opens the table at `location`, creating an empty one if there is none.
    pub async fn open_or_create(location: Url) -> Result<Self, IngestError> {
        let err = table_err(&location);
        // Probe before loading: loading a location without a log is an
        // error the Delta kernel logs loudly, and "no table yet" is normal here.
        let mut table = builder(&location).map_err(&err)?.build().map_err(&err)?;
        let table = if table.verify_deltatable_existence().await.map_err(&err)? {
            table.load().await.map_err(&err)?;
            table
        } else {
            let string = DataType::Primitive(PrimitiveType::String);
            table
                .create()
                .with_table_name("reports")
                .with_comment("baocao report values, one row per submitted value")
                .with_column("unit_code", string.clone(), false, None)
                .with_column("period", string.clone(), false, None)
                .with_column("indicator_code", string.clone(), false, None)
                .with_column(
                    "value",
                    DataType::Primitive(PrimitiveType::Double),
                    false,
                    None,
                )
                .with_column(
                    "submitted_at",
                    DataType::Primitive(PrimitiveType::Timestamp),
                    false,
                    None,
                )
                .with_column("submitted_by", string.clone(), false, None)
                .with_column("submission_id", string, false, None)
                .with_column(
                    "withdrawn",
                    DataType::Primitive(PrimitiveType::Boolean),
                    true,
                    None,
                )
                .with_column(
                    "source",
                    DataType::Primitive(PrimitiveType::String),
                    true,
                    None,
                )
                .with_partition_columns(PARTITION_COLUMNS)
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(&err)?
        };
        let session = writer_session().map_err(&err)?;
        let table = CurrentTable::new(table).await;
        let checkpointed = AtomicU64::new(baocao_table::last_checkpoint(table.table()).await);
        drop(err);
        Ok(ReportStore {
            location,
            table: Mutex::new(table),
            session,
            checkpointed,
            checkpoint_due: Notify::new(),
        })
    }

    /// Opens an existing table; fails if `location` holds none.
    pub async fn open(location: Url) -> Result<Self, IngestError> {
        let err = table_err(&location);
        let table = builder(&location)
            .map_err(&err)?
            .load()
            .await
            .map_err(&err)?;
        let session = writer_session().map_err(&err)?;
        let table = CurrentTable::new(table).await;
        let checkpointed = AtomicU64::new(baocao_table::last_checkpoint(table.table()).await);
        drop(err);
        Ok(ReportStore {
            location,
            table: Mutex::new(table),
            session,
            checkpointed,
            checkpoint_due: Notify::new(),
        })
    }

    pub fn location(&self) -> &Url {
        &self.location
    }

    /// Commits the submissions as one atomic transaction.
    pub async fn commit(
        &self,
        submissions: Vec<(ValidBatch, Submission)>,
    ) -> Result<Receipt, IngestError> {
        self.commit_with_metadata(submissions, []).await
    }

    /// Commits the keyed submissions as one atomic transaction, leaving out
    /// each whose key a commit in the log already carries (as a Delta
    /// application transaction): the same key never commits twice, across
    /// restarts and across processes.
    pub async fn commit_once(&self, keyed: Vec<Keyed>) -> Result<OnceReceipt, IngestError> {
        let keyed = keyed
            .into_iter()
            .map(|k| (k.batch, k.submission, Some(k.key)))
            .collect();
        let (receipt, already_committed) = self.commit_inner(keyed, Vec::new()).await?;
        Ok(OnceReceipt {
            receipt,
            already_committed,
        })
    }

    /// Commits the submissions as one atomic transaction, with extra
    /// key/values in the commit's metadata.
    pub async fn commit_with_metadata(
        &self,
        submissions: Vec<(ValidBatch, Submission)>,
        metadata: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<Receipt, IngestError> {
        let submissions = submissions
            .into_iter()
            .map(|(batch, submission)| (batch, submission, None))
            .collect();
        let (receipt, _) = self
            .commit_inner(submissions, metadata.into_iter().collect())
            .await?;
        receipt.ok_or_else(|| IngestError::Table {
            location: self.location.to_string(),
            source: Box::new(DeltaTableError::Generic(
                "a commit without a key was skipped".into(),
            )),
        })
    }

    /// Commits the submissions, leaving out those whose key is already in
    /// the log; returns the receipt (none if nothing was left to commit)
    /// and the keys left out.
    async fn commit_inner(
        &self,
        submissions: Vec<(ValidBatch, Submission, Option<String>)>,
        metadata: Vec<(String, serde_json::Value)>,
    ) -> Result<(Option<Receipt>, Vec<String>), IngestError> {
        let mut guard = self.table.lock().await;
        let err = table_err(&self.location);
        // Another process may have committed since: start from the newest state.
        guard.refresh().await.map_err(&err)?;
        let mut already = Vec::new();
        let mut keys = Vec::new();
        let mut submissions_left = Vec::with_capacity(submissions.len());
        for (batch, submission, key) in submissions {
            if let Some(key) = key {
                let state = guard.table().snapshot().map_err(&err)?;
                let found = state
                    .transaction_version(guard.table().log_store().as_ref(), &key)
                    .await
                    .map_err(&err)?;
                if found.is_some() {
                    already.push(key);
                    continue;
                }
                keys.push(key);
            }
            submissions_left.push((batch, submission));
        }
        let submissions = submissions_left;
        if submissions.is_empty() && !already.is_empty() {
            return Ok((None, already));
        }
        let rows: usize = submissions.iter().map(|(b, _)| b.len()).sum();
        let count = submissions.len();
        let batch = to_record_batch(&submissions)?;
        let ids: Vec<_> = submissions
            .iter()
            .map(|(b, s)| {
                serde_json::json!({
                    "submission_id": s.submission_id,
                    "submitted_by": s.submitted_by,
                    "rows": b.len(),
                })
            })
            .collect();
        let mut properties = CommitProperties::default()
            .with_metadata(metadata.into_iter().chain([(
                SUBMISSIONS_METADATA.to_string(),
                serde_json::Value::Array(ids),
            )]))
            // Checkpoints and log clean-up would stall every twentieth
            // submission; `checkpoint` does them off the commit path.
            .with_create_checkpoint(false)
            .with_cleanup_expired_logs(Some(false));
        for key in &keys {
            properties = properties.with_application_transaction(Transaction::new(key, 1));
        }
        let table = guard
            .table()
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(PARTITION_COLUMNS)
            // A table made before `withdrawn` existed gains the column.
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .with_session_state(self.session.clone())
            .with_writer_properties(writer_properties())
            .with_commit_properties(properties)
            .await
            .map_err(&err)?;
        let version = table.version().unwrap_or_default();
        guard.advance(table);
        if version >= self.checkpointed.load(Ordering::SeqCst) + CHECKPOINT_INTERVAL {
            self.checkpoint_due.notify_one();
        }
        Ok((
            Some(Receipt {
                version,
                rows,
                submissions: count,
            }),
            already,
        ))
    }

    /// Merges the small files of each partition into large ones (one Delta
    /// commit that changes no row), then deletes the files no version newer
    /// than `retention` still references. Readers keep reading the version
    /// they started on; writers append meanwhile (an append never conflicts
    /// with a compaction).
    pub async fn compact(&self, retention: chrono::Duration) -> Result<Compaction, IngestError> {
        let err = table_err(&self.location);
        let mut guard = self.table.lock().await;
        guard.refresh().await.map_err(&err)?;
        let (table, metrics) = guard
            .table()
            .clone()
            .optimize()
            .with_type(deltalake::operations::optimize::OptimizeType::Compact)
            .with_writer_properties(writer_properties())
            .with_session_state(self.session.clone())
            .await
            .map_err(&err)?;
        let (table, vacuumed) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(&err)?;
        let version = table.version().unwrap_or_default();
        guard.advance(table);
        Ok(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            partitions: metrics.partitions_optimized,
            files_deleted: vacuumed.files_deleted.len() as u64,
            version,
        })
    }

    /// Writes a checkpoint of the newest version (and removes log entries
    /// past the table's log retention) if `every` commits or more landed
    /// since the last one, so that opening or refreshing the table reads one
    /// Parquet file and a few commits instead of the whole log. Returns the
    /// version checkpointed, if any. Commits go on meanwhile: a checkpoint
    /// only summarises versions already written.
    pub async fn checkpoint(&self, every: u64) -> Result<Option<u64>, IngestError> {
        let err = table_err(&self.location);
        let table = {
            let mut guard = self.table.lock().await;
            guard.refresh().await.map_err(&err)?;
            guard.table().clone()
        };
        let version = table.version().unwrap_or_default();
        if version < self.checkpointed.load(Ordering::SeqCst) + every.max(1) {
            return Ok(None);
        }
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(&err)?;
        let previous = self.checkpointed.swap(version, Ordering::SeqCst);
        if previous / LOG_CLEANUP_INTERVAL < version / LOG_CLEANUP_INTERVAL {
            deltalake::checkpoints::cleanup_metadata(&table, None)
                .await
                .map_err(&err)?;
        }
        // The writer's snapshot has been carried forward commit by commit
        // since it was loaded; load it afresh from the new checkpoint so the
        // next commits start cheap again (see `baocao_table`). Loading takes
        // a while on a large table, so commits go on meanwhile and the fresh
        // snapshot catches up with them under the lock.
        let mut fresh = CurrentTable::load(table.log_store()).await.map_err(&err)?;
        let mut guard = self.table.lock().await;
        fresh.refresh().await.map_err(&err)?;
        *guard = fresh;
        Ok(Some(version))
    }

    /// Waits until a commit of this store makes a checkpoint due
    /// ([`CHECKPOINT_INTERVAL`] commits since the last one). A background
    /// task waits on this, with a timeout for other processes' commits.
    pub async fn checkpoint_due(&self) {
        self.checkpoint_due.notified().await;
    }

    /// The newest committed version.
    pub async fn version(&self) -> Result<u64, IngestError> {
        let mut guard = self.table.lock().await;
        guard.refresh().await.map_err(table_err(&self.location))?;
        Ok(guard.version())
    }
}

/// How the table at `location` is reached: the location's own object store,
/// wrapped to stop at the commit crash point when a test arms it.
fn builder(location: &Url) -> Result<DeltaTableBuilder, DeltaTableError> {
    let builder = DeltaTableBuilder::from_url(location.clone())?;
    if location.scheme() == "file" && crash::is_armed(crash::COMMIT_PUBLISH) {
        let local = Arc::new(datafusion::object_store::local::LocalFileSystem::new());
        let store = Arc::new(crash::CrashingStore::new(local));
        return Ok(builder.with_storage_backend(store, location.clone()));
    }
    Ok(builder)
}

/// How report files are written: Snappy-compressed. Reading a zstd file
/// (delta-rs' default) creates a zstd context per column chunk, a large
/// zeroed allocation (4% of a point lookup's time in a profile, plus the
/// allocator's work); the reports' columns are short codes that Snappy
/// packs as well (the demo's 2.9 million values take 16 MB either way).
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("baocao {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The session a commit is written with: one partition, so the rows reach
/// the file in the order `to_record_batch` sorted them (a parallel write
/// would interleave them, loosening the files' unit statistics and making
/// the demo's files differ from run to run).
fn writer_session() -> Result<Arc<dyn datafusion::catalog::Session>, DeltaTableError> {
    let overrides = HashMap::from([(
        "datafusion.execution.target_partitions".to_string(),
        "1".to_string(),
    )]);
    Ok(Arc::new(
        DeltaSessionContext::new_with_session_overrides(&overrides)?.state(),
    ))
}

/// The stored layout: rows sorted by period, unit and indicator so each
/// file's statistics are tight.
fn to_record_batch(submissions: &[(ValidBatch, Submission)]) -> Result<RecordBatch, IngestError> {
    if submissions.is_empty() {
        return Ok(RecordBatch::new_empty(reports_schema()));
    }
    let rows: usize = submissions.iter().map(|(b, _)| b.len()).sum();
    let keys = |column: fn(&ValidBatch) -> &dyn Array| -> Result<ArrayRef, IngestError> {
        let arrays: Vec<&dyn Array> = submissions.iter().map(|(b, _)| column(b)).collect();
        Ok(concat(&arrays)?)
    };
    let mut at = Vec::with_capacity(rows);
    let mut withdrawn = Vec::with_capacity(rows);
    let (mut by, mut id, mut source) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for (b, s) in submissions {
        at.extend(std::iter::repeat_n(
            s.submitted_at.timestamp_micros(),
            b.len(),
        ));
        withdrawn.extend(std::iter::repeat_n(b.withdrawn, b.len()));
        for _ in 0..b.len() {
            by.append_value(&s.submitted_by);
            id.append_value(&s.submission_id);
            source.append_value(&s.source);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        keys(|b| &b.unit_code)?,
        keys(|b| &b.period)?,
        keys(|b| &b.indicator_code)?,
        keys(|b| &b.value)?,
        Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
        Arc::new(by.finish()),
        Arc::new(id.finish()),
        Arc::new(BooleanArray::from(withdrawn)),
        Arc::new(source.finish()),
    ];
    let batch = RecordBatch::try_new(reports_schema(), columns)?;
    // Period, unit, indicator; then time and id, so that equal keys (a value
    // and its correction in one commit) always land in the same order.
    let sort: Vec<SortColumn> = [1, 0, 2, 4, 6]
        .into_iter()
        .map(|i| SortColumn {
            values: batch.column(i).clone(),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&sort, None)?;
    Ok(take_record_batch(&batch, &indices)?)
}
