//! The landing folder: ETL jobs drop `.parquet` and `.csv` files, each is
//! validated and committed as one submission, or moved to the quarantine
//! folder with a `<name>.error.json` saying why.
//!
//! The protocol for writers: write under a temporary name (a leading `.` or
//! a `.tmp` suffix), then rename; such names are never read. A file leaves
//! the landing folder only after its commit; the commit carries a Delta
//! application transaction keyed by the file's name and content, so a file
//! found again after a crash (committed, not yet removed) is removed without
//! a second commit: each file is committed exactly once.
//!
//! Files that are ready together are read and validated in parallel and the
//! valid ones committed together, in one Delta commit (group commit): each
//! is still its own submission, with its own id and time, and a refused
//! file never holds up the others. A bulk load of many files then costs one
//! commit per pass instead of one per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baocao_catalog::Catalog;
use chrono::Utc;

use crate::crash;
use crate::error::{IngestError, Problem, Rejection, RowError};
use crate::read::read_input;
use crate::store::{Keyed, ReportStore, Submission};
use crate::validate::{ValidBatch, Validator};

/// At most this many files are committed together...
const GROUP_FILES: usize = 64;
/// ...and at most about this many bytes of them (two groups are held in
/// memory: one committing, the next being checked).
const GROUP_BYTES: u64 = 128 << 20;

/// What happened to one landed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed {
        file: String,
        rows: usize,
        version: u64,
    },
    /// Committed before a crash; only the removal was left to do.
    AlreadyCommitted {
        file: String,
    },
    Quarantined {
        file: String,
        reason: String,
    },
}

/// A landing folder and where refused files go.
pub struct Landing {
    dir: PathBuf,
    quarantine: PathBuf,
    catalog: Arc<Catalog>,
    store: Arc<ReportStore>,
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The exactly-once key of a landed file: its name and content.
pub fn landing_key(name: &str, content: &[u8]) -> String {
    let mut all = name.as_bytes().to_vec();
    all.push(0);
    all.extend_from_slice(content);
    format!(
        "baocao-landing-{:016x}{:016x}",
        fnv(0, &all),
        fnv(0x9e37_79b9_7f4a_7c15, &all)
    )
}

/// Whether the writer protocol says this name is still being written.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

impl Landing {
    pub fn new(
        dir: PathBuf,
        quarantine: PathBuf,
        catalog: Arc<Catalog>,
        store: Arc<ReportStore>,
    ) -> Self {
        Landing {
            dir,
            quarantine,
            catalog,
            store,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files ready to process with their sizes, oldest first.
    fn ready(&self) -> std::io::Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) || !entry.file_type()?.is_file() {
                continue;
            }
            let metadata = entry.metadata().ok();
            let modified = metadata.as_ref().and_then(|m| m.modified().ok());
            let size = metadata.map_or(0, |m| m.len());
            files.push((modified, name, entry.path(), size));
        }
        files.sort();
        Ok(files.into_iter().map(|(_, _, p, size)| (p, size)).collect())
    }

    /// Processes every file ready now, in groups of files committed
    /// together; the next group is read and checked while one commits.
    pub async fn process_ready(&self) -> Result<Vec<Outcome>, IngestError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut out = Vec::new();
        let mut groups = groups(self.ready().map_err(|e| io_err(&self.dir, e))?).into_iter();
        let mut checked = match groups.next() {
            Some(group) => Some(self.check_group(group).await),
            None => None,
        };
        while let Some(group) = checked.take() {
            let next = groups.next();
            let (done, next) = tokio::join!(self.commit_group(group), async {
                match next {
                    Some(paths) => Some(self.check_group(paths).await),
                    None => None,
                }
            });
            checked = next;
            // One group's trouble (the table unreachable, say) must not hold
            // up the next: its files stay and are retried on the next pass.
            match done {
                Ok(mut o) => out.append(&mut o),
                Err(e) => tracing::error!("landed files left for a retry: {e}"),
            }
        }
        Ok(out)
    }

    /// Reads and validates the files, in parallel.
    async fn check_group(&self, paths: Vec<PathBuf>) -> Vec<CheckedFile> {
        use futures::StreamExt;
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        futures::stream::iter(paths)
            .map(|path| self.check(path))
            .buffered(parallel)
            .collect()
            .await
    }

    /// Quarantines the refused files and commits the valid ones together;
    /// removes those only then.
    async fn commit_group(&self, checked: Vec<CheckedFile>) -> Result<Vec<Outcome>, IngestError> {
        let mut out = Vec::new();
        let mut valid = Vec::new();
        let mut keyed = Vec::new();
        for (path, name, checked) in checked {
            match checked {
                Ok(Checked::Gone) => out.push(Outcome::AlreadyCommitted { file: name }),
                Ok(Checked::Refused(r)) => match self.quarantine(&path, &name, &r) {
                    Ok(o) => out.push(o),
                    Err(e) => tracing::error!(file = %name, "refused file left in place: {e}"),
                },
                Ok(Checked::Valid {
                    batch,
                    key,
                    read_ms,
                }) => {
                    // In arrival order, so a later file's values supersede
                    // an earlier one's.
                    let submission =
                        Submission::now(format!("landing:{name}"), format!("landing/{name}"));
                    valid.push((path, name, key.clone(), batch.len(), read_ms));
                    keyed.push(Keyed {
                        batch: *batch,
                        submission,
                        key,
                    });
                }
                Err(e) => tracing::error!(file = %name, "landed file left for a retry: {e}"),
            }
        }
        if valid.is_empty() {
            return Ok(out);
        }
        let started = std::time::Instant::now();
        let done = self.store.commit_once(keyed).await?;
        crash::reached(crash::LANDING_COMMITTED);
        let commit_ms = started.elapsed().as_secs_f64() * 1e3;
        let files = valid.len();
        for (path, name, key, rows, read_ms) in valid {
            // Only now, with the commit in the log, may the file go.
            remove(&path)?;
            match &done.receipt {
                Some(r) if !done.already_committed.contains(&key) => {
                    tracing::info!(
                        file = %name,
                        rows,
                        version = r.version,
                        files_in_commit = files,
                        read_and_validate_ms = read_ms,
                        commit_ms,
                        "landed file committed"
                    );
                    out.push(Outcome::Committed {
                        file: name,
                        rows,
                        version: r.version,
                    });
                }
                _ => {
                    tracing::info!(file = %name, "landed file was already committed; removed");
                    out.push(Outcome::AlreadyCommitted { file: name });
                }
            }
        }
        Ok(out)
    }

    /// Reads one landed file and validates it, on a blocking thread.
    async fn check(&self, path: PathBuf) -> CheckedFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let catalog = self.catalog.clone();
        let (file, source) = (path.clone(), name.clone());
        let checked = tokio::task::spawn_blocking(move || check_file(&file, &source, &catalog))
            .await
            .unwrap_or_else(|e| {
                Err(IngestError::Read {
                    path: path.display().to_string(),
                    message: format!("the check stopped: {e}"),
                })
            });
        (path, name, checked)
    }

    fn quarantine(&self, path: &Path, name: &str, r: &Rejection) -> Result<Outcome, IngestError> {
        std::fs::create_dir_all(&self.quarantine).map_err(|e| io_err(&self.quarantine, e))?;
        let mut target = self.quarantine.join(name);
        if target.exists() {
            target = self
                .quarantine
                .join(format!("{}-{name}", Utc::now().format("%Y%m%dT%H%M%S%.3f")));
        }
        let report = serde_json::json!({
            "file": name,
            "rejected_at": Utc::now().to_rfc3339(),
            "problems": r.total,
            "errors": r.errors,
        });
        let mut error_path = target.clone().into_os_string();
        error_path.push(".error.json");
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(&error_path, text).map_err(|e| io_err(Path::new(&error_path), e))?;
        std::fs::rename(path, &target).map_err(|e| io_err(path, e))?;
        let reason = r.to_string();
        tracing::warn!(file = %name, "landed file quarantined: {reason}");
        Ok(Outcome::Quarantined {
            file: name.to_string(),
            reason,
        })
    }

    /// Processes the folder as soon as the file system says something
    /// changed in it (inotify, through `notify`), and every `interval`
    /// anyway: the polling catches what events miss (network file systems,
    /// a watcher that could not start). Runs until `shutdown` completes. An
    /// error (a full disk, say) is logged and retried; it never ends the
    /// server.
    pub async fn watch(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        use notify::Watcher;
        tokio::pin!(shutdown);
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| is_arrival(&e.kind)) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            w.watch(&self.dir, notify::RecursiveMode::NonRecursive)
                .map(|()| w)
        });
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot watch the landing folder ({e}); polling every {interval:?}");
                None
            }
        };
        loop {
            if let Err(e) = self.process_ready().await {
                tracing::error!(dir = %self.dir.display(), "landing folder: {e}");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
                Some(()) = changed.recv() => {
                    // One pass handles every change so far.
                    while changed.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// Splits the ready files into groups of at most [`GROUP_FILES`] files and
/// about [`GROUP_BYTES`] bytes (a larger file goes alone).
fn groups(ready: Vec<(PathBuf, u64)>) -> Vec<Vec<PathBuf>> {
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    let mut bytes = 0;
    for (path, size) in ready {
        match groups.last_mut() {
            Some(group) if group.len() < GROUP_FILES && bytes + size <= GROUP_BYTES => {
                bytes += size;
                group.push(path);
            }
            _ => {
                bytes = size;
                groups.push(vec![path]);
            }
        }
    }
    groups
}

/// A landed file's path, name, and what checking it found.
type CheckedFile = (PathBuf, String, Result<Checked, IngestError>);

/// What reading and validating one landed file found.
enum Checked {
    /// Gone meanwhile (another server took it): nothing to do.
    Gone,
    /// Refused: goes to quarantine.
    Refused(Box<Rejection>),
    /// Ready to commit.
    Valid {
        batch: Box<ValidBatch>,
        /// The exactly-once key (see [`landing_key`]).
        key: String,
        read_ms: f64,
    },
}

fn check_file(path: &Path, name: &str, catalog: &Catalog) -> Result<Checked, IngestError> {
    let started = std::time::Instant::now();
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checked::Gone),
        Err(e) => return Err(io_err(path, e)),
    };
    crash::reached(crash::LANDING_READ);
    let key = landing_key(name, &content);
    let today = Utc::now().date_naive();
    // The bytes read once serve the key and the parse.
    let checked = read_input(name, content).and_then(|input| {
        Validator::new(catalog, today)
            .validate_rows(&input.batch, name, Some(&input.rows))
            .map_err(IngestError::from)
    });
    match checked {
        Ok(batch) => Ok(Checked::Valid {
            batch: Box::new(batch),
            key,
            read_ms: started.elapsed().as_secs_f64() * 1e3,
        }),
        Err(IngestError::Rejected(r)) => Ok(Checked::Refused(r)),
        // Whatever is wrong with the file itself sends it to quarantine.
        Err(e @ (IngestError::Read { .. } | IngestError::Arrow(_))) => {
            let reason = match e {
                IngestError::Read { message, .. } => message,
                other => other.to_string(),
            };
            Ok(Checked::Refused(Box::new(Rejection {
                source: name.to_string(),
                errors: vec![RowError {
                    problem: Problem::Shape,
                    row: None,
                    field: None,
                    reason,
                }],
                total: 1,
            })))
        }
        Err(other) => Err(other),
    }
}

/// Whether a file-system event may mean a file is ready: a name appeared
/// (a rename into the folder, a new file) or a writer closed it. Not the
/// folder's own reads, opens and removals, which every pass causes: waking
/// up on those would make the watcher wake itself up forever.
fn is_arrival(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Data(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

fn io_err(path: &Path, e: std::io::Error) -> IngestError {
    IngestError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn remove(path: &Path) -> Result<(), IngestError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_name_and_content_only() {
        let a = landing_key("ward.csv", b"unit_code,period\n");
        assert_eq!(a, landing_key("ward.csv", b"unit_code,period\n"));
        assert_ne!(a, landing_key("ward2.csv", b"unit_code,period\n"));
        assert_ne!(a, landing_key("ward.csv", b"unit_code,period\n\n"));
        // Stable across builds: pinned.
        assert_eq!(
            landing_key("", b""),
            "baocao-landing-af63bd4c8601b7df27a3eeb23259be90"
        );
    }

    #[test]
    fn only_arrivals_wake_the_watcher() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, MetadataKind, ModifyKind, RemoveKind, RenameMode,
        };
        assert!(is_arrival(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_arrival(&EventKind::Create(CreateKind::File)));
        assert!(is_arrival(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        // What the watcher's own pass causes: listing, reading, removing.
        assert!(!is_arrival(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_arrival(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_arrival(&EventKind::Remove(RemoveKind::File)));
        assert!(!is_arrival(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
    }

    #[test]
    fn temporary_names_are_skipped() {
        assert!(is_temporary(".ward.csv"));
        assert!(is_temporary("ward.csv.tmp"));
        assert!(!is_temporary("ward.csv"));
    }
}
