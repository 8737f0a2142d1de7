//! `baocao ingest FILE...`: every file validated, then all committed in one
//! atomic transaction, or nothing committed at all.

use anyhow::Result;
use baocao_ingest::{Submission, ValidBatch, Validator, read_parquet_file};

use crate::cli::IngestArgs;
use crate::warehouse::Warehouse;

pub async fn run(args: &IngestArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.warehouse.warehouse)?;
    let catalog = warehouse.load_catalog()?;
    let today = chrono::Utc::now().date_naive();
    let validator = Validator::new(&catalog, today);
    let mut valid = Vec::new();
    for path in &args.files {
        let batch = read_parquet_file(path)?;
        let name = path.display().to_string();
        let checked = validator.validate(&batch, &name)?;
        valid.push((name, checked));
    }
    let files = valid.len();
    let batch = ValidBatch::concat(valid)?;
    let store = warehouse.reports().await?;
    let submission = Submission::now(args.submitted_by.clone());
    let id = submission.submission_id.clone();
    let receipt = store.commit(vec![(batch, submission)]).await?;
    println!(
        "committed {} values from {files} file(s) as submission {id} (table version {})",
        receipt.rows, receipt.version
    );
    Ok(())
}
