//! Elementwise primitives — unary, binary, compare, select, cast — and the leaves
//! (constants, iota, dim sizes, random numbers): shape rules, reference
//! implementations and VJPs.

use ndarray::{ArrayD, IxDyn, Zip};

use super::real::Real;
use super::{Func, Id, Op, Result, Type, err};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Log1p,
    Tanh,
    Sqrt,
    Rsqrt,
    Abs,
    Sign,
    Erf,
    Sigmoid,
    Floor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Unary {
    /// Every unary op, for readers of the textual form.
    pub const ALL: [Unary; 12] = [
        Unary::Neg,
        Unary::Exp,
        Unary::Log,
        Unary::Log1p,
        Unary::Tanh,
        Unary::Sqrt,
        Unary::Rsqrt,
        Unary::Abs,
        Unary::Sign,
        Unary::Erf,
        Unary::Sigmoid,
        Unary::Floor,
    ];
}

impl Binary {
    /// Every binary op, for readers of the textual form.
    pub const ALL: [Binary; 7] = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
        Binary::Min,
        Binary::Pow,
    ];
}

impl Cmp {
    /// Every comparison, for readers of the textual form.
    pub const ALL: [Cmp; 6] = [Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne];
}

pub fn shape(op: &Op, tys: &[&Type]) -> Result<Type> {
    match op {
        Op::Unary(_) => Ok(tys[0].clone()),
        Op::Cast(d) => Ok(Type::new(tys[0].shape.clone(), *d)),
        Op::Binary(_) | Op::Cmp(_) => {
            if tys.len() != 2 || tys[0].shape != tys[1].shape {
                return err(format!(
                    "{op:?} needs two operands of one shape, got {:?}",
                    tys.iter().map(|t| &t.shape).collect::<Vec<_>>()
                ));
            }
            Ok(Type::f32(tys[0].shape.clone()))
        }
        Op::Select => {
            if tys.len() != 3 || tys[0].shape != tys[1].shape || tys[1].shape != tys[2].shape {
                return err("select needs three operands of one shape");
            }
            Ok(tys[1].clone())
        }
        _ => err(format!("{op:?} is not elementwise")),
    }
}

pub fn unary<T: Real>(op: Unary, x: T) -> T {
    let one = T::one();
    match op {
        Unary::Neg => -x,
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Log1p => x.ln_1p(),
        Unary::Tanh => x.tanh(),
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => one / x.sqrt(),
        Unary::Abs => x.abs(),
        Unary::Sign => {
            if x > T::zero() {
                one
            } else if x < T::zero() {
                -one
            } else {
                T::zero()
            }
        }
        Unary::Erf => x.erf(),
        Unary::Sigmoid => {
            // Stable for large |x|.
            if x >= T::zero() {
                one / (one + (-x).exp())
            } else {
                let e = x.exp();
                e / (one + e)
            }
        }
        Unary::Floor => x.floor(),
    }
}

pub fn binary<T: Real>(op: Binary, a: T, b: T) -> T {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => {
            if a > b || a.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::Min => {
            if a < b || a.is_nan() {
                a
            } else {
                b
            }
        }
        Binary::Pow => a.powf(b),
    }
}

fn compare<T: Real>(op: Cmp, a: T, b: T) -> T {
    let r = match op {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
    };
    if r { T::one() } else { T::zero() }
}

/// A counter-based uniform generator (SplitMix64 of key, salt and element index): the
/// same key gives the same numbers on any backend and thread count.
pub fn rng_uniform(key: u64, salt: u64, index: u64) -> f64 {
    let mut z = key
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add(index.wrapping_mul(0x94D0_49BB_1331_11EB));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 24 random bits: exactly representable in f32, so f32 and f64 runs agree.
    (z >> 40) as f64 / (1u64 << 24) as f64
}

pub fn eval<T: Real>(
    op: &Op,
    shape: &[usize],
    args: &[&ArrayD<T>],
    dim_value: impl Fn() -> Result<i64>,
) -> Result<ArrayD<T>> {
    Ok(match op {
        Op::Const(c) => ArrayD::from_elem(IxDyn(&[]), T::from_f64(*c).unwrap_or_else(T::nan)),
        Op::DimSize(_) => {
            ArrayD::from_elem(IxDyn(&[]), T::from_i64(dim_value()?).unwrap_or_else(T::nan))
        }
        Op::Iota { axis } => ArrayD::from_shape_fn(IxDyn(shape), |ix| {
            T::from_usize(ix[*axis]).unwrap_or_else(T::nan)
        }),
        Op::Rng { salt } => {
            let key = args[0]
                .iter()
                .next()
                .copied()
                .unwrap_or_else(T::zero)
                .to_f64()
                .unwrap_or(0.0) as u64;
            let mut i = 0u64;
            ArrayD::from_shape_fn(IxDyn(shape), |_| {
                let v = rng_uniform(key, *salt, i);
                i += 1;
                T::from_f64(v).unwrap_or_else(T::zero)
            })
        }
        Op::Unary(u) => args[0].mapv(|x| unary(*u, x)),
        Op::Binary(b) => {
            let mut out = args[0].clone();
            Zip::from(&mut out)
                .and(args[1])
                .for_each(|o, &y| *o = binary(*b, *o, y));
            out
        }
        Op::Cmp(c) => {
            let mut out = args[0].clone();
            Zip::from(&mut out)
                .and(args[1])
                .for_each(|o, &y| *o = compare(*c, *o, y));
            out
        }
        Op::Select => {
            let mut out = args[1].clone();
            Zip::from(&mut out)
                .and(args[0])
                .and(args[2])
                .for_each(|o, &c, &b| {
                    if c == T::zero() {
                        *o = b
                    }
                });
            out
        }
        // Integers are stored exactly in floats by the interpreter; a cast to an
        // integer type truncates toward zero.
        Op::Cast(d) => {
            if d.is_int() {
                args[0].mapv(|x| x.trunc())
            } else {
                args[0].clone()
            }
        }
        _ => return err(format!("{op:?} is not elementwise")),
    })
}

/// Reverse-mode rule: the cotangent of each argument given the node's cotangent `g`.
pub fn vjp(f: &mut Func, node: Id, g: Id) -> Result<Vec<Option<Id>>> {
    let n = f.nodes[node].clone();
    let a = n.args.clone();
    Ok(match &n.op {
        Op::Unary(u) => {
            let x = a[0];
            let d = match u {
                Unary::Neg => f.unary(Unary::Neg, g)?,
                Unary::Exp => f.mul(g, node)?,
                Unary::Log => f.div(g, x)?,
                Unary::Log1p => {
                    let den = f.add_c(x, 1.0)?;
                    f.div(g, den)?
                }
                Unary::Tanh => {
                    let y2 = f.mul(node, node)?;
                    let one_minus = f.rsub_c(1.0, y2)?;
                    f.mul(g, one_minus)?
                }
                Unary::Sqrt => {
                    let two_y = f.mul_c(node, 2.0)?;
                    f.div(g, two_y)?
                }
                Unary::Rsqrt => {
                    let y2 = f.mul(node, node)?;
                    let y3 = f.mul(y2, node)?;
                    let t = f.mul(g, y3)?;
                    f.mul_c(t, -0.5)?
                }
                Unary::Abs => {
                    let s = f.unary(Unary::Sign, x)?;
                    f.mul(g, s)?
                }
                Unary::Sign | Unary::Floor => return Ok(vec![None]),
                Unary::Erf => {
                    let x2 = f.mul(x, x)?;
                    let nx2 = f.unary(Unary::Neg, x2)?;
                    let e = f.unary(Unary::Exp, nx2)?;
                    let s = f.mul_c(e, 2.0 / std::f64::consts::PI.sqrt())?;
                    f.mul(g, s)?
                }
                Unary::Sigmoid => {
                    let one_minus = f.rsub_c(1.0, node)?;
                    let d = f.mul(node, one_minus)?;
                    f.mul(g, d)?
                }
            };
            vec![Some(d)]
        }
        Op::Binary(b) => {
            let (x, y) = (a[0], a[1]);
            match b {
                Binary::Add => vec![Some(g), Some(g)],
                Binary::Sub => vec![Some(g), Some(f.unary(Unary::Neg, g)?)],
                Binary::Mul => vec![Some(f.mul(g, y)?), Some(f.mul(g, x)?)],
                Binary::Div => {
                    let dx = f.div(g, y)?;
                    let q = f.div(node, y)?;
                    let t = f.mul(g, q)?;
                    vec![Some(dx), Some(f.unary(Unary::Neg, t)?)]
                }
                Binary::Max | Binary::Min => {
                    // The gradient goes to the operand that was chosen (`x` on ties
                    // goes to `y`, so relu = max(x, 0) has gradient 0 at 0, as TF).
                    let c = if *b == Binary::Max { Cmp::Gt } else { Cmp::Lt };
                    let m = f.cmp(c, x, y)?;
                    let zero = f.scalar(0.0);
                    let dx = f.select(m, g, zero)?;
                    let dy = f.select(m, zero, g)?;
                    vec![Some(dx), Some(dy)]
                }
                Binary::Pow => {
                    // d/dx x^y = y x^(y-1); d/dy x^y = ln(x) x^y.
                    let ym1 = f.add_c(y, -1.0)?;
                    let p = f.pow(x, ym1)?;
                    let t = f.mul(y, p)?;
                    let dx = f.mul(g, t)?;
                    let lx = f.unary(Unary::Log, x)?;
                    let t2 = f.mul(lx, node)?;
                    vec![Some(dx), Some(f.mul(g, t2)?)]
                }
            }
        }
        Op::Cmp(_) => vec![None, None],
        Op::Select => {
            let zero = f.scalar(0.0);
            let da = f.select(a[0], g, zero)?;
            let db = f.select(a[0], zero, g)?;
            vec![None, Some(da), Some(db)]
        }
        Op::Cast(d) => {
            if d.is_int() || f.ty(a[0]).dtype.is_int() {
                vec![None]
            } else {
                vec![Some(g)]
            }
        }
        Op::Rng { .. } => vec![None],
        _ => return err(format!("{:?} has no elementwise vjp", n.op)),
    })
}
