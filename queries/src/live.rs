//! `reports_history`: the Delta table of every submitted value, read at its
//! newest version on every query.
//!
//! A Delta table provider is a snapshot; a reporting warehouse must show a
//! report the moment its commit lands. So this provider asks the log for new
//! commits at the start of each scan (one metadata read when there are none,
//! see `baocao_table`) and plans the scan on that fresh snapshot.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
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
    schema: SchemaRef,
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
            schema,
        })
    }

    /// The provider for the newest version of the table.
    async fn refresh(&self, state: &dyn Session) -> Result<Arc<dyn TableProvider>> {
        let mut table = self.table.lock().await;
        let changed = table.refresh().await.map_err(delta_err)?;
        let table = table.table();
        table.update_datafusion_session(state).map_err(delta_err)?;
        if !changed && let Ok(current) = self.current.read() {
            return Ok(current.clone());
        }
        let provider = table.table_provider().await?;
        if let Ok(mut current) = self.current.write() {
            *current = provider.clone();
        }
        Ok(provider)
    }

    /// The version the last scan read.
    pub async fn version(&self) -> Option<u64> {
        self.table.lock().await.table().version()
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
