//! The one validator behind every way reports enter the warehouse.
//!
//! A batch is accepted whole or refused whole: [`Validator::validate`]
//! either returns a [`ValidBatch`] in the stored column layout, ready to be
//! committed, or a [`Rejection`] listing every bad row with its field and
//! reason. Nothing else can construct a `ValidBatch`, so nothing unchecked
//! can be committed.

use baocao_catalog::report::{INDICATOR_CODE, PERIOD, UNIT_CODE, VALUE};
use baocao_catalog::{Catalog, Indicator, Period, ValueKind};
use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{HashMap, HashSet};

use crate::error::{MAX_ERRORS, Problem, Rejection, RowError};

/// Rows that passed validation: the key columns and the value, in input
/// order, as Arrow arrays (no null in any).
#[derive(Debug, Clone)]
pub struct ValidBatch {
    pub(crate) unit_code: StringArray,
    /// In canonical form (`2024-07`, `2024Q3`).
    pub(crate) period: StringArray,
    pub(crate) indicator_code: StringArray,
    pub(crate) value: Float64Array,
    /// The batch withdraws the values of its keys instead of giving values.
    pub(crate) withdrawn: bool,
}

/// Builds a [`ValidBatch`] row by row.
struct ValidBuilder {
    unit_code: StringBuilder,
    period: StringBuilder,
    indicator_code: StringBuilder,
    value: Float64Builder,
    withdrawn: bool,
}

impl ValidBuilder {
    fn new(withdrawn: bool, rows: usize) -> Self {
        ValidBuilder {
            unit_code: StringBuilder::with_capacity(rows, rows * 5),
            period: StringBuilder::with_capacity(rows, rows * 7),
            indicator_code: StringBuilder::with_capacity(rows, rows * 12),
            value: Float64Builder::with_capacity(rows),
            withdrawn,
        }
    }

    fn push(&mut self, unit: &str, period: &str, indicator: &str, value: f64) {
        self.unit_code.append_value(unit);
        self.period.append_value(period);
        self.indicator_code.append_value(indicator);
        self.value.append_value(value);
    }

    fn finish(mut self) -> ValidBatch {
        ValidBatch {
            unit_code: self.unit_code.finish(),
            period: self.period.finish(),
            indicator_code: self.indicator_code.finish(),
            value: self.value.finish(),
            withdrawn: self.withdrawn,
        }
    }
}

impl ValidBatch {
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Row `i`'s key: unit, period, indicator.
    fn key(&self, i: usize) -> (&str, &str, &str) {
        (
            self.unit_code.value(i),
            self.period.value(i),
            self.indicator_code.value(i),
        )
    }

    /// The distinct units the batch reports for.
    pub fn units(&self) -> std::collections::BTreeSet<&str> {
        self.unit_code.iter().flatten().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Joins several valid batches into one, checking that no key repeats
    /// across them (one commit must not hold two values for one key).
    pub fn concat(batches: Vec<(String, ValidBatch)>) -> Result<ValidBatch, Rejection> {
        let rows = batches.iter().map(|(_, b)| b.len()).sum();
        let mut out = ValidBuilder::new(false, rows);
        let mut seen = HashSet::with_capacity(rows);
        for (source, b) in &batches {
            for i in 0..b.len() {
                let (unit, period, indicator) = b.key(i);
                if !seen.insert(b.key(i)) {
                    return Err(Rejection {
                        source: source.clone(),
                        errors: vec![RowError {
                            problem: Problem::Duplicate,
                            row: Some(i + 1),
                            field: None,
                            reason: format!(
                                "unit {unit} period {period} indicator {indicator} is also in an earlier file of this commit"
                            ),
                        }],
                        total: 1,
                    });
                }
                out.push(unit, period, indicator, b.value.value(i));
            }
        }
        Ok(out.finish())
    }

    /// The net effect of `batches` applied in order, as at most two batches
    /// with disjoint keys: the values that stand and the withdrawals that
    /// stand. A key's last batch decides (a later value corrects an earlier
    /// one; a later withdrawal removes it), so the result can be committed
    /// at once without depending on the order of its rows.
    pub fn net_effect(batches: Vec<ValidBatch>) -> Vec<ValidBatch> {
        // Each key's last write: (its place in the order of all writes, batch, row).
        let mut last: HashMap<(&str, &str, &str), (usize, usize, usize)> = HashMap::new();
        let mut order = 0usize;
        for (n, b) in batches.iter().enumerate() {
            for i in 0..b.len() {
                last.insert(b.key(i), (order, n, i));
                order += 1;
            }
        }
        let mut rows: Vec<_> = last.into_values().collect();
        rows.sort_unstable();
        let mut values = ValidBuilder::new(false, rows.len());
        let mut withdrawals = ValidBuilder::new(true, 0);
        for (_, n, i) in rows {
            let b = &batches[n];
            let out = if b.withdrawn {
                &mut withdrawals
            } else {
                &mut values
            };
            let (unit, period, indicator) = b.key(i);
            out.push(unit, period, indicator, b.value.value(i));
        }
        [values.finish(), withdrawals.finish()]
            .into_iter()
            .filter(|b| !b.is_empty())
            .collect()
    }
}

/// The longest unit code, period or indicator code accepted.
const MAX_FIELD_LEN: usize = 64;

/// Checks report batches against the catalog.
pub struct Validator<'a> {
    catalog: &'a Catalog,
    today: NaiveDate,
}

fn string_column(
    batch: &RecordBatch,
    name: &str,
    errors: &mut Vec<RowError>,
) -> Option<StringArray> {
    let Some(col) = batch.column_by_name(name) else {
        errors.push(RowError {
            problem: Problem::Shape,
            row: None,
            field: Some(name.to_string()),
            reason: format!("column {name} is missing"),
        });
        return None;
    };
    match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            match cast_with_options(col, &DataType::Utf8, &CastOptions::default()) {
                Ok(a) => a.as_any().downcast_ref::<StringArray>().cloned(),
                Err(e) => {
                    errors.push(RowError {
                        problem: Problem::Shape,
                        row: None,
                        field: Some(name.to_string()),
                        reason: format!("column {name} cannot be read as text: {e}"),
                    });
                    None
                }
            }
        }
        other => {
            errors.push(RowError {
                problem: Problem::Shape,
                row: None,
                field: Some(name.to_string()),
                reason: format!(
                    "column {name} must be text, not {other} (codes keep their leading zeros only as text)"
                ),
            });
            None
        }
    }
}

fn value_column(batch: &RecordBatch, errors: &mut Vec<RowError>) -> Option<Float64Array> {
    let Some(col) = batch.column_by_name(VALUE) else {
        errors.push(RowError {
            problem: Problem::Shape,
            row: None,
            field: Some(VALUE.to_string()),
            reason: format!("column {VALUE} is missing"),
        });
        return None;
    };
    if !(col.data_type().is_numeric()) {
        errors.push(RowError {
            problem: Problem::Shape,
            row: None,
            field: Some(VALUE.to_string()),
            reason: format!("column {VALUE} must be a number, not {}", col.data_type()),
        });
        return None;
    }
    let cast: Result<ArrayRef, _> =
        cast_with_options(col, &DataType::Float64, &CastOptions::default());
    match cast {
        Ok(a) => a.as_any().downcast_ref::<Float64Array>().cloned(),
        Err(e) => {
            errors.push(RowError {
                problem: Problem::Shape,
                row: None,
                field: Some(VALUE.to_string()),
                reason: format!("column {VALUE} cannot be read as a number: {e}"),
            });
            None
        }
    }
}

impl<'a> Validator<'a> {
    /// A validator that refuses periods starting after `today`.
    pub fn new(catalog: &'a Catalog, today: NaiveDate) -> Self {
        Validator { catalog, today }
    }

    /// Checks a batch in the long format (`unit_code, period,
    /// indicator_code, value`; other columns are ignored). `source` names the
    /// input in the rejection.
    pub fn validate(&self, batch: &RecordBatch, source: &str) -> Result<ValidBatch, Rejection> {
        self.validate_rows(batch, source, None)
    }

    /// Like [`Validator::validate`], for a batch made from another layout:
    /// `rows[i]` is the 1-based row of the input that batch row `i` came
    /// from (a wide spreadsheet row gives several long rows), so errors name
    /// the row the sender sees.
    pub fn validate_rows(
        &self,
        batch: &RecordBatch,
        source: &str,
        rows: Option<&[usize]>,
    ) -> Result<ValidBatch, Rejection> {
        self.check(batch, source, rows, true)
    }

    /// Checks the keys of a withdrawal (`unit_code, period, indicator_code`,
    /// no value): the batch removes those values from `reports` and every
    /// roll-up, and is recorded in the history like any submission.
    pub fn validate_withdrawal(
        &self,
        batch: &RecordBatch,
        source: &str,
    ) -> Result<ValidBatch, Rejection> {
        self.check(batch, source, None, false)
    }

    fn check(
        &self,
        batch: &RecordBatch,
        source: &str,
        rows: Option<&[usize]>,
        with_values: bool,
    ) -> Result<ValidBatch, Rejection> {
        let mut errors = Vec::new();
        let units = string_column(batch, UNIT_CODE, &mut errors);
        let periods = string_column(batch, PERIOD, &mut errors);
        let indicators = string_column(batch, INDICATOR_CODE, &mut errors);
        let values = if with_values {
            value_column(batch, &mut errors)
        } else {
            Some(Float64Array::from(vec![0.0; batch.num_rows()]))
        };
        let (Some(units), Some(periods), Some(indicators), Some(values)) =
            (units, periods, indicators, values)
        else {
            let total = errors.len();
            return Err(Rejection {
                source: source.to_string(),
                errors,
                total,
            });
        };
        let mut total = 0usize;
        let mut push = |errors: &mut Vec<RowError>,
                        row: usize,
                        field: &str,
                        problem: Problem,
                        reason: String| {
            let row = rows.and_then(|r| r.get(row).copied()).unwrap_or(row + 1);
            // A wide row gives several long rows with the same problem: once is enough.
            if errors
                .last()
                .is_some_and(|e: &RowError| e.row == Some(row) && e.reason == reason)
            {
                return;
            }
            total += 1;
            if errors.len() < MAX_ERRORS {
                errors.push(RowError {
                    problem,
                    row: Some(row),
                    field: Some(field.to_string()),
                    reason,
                });
            }
        };
        let mut seen = HashSet::with_capacity(batch.num_rows());
        let mut out = ValidBuilder::new(!with_values, batch.num_rows());
        // A batch holds few distinct periods: each text is parsed (and
        // written canonically) once.
        let mut parsed: HashMap<&str, Result<(Period, String), String>> = HashMap::new();
        for row in 0..batch.num_rows() {
            fn get(a: &StringArray, row: usize) -> Option<&str> {
                (!a.is_null(row)).then(|| a.value(row))
            }
            let (Some(unit), Some(period_text), Some(code)) =
                (get(&units, row), get(&periods, row), get(&indicators, row))
            else {
                for (a, f) in [
                    (&units, UNIT_CODE),
                    (&periods, PERIOD),
                    (&indicators, INDICATOR_CODE),
                ] {
                    if a.is_null(row) {
                        push(
                            &mut errors,
                            row,
                            f,
                            Problem::Missing,
                            format!("{f} is empty"),
                        );
                    }
                }
                continue;
            };
            // No code or period is long; echoing a 10 MB field in every
            // error message (and log line) would be an attack, not help.
            let too_long = [
                (unit, UNIT_CODE),
                (period_text, PERIOD),
                (code, INDICATOR_CODE),
            ]
            .into_iter()
            .find(|(v, _)| v.len() > MAX_FIELD_LEN);
            if let Some((v, f)) = too_long {
                push(
                    &mut errors,
                    row,
                    f,
                    Problem::Invalid,
                    format!(
                        "{f} is {} bytes long; no code or period is longer than {MAX_FIELD_LEN}",
                        v.len()
                    ),
                );
                continue;
            }
            let indicator = self.catalog.indicator(code);
            if indicator.is_none() {
                push(
                    &mut errors,
                    row,
                    INDICATOR_CODE,
                    Problem::Unknown,
                    format!("indicator_code '{code}' is not in the indicator catalog"),
                );
            }
            let period = match parsed.entry(period_text).or_insert_with(|| {
                period_text
                    .parse::<Period>()
                    .map(|p| (p, p.to_string()))
                    .map_err(|e| e.to_string())
            }) {
                Ok((p, canonical)) => Some((*p, canonical.as_str())),
                Err(e) => {
                    push(&mut errors, row, PERIOD, Problem::Invalid, e.clone());
                    None
                }
            };
            let (Some(indicator), Some((period, canonical))) = (indicator, period) else {
                continue;
            };
            if period.period_type() != indicator.period_type {
                push(
                    &mut errors,
                    row,
                    PERIOD,
                    Problem::Invalid,
                    format!(
                        "period '{period}' is a {} but indicator '{code}' is reported per {}",
                        period.period_type(),
                        indicator.period_type
                    ),
                );
                continue;
            }
            if period.start() > self.today {
                push(
                    &mut errors,
                    row,
                    PERIOD,
                    Problem::Invalid,
                    format!("period '{period}' has not started yet"),
                );
                continue;
            }
            let Some(version) = self.catalog.hierarchy_for(&period) else {
                push(
                    &mut errors,
                    row,
                    UNIT_CODE,
                    Problem::Unknown,
                    "the catalog has no hierarchy".to_string(),
                );
                continue;
            };
            let level = indicator.reporting_level(version);
            match version.get_str(unit) {
                None => push(
                    &mut errors,
                    row,
                    UNIT_CODE,
                    Problem::Unknown,
                    format!(
                        "unit_code '{unit}' is not a unit of the hierarchy in force in {period} (version of {})",
                        version.effective
                    ),
                ),
                Some(u) if u.level != level => push(
                    &mut errors,
                    row,
                    UNIT_CODE,
                    Problem::Invalid,
                    format!(
                        "unit_code '{unit}' is a {} but indicator '{code}' is reported by each {level} in {period}",
                        u.level
                    ),
                ),
                Some(_) => {}
            }
            if values.is_null(row) {
                push(
                    &mut errors,
                    row,
                    VALUE,
                    Problem::Missing,
                    "value is empty".to_string(),
                );
                continue;
            }
            let v = values.value(row);
            if let Some(reason) = check_value(indicator, v).filter(|_| with_values) {
                push(&mut errors, row, VALUE, Problem::Invalid, reason);
                continue;
            }
            if !seen.insert((unit, period_text, code)) {
                push(
                    &mut errors,
                    row,
                    UNIT_CODE,
                    Problem::Duplicate,
                    format!(
                        "unit {unit} period {period} indicator {code} appears more than once in this batch"
                    ),
                );
                continue;
            }
            out.push(unit, canonical, code, v);
        }
        if total > 0 {
            return Err(Rejection {
                source: source.to_string(),
                errors,
                total,
            });
        }
        Ok(out.finish())
    }
}

/// Whether `v` is an acceptable value of `indicator`; the reason if not.
fn check_value(indicator: &Indicator, v: f64) -> Option<String> {
    let code = &indicator.code;
    if !v.is_finite() {
        return Some(format!("value {v} of '{code}' is not a finite number"));
    }
    if indicator.value_kind == ValueKind::Count && v.fract() != 0.0 {
        return Some(format!(
            "value {v} of '{code}' must be a whole number (it is a count)"
        ));
    }
    if let Some(min) = indicator.min
        && v < min
    {
        return Some(format!("value {v} of '{code}' is below its minimum {min}"));
    }
    if let Some(max) = indicator.max
        && v > max
    {
        return Some(format!("value {v} of '{code}' is above its maximum {max}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[(&str, f64)], withdrawn: bool) -> ValidBatch {
        let mut b = ValidBuilder::new(withdrawn, rows.len());
        for (unit, value) in rows {
            b.push(unit, "2025-06", "births", *value);
        }
        b.finish()
    }

    #[test]
    fn the_last_write_of_a_key_stands() {
        let net = ValidBatch::net_effect(vec![
            batch(&[("00001", 1.0), ("00004", 2.0), ("00006", 3.0)], false),
            batch(&[("00004", 0.0)], true),
            batch(&[("00001", 10.0)], false),
        ]);
        assert_eq!(net.len(), 2);
        assert!(!net[0].withdrawn);
        assert_eq!(net[0].unit_code, StringArray::from(vec!["00006", "00001"]));
        assert_eq!(net[0].value, Float64Array::from(vec![3.0, 10.0]));
        assert!(net[1].withdrawn);
        assert_eq!(net[1].unit_code, StringArray::from(vec!["00004"]));
        assert!(ValidBatch::net_effect(vec![]).is_empty());
    }
}
