use crate::error::PgWireError;
use smol_str::{SmolStr, ToSmolStr, format_smolstr};

/// extra_float_digits sets the number of digits displayed for floating-point
/// values.
///
/// Valid values [-15, 3], default value: 1
#[derive(Debug)]
pub struct ExtraFloatDigits(pub i8);

impl TryFrom<&str> for ExtraFloatDigits {
    type Error = PgWireError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let value = value
            .parse::<i8>()
            .map_err(|_| PgWireError::InvalidOptionValue(value.to_string()))?;

        if !(-15..=3).contains(&value) {
            Err(PgWireError::InvalidOptionValue(value.to_string()))
        } else {
            Ok(Self(value))
        }
    }
}

impl ExtraFloatDigits {
    const FLT_DIG: i8 = 6;
    const DBL_DIG: i8 = 15;

    /// Format an f64 value according to the configured precision.
    pub fn format_f64(&self, value: f64) -> SmolStr {
        let extra = self.0.clamp(-15, 3);

        // Handle special cases
        if value.is_nan() {
            return "NaN".to_smolstr();
        }
        if value.is_infinite() {
            return if value.is_sign_positive() {
                "Infinity".to_smolstr()
            } else {
                "-Infinity".to_smolstr()
            };
        }

        if value == 0.0 {
            return "0".to_smolstr();
        }

        // For extra_float_digits >= 1, use ryu for shortest-precise format
        // This preserves the original binary float value exactly
        // At most 17 digits for f64
        if extra >= 1 {
            // baocao's patch: a whole number below 1e15 (a count, mostly)
            // is its integer digits, which is what `shortest` makes of it,
            // without formatting the float in scientific form first.
            if value.fract() == 0.0 && value.abs() < 1e15 {
                return format_smolstr!("{}", value as i64);
            }
            return shortest(&format!("{value:e}"), Self::DBL_DIG as i32);
        }

        // For negative values, round to DBL_DIG + extra_float_digits significant digits
        // DBL_DIG = 15 for f64
        let sig_digits = (Self::DBL_DIG + extra).max(0) as usize;
        format_with_significant_digits(value, sig_digits)
    }

    /// Format an f32 value according to the configured precision.
    pub fn format_f32(&self, value: f32) -> SmolStr {
        let extra = self.0.clamp(-15, 3);

        // Handle special cases
        if value.is_nan() {
            return "NaN".to_smolstr();
        }
        if value.is_infinite() {
            return if value.is_sign_positive() {
                "Infinity".to_smolstr()
            } else {
                "-Infinity".to_smolstr()
            };
        }

        if value == 0.0 {
            return "0".to_smolstr();
        }

        // For extra_float_digits >= 1, use ryu for shortest-precise format
        // This preserves the original binary float value exactly
        // At most 9 digits for f32
        if extra >= 1 {
            return shortest(&format!("{value:e}"), Self::FLT_DIG as i32);
        }

        // For negative values, round to FLT_DIG + extra_float_digits significant digits
        // FLT_DIG = 6 for f32
        let sig_digits = (Self::FLT_DIG + extra).max(0) as usize;
        format_with_significant_digits(value as f64, sig_digits)
    }
}

/// PostgreSQL's shortest exact output of a float (`float8out` and
/// `float4out` with extra_float_digits > 0, src/common/d2s.c `to_chars`):
/// the shortest digits that read back as the same value, in fixed notation
/// when the decimal exponent is in [-4, `fixed_below`) — 15 for float8, 6
/// for float4 — and otherwise as `d.ddde+XX` with at least two exponent
/// digits: 12 → `12`, 0.1 → `0.1`, 1e20 → `1e+20`, 1.5e-7 → `1.5e-07`.
///
/// baocao's patch: pgwire 0.41 printed ryu's form (`12.0`, `1e20`, `inf`),
/// which psql shows as is and which JDBC cannot read for infinities.
/// `scientific` is Rust's `{:e}` of the value, which has the shortest
/// round-trip digits.
fn shortest(scientific: &str, fixed_below: i32) -> SmolStr {
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let n = digits.len() as i32;
    if (-4..fixed_below).contains(&exponent) {
        if exponent < 0 {
            let zeros = "0".repeat((-exponent - 1) as usize);
            format_smolstr!("{sign}0.{zeros}{digits}")
        } else if n <= exponent + 1 {
            let zeros = "0".repeat((exponent + 1 - n) as usize);
            format_smolstr!("{sign}{digits}{zeros}")
        } else {
            let (int, frac) = digits.split_at((exponent + 1) as usize);
            format_smolstr!("{sign}{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format_smolstr!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs())
    }
}

/// Format with specific number of significant digits
fn format_with_significant_digits(value: f64, sig_digits: usize) -> SmolStr {
    if sig_digits == 0 {
        // Round to nearest integer
        return format_smolstr!("{:.0}", value.round());
    }

    let negative = value < 0.0;
    let abs_value = value.abs();

    // Find the order of magnitude
    let magnitude = abs_value.log10().floor();

    // Calculate decimal places needed
    // For a number like 3.14159, magnitude is 0
    // For 314.159, magnitude is 2
    // For 0.0314159, magnitude is -2
    let decimal_places = if magnitude >= 0.0 {
        // For numbers >= 1, decimal places = sig_digits - (integer_digits)
        let integer_digits = (magnitude as i32) + 1;
        (sig_digits as i32 - integer_digits).max(0) as usize
    } else {
        // For numbers < 1, we need to account for leading zeros after decimal
        let leading_zeros = (-magnitude as i32) - 1;
        sig_digits + leading_zeros as usize
    };

    // Format with calculated precision
    let formatted = format_smolstr!("{abs_value:.decimal_places$}");

    // Remove trailing zeros and unnecessary decimal point
    let trimmed = trim_trailing_zeros(&formatted);

    if negative {
        format_smolstr!("-{trimmed}",)
    } else {
        trimmed.to_smolstr()
    }
}

/// Remove trailing zeros from decimal representation
fn trim_trailing_zeros(s: &str) -> SmolStr {
    if !s.contains('.') {
        return s.to_smolstr();
    }

    let trimmed = s.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_smolstr()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format() {
        let v = std::f64::consts::PI; //3.1415926535897931

        let formatted = &[
            "3",                 // -15
            "3",                 // -14
            "3.1",               // -13
            "3.14",              // -12
            "3.142",             // -11
            "3.1416",            // -10
            "3.14159",           // -9
            "3.141593",          // -8
            "3.1415927",         // -7
            "3.14159265",        // -6
            "3.141592654",       // -5
            "3.1415926536",      // -4
            "3.14159265359",     // -3
            "3.14159265359",     // -2
            "3.1415926535898",   // -1
            "3.14159265358979",  // 0
            "3.141592653589793", // 1
            "3.141592653589793", // 2
            "3.141592653589793", // 3
        ];

        for (i, e) in (-15..=3).enumerate() {
            let extra_float_digit = ExtraFloatDigits(e);
            assert_eq!(extra_float_digit.format_f64(v), formatted[i]);
        }

        assert_eq!(ExtraFloatDigits(0).format_f64(f64::NAN), "NaN");
        assert_eq!(ExtraFloatDigits(0).format_f64(f64::INFINITY), "Infinity");
        assert_eq!(ExtraFloatDigits(0).format_f64(-f64::INFINITY), "-Infinity");

        let v = std::f32::consts::PI; //3.1415926535897931

        let formatted = &[
            "3",         // -15
            "3",         // -14
            "3",         // -13
            "3",         // -12
            "3",         // -11
            "3",         // -10
            "3",         // -9
            "3",         // -8
            "3",         // -7
            "3",         // -6
            "3",         // -5
            "3.1",       // -4
            "3.14",      // -3
            "3.142",     // -2
            "3.1416",    // -1
            "3.14159",   // 0
            "3.1415927", // 1
            "3.1415927", // 2
            "3.1415927", // 3
        ];

        for (i, e) in (-15..=3).enumerate() {
            let extra_float_digit = ExtraFloatDigits(e);
            assert_eq!(extra_float_digit.format_f32(v), formatted[i]);
        }
    }
}
