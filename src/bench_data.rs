//! `baocao bench-data`: the reporting benchmark's data (`benches/run-reporting-bench`).
//!
//! Every pre-reform ward of Hanoi (`hanoi`) or of the whole country (`vn`)
//! sends its monthly report for each month of the range: the catalog's
//! ward-monthly indicators plus synthetic counts up to `--indicators`. The
//! values, the ~2% of reports never sent and the ~1% corrected later are
//! the demo generator's (a pure function of seed, unit, period and
//! indicator). Reports go through baocao's own ingest path, validator and
//! commit, in the order they arrive: at `hanoi` scale each report is its
//! own commit and its own Parquet file, as in production; at `vn` scale the
//! reports of one district's wards for a month share one. The same rows,
//! with their submission times, are written as CSV for the peers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use baocao_catalog::{Level, Period, PeriodType, UnitCode};
use baocao_ingest::{Submission, ValidBatch, Validator};
use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{BenchCommits, BenchDataArgs, BenchScale};
use crate::demo::{Generator, Report};
use crate::warehouse::Warehouse;

/// The schedule form every benchmark report answers.
const FORM: &str = "ward_monthly";
/// Code prefix of the synthetic indicators.
const SYNTHETIC: &str = "bench_indicator_";

pub async fn run(args: &BenchDataArgs) -> Result<()> {
    let from: Period = args.from.parse().context("--from")?;
    let to: Period = args.to.parse().context("--to")?;
    if from.period_type() != PeriodType::Month || to.period_type() != PeriodType::Month {
        bail!("--from and --to are months, such as 2020-07");
    }
    if from > to {
        bail!("--from {from} is after --to {to}");
    }
    let (warehouse, newest) = if args.resume {
        let warehouse = Warehouse::open(&args.warehouse)?;
        let newest = newest_commit(&warehouse).await?;
        (warehouse, newest)
    } else {
        if args.warehouse.join("reports").exists() {
            bail!(
                "{} already exists: the benchmark's data goes into a new warehouse \
                 (--resume continues a generation that was cut off)",
                args.warehouse.display()
            );
        }
        (Warehouse::create(&args.warehouse).await?, None)
    };
    let grouping = args.commits.unwrap_or(match args.scale {
        BenchScale::Hanoi => BenchCommits::Submission,
        BenchScale::Vn => BenchCommits::District,
    });
    // Each commit names the options it was generated with, so that a
    // resume with other options stops before it changes anything.
    let generation = serde_json::json!({
        "scale": format!("{:?}", args.scale),
        "from": from.to_string(),
        "to": to.to_string(),
        "indicators": args.indicators,
        "seed": args.seed,
        "commits": format!("{grouping:?}"),
    });
    if let Some(NewestCommit {
        generation: Some(theirs),
        ..
    }) = &newest
        && *theirs != generation
    {
        bail!(
            "--resume: the warehouse was generated with {theirs}, not {generation}: \
             resume with the first run's --scale, --from, --to, --indicators, --seed and --commits"
        );
    }
    let mut resume_after = newest.map(|n| n.submissions);
    // Both steps are no-ops when a resumed run already made them.
    if args.scale == BenchScale::Vn {
        copy_country(&args.country, &warehouse.catalog_dir().join("hierarchy"))?;
    }
    add_synthetic_indicators(&warehouse, args.indicators)?;
    let catalog = warehouse.load_catalog()?;
    let store = warehouse.reports().await?;
    let validator = Validator::new(&catalog, Utc::now().date_naive());
    let generator = Generator::new(&catalog, args.seed);

    let months = Period::range(PeriodType::Month, from, to);
    let bar = ProgressBar::new(months.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>40} [{bar:30}] {pos}/{len} months, {elapsed} elapsed, ~{eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let temporary = args.values.with_extension("csv.partial");
    let mut values = BufWriter::new(
        File::create(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?,
    );
    writeln!(values, "unit_code,period,indicator_code,value,submitted_at")?;

    let started = Instant::now();
    let (mut reports_sent, mut commits, mut rows) = (0usize, 0usize, 0usize);
    let mut skipped = 0usize;
    let mut corrections: Vec<Report> = Vec::new();
    for (i, month) in months.iter().enumerate() {
        // Corrections arrive weeks after their report: with the next
        // month's reports (the last month's go with it).
        let mut arriving = std::mem::take(&mut corrections);
        for report in generator.reports_due(*month) {
            if report.form != FORM {
                continue;
            }
            if report.revision == 0 {
                arriving.push(report);
            } else {
                corrections.push(report);
            }
        }
        if i + 1 == months.len() {
            arriving.append(&mut corrections);
        }
        arriving.sort_by(|a, b| {
            (a.submitted_at, &a.unit, a.revision).cmp(&(b.submitted_at, &b.unit, b.revision))
        });
        for group in group_reports(arriving, grouping, &catalog, *month) {
            let mut submissions: Vec<(ValidBatch, Submission)> = Vec::with_capacity(group.len());
            for report in &group {
                let batch = report.to_batch()?;
                let valid = validator
                    .validate(
                        &batch,
                        &format!("benchmark report of {} for {}", report.unit, report.period),
                    )
                    .map_err(|r| anyhow::anyhow!("the generator made an invalid report: {r}"))?;
                write_rows(&mut values, report)?;
                rows += valid.len();
                submissions.push((
                    valid,
                    Submission {
                        submission_id: format!(
                            "bench-{}-{}-{}",
                            report.period, report.unit, report.revision
                        ),
                        submitted_by: format!("unit-{}", report.unit),
                        submitted_at: report.submitted_at,
                        source: "bench-data".to_string(),
                    },
                ));
            }
            reports_sent += submissions.len();
            commits += 1;
            if let Some(last) = &resume_after {
                // Commits land in the order they are generated in: every
                // group up to the newest committed one is in already.
                if submissions.iter().map(|(_, s)| &s.submission_id).eq(last) {
                    resume_after = None;
                }
                skipped += 1;
                continue;
            }
            store
                .commit_with_metadata(
                    submissions,
                    [(GENERATION_METADATA.to_string(), generation.clone())],
                )
                .await?;
            store.checkpoint(CHECKPOINT_EVERY).await?;
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{reports_sent} reports, {rows} values, {:.0} values/s",
            rows as f64 / seconds
        ));
        bar.inc(1);
    }
    if resume_after.is_some() {
        bail!(
            "--resume: the warehouse's newest commit is none of this generation's \
             (were --scale, --from, --to, --indicators, --seed and --commits the first run's?)"
        );
    }
    values.flush()?;
    drop(values);
    std::fs::rename(&temporary, &args.values)
        .with_context(|| format!("cannot write {}", args.values.display()))?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    // A resumed run's rate would count the rows it only wrote to the CSV.
    let timing = if skipped > 0 {
        format!(
            "of which the last {} were made now, in {seconds:.1} s",
            commits - skipped
        )
    } else {
        format!(
            "{seconds:.1} s through the ingest path ({:.0} values/s)",
            rows as f64 / seconds.max(1e-9)
        )
    };
    println!(
        "{}: {reports_sent} reports ({rows} values) in {commits} commits, {timing}; the same rows in {}",
        warehouse.root().display(),
        args.values.display()
    );
    Ok(())
}

/// The key of a generated commit's metadata that names the generation's
/// options.
const GENERATION_METADATA: &str = "baocao.bench_generation";

/// What a resume needs of the newest commit that carries submissions.
struct NewestCommit {
    /// Its submission ids, in commit order.
    submissions: Vec<String>,
    /// The options it was generated with (`None` from a generator that did
    /// not record them).
    generation: Option<serde_json::Value>,
}

/// The newest commit that carries submissions (`None` if no report is in
/// yet).
async fn newest_commit(warehouse: &Warehouse) -> Result<Option<NewestCommit>> {
    let table = deltalake::open_table(warehouse.reports_url()?).await?;
    let mut history = table.history(None);
    while let Some(commit) = history.next().await {
        let mut info = commit?.info;
        let Some(serde_json::Value::Array(submissions)) =
            info.remove(baocao_ingest::SUBMISSIONS_METADATA)
        else {
            continue;
        };
        let ids = submissions
            .iter()
            .map(|s| {
                s.get("submission_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_string)
                    .context("a commit's submissions lack their ids")
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(NewestCommit {
            submissions: ids,
            generation: info.remove(GENERATION_METADATA),
        }));
    }
    Ok(None)
}

/// Commits between the generator's checkpoints. The server checkpoints
/// every `CHECKPOINT_INTERVAL` (20) commits, which suits a table that its
/// compaction keeps to a few hundred files; but a checkpoint writes every
/// live file's entry and loads the writer's snapshot afresh, each in time
/// proportional to the live files, and the benchmark leaves tens of
/// thousands un-compacted on purpose. A commit itself costs the same
/// whatever the checkpoints (it appends blind: see `ReportStore`).
const CHECKPOINT_EVERY: u64 = 200;

/// The reports that share a commit, in arrival order.
fn group_reports(
    reports: Vec<Report>,
    grouping: BenchCommits,
    catalog: &baocao_catalog::Catalog,
    month: Period,
) -> Vec<Vec<Report>> {
    match grouping {
        BenchCommits::Submission => reports.into_iter().map(|r| vec![r]).collect(),
        BenchCommits::District => {
            let version = catalog.hierarchy_for(&month);
            let mut groups: BTreeMap<(Option<UnitCode>, u32, Period), Vec<Report>> =
                BTreeMap::new();
            for r in reports {
                let district = version
                    .and_then(|v| v.get(&r.unit))
                    .and_then(|u| u.parent.clone());
                groups
                    .entry((district, r.revision, r.period))
                    .or_default()
                    .push(r);
            }
            groups.into_values().collect()
        }
    }
}

fn write_rows(out: &mut impl Write, report: &Report) -> Result<()> {
    let at = report.submitted_at.format("%Y-%m-%d %H:%M:%S%.6f+00");
    for (indicator, value) in &report.values {
        writeln!(
            out,
            "{},{},{},{},{}",
            report.unit, report.period, indicator, value, at
        )?;
    }
    Ok(())
}

/// Replaces the warehouse's hierarchy files (Hanoi's) by the country's.
fn copy_country(country: &Path, hierarchy: &Path) -> Result<()> {
    let entries = std::fs::read_dir(country).with_context(|| {
        format!(
            "cannot read the country's hierarchy files in {}",
            country.display()
        )
    })?;
    let mut copied = 0;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if (name.starts_with("units_") || name.starts_with("ward_changes_"))
            && name.ends_with(".csv")
        {
            std::fs::copy(&path, hierarchy.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("{} holds no units_*.csv file", country.display());
    }
    Ok(())
}

/// Appends synthetic ward-monthly counts to the warehouse's indicator
/// catalog until it has `wanted` ward-monthly indicators.
fn add_synthetic_indicators(warehouse: &Warehouse, wanted: usize) -> Result<()> {
    let catalog = warehouse.load_catalog()?;
    let version = catalog
        .hierarchies()
        .versions()
        .first()
        .context("the catalog has no hierarchy version")?;
    let form = catalog
        .forms()
        .iter()
        .find(|f| f.code == FORM)
        .with_context(|| format!("the schedule has no {FORM} form"))?;
    let have = form
        .indicators
        .iter()
        .filter_map(|c| catalog.indicator(c))
        .filter(|i| i.reporting_level(version) == Level::Ward)
        .count();
    if wanted < have {
        bail!("--indicators {wanted}: the catalog's {FORM} report already has {have}");
    }
    let path = warehouse.catalog_dir().join("indicators.csv");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    for n in have + 1..=wanted {
        writeln!(
            file,
            "{SYNTHETIC}{n:03},,Chỉ tiêu thử nghiệm {n},Benchmark indicator {n},culture_social,lượt,count,sum,sum,,ward,month,0,,synthetic (baocao bench-data)"
        )?;
    }
    Ok(())
}
