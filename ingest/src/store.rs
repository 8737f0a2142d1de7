//! The reports table: an append-only Delta Lake table of every submitted
//! value, partitioned by period.
//!
//! A commit is one Delta transaction: either every row of every submission
//! in it becomes visible at once, or none does. Corrections are new rows
//! with a later `submitted_at`; nothing is ever rewritten in place, which is
//! what keeps the full history for audit and "as of" queries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baocao_catalog::report::{PARTITION_COLUMNS, reports_schema};
use baocao_table::CurrentTable;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{SortColumn, concat, lexsort_to_indices, take_record_batch};
use datafusion::object_store::ObjectStoreExt;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::kernel::transaction::{
    CommitData, CommitProperties, PROTOCOL, TableReference, TransactionError,
};
use deltalake::kernel::{Action, DataType, PrimitiveType, Transaction};
use deltalake::logstore::CommitOrBytes;
use deltalake::operations::get_num_idx_cols_and_stats_columns;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
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
/// delta-rs' default of 100: a checkpoint is also when the readers'
/// snapshots are loaded afresh, and each commit carried forward since makes
/// the next scan's refresh a little slower (see `baocao_table`). The
/// writer's blind appends do not carry its snapshot forward.
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
    writer: Mutex<Writer>,
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
            let mut create = table
                .create()
                .with_table_name("reports")
                .with_comment("baocao report values, one row per submitted value");
            for (name, data_type, nullable) in table_columns() {
                create = create.with_column(name, data_type, nullable, None);
            }
            create
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
            writer: Mutex::new(Writer::new(table)),
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
            writer: Mutex::new(Writer::new(table)),
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
    ///
    /// While every commit since the writer's snapshot is its own, a commit
    /// is a blind append ([`Self::blind_append`]) and the snapshot stays
    /// where it is; otherwise (another writer committed, or the table's
    /// schema lacks a column) the snapshot is brought up to date and the
    /// commit goes through Delta's write operation.
    async fn commit_inner(
        &self,
        submissions: Vec<(ValidBatch, Submission, Option<String>)>,
        metadata: Vec<(String, serde_json::Value)>,
    ) -> Result<(Option<Receipt>, Vec<String>), IngestError> {
        let mut guard = self.writer.lock().await;
        let err = table_err(&self.location);
        let mut blind = guard.head.is_some();
        loop {
            if !blind {
                // Another process may have committed since: start from the newest state.
                guard.refresh().await.map_err(&err)?;
            }
            let mut already = Vec::new();
            let mut keys = Vec::new();
            let mut left = Vec::with_capacity(submissions.len());
            for (batch, submission, key) in &submissions {
                if let Some(key) = key {
                    if guard.committed(key).await.map_err(&err)? {
                        already.push(key.clone());
                        continue;
                    }
                    keys.push(key.clone());
                }
                left.push((batch, submission));
            }
            if left.is_empty() && !already.is_empty() {
                return Ok((None, already));
            }
            let rows: usize = left.iter().map(|(b, _)| b.len()).sum();
            let count = left.len();
            let batch = to_record_batch(&left)?;
            let ids: Vec<_> = left
                .iter()
                .map(|(b, s)| {
                    serde_json::json!({
                        "submission_id": s.submission_id,
                        "submitted_by": s.submitted_by,
                        "rows": b.len(),
                    })
                })
                .collect();
            let app_metadata: HashMap<String, serde_json::Value> = metadata
                .iter()
                .cloned()
                .chain([(
                    SUBMISSIONS_METADATA.to_string(),
                    serde_json::Value::Array(ids),
                )])
                .collect();
            let transactions: Vec<Transaction> =
                keys.iter().map(|key| Transaction::new(key, 1)).collect();
            let version = if blind {
                match self
                    .blind_append(&mut guard, &batch, app_metadata, transactions, &keys)
                    .await?
                {
                    Some(version) => version,
                    None => {
                        // The next version was taken or the schemas differ:
                        // again from the newest state, through the write
                        // operation.
                        blind = false;
                        continue;
                    }
                }
            } else {
                let mut properties = CommitProperties::default()
                    .with_metadata(app_metadata)
                    // Checkpoints and log clean-up would stall every twentieth
                    // submission; `checkpoint` does them off the commit path.
                    .with_create_checkpoint(false)
                    .with_cleanup_expired_logs(Some(false));
                for transaction in transactions {
                    properties = properties.with_application_transaction(transaction);
                }
                let table = guard
                    .table
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
                version
            };
            if version >= self.checkpointed.load(Ordering::SeqCst) + CHECKPOINT_INTERVAL {
                self.checkpoint_due.notify_one();
            }
            return Ok((
                Some(Receipt {
                    version,
                    rows,
                    submissions: count,
                }),
                already,
            ));
        }
    }

    /// Commits `batch` as the version after the writer's head without
    /// touching its snapshot: the batch's files are written as the write
    /// operation would write them (same layout, writer properties and
    /// statistics), then the log entry is put only if that version is
    /// still free, as Delta's own commit does. Returns `None`, having
    /// committed nothing, when the table's schema is not the batch's (a
    /// table older than a column: the write operation merges them) or
    /// another writer took the version (its commit may be anything: the
    /// caller starts again from the newest state); the files written for a
    /// commit that did not land are deleted.
    ///
    /// This is what keeps a commit's cost flat as the table grows: the
    /// write operation brings the writer's snapshot forward after every
    /// commit, and that re-reads the statistics of every live file.
    /// Generating the `vn` benchmark warehouse (46,955 commits, as many
    /// files, un-compacted) went from 37 commits a second at the start and
    /// 6 past 15,000 files, close to three hours in all, to 220 seconds.
    async fn blind_append(
        &self,
        writer: &mut Writer,
        batch: &RecordBatch,
        mut app_metadata: HashMap<String, serde_json::Value>,
        transactions: Vec<Transaction>,
        keys: &[String],
    ) -> Result<Option<u64>, IngestError> {
        let err = table_err(&self.location);
        let Some(head) = writer.head else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let table = writer.table.table();
        // Other log stores put a commit through a temporary file, which
        // only the write operation's commit does.
        if table.log_store().name() != "DefaultLogStore" {
            return Ok(None);
        }
        let state = table.snapshot().map_err(&err)?;
        let partition_columns = state.metadata().partition_columns().to_vec();
        let Some(batch) = in_table_schema(batch, state.snapshot().arrow_schema()) else {
            return Ok(None);
        };
        if partition_columns != PARTITION_COLUMNS {
            return Ok(None);
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(partition_columns.clone()),
            predicate: None,
        };
        PROTOCOL
            .can_commit(state as &dyn TableReference, &[], &operation)
            .map_err(|e| err(e.into()))?;
        let log_store = table.log_store();
        let operation_id = uuid::Uuid::new_v4();
        let (indexed_columns, stats_columns) =
            get_num_idx_cols_and_stats_columns(Some(state.table_config()), HashMap::new());
        let mut files = DeltaWriter::new(
            log_store.object_store(Some(operation_id)),
            WriterConfig::new(
                batch.schema(),
                partition_columns,
                Some(writer_properties()),
                None,
                None,
                indexed_columns,
                stats_columns,
            ),
        );
        files.write(&batch).await.map_err(&err)?;
        let adds = files.close().await.map_err(&err)?;
        let partitions: HashSet<Vec<_>> = adds
            .iter()
            .map(|a| {
                let mut values: Vec<_> = a.partition_values.iter().collect();
                values.sort();
                values
            })
            .collect();
        // The figures the write operation records.
        app_metadata.insert(
            "operationMetrics".to_string(),
            serde_json::json!({
                "num_added_files": adds.len(),
                "num_removed_files": 0,
                "num_partitions": partitions.len(),
                "num_added_rows": batch.num_rows(),
                "execution_time_ms": started.elapsed().as_millis() as u64,
                "num_retries": 0,
            }),
        );
        let paths: Vec<_> = adds
            .iter()
            .map(|a| datafusion::object_store::path::Path::from(a.path.as_str()))
            .collect();
        let commit = CommitData::new(
            adds.into_iter().map(Action::Add).collect(),
            operation,
            app_metadata,
            transactions,
        );
        let entry = commit.get_bytes().map_err(|e| err(e.into()))?;
        let version = head + 1;
        match log_store
            .write_commit_entry(version, CommitOrBytes::LogBytes(entry), operation_id)
            .await
        {
            Ok(()) => {
                writer.head = Some(version);
                writer.appended_keys.extend(keys.iter().cloned());
                Ok(Some(version))
            }
            Err(TransactionError::VersionAlreadyExists(_)) => {
                tracing::debug!(version, "another writer committed first");
                writer.head = None;
                // No version names these files, so no reader can see them.
                let store = log_store.object_store(Some(operation_id));
                for path in &paths {
                    if let Err(e) = store.delete(path).await {
                        tracing::warn!(%path, error = %e, "cannot delete a file of a commit that did not land");
                    }
                }
                Ok(None)
            }
            Err(e) => Err(err(e.into())),
        }
    }

    /// Merges the small files of each partition into large ones (one Delta
    /// commit that changes no row), then deletes the files no version newer
    /// than `retention` still references. Readers keep reading the version
    /// they started on; writers append meanwhile (an append never conflicts
    /// with a compaction).
    pub async fn compact(&self, retention: chrono::Duration) -> Result<Compaction, IngestError> {
        let err = table_err(&self.location);
        let mut guard = self.writer.lock().await;
        guard.refresh().await.map_err(&err)?;
        let (table, metrics) = guard
            .table
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
        // Asked after every commit: whether one is due costs a metadata
        // read, not a refresh of the writer's snapshot.
        let newest = self.version().await?;
        if newest < self.checkpointed.load(Ordering::SeqCst) + every.max(1) {
            return Ok(None);
        }
        let table = {
            let mut guard = self.writer.lock().await;
            guard.refresh().await.map_err(&err)?;
            guard.table.table().clone()
        };
        let version = table.version().unwrap_or_default();
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
        let mut guard = self.writer.lock().await;
        fresh.refresh().await.map_err(&err)?;
        *guard = Writer::new(fresh);
        Ok(Some(version))
    }

    /// Waits until a commit of this store makes a checkpoint due
    /// ([`CHECKPOINT_INTERVAL`] commits since the last one). A background
    /// task waits on this, with a timeout for other processes' commits.
    pub async fn checkpoint_due(&self) {
        self.checkpoint_due.notified().await;
    }

    /// The newest committed version. Costs one metadata read while every
    /// commit since the writer's snapshot is its own.
    pub async fn version(&self) -> Result<u64, IngestError> {
        let mut guard = self.writer.lock().await;
        if let Some(head) = guard.head
            && !baocao_table::commit_exists(guard.table.table(), head + 1).await
        {
            return Ok(head);
        }
        guard.refresh().await.map_err(table_err(&self.location))?;
        Ok(guard.table.version())
    }
}

/// The writer's view of the table: a snapshot, and what has been committed
/// since it was taken.
struct Writer {
    table: CurrentTable,
    /// The newest version, while every commit after the snapshot's version
    /// is one of this writer's blind appends: the snapshot's protocol,
    /// schema and application transactions (with `appended_keys`) then
    /// still describe the table. `None` once another writer committed.
    head: Option<u64>,
    /// The application-transaction keys of the blind appends since the
    /// snapshot.
    appended_keys: HashSet<String>,
}

impl Writer {
    /// A writer whose snapshot is the table's newest version.
    fn new(table: CurrentTable) -> Self {
        Writer {
            head: Some(table.version()),
            table,
            appended_keys: HashSet::new(),
        }
    }

    /// Brings the snapshot to the table's newest version.
    async fn refresh(&mut self) -> Result<(), DeltaTableError> {
        self.table.refresh().await?;
        self.head = Some(self.table.version());
        self.appended_keys.clear();
        Ok(())
    }

    /// Takes the table an operation returned, at the newest version.
    fn advance(&mut self, table: DeltaTable) {
        self.table.advance(table);
        self.head = Some(self.table.version());
        self.appended_keys.clear();
    }

    /// Whether a commit up to the head carries the application transaction `key`.
    async fn committed(&self, key: &str) -> Result<bool, DeltaTableError> {
        if self.appended_keys.contains(key) {
            return Ok(true);
        }
        let table = self.table.table();
        let found = table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), key)
            .await?;
        Ok(found.is_some())
    }
}

/// The reports table's columns as a new table gets them: name, Delta type,
/// nullable. `withdrawn` and `source` came later; an older table gains them
/// at its first commit (see [`ReportStore::commit`]).
fn table_columns() -> Vec<(&'static str, DataType, bool)> {
    let string = DataType::Primitive(PrimitiveType::String);
    vec![
        ("unit_code", string.clone(), false),
        ("period", string.clone(), false),
        ("indicator_code", string.clone(), false),
        ("value", DataType::Primitive(PrimitiveType::Double), false),
        (
            "submitted_at",
            DataType::Primitive(PrimitiveType::Timestamp),
            false,
        ),
        ("submitted_by", string.clone(), false),
        ("submission_id", string.clone(), false),
        (
            "withdrawn",
            DataType::Primitive(PrimitiveType::Boolean),
            true,
        ),
        ("source", string, true),
    ]
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

/// `batch` with the columns in the order the table's schema gives them
/// (a schema merge moves the partition column after the new columns), or
/// `None` if the columns are not the table's, by name and type.
fn in_table_schema(
    batch: &RecordBatch,
    table: datafusion::arrow::datatypes::SchemaRef,
) -> Option<RecordBatch> {
    if batch.num_columns() != table.fields().len() {
        return None;
    }
    let columns = table
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name())?;
            (column.data_type() == field.data_type()).then(|| column.clone())
        })
        .collect::<Option<Vec<_>>>()?;
    RecordBatch::try_new(table, columns).ok()
}

/// The stored layout: rows sorted by period, unit and indicator so each
/// file's statistics are tight.
fn to_record_batch(submissions: &[(&ValidBatch, &Submission)]) -> Result<RecordBatch, IngestError> {
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use futures::StreamExt;

    use super::*;

    fn report(unit: &str, period: &str, values: &[f64]) -> ValidBatch {
        let n = values.len();
        ValidBatch {
            unit_code: StringArray::from(vec![unit; n]),
            period: StringArray::from(vec![period; n]),
            indicator_code: StringArray::from(
                (0..n).map(|i| format!("ind_{i:02}")).collect::<Vec<_>>(),
            ),
            value: Float64Array::from(values.to_vec()),
            withdrawn: false,
        }
    }

    fn submission(id: &str) -> Submission {
        Submission {
            submission_id: id.to_string(),
            submitted_by: "tester".to_string(),
            submitted_at: "2026-12-01T08:00:00Z".parse().unwrap(),
            source: "unit test".to_string(),
        }
    }

    /// Two reports of one commit: two periods, so two files.
    fn two_reports() -> Vec<(ValidBatch, Submission)> {
        vec![
            (
                report("00004", "2025-01", &[3.0, 1.0, 2.0]),
                submission("a"),
            ),
            (report("00001", "2025-02", &[5.5, -1.0]), submission("b")),
        ]
    }

    fn location(dir: &tempfile::TempDir) -> Url {
        Url::from_directory_path(dir.path()).unwrap()
    }

    /// The version the writer's snapshot is at, and the newest it knows.
    async fn writer_versions(store: &ReportStore) -> (u64, Option<u64>) {
        let writer = store.writer.lock().await;
        (writer.table.version(), writer.head)
    }

    /// The newest version's files as the log describes them (statistics,
    /// partition, row count; not the random names), sorted, and the rows
    /// the files hold.
    async fn files_and_rows(location: &Url) -> (RecordBatch, RecordBatch) {
        let table = deltalake::open_table(location.clone()).await.unwrap();
        let files = table.snapshot().unwrap().add_actions_table(true).unwrap();
        let keep: Vec<usize> = (0..files.num_columns())
            .filter(|&i| {
                let name = files.schema().field(i).name().clone();
                !["path", "size_bytes", "modification_time"].contains(&name.as_str())
            })
            .collect();
        let files = files.project(&keep).unwrap();
        let order = files.schema().index_of("partition.period").unwrap();
        let indices = lexsort_to_indices(
            &[SortColumn {
                values: files.column(order).clone(),
                options: None,
            }],
            None,
        )
        .unwrap();
        let files = take_record_batch(&files, &indices).unwrap();
        let mut paths: Vec<String> = table.get_file_uris().unwrap().collect();
        paths.sort();
        let mut batches = Vec::new();
        for path in paths {
            let path = Url::parse(&path)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .unwrap_or_else(|| path.into());
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
        let rows = concat_batches(&batches[0].schema(), &batches).unwrap();
        (files, rows)
    }

    fn walk_parquet(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                if p.ends_with("_delta_log") {
                    0
                } else if p.is_dir() {
                    walk_parquet(&p)
                } else {
                    usize::from(p.extension().is_some_and(|e| e == "parquet"))
                }
            })
            .sum()
    }

    #[tokio::test]
    async fn a_blind_append_writes_what_the_write_operation_writes() {
        let (blind_dir, written_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let blind = ReportStore::open_or_create(location(&blind_dir))
            .await
            .unwrap();
        let written = ReportStore::open_or_create(location(&written_dir))
            .await
            .unwrap();
        // The write operation: as after another writer's commit.
        written.writer.lock().await.head = None;

        let receipt = blind.commit(two_reports()).await.unwrap();
        assert_eq!(
            (receipt.version, receipt.rows, receipt.submissions),
            (1, 5, 2)
        );
        // The snapshot stayed where it was: the commit was a blind append.
        assert_eq!(writer_versions(&blind).await, (0, Some(1)));
        let receipt = written.commit(two_reports()).await.unwrap();
        assert_eq!(receipt.version, 1);
        assert_eq!(writer_versions(&written).await, (1, Some(1)));

        let (blind_files, blind_rows) = files_and_rows(&location(&blind_dir)).await;
        let (written_files, written_rows) = files_and_rows(&location(&written_dir)).await;
        assert_eq!(blind_files.num_rows(), 2);
        assert_eq!(blind_files, written_files);
        assert_eq!(blind_rows.num_rows(), 5);
        assert_eq!(blind_rows, written_rows);

        // The commit names its operation and submissions like the write
        // operation's.
        let table = deltalake::open_table(location(&blind_dir)).await.unwrap();
        let info = table.history(Some(1)).next().await.unwrap().unwrap();
        assert_eq!(info.operation.as_deref(), Some("WRITE"));
        let ids: Vec<_> = info.info[SUBMISSIONS_METADATA]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["submission_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            info.info["operationMetrics"]["num_added_rows"].as_u64(),
            Some(5)
        );
        assert_eq!(blind.version().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_checkpoint_is_due_by_the_head_and_brings_the_snapshot_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open_or_create(location(&dir)).await.unwrap();
        for n in 1..=3 {
            let id = format!("s{n}");
            store
                .commit(vec![(
                    report("00004", "2025-01", &[n as f64]),
                    submission(&id),
                )])
                .await
                .unwrap();
            // Not due: asking leaves the snapshot where it was.
            assert_eq!(store.checkpoint(4).await.unwrap(), None);
            assert_eq!(writer_versions(&store).await, (0, Some(n)));
        }
        assert_eq!(store.checkpoint(3).await.unwrap(), Some(3));
        assert_eq!(writer_versions(&store).await, (3, Some(3)));
        let table = deltalake::open_table(location(&dir)).await.unwrap();
        assert_eq!(baocao_table::last_checkpoint(&table).await, 3);
        assert_eq!(store.commit(two_reports()).await.unwrap().version, 4);
        assert_eq!(writer_versions(&store).await, (3, Some(4)));
    }

    #[tokio::test]
    async fn another_writers_commit_sends_the_next_through_the_write_operation() {
        let dir = tempfile::tempdir().unwrap();
        let first = ReportStore::open_or_create(location(&dir)).await.unwrap();
        let second = ReportStore::open(location(&dir)).await.unwrap();
        let one = || vec![(report("00004", "2025-01", &[1.0]), submission("one"))];

        assert_eq!(first.commit(one()).await.unwrap().version, 1);
        assert_eq!(first.commit(one()).await.unwrap().version, 2);
        assert_eq!(writer_versions(&first).await, (0, Some(2)));
        // Version 1 is taken: the second writer's commit lands as 3, from
        // the newest state.
        assert_eq!(second.commit(one()).await.unwrap().version, 3);
        assert_eq!(writer_versions(&second).await, (3, Some(3)));
        assert_eq!(first.version().await.unwrap(), 3);
        assert_eq!(first.commit(one()).await.unwrap().version, 4);

        // A key committed by one writer is left out by the other, whose
        // snapshot did not know it.
        let keyed = |key: &str| Keyed {
            batch: report("00001", "2025-03", &[7.0]),
            submission: submission(key),
            key: key.to_string(),
        };
        let done = second.commit_once(vec![keyed("k")]).await.unwrap();
        assert_eq!(done.receipt.map(|r| r.version), Some(5));
        let again = first
            .commit_once(vec![keyed("k"), keyed("l")])
            .await
            .unwrap();
        assert_eq!(again.already_committed, ["k"]);
        assert_eq!(again.receipt.map(|r| (r.version, r.rows)), Some((6, 1)));

        let (files, rows) = files_and_rows(&location(&dir)).await;
        assert_eq!(files.num_rows(), 6);
        assert_eq!(rows.num_rows(), 6);
        // The files of the three commits that found their version taken
        // were deleted: every file on disk is in the log.
        let on_disk = walk_parquet(dir.path());
        assert_eq!(on_disk, 6, "parquet files on disk");
    }

    #[tokio::test]
    async fn a_blind_append_commits_a_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open_or_create(location(&dir)).await.unwrap();
        let keyed = || Keyed {
            batch: report("00004", "2025-01", &[1.0, 2.0]),
            submission: submission("x"),
            key: "landing/x.csv".to_string(),
        };
        let done = store.commit_once(vec![keyed()]).await.unwrap();
        assert_eq!(done.receipt.map(|r| r.version), Some(1));
        assert_eq!(writer_versions(&store).await, (0, Some(1)));
        let again = store.commit_once(vec![keyed()]).await.unwrap();
        assert_eq!((again.receipt, again.already_committed.len()), (None, 1));
        // The key is in the log, not only in this writer's memory.
        let reopened = ReportStore::open(location(&dir)).await.unwrap();
        let again = reopened.commit_once(vec![keyed()]).await.unwrap();
        assert_eq!((again.receipt, again.already_committed.len()), (None, 1));
    }

    #[tokio::test]
    async fn a_table_without_the_newer_columns_gains_them_then_appends_blind() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = DeltaTableBuilder::from_url(location(&dir))
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_table_name("reports");
        let older = table_columns()
            .into_iter()
            .filter(|(name, ..)| !["withdrawn", "source"].contains(name));
        for (name, data_type, nullable) in older {
            table = table.with_column(name, data_type, nullable, None);
        }
        table
            .with_partition_columns(PARTITION_COLUMNS)
            .await
            .unwrap();

        let store = ReportStore::open(location(&dir)).await.unwrap();
        assert_eq!(store.commit(two_reports()).await.unwrap().version, 1);
        // The write operation merged the schema: the snapshot moved.
        assert_eq!(writer_versions(&store).await, (1, Some(1)));
        assert_eq!(store.commit(two_reports()).await.unwrap().version, 2);
        assert_eq!(writer_versions(&store).await, (1, Some(2)));
        let (_, rows) = files_and_rows(&location(&dir)).await;
        assert_eq!(rows.num_rows(), 10);
        assert!(rows.schema().field_with_name("withdrawn").is_ok());
    }
}
