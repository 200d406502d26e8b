//! Symbolic dimensions.
//!
//! A dimension is an integer polynomial over named symbols (`batch`, `seq`, …) whose
//! atoms may also be floor divisions by a constant, which is what strided windows
//! produce. The representation is canonical — a sorted map from monomials to non-zero
//! coefficients — so two dims are equal exactly when their normal forms are: `s + t`
//! equals `t + s`, `batch * 64` equals `64 * batch`, and two different symbols are
//! never assumed equal. All arithmetic is checked; overflow is an error, not a wrap.
//! Formulas are also bounded in size ([`MAX_ATOMS`]), so no spec can make them grow
//! without limit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// An indivisible factor of a monomial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    Sym(String),
    /// `floor(dim / divisor)` that could not be simplified.
    FloorDiv(Box<Dim>, i64),
}

/// A symbolic dimension in normal form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    /// Monomial (sorted atoms, repeated for powers; empty for the constant) → coefficient.
    terms: BTreeMap<Vec<Atom>, i64>,
}

/// Arithmetic on dims overflowed i64, or a formula grew past [`MAX_ATOMS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// Most terms and atoms (nested floor divisions counted in full) one dim may hold. Real
/// shapes need a handful; without a bound, a spec of a few hundred bytes could build
/// formulas that take hours and gigabytes: a product of long sums (broadcasting
/// `[b, s0 + … + s99, 1]` against its transpose, then `flatten`) or a thousand strided
/// layers nesting floor divisions on a symbolic length.
pub const MAX_ATOMS: usize = 256;

impl Dim {
    pub fn konst(c: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        Dim { terms }
    }
    pub fn sym(name: &str) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![Atom::Sym(name.to_string())], 1);
        Dim { terms }
    }
    /// The value, if the dim does not depend on any symbol.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }
    /// The symbol's name, if the dim is exactly one symbol.
    pub fn as_sym(&self) -> Option<&str> {
        if self.terms.len() != 1 {
            return None;
        }
        let (m, c) = self.terms.iter().next()?;
        match (m.as_slice(), c) {
            ([Atom::Sym(s)], 1) => Some(s),
            _ => None,
        }
    }

    /// The number of terms and atoms, nested ones included (see [`MAX_ATOMS`]).
    fn size(&self) -> usize {
        let atom = |a: &Atom| match a {
            Atom::Sym(_) => 1,
            Atom::FloorDiv(inner, _) => 1 + inner.size(),
        };
        self.terms
            .keys()
            .map(|m| 1 + m.iter().map(atom).sum::<usize>())
            .sum()
    }
    fn bounded(self) -> Result<Dim, Overflow> {
        if self.size() > MAX_ATOMS {
            Err(Overflow)
        } else {
            Ok(self)
        }
    }

    pub fn add(&self, other: &Dim) -> Result<Dim, Overflow> {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let e = terms.entry(m.clone()).or_insert(0);
            *e = e.checked_add(*c).ok_or(Overflow)?;
            if *e == 0 {
                terms.remove(m);
            }
        }
        Dim { terms }.bounded()
    }
    pub fn add_const(&self, c: i64) -> Result<Dim, Overflow> {
        self.add(&Dim::konst(c))
    }
    pub fn neg(&self) -> Result<Dim, Overflow> {
        self.scale(-1)
    }
    pub fn sub(&self, other: &Dim) -> Result<Dim, Overflow> {
        self.add(&other.neg()?)
    }
    pub fn scale(&self, k: i64) -> Result<Dim, Overflow> {
        if k == 0 {
            return Ok(Dim::default());
        }
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            terms.insert(m.clone(), c.checked_mul(k).ok_or(Overflow)?);
        }
        Ok(Dim { terms })
    }
    pub fn mul(&self, other: &Dim) -> Result<Dim, Overflow> {
        // Accumulate in one map (adding term by term would copy it for every pair).
        let mut terms: BTreeMap<Vec<Atom>, i64> = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m = ma.clone();
                m.extend(mb.iter().cloned());
                m.sort();
                let c = ca.checked_mul(*cb).ok_or(Overflow)?;
                let e = terms.entry(m).or_insert(0);
                *e = e.checked_add(c).ok_or(Overflow)?;
                if terms.len() > MAX_ATOMS {
                    return Err(Overflow);
                }
            }
        }
        terms.retain(|_, c| *c != 0);
        Dim { terms }.bounded()
    }
    /// `floor(self / d)` for a positive constant `d`, simplified where exact.
    pub fn floor_div(&self, d: i64) -> Result<Dim, Overflow> {
        assert!(d > 0, "floor_div by a non-positive constant");
        if d == 1 {
            return Ok(self.clone());
        }
        if let Some(c) = self.as_const() {
            return Ok(Dim::konst(c.div_euclid(d)));
        }
        // floor((d*Q + k) / d) = Q + floor(k / d) when every non-constant coefficient
        // is divisible by d.
        let constant = self.terms.get(&Vec::new()).copied().unwrap_or(0);
        if self.terms.iter().all(|(m, c)| m.is_empty() || c % d == 0) {
            let mut q = BTreeMap::new();
            for (m, c) in &self.terms {
                if !m.is_empty() {
                    q.insert(m.clone(), c / d);
                }
            }
            return Dim { terms: q }.add_const(constant.div_euclid(d));
        }
        let mut terms = BTreeMap::new();
        terms.insert(vec![Atom::FloorDiv(Box::new(self.clone()), d)], 1);
        Dim { terms }.bounded()
    }
    /// `ceil(self / d)` for a positive constant `d`.
    pub fn ceil_div(&self, d: i64) -> Result<Dim, Overflow> {
        self.add_const(d - 1)?.floor_div(d)
    }
    /// `self / d` when it divides exactly (every coefficient divisible by `d`).
    pub fn exact_div(&self, d: i64) -> Option<Dim> {
        if d <= 0 || self.terms.values().any(|c| c % d != 0) {
            return None;
        }
        Some(Dim {
            terms: self.terms.iter().map(|(m, c)| (m.clone(), c / d)).collect(),
        })
    }

    /// The monomials: each a product of atoms (empty for the constant term) and its
    /// coefficient, in a fixed order.
    pub fn terms(&self) -> impl Iterator<Item = (&[Atom], i64)> {
        self.terms.iter().map(|(m, c)| (m.as_slice(), *c))
    }

    /// The symbols this dim mentions.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(d) = stack.pop() {
            for m in d.terms.keys() {
                for a in m {
                    match a {
                        Atom::Sym(s) => {
                            if !out.contains(s) {
                                out.push(s.clone())
                            }
                        }
                        Atom::FloorDiv(inner, _) => stack.push(inner),
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The value under a binding of every symbol, or `None` if one is unbound or the
    /// arithmetic overflows.
    pub fn eval(&self, env: &HashMap<String, i64>) -> Option<i64> {
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut v = *c;
            for a in m {
                let x = match a {
                    Atom::Sym(s) => *env.get(s)?,
                    Atom::FloorDiv(inner, d) => inner.eval(env)?.div_euclid(*d),
                };
                v = v.checked_mul(x)?;
            }
            total = total.checked_add(v)?;
        }
        Some(total)
    }
}

/// The product of several dims (the element count of a shape).
pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Result<Dim, Overflow> {
    let mut p = Dim::konst(1);
    for d in dims {
        p = p.mul(d)?;
    }
    Ok(p)
}

impl From<i64> for Dim {
    fn from(c: i64) -> Dim {
        Dim::konst(c)
    }
}

fn fmt_monomial(m: &[Atom], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, a) in m.iter().enumerate() {
        if i > 0 {
            f.write_str("*")?;
        }
        match a {
            Atom::Sym(s) => f.write_str(s)?,
            Atom::FloorDiv(inner, d) => {
                if inner.terms.len() > 1 {
                    write!(f, "({inner}) // {d}")?
                } else {
                    write!(f, "{inner} // {d}")?
                }
            }
        }
    }
    Ok(())
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first, the constant last: `s + t - 2`.
        let mut first = true;
        let ordered = self
            .terms
            .iter()
            .filter(|(m, _)| !m.is_empty())
            .chain(self.terms.iter().filter(|(m, _)| m.is_empty()));
        for (m, c) in ordered {
            let (neg, mag) = (*c < 0, c.unsigned_abs());
            if first {
                if neg {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(if neg { " - " } else { " + " })?;
            }
            first = false;
            if m.is_empty() {
                write!(f, "{mag}")?;
            } else {
                if mag != 1 {
                    write!(f, "{mag}*")?;
                }
                // `//` binds tighter than `+`, as in Python.
                fmt_monomial(m, f)?;
            }
        }
        Ok(())
    }
}

/// Formats a shape as `[batch, 8, 8, 1]`.
pub fn fmt_shape(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Dim {
        Dim::sym(n)
    }

    #[test]
    fn sums_and_products_are_canonical() {
        assert_eq!(s("s").add(&s("t")).unwrap(), s("t").add(&s("s")).unwrap());
        assert_eq!(
            s("b").scale(64).unwrap(),
            Dim::konst(64).mul(&s("b")).unwrap()
        );
        assert_eq!(s("s").add(&s("t")).unwrap().to_string(), "s + t");
        assert_ne!(s("s"), s("t"));
        let x = s("s").add(&s("t")).unwrap().sub(&s("t")).unwrap();
        assert_eq!(x, s("s"));
        assert_eq!(s("a").mul(&s("b")).unwrap().to_string(), "a*b");
        assert_eq!(s("b").scale(64).unwrap().to_string(), "64*b");
    }

    #[test]
    fn floor_division_simplifies_when_exact() {
        // (2s + 4) // 2 = s + 2
        let d = s("s").scale(2).unwrap().add_const(4).unwrap();
        assert_eq!(d.floor_div(2).unwrap(), s("s").add_const(2).unwrap());
        // (2s + 5) // 2 = s + 2
        let d = s("s").scale(2).unwrap().add_const(5).unwrap();
        assert_eq!(d.floor_div(2).unwrap(), s("s").add_const(2).unwrap());
        // (s - 3) // 2 stays symbolic, and evaluates exactly.
        let d = s("s").add_const(-3).unwrap().floor_div(2).unwrap();
        assert_eq!(d.to_string(), "(s - 3) // 2");
        let env: HashMap<String, i64> = [("s".to_string(), 10)].into();
        assert_eq!(d.eval(&env), Some(3));
        assert_eq!(d.add_const(1).unwrap().to_string(), "(s - 3) // 2 + 1");
        assert_eq!(Dim::konst(7).ceil_div(2).unwrap(), Dim::konst(4));
    }

    #[test]
    fn overflow_is_an_error() {
        let big = Dim::konst(i64::MAX / 2 + 1);
        assert!(big.add(&big).is_err());
        assert!(big.mul(&Dim::konst(3)).is_err());
    }

    #[test]
    fn formulas_are_bounded_in_size() {
        // A product of two sums of 100 symbols would have 5,050 terms.
        let mut sum = Dim::default();
        for i in 0..100 {
            sum = sum.add(&s(&format!("s{i}"))).unwrap();
        }
        assert!(sum.mul(&sum).is_err());
        // Nested floor divisions stop growing too: ceil(ceil(ceil(seq / 2) / 2) / 2)…
        let mut d = s("seq");
        let nested = (0..1000).map_while(|_| {
            d = d.ceil_div(2).ok()?;
            Some(())
        });
        assert!(nested.count() < 200);
        // Small ones are untouched.
        let x = s("a").add(&s("b")).unwrap();
        assert_eq!(x.mul(&x).unwrap().to_string(), "a*a + 2*a*b + b*b");
    }
}
