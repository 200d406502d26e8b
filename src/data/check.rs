//! Matching arrays to a model: dtypes, ranks, constant sizes, one size per symbol across
//! all arrays, finite values, labels and indices within range.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD};

use super::DataError;
use super::npy::{Dtype, Kind};
use crate::check::{Graph, Source};
use crate::diag::short_number;
use crate::dim::Dim;
use crate::layers::TensorType;
use crate::spec::DType;

/// One tensor a model expects from data: an input or a target.
#[derive(Clone, Debug)]
pub(super) struct Want {
    pub(super) name: String,
    pub(super) ty: TensorType,
    pub(super) role: &'static str,
}

/// One array offered for it.
pub(super) struct Have<'a> {
    pub(super) name: &'a str,
    pub(super) data: ArrayViewD<'a, f32>,
    /// What the file held (`None`: an f32 array handed in by a program).
    pub(super) dtype: Option<Dtype>,
    pub(super) inexact: bool,
}

pub(super) fn dims(s: &[usize]) -> String {
    let p: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", p.join(", "))
}

pub(super) fn wants(graph: &Graph, targets: bool) -> Vec<Want> {
    let mut w: Vec<Want> = graph
        .inputs
        .iter()
        .map(|i| Want {
            name: i.name.clone(),
            ty: i.ty.clone(),
            role: "input",
        })
        .collect();
    if targets && let Some(t) = &graph.train {
        w.extend(t.targets.iter().map(|t| Want {
            name: t.name.clone(),
            ty: t.ty.clone(),
            role: "target",
        }));
        // The sample weights: one per example, along the targets' example axis.
        if let (Some((name, _)), Some(first)) = (&t.decl.sample_weight, t.targets.first()) {
            w.push(Want {
                name: name.clone(),
                ty: crate::types::TensorType::f32(first.ty.shape[..1].to_vec()),
                role: SAMPLE_WEIGHT,
            });
        }
    }
    w
}

/// The role of the sample-weight array among the arrays a model wants.
pub(super) const SAMPLE_WEIGHT: &str = "sample weight";

/// The symbol of the example axis: the leading dim shared by every input and target.
pub(super) fn example_symbol(file: Option<&Path>, wants: &[Want]) -> Result<String, DataError> {
    let mut sym: Option<(&str, &str)> = None;
    for w in wants {
        let first = w.ty.shape.first().and_then(Dim::as_sym);
        match (first, sym) {
            (None, _) => {
                return Err(DataError::new(
                    file,
                    format!(
                        "the {} `{}` is declared {}: kiln batches data along the first axis, which must be a symbol such as `batch`",
                        w.role,
                        w.name,
                        w.ty.describe()
                    ),
                )
                .help("declare the first axis as `batch`, e.g. `[batch, …]`"));
            }
            (Some(s), None) => sym = Some((s, &w.name)),
            (Some(s), Some((t, other))) if s != t => {
                return Err(DataError::new(
                    file,
                    format!(
                        "`{}` starts with `{s}` but `{other}` with `{t}`: every input and target needs the same example axis",
                        w.name
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(sym.map(|(s, _)| s.to_string()).unwrap_or_default())
}

/// The bindings of symbols to sizes, and which array bound each (for messages).
#[derive(Default)]
struct Env {
    size: HashMap<String, i64>,
    bound_by: HashMap<String, String>,
}

/// Checks arrays against what the model declares: dtype, rank, constant sizes, and
/// one size per symbol across all arrays. Returns the symbol bindings.
pub(super) fn check_arrays(
    file: Option<&Path>,
    wants: &[Want],
    haves: &[Have],
    example_sym: Option<&str>,
) -> Result<HashMap<String, i64>, DataError> {
    let mut env = Env::default();
    // Every array's problems in one report; an array's first problem hides its others.
    let mut errors = Vec::new();
    for (w, h) in wants.iter().zip(haves) {
        let checked = check_dtype(file, w, h)
            .and_then(|()| check_rank(file, w, h))
            .and_then(|()| bind_dims(file, w, h, &mut env, example_sym));
        errors.extend(checked.err());
    }
    DataError::all(errors)?;
    check_compound(file, wants, haves, &env.size)?;
    check_integers(file, wants, haves)?;
    Ok(env.size)
}

/// The array's dtype (as its file held it) against the tensor's.
fn check_dtype(file: Option<&Path>, w: &Want, h: &Have) -> Result<(), DataError> {
    let err = |m: String| DataError::new(file, m).array(h.name);
    let int_wanted = w.ty.dtype.is_int();
    match h.dtype {
        Some(d) if !int_wanted && d.kind != Kind::Float => {
            return Err(err(format!(
                "the {} `{}` is f32, but the array `{}` holds {}",
                w.role,
                w.name,
                h.name,
                d.name()
            ))
            .help(format!("save it as floats: `{}.astype('float32')`", h.name)));
        }
        Some(d) if int_wanted && d.kind != Kind::Int => {
            return Err(err(format!(
                "the {} `{}` is {} (integers), but the array `{}` holds {}",
                w.role,
                w.name,
                w.ty.dtype.name(),
                h.name,
                d.name()
            ))
            .help(format!(
                "save it as integers: `{}.astype('{}')`",
                h.name,
                if w.ty.dtype == DType::I64 {
                    "int64"
                } else {
                    "int32"
                }
            )));
        }
        _ => {}
    }
    if int_wanted && h.inexact {
        return Err(err(format!(
            "the array `{}` holds integers beyond ±16,777,216, which kiln cannot use exactly",
            h.name
        )));
    }
    Ok(())
}

/// The array's rank against the tensor's, with a reshape hint when only the layout
/// differs.
fn check_rank(file: Option<&Path>, w: &Want, h: &Have) -> Result<(), DataError> {
    let err = |m: String| DataError::new(file, m).array(h.name);
    let shape = h.data.shape();
    if shape.len() != w.ty.rank() {
        let mut e = err(format!(
            "the array `{}` has shape {}, but the {} `{}` is {} (rank {})",
            h.name,
            dims(shape),
            w.role,
            w.name,
            w.ty.describe(),
            w.ty.rank()
        ));
        let tail: Option<Vec<i64>> = w.ty.shape[1..].iter().map(Dim::as_const).collect();
        if let (Some(tail), Some(&n)) = (tail, shape.first()) {
            let per: i64 = tail.iter().product();
            let have: usize = shape[1..].iter().product();
            if per as usize == have && !tail.is_empty() {
                let t: Vec<String> = tail.iter().map(|d| d.to_string()).collect();
                e = e.help(format!(
                    "each example has the right number of values: reshape it, `{}.reshape({n}, {})`",
                    h.name,
                    t.join(", ")
                ));
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Binds the tensor's plain symbols to the array's sizes (one symbol, one size across
/// all arrays) and checks its constant sizes.
fn bind_dims(
    file: Option<&Path>,
    w: &Want,
    h: &Have,
    env: &mut Env,
    example_sym: Option<&str>,
) -> Result<(), DataError> {
    let err = |m: String| DataError::new(file, m).array(h.name);
    let shape = h.data.shape();
    let expected = w.ty.describe();
    for (axis, (d, &n)) in w.ty.shape.iter().zip(shape).enumerate() {
        let n = n as i64;
        if let Some(s) = d.as_sym() {
            match env.size.get(s) {
                Some(&v) if v != n => {
                    let other = env.bound_by.get(s).cloned().unwrap_or_default();
                    let m = if Some(s) == example_sym {
                        format!(
                            "the array `{}` has {n} examples but `{other}` has {v}: every array needs one entry per example",
                            h.name
                        )
                    } else {
                        format!(
                            "`{s}` is {v} in `{other}` but {n} in `{}` (axis {axis} of {}): one symbol is one size in every array",
                            h.name,
                            dims(shape)
                        )
                    };
                    return Err(err(m));
                }
                Some(_) => {}
                None => {
                    env.size.insert(s.to_string(), n);
                    env.bound_by.insert(s.to_string(), h.name.to_string());
                }
            }
        } else if let Some(c) = d.as_const()
            && c != n
        {
            return Err(err(format!(
                "the array `{}` has shape {}, but the {} `{}` is {}: axis {axis} should be {c}",
                h.name,
                dims(shape),
                w.role,
                w.name,
                expected
            )));
        }
    }
    Ok(())
}

/// Compound sizes (`s + t`), once every symbol is bound.
fn check_compound(
    file: Option<&Path>,
    wants: &[Want],
    haves: &[Have],
    env: &HashMap<String, i64>,
) -> Result<(), DataError> {
    for (w, h) in wants.iter().zip(haves) {
        for (axis, (d, &n)) in w.ty.shape.iter().zip(h.data.shape()).enumerate() {
            if d.as_sym().is_some() || d.is_const() {
                continue;
            }
            match d.eval(env) {
                Some(v) if v == n as i64 => {}
                Some(v) => {
                    return Err(DataError::new(
                        file,
                        format!(
                            "the array `{}` has shape {}, but the {} `{}` is {}: axis {axis} should be {d} = {v}",
                            h.name,
                            dims(h.data.shape()),
                            w.role,
                            w.name,
                            w.ty.describe()
                        ),
                    )
                    .array(h.name));
                }
                None => {
                    return Err(DataError::new(
                        file,
                        format!("the size {d} of `{}` cannot be worked out", w.name),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Integer tensors handed in as f32 must hold integers.
fn check_integers(file: Option<&Path>, wants: &[Want], haves: &[Have]) -> Result<(), DataError> {
    for (w, h) in wants.iter().zip(haves) {
        // An array from a file holds integers by its dtype (`check_dtype`).
        if w.ty.dtype.is_int()
            && h.dtype.is_none()
            && let Some((i, v)) = h
                .data
                .iter()
                .enumerate()
                .find(|(_, v)| v.fract() != 0.0 || !v.is_finite())
        {
            return Err(DataError::new(
                file,
                format!(
                    "the {} `{}` is {} but the array `{}` holds {} at flat index {i}",
                    w.role,
                    w.name,
                    w.ty.dtype.name(),
                    h.name,
                    short_number(*v)
                ),
            )
            .array(h.name));
        }
    }
    Ok(())
}

/// The position of flat index `i` in `shape`, as `[a, b, c]`.
fn unravel(mut i: usize, shape: &[usize]) -> String {
    let mut ix = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            ix[k] = i % d;
            i /= d;
        }
    }
    dims(&ix)
}

/// The position of flat index `i` of a chunk of `shape` that starts at example `first`
/// of its file, as the file's `[example, …]`.
fn position(shape: &[usize], first: usize, i: usize) -> String {
    let row: usize = shape.iter().skip(1).product();
    let mut whole = shape.to_vec();
    if let Some(n) = whole.first_mut() {
        *n += first;
    }
    unravel(i + first * row, &whole)
}

/// Finite values; labels within a sparse cross-entropy's classes; indices within an
/// embedding's table. The arrays start at example `first` of their file (a chunk of
/// it: positions in messages are the file's).
pub(super) fn check_values(
    file: Option<&Path>,
    graph: &Graph,
    wants: &[Want],
    arrays: &[(String, &ArrayD<f32>)],
    first: usize,
) -> Result<(), DataError> {
    let mut errors = Vec::new();
    for (w, (name, a)) in wants.iter().zip(arrays) {
        let row = a.len() / a.shape().first().copied().unwrap_or(1).max(1);
        let at = |i: usize| position(a.shape(), first, i);
        let bad: Vec<usize> = a
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_finite())
            .map(|(i, _)| i)
            .take(1)
            .collect();
        if let Some(&bad_at) = bad.first() {
            let nan = a.iter().filter(|v| v.is_nan()).count();
            let inf = a.iter().filter(|v| v.is_infinite()).count();
            let what = match (nan, inf) {
                (0, i) => format!("{i} infinite value{}", if i == 1 { "" } else { "s" }),
                (n, 0) => format!("{n} NaN value{}", if n == 1 { "" } else { "s" }),
                (n, i) => format!("{n} NaN and {i} infinite values"),
            };
            errors.push(
                DataError::new(
                    file,
                    format!(
                        "the array `{name}` holds {what}; the first is at {} (example {})",
                        at(bad_at),
                        first + bad_at / row.max(1)
                    ),
                )
                .array(name)
                .help("remove or fill the missing values before training"),
            );
            continue;
        }
        // labels of a sparse categorical cross-entropy
        if w.role == "target"
            && let Some(train) = &graph.train
            && let Some(t) = train.targets.iter().find(|t| t.name == w.name)
            && t.loss.kind.targets == crate::catalog::losses::Targets::SparseLabels
        {
            let out = graph.outputs[t.output];
            if let Some(classes) = graph.type_of(out).shape.last().and_then(Dim::as_const)
                && let Some((i, v)) = a
                    .iter()
                    .enumerate()
                    .find(|(_, v)| **v < 0.0 || **v >= classes as f32)
            {
                errors.push(DataError::new(
                    file,
                    format!(
                        "the label {} at example {} of `{name}` is out of range: `{}` has {classes} classes, so labels are 0 to {}",
                        short_number(*v),
                        i + first * row,
                        graph.name_of(out),
                        classes - 1
                    ),
                )
                .array(name)
                .help(format!(
                    "labels of a sparse categorical cross-entropy are class indices; check the data, or give `{}` more units",
                    graph.name_of(out)
                )));
            }
        }
        if w.role == "input" {
            errors.extend(check_indices(file, graph, name, a.view(), first).err());
        }
    }
    DataError::all(errors)
}

/// Indices within the table of every embedding the input `name` feeds: checked before
/// running, so that the message names the file, the input and the layer.
fn check_indices(
    file: Option<&Path>,
    graph: &Graph,
    name: &str,
    a: ArrayViewD<f32>,
    first: usize,
) -> Result<(), DataError> {
    let Some(k) = graph.inputs.iter().position(|i| i.name == name) else {
        return Ok(());
    };
    for l in &graph.layers {
        let Some(size_arg) = l.kind.facts.looks_up else {
            continue;
        };
        if !l.inputs.contains(&Source::Input(k)) {
            continue;
        }
        let n = l.args.int(size_arg);
        if let Some((i, v)) = a
            .iter()
            .enumerate()
            .find(|(_, v)| !(**v >= 0.0 && **v < n as f32))
        {
            return Err(DataError::new(
                file,
                format!(
                    "the index {} at {} of the input `{name}` is out of range for the embedding `{}`, whose {size_arg} is {n} (indices 0 to {})",
                    short_number(*v),
                    position(a.shape(), first, i),
                    l.name,
                    n - 1
                ),
            )
            .array(name)
            .help(format!(
                "indices must be below `{}`'s input_dim: check the data's vocabulary, or raise input_dim to cover it",
                l.name
            )));
        }
    }
    Ok(())
}

/// Checks arrays handed to the forward pass (`predict`) against the model's inputs:
/// every input present and no other, dtypes, shapes and symbols, indices within each
/// embedding's table. `dtypes` gives what each array held in its file, when it came
/// from one.
pub fn check_predict_inputs(
    graph: &Graph,
    arrays: &[(&str, ArrayViewD<f32>, Option<Dtype>)],
    file_of: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(), DataError> {
    let ws = wants(graph, false);
    for (n, a, _) in arrays {
        if !ws.iter().any(|w| w.name == *n) {
            let names: Vec<String> = ws
                .iter()
                .map(|w| format!("`{}` {}", w.name, w.ty.describe()))
                .collect();
            let mut e = DataError::new(
                file_of(n).as_deref(),
                format!(
                    "`{n}` (shape {}) is not an input of the model; its inputs are {}",
                    dims(a.shape()),
                    names.join(", ")
                ),
            )
            .array(n);
            if let Some(s) = crate::diag::did_you_mean(n, ws.iter().map(|w| w.name.as_str())) {
                e = e.help(format!("did you mean `{s}`?"));
            }
            return Err(e);
        }
        if arrays.iter().filter(|(m, _, _)| m == n).count() > 1 {
            return Err(DataError::new(None, format!("the input `{n}` is given twice")).array(n));
        }
    }
    let mut haves = Vec::new();
    for w in &ws {
        match arrays.iter().find(|(n, _, _)| *n == w.name) {
            Some((n, a, d)) => haves.push(Have {
                name: n,
                data: a.view(),
                dtype: *d,
                inexact: false,
            }),
            None => {
                return Err(DataError::new(
                    None,
                    format!(
                        "the model's input `{}` {} is missing",
                        w.name,
                        w.ty.describe()
                    ),
                )
                .array(&w.name)
                .help(format!("give an array named `{}`", w.name))
                .remedy(crate::types::Remedy::GiveInput(w.name.clone())));
            }
        }
    }
    // Report against the file each array came from.
    for (w, h) in ws.iter().zip(&haves) {
        let file = file_of(h.name);
        check_arrays(
            file.as_deref(),
            std::slice::from_ref(w),
            std::slice::from_ref(h),
            None,
        )?;
    }
    let file = haves.first().and_then(|h| file_of(h.name));
    check_arrays(file.as_deref(), &ws, &haves, None)?;
    // Indices into an embedding, before running: against the file each came from.
    for h in &haves {
        check_indices(file_of(h.name).as_deref(), graph, h.name, h.data.view(), 0)?;
    }
    Ok(())
}
