//! Reporting periods: month `2024-07`, quarter `2024Q3`, half-year `2024S1`,
//! year `2024`.
//!
//! A period is a value, not a date range: it parses from and formats to the
//! exact strings reports carry, and knows its calendar span and which longer
//! periods contain it. Months roll up into quarters, halves and years.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// The kind of a period, from shortest to longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeriodType {
    Month,
    Quarter,
    HalfYear,
    Year,
}

impl PeriodType {
    pub const ALL: [PeriodType; 4] = [
        PeriodType::Month,
        PeriodType::Quarter,
        PeriodType::HalfYear,
        PeriodType::Year,
    ];

    /// The name used in catalog files and SQL tables.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodType::Month => "month",
            PeriodType::Quarter => "quarter",
            PeriodType::HalfYear => "half_year",
            PeriodType::Year => "year",
        }
    }

    /// Number of months a period of this type spans.
    pub fn months(self) -> u32 {
        match self {
            PeriodType::Month => 1,
            PeriodType::Quarter => 3,
            PeriodType::HalfYear => 6,
            PeriodType::Year => 12,
        }
    }
}

impl fmt::Display for PeriodType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeriodType {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "month" => Ok(PeriodType::Month),
            "quarter" => Ok(PeriodType::Quarter),
            "half_year" => Ok(PeriodType::HalfYear),
            "year" => Ok(PeriodType::Year),
            other => Err(PeriodError::UnknownType(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "'{0}' is not a period: expected a month like 2024-07, a quarter like 2024Q3, a half-year like 2024S1 or a year like 2024"
    )]
    Malformed(String),
    #[error("'{0}' is not a period: {1}")]
    OutOfRange(String, &'static str),
    #[error("'{0}' is not a period type: expected month, quarter, half_year or year")]
    UnknownType(String),
}

/// One reporting period. Ordered by start, then by length (a month sorts
/// before the quarter that starts with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    year: i32,
    kind: PeriodType,
    /// 1-based index within the year: month 1..=12, quarter 1..=4, half 1..=2, year 1.
    index: u32,
}

/// Years a period may name. Reports from before the first year or after the
/// last are certainly typing mistakes.
const MIN_YEAR: i32 = 1900;
const MAX_YEAR: i32 = 2999;

impl Period {
    pub fn month(year: i32, month: u32) -> Option<Period> {
        Self::new(year, PeriodType::Month, month)
    }

    pub fn quarter(year: i32, quarter: u32) -> Option<Period> {
        Self::new(year, PeriodType::Quarter, quarter)
    }

    pub fn half_year(year: i32, half: u32) -> Option<Period> {
        Self::new(year, PeriodType::HalfYear, half)
    }

    pub fn year(year: i32) -> Option<Period> {
        Self::new(year, PeriodType::Year, 1)
    }

    /// The periods of type `kind` in `year`, in order (none outside the
    /// supported years).
    pub fn all_of_year(year: i32, kind: PeriodType) -> impl Iterator<Item = Period> {
        (1..=12 / kind.months()).filter_map(move |i| Self::new(year, kind, i))
    }

    fn new(year: i32, kind: PeriodType, index: u32) -> Option<Period> {
        let per_year = 12 / kind.months();
        ((MIN_YEAR..=MAX_YEAR).contains(&year) && (1..=per_year).contains(&index))
            .then_some(Period { year, kind, index })
    }

    /// The month containing `date`.
    pub fn month_of(date: NaiveDate) -> Period {
        Period {
            year: date.year(),
            kind: PeriodType::Month,
            index: date.month(),
        }
    }

    pub fn period_type(&self) -> PeriodType {
        self.kind
    }

    pub fn year_number(&self) -> i32 {
        self.year
    }

    /// Index within the year (month 1..=12, quarter 1..=4, half 1..=2, 1 for a year).
    pub fn index(&self) -> u32 {
        self.index
    }

    fn first_month(&self) -> u32 {
        (self.index - 1) * self.kind.months() + 1
    }

    /// First day of the period.
    pub fn start(&self) -> NaiveDate {
        // The constructor bounds year and index, so the date always exists.
        NaiveDate::from_ymd_opt(self.year, self.first_month(), 1).unwrap_or(NaiveDate::MIN)
    }

    /// First day after the period (exclusive end).
    pub fn end_exclusive(&self) -> NaiveDate {
        let next_month0 = self.first_month() - 1 + self.kind.months();
        let (y, m) = (self.year + (next_month0 / 12) as i32, next_month0 % 12 + 1);
        NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(NaiveDate::MAX)
    }

    /// Last day of the period (inclusive).
    pub fn last_day(&self) -> NaiveDate {
        self.end_exclusive().pred_opt().unwrap_or(NaiveDate::MIN)
    }

    /// Whether `other` lies wholly inside this period (a period contains itself).
    pub fn contains(&self, other: &Period) -> bool {
        self.start() <= other.start() && other.end_exclusive() <= self.end_exclusive()
    }

    /// The period of type `kind` that contains this one, if `kind` is not shorter.
    pub fn enclosing(&self, kind: PeriodType) -> Option<Period> {
        if kind < self.kind {
            return None;
        }
        let month0 = self.first_month() - 1;
        Some(Period {
            year: self.year,
            kind,
            index: month0 / kind.months() + 1,
        })
    }

    /// The months of this period, in order.
    pub fn months(&self) -> impl Iterator<Item = Period> + '_ {
        let first = self.first_month();
        (first..first + self.kind.months()).map(|m| Period {
            year: self.year,
            kind: PeriodType::Month,
            index: m,
        })
    }

    /// The next period of the same type.
    pub fn succ(&self) -> Option<Period> {
        let per_year = 12 / self.kind.months();
        if self.index < per_year {
            Self::new(self.year, self.kind, self.index + 1)
        } else {
            Self::new(self.year + 1, self.kind, 1)
        }
    }

    /// Every period of `kind` from the one containing `from` to the one
    /// containing `to`, both included.
    pub fn range(kind: PeriodType, from: Period, to: Period) -> Vec<Period> {
        let (Some(mut p), Some(last)) = (from.enclosing(kind), to.enclosing(kind)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while p <= last {
            out.push(p);
            match p.succ() {
                Some(next) => p = next,
                None => break,
            }
        }
        out
    }
}

impl PartialOrd for Period {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Period {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.start(), self.kind).cmp(&(other.start(), other.kind))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeriodType::Month => write!(f, "{:04}-{:02}", self.year, self.index),
            PeriodType::Quarter => write!(f, "{:04}Q{}", self.year, self.index),
            PeriodType::HalfYear => write!(f, "{:04}S{}", self.year, self.index),
            PeriodType::Year => write!(f, "{:04}", self.year),
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || PeriodError::Malformed(s.to_string());
        let bytes = s.as_bytes();
        if bytes.len() < 4 || !bytes[..4].iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let year: i32 = s[..4].parse().map_err(|_| malformed())?;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(PeriodError::OutOfRange(
                s.to_string(),
                "the year must be between 1900 and 2999",
            ));
        }
        let rest = &s[4..];
        let digit = |t: &str| -> Result<u32, PeriodError> {
            if t.len() == 1 && t.as_bytes()[0].is_ascii_digit() {
                Ok(u32::from(t.as_bytes()[0] - b'0'))
            } else {
                Err(malformed())
            }
        };
        let (kind, index) = match rest.as_bytes().first() {
            None => (PeriodType::Year, 1),
            Some(b'-') => {
                let m = &rest[1..];
                if m.len() != 2 || !m.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                let month: u32 = m.parse().map_err(|_| malformed())?;
                (PeriodType::Month, month)
            }
            Some(b'Q') => (PeriodType::Quarter, digit(&rest[1..])?),
            Some(b'S') => (PeriodType::HalfYear, digit(&rest[1..])?),
            Some(_) => return Err(malformed()),
        };
        Period::new(year, kind, index).ok_or_else(|| {
            PeriodError::OutOfRange(
                s.to_string(),
                match kind {
                    PeriodType::Month => "the month must be 01 to 12",
                    PeriodType::Quarter => "the quarter must be 1 to 4",
                    PeriodType::HalfYear => "the half-year must be 1 or 2",
                    PeriodType::Year => "bad year",
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Period {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_formats_every_kind() {
        for s in ["2024-07", "2024Q3", "2024S1", "2024", "2021-01", "2025-12"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("2024Q3").period_type(), PeriodType::Quarter);
    }

    #[test]
    fn spans() {
        assert_eq!(
            p("2024-02").last_day(),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
        assert_eq!(
            p("2024Q4").start(),
            NaiveDate::from_ymd_opt(2024, 10, 1).unwrap()
        );
        assert_eq!(
            p("2024Q4").end_exclusive(),
            NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
        );
        assert_eq!(
            p("2024S2").last_day(),
            NaiveDate::from_ymd_opt(2024, 12, 31).unwrap()
        );
        assert_eq!(p("2024").months().count(), 12);
        assert_eq!(
            p("2024Q3")
                .months()
                .map(|m| m.to_string())
                .collect::<Vec<_>>(),
            ["2024-07", "2024-08", "2024-09"]
        );
    }

    #[test]
    fn containment() {
        assert!(p("2024Q3").contains(&p("2024-08")));
        assert!(!p("2024Q3").contains(&p("2024-10")));
        assert!(p("2024").contains(&p("2024S2")));
        assert!(p("2024S2").contains(&p("2024Q3")));
        assert!(!p("2024-08").contains(&p("2024Q3")));
        assert_eq!(
            p("2024-08").enclosing(PeriodType::Quarter),
            Some(p("2024Q3"))
        );
        assert_eq!(
            p("2024-08").enclosing(PeriodType::HalfYear),
            Some(p("2024S2"))
        );
        assert_eq!(p("2024Q2").enclosing(PeriodType::Year), Some(p("2024")));
        assert_eq!(p("2024").enclosing(PeriodType::Month), None);
    }

    #[test]
    fn ordering_and_ranges() {
        assert!(p("2024-07") < p("2024Q3"));
        assert!(p("2024-06") < p("2024-07"));
        let months = Period::range(PeriodType::Month, p("2024-11"), p("2025-02"));
        assert_eq!(
            months.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            ["2024-11", "2024-12", "2025-01", "2025-02"]
        );
        assert_eq!(
            Period::range(PeriodType::Quarter, p("2024-11"), p("2025-02")).len(),
            2
        );
    }

    #[test]
    fn bad_strings_say_what_is_expected() {
        for s in [
            "",
            "24-07",
            "2024-7",
            "2024-13",
            "2024-00",
            "2024Q5",
            "2024Q0",
            "2024S3",
            "2024H1",
            "2024-07-01",
            "abcd",
            "2024 ",
            "10000",
        ] {
            let err = s.parse::<Period>().expect_err(s);
            assert!(err.to_string().contains(&format!("'{s}'")), "{err}");
        }
        assert_eq!(
            "2024-13"
                .parse::<Period>()
                .expect_err("month 13")
                .to_string(),
            "'2024-13' is not a period: the month must be 01 to 12"
        );
    }
}
