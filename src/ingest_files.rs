//! `baocao ingest FILE...` (every file validated, then all committed in one
//! atomic transaction, or nothing) and `baocao check FILE...` (the same
//! validation, nothing committed: an ETL job's dry run).

use anyhow::{Result, bail};
use baocao_ingest::{IngestError, Submission, ValidBatch, Validator, read_file};

use crate::cli::{CheckArgs, IngestArgs};
use crate::warehouse::Warehouse;

pub async fn run(args: &IngestArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.warehouse.warehouse)?;
    let catalog = warehouse.load_catalog()?;
    let today = chrono::Utc::now().date_naive();
    let validator = Validator::new(&catalog, today);
    let mut valid = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let input = read_file(path)?;
        let checked = validator.validate_rows(&input.batch, &name, Some(&input.rows))?;
        valid.push((name, checked));
    }
    let files = valid.len();
    let batch = ValidBatch::concat(valid)?;
    let store = warehouse.reports().await?;
    let names: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    let mut source = format!("ingest:{}", names.join(","));
    if source.len() > 1000 {
        let mut cut = 1000;
        while !source.is_char_boundary(cut) {
            cut -= 1;
        }
        source.truncate(cut);
        source.push('…');
    }
    let submission = Submission::now(args.submitted_by.clone(), source);
    let id = submission.submission_id.clone();
    let receipt = store.commit(vec![(batch, submission)]).await?;
    // The commit is done; a checkpoint only keeps the log quick to read.
    if let Err(e) = store.checkpoint(baocao_ingest::CHECKPOINT_INTERVAL).await {
        eprintln!("warning: no checkpoint written: {e}");
    }
    println!(
        "committed {} values from {files} file(s) as submission {id} (table version {})",
        receipt.rows, receipt.version
    );
    Ok(())
}

/// Prints, per file, `ok` or every problem found, one per line; fails if
/// any file would be refused.
pub fn check(args: &CheckArgs) -> Result<()> {
    let warehouse = Warehouse::open(&args.warehouse.warehouse)?;
    let catalog = warehouse.load_catalog()?;
    let today = chrono::Utc::now().date_naive();
    let validator = Validator::new(&catalog, today);
    let mut refused = 0;
    for path in &args.files {
        let name = path.display().to_string();
        let result = read_file(path).and_then(|input| {
            validator
                .validate_rows(&input.batch, &name, Some(&input.rows))
                .map_err(IngestError::from)
        });
        match result {
            Ok(valid) => println!("ok {name}: {} values", valid.len()),
            Err(IngestError::Rejected(r)) => {
                refused += 1;
                println!("refused {name}: {} problem(s)", r.total);
                for e in &r.errors {
                    println!("  {name}: {e}");
                }
                if r.total > r.errors.len() {
                    println!("  {name}: ... and {} more", r.total - r.errors.len());
                }
            }
            Err(other) => {
                refused += 1;
                println!("refused {name}: {other}");
            }
        }
    }
    if refused > 0 {
        bail!("{refused} of {} file(s) would be refused", args.files.len());
    }
    Ok(())
}
