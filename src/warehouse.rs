//! The warehouse folder: where the catalog files and the reports table live.
//!
//! ```text
//! <root>/catalog/      indicator catalog and hierarchy files (editable)
//! <root>/reports/      the Delta table of report values
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use baocao_catalog::Catalog;
use baocao_ingest::ReportStore;
use url::Url;

/// A warehouse on the local file system.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: PathBuf,
}

impl Warehouse {
    /// Creates the warehouse folder if needed: the shipped catalog files
    /// (existing ones are kept) and an empty reports table.
    pub async fn create(root: &Path) -> Result<Warehouse> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create the warehouse folder {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        let w = Warehouse { root };
        baocao_catalog::write_default_files(&w.catalog_dir())?;
        w.load_catalog()?;
        ReportStore::open_or_create(w.reports_url()?).await?;
        Ok(w)
    }

    /// Opens an existing warehouse; fails with advice if there is none.
    pub fn open(root: &Path) -> Result<Warehouse> {
        if !root.exists() {
            bail!(
                "no warehouse at {}: create one with `baocao init --warehouse {0}` or `baocao demo --warehouse {0}`",
                root.display()
            );
        }
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        let w = Warehouse { root };
        if !w.catalog_dir().join("indicators.csv").exists()
            || !w.root.join("reports").join("_delta_log").exists()
        {
            bail!(
                "{} is not a baocao warehouse (it has no catalog/indicators.csv or reports/_delta_log); \
                 create one with `baocao init --warehouse {0}`",
                w.root.display()
            );
        }
        Ok(w)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    /// The reports table's location as a URL (a local folder today; an
    /// object store URL works the same way).
    pub fn reports_url(&self) -> Result<Url> {
        let dir = self.root.join("reports");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Url::from_directory_path(&dir)
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", dir.display()))
    }

    pub fn load_catalog(&self) -> Result<Catalog> {
        Ok(baocao_catalog::load_dir(&self.catalog_dir())?)
    }

    pub async fn reports(&self) -> Result<ReportStore> {
        Ok(ReportStore::open(self.reports_url()?).await?)
    }
}
