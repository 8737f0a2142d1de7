//! The reference data every report is checked against and rolled up by:
//! administrative units in their hierarchy versions, the indicator catalog
//! with its aggregation rules, and reporting periods.
//!
//! The main design decision: the catalog is *data in files*, not code. An
//! administrator edits `indicators.csv` or drops a `units_<date>.csv` file
//! into the warehouse's `catalog/` folder; [`load_dir`] validates it all and
//! names the file and line of any mistake. Once loaded, a [`Catalog`] is
//! immutable and cheap to share.

mod error;
mod indicator;
mod load;
mod period;
pub mod report;
mod schedule;
pub mod tables;
mod unit;

use std::collections::HashMap;

pub use error::CatalogError;
pub use indicator::{AcrossTime, AcrossUnits, Indicator, Sector, ValueKind};
pub use load::{DEFAULT_FILES, load_dir, parse_indicators, write_default_files};
pub use period::{Period, PeriodError, PeriodType};
pub use schedule::{DataWindow, Form, parse_schedule};
pub use unit::{Hierarchies, HierarchyVersion, Level, Unit, UnitCode, WardChange};

/// The loaded catalog: indicators and hierarchy versions.
#[derive(Debug, Clone)]
pub struct Catalog {
    indicators: Vec<Indicator>,
    by_code: HashMap<String, usize>,
    hierarchies: Hierarchies,
    forms: Vec<Form>,
}

impl Catalog {
    pub fn new(indicators: Vec<Indicator>, hierarchies: Hierarchies) -> Result<Self, CatalogError> {
        let by_code = indicators
            .iter()
            .enumerate()
            .map(|(i, ind)| (ind.code.clone(), i))
            .collect();
        Ok(Catalog {
            indicators,
            by_code,
            hierarchies,
            forms: Vec::new(),
        })
    }

    /// The catalog with a report schedule.
    pub fn with_forms(mut self, forms: Vec<Form>) -> Self {
        self.forms = forms;
        self
    }

    /// The report forms of the schedule.
    pub fn forms(&self) -> &[Form] {
        &self.forms
    }

    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    pub fn indicator(&self, code: &str) -> Option<&Indicator> {
        self.by_code.get(code).map(|&i| &self.indicators[i])
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// The hierarchy version a report for `period` is checked and rolled up
    /// against: the one in force on the period's last day, when the period
    /// closes and its reports are made (the year 2025 is reported by the
    /// wards that exist after the reform of 2025-07-01).
    pub fn hierarchy_for(&self, period: &Period) -> Option<&HierarchyVersion> {
        self.hierarchies.version_for(period.last_day())
    }
}
