//! Kubernetes quantities (`2Gi`, `500M`, `1.5G`, `1e9`) as whole bytes, and back.
//!
//! The CRD types a byte size as a `Quantity`, which the API server stores as written (for a
//! custom resource it checks nothing); the proxy takes plain bytes. So the operator reads the
//! quantity grammar itself: k8s-openapi's `Quantity` is only the string.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a quantity is not a byte size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not in Kubernetes' quantity syntax.
    #[error("is not a quantity (e.g. 2Gi, 512Mi, 1.5G or plain bytes)")]
    Syntax,
    /// Zero or negative.
    #[error("must be more than zero bytes")]
    NotPositive,
    /// More bytes than fit in 64 bits.
    #[error("is too large")]
    TooLarge,
}

/// Binary suffixes, largest first, with their power of two.
const BINARY: [(&str, u32); 6] = [
    ("Ei", 60),
    ("Pi", 50),
    ("Ti", 40),
    ("Gi", 30),
    ("Mi", 20),
    ("Ki", 10),
];
/// Decimal suffixes with their power of ten (`m` is milli).
const DECIMAL: [(&str, i32); 7] = [
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// The quantity in bytes, rounded up as Kubernetes rounds a fraction of a byte; zero, negative
/// and unparseable quantities are errors.
pub fn bytes(quantity: &Quantity) -> Result<u64, QuantityError> {
    let text = quantity.0.as_str();
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let (mantissa, fraction_digits) = mantissa(number)?;
    let (binary_shift, decimal_exponent) = suffix_scale(suffix)?;
    if mantissa == 0 || negative {
        return Err(QuantityError::NotPositive);
    }
    let scaled = mantissa
        .checked_mul(1u128 << binary_shift)
        .ok_or(QuantityError::TooLarge)?;
    let exponent = decimal_exponent
        .checked_sub(fraction_digits)
        .ok_or(QuantityError::Syntax)?;
    let value = if exponent >= 0 {
        10u128
            .checked_pow(exponent.unsigned_abs())
            .and_then(|p| scaled.checked_mul(p))
            .ok_or(QuantityError::TooLarge)?
    } else {
        // Too small a divisor to fit means less than a byte, which rounds up to one.
        10u128
            .checked_pow(exponent.unsigned_abs())
            .map_or(1, |p| scaled.div_ceil(p))
    };
    u64::try_from(value).map_err(|_| QuantityError::TooLarge)
}

/// The digits of `1.5` as `(15, 1)`: the integer and how many of its digits follow the point.
fn mantissa(number: &str) -> Result<(u128, i32), QuantityError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(QuantityError::Syntax);
    }
    let mut value: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
            .ok_or(QuantityError::TooLarge)?;
    }
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| QuantityError::TooLarge)?;
    Ok((value, fraction_digits))
}

/// A suffix as `(power of two, power of ten)`: `Gi` is `(30, 0)`, `G` `(0, 9)`, `e3` `(0, 3)`.
fn suffix_scale(suffix: &str) -> Result<(u32, i32), QuantityError> {
    if suffix.is_empty() {
        return Ok((0, 0));
    }
    if let Some((_, shift)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        return Ok((*shift, 0));
    }
    if let Some((_, exponent)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        return Ok((0, *exponent));
    }
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .and_then(|e| e.parse::<i32>().ok())
        .ok_or(QuantityError::Syntax)?;
    Ok((0, exponent))
}

/// `bytes` as a quantity with the largest binary suffix that keeps it exact (`2560Mi`), or
/// plain bytes.
pub fn from_bytes(bytes: u64) -> Quantity {
    let exact = BINARY
        .iter()
        .find(|(_, shift)| bytes != 0 && bytes.trailing_zeros() >= *shift);
    Quantity(match exact {
        Some((suffix, shift)) => format!("{}{suffix}", bytes >> shift),
        None => bytes.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<u64, QuantityError> {
        bytes(&Quantity(text.to_owned()))
    }

    #[test]
    fn binary_decimal_fractional_and_exponent_quantities_are_bytes() {
        for (text, expected) in [
            ("1", 1),
            ("2Gi", 2 << 30),
            ("512Mi", 512 << 20),
            ("1Ki", 1024),
            ("500M", 500_000_000),
            ("1.5G", 1_500_000_000),
            ("1.5Gi", 3 << 29),
            ("+3k", 3000),
            ("1e9", 1_000_000_000),
            ("2E3", 2000),
            ("1E", 1_000_000_000_000_000_000),
            (".5Ki", 512),
            ("5.", 5),
            // Fractions of a byte round up, as Kubernetes does.
            ("1500m", 2),
            ("0.1", 1),
            ("1e-3", 1),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn zero_negative_malformed_and_huge_quantities_are_errors() {
        for text in ["0", "0Gi", "-1Gi", "0.0", "-0"] {
            assert_eq!(parse(text), Err(QuantityError::NotPositive), "{text}");
        }
        for text in [
            "", "Gi", "2 Gi", "2gi", "2GB", "1.2.3", "e3", "2Gi ", "x", "1e", "1.5Gi5", ".",
        ] {
            assert_eq!(parse(text), Err(QuantityError::Syntax), "{text:?}");
        }
        for text in ["16Ei", "1e20", "99999999999999999999999999999999999999999"] {
            assert_eq!(parse(text), Err(QuantityError::TooLarge), "{text}");
        }
    }

    #[test]
    fn bytes_become_the_largest_exact_binary_suffix() {
        assert_eq!(from_bytes(2 << 30).0, "2Gi");
        assert_eq!(from_bytes(2560 << 20).0, "2560Mi");
        assert_eq!(from_bytes(1024).0, "1Ki");
        assert_eq!(from_bytes(1000).0, "1000");
        assert_eq!(from_bytes(0).0, "0");
    }
}
