//! The catalog as Arrow record batches, for the SQL tables `units`,
//! `unit_ancestors`, `unit_changes`, `indicators` and `periods`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::{Catalog, CatalogError, Level, Period, PeriodType};

/// Days since 1970-01-01, the Arrow Date32 encoding.
fn days(d: chrono::NaiveDate) -> i32 {
    datafusion::arrow::datatypes::Date32Type::from_naive_date(d)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch, CatalogError> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `units`: one row per unit per hierarchy version.
///
/// `valid_from`/`valid_to` bound the periods (by last day) the version is
/// used for, `[valid_from, valid_to)`; NULL `valid_from` means "every period
/// before `valid_to`" (the oldest known version), NULL `valid_to` means "still
/// in force". `province_code`, `district_code` and `ward_code` are the unit's
/// ancestors (or itself) at each level, for GROUP BY.
pub fn units(catalog: &Catalog) -> Result<RecordBatch, CatalogError> {
    let h = catalog.hierarchies();
    let mut code = Vec::new();
    let mut name = Vec::new();
    let mut level = Vec::new();
    let mut parent = Vec::new();
    let mut anc: [Vec<Option<String>>; 3] = Default::default();
    let mut version = Vec::new();
    let mut from = Vec::new();
    let mut to = Vec::new();
    let (mut lat, mut lon, mut area) = (Vec::new(), Vec::new(), Vec::new());
    for (i, v) in h.versions().iter().enumerate() {
        let (f, t) = h.validity(i);
        for u in v.units() {
            code.push(u.code.to_string());
            name.push(u.name.clone());
            level.push(u.level.as_str());
            parent.push(u.parent.as_ref().map(|p| p.to_string()));
            for (k, l) in Level::ALL.into_iter().enumerate() {
                anc[k].push(v.ancestor_at(&u.code, l).map(|a| a.code.to_string()));
            }
            version.push(days(v.effective));
            from.push(f.map(days));
            to.push(t.map(days));
            lat.push(u.lat);
            lon.push(u.lon);
            area.push(u.area_km2);
        }
    }
    let [p, d, w] = anc;
    batch(
        vec![
            text("code", false),
            text("name", false),
            text("level", false),
            text("parent_code", true),
            text("province_code", true),
            text("district_code", true),
            text("ward_code", true),
            Field::new("version", DataType::Date32, false),
            Field::new("valid_from", DataType::Date32, true),
            Field::new("valid_to", DataType::Date32, true),
            Field::new("lat", DataType::Float64, true),
            Field::new("lon", DataType::Float64, true),
            Field::new("area_km2", DataType::Float64, true),
        ],
        vec![
            Arc::new(StringArray::from(code)),
            Arc::new(StringArray::from(name)),
            Arc::new(StringArray::from(level)),
            Arc::new(StringArray::from(parent)),
            Arc::new(StringArray::from(p)),
            Arc::new(StringArray::from(d)),
            Arc::new(StringArray::from(w)),
            Arc::new(Date32Array::from(version)),
            Arc::new(Date32Array::from(from)),
            Arc::new(Date32Array::from(to)),
            Arc::new(Float64Array::from(lat)),
            Arc::new(Float64Array::from(lon)),
            Arc::new(Float64Array::from(area)),
        ],
    )
}

/// `unit_ancestors`: for each unit of each version, itself (depth 0) and
/// every ancestor (depth 1 = parent, ...). Joining reports to it and
/// grouping by `ancestor_code` gives totals at every level at once.
pub fn unit_ancestors(catalog: &Catalog) -> Result<RecordBatch, CatalogError> {
    let h = catalog.hierarchies();
    let (mut unit, mut unit_level, mut ancestor, mut ancestor_level, mut depth) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut version, mut from, mut to) = (Vec::new(), Vec::new(), Vec::new());
    for (i, v) in h.versions().iter().enumerate() {
        let (f, t) = h.validity(i);
        for u in v.units() {
            for (k, a) in v.ancestors(&u.code).enumerate() {
                unit.push(u.code.to_string());
                unit_level.push(u.level.as_str());
                ancestor.push(a.code.to_string());
                ancestor_level.push(a.level.as_str());
                depth.push(k as i32);
                version.push(days(v.effective));
                from.push(f.map(days));
                to.push(t.map(days));
            }
        }
    }
    batch(
        vec![
            text("unit_code", false),
            text("unit_level", false),
            text("ancestor_code", false),
            text("ancestor_level", false),
            Field::new("depth", DataType::Int32, false),
            Field::new("version", DataType::Date32, false),
            Field::new("valid_from", DataType::Date32, true),
            Field::new("valid_to", DataType::Date32, true),
        ],
        vec![
            Arc::new(StringArray::from(unit)),
            Arc::new(StringArray::from(unit_level)),
            Arc::new(StringArray::from(ancestor)),
            Arc::new(StringArray::from(ancestor_level)),
            Arc::new(Int32Array::from(depth)),
            Arc::new(Date32Array::from(version)),
            Arc::new(Date32Array::from(from)),
            Arc::new(Date32Array::from(to)),
        ],
    )
}

/// `unit_changes`: how old wards became new ones (the 2025 reform mapping).
pub fn unit_changes(catalog: &Catalog) -> Result<RecordBatch, CatalogError> {
    let c = catalog.hierarchies().changes();
    batch(
        vec![
            Field::new("effective", DataType::Date32, false),
            text("old_code", false),
            text("new_code", false),
            text("kind", false),
            Field::new("is_default", DataType::Boolean, false),
        ],
        vec![
            Arc::new(Date32Array::from(
                c.iter().map(|x| days(x.effective)).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                c.iter().map(|x| x.old_code.to_string()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                c.iter().map(|x| x.new_code.to_string()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                c.iter()
                    .map(|x| if x.whole { "whole" } else { "part" })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                c.iter().map(|x| x.is_default).collect::<Vec<_>>(),
            )),
        ],
    )
}

/// `indicators`: the catalog with its aggregation rules.
pub fn indicators(catalog: &Catalog) -> Result<RecordBatch, CatalogError> {
    let inds = catalog.indicators();
    let col = |f: &dyn Fn(&crate::Indicator) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(inds.iter().map(f).collect::<Vec<_>>()))
    };
    let num = |f: &dyn Fn(&crate::Indicator) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(inds.iter().map(f).collect::<Vec<_>>()))
    };
    batch(
        vec![
            text("code", false),
            text("gso_code", true),
            text("name_vi", false),
            text("name_en", false),
            text("sector", false),
            text("unit", false),
            text("value_kind", false),
            text("across_units", false),
            text("across_time", false),
            Field::new("scale", DataType::Float64, false),
            text("lowest_level", false),
            text("period_type", false),
            Field::new("min_value", DataType::Float64, true),
            Field::new("max_value", DataType::Float64, true),
            text("source", false),
        ],
        vec![
            col(&|i| Some(i.code.clone())),
            col(&|i| i.gso_code.clone()),
            col(&|i| Some(i.name_vi.clone())),
            col(&|i| Some(i.name_en.clone())),
            col(&|i| Some(i.sector.to_string())),
            col(&|i| Some(i.unit.clone())),
            col(&|i| Some(i.value_kind.as_str().to_string())),
            col(&|i| Some(i.across_units.to_string())),
            col(&|i| Some(i.across_time.as_str().to_string())),
            num(&|i| Some(i.scale)),
            col(&|i| Some(i.lowest_level.to_string())),
            col(&|i| Some(i.period_type.to_string())),
            num(&|i| i.min),
            num(&|i| i.max),
            col(&|i| Some(i.source.clone())),
        ],
    )
}

/// `periods`: every month, quarter, half-year and year of `years`, with its
/// span and the longer periods containing it.
pub fn periods(years: std::ops::RangeInclusive<i32>) -> Result<RecordBatch, CatalogError> {
    let mut all = Vec::new();
    for y in years {
        for kind in PeriodType::ALL {
            all.extend(Period::all_of_year(y, kind));
        }
    }
    all.sort();
    let s = |f: &dyn Fn(&Period) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(all.iter().map(f).collect::<Vec<_>>()))
    };
    let enclosing = |k: PeriodType| move |p: &Period| p.enclosing(k).map(|e| e.to_string());
    batch(
        vec![
            text("period", false),
            text("period_type", false),
            Field::new("start_date", DataType::Date32, false),
            Field::new("end_date", DataType::Date32, false),
            Field::new("year", DataType::Int32, false),
            text("quarter", true),
            text("half_year", true),
            text("year_period", false),
        ],
        vec![
            s(&|p| Some(p.to_string())),
            s(&|p| Some(p.period_type().to_string())),
            Arc::new(Date32Array::from(
                all.iter().map(|p| days(p.start())).collect::<Vec<_>>(),
            )),
            Arc::new(Date32Array::from(
                all.iter().map(|p| days(p.last_day())).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                all.iter().map(|p| p.year_number()).collect::<Vec<_>>(),
            )),
            s(&enclosing(PeriodType::Quarter)),
            s(&enclosing(PeriodType::HalfYear)),
            s(&enclosing(PeriodType::Year)),
        ],
    )
}

/// `report_forms`: the schedule.
pub fn forms(catalog: &Catalog) -> Result<RecordBatch, CatalogError> {
    let f = catalog.forms();
    let s = |g: &dyn Fn(&crate::Form) -> String| -> ArrayRef {
        Arc::new(StringArray::from(f.iter().map(g).collect::<Vec<_>>()))
    };
    batch(
        vec![
            text("form", false),
            text("name_vi", false),
            text("name_en", false),
            text("level", false),
            text("period_type", false),
            text("indicators", false),
            Field::new("indicator_count", DataType::Int32, false),
            Field::new("due_months_after", DataType::Int32, false),
            Field::new("due_day", DataType::Int32, false),
            text("data_window", false),
        ],
        vec![
            s(&|x| x.code.clone()),
            s(&|x| x.name_vi.clone()),
            s(&|x| x.name_en.clone()),
            s(&|x| x.level.to_string()),
            s(&|x| x.period_type.to_string()),
            s(&|x| x.indicators.join(" ")),
            Arc::new(Int32Array::from(
                f.iter()
                    .map(|x| x.indicators.len() as i32)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                f.iter()
                    .map(|x| x.due_months_after as i32)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                f.iter().map(|x| x.due_day as i32).collect::<Vec<_>>(),
            )),
            s(&|x| match x.data_window {
                crate::DataWindow::Calendar => "calendar".to_string(),
                crate::DataWindow::FifteenthToFourteenth => "15th_to_14th".to_string(),
            }),
        ],
    )
}
