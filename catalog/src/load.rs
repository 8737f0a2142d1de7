//! Reading the catalog directory.
//!
//! ```text
//! <dir>/indicators.csv                         the indicator catalog
//! <dir>/schedule.csv                           report forms and deadlines (optional)
//! <dir>/hierarchy/units_<YYYY-MM-DD>[_x].csv   one hierarchy version (any provinces)
//! <dir>/hierarchy/ward_changes_<YYYY-MM-DD>[_x].csv   old ward -> new ward on that date
//! ```
//!
//! Adding a province or a new version is dropping a file: every `units_*`
//! file is read, and each version is the union, province by province, of the
//! newest file in force on its date.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::Catalog;
use crate::error::CatalogError;
use crate::indicator::{AcrossTime, AcrossUnits, Indicator, Sector, ValueKind};
use crate::period::PeriodType;
use crate::unit::{Hierarchies, HierarchyVersion, Level, Unit, UnitCode, WardChange};

/// The files shipped with baocao, written into a new warehouse.
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("indicators.csv", include_str!("../data/indicators.csv")),
    ("schedule.csv", include_str!("../data/schedule.csv")),
    (
        "hierarchy/units_2025-01-01.csv",
        include_str!("../data/hierarchy/units_2025-01-01.csv"),
    ),
    (
        "hierarchy/units_2025-07-01.csv",
        include_str!("../data/hierarchy/units_2025-07-01.csv"),
    ),
    (
        "hierarchy/ward_changes_2025-07-01.csv",
        include_str!("../data/hierarchy/ward_changes_2025-07-01.csv"),
    ),
];

/// Writes the shipped catalog files under `dir`, leaving existing files alone.
pub fn write_default_files(dir: &Path) -> Result<(), CatalogError> {
    for (name, text) in DEFAULT_FILES {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CatalogError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| CatalogError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Loads the catalog from `dir`.
pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let indicators_path = dir.join("indicators.csv");
    let indicators = parse_indicators(
        &read(&indicators_path)?,
        &indicators_path.display().to_string(),
    )?;

    let hierarchy_dir = dir.join("hierarchy");
    let entries = std::fs::read_dir(&hierarchy_dir).map_err(|source| CatalogError::Io {
        path: hierarchy_dir.clone(),
        source,
    })?;
    let mut unit_files = Vec::new();
    let mut change_files = Vec::new();
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    names.sort();
    for path in names {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let shown = path.display().to_string();
        if let Some(rest) = stem.strip_prefix("units_") {
            let date = file_date(rest, &shown)?;
            unit_files.push((date, parse_units(&read(&path)?, &shown)?, shown));
        } else if let Some(rest) = stem.strip_prefix("ward_changes_") {
            let date = file_date(rest, &shown)?;
            change_files.push((date, read(&path)?, shown));
        }
    }
    if unit_files.is_empty() {
        return Err(CatalogError::invalid(
            &hierarchy_dir.display().to_string(),
            None,
            "no hierarchy file (units_<YYYY-MM-DD>.csv) found",
        ));
    }
    let hierarchies = build_hierarchies(unit_files, change_files)?;
    // The schedule is optional: without it nothing is expected.
    let schedule_path = dir.join("schedule.csv");
    let forms = if schedule_path.exists() {
        crate::schedule::parse_schedule(
            &read(&schedule_path)?,
            &schedule_path.display().to_string(),
            &indicators,
        )?
    } else {
        Vec::new()
    };
    Ok(Catalog::new(indicators, hierarchies)?.with_forms(forms))
}

fn file_date(rest: &str, file: &str) -> Result<NaiveDate, CatalogError> {
    let date = rest.get(..10).unwrap_or(rest);
    NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
        CatalogError::invalid(
            file,
            None,
            "the file name must carry the date the version takes effect, as units_YYYY-MM-DD.csv",
        )
    })
}

fn line_of(record: &csv::StringRecord) -> Option<u64> {
    record.position().map(|p| p.line())
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
}

fn csv_error(file: &str, e: csv::Error) -> CatalogError {
    let line = e.position().map(|p| p.line());
    CatalogError::invalid(file, line, e.to_string())
}

fn check_headers(
    reader: &mut csv::Reader<&[u8]>,
    expected: &[&str],
    file: &str,
) -> Result<(), CatalogError> {
    let headers = reader.headers().map_err(|e| csv_error(file, e))?;
    let missing: Vec<_> = expected
        .iter()
        .filter(|h| !headers.iter().any(|x| x == **h))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            file,
            Some(1),
            format!(
                "missing column(s) {}; the header must name {}",
                missing
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                expected.join(",")
            ),
        ))
    }
}

fn opt_f64(s: &str, field: &str) -> Result<Option<f64>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or_else(|| format!("{field} '{s}' is not a number"))
}

#[derive(Deserialize)]
struct UnitRow {
    code: String,
    name: String,
    level: String,
    parent_code: String,
    #[serde(default)]
    lat: String,
    #[serde(default)]
    lon: String,
    #[serde(default)]
    area_km2: String,
}

fn parse_units(text: &str, file: &str) -> Result<Vec<Unit>, CatalogError> {
    let mut reader = csv_reader(text);
    check_headers(&mut reader, &["code", "name", "level", "parent_code"], file)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(file, e))?;
        let line = line_of(&record);
        let row: UnitRow = record
            .deserialize(Some(&headers))
            .map_err(|e| CatalogError::invalid(file, line, e.to_string()))?;
        let bad = |m: String| CatalogError::invalid(file, line, m);
        let code = UnitCode::parse(&row.code).ok_or_else(|| {
            bad(format!(
                "code '{}' is not a GSO unit code (2, 3 or 5 digits, leading zeros kept)",
                row.code
            ))
        })?;
        let level: Level = row.level.parse().map_err(bad)?;
        let expected_len = match level {
            Level::Province => 2,
            Level::District => 3,
            Level::Ward => 5,
        };
        if row.code.len() != expected_len {
            return Err(bad(format!(
                "code '{}' has {} digits but a {level} code has {expected_len}",
                row.code,
                row.code.len()
            )));
        }
        let parent = if row.parent_code.is_empty() {
            None
        } else {
            Some(UnitCode::parse(&row.parent_code).ok_or_else(|| {
                bad(format!(
                    "parent_code '{}' is not a GSO unit code",
                    row.parent_code
                ))
            })?)
        };
        if row.name.is_empty() {
            return Err(bad("name is empty".into()));
        }
        out.push(Unit {
            code,
            name: row.name,
            level,
            parent,
            lat: opt_f64(&row.lat, "lat").map_err(bad)?,
            lon: opt_f64(&row.lon, "lon").map_err(bad)?,
            area_km2: opt_f64(&row.area_km2, "area_km2").map_err(bad)?,
        });
    }
    Ok(out)
}

/// The province each unit of a file belongs to.
fn province_of(units: &[Unit]) -> HashMap<UnitCode, UnitCode> {
    let by_code: HashMap<&UnitCode, &Unit> = units.iter().map(|u| (&u.code, u)).collect();
    let mut out = HashMap::new();
    for u in units {
        let mut cur = u;
        let mut steps = 0;
        while let Some(p) = cur.parent.as_ref().and_then(|p| by_code.get(p)) {
            cur = p;
            steps += 1;
            if steps > 8 {
                break;
            }
        }
        out.insert(u.code.clone(), cur.code.clone());
    }
    out
}

fn build_hierarchies(
    unit_files: Vec<(NaiveDate, Vec<Unit>, String)>,
    change_files: Vec<(NaiveDate, String, String)>,
) -> Result<Hierarchies, CatalogError> {
    // Per province, its snapshots by date (several files of one date merge).
    let mut by_province: BTreeMap<UnitCode, BTreeMap<NaiveDate, Vec<Unit>>> = BTreeMap::new();
    let mut sources: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
    for (date, units, file) in unit_files {
        let provinces = province_of(&units);
        for u in units {
            let p = provinces
                .get(&u.code)
                .cloned()
                .unwrap_or_else(|| u.code.clone());
            by_province
                .entry(p)
                .or_default()
                .entry(date)
                .or_default()
                .push(u);
        }
        sources.entry(date).or_default().push(file);
    }
    // The wards each change file retires: a province whose wards a later
    // change retires (one the reform merged into another) is not carried
    // forward into the versions from that change on.
    let change_files = change_files
        .into_iter()
        .map(|(date, text, file)| Ok((date, change_rows(&text, &file)?, file)))
        .collect::<Result<Vec<_>, CatalogError>>()?;
    let mut retired: BTreeMap<NaiveDate, HashSet<&str>> = BTreeMap::new();
    for (date, rows, _) in &change_files {
        retired
            .entry(*date)
            .or_default()
            .extend(rows.iter().map(|(_, row)| row.old_code.as_str()));
    }
    let dates: BTreeSet<NaiveDate> = sources.keys().copied().collect();
    let mut versions = Vec::new();
    for date in &dates {
        let mut units = Vec::new();
        for snapshots in by_province.values() {
            let chosen = snapshots
                .range(..=*date)
                .next_back()
                .or_else(|| snapshots.iter().next());
            let Some((taken, us)) = chosen else {
                continue;
            };
            let retired_since = |u: &Unit| {
                taken < date
                    && retired
                        .range((Bound::Excluded(*taken), Bound::Included(*date)))
                        .any(|(_, codes)| codes.contains(u.code.as_str()))
            };
            if us.iter().any(retired_since) {
                continue;
            }
            units.extend(us.iter().cloned());
        }
        let files = sources.get(date).map(|f| f.join(", ")).unwrap_or_default();
        versions.push(HierarchyVersion::new(*date, units, &files)?);
    }
    let mut hierarchies = Hierarchies::new(versions, Vec::new());
    let mut changes = Vec::new();
    for (date, rows, file) in &change_files {
        changes.extend(parse_changes(rows, file, *date, &hierarchies)?);
    }
    hierarchies = Hierarchies::new(hierarchies.versions().to_vec(), changes);
    Ok(hierarchies)
}

/// The rows of a ward-change file, each with its line.
fn change_rows(text: &str, file: &str) -> Result<Vec<(Option<u64>, ChangeRow)>, CatalogError> {
    let mut reader = csv_reader(text);
    check_headers(&mut reader, &["old_code", "new_code", "kind"], file)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(file, e))?;
        let line = line_of(&record);
        let row: ChangeRow = record
            .deserialize(Some(&headers))
            .map_err(|e| CatalogError::invalid(file, line, e.to_string()))?;
        out.push((line, row));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ChangeRow {
    old_code: String,
    new_code: String,
    kind: String,
    #[serde(default)]
    default: String,
}

fn parse_changes(
    rows: &[(Option<u64>, ChangeRow)],
    file: &str,
    date: NaiveDate,
    hierarchies: &Hierarchies,
) -> Result<Vec<WardChange>, CatalogError> {
    let versions = hierarchies.versions();
    let Some(new_idx) = versions.iter().position(|v| v.effective == date) else {
        return Err(CatalogError::invalid(
            file,
            None,
            format!("there is no hierarchy version of {date} (units_{date}.csv) for these changes"),
        ));
    };
    if new_idx == 0 {
        return Err(CatalogError::invalid(
            file,
            None,
            format!("the hierarchy of {date} is the oldest; there is nothing it changes from"),
        ));
    }
    let (old, new) = (&versions[new_idx - 1], &versions[new_idx]);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (line, row) in rows {
        let line = *line;
        let bad = |m: String| CatalogError::invalid(file, line, m);
        let old_code = old
            .get_str(&row.old_code)
            .filter(|u| u.level == Level::Ward)
            .map(|u| u.code.clone())
            .ok_or_else(|| {
                bad(format!(
                    "old_code '{}' is not a ward before {date}",
                    row.old_code
                ))
            })?;
        let new_code = new
            .get_str(&row.new_code)
            .filter(|u| u.level == Level::Ward)
            .map(|u| u.code.clone())
            .ok_or_else(|| {
                bad(format!(
                    "new_code '{}' is not a ward from {date}",
                    row.new_code
                ))
            })?;
        let whole = match row.kind.as_str() {
            "whole" => true,
            "part" => false,
            other => return Err(bad(format!("kind '{other}' must be whole or part"))),
        };
        if !seen.insert((old_code.clone(), new_code.clone())) {
            return Err(bad(format!("{old_code} -> {new_code} is listed twice")));
        }
        out.push(WardChange {
            effective: date,
            old_code,
            new_code,
            whole,
            is_default: row.default == "default",
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct IndicatorRow {
    code: String,
    #[serde(default)]
    gso_code: String,
    name_vi: String,
    name_en: String,
    sector: String,
    unit: String,
    value_kind: String,
    across_units: String,
    across_time: String,
    #[serde(default)]
    scale: String,
    lowest_level: String,
    period_type: String,
    #[serde(default)]
    min: String,
    #[serde(default)]
    max: String,
    #[serde(default)]
    source: String,
}

const INDICATOR_COLUMNS: &[&str] = &[
    "code",
    "name_vi",
    "name_en",
    "sector",
    "unit",
    "value_kind",
    "across_units",
    "across_time",
    "lowest_level",
    "period_type",
];

/// Parses and checks the indicator catalog. `file` names it in errors.
pub fn parse_indicators(text: &str, file: &str) -> Result<Vec<Indicator>, CatalogError> {
    let mut reader = csv_reader(text);
    check_headers(&mut reader, INDICATOR_COLUMNS, file)?;
    let headers = reader.headers().map_err(|e| csv_error(file, e))?.clone();
    let mut out: Vec<Indicator> = Vec::new();
    let mut lines: HashMap<String, Option<u64>> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(file, e))?;
        let line = line_of(&record);
        let row: IndicatorRow = record
            .deserialize(Some(&headers))
            .map_err(|e| CatalogError::invalid(file, line, e.to_string()))?;
        let bad = |m: String| CatalogError::invalid(file, line, m);
        let code_ok = row
            .code
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && row
                .code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !code_ok {
            return Err(bad(format!(
                "code '{}' must be lower-case letters, digits and '_', starting with a letter",
                row.code
            )));
        }
        if let Some(first) = lines.get(&row.code) {
            return Err(bad(format!(
                "code '{}' is already used on line {}",
                row.code,
                first.map(|l| l.to_string()).unwrap_or_default()
            )));
        }
        for (field, value) in [
            ("name_vi", &row.name_vi),
            ("name_en", &row.name_en),
            ("unit", &row.unit),
        ] {
            if value.is_empty() {
                return Err(bad(format!("{field} is empty")));
            }
        }
        let sector: Sector = row.sector.parse().map_err(bad)?;
        let value_kind: ValueKind = row.value_kind.parse().map_err(bad)?;
        let across_units: AcrossUnits = row.across_units.parse().map_err(bad)?;
        let across_time: AcrossTime = row.across_time.parse().map_err(bad)?;
        let lowest_level: Level = row.lowest_level.parse().map_err(bad)?;
        let period_type: PeriodType = row
            .period_type
            .parse()
            .map_err(|e: crate::PeriodError| bad(e.to_string()))?;
        let scale = opt_f64(&row.scale, "scale").map_err(bad)?.unwrap_or(1.0);
        if scale <= 0.0 {
            return Err(bad(format!("scale {scale} must be positive")));
        }
        let min = opt_f64(&row.min, "min").map_err(bad)?;
        let max = opt_f64(&row.max, "max").map_err(bad)?;
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            return Err(bad(format!("min {lo} is greater than max {hi}")));
        }
        lines.insert(row.code.clone(), line);
        out.push(Indicator {
            code: row.code,
            gso_code: (!row.gso_code.is_empty()).then_some(row.gso_code),
            name_vi: row.name_vi,
            name_en: row.name_en,
            sector,
            unit: row.unit,
            value_kind,
            across_units,
            across_time,
            scale,
            lowest_level,
            period_type,
            min,
            max,
            source: row.source,
        });
    }
    // Rules may refer to indicators further down the file: check them last.
    let by_code: HashMap<&str, &Indicator> = out.iter().map(|i| (i.code.as_str(), i)).collect();
    for ind in &out {
        let line = lines.get(&ind.code).copied().flatten();
        for r in ind.across_units.references() {
            let Some(target) = by_code.get(r) else {
                return Err(CatalogError::invalid(
                    file,
                    line,
                    format!(
                        "across_units of '{}' refers to unknown indicator '{r}'",
                        ind.code
                    ),
                ));
            };
            if r == ind.code {
                return Err(CatalogError::invalid(
                    file,
                    line,
                    format!("across_units of '{}' refers to itself", ind.code),
                ));
            }
            // A ratio or weight is built from totals; a target that is itself
            // an average or a ratio has no total to build from. (`none` is
            // allowed: such a ratio is only defined where its parts are reported.)
            if !matches!(target.across_units, AcrossUnits::Sum | AcrossUnits::None) {
                return Err(CatalogError::invalid(
                    file,
                    line,
                    format!(
                        "across_units of '{}' refers to '{r}', which is not a total (its rule is {})",
                        ind.code, target.across_units
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "code,name_vi,name_en,sector,unit,value_kind,across_units,across_time,scale,lowest_level,period_type,min,max\n";

    #[test]
    fn shipped_indicators_load() {
        let inds = parse_indicators(DEFAULT_FILES[0].1, "indicators.csv").expect("shipped catalog");
        assert!(inds.len() >= 60);
        let sectors: HashSet<_> = inds.iter().map(|i| i.sector).collect();
        assert!(sectors.len() >= 8);
        let pov = inds
            .iter()
            .find(|i| i.code == "poverty_rate")
            .expect("poverty_rate");
        assert_eq!(
            pov.across_units,
            AcrossUnits::Ratio {
                numerator: "poor_households".into(),
                denominator: "households".into()
            }
        );
        assert_eq!(pov.scale, 100.0);
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!(
            "{HEADER}a,A,A,health,x,count,sum,sum,,ward,month,0,\nb,B,B,nowhere,x,count,sum,sum,,ward,month,,\n"
        );
        let err = parse_indicators(&text, "ind.csv")
            .expect_err("bad sector")
            .to_string();
        assert!(
            err.starts_with("ind.csv line 3: 'nowhere' is not a sector"),
            "{err}"
        );

        let text = format!(
            "{HEADER}a,A,A,health,x,rate,ratio:b/c,last,100,ward,month,0,100\nb,B,B,health,x,count,sum,sum,,ward,month,0,\n"
        );
        let err = parse_indicators(&text, "ind.csv")
            .expect_err("unknown ref")
            .to_string();
        assert_eq!(
            err,
            "ind.csv line 2: across_units of 'a' refers to unknown indicator 'c'"
        );

        let text = format!(
            "{HEADER}a,A,A,health,x,count,sum,sum,,ward,month,0,\na,B,B,health,x,count,sum,sum,,ward,month,,\n"
        );
        let err = parse_indicators(&text, "ind.csv")
            .expect_err("dup")
            .to_string();
        assert_eq!(err, "ind.csv line 3: code 'a' is already used on line 2");

        let err = parse_indicators("code,name_vi\n", "ind.csv")
            .expect_err("columns")
            .to_string();
        assert!(
            err.starts_with("ind.csv line 1: missing column(s) name_en"),
            "{err}"
        );
    }

    #[test]
    fn shipped_hierarchy_loads_with_the_real_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_default_files(dir.path()).expect("write");
        let cat = load_dir(dir.path()).expect("load");
        let versions = cat.hierarchies().versions();
        assert_eq!(versions.len(), 2);
        let count = |v: &HierarchyVersion, l: Level| v.units().filter(|u| u.level == l).count();
        assert_eq!(
            (
                count(&versions[0], Level::District),
                count(&versions[0], Level::Ward)
            ),
            (30, 526)
        );
        assert_eq!(
            (
                count(&versions[1], Level::District),
                count(&versions[1], Level::Ward)
            ),
            (0, 126)
        );
        // A date before the oldest version uses the oldest version.
        let d = NaiveDate::from_ymd_opt(2021, 1, 1).expect("date");
        assert_eq!(
            cat.hierarchies().version_for(d).map(|v| v.effective),
            Some(versions[0].effective)
        );
        let d = NaiveDate::from_ymd_opt(2025, 7, 1).expect("date");
        assert_eq!(
            cat.hierarchies().version_for(d).map(|v| v.effective),
            Some(versions[1].effective)
        );
        assert_eq!(cat.hierarchies().changes().len(), 794);
        let monthly = cat
            .forms()
            .iter()
            .find(|f| f.code == "ward_monthly")
            .expect("ward_monthly");
        assert!(monthly.indicators.contains(&"births".to_string()));
    }

    /// The whole country's hierarchy (the `vn` benchmark's): the reform
    /// merged 63 provinces into 34, and the 29 merged away are not carried
    /// into the new version, whose ward codes reuse theirs.
    #[test]
    fn the_country_loads_with_the_real_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_default_files(dir.path()).expect("write");
        let country = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/data/vietnam");
        for name in [
            "units_2025-01-01.csv",
            "units_2025-07-01.csv",
            "ward_changes_2025-07-01.csv",
        ] {
            std::fs::copy(country.join(name), dir.path().join("hierarchy").join(name))
                .expect("copy");
        }
        let cat = load_dir(dir.path()).expect("load");
        let versions = cat.hierarchies().versions();
        let count = |v: &HierarchyVersion, l: Level| v.units().filter(|u| u.level == l).count();
        let counts = |v: &HierarchyVersion| {
            (
                count(v, Level::Province),
                count(v, Level::District),
                count(v, Level::Ward),
            )
        };
        assert_eq!(versions.len(), 2);
        assert_eq!(counts(&versions[0]), (63, 696, 10_035));
        assert_eq!(counts(&versions[1]), (34, 0, 3_321));
        assert_eq!(cat.hierarchies().changes().len(), 10_597);
        // Ward 00691 was Phường Trần Phú of Hà Giang; from the reform the
        // code names a merged ward of Tuyên Quang.
        let code = |v: &HierarchyVersion| {
            v.get_str("00691")
                .map(|u| (u.name.clone(), u.parent.clone().map(|p| p.to_string())))
        };
        assert_eq!(
            code(&versions[0]),
            Some(("Phường Trần Phú".to_string(), Some("024".to_string())))
        );
        assert_eq!(
            code(&versions[1]),
            Some(("Phường Hà Giang 2".to_string(), Some("08".to_string())))
        );
    }

    #[test]
    fn a_dropped_file_adds_a_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_default_files(dir.path()).expect("write");
        std::fs::write(
            dir.path().join("hierarchy/units_2027-01-01_test.csv"),
            "code,name,level,parent_code,lat,lon,area_km2\n01,Thành phố Hà Nội,province,,,,\n00004,Phường Ba Đình,ward,01,,,\n",
        )
        .expect("write");
        let cat = load_dir(dir.path()).expect("load");
        assert_eq!(cat.hierarchies().versions().len(), 3);
        assert_eq!(cat.hierarchies().versions()[2].len(), 2);
    }

    #[test]
    fn bad_unit_file_names_the_line() {
        let err = parse_units(
            "code,name,level,parent_code\n01,Hà Nội,province,\n1,X,ward,01\n",
            "u.csv",
        )
        .expect_err("bad code")
        .to_string();
        assert!(
            err.starts_with("u.csv line 3: code '1' is not a GSO unit code"),
            "{err}"
        );
    }
}
