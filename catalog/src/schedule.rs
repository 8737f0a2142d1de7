//! Report schedules: which level owes which indicators for which period
//! type, and by when. This is what makes completeness (expected against
//! received) and timeliness (on time against late) computable.
//!
//! `schedule.csv`:
//!
//! ```text
//! form,name_vi,name_en,level,period_type,indicators,due_months_after,due_day,data_window
//! ward_monthly,...,ward,month,*,1,20,calendar
//! ```
//!
//! `indicators` is `*` (every indicator of that lowest level and period
//! type) or a space-separated list of codes. The deadline is day `due_day`
//! of the month `due_months_after` months after the period's last month
//! (day 20 of the next month by default; clamped to the month's length).
//! `data_window` is `calendar` (the period's own days) or `15th_to_14th`,
//! the cut-off of Decree 09/2019/NĐ-CP: monthly data runs from the 15th of
//! the previous month to the 14th.

use std::str::FromStr;

use chrono::{Datelike, Months, NaiveDate};
use serde::Deserialize;

use crate::error::CatalogError;
use crate::indicator::Indicator;
use crate::period::{Period, PeriodType};
use crate::unit::{HierarchyVersion, Level};

/// Which days a period's data covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataWindow {
    Calendar,
    /// Decree 09/2019: from the 15th of the month before the period's first
    /// month to the 14th of its last month.
    FifteenthToFourteenth,
}

impl FromStr for DataWindow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "calendar" => Ok(DataWindow::Calendar),
            "15th_to_14th" => Ok(DataWindow::FifteenthToFourteenth),
            other => Err(format!(
                "data_window '{other}' must be calendar or 15th_to_14th"
            )),
        }
    }
}

/// One report form of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub code: String,
    pub name_vi: String,
    pub name_en: String,
    /// The level that owes the report.
    pub level: Level,
    pub period_type: PeriodType,
    /// The indicators the form carries.
    pub indicators: Vec<String>,
    pub due_months_after: u32,
    pub due_day: u32,
    pub data_window: DataWindow,
}

impl Form {
    /// The last day a report for `period` is on time.
    pub fn deadline(&self, period: &Period) -> NaiveDate {
        let last_month = period.last_day().with_day(1).unwrap_or(period.start());
        let due_month = last_month
            .checked_add_months(Months::new(self.due_months_after))
            .unwrap_or(last_month);
        let days_in_month = due_month
            .checked_add_months(Months::new(1))
            .and_then(|d| d.pred_opt())
            .map(|d| d.day())
            .unwrap_or(28);
        due_month
            .with_day(self.due_day.min(days_in_month))
            .unwrap_or(due_month)
    }

    /// The first and last day of the data a report for `period` covers.
    pub fn data_window(&self, period: &Period) -> (NaiveDate, NaiveDate) {
        match self.data_window {
            DataWindow::Calendar => (period.start(), period.last_day()),
            DataWindow::FifteenthToFourteenth => {
                let from = period
                    .start()
                    .checked_sub_months(Months::new(1))
                    .and_then(|d| d.with_day(15))
                    .unwrap_or(period.start());
                let to = period.last_day().with_day(14).unwrap_or(period.last_day());
                (from, to)
            }
        }
    }

    /// The level that owes the form in `version`: its level, or the level
    /// that took that level's work (see [`HierarchyVersion::level_for`]).
    pub fn owing_level(&self, version: &HierarchyVersion) -> Level {
        version.level_for(self.level)
    }
}

#[derive(Deserialize)]
struct FormRow {
    form: String,
    name_vi: String,
    name_en: String,
    level: String,
    period_type: String,
    indicators: String,
    #[serde(default)]
    due_months_after: String,
    #[serde(default)]
    due_day: String,
    #[serde(default)]
    data_window: String,
}

/// Parses and checks a schedule file against the indicator catalog.
pub fn parse_schedule(
    text: &str,
    file: &str,
    indicators: &[Indicator],
) -> Result<Vec<Form>, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| CatalogError::invalid(file, e.position().map(|p| p.line()), e.to_string()))?
        .clone();
    let mut out: Vec<Form> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            CatalogError::invalid(file, e.position().map(|p| p.line()), e.to_string())
        })?;
        let line = record.position().map(|p| p.line());
        let bad = |m: String| CatalogError::invalid(file, line, m);
        let row: FormRow = record
            .deserialize(Some(&headers))
            .map_err(|e| bad(e.to_string()))?;
        if row.form.is_empty() || out.iter().any(|f| f.code == row.form) {
            return Err(bad(format!("form '{}' is empty or used twice", row.form)));
        }
        let level: Level = row.level.parse().map_err(bad)?;
        let period_type: PeriodType = row
            .period_type
            .parse()
            .map_err(|e: crate::PeriodError| bad(e.to_string()))?;
        let codes: Vec<String> = if row.indicators == "*" {
            indicators
                .iter()
                .filter(|i| i.lowest_level == level && i.period_type == period_type)
                .map(|i| i.code.clone())
                .collect()
        } else {
            let codes: Vec<String> = row
                .indicators
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for c in &codes {
                match indicators.iter().find(|i| &i.code == c) {
                    None => {
                        return Err(bad(format!(
                            "indicator '{c}' of form '{}' is not in the catalog",
                            row.form
                        )));
                    }
                    Some(i) if i.period_type != period_type => {
                        return Err(bad(format!(
                            "indicator '{c}' is reported per {} but form '{}' is per {period_type}",
                            i.period_type, row.form
                        )));
                    }
                    Some(_) => {}
                }
            }
            codes
        };
        if codes.is_empty() {
            return Err(bad(format!("form '{}' carries no indicator", row.form)));
        }
        let number = |s: &str, field: &str, default: u32| -> Result<u32, CatalogError> {
            if s.is_empty() {
                return Ok(default);
            }
            s.parse::<u32>()
                .map_err(|_| bad(format!("{field} '{s}' is not a whole number")))
        };
        let due_day = number(&row.due_day, "due_day", 20)?;
        if !(1..=31).contains(&due_day) {
            return Err(bad(format!("due_day {due_day} must be 1 to 31")));
        }
        out.push(Form {
            code: row.form,
            name_vi: row.name_vi,
            name_en: row.name_en,
            level,
            period_type,
            indicators: codes,
            due_months_after: number(&row.due_months_after, "due_months_after", 1)?,
            due_day,
            data_window: row.data_window.parse().map_err(bad)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(window: DataWindow, after: u32, day: u32) -> Form {
        Form {
            code: "f".into(),
            name_vi: "f".into(),
            name_en: "f".into(),
            level: Level::Ward,
            period_type: PeriodType::Month,
            indicators: vec!["births".into()],
            due_months_after: after,
            due_day: day,
            data_window: window,
        }
    }

    #[test]
    fn deadlines() {
        let p: Period = "2024-07".parse().unwrap();
        assert_eq!(
            form(DataWindow::Calendar, 1, 20).deadline(&p),
            NaiveDate::from_ymd_opt(2024, 8, 20).unwrap()
        );
        let y: Period = "2024".parse().unwrap();
        assert_eq!(
            form(DataWindow::Calendar, 1, 31).deadline(&y),
            NaiveDate::from_ymd_opt(2025, 1, 31).unwrap()
        );
        let jan: Period = "2024-01".parse().unwrap();
        assert_eq!(
            form(DataWindow::Calendar, 1, 31).deadline(&jan),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
    }

    #[test]
    fn decree_09_window() {
        let p: Period = "2024-07".parse().unwrap();
        assert_eq!(
            form(DataWindow::FifteenthToFourteenth, 1, 20).data_window(&p),
            (
                NaiveDate::from_ymd_opt(2024, 6, 15).unwrap(),
                NaiveDate::from_ymd_opt(2024, 7, 14).unwrap()
            )
        );
    }
}
