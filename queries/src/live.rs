//! `reports_history`: the Delta table of every submitted value, read at its
//! newest version on every query.
//!
//! A Delta table provider is a snapshot; a reporting warehouse must show a
//! report the moment its commit lands. So this provider asks the log for new
//! commits at the start of each scan (one metadata read when there are none,
//! see `baocao_table`) and plans the scan on that fresh snapshot.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use tokio::sync::Mutex;

/// A Delta table that always scans its newest committed version.
pub struct LiveDeltaTable {
    table: Mutex<baocao_table::CurrentTable>,
    /// The provider of the last refresh, for schema and pushdown answers,
    /// which DataFusion asks synchronously.
    current: RwLock<Arc<dyn TableProvider>>,
    /// What identifies each period partition's content at the provider's
    /// version (see [`Partitions`]); built when the version changes.
    partitions: RwLock<Option<Arc<HashMap<String, u64>>>>,
    /// The runtime whose object store registry has the table's store: a
    /// statement's scans find it there. Each statement asks for the newest
    /// version, and registering again (URL to path, a map insert) costs
    /// more than the `stat` that finds whether anything changed.
    registered: std::sync::Mutex<Weak<RuntimeEnv>>,
    schema: SchemaRef,
}

/// One version of the table, with an identity of each period partition's
/// content: a hash of the set of its data files. Data files are never
/// changed, and rows are only ever added (a compaction rewrites the same
/// rows into new files), so a partition whose identity is unchanged holds
/// exactly the rows it held, and whatever was computed from them holds.
pub struct Partitions {
    /// The table at that version.
    pub provider: Arc<dyn TableProvider>,
    /// Period -> identity of its files.
    pub identities: Arc<HashMap<String, u64>>,
}

impl Partitions {
    /// The periods `named` that have data (every period when `None`).
    pub fn periods(&self, named: Option<&std::collections::BTreeSet<String>>) -> Vec<String> {
        match named {
            Some(set) => set
                .iter()
                .filter(|p| self.identities.contains_key(*p))
                .cloned()
                .collect(),
            None => self.identities.keys().cloned().collect(),
        }
    }
}

/// How many missing partitions one aggregation computes: the first query
/// after a start computes every partition, and one aggregation over all of
/// them would hold the whole table's hash tables at once.
pub const PERIODS_PER_PASS: usize = 6;

/// The partition identities of a table's files (`.../period=2024-07/...`).
fn identities(table: &DeltaTable) -> Result<HashMap<String, u64>> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut out: HashMap<String, u64> = HashMap::new();
    for uri in table.get_file_uris().map_err(delta_err)? {
        let Some(period) = uri
            .split('/')
            .find_map(|segment| segment.strip_prefix("period="))
        else {
            continue;
        };
        let period = percent_decode(period);
        // Order-independent: the sum of the files' hashes.
        let h = hasher.hash_one(&uri);
        let entry = out.entry(period).or_default();
        *entry = entry.wrapping_add(h);
    }
    Ok(out)
}

/// `%2D` and the like back to their characters (Delta writes partition
/// values URL-encoded in paths).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Debug for LiveDeltaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDeltaTable")
            .field("schema", &self.schema)
            .finish()
    }
}

fn delta_err(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl LiveDeltaTable {
    pub async fn open(table: DeltaTable) -> Result<Self> {
        let provider = table.table_provider().await?;
        let schema = provider.schema();
        Ok(LiveDeltaTable {
            table: Mutex::new(baocao_table::CurrentTable::new(table).await),
            current: RwLock::new(provider),
            partitions: RwLock::new(None),
            registered: std::sync::Mutex::new(Weak::new()),
            schema,
        })
    }

    /// The newest version of the table with its partitions' identities.
    pub async fn partitions(&self, state: &dyn Session) -> Result<Partitions> {
        let (provider, identities, _) = self.newest(state, true).await?;
        Ok(Partitions {
            provider,
            identities: identities.unwrap_or_default(),
        })
    }

    /// The provider for the newest version of the table.
    async fn refresh(&self, state: &dyn Session) -> Result<Arc<dyn TableProvider>> {
        Ok(self.newest(state, false).await?.0)
    }

    /// The table's newest version: the one a scan starting now reads (and
    /// every later scan reads it or a newer one). `None` for a table
    /// without a commit.
    pub async fn newest_version(&self, state: &dyn Session) -> Result<Option<u64>> {
        Ok(self.newest(state, false).await?.2)
    }

    /// Brings the table to its newest version: its provider, its
    /// partitions' identities when asked for (computed once per version),
    /// and the version.
    async fn newest(
        &self,
        state: &dyn Session,
        with_identities: bool,
    ) -> Result<(
        Arc<dyn TableProvider>,
        Option<Arc<HashMap<String, u64>>>,
        Option<u64>,
    )> {
        let mut table = self.table.lock().await;
        let changed = table.refresh().await.map_err(delta_err)?;
        let table = table.table();
        let version = table.version();
        let runtime = state.runtime_env();
        let registered = self
            .registered
            .lock()
            .is_ok_and(|r| std::ptr::eq(r.as_ptr(), Arc::as_ptr(runtime)));
        if changed || !registered {
            table.update_datafusion_session(state).map_err(delta_err)?;
            if let Ok(mut r) = self.registered.lock() {
                *r = Arc::downgrade(runtime);
            }
        }
        let current = self.current.read().ok().map(|c| c.clone());
        let provider = match current {
            Some(provider) if !changed => provider,
            _ => {
                let provider = table.table_provider().await?;
                if let Ok(mut current) = self.current.write() {
                    *current = provider.clone();
                }
                // The identities were of the previous version.
                if let Ok(mut partitions) = self.partitions.write() {
                    *partitions = None;
                }
                provider
            }
        };
        if !with_identities {
            return Ok((provider, None, version));
        }
        let known = self.partitions.read().ok().and_then(|p| p.clone());
        let identities = match known {
            Some(identities) => identities,
            None => {
                let identities = Arc::new(identities(table)?);
                if let Ok(mut partitions) = self.partitions.write() {
                    *partitions = Some(identities.clone());
                }
                identities
            }
        };
        Ok((provider, Some(identities), version))
    }
}

#[async_trait]
impl TableProvider for LiveDeltaTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        match self.current.read() {
            Ok(current) => current.supports_filters_pushdown(filters),
            Err(_) => Ok(vec![
                TableProviderFilterPushDown::Unsupported;
                filters.len()
            ]),
        }
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let provider = self.refresh(state).await?;
        provider.scan(state, projection, filters, limit).await
    }
}

/// Values computed per period partition, each kept with the identity of
/// the files it was computed from (see [`Partitions`]), within a memory
/// budget: past it, the least recently used periods are dropped (and
/// computed again when asked for).
pub struct PartitionMemo<T> {
    inner: std::sync::Mutex<MemoInner<T>>,
    budget: usize,
}

struct MemoInner<T> {
    entries: HashMap<String, MemoEntry<T>>,
    bytes: usize,
    clock: u64,
}

struct MemoEntry<T> {
    identity: u64,
    value: Arc<T>,
    bytes: usize,
    used: u64,
}

impl<T> PartitionMemo<T> {
    /// A memo holding about `budget` bytes at most.
    pub fn new(budget: usize) -> Self {
        PartitionMemo {
            inner: std::sync::Mutex::new(MemoInner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            budget,
        }
    }

    /// About the most bytes the memo holds.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The value of `period` if it was computed at `identity`.
    pub fn get(&self, period: &str, identity: u64) -> Option<Arc<T>> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(period)?;
        if entry.identity != identity {
            return None;
        }
        entry.used = now;
        Some(entry.value.clone())
    }

    /// The values of `periods` kept at their current identity in `parts`,
    /// and the periods that must be computed.
    pub fn split(
        &self,
        parts: &Partitions,
        periods: Vec<String>,
    ) -> (HashMap<String, Arc<T>>, Vec<String>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for p in periods {
            match parts.identities.get(&p).and_then(|id| self.get(&p, *id)) {
                Some(value) => {
                    found.insert(p, value);
                }
                None => missing.push(p),
            }
        }
        (found, missing)
    }

    /// Keeps `value` (of about `bytes`) for `period` at its identity in
    /// `parts`.
    pub fn keep(&self, parts: &Partitions, period: &str, value: Arc<T>, bytes: usize) {
        if let Some(id) = parts.identities.get(period) {
            self.insert(period, *id, value, bytes);
        }
    }

    /// Keeps `value` (of about `bytes`) for `period` at `identity`.
    pub fn insert(&self, period: &str, identity: u64, value: Arc<T>, bytes: usize) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.clock += 1;
        let used = inner.clock;
        let entry = MemoEntry {
            identity,
            value,
            bytes,
            used,
        };
        if let Some(old) = inner.entries.insert(period.to_string(), entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.budget && inner.entries.len() > 1 {
            let oldest = inner
                .entries
                .iter()
                .filter(|(p, _)| p.as_str() != period)
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| p.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_answers_only_at_the_same_identity_and_drops_the_least_used() {
        let memo = PartitionMemo::new(250);
        memo.insert("2024-01", 1, Arc::new("a"), 100);
        memo.insert("2024-02", 7, Arc::new("b"), 100);
        assert_eq!(memo.get("2024-01", 1).as_deref(), Some(&"a"));
        // The files changed: computed again.
        assert!(memo.get("2024-02", 8).is_none());
        // Past the budget the least recently used goes (2024-02), not the
        // one just read (2024-01) or the one just kept.
        memo.insert("2024-03", 3, Arc::new("c"), 100);
        assert!(memo.get("2024-02", 7).is_none());
        assert_eq!(memo.get("2024-01", 1).as_deref(), Some(&"a"));
        assert_eq!(memo.get("2024-03", 3).as_deref(), Some(&"c"));
        // A value larger than the budget is still kept alone.
        memo.insert("2024", 9, Arc::new("big"), 1000);
        assert_eq!(memo.get("2024", 9).as_deref(), Some(&"big"));
        assert!(memo.get("2024-01", 1).is_none());
    }
}
