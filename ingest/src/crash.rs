//! Crash points: named places on the ingest path where a test can make the
//! process die as a SIGKILL would (no destructor runs, nothing is flushed),
//! so that crash safety is tested at exactly the moments that matter rather
//! than at whatever moment a timer happens to hit.
//!
//! `BAOCAO_CRASH_AT=<point>[:<n>]` arms one point: the process aborts the
//! `n`-th time (default: the first) execution reaches it. Unset, every point
//! is a single relaxed load. The points:
//!
//! | point | where |
//! | --- | --- |
//! | `landing-read` | a landed file has been read, nothing of it validated or committed ("mid-file") |
//! | `commit-publish` | a commit's data files are written, its log entry is not ("mid-commit") |
//! | `landing-committed` | a landed file's commit is durable, the file is not yet removed |

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::object_store;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use futures::stream::BoxStream;

/// The environment variable that arms a crash point.
pub const CRASH_AT: &str = "BAOCAO_CRASH_AT";

/// A landed file has been read; nothing of it is validated or committed.
pub const LANDING_READ: &str = "landing-read";
/// A commit's data files are written; its log entry is not.
pub const COMMIT_PUBLISH: &str = "commit-publish";
/// A landed file's commit is durable; the file is still in the folder.
pub const LANDING_COMMITTED: &str = "landing-committed";

struct Armed {
    point: String,
    at: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT).ok()?;
            let (point, at) = match spec.split_once(':') {
                Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                point,
                at,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Whether `point` is the armed one.
pub fn is_armed(point: &str) -> bool {
    armed().is_some_and(|a| a.point == point)
}

/// Aborts the process if `point` is armed and this is the time to crash.
pub fn reached(point: &str) {
    let Some(a) = armed() else { return };
    if a.point != point {
        return;
    }
    let n = a.reached.fetch_add(1, Ordering::SeqCst) + 1;
    if n == a.at {
        // The line a test waits for; then die without unwinding.
        eprintln!("baocao: crash point {point} reached (time {n}); aborting");
        std::process::abort();
    }
}

/// An object store that stops at [`COMMIT_PUBLISH`]: when a Delta log entry
/// (`_delta_log/<version>.json`, written create-if-absent) is about to be
/// published, every data file of that commit is already written.
#[derive(Debug)]
pub(crate) struct CrashingStore {
    inner: Arc<dyn ObjectStore>,
}

impl CrashingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CrashingStore { inner }
    }
}

impl fmt::Display for CrashingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrashingStore({})", self.inner)
    }
}

fn is_log_entry(location: &Path) -> bool {
    let text = location.as_ref();
    text.contains("_delta_log/") && text.ends_with(".json")
}

#[async_trait]
impl ObjectStore for CrashingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) && is_log_entry(location) {
            reached(COMMIT_PUBLISH);
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_log_entries_are_commit_points() {
        assert!(is_log_entry(&Path::from(
            "w/reports/_delta_log/00000000000000000003.json"
        )));
        assert!(!is_log_entry(&Path::from(
            "w/reports/period=2024-07/part-0.parquet"
        )));
        assert!(!is_log_entry(&Path::from(
            "w/reports/_delta_log/00000000000000000010.checkpoint.parquet"
        )));
    }
}
