//! Parsers of numeric options. The options that take them also accept values that
//! start with `-` (`allow_hyphen_values`), so that `--epochs -1` gets "must be at least
//! 1" naming the option (clap adds `invalid value '-1' for '--epochs <EPOCHS>'`)
//! rather than "unexpected argument '-1'" — `-1e-3` and `-inf` included, which clap
//! does not take for negative numbers. Exit code 2 (usage), as every command-line
//! mistake.

/// What `s` holds: a whole number (possibly out of any range), another number (an
/// infinity included), or none (NaN included).
enum Parsed {
    Whole(i128),
    Fraction(f64),
    NotANumber,
}

fn parse(s: &str) -> Parsed {
    let s = s.trim();
    if let Ok(n) = s.parse::<i128>() {
        return Parsed::Whole(n);
    }
    match s.parse::<f64>() {
        // `1e3` is a whole number too (`as` saturates: `1e300` stays out of range).
        Ok(v) if v.is_finite() && v.fract() == 0.0 => Parsed::Whole(v as i128),
        Ok(v) if !v.is_nan() => Parsed::Fraction(v),
        _ => Parsed::NotANumber,
    }
}

/// A count that must be at least 1 (`--epochs`, `--batch-size`, `--runs`).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match parse(s) {
        Parsed::Whole(n) if n < 1 => Err("must be at least 1".into()),
        Parsed::Whole(n) => {
            usize::try_from(n).map_err(|_| format!("must be at most {}", usize::MAX))
        }
        Parsed::Fraction(v) if v < 1.0 => Err("must be at least 1".into()),
        Parsed::Fraction(_) => Err("must be a whole number, at least 1".into()),
        Parsed::NotANumber => Err("not a number: give a whole number, at least 1".into()),
    }
}

/// A symbolic size bound to a count, `NAME=N` with N at least 1 (`--dim seq=128`).
pub fn binding(s: &str) -> Result<(String, usize), String> {
    let Some((name, n)) = s.split_once('=') else {
        return Err("give NAME=SIZE, such as seq=128".into());
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("give NAME=SIZE, such as seq=128 (the name is empty)".into());
    }
    Ok((name.to_string(), at_least_one(n)?))
}

/// A seed: a whole number ≥ 0 that fits in 64 bits (`--seed`).
pub fn seed(s: &str) -> Result<u64, String> {
    match parse(s) {
        Parsed::Whole(n) if n < 0 => Err("must be ≥ 0 (a seed is a whole number)".into()),
        Parsed::Whole(n) => u64::try_from(n).map_err(|_| format!("must be at most {}", u64::MAX)),
        Parsed::Fraction(v) if v < 0.0 => Err("must be ≥ 0 (a seed is a whole number)".into()),
        Parsed::Fraction(_) => Err("must be a whole number ≥ 0".into()),
        Parsed::NotANumber => Err("not a number: give a whole number ≥ 0".into()),
    }
}

/// The fraction of the data held out for validation: ≥ 0 and below 1
/// (`--validation-split`).
pub fn fraction(s: &str) -> Result<f64, String> {
    let v = match parse(s) {
        Parsed::Whole(n) => n as f64,
        Parsed::Fraction(v) => v,
        Parsed::NotANumber => {
            return Err("not a number: give a fraction ≥ 0 and below 1, such as 0.2".into());
        }
    };
    if v < 0.0 {
        Err("must be ≥ 0 (a fraction of the data, below 1)".into())
    } else if v >= 1.0 {
        Err("must be below 1 (a fraction of the data, such as 0.2)".into())
    } else {
        Ok(v)
    }
}

/// A number of bytes (`--memory-limit`): `1000000`, `512K`, `64MiB`, `16G`.
pub fn bytes(s: &str) -> Result<u64, String> {
    kiln::weights::safetensors::parse_bytes(s)
        .ok_or_else(|| "not a number of bytes: give e.g. `8G`, `512MiB` or `1000000`".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_seeds_and_fractions() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert_eq!(at_least_one("1e3"), Ok(1000));
        assert_eq!(at_least_one("-3").unwrap_err(), "must be at least 1");
        assert_eq!(at_least_one("0").unwrap_err(), "must be at least 1");
        assert!(at_least_one("2.5").unwrap_err().contains("whole number"));
        assert!(at_least_one("ten").unwrap_err().contains("not a number"));
        assert!(at_least_one("1e25").unwrap_err().contains("at most"));
        assert!(at_least_one("1e300").unwrap_err().contains("at most"));
        assert_eq!(seed("0"), Ok(0));
        assert_eq!(seed("18446744073709551615"), Ok(u64::MAX));
        assert!(
            seed("18446744073709551616")
                .unwrap_err()
                .contains("at most")
        );
        assert!(seed("-1").unwrap_err().starts_with("must be ≥ 0"));
        assert_eq!(fraction("0.2"), Ok(0.2));
        assert_eq!(fraction("0"), Ok(0.0));
        assert_eq!(fraction("1e-300"), Ok(1e-300));
        assert!(fraction("-0.5").unwrap_err().starts_with("must be ≥ 0"));
        assert!(fraction("1").unwrap_err().starts_with("must be below 1"));
        assert!(fraction("nan").unwrap_err().contains("not a number"));
        assert!(fraction("nan").unwrap_err().contains("not a number"));
        assert!(fraction("-inf").unwrap_err().starts_with("must be ≥ 0"));
        assert!(fraction("inf").unwrap_err().starts_with("must be below 1"));
        assert!(fraction("-1e-3").unwrap_err().starts_with("must be ≥ 0"));
        assert_eq!(at_least_one("-inf").unwrap_err(), "must be at least 1");
        assert!(seed("-0.5").unwrap_err().starts_with("must be ≥ 0"));
    }
}
