//! SQL functions over units and periods: `unit_parent`, `unit_ancestor`,
//! `unit_path`, `unit_name`, `is_within`, `period_parent`, `period_start`,
//! `period_end`, `period_type`.
//!
//! A unit function takes an optional `as_of` (a date, or a period whose
//! last day is used) that picks the hierarchy version; without it, the
//! newest version that has the code is used. An unknown code gives NULL; a
//! malformed period, level or date is an error naming the function.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use baocao_catalog::{Catalog, HierarchyVersion, Level, Period, PeriodType, Unit};
use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// A function argument that is not acceptable (SQLSTATE 22023).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgument(pub String);

macro_rules! invalid {
    ($($arg:tt)*) => {
        Err(DataFusionError::External(Box::new(InvalidArgument(format!($($arg)*)))))
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    UnitParent,
    UnitAncestor,
    UnitPath,
    UnitName,
    IsWithin,
    PeriodParent,
    PeriodStart,
    PeriodEnd,
    PeriodTypeOf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::UnitParent => "unit_parent",
            Kind::UnitAncestor => "unit_ancestor",
            Kind::UnitPath => "unit_path",
            Kind::UnitName => "unit_name",
            Kind::IsWithin => "is_within",
            Kind::PeriodParent => "period_parent",
            Kind::PeriodStart => "period_start",
            Kind::PeriodEnd => "period_end",
            Kind::PeriodTypeOf => "period_type",
        }
    }

    /// Allowed argument counts, and the usage shown in errors.
    fn arity(self) -> (&'static [usize], &'static str) {
        match self {
            Kind::UnitParent => (&[1, 2], "unit_parent(code [, as_of])"),
            Kind::UnitAncestor => (&[2, 3], "unit_ancestor(code, level [, as_of])"),
            Kind::UnitPath => (&[1, 2], "unit_path(code [, as_of])"),
            Kind::UnitName => (&[1, 2], "unit_name(code [, as_of])"),
            Kind::IsWithin => (&[2, 3], "is_within(code, ancestor_code [, as_of])"),
            Kind::PeriodParent => (&[2], "period_parent(period, period_type)"),
            Kind::PeriodStart => (&[1], "period_start(period)"),
            Kind::PeriodEnd => (&[1], "period_end(period)"),
            Kind::PeriodTypeOf => (&[1], "period_type(period)"),
        }
    }

    fn returns(self) -> DataType {
        match self {
            Kind::IsWithin => DataType::Boolean,
            Kind::PeriodStart | Kind::PeriodEnd => DataType::Date32,
            _ => DataType::Utf8,
        }
    }
}

#[derive(Debug)]
struct CatalogFunction {
    kind: Kind,
    catalog: Arc<Catalog>,
    signature: Signature,
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for CatalogFunction {}

impl Hash for CatalogFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

/// Every function, ready to register.
pub fn all(catalog: Arc<Catalog>) -> Vec<ScalarUDF> {
    [
        Kind::UnitParent,
        Kind::UnitAncestor,
        Kind::UnitPath,
        Kind::UnitName,
        Kind::IsWithin,
        Kind::PeriodParent,
        Kind::PeriodStart,
        Kind::PeriodEnd,
        Kind::PeriodTypeOf,
    ]
    .into_iter()
    .map(|kind| {
        let (arities, _) = kind.arity();
        let signature = Signature::one_of(
            arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Immutable,
        );
        ScalarUDF::from(CatalogFunction {
            kind,
            catalog: catalog.clone(),
            signature,
        })
    })
    .collect()
}

/// Days since 1970-01-01, the Arrow Date32 encoding.
fn days(d: chrono::NaiveDate) -> i32 {
    datafusion::arrow::datatypes::Date32Type::from_naive_date(d)
}

impl CatalogFunction {
    /// The version to read `code` in: the one in force on `as_of`, or the
    /// newest that has the code.
    fn version(&self, code: &str, as_of: Option<&str>) -> Result<Option<&HierarchyVersion>> {
        let h = self.catalog.hierarchies();
        match as_of {
            Some(text) => {
                let date = match text.parse::<Period>() {
                    Ok(p) => p.last_day(),
                    Err(_) => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                        Ok(d) => d,
                        Err(_) => {
                            return invalid!(
                                "{}: as_of '{text}' is neither a date (YYYY-MM-DD) nor a period",
                                self.kind.name()
                            );
                        }
                    },
                };
                Ok(h.version_for(date))
            }
            None => Ok(h
                .versions()
                .iter()
                .rev()
                .find(|v| v.get_str(code).is_some())),
        }
    }

    fn unit<'a>(
        &'a self,
        code: &str,
        as_of: Option<&str>,
    ) -> Result<Option<(&'a HierarchyVersion, &'a Unit)>> {
        Ok(self
            .version(code, as_of)?
            .and_then(|v| v.get_str(code).map(|u| (v, u))))
    }

    fn period(&self, text: &str) -> Result<Period> {
        text.parse::<Period>().map_err(|e| {
            DataFusionError::External(Box::new(InvalidArgument(format!(
                "{}: {e}",
                self.kind.name()
            ))))
        })
    }

    /// One row: the text arguments (NULL-aware) to a result.
    fn row(&self, args: &[Option<&str>]) -> Result<Value> {
        let Some(first) = args[0] else {
            return Ok(Value::Null);
        };
        let opt = |i: usize| args.get(i).copied().flatten();
        Ok(match self.kind {
            Kind::UnitParent => match self.unit(first, opt(1))? {
                Some((_, u)) => Value::Text(u.parent.as_ref().map(|p| p.to_string())),
                None => Value::Null,
            },
            Kind::UnitAncestor => {
                let Some(level_text) = opt(1) else {
                    return Ok(Value::Null);
                };
                let level: Level = match level_text.parse() {
                    Ok(l) => l,
                    Err(e) => return invalid!("unit_ancestor: {e}"),
                };
                match self.unit(first, opt(2))? {
                    Some((v, u)) => {
                        Value::Text(v.ancestor_at(&u.code, level).map(|a| a.code.to_string()))
                    }
                    None => Value::Null,
                }
            }
            Kind::UnitPath => match self.unit(first, opt(1))? {
                Some((v, u)) => {
                    let mut codes: Vec<String> =
                        v.ancestors(&u.code).map(|a| a.code.to_string()).collect();
                    codes.reverse();
                    Value::Text(Some(codes.join("/")))
                }
                None => Value::Null,
            },
            Kind::UnitName => match self.unit(first, opt(1))? {
                Some((_, u)) => Value::Text(Some(u.name.clone())),
                None => Value::Null,
            },
            Kind::IsWithin => {
                let Some(ancestor) = opt(1) else {
                    return Ok(Value::Null);
                };
                match self.unit(first, opt(2))? {
                    Some((v, u)) => Value::Bool(Some(
                        v.ancestors(&u.code).any(|a| a.code.as_str() == ancestor),
                    )),
                    None => Value::Bool(Some(false)),
                }
            }
            Kind::PeriodParent => {
                let p = self.period(first)?;
                let Some(kind_text) = opt(1) else {
                    return Ok(Value::Null);
                };
                let kind: PeriodType = match kind_text.parse() {
                    Ok(k) => k,
                    Err(e) => return invalid!("period_parent: {e}"),
                };
                match p.enclosing(kind) {
                    Some(e) => Value::Text(Some(e.to_string())),
                    None => {
                        return invalid!(
                            "period_parent: a {} cannot contain the {} {p}",
                            kind,
                            p.period_type()
                        );
                    }
                }
            }
            Kind::PeriodStart => Value::Date(Some(days(self.period(first)?.start()))),
            Kind::PeriodEnd => Value::Date(Some(days(self.period(first)?.last_day()))),
            Kind::PeriodTypeOf => Value::Text(Some(self.period(first)?.period_type().to_string())),
        })
    }
}

enum Value {
    Null,
    Text(Option<String>),
    Bool(Option<bool>),
    Date(Option<i32>),
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let (arities, usage) = self.kind.arity();
        if !arities.contains(&arg_types.len()) {
            return plan_err!("wrong number of arguments: use {usage}");
        }
        Ok(self.kind.returns())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let scalar_only = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar_only { 1 } else { n };
        let arrays: Vec<StringArray> = args
            .args
            .iter()
            .map(|a| {
                let array: ArrayRef = a.to_array(rows)?;
                let text = cast(&array, &DataType::Utf8)?;
                Ok(text
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::new_null(rows)))
            })
            .collect::<Result<_>>()?;
        let mut texts = Vec::with_capacity(rows);
        let mut bools = Vec::with_capacity(rows);
        let mut dates = Vec::with_capacity(rows);
        for r in 0..rows {
            let row_args: Vec<Option<&str>> = arrays
                .iter()
                .map(|a| (!a.is_null(r)).then(|| a.value(r)))
                .collect();
            match self.row(&row_args)? {
                Value::Null => {
                    texts.push(None);
                    bools.push(None);
                    dates.push(None);
                }
                Value::Text(t) => texts.push(t),
                Value::Bool(b) => bools.push(b),
                Value::Date(d) => dates.push(d),
            }
        }
        let out: ArrayRef = match self.kind.returns() {
            DataType::Boolean => Arc::new(BooleanArray::from(bools)),
            DataType::Date32 => Arc::new(Date32Array::from(dates)),
            _ => Arc::new(StringArray::from(texts)),
        };
        if scalar_only {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}
