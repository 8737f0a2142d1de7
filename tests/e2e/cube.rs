//! The differential test of the roll-ups: every cell of `rollup` and
//! `rollup_current` on the demo data, across the 2025 reform, computed
//! here in plain Rust from `reports`, the shipped catalog files and the
//! rules as the README states them, and compared with the server's answer
//! through the Postgres protocol — then again after submissions arrive.
//! The same for `report_status` and `completeness`, from `reports_history`
//! and `schedule.csv`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::support::{TestServer, TestWarehouse};

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/data");

/// Levels and period types, in the order the rules compare them.
fn level_rank(level: &str) -> u8 {
    match level {
        "province" => 0,
        "district" => 1,
        "ward" => 2,
        other => panic!("unknown level {other}"),
    }
}

fn type_rank(kind: &str) -> u8 {
    match kind {
        "month" => 0,
        "quarter" => 1,
        "half_year" => 2,
        "year" => 3,
        other => panic!("unknown period type {other}"),
    }
}

/// One indicator's rules, from `indicators.csv`.
struct Indicator {
    code: String,
    across_units: String,
    across_time: String,
    scale: f64,
    lowest_level: u8,
    period_type: u8,
}

impl Indicator {
    fn parts(&self) -> Option<(&str, &str)> {
        self.across_units.strip_prefix("ratio:")?.split_once('/')
    }

    fn weight(&self) -> Option<&str> {
        self.across_units.strip_prefix("weighted_average:")
    }

    fn rule(&self) -> &str {
        self.across_units
            .split(':')
            .next()
            .unwrap_or(&self.across_units)
    }

    fn additive(&self) -> bool {
        matches!(self.rule(), "sum" | "count" | "ratio")
    }
}

fn indicators() -> BTreeMap<String, Indicator> {
    let mut reader =
        csv::Reader::from_path(Path::new(CATALOG).join("indicators.csv")).expect("indicators.csv");
    let headers = reader.headers().expect("headers").clone();
    let at = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (code, units, time, scale, level, kind) = (
        at("code"),
        at("across_units"),
        at("across_time"),
        at("scale"),
        at("lowest_level"),
        at("period_type"),
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            let i = Indicator {
                code: r[code].to_string(),
                across_units: r[units].to_string(),
                across_time: r[time].to_string(),
                scale: r[scale].parse().unwrap_or(1.0),
                lowest_level: level_rank(&r[level]),
                period_type: type_rank(&r[kind]),
            };
            (i.code.clone(), i)
        })
        .collect()
}

struct Unit {
    level: u8,
    parent: String,
    area: f64,
}

/// A hierarchy version: its first month and its units.
struct Version {
    from_month: String,
    units: BTreeMap<String, Unit>,
}

impl Version {
    fn load(effective: &str) -> Version {
        let path = Path::new(CATALOG).join(format!("hierarchy/units_{effective}.csv"));
        let mut reader = csv::Reader::from_path(&path).expect("units csv");
        let units = reader
            .records()
            .map(|r| {
                let r = r.expect("record");
                (
                    r[0].to_string(),
                    Unit {
                        level: level_rank(&r[2]),
                        parent: r[3].to_string(),
                        area: r[6].parse().unwrap_or(0.0),
                    },
                )
            })
            .collect();
        Version {
            from_month: effective[..7].to_string(),
            units,
        }
    }

    fn has_level(&self, level: u8) -> bool {
        self.units.values().any(|u| u.level == level)
    }

    /// The level that reports an indicator whose lowest level is `wanted`.
    fn reporting_level(&self, wanted: u8) -> u8 {
        if self.has_level(wanted) {
            return wanted;
        }
        (wanted + 1..=2)
            .find(|l| self.has_level(*l))
            .or_else(|| (0..wanted).rev().find(|l| self.has_level(*l)))
            .unwrap_or(wanted)
    }

    /// The unit and its ancestors.
    fn chain(&self, code: &str) -> Vec<String> {
        let mut out = vec![code.to_string()];
        let mut cur = code.to_string();
        while let Some(u) = self.units.get(&cur) {
            if u.parent.is_empty() {
                break;
            }
            out.push(u.parent.clone());
            cur = u.parent.clone();
        }
        out
    }
}

/// Periods as the warehouse writes them: `2025-07`, `2025Q3`, `2025S2`, `2025`.
fn months_of(p: &str) -> Vec<String> {
    let year = &p[..4];
    let (first, last) = match &p[4..] {
        "" => (1, 12),
        q if q.starts_with('Q') => {
            let n: u32 = q[1..].parse().expect("quarter");
            (3 * n - 2, 3 * n)
        }
        s if s.starts_with('S') => {
            let n: u32 = s[1..].parse().expect("half");
            (6 * n - 5, 6 * n)
        }
        m => {
            let n: u32 = m[1..].parse().expect("month");
            (n, n)
        }
    };
    (first..=last).map(|m| format!("{year}-{m:02}")).collect()
}

fn kind_of(p: &str) -> u8 {
    match p.len() {
        4 => 3,
        6 if p.as_bytes()[4] == b'Q' => 1,
        6 => 2,
        _ => 0,
    }
}

/// The period of type `kind` holding `month`.
fn enclosing(month: &str, kind: u8) -> String {
    let year = &month[..4];
    let m: u32 = month[5..].parse().expect("month");
    match kind {
        0 => month.to_string(),
        1 => format!("{year}Q{}", (m - 1) / 3 + 1),
        2 => format!("{year}S{}", (m - 1) / 6 + 1),
        _ => year.to_string(),
    }
}

/// The periods of type `kind` inside `p`.
fn sub_periods(kind: u8, p: &str) -> Vec<String> {
    let mut out: Vec<String> = months_of(p).iter().map(|m| enclosing(m, kind)).collect();
    out.dedup();
    out
}

/// Everything the rules need besides the reports.
struct Model {
    indicators: BTreeMap<String, Indicator>,
    versions: Vec<Version>,
    /// Old ward -> [(new ward, share)], from the reform's mapping.
    mapping: BTreeMap<String, Vec<(String, f64)>>,
}

type Reports = HashMap<(String, String), Vec<(String, f64)>>;

/// (unit, period, indicator) -> (value, reporting units, expected units).
type Cells = BTreeMap<(String, String, String), (Option<f64>, i64, i64)>;

impl Model {
    fn load() -> Model {
        let versions = vec![Version::load("2025-01-01"), Version::load("2025-07-01")];
        let mut news: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let path = Path::new(CATALOG).join("hierarchy/ward_changes_2025-07-01.csv");
        let mut reader = csv::Reader::from_path(&path).expect("ward changes");
        for r in reader.records() {
            let r = r.expect("record");
            news.entry(r[0].to_string())
                .or_default()
                .push(r[1].to_string());
        }
        let new = &versions[1];
        let mut mapping = BTreeMap::new();
        for (code, unit) in &versions[0].units {
            let targets = match news.get(code) {
                // A split ward goes to its receiving wards by their areas.
                Some(targets) => {
                    let areas: Vec<f64> = targets
                        .iter()
                        .map(|t| new.units.get(t).map(|u| u.area).unwrap_or(0.0))
                        .collect();
                    let total: f64 = areas.iter().sum();
                    targets
                        .iter()
                        .zip(areas)
                        .map(|(t, a)| {
                            let share = if total > 0.0 {
                                a / total
                            } else {
                                1.0 / targets.len() as f64
                            };
                            (t.clone(), share)
                        })
                        .collect()
                }
                // Other units keep their code if the new hierarchy has it
                // at the same level (the city); districts end.
                None => match new.units.get(code) {
                    Some(same) if same.level == unit.level => vec![(code.clone(), 1.0)],
                    _ => Vec::new(),
                },
            };
            mapping.insert(code.clone(), targets);
        }
        Model {
            indicators: indicators(),
            versions,
            mapping,
        }
    }

    /// The hierarchy version a period belongs to (in force on its last day).
    fn version_of(&self, p: &str) -> usize {
        let last = months_of(p).pop().expect("a month");
        self.versions
            .iter()
            .rposition(|v| v.from_month <= last)
            .unwrap_or(0)
    }

    /// Steps 1 and 2: per reporting unit of version `t`, the value of
    /// `ind` over `p`.
    fn unit_values(
        &self,
        ind: &Indicator,
        p: &str,
        t: usize,
        reports: &Reports,
    ) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        let kind = kind_of(p);
        if ind.period_type > kind || (ind.period_type != kind && ind.across_time == "none") {
            return out;
        }
        let mut parts: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        for sp in sub_periods(ind.period_type, p) {
            let Some(rows) = reports.get(&(ind.code.clone(), sp.clone())) else {
                continue;
            };
            let s = self.version_of(&sp);
            for (unit, v) in rows {
                if s == t {
                    parts
                        .entry((unit.clone(), sp.clone()))
                        .or_default()
                        .push(*v);
                } else if ind.rule() != "none" {
                    assert!(s < t, "a frame older than its data");
                    for (target, share) in self.mapping.get(unit).into_iter().flatten() {
                        let mapped = if ind.additive() { v * share } else { *v };
                        parts
                            .entry((target.clone(), sp.clone()))
                            .or_default()
                            .push(mapped);
                    }
                }
            }
        }
        let mut series: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for ((unit, sp), vs) in parts {
            let v = if ind.additive() {
                vs.iter().sum()
            } else {
                match ind.rule() {
                    "min" => vs.iter().copied().fold(f64::INFINITY, f64::min),
                    "max" => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    _ => vs.iter().sum::<f64>() / vs.len() as f64,
                }
            };
            series.entry(unit).or_default().push((sp, v));
        }
        for (unit, s) in series {
            // Sub-periods of one type sort in time order as text.
            let values: Vec<f64> = s.iter().map(|x| x.1).collect();
            let v = match ind.across_time.as_str() {
                "sum" => values.iter().sum(),
                "last" => values[values.len() - 1],
                "average" => values.iter().sum::<f64>() / values.len() as f64,
                "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                "none" => match s.iter().find(|(sp, _)| sp == p) {
                    Some((_, v)) => *v,
                    None => continue,
                },
                other => panic!("unknown rule across time {other}"),
            };
            out.insert(unit, v);
        }
        out
    }

    /// Every cell of `periods`, along the hierarchy in force (`current`:
    /// false) or the newest one.
    fn cells(&self, periods: &[&str], current: bool, reports: &Reports) -> Cells {
        let mut cells = Cells::new();
        for p in periods {
            let t = if current {
                self.versions.len() - 1
            } else {
                self.version_of(p)
            };
            let version = &self.versions[t];
            for ind in self.indicators.values() {
                if ind.period_type > kind_of(p) {
                    continue;
                }
                let level = version.reporting_level(ind.lowest_level);
                // Per reporting unit: (value, weight) or (numerator, denominator).
                let by_unit: HashMap<String, (f64, f64)> = if let Some((n, d)) = ind.parts() {
                    let nv = self.unit_values(&self.indicators[n], p, t, reports);
                    let dv = self.unit_values(&self.indicators[d], p, t, reports);
                    nv.into_iter()
                        .filter_map(|(u, n)| dv.get(&u).map(|d| (u, (n, *d))))
                        .collect()
                } else if let Some(w) = ind.weight() {
                    let wv = self.unit_values(&self.indicators[w], p, t, reports);
                    self.unit_values(ind, p, t, reports)
                        .into_iter()
                        .filter_map(|(u, v)| wv.get(&u).map(|w| (u, (v, *w))))
                        .collect()
                } else {
                    self.unit_values(ind, p, t, reports)
                        .into_iter()
                        .map(|(u, v)| (u, (v, 0.0)))
                        .collect()
                };
                if by_unit.is_empty() {
                    continue;
                }
                // Reporting units and their values, gathered at every
                // ancestor (or the unit itself).
                let mut members: BTreeMap<String, (i64, Vec<(f64, f64)>)> = BTreeMap::new();
                for (code, unit) in &version.units {
                    if unit.level != level {
                        continue;
                    }
                    for target in version.chain(code) {
                        let entry = members.entry(target).or_default();
                        entry.0 += 1;
                        if let Some(v) = by_unit.get(code) {
                            entry.1.push(*v);
                        }
                    }
                }
                for (target, (expected, vals)) in members {
                    let target_level = version.units[&target].level;
                    if vals.is_empty() || (ind.rule() == "none" && target_level != level) {
                        continue;
                    }
                    let n = vals.len() as f64;
                    let value = match ind.rule() {
                        "sum" => Some(vals.iter().map(|v| v.0).sum()),
                        "average" => Some(vals.iter().map(|v| v.0).sum::<f64>() / n),
                        "min" => Some(vals.iter().map(|v| v.0).fold(f64::INFINITY, f64::min)),
                        "max" => Some(vals.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max)),
                        "count" => Some(n),
                        "none" => Some(vals[0].0),
                        "weighted_average" => {
                            let w: f64 = vals.iter().map(|v| v.1).sum();
                            (w > 0.0).then(|| vals.iter().map(|v| v.0 * v.1).sum::<f64>() / w)
                        }
                        "ratio" => {
                            let d: f64 = vals.iter().map(|v| v.1).sum();
                            (d != 0.0)
                                .then(|| ind.scale * vals.iter().map(|v| v.0).sum::<f64>() / d)
                        }
                        other => panic!("unknown rule across units {other}"),
                    };
                    cells.insert(
                        (target, p.to_string(), ind.code.clone()),
                        (value, vals.len() as i64, expected),
                    );
                }
            }
        }
        cells
    }
}

async fn reports(client: &tokio_postgres::Client) -> Reports {
    let mut out = Reports::new();
    for r in client
        .query(
            "SELECT indicator_code, period, unit_code, value FROM reports WHERE value IS NOT NULL",
            &[],
        )
        .await
        .expect("reports")
    {
        out.entry((r.get(0), r.get(1)))
            .or_default()
            .push((r.get(2), r.get(3)));
    }
    out
}

async fn served(client: &tokio_postgres::Client, table: &str, periods: &[&str]) -> Cells {
    served_where(client, table, periods, "true").await
}

/// The cells of `periods` that also pass `filter`.
async fn served_where(
    client: &tokio_postgres::Client,
    table: &str,
    periods: &[&str],
    filter: &str,
) -> Cells {
    let list = periods
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    client
        .query(
            &format!(
                "SELECT unit_code, period, indicator_code, value, reporting_units, expected_units \
                 FROM {table} WHERE period IN ({list}) AND {filter}"
            ),
            &[],
        )
        .await
        .expect("roll-up")
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                (r.get(3), r.get(4), r.get(5)),
            )
        })
        .collect()
}

/// Every expected cell is served with its value (to a millionth, relative,
/// or 1e-6 absolute: the server rounds to a millionth) and counts, and no
/// other cell is served.
fn compare(what: &str, served: &Cells, expected: &Cells) {
    let got: BTreeSet<_> = served.keys().collect();
    let want: BTreeSet<_> = expected.keys().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} cells served, {} expected; missing {missing:?}, extra {extra:?}",
        got.len(),
        want.len()
    );
    let mut wrong = Vec::new();
    for (key, (value, reporting, expected_units)) in expected {
        let (v, r, e) = &served[key];
        let same_value = match (v, value) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6_f64.max(1e-9 * b.abs()),
            (None, None) => true,
            _ => false,
        };
        if !same_value || r != reporting || e != expected_units {
            wrong.push(format!(
                "{key:?}: served {v:?} from {r} of {e}, expected {value:?} from {reporting} of {expected_units}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} cells differ, e.g.\n{}",
        wrong.len(),
        expected.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

/// A form of `schedule.csv`.
struct Form {
    code: String,
    level: u8,
    period_type: u8,
    indicators: BTreeSet<String>,
    due_months_after: u32,
    due_day: u32,
}

fn forms(indicators: &BTreeMap<String, Indicator>) -> Vec<Form> {
    let mut reader =
        csv::Reader::from_path(Path::new(CATALOG).join("schedule.csv")).expect("schedule.csv");
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            let (level, period_type) = (level_rank(&r[3]), type_rank(&r[4]));
            let carried: BTreeSet<String> = if &r[5] == "*" {
                indicators
                    .values()
                    .filter(|i| i.lowest_level == level && i.period_type == period_type)
                    .map(|i| i.code.clone())
                    .collect()
            } else {
                r[5].split_whitespace().map(str::to_string).collect()
            };
            Form {
                code: r[0].to_string(),
                level,
                period_type,
                indicators: carried,
                due_months_after: r[6].parse().expect("due_months_after"),
                due_day: r[7].parse().expect("due_day"),
            }
        })
        .collect()
}

/// The last day a report for `p` is on time: `due_day` (or the month's
/// last day) of the month `due_months_after` months after `p`'s last month.
fn deadline(form: &Form, p: &str) -> chrono::NaiveDate {
    use chrono::{Datelike, Months, NaiveDate};
    let last = months_of(p).pop().expect("a month");
    let first_of_last =
        NaiveDate::parse_from_str(&format!("{last}-01"), "%Y-%m-%d").expect("month");
    let due_month = first_of_last + Months::new(form.due_months_after);
    let days = (due_month + Months::new(1)).pred_opt().expect("day").day();
    due_month
        .with_day(form.due_day.min(days))
        .expect("deadline")
}

/// (unit, period, indicator) -> first submission, withdrawals left out.
type Arrivals = HashMap<(String, String, String), chrono::DateTime<chrono::Utc>>;

async fn arrivals(client: &tokio_postgres::Client) -> Arrivals {
    let mut out = Arrivals::new();
    for r in client
        .query(
            "SELECT unit_code, period, indicator_code, min(submitted_at) FROM reports_history \
             WHERE withdrawn IS NOT TRUE GROUP BY unit_code, period, indicator_code",
            &[],
        )
        .await
        .expect("history")
    {
        out.insert((r.get(0), r.get(1), r.get(2)), r.get(3));
    }
    out
}

/// (unit, period, form) -> (status, received indicators, expected indicators, deadline).
type Statuses = BTreeMap<(String, String, String), (String, i64, i64, chrono::NaiveDate)>;
/// (unit, period, form) -> [expected, received, on time, late, missing, pending].
type Completeness = BTreeMap<(String, String, String), [i64; 6]>;

impl Model {
    /// What each owing unit's report is, and the sums at every ancestor.
    fn statuses(&self, periods: &[&str], arrivals: &Arrivals) -> (Statuses, Completeness) {
        let today = (chrono::Utc::now() + chrono::Duration::hours(7)).date_naive();
        let mut statuses = Statuses::new();
        let mut completeness = Completeness::new();
        for form in forms(&self.indicators) {
            for p in periods.iter().filter(|p| kind_of(p) == form.period_type) {
                let version = &self.versions[self.version_of(p)];
                let level = version.reporting_level(form.level);
                let due = deadline(&form, p);
                for (code, unit) in &version.units {
                    if unit.level != level {
                        continue;
                    }
                    let firsts: Vec<_> = form
                        .indicators
                        .iter()
                        .filter_map(|i| arrivals.get(&(code.clone(), p.to_string(), i.clone())))
                        .collect();
                    let status = match firsts.iter().min() {
                        Some(first) => {
                            let day = (**first + chrono::Duration::hours(7)).date_naive();
                            if day <= due { "on_time" } else { "late" }
                        }
                        None if today > due => "missing",
                        None => "pending",
                    };
                    statuses.insert(
                        (code.clone(), p.to_string(), form.code.clone()),
                        (
                            status.to_string(),
                            firsts.len() as i64,
                            form.indicators.len() as i64,
                            due,
                        ),
                    );
                    for target in version.chain(code) {
                        let c = completeness
                            .entry((target, p.to_string(), form.code.clone()))
                            .or_default();
                        c[0] += 1;
                        match status {
                            "on_time" => {
                                c[1] += 1;
                                c[2] += 1;
                            }
                            "late" => {
                                c[1] += 1;
                                c[3] += 1;
                            }
                            "missing" => c[4] += 1,
                            _ => c[5] += 1,
                        }
                    }
                }
            }
        }
        (statuses, completeness)
    }
}

async fn check_statuses(
    client: &tokio_postgres::Client,
    model: &Model,
    periods: &[&str],
    label: &str,
) {
    let (expected, expected_sums) = model.statuses(periods, &arrivals(client).await);
    let list = periods
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let served: Statuses = client
        .query(
            &format!(
                "SELECT unit_code, period, form, status, received_indicators, expected_indicators, deadline \
                 FROM report_status WHERE period IN ({list})"
            ),
            &[],
        )
        .await
        .expect("report_status")
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4), r.get(5), r.get(6))))
        .collect();
    assert_eq!(served.len(), expected.len(), "{label}: report_status rows");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| served.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: served {:?}, expected {v:?}", served.get(k)))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "{label}: report_status differs:\n{}",
        wrong.join("\n")
    );
    // Both outcomes occur, or the comparison proves little.
    let kinds: BTreeSet<&str> = expected.values().map(|v| v.0.as_str()).collect();
    assert!(
        kinds.contains("on_time") && kinds.contains("late") && kinds.contains("missing"),
        "{kinds:?}"
    );

    let served: Completeness = client
        .query(
            &format!(
                "SELECT unit_code, period, form, expected, received, on_time, late, missing, pending, \
                        completeness_percent, on_time_percent \
                 FROM completeness WHERE period IN ({list})"
            ),
            &[],
        )
        .await
        .expect("completeness")
        .iter()
        .map(|r| {
            let counts: [i64; 6] = [r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8)];
            // The percentages, to a tenth, follow from the counts.
            let pct = |a: i64| (1000.0 * a as f64 / counts[0] as f64).round() / 10.0;
            assert_eq!(r.get::<_, Option<f64>>(9), Some(pct(counts[1])));
            assert_eq!(r.get::<_, Option<f64>>(10), Some(pct(counts[2])));
            ((r.get(0), r.get(1), r.get(2)), counts)
        })
        .collect();
    assert_eq!(served, expected_sums, "{label}: completeness");
}

#[tokio::test]
async fn every_cell_of_the_demo_cube_matches_an_independent_model() {
    // Nine months around the reform: 2024 closes (its yearly reports and
    // the year's roll-ups), 2025 spans both hierarchies.
    let w = TestWarehouse::demo("2024-12", "2025-08");
    let server = TestServer::start(&w).await;
    let client = server.client().await;
    let model = Model::load();
    let periods: Vec<&str> = vec![
        "2024-12", "2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06", "2025-07",
        "2025-08", "2024Q4", "2025Q1", "2025Q2", "2025Q3", "2024S2", "2025S1", "2025S2", "2024",
        "2025",
    ];
    let check = |label: &'static str| {
        let model = &model;
        let client = &client;
        let periods = &periods;
        async move {
            let reports = reports(client).await;
            let mut total = 0;
            for (table, current) in [("rollup", false), ("rollup_current", true)] {
                let expected = model.cells(periods, current, &reports);
                let got = served(client, table, periods).await;
                compare(&format!("{label}, {table}"), &got, &expected);
                total += expected.len();
            }
            total
        }
    };
    let cells = check("demo data").await;
    check_statuses(&client, &model, &periods, "demo data").await;
    // Enough of the cube to mean something: every level, both frames.
    assert!(cells > 100_000, "only {cells} cells");

    // Submissions arrive: corrections and new values under both
    // hierarchies, a split old ward included (00016 went partly into 00004
    // and 00008); the next query's cells follow them exactly.
    client
        .batch_execute(
            "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES \
               ('00016', '2025-06', 'births', 77), ('00016', '2025-06', 'population', 12345), \
               ('00004', '2025-08', 'births', 41), ('00004', '2025-08', 'households', 4321), \
               ('00097', '2025-07', 'deaths', 3);
             DELETE FROM reports WHERE unit_code = '00001' AND period = '2025-05' AND indicator_code = 'births';",
        )
        .await
        .expect("submissions");
    check("after submissions").await;
    check_statuses(&client, &model, &periods, "after submissions").await;

    // A server whose cache holds almost nothing computes every partition
    // again as it goes, evicting as it goes: the same cells.
    let small_server = TestServer::start_with(&w, &["--cache-mb", "1"]).await;
    let small = small_server.client().await;
    for table in ["rollup", "rollup_current"] {
        compare(
            &format!("a 1 MiB cache, {table}"),
            &served(&small, table, &periods).await,
            &served(&client, table, &periods).await,
        );
    }

    // A server keeps the rows above the wards apart from the wards': a
    // query of districts keeps only those, a query of wards then computes
    // the cells again for theirs, and a query of every level reads both
    // kept parts. Each answer is the full answer's rows of its levels.
    let fresh_server = TestServer::start(&w).await;
    let fresh = fresh_server.client().await;
    let levels: HashMap<String, String> = client
        .query("SELECT DISTINCT code, level FROM units", &[])
        .await
        .expect("unit levels")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for table in ["rollup", "rollup_current"] {
        let full = served(&client, table, &periods).await;
        let of_levels = |wards: bool| -> Cells {
            full.iter()
                .filter(|((unit, _, _), _)| (levels[unit] == "ward") == wards)
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        for (label, filter, expected) in [
            ("above the wards", "unit_level <> 'ward'", of_levels(false)),
            ("wards", "unit_level = 'ward'", of_levels(true)),
            ("the city", "unit_code = '01'", {
                let mut one = of_levels(false);
                one.retain(|(unit, _, _), _| unit == "01");
                one
            }),
            ("a ward", "unit_code = '00004'", {
                let mut one = of_levels(true);
                one.retain(|(unit, _, _), _| unit == "00004");
                one
            }),
            ("every level", "true", full.clone()),
        ] {
            assert!(!expected.is_empty(), "{label}: no cells to compare");
            compare(
                &format!("{table}, {label}, by parts"),
                &served_where(&fresh, table, &periods, filter).await,
                &expected,
            );
        }
    }
}
