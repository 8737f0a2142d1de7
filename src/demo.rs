//! The Hanoi demo: real units, generated reports.
//!
//! The demo follows the report schedule: every unit that owes a form sends
//! it after the period, a few days before or after the deadline.
//!
//! Every value is a pure function of (seed, unit, period, indicator), so the
//! same seed gives the same warehouse whatever the order of generation, and
//! a run that stopped half-way resumes where its last commit ended. Each
//! month of submissions is one atomic commit, marked with the month in the
//! commit's metadata.
//!
//! Values are calibrated on Hanoi's published figures (`hanoi-figures.md`):
//! about 16,300 people per pre-2025 ward, 3.8 people per household, births
//! about 14 per 1,000 a year. A post-reform ward's base population is the
//! sum of the old wards that went into it (a split ward shared equally), so
//! series continue across 2025-07-01. Reports of the last month submitted
//! "in the future" are stamped now instead, so only those timestamps depend
//! on when the demo runs.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use baocao_catalog::{Catalog, HierarchyVersion, Level, Period, PeriodType, UnitCode, ValueKind};
use baocao_ingest::{ReportStore, Submission, Validator};
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

use crate::cli::DemoArgs;
use crate::warehouse::Warehouse;

/// Commit metadata key naming the last month a demo commit generated.
const DEMO_MONTH: &str = "baocao.demo_month";
/// Share of ward reports that never arrive.
const MISSING: f64 = 0.02;
/// Share of ward reports corrected later.
const CORRECTED: f64 = 0.01;

/// Creates or completes the demo warehouse.
pub async fn prepare(args: &DemoArgs) -> Result<Warehouse> {
    let from: Period = args.from.parse().context("--from")?;
    let today = Utc::now().date_naive();
    let to: Period = match &args.to {
        Some(t) => t.parse().context("--to")?,
        None => Period::month_of(today)
            .start()
            .pred_opt()
            .map(Period::month_of)
            .context("no last full month")?,
    };
    if from.period_type() != PeriodType::Month || to.period_type() != PeriodType::Month {
        bail!("--from and --to are months, such as 2021-01");
    }
    if from > to {
        bail!("--from {from} is after --to {to}");
    }
    if to.start() > today {
        bail!("--to {to} has not started yet");
    }
    // The listen address is checked before hours of generation, not after.
    // The demo accounts' passwords are in the README: they are for this
    // machine only.
    if !args.no_serve && !args.no_demo_accounts && !args.listen.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} with the demo accounts, whose passwords are published: listen on a loopback address, or pass --no-demo-accounts and create accounts (baocao user add)",
            args.listen.listen
        );
    }
    // Without accounts, or with trust, only loopback is safe either.
    if !args.no_serve
        && (args.no_demo_accounts
            || args.security.auth == Some(crate::postgres::login::Method::Trust))
    {
        crate::server::check_exposure(
            args.listen.listen,
            args.security.auth,
            &baocao_access::AccountStore::new(&args.warehouse.warehouse),
        )?;
    }
    let warehouse = Warehouse::create(&args.warehouse.warehouse).await?;
    let catalog = warehouse.load_catalog()?;
    let store = warehouse.reports().await?;
    let done = last_generated_month(&warehouse).await?;
    let months: Vec<Period> = Period::range(PeriodType::Month, from, to)
        .into_iter()
        .filter(|m| done.is_none_or(|d| *m > d))
        .collect();
    if months.is_empty() {
        println!(
            "demo warehouse at {} is complete (reports through {})",
            warehouse.root().display(),
            done.map(|d| d.to_string()).unwrap_or_default()
        );
        return Ok(warehouse);
    }
    let generator = Generator::new(&catalog, args.seed);
    let validator = Validator::new(&catalog, today);
    let bar = ProgressBar::new(months.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} months, {elapsed} elapsed, ~{eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("generating");
    let mut pending_corrections = Vec::new();
    let mut total_rows = 0usize;
    for (i, month) in months.iter().enumerate() {
        let mut submissions = std::mem::take(&mut pending_corrections);
        for report in generator.reports_due(*month) {
            let batch = report.to_batch()?;
            let valid = validator
                .validate(
                    &batch,
                    &format!("demo report of {} for {}", report.unit, report.period),
                )
                .map_err(|r| anyhow::anyhow!("the demo generated an invalid report: {r}"))?;
            let sub = Submission {
                submission_id: format!(
                    "demo-{}-{}-{}-{}",
                    report.form, report.period, report.unit, report.revision
                ),
                submitted_by: format!("unit-{}", report.unit),
                submitted_at: report.submitted_at,
                source: "demo".to_string(),
            };
            if report.revision == 0 {
                submissions.push((valid, sub));
            } else {
                pending_corrections.push((valid, sub));
            }
        }
        // The last month's corrections go with it: there is no later commit.
        if i + 1 == months.len() {
            submissions.append(&mut pending_corrections);
        }
        total_rows += submissions.iter().map(|(b, _)| b.len()).sum::<usize>();
        commit_month(&store, submissions, *month).await?;
        store.checkpoint(baocao_ingest::CHECKPOINT_INTERVAL).await?;
        bar.inc(1);
    }
    bar.finish_with_message("done");
    println!(
        "demo warehouse at {}: {} months, {} values (table version {})",
        warehouse.root().display(),
        months.len(),
        total_rows,
        store.version().await?
    );
    Ok(warehouse)
}

async fn commit_month(
    store: &ReportStore,
    submissions: Vec<(baocao_ingest::ValidBatch, Submission)>,
    month: Period,
) -> Result<()> {
    store
        .commit_with_metadata(
            submissions,
            [(
                DEMO_MONTH.to_string(),
                serde_json::Value::String(month.to_string()),
            )],
        )
        .await?;
    Ok(())
}

/// The month of the newest demo commit, if any.
async fn last_generated_month(warehouse: &Warehouse) -> Result<Option<Period>> {
    let table = deltalake::open_table(warehouse.reports_url()?).await?;
    let mut history = table.history(None);
    while let Some(commit) = history.next().await {
        let commit = commit?;
        if let Some(serde_json::Value::String(m)) = commit.info.get(DEMO_MONTH) {
            return Ok(m.parse().ok());
        }
    }
    Ok(None)
}

/// One ward's report for one period.
pub(crate) struct Report {
    /// The schedule form the report answers.
    pub(crate) form: String,
    pub(crate) unit: UnitCode,
    pub(crate) period: Period,
    /// 0 for the first submission, 1 for its correction.
    pub(crate) revision: u32,
    pub(crate) submitted_at: chrono::DateTime<Utc>,
    pub(crate) values: Vec<(String, f64)>,
}

impl Report {
    pub(crate) fn to_batch(&self) -> Result<RecordBatch> {
        let n = self.values.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_code", DataType::Utf8, false),
            Field::new("period", DataType::Utf8, false),
            Field::new("indicator_code", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![self.unit.as_str(); n])),
                Arc::new(StringArray::from(vec![self.period.to_string(); n])),
                Arc::new(StringArray::from(
                    self.values
                        .iter()
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    self.values.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
                )),
            ],
        )?)
    }
}

/// Deterministic values for the demo.
pub(crate) struct Generator<'a> {
    catalog: &'a Catalog,
    seed: u64,
    /// Base population (in 2021) of each pre-reform ward.
    old_base: HashMap<UnitCode, f64>,
    /// Base population (in 2021) of each post-reform ward: the sum of its old wards.
    new_base: HashMap<UnitCode, f64>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h = mix(seed);
    for p in parts {
        for b in p.bytes() {
            h = mix(h ^ u64::from(b));
        }
        h = mix(h ^ 0xFF);
    }
    h
}

impl<'a> Generator<'a> {
    pub(crate) fn new(catalog: &'a Catalog, seed: u64) -> Self {
        let versions = catalog.hierarchies().versions();
        let mut g = Generator {
            catalog,
            seed,
            old_base: HashMap::new(),
            new_base: HashMap::new(),
        };
        if let Some(first) = versions.first() {
            for w in first.units().filter(|u| u.level == Level::Ward) {
                // Log-normal around 16,300 people (Hanoi 2024 / 526 wards).
                let pop = 16_300.0 * (0.45 * g.normal(&[w.code.as_str(), "base"])).exp() / 1.106;
                g.old_base.insert(w.code.clone(), pop.max(2_000.0));
            }
        }
        let changes = catalog.hierarchies().changes();
        let mut parts: HashMap<&UnitCode, usize> = HashMap::new();
        for c in changes {
            *parts.entry(&c.old_code).or_default() += 1;
        }
        for c in changes {
            let share = g.old_base.get(&c.old_code).copied().unwrap_or(0.0)
                / parts.get(&c.old_code).copied().unwrap_or(1) as f64;
            *g.new_base.entry(c.new_code.clone()).or_default() += share;
        }
        g
    }

    fn u01(&self, parts: &[&str]) -> f64 {
        (hash(self.seed, parts) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller on two hashes).
    fn normal(&self, parts: &[&str]) -> f64 {
        let mut p: Vec<&str> = parts.to_vec();
        p.push("n1");
        let u1 = self.u01(&p).max(1e-12);
        p.pop();
        p.push("n2");
        let u2 = self.u01(&p);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// The indicators of `form` that `level` reports in `version`.
    fn form_indicators(
        &self,
        form: &baocao_catalog::Form,
        version: &HierarchyVersion,
        level: Level,
    ) -> Vec<&'a baocao_catalog::Indicator> {
        form.indicators
            .iter()
            .filter_map(|c| self.catalog.indicator(c))
            .filter(|i| i.reporting_level(version) == level)
            .collect()
    }

    /// Every report the schedule (`schedule.csv`) asks for a period ending
    /// with `month` — each owing unit's form — less about 2% never sent,
    /// plus corrections of about 1% (revision 1, submitted weeks later).
    pub(crate) fn reports_due(&self, month: Period) -> Vec<Report> {
        let mut out = Vec::new();
        let periods: Vec<Period> = PeriodType::ALL
            .into_iter()
            .filter_map(|k| month.enclosing(k))
            .filter(|p| p.last_day() == month.last_day())
            .collect();
        let forms = self.catalog.forms();
        for (form, period) in forms.iter().flat_map(|f| {
            periods
                .iter()
                .filter(|p| p.period_type() == f.period_type)
                .map(move |p| (f, *p))
        }) {
            let Some(version) = self.catalog.hierarchy_for(&period) else {
                continue;
            };
            let level = form.owing_level(version);
            let indicators = self.form_indicators(form, version, level);
            if indicators.is_empty() {
                continue;
            }
            for ward in version.units().filter(|u| u.level == level) {
                let key = [ward.code.as_str(), &format!("{period}/{}", form.code)];
                if self.u01(&[key[0], key[1], "missing"]) < MISSING {
                    continue;
                }
                let values = self.values(version, &ward.code, period, &indicators);
                let delay = 5 + (self.u01(&[key[0], key[1], "delay"]) * 20.0) as i64;
                let at =
                    Utc.from_utc_datetime(
                        &(period.end_exclusive() + Duration::days(delay))
                            .and_hms_opt(8, 0, 0)
                            .unwrap_or_default(),
                    ) + Duration::seconds((self.u01(&[key[0], key[1], "sec"]) * 32_400.0) as i64);
                // Nothing is submitted in the future: the last month's late
                // reports arrive "now" instead.
                let now = Utc::now();
                let at = at.min(now - Duration::hours(1));
                if self.u01(&[key[0], key[1], "corrected"]) < CORRECTED {
                    // A correction revises the first few values by a few percent.
                    let revised: Vec<(String, f64)> = values
                        .iter()
                        .take(3)
                        .map(|(code, v)| {
                            let ind = self.catalog.indicator(code);
                            let f = 1.0 + 0.03 * self.normal(&[key[0], key[1], code, "fix"]);
                            (
                                code.clone(),
                                self.tidy(
                                    ind.map(|i| i.value_kind),
                                    (v * f).max(0.0),
                                    ind.and_then(|i| i.max),
                                ),
                            )
                        })
                        .collect();
                    out.push(Report {
                        form: form.code.clone(),
                        unit: ward.code.clone(),
                        period,
                        revision: 1,
                        submitted_at: (at + Duration::days(12)).min(now),
                        values: revised,
                    });
                }
                out.push(Report {
                    form: form.code.clone(),
                    unit: ward.code.clone(),
                    period,
                    revision: 0,
                    submitted_at: at,
                    values,
                });
            }
        }
        out
    }

    fn tidy(&self, kind: Option<ValueKind>, v: f64, max: Option<f64>) -> f64 {
        let v = match kind {
            Some(ValueKind::Count) => v.round(),
            Some(ValueKind::Amount) => (v * 10.0).round() / 10.0,
            _ => (v * 100.0).round() / 100.0,
        };
        max.map_or(v, |m| v.min(m))
    }

    /// The values of one ward's report.
    fn values(
        &self,
        version: &HierarchyVersion,
        ward: &UnitCode,
        period: Period,
        indicators: &[&baocao_catalog::Indicator],
    ) -> Vec<(String, f64)> {
        let w = ward.as_str();
        let p = period.to_string();
        let bases = if version.has_level(Level::District) {
            &self.old_base
        } else {
            &self.new_base
        };
        // A district's base is the sum of its wards'.
        let base = match bases.get(ward) {
            Some(b) => *b,
            None => {
                let sum: f64 = version
                    .wards_under(ward)
                    .iter()
                    .filter_map(|w| bases.get(&w.code))
                    .sum();
                if sum > 0.0 { sum } else { 16_300.0 }
            }
        };
        // Years since 2021-01 at the period's end: population grows ~1.2%/year.
        let t = (period.last_day() - NaiveDate::from_ymd_opt(2021, 1, 1).unwrap_or_default())
            .num_days() as f64
            / 365.25;
        let pop = (base * (1.0 + 0.012 * t) * (1.0 + 0.002 * self.normal(&[w, &p, "pop"]))).round();
        let month = period
            .last_day()
            .format("%m")
            .to_string()
            .parse::<f64>()
            .unwrap_or(6.0);
        let season =
            |peak: f64, amp: f64| 1.0 + amp * ((month - peak) * std::f64::consts::PI / 6.0).cos();
        let noise = |name: &str, sd: f64| (1.0 + sd * self.normal(&[w, &p, name])).max(0.0);
        let households = (pop / 3.8 * noise("hh", 0.01)).round();
        let area = version
            .get(ward)
            .and_then(|u| u.area_km2)
            .unwrap_or_else(|| (base / 2_600.0) * noise("area", 0.3).max(0.2));
        let rural = self.u01(&[w, "rural"]);
        let budget = pop * 0.09 * season(12.0, 0.3) * noise("budget", 0.15);
        let children_under5 = (pop * 0.075 * noise("u5", 0.05)).round();
        let children_under1 = (pop * 0.0135 * noise("u1", 0.08)).round();
        let classes = (pop * 0.16 / 38.0 * noise("cls", 0.05)).round().max(1.0);
        let pupils = (classes * 38.0 * noise("pup", 0.04)).round();
        // Hanoi's poor-household rate fell from ~0.1% (2022) towards zero (2024).
        let poor = (households * 0.0012 * (-0.5 * t).exp() * noise("poor", 0.3)).round();
        let near_poor = (households * 0.004 * (-0.4 * t).exp() * noise("npoor", 0.3)).round();
        let hi = (pop * (0.90 + 0.01 * t).min(0.97) * noise("hi", 0.005))
            .round()
            .min(pop);
        let clean = (households * (0.95 + 0.01 * t).min(0.995))
            .round()
            .min(households);
        let fires = (self.u01(&[w, &p, "fires"]) * 1.6 * season(1.0, 0.4)).floor();
        let mut out = Vec::new();
        for ind in indicators {
            let v = match ind.code.as_str() {
                "population" => pop,
                "population_female" => (pop * 0.505).round(),
                "households" => households,
                "household_size" => pop / households,
                "working_age_population" => (pop * 0.66 * noise("wap", 0.01)).round(),
                "births" => {
                    (pop * 0.014 / 12.0 * season(10.0, 0.15) * noise("births", 0.2)).round()
                }
                "deaths" => (pop * 0.006 / 12.0 * season(1.0, 0.2) * noise("deaths", 0.25)).round(),
                "marriages" => {
                    (pop * 0.008 / 12.0 * season(11.0, 0.5) * noise("marr", 0.25)).round()
                }
                "ward_budget_revenue" => budget,
                "ward_budget_revenue_retained" => budget * 0.4,
                "ward_budget_revenue_shared" => budget * 0.6,
                "ward_budget_expenditure" => budget * 0.9 * noise("exp", 0.1),
                "health_insurance_participants" => hi,
                "health_insurance_coverage" => 100.0 * hi / pop,
                "fires" => fires,
                "fire_casualties" => {
                    if fires > 0.0 {
                        (self.u01(&[w, &p, "cas"]) * 1.3).floor()
                    } else {
                        0.0
                    }
                }
                "fire_damage" => {
                    if fires > 0.0 {
                        fires * 40.0 * noise("dmg", 0.8)
                    } else {
                        0.0
                    }
                }
                "population_density" => pop / area,
                "children_under5" => children_under5,
                "nonfarm_individual_establishments" => (pop * 0.03 * noise("est", 0.1)).round(),
                "nonfarm_individual_workers" => (pop * 0.066 * noise("estw", 0.1)).round(),
                "preschools" => (pop / 4_000.0).round().max(1.0),
                "preschool_classes_and_groups" => (pop * 0.045 / 25.0).round().max(1.0),
                "preschool_teachers" => (pop * 0.045 / 12.0).round().max(1.0),
                "preschool_pupils" => (pop * 0.045 * noise("pre", 0.05)).round(),
                "general_schools" => (pop / 5_000.0).round().max(1.0),
                "general_education_classes" => classes,
                "classrooms" => (classes * 1.05).round(),
                "general_education_teachers" => (classes * 1.9).round(),
                "general_education_pupils" => pupils,
                "pupils_per_class" => pupils / classes,
                "infants_immunised" => (children_under1 * 0.97).round(),
                "children_under1" => children_under1,
                "immunisation_rate" => {
                    100.0 * (children_under1 * 0.97).round() / children_under1.max(1.0)
                }
                "stunted_under5" => (children_under5 * 0.05 * noise("stunt", 0.2)).round(),
                "stunting_rate_under5" => {
                    100.0 * (children_under5 * 0.05 * noise("stunt", 0.2)).round()
                        / children_under5.max(1.0)
                }
                "ward_health_workers" => (5.0 + self.u01(&[w, &p, "hw"]) * 8.0).floor(),
                "poor_households" => poor,
                "poverty_rate" => 100.0 * poor / households,
                "near_poor_households" => near_poor,
                "near_poverty_rate" => 100.0 * near_poor / households,
                "poor_household_members" => (poor * 3.1).round(),
                "land_area" => area,
                "land_area_agricultural" => area * 100.0 * rural * 0.7,
                "land_area_non_agricultural" => area * 100.0 * (1.0 - rural * 0.7),
                "households_clean_water" => clean,
                "clean_water_rate" => 100.0 * clean / households,
                // An indicator added to the catalog later gets a plausible
                // value for its kind rather than none.
                _ => match ind.value_kind {
                    ValueKind::Count => (pop * 0.001 * noise(&ind.code, 0.2)).round(),
                    ValueKind::Rate => 50.0 * noise(&ind.code, 0.1),
                    ValueKind::Index => 100.0 * noise(&ind.code, 0.02),
                    _ => pop * 0.01 * noise(&ind.code, 0.2),
                },
            };
            out.push((
                ind.code.clone(),
                self.tidy(Some(ind.value_kind), v.max(0.0), ind.max),
            ));
        }
        out
    }
}
