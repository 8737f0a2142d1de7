//! The indicator catalog: what each socio-economic criterion means and,
//! above all, how it may be combined.
//!
//! Aggregation is a pair of rules, the way DHIS2 defines aggregation types:
//! one across units (how ward values become a district value) and one
//! across time (how months become a quarter). A rate is never summed: it is
//! either recomputed from its numerator and denominator
//! ([`AcrossUnits::Ratio`]) or averaged with a weight.

use std::fmt;
use std::str::FromStr;

use crate::period::PeriodType;
use crate::unit::{HierarchyVersion, Level};

/// The sectors of Hanoi's socio-economic reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sector {
    PopulationLabour,
    EnterprisesInvestment,
    Industry,
    TradeServicesTourism,
    Agriculture,
    BudgetFinance,
    Education,
    Health,
    CultureSocial,
    SecurityOrder,
    EnvironmentInfrastructure,
    Prices,
}

impl Sector {
    pub const ALL: [Sector; 12] = [
        Sector::PopulationLabour,
        Sector::EnterprisesInvestment,
        Sector::Industry,
        Sector::TradeServicesTourism,
        Sector::Agriculture,
        Sector::BudgetFinance,
        Sector::Education,
        Sector::Health,
        Sector::CultureSocial,
        Sector::SecurityOrder,
        Sector::EnvironmentInfrastructure,
        Sector::Prices,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sector::PopulationLabour => "population_labour",
            Sector::EnterprisesInvestment => "enterprises_investment",
            Sector::Industry => "industry",
            Sector::TradeServicesTourism => "trade_services_tourism",
            Sector::Agriculture => "agriculture",
            Sector::BudgetFinance => "budget_finance",
            Sector::Education => "education",
            Sector::Health => "health",
            Sector::CultureSocial => "culture_social",
            Sector::SecurityOrder => "security_order",
            Sector::EnvironmentInfrastructure => "environment_infrastructure",
            Sector::Prices => "prices",
        }
    }
}

impl FromStr for Sector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sector::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Sector::ALL.iter().map(|x| x.as_str()).collect();
                format!(
                    "'{s}' is not a sector: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of number a value is; decides which checks and which
/// apportioning rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A whole number of things (people, households, events).
    Count,
    /// A quantity in a unit of measure (money, area, tonnes).
    Amount,
    /// A share or ratio (percent, per 10,000, per km²).
    Rate,
    /// An index against a base period (CPI, IIP).
    Index,
    /// A mean (income per capita, pupils per class).
    Average,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Count => "count",
            ValueKind::Amount => "amount",
            ValueKind::Rate => "rate",
            ValueKind::Index => "index",
            ValueKind::Average => "average",
        }
    }
}

impl FromStr for ValueKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "count" => Ok(ValueKind::Count),
            "amount" => Ok(ValueKind::Amount),
            "rate" => Ok(ValueKind::Rate),
            "index" => Ok(ValueKind::Index),
            "average" => Ok(ValueKind::Average),
            other => Err(format!(
                "'{other}' is not a value kind: expected count, amount, rate, index or average"
            )),
        }
    }
}

/// How values of several units combine into their parent's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AcrossUnits {
    Sum,
    Average,
    Min,
    Max,
    /// The number of units that reported a value.
    Count,
    /// Average weighted by another indicator's value in each unit.
    WeightedAverage {
        weight: String,
    },
    /// `scale × Σ numerator / Σ denominator`.
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// Never combined: only meaningful at the level that reports it.
    None,
}

impl AcrossUnits {
    /// The indicator codes this rule refers to.
    pub fn references(&self) -> Vec<&str> {
        match self {
            AcrossUnits::WeightedAverage { weight } => vec![weight],
            AcrossUnits::Ratio {
                numerator,
                denominator,
            } => vec![numerator, denominator],
            _ => vec![],
        }
    }
}

impl fmt::Display for AcrossUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcrossUnits::Sum => f.write_str("sum"),
            AcrossUnits::Average => f.write_str("average"),
            AcrossUnits::Min => f.write_str("min"),
            AcrossUnits::Max => f.write_str("max"),
            AcrossUnits::Count => f.write_str("count"),
            AcrossUnits::None => f.write_str("none"),
            AcrossUnits::WeightedAverage { weight } => write!(f, "weighted_average:{weight}"),
            AcrossUnits::Ratio {
                numerator,
                denominator,
            } => write!(f, "ratio:{numerator}/{denominator}"),
        }
    }
}

impl FromStr for AcrossUnits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{s}' is not an across-units rule: expected sum, average, min, max, count, none, \
                 weighted_average:<indicator> or ratio:<numerator>/<denominator>"
            )
        };
        Ok(match s {
            "sum" => AcrossUnits::Sum,
            "average" => AcrossUnits::Average,
            "min" => AcrossUnits::Min,
            "max" => AcrossUnits::Max,
            "count" => AcrossUnits::Count,
            "none" => AcrossUnits::None,
            _ => {
                if let Some(weight) = s.strip_prefix("weighted_average:") {
                    if weight.is_empty() {
                        return Err(bad());
                    }
                    AcrossUnits::WeightedAverage {
                        weight: weight.to_string(),
                    }
                } else if let Some(rest) = s.strip_prefix("ratio:") {
                    let (n, d) = rest.split_once('/').ok_or_else(bad)?;
                    if n.is_empty() || d.is_empty() {
                        return Err(bad());
                    }
                    AcrossUnits::Ratio {
                        numerator: n.to_string(),
                        denominator: d.to_string(),
                    }
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

/// How values of several periods combine into a longer period's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcrossTime {
    /// Flows (births, revenue): the quarter is the sum of its months.
    Sum,
    /// Stocks (population): the quarter takes its last reported month.
    Last,
    /// Levels (indices, rates): the mean of the months.
    Average,
    Min,
    Max,
    /// Never combined (growth rates, indices against the previous period):
    /// reported for each period type on its own.
    None,
}

impl AcrossTime {
    pub fn as_str(self) -> &'static str {
        match self {
            AcrossTime::Sum => "sum",
            AcrossTime::Last => "last",
            AcrossTime::Average => "average",
            AcrossTime::Min => "min",
            AcrossTime::Max => "max",
            AcrossTime::None => "none",
        }
    }
}

impl FromStr for AcrossTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sum" => Ok(AcrossTime::Sum),
            "last" => Ok(AcrossTime::Last),
            "average" => Ok(AcrossTime::Average),
            "min" => Ok(AcrossTime::Min),
            "max" => Ok(AcrossTime::Max),
            "none" => Ok(AcrossTime::None),
            other => Err(format!(
                "'{other}' is not an across-time rule: expected sum, last, average, min, max or none"
            )),
        }
    }
}

/// One socio-economic indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    /// Stable code used in reports and SQL (`population`, `poverty_rate`).
    pub code: String,
    /// The official GSO code where the statistical system has one (`H0102`).
    pub gso_code: Option<String>,
    pub name_vi: String,
    pub name_en: String,
    pub sector: Sector,
    /// Unit of measure as printed on the forms (`người`, `tỷ đồng`, `%`).
    pub unit: String,
    pub value_kind: ValueKind,
    pub across_units: AcrossUnits,
    pub across_time: AcrossTime,
    /// Multiplier of a ratio (100 for a percentage, 10,000 for "per 10,000").
    pub scale: f64,
    /// The lowest level that reports it.
    pub lowest_level: Level,
    /// The period type it is reported for.
    pub period_type: PeriodType,
    /// Smallest acceptable value, if any.
    pub min: Option<f64>,
    /// Largest acceptable value, if any.
    pub max: Option<f64>,
    /// Where the definition comes from.
    pub source: String,
}

impl Indicator {
    /// The level that reports this indicator in `version`: its lowest
    /// level, or the level that took that level's work (see
    /// [`HierarchyVersion::level_for`]).
    pub fn reporting_level(&self, version: &HierarchyVersion) -> Level {
        version.level_for(self.lowest_level)
    }
}
