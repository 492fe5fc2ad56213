//! Kubernetes resource quantities ("500m", "1.5Gi", "2e9"), parsed with the
//! semantics of `k8s.io/apimachinery/pkg/api/resource` (`ParseQuantity`).
//!
//! A [`Quantity`] is an exact count of nano-units held in an `i128`. Matching
//! Kubernetes, a non-zero value finer than 1n is rounded away from zero to the
//! next nano ("0.9n" is 1n, "-0.9n" is -1n), and a binarySI value (Ki..Ei) is
//! silently capped at 2^63-1 units ("8Ei" parses as 9223372036854775807).
//! Decimal values are not capped by Kubernetes; here they are exact up to
//! about 1.7e29 units and [`QuantityError::OutOfRange`] beyond.
//!
//! Two deliberate differences from the Go scanner, both towards rejecting:
//! a number needs at least one digit ("Gi" and "." are accepted by Go as zero
//! but not by the documented grammar or the CRD quantity pattern), and an
//! exponent must fit an i64 (Go rejects those too, but silently truncates an
//! exponent beyond i32 instead of failing).

use std::fmt;
use std::str::FromStr;

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
/// Kubernetes caps binarySI quantities at its int64 maximum, in whole units.
const BINARY_CAP_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;
/// Decimal SI suffixes from nano (10^-9) to exa (10^18), 10^3 apart.
const DECIMAL_SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
/// Binary SI suffixes from Ki (2^10) to Ei (2^60), 2^10 apart.
const BINARY_SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
/// Inputs are echoed in errors, which end up in API responses: keep them short.
const MAX_ECHO_CHARS: usize = 64;

/// An exact Kubernetes quantity value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    /// Value in units of 10^-9. Never `i128::MIN`: parsing builds a magnitude
    /// and negates it, so `unsigned_abs` and negation are always exact.
    nanos: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("an empty string is not a valid quantity")]
    Empty,
    #[error(
        "{0:?} is not a valid quantity: must match \
         '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?$'"
    )]
    InvalidFormat(String),
    #[error("{0:?} is out of range: a quantity's magnitude must not exceed about 1.7e29")]
    OutOfRange(String),
}

/// What the suffix multiplies the number by.
enum Scale {
    /// 10^n, from a decimal SI suffix or an exponent.
    Decimal(i64),
    /// 2^n, from a binary SI suffix; only these get Kubernetes' silent cap.
    Binary(u32),
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let invalid = || QuantityError::InvalidFormat(echo(s));
        let (negative, rest) = match s.as_bytes() {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            rest => (false, rest),
        };
        let (int, rest) = rest.split_at(count_digits(rest));
        let (frac, suffix) = match rest {
            [b'.', after @ ..] => after.split_at(count_digits(after)),
            _ => (&[][..], rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let scale = parse_suffix(suffix).map_err(|e| match e {
            SuffixError::Malformed => invalid(),
            SuffixError::ExponentTooLarge => QuantityError::OutOfRange(echo(s)),
        })?;
        let binary = matches!(scale, Scale::Binary(_));
        let magnitude = match (nanos_magnitude(int, frac, &scale), binary) {
            (Some(m), false) => m,
            (None, false) => return Err(QuantityError::OutOfRange(echo(s))),
            (Some(m), true) => m.min(BINARY_CAP_NANOS),
            // Overflowing i128 means far above the cap, so the cap applies.
            (None, true) => BINARY_CAP_NANOS,
        };
        let nanos = if negative { -magnitude } else { magnitude };
        Ok(Quantity { nanos })
    }

    pub fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn from_integer(v: i64) -> Quantity {
        // |i64| * 10^9 is far inside i128, so this cannot overflow.
        Quantity {
            nanos: i128::from(v) * NANOS_PER_UNIT,
        }
    }

    /// Value in whole units rounded up (ceil), saturating to i64 — like Quantity.Value() in Go.
    /// (Go is not consistent for negative values, rounding some away from
    /// zero; here it is always ceil, so -1.5 gives -1.)
    pub fn value(&self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_UNIT))
    }

    /// Value in milli-units rounded up, saturating — like MilliValue() in Go.
    pub fn milli_value(&self) -> i64 {
        saturate(ceil_div(self.nanos, NANOS_PER_MILLI))
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// Kubernetes' canonical DecimalSI form: an integer mantissa without trailing
/// zeros where a larger suffix can absorb them ("1500m", "1G", "1080n"). The
/// binary/decimal format of the input is not kept (it would make "1Gi" and
/// "1024Mi" unequal), so "1Gi" prints as "1073741824".
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let mut mantissa = self.nanos.unsigned_abs();
        let mut zeros = 0;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            zeros += 1;
        }
        // Suffixes step by 10^3 from nano, so only whole groups of three
        // zeros move into the suffix; the rest stay in the mantissa.
        let kept = zeros % 3;
        mantissa *= 10u128.pow(kept);
        let exponent = zeros - kept;
        let sign = if self.nanos < 0 { "-" } else { "" };
        match DECIMAL_SUFFIXES.get(exponent as usize / 3) {
            Some(suffix) => write!(f, "{sign}{mantissa}{suffix}"),
            // Beyond E (10^18) DecimalSI has no suffix; Kubernetes falls back
            // to an exponent.
            None => write!(f, "{sign}{mantissa}e{}", i64::from(exponent) - 9),
        }
    }
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

enum SuffixError {
    Malformed,
    /// Beyond i64, which Go's strconv.ParseInt rejects as well.
    ExponentTooLarge,
}

fn parse_suffix(suffix: &[u8]) -> Result<Scale, SuffixError> {
    // A bare "E" is exa, found here; "E" followed by digits is an exponent.
    if let Some(i) = DECIMAL_SUFFIXES.iter().position(|s| s.as_bytes() == suffix) {
        return Ok(Scale::Decimal(3 * i as i64 - 9));
    }
    if let Some(i) = BINARY_SUFFIXES.iter().position(|s| s.as_bytes() == suffix) {
        return Ok(Scale::Binary(10 * (i as u32 + 1)));
    }
    let [b'e' | b'E', exponent @ ..] = suffix else {
        return Err(SuffixError::Malformed);
    };
    let (negative, digits) = match exponent {
        [b'-', d @ ..] => (true, d),
        [b'+', d @ ..] => (false, d),
        d => (false, d),
    };
    if digits.is_empty() || count_digits(digits) != digits.len() {
        return Err(SuffixError::Malformed);
    }
    // Accumulating in i128 lets i64::MIN itself through, as in Go.
    let value = parse_int(digits).ok_or(SuffixError::ExponentTooLarge)?;
    let value = if negative { -value } else { value };
    let value = i64::try_from(value).map_err(|_| SuffixError::ExponentTooLarge)?;
    Ok(Scale::Decimal(value))
}

/// The magnitude of `int.frac * scale` in nanos, rounded away from zero;
/// `None` if it does not fit an i128. Linear in the input length whatever the
/// exponent, so hostile inputs ("0.000…1", "1e-9999999999") stay cheap.
fn nanos_magnitude(int: &[u8], frac: &[u8], scale: &Scale) -> Option<i128> {
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        return Some(0);
    };
    let digits = &digits[first..];
    let (exp10, multiplier) = match *scale {
        Scale::Decimal(exp10) => (exp10, 1),
        Scale::Binary(shift) => (0, 1i128 << shift),
    };
    // Power of ten that turns `digits`, read as an integer, into nanos.
    let shift = i128::from(exp10) - frac.len() as i128 + 9;
    if shift >= 0 {
        let pow = 10i128.checked_pow(u32::try_from(shift).ok()?)?;
        return parse_int(digits)?.checked_mul(pow)?.checked_mul(multiplier);
    }
    // The last `below` digits (plus any implied leading zeros) are below 1n.
    let below = shift.unsigned_abs();
    let (whole, fraction, leading_zeros) = match usize::try_from(below) {
        Ok(b) if b < digits.len() => {
            let (w, f) = digits.split_at(digits.len() - b);
            (w, f, 0)
        }
        _ => (&[][..], digits, below - digits.len() as u128),
    };
    let whole = parse_int(whole)?.checked_mul(multiplier)?;
    whole.checked_add(ceil_fraction(fraction, leading_zeros, multiplier))
}

/// Reads ASCII digits as an integer; `None` on overflow.
fn parse_int(digits: &[u8]) -> Option<i128> {
    digits.iter().try_fold(0i128, |acc, &d| {
        acc.checked_mul(10)?.checked_add(i128::from(d - b'0'))
    })
}

/// ceil(0.<leading_zeros x 0><digits> * multiplier) for multiplier <= 2^60,
/// by schoolbook multiplication from the last digit: the carry left over is
/// the integer part, and any non-zero digit produced below it means rounding
/// up. The carry stays below `multiplier`, so nothing overflows.
fn ceil_fraction(digits: &[u8], leading_zeros: u128, multiplier: i128) -> i128 {
    let mut carry = 0i128;
    let mut inexact = false;
    for &d in digits.iter().rev() {
        let t = i128::from(d - b'0') * multiplier + carry;
        inexact |= t % 10 != 0;
        carry = t / 10;
    }
    // Each leading zero divides the carry by ten; once it is zero the rest
    // change nothing, so this loop runs at most ~19 times.
    let mut zeros = leading_zeros;
    while carry > 0 && zeros > 0 {
        inexact |= carry % 10 != 0;
        carry /= 10;
        zeros -= 1;
    }
    carry + i128::from(inexact)
}

fn ceil_div(n: i128, d: i128) -> i128 {
    n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0)
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(s: &str) -> i128 {
        match Quantity::parse(s) {
            Ok(q) => q.nanos(),
            Err(e) => panic!("{s:?} failed to parse: {e}"),
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity { nanos: nanos(s) }
    }

    fn message(s: &str) -> String {
        Quantity::parse(s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    const G: i128 = NANOS_PER_UNIT;

    /// Test vectors from Kubernetes' TestQuantityParse, as exact nanos.
    #[rustfmt::skip]
    const PARSE_CASES: &[(&str, i128)] = &[
        ("0", 0), ("0n", 0), ("0u", 0), ("0m", 0), ("0Ki", 0), ("0k", 0), ("0Mi", 0),
        ("0M", 0), ("0Gi", 0), ("0G", 0), ("0Ti", 0), ("0T", 0), ("1", G),
        // Binary suffixes.
        ("1Ki", 1024 * G), ("8Ki", (8 << 10) * G), ("7Mi", (7 << 20) * G), ("6Gi", (6 << 30) * G),
        ("5Ti", (5 << 40) * G), ("4Pi", (4 << 50) * G), ("3Ei", (3 << 60) * G),
        ("10Ti", (10 << 40) * G), ("100Ti", (100 << 40) * G),
        // Decimal suffixes.
        ("5n", 5), ("4u", 4_000), ("3m", 3_000_000), ("9", 9 * G), ("8k", 8_000 * G),
        ("50k", 50_000 * G), ("7M", 7_000_000 * G), ("6G", 6 * G * G), ("5T", 5_000 * G * G),
        ("40T", 40_000 * G * G), ("300T", 300_000 * G * G), ("2P", 2_000_000 * G * G),
        ("1E", G * G * G), ("12E", 12 * G * G * G),
        // Decimal exponents.
        ("1E-3", 1_000_000), ("1e3", 1_000 * G), ("1E6", 1_000_000 * G), ("1e9", G * G),
        ("1E12", 1_000 * G * G), ("1e15", 1_000_000 * G * G), ("1E18", G * G * G),
        ("1e14", 100_000 * G * G), ("1e13", 10_000 * G * G), ("1.5e2", 150 * G),
        ("0.5e0", G / 2), ("0.5e-1", G / 20), ("0.5e-2", G / 200), ("1.2e3", 1_200 * G),
        ("1.3E+6", 1_300_000 * G), ("1.40e9", 14 * G * G / 10), ("1.53E12", 1_530 * G * G),
        ("1.6e15", 1_600_000 * G * G), ("1.7E18", 17 * G * G * G / 10),
        // Things that look like floating point.
        ("100.035k", 100_035 * G), ("0.001", 1_000_000), ("0.0005k", G / 2), ("0.005", 5_000_000),
        ("0.05", G / 20), ("0.5", G / 2), ("0.00050k", G / 2), ("0.00500", 5_000_000),
        ("0.05000", G / 20), ("0.50000", G / 2), ("10.035M", 10_035_000 * G),
        ("9.01", 9_010_000_000),
        ("8.1k", 8_100 * G), ("7.123456M", 7_123_456 * G), ("6.987654321G", 6_987_654_321 * G),
        ("5.444T", 5_444 * G * G), ("40.1T", 40_100 * G * G), ("300.2T", 300_200 * G * G),
        ("2.5P", 2_500_000 * G * G), ("1.01E", 101 * G * G * G / 100),
        // Sub-nano values round up to the next nano.
        ("3.001n", 4), ("1.1E-9", 2), ("0.0000000001", 1), ("0.0000000005", 1),
        ("0.00000000050", 1), ("0.5e-9", 1), ("0.9n", 1), ("0.00000012345", 124),
        ("0.00000012354", 124), ("1e-10", 1),
        // Fractional binary values.
        ("100.035Ki", 102_435_840_000_000), ("0.5Mi", (1 << 19) * G),
        ("0.05Gi", 53_687_091_200_000_000),
        ("0.025Ti", 27_487_790_694_400_000_000), ("1.5Gi", (3 << 29) * G),
        // "Things written by trolls".
        ("0.000000000001Ki", 2), (".001", 1_000_000), (".0001k", 100_000_000), ("1.", G),
        ("1.G", G * G), (".5", G / 2), ("5.", 5 * G),
    ];

    #[test]
    fn parses_kubernetes_vectors_with_any_sign() {
        for &(input, expect) in PARSE_CASES {
            assert_eq!(nanos(input), expect, "{input}");
            assert_eq!(nanos(&format!("+{input}")), expect, "+{input}");
            // Rounding is on the magnitude, as in Go: "-3.001n" is -4n.
            assert_eq!(nanos(&format!("-{input}")), -expect, "-{input}");
        }
    }

    #[test]
    fn binary_values_are_capped_like_kubernetes() {
        let huge = "99999999999999999999999999999999999999999Ki";
        for input in ["9Ei", "8Ei", "9223372036854775807Ki", huge] {
            assert_eq!(nanos(input), BINARY_CAP_NANOS, "{input}");
            assert_eq!(nanos(&format!("-{input}")), -BINARY_CAP_NANOS, "-{input}");
        }
        assert_eq!(q("9Ei").value(), i64::MAX);
        assert!(nanos("7.99Ei") < BINARY_CAP_NANOS);
    }

    #[test]
    fn hostile_lengths_and_exponents_are_cheap_and_exact() {
        assert_eq!(nanos(&format!("0.{}1", "0".repeat(100_000))), 1);
        assert_eq!(nanos(&format!("{}1", "0".repeat(100_000))), G);
        assert_eq!(nanos(&format!("1{}e-30", "0".repeat(30))), G);
        assert_eq!(nanos("1e-3000000000"), 1);
        assert_eq!(nanos("-1e-9223372036854775808"), -1);
        assert_eq!(nanos("0e9223372036854775807"), 0);
        assert_eq!(nanos("1e0000000000000000000000000003"), 1_000 * G);
        assert_eq!(nanos("170141183460469231731687303715884105727n"), i128::MAX);
        assert_eq!(nanos("1e29"), G * G * G * G * 100);
    }

    #[test]
    fn out_of_range() {
        let too_big = "9".repeat(100_000);
        #[rustfmt::skip]
        let inputs = [
            "1e40", "-1e40", "2e29", "170141183460469231731687303715884105728n",
            "1e9223372036854775808", "1e-9223372036854775809", too_big.as_str(),
        ];
        for input in inputs {
            let result = Quantity::parse(input);
            assert!(
                matches!(result, Err(QuantityError::OutOfRange(_))),
                "{input}: {result:?}"
            );
        }
        let expect =
            "\"1e40\" is out of range: a quantity's magnitude must not exceed about 1.7e29";
        assert_eq!(message("1e40"), expect);
    }

    #[test]
    fn rejects_invalid_strings() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
        // The first eleven come from Kubernetes' TestQuantityParse.
        #[rustfmt::skip]
        let invalid = [
            "1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-", " 1",
            "1 ", "1.0.0", "1KI", "1 Gi", "Gi", "--1", "1e", "1e1.5", ".", "-.", "+", "-", "1K",
            "1ki", "1Kib", "1e+", "1ee3", "1E+-3", "1m5", "1Gi ", "\t1", "1,5", "0x10", "inf",
            "NaN", "1_000", "١", "1e٣", "+-1", "1 e3", "1.5.Gi", "e3", "m",
        ];
        for input in invalid {
            assert_eq!(
                Quantity::parse(input),
                Err(QuantityError::InvalidFormat(input.to_string())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_messages_are_single_readable_lines() {
        assert_eq!(message(""), "an empty string is not a valid quantity");
        let abc = message("abc");
        assert!(
            abc.starts_with("\"abc\" is not a valid quantity: must match '^[+-]?"),
            "{abc}"
        );
        // Control characters are escaped, so a message is always one line.
        assert_eq!(message("1\n2").lines().count(), 1);
        let long = message(&"x".repeat(1_000));
        let echoed = format!("\"{}…\"", "x".repeat(MAX_ECHO_CHARS));
        assert!(long.contains(&echoed) && long.len() < 300, "{long}");
    }

    #[test]
    fn comparisons() {
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1024Mi"), q("1Gi"));
        assert_eq!(q("0.1"), q("100m"));
        assert_eq!(q("1E"), q("1e18"));
        assert!(q("100m") > q("50m"));
        assert!(q("50m") < q("100m"));
        assert!(q("10000T") > q("100Gi"));
        assert!(q("1Ki") > q("1k"));
        assert!(q("-1") < q("0") && q("0") == q("-0"));
        let mut sorted = ["1Gi", "-2", "500m", "1", "1n", "0"].map(q);
        sorted.sort();
        assert_eq!(sorted, ["-2", "0", "1n", "500m", "1", "1Gi"].map(q));
    }

    #[test]
    fn value_and_milli_value_round_up() {
        #[rustfmt::skip]
        let cases: &[(&str, i64, i64)] = &[
            ("0", 0, 0), ("1", 1, 1_000), ("1.5", 2, 1_500), ("100m", 1, 100), ("1n", 1, 1),
            ("1u", 1, 1), ("1m", 1, 1), ("1001u", 1, 2), ("9.01", 10, 9_010),
            ("1Gi", 1 << 30, (1 << 30) * 1000),
            // Ceil, not truncation, for negatives too.
            ("-1.5", -1, -1_500), ("-0.5", 0, -500), ("-9.01", -9, -9_010), ("-1n", 0, 0),
            ("9223372036854775807", i64::MAX, i64::MAX), ("1e19", i64::MAX, i64::MAX),
            ("-1e19", i64::MIN, i64::MIN), ("1e16", 10_000_000_000_000_000, i64::MAX),
            ("9223372036854775.807", 9_223_372_036_854_776, i64::MAX),
        ];
        for &(input, value, milli) in cases {
            assert_eq!(
                (q(input).value(), q(input).milli_value()),
                (value, milli),
                "{input}"
            );
        }
    }

    #[test]
    fn from_integer_and_predicates() {
        for v in [0, 1, -1, 42, i64::MAX, i64::MIN] {
            let x = Quantity::from_integer(v);
            assert_eq!(
                (x.nanos(), x.value(), x.is_zero()),
                (i128::from(v) * G, v, v == 0)
            );
            assert_eq!(x.is_positive(), v > 0);
        }
        assert!(q("1n").is_positive() && !q("-1n").is_positive() && !q("-1n").is_zero());
        assert!(q("-0").is_zero() && !q("0").is_positive());
        assert_eq!(
            "1Gi".parse::<Quantity>(),
            Ok(Quantity::from_integer(1 << 30))
        );
    }

    #[test]
    fn displays_canonical_decimal_form() {
        // From Kubernetes' TestQuantityString and TestQuantityParseEmit (DecimalSI).
        #[rustfmt::skip]
        let cases = [
            ("1G", "1G"), ("1000M", "1G"), ("0.001T", "1G"), ("1m", "1m"), ("1000u", "1m"),
            ("80m", "80m"), ("1.08", "1080m"), ("1080000000n", "1080m"), ("300M", "300M"),
            ("1T", "1T"), ("1E", "1E"), ("1000E", "1e21"), ("5000E", "5e21"), ("1000000E", "1e24"),
            ("1234567M", "1234567M"), ("3k", "3k"), ("1025", "1025"), ("0", "0"), ("00", "0"),
            ("-0", "0"), ("1e9", "1G"), (".001e12", "1G"), ("1e-3", "1m"), ("0.001e0", "1m"),
            ("1000e-12", "1n"), ("80e-3", "80m"), ("300e6", "300M"), ("1n", "1n"), ("80n", "80n"),
            ("1080n", "1080n"), ("1u", "1u"), ("80u", "80u"), ("1080u", "1080u"),
            (".001Ki", "1024m"), (".000001Ki", "1024u"), (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"), ("1.5", "1500m"), ("1Ki", "1024"), ("-9.01", "-9010m"),
            ("1.5Gi", "1610612736"), ("10e26", "1e27"), ("-1000E", "-1e21"),
        ];
        for (input, expect) in cases {
            assert_eq!(q(input).to_string(), expect, "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        #[rustfmt::skip]
        let inputs = [
            "0", "1n", "-1n", "999n", "1.000000001", "123456789.123456789", "1.5Gi", "-1.5Gi",
            "9Ei", "-9Ei", "12E", "1e28", "1.7e29", "-1.7e29",
            "170141183460469231731687303715884105727n",
            "-170141183460469231731687303715884105727n", "0.000000000001Ki", "7.123456M", "1e21",
            "100m", "1080m", "10e-3",
        ];
        for input in inputs {
            let original = q(input);
            assert_eq!(q(&original.to_string()), original, "{input} -> {original}");
        }
        for v in [i64::MIN, -1, 0, 1, 1000, i64::MAX] {
            let x = Quantity::from_integer(v);
            assert_eq!(Quantity::parse(&x.to_string()), Ok(x), "{v}");
        }
    }
}
