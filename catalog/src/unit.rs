//! Administrative units and the hierarchy versions they belong to.
//!
//! A unit is identified by its GSO code *within a hierarchy version*: the
//! 2025 reform reused ward codes for different, merged units. Versions are
//! immutable once loaded; which version a period uses is a pure function of
//! the period's last day (see [`Catalog::hierarchy_for`](crate::Catalog::hierarchy_for)).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::CatalogError;

/// A GSO unit code. Kept as a string: leading zeros are part of the code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitCode(String);

impl UnitCode {
    /// A code is 2 (province), 3 (district) or 5 (ward) ASCII digits.
    pub fn parse(s: &str) -> Option<UnitCode> {
        (matches!(s.len(), 2 | 3 | 5) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| UnitCode(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The level of a unit, from the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Province,
    District,
    Ward,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Province, Level::District, Level::Ward];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::District => "district",
            Level::Ward => "ward",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "province" => Ok(Level::Province),
            "district" => Ok(Level::District),
            "ward" => Ok(Level::Ward),
            other => Err(format!(
                "'{other}' is not a level: expected province, district or ward"
            )),
        }
    }
}

/// One unit of one hierarchy version.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub code: UnitCode,
    pub name: String,
    pub level: Level,
    pub parent: Option<UnitCode>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub area_km2: Option<f64>,
}

/// The administrative hierarchy as it stood from one date on.
#[derive(Debug, Clone)]
pub struct HierarchyVersion {
    /// The day this version takes effect.
    pub effective: NaiveDate,
    units: BTreeMap<UnitCode, Unit>,
    children: HashMap<UnitCode, Vec<UnitCode>>,
    levels: BTreeSet<Level>,
}

impl HierarchyVersion {
    /// Builds a version, checking that every parent exists and sits one level
    /// or more above its child. `source` names the input in errors.
    pub fn new(
        effective: NaiveDate,
        units: impl IntoIterator<Item = Unit>,
        source: &str,
    ) -> Result<Self, CatalogError> {
        let mut map = BTreeMap::new();
        for unit in units {
            let code = unit.code.clone();
            if map.insert(code.clone(), unit).is_some() {
                return Err(CatalogError::invalid(
                    source,
                    None,
                    format!("unit {code} appears twice in the hierarchy of {effective}"),
                ));
            }
        }
        let mut children: HashMap<UnitCode, Vec<UnitCode>> = HashMap::new();
        for unit in map.values() {
            match (&unit.parent, unit.level) {
                (None, Level::Province) => {}
                (None, level) => {
                    return Err(CatalogError::invalid(
                        source,
                        None,
                        format!("{level} {} has no parent_code", unit.code),
                    ));
                }
                (Some(parent), level) => {
                    let Some(p) = map.get(parent) else {
                        return Err(CatalogError::invalid(
                            source,
                            None,
                            format!(
                                "unit {}'s parent_code {parent} is not in the file",
                                unit.code
                            ),
                        ));
                    };
                    if p.level >= level {
                        return Err(CatalogError::invalid(
                            source,
                            None,
                            format!(
                                "unit {} ({level}) has parent {parent} of level {}, which is not above it",
                                unit.code, p.level
                            ),
                        ));
                    }
                    children
                        .entry(parent.clone())
                        .or_default()
                        .push(unit.code.clone());
                }
            }
        }
        let levels = map.values().map(|u| u.level).collect();
        Ok(HierarchyVersion {
            effective,
            units: map,
            children,
            levels,
        })
    }

    /// Whether this version has any unit of `level` (none are districts
    /// after the 2025 reform).
    pub fn has_level(&self, level: Level) -> bool {
        self.levels.contains(&level)
    }

    /// The level that does the work of `wanted` in this version: `wanted`
    /// itself or, where the version has no unit of it (no districts after
    /// the 2025 reform), the nearest level below that exists, to which the
    /// reform moved the abolished level's work (failing that, above).
    pub fn level_for(&self, wanted: Level) -> Level {
        if self.has_level(wanted) {
            return wanted;
        }
        Level::ALL
            .into_iter()
            .filter(|l| *l > wanted)
            .find(|l| self.has_level(*l))
            .or_else(|| {
                Level::ALL
                    .into_iter()
                    .rev()
                    .find(|l| *l < wanted && self.has_level(*l))
            })
            .unwrap_or(wanted)
    }

    pub fn get(&self, code: &UnitCode) -> Option<&Unit> {
        self.units.get(code)
    }

    /// Looks a unit up by its code as text.
    pub fn get_str(&self, code: &str) -> Option<&Unit> {
        UnitCode::parse(code).and_then(|c| self.units.get(&c))
    }

    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn children(&self, code: &UnitCode) -> &[UnitCode] {
        self.children.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The unit itself, then its parent, up to the province.
    pub fn ancestors<'a>(&'a self, code: &UnitCode) -> impl Iterator<Item = &'a Unit> + 'a {
        let mut next = self.units.get(code);
        std::iter::from_fn(move || {
            let unit = next?;
            next = unit.parent.as_ref().and_then(|p| self.units.get(p));
            Some(unit)
        })
    }

    /// The ancestor of `code` at `level` (the unit itself if it is of that level).
    pub fn ancestor_at(&self, code: &UnitCode, level: Level) -> Option<&Unit> {
        self.ancestors(code).find(|u| u.level == level)
    }

    /// The wards under `code` (the unit itself if it is a ward).
    pub fn wards_under(&self, code: &UnitCode) -> Vec<&Unit> {
        let mut out = Vec::new();
        let mut stack = vec![code.clone()];
        while let Some(c) = stack.pop() {
            if let Some(u) = self.units.get(&c) {
                if u.level == Level::Ward {
                    out.push(u);
                }
                stack.extend(self.children(&c).iter().cloned());
            }
        }
        out.sort_by(|a, b| a.code.cmp(&b.code));
        out
    }
}

/// How one old ward went into the new hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WardChange {
    /// The version the change takes effect in.
    pub effective: NaiveDate,
    pub old_code: UnitCode,
    pub new_code: UnitCode,
    /// `true` when the old ward went wholly into `new_code`; `false` when it
    /// was split and only part of it went there.
    pub whole: bool,
    /// For a split ward: the new ward that took the old ward's seat.
    pub is_default: bool,
}

/// All hierarchy versions, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    versions: Vec<HierarchyVersion>,
    changes: Vec<WardChange>,
}

impl Hierarchies {
    pub fn new(mut versions: Vec<HierarchyVersion>, changes: Vec<WardChange>) -> Self {
        versions.sort_by_key(|v| v.effective);
        Hierarchies { versions, changes }
    }

    pub fn versions(&self) -> &[HierarchyVersion] {
        &self.versions
    }

    pub fn changes(&self) -> &[WardChange] {
        &self.changes
    }

    /// The version in force on `date`: the latest whose effective date is not
    /// after `date`. The oldest version also stands for every date before it,
    /// because it is the oldest hierarchy the warehouse knows (for Hanoi: the
    /// version of 2025-01-01 covers every period before 2025-07).
    pub fn version_for(&self, date: NaiveDate) -> Option<&HierarchyVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective <= date)
            .or_else(|| self.versions.first())
    }

    /// Index (into [`Hierarchies::versions`]) of the version in force on
    /// `date`, by the rule of [`Hierarchies::version_for`].
    pub fn index_for(&self, date: NaiveDate) -> Option<usize> {
        if self.versions.is_empty() {
            return None;
        }
        Some(
            self.versions
                .iter()
                .rposition(|v| v.effective <= date)
                .unwrap_or(0),
        )
    }

    /// The interval `[valid_from, valid_to)` in which version `i` is used.
    /// `valid_from` is `None` for the oldest version (open start) and
    /// `valid_to` is `None` for the newest (still in force).
    pub fn validity(&self, i: usize) -> (Option<NaiveDate>, Option<NaiveDate>) {
        let from = (i > 0).then(|| self.versions[i].effective);
        let to = self.versions.get(i + 1).map(|v| v.effective);
        (from, to)
    }
}
