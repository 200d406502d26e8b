//! Data for training, evaluation and prediction (DESIGN §4): `.npz` archives whose
//! arrays are named after the model's inputs and targets, a `.npy` file for a single
//! input, and `.csv` files with a header (the feature columns go to the single input,
//! the target column to the single target).
//!
//! Everything is checked against the spec before any step runs: dtypes, shapes with
//! their symbolic dims (one symbol is one size in every array), finite values, integer
//! labels within the classes of a sparse cross-entropy, indices within an embedding's
//! table. Errors name the file, the array, and what was expected against what was
//! found. A [`Dataset`] holds the arrays as f32 (integer tensors as exact f32 values,
//! the runtime's convention) in the model's order; [`Dataset::split`] takes Keras's
//! validation split (the last fraction, before shuffling), and [`Batches`] walks a
//! seeded permutation in batches, the last one partial.

pub mod csv;
pub mod npy;
pub mod npz;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::check::{Graph, Source};
use crate::dim::{Dim, fmt_shape};
use crate::layers::TensorType;
use crate::spec::DType;
pub use npy::{Dtype, Kind, Loaded};

/// Why data could not be read or used.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    /// The file concerned (`None` for arrays handed in by a program).
    pub file: Option<PathBuf>,
    /// The array concerned, when there is one.
    pub array: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
    /// How to fix it, when kiln can tell.
    pub help: Option<String>,
    /// Reading the file failed (exit code 2) rather than its contents being wrong (1).
    pub io: bool,
}

impl DataError {
    pub fn new(file: Option<&Path>, message: impl Into<String>) -> DataError {
        DataError {
            file: file.map(Path::to_path_buf),
            array: None,
            message: message.into(),
            help: None,
            io: false,
        }
    }
    fn array(mut self, name: &str) -> DataError {
        self.array = Some(name.to_string());
        self
    }
    fn help(mut self, h: impl Into<String>) -> DataError {
        self.help = Some(h.into());
        self
    }
    /// The process exit code (DESIGN §3): 2 for I/O, 1 for wrong data.
    pub fn exit_code(&self) -> i32 {
        if self.io { 2 } else { 1 }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.file {
            write!(f, "{}: ", p.display())?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

/// The largest data file kiln reads, and the most any one `.npz` member may expand to.
pub const MAX_FILE_BYTES: u64 = 16 << 30;

/// The contents of a data file, before they are matched to a model.
#[derive(Clone, Debug)]
pub enum Content {
    /// `.npz`: named arrays.
    Named(Vec<(String, Loaded)>),
    /// `.npy`: one unnamed array.
    Single(Loaded),
    /// `.csv`: named columns.
    Table(csv::Table),
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |e: std::io::Error| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot read the file: {e}"))
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(DataError::new(
            Some(path),
            "this is a directory, not a data file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DataError::new(
            Some(path),
            format!(
                "the file is {} bytes; kiln reads at most {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(io)
}

/// Reads a data file by its extension: `.npz`, `.npy` or `.csv`.
pub fn read(path: &Path) -> Result<Content, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bad = |m: String| DataError::new(Some(path), m);
    match ext.as_str() {
        "npz" => {
            let bytes = read_bytes(path)?;
            npz::parse(&bytes, MAX_FILE_BYTES)
                .map(Content::Named)
                .map_err(bad)
        }
        "npy" => {
            let bytes = read_bytes(path)?;
            npy::parse(&bytes).map(Content::Single).map_err(bad)
        }
        "csv" => {
            let bytes = read_bytes(path)?;
            let text =
                String::from_utf8(bytes).map_err(|_| bad("the file is not UTF-8 text".into()))?;
            csv::parse(&text).map(Content::Table).map_err(bad)
        }
        _ => Err(bad(format!(
            "kiln reads data from .npz, .npy and .csv files, not `.{ext}`"
        ))
        .help("save arrays with numpy: `np.savez('data.npz', image=x, label=y)`")),
    }
}

/// Reads one array from a `.npy` file (or the single array of a `.npz`).
pub fn read_array(path: &Path) -> Result<Loaded, DataError> {
    match read(path)? {
        Content::Single(a) => Ok(a),
        Content::Named(mut v) if v.len() == 1 => Ok(v.remove(0).1),
        _ => Err(DataError::new(
            Some(path),
            "expected a single array (a .npy file)",
        )),
    }
}

/// Writes f32 arrays atomically: one array as `.npy`, or named arrays as `.npz` (by the
/// path's extension). A failed write leaves any previous file untouched.
pub fn write(path: &Path, arrays: &[(String, ArrayD<f32>)]) -> Result<(), DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bytes = match (ext.as_str(), arrays) {
        ("npy", [(_, a)]) => npy::to_bytes(a),
        ("npy", _) => {
            let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
            return Err(DataError::new(
                Some(path),
                format!(
                    "the model has {} outputs ({}); a .npy file holds one array",
                    arrays.len(),
                    names.join(", ")
                ),
            )
            .help("write a .npz archive instead: one array per output, by name"));
        }
        ("npz", _) => npz::to_bytes(arrays).map_err(|e| DataError {
            io: true,
            ..DataError::new(Some(path), format!("cannot write: {e}"))
        })?,
        _ => {
            return Err(DataError::new(
                Some(path),
                format!("kiln writes .npy or .npz files, not `.{ext}`"),
            ));
        }
    };
    crate::weights::write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot write the file: {e}"))
    })
}

/// One tensor a model expects from data: an input or a target.
#[derive(Clone, Debug)]
struct Want {
    name: String,
    ty: TensorType,
    role: &'static str,
}

/// One array offered for it.
struct Have<'a> {
    name: &'a str,
    data: ArrayViewD<'a, f32>,
    /// What the file held (`None`: an f32 array handed in by a program).
    dtype: Option<Dtype>,
    inexact: bool,
}

fn dims(s: &[usize]) -> String {
    let p: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", p.join(", "))
}

fn wants(graph: &Graph, targets: bool) -> Vec<Want> {
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
    }
    w
}

/// The symbol of the example axis: the leading dim shared by every input and target.
fn example_symbol(file: Option<&Path>, wants: &[Want]) -> Result<String, DataError> {
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

/// Checks arrays against what the model declares: dtype, rank, constant sizes, and
/// one size per symbol across all arrays. Returns the symbol bindings.
fn check_arrays(
    file: Option<&Path>,
    wants: &[Want],
    haves: &[Have],
    example_sym: Option<&str>,
) -> Result<HashMap<String, i64>, DataError> {
    let mut env: HashMap<String, i64> = HashMap::new();
    let mut bound_by: HashMap<String, String> = HashMap::new();
    for (w, h) in wants.iter().zip(haves) {
        let err = |m: String| DataError::new(file, m).array(h.name);
        // dtype
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
        // rank
        let shape = h.data.shape();
        let expected = w.ty.describe();
        if shape.len() != w.ty.rank() {
            let mut e = err(format!(
                "the array `{}` has shape {}, but the {} `{}` is {} (rank {})",
                h.name,
                dims(shape),
                w.role,
                w.name,
                expected,
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
        // plain symbols and constants
        for (axis, (d, &n)) in w.ty.shape.iter().zip(shape).enumerate() {
            let n = n as i64;
            if let Some(s) = d.as_sym() {
                match env.get(s) {
                    Some(&v) if v != n => {
                        let other = bound_by.get(s).cloned().unwrap_or_default();
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
                        env.insert(s.to_string(), n);
                        bound_by.insert(s.to_string(), h.name.to_string());
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
    }
    // compound dims (`s + t`), once every symbol is bound
    for (w, h) in wants.iter().zip(haves) {
        for (axis, (d, &n)) in w.ty.shape.iter().zip(h.data.shape()).enumerate() {
            if d.as_sym().is_some() || d.is_const() {
                continue;
            }
            match d.eval(&env) {
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
    // integer tensors handed in as f32 must hold integers
    for (w, h) in wants.iter().zip(haves) {
        if w.ty.dtype.is_int()
            && let Some((i, v)) = h
                .data
                .iter()
                .enumerate()
                .find(|(_, v)| v.fract() != 0.0 || !v.is_finite())
        {
            return Err(DataError::new(
                file,
                format!(
                    "the {} `{}` is {} but the array `{}` holds {v} at flat index {i}",
                    w.role,
                    w.name,
                    w.ty.dtype.name(),
                    h.name
                ),
            )
            .array(h.name));
        }
    }
    Ok(env)
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

/// Finite values; labels within a sparse cross-entropy's classes; indices within an
/// embedding's table.
fn check_values(
    file: Option<&Path>,
    graph: &Graph,
    wants: &[Want],
    arrays: &[(String, &ArrayD<f32>)],
) -> Result<(), DataError> {
    for (w, (name, a)) in wants.iter().zip(arrays) {
        let bad: Vec<usize> = a
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_finite())
            .map(|(i, _)| i)
            .take(1)
            .collect();
        if let Some(&first) = bad.first() {
            let nan = a.iter().filter(|v| v.is_nan()).count();
            let inf = a.iter().filter(|v| v.is_infinite()).count();
            let what = match (nan, inf) {
                (0, i) => format!("{i} infinite value{}", if i == 1 { "" } else { "s" }),
                (n, 0) => format!("{n} NaN value{}", if n == 1 { "" } else { "s" }),
                (n, i) => format!("{n} NaN and {i} infinite values"),
            };
            return Err(DataError::new(
                file,
                format!(
                    "the array `{name}` holds {what}; the first is at {} (example {})",
                    unravel(first, a.shape()),
                    first / (a.len() / a.shape().first().copied().unwrap_or(1).max(1)).max(1)
                ),
            )
            .array(name)
            .help("remove or fill the missing values before training"));
        }
        // labels of a sparse categorical cross-entropy
        if w.role == "target"
            && let Some(train) = &graph.train
            && train
                .decl
                .loss
                .as_ref()
                .is_some_and(|l| l.kind.targets == crate::catalog::losses::Targets::SparseLabels)
            && let Some(t) = train.targets.iter().find(|t| t.name == w.name)
        {
            let out = graph.outputs[t.output];
            if let Some(classes) = graph.type_of(out).shape.last().and_then(Dim::as_const)
                && let Some((i, v)) = a
                    .iter()
                    .enumerate()
                    .find(|(_, v)| **v < 0.0 || **v >= classes as f32)
            {
                return Err(DataError::new(
                    file,
                    format!(
                        "the label {v} at example {i} of `{name}` is out of range: `{}` has {classes} classes, so labels are 0 to {}",
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
        // indices into an embedding
        if w.role == "input"
            && let Some(k) = graph.inputs.iter().position(|i| i.name == w.name)
        {
            for l in &graph.layers {
                if l.kind.name == "embedding" && l.inputs.contains(&Source::Input(k)) {
                    let n = l.args.int("input_dim");
                    if let Some((i, v)) = a
                        .iter()
                        .enumerate()
                        .find(|(_, v)| **v < 0.0 || **v >= n as f32)
                    {
                        return Err(DataError::new(
                            file,
                            format!(
                                "the index {v} at {} of `{name}` is out of range for `{}`, whose input_dim is {n} (indices 0 to {})",
                                unravel(i, a.shape()),
                                l.name,
                                n - 1
                            ),
                        )
                        .array(name));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Options for matching a file to a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// For `.csv` files: the column holding the target (else the spec's
    /// `data.target_column`, else a column named after the target).
    pub target_column: Option<String>,
    /// Whether targets are needed (training and evaluation) or not (prediction).
    pub targets: bool,
}

/// Inputs and targets, checked against a model, as f32 arrays in the model's order.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where the data came from, for messages (`data/digits.npz`).
    pub source: String,
    /// Model inputs, in declaration order.
    pub inputs: Vec<(String, ArrayD<f32>)>,
    /// Targets, in declaration order (empty when loaded without targets).
    pub targets: Vec<(String, ArrayD<f32>)>,
    len: usize,
}

impl Dataset {
    /// Reads a data file and checks it against the model.
    pub fn load(path: &Path, graph: &Graph, opts: &LoadOptions) -> Result<Dataset, DataError> {
        let content = read(path)?;
        Dataset::from_content(Some(path), content, graph, opts)
    }

    /// In-memory arrays (integer tensors as exact f32 values), named after the model's
    /// inputs and targets, checked as a file would be.
    pub fn from_arrays(
        graph: &Graph,
        arrays: Vec<(String, ArrayD<f32>)>,
    ) -> Result<Dataset, DataError> {
        let named = arrays
            .into_iter()
            .map(|(n, a)| {
                (
                    n,
                    Loaded {
                        data: a,
                        dtype: Dtype {
                            kind: Kind::Float,
                            size: 4,
                            signed: true,
                            big_endian: false,
                        },
                        inexact: false,
                    },
                )
            })
            .collect();
        let mut d = Dataset::from_named(
            None,
            named,
            graph,
            &LoadOptions {
                targets: graph.train.is_some(),
                ..LoadOptions::default()
            },
            false,
        )?;
        d.source = "the arrays given".into();
        Ok(d)
    }

    /// Matches a file's contents to the model.
    pub fn from_content(
        file: Option<&Path>,
        content: Content,
        graph: &Graph,
        opts: &LoadOptions,
    ) -> Result<Dataset, DataError> {
        match content {
            Content::Named(named) => Dataset::from_named(file, named, graph, opts, true),
            Content::Single(a) => {
                let ws = wants(graph, opts.targets);
                if ws.len() != 1 {
                    let names: Vec<String> = ws
                        .iter()
                        .map(|w| format!("`{}` ({})", w.name, w.role))
                        .collect();
                    return Err(DataError::new(
                        file,
                        format!(
                            "a .npy file holds one array, but this needs {}: {}",
                            ws.len(),
                            names.join(", ")
                        ),
                    )
                    .help(format!(
                        "save them together, named: `np.savez('data.npz', {})`",
                        ws.iter()
                            .map(|w| format!("{}=…", w.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let name = ws[0].name.clone();
                Dataset::from_named(file, vec![(name, a)], graph, opts, true)
            }
            Content::Table(t) => Dataset::from_table(file, t, graph, opts),
        }
    }

    fn from_named(
        file: Option<&Path>,
        named: Vec<(String, Loaded)>,
        graph: &Graph,
        opts: &LoadOptions,
        from_file: bool,
    ) -> Result<Dataset, DataError> {
        let ws = wants(graph, opts.targets);
        let mut haves = Vec::new();
        for w in &ws {
            match named.iter().find(|(n, _)| *n == w.name) {
                Some((n, l)) => haves.push(Have {
                    name: n,
                    data: l.data.view(),
                    dtype: from_file.then_some(l.dtype),
                    inexact: l.inexact,
                }),
                None => {
                    let have: Vec<String> = named
                        .iter()
                        .map(|(n, l)| format!("`{n}` {}", dims(l.data.shape())))
                        .collect();
                    let mut e = DataError::new(
                        file,
                        format!(
                            "there is no array `{}` for the model's {} `{}` {}; {}",
                            w.name,
                            w.role,
                            w.name,
                            w.ty.describe(),
                            if have.is_empty() {
                                "there are no arrays".to_string()
                            } else {
                                format!("the arrays are {}", have.join(", "))
                            }
                        ),
                    )
                    .array(&w.name);
                    let unused = named
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .filter(|n| !ws.iter().any(|w| w.name == *n));
                    if let Some(s) = crate::diag::did_you_mean(&w.name, unused) {
                        e = e.help(format!(
                            "name the arrays after the spec's inputs and targets: is `{s}` the {} `{}`?",
                            w.role, w.name
                        ));
                    } else {
                        e = e.help("name the arrays after the spec's inputs and targets, e.g. `np.savez('data.npz', image=x, label=y)`");
                    }
                    return Err(e);
                }
            }
        }
        let ex = example_symbol(file, &ws)?;
        check_arrays(file, &ws, &haves, Some(&ex))?;
        drop(haves);
        let mut named = named;
        let mut take = |n: &str| -> ArrayD<f32> {
            let i = named.iter().position(|(k, _)| k == n).unwrap_or(0);
            named.swap_remove(i).1.data
        };
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for w in &ws {
            let a = take(&w.name).as_standard_layout().into_owned();
            if w.role == "input" {
                inputs.push((w.name.clone(), a));
            } else {
                targets.push((w.name.clone(), a));
            }
        }
        let len = inputs
            .first()
            .or(targets.first())
            .map(|(_, a)| a.shape().first().copied().unwrap_or(0))
            .unwrap_or(0);
        let all: Vec<(String, &ArrayD<f32>)> = inputs
            .iter()
            .chain(&targets)
            .map(|(n, a)| (n.clone(), a))
            .collect();
        check_values(file, graph, &ws, &all)?;
        let source = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "data".into());
        if len == 0 {
            return Err(DataError::new(
                file,
                "the dataset is empty: it has 0 examples",
            ));
        }
        Ok(Dataset {
            source,
            inputs,
            targets,
            len,
        })
    }

    fn from_table(
        file: Option<&Path>,
        t: csv::Table,
        graph: &Graph,
        opts: &LoadOptions,
    ) -> Result<Dataset, DataError> {
        let ws = wants(graph, opts.targets);
        let n_in = graph.inputs.len();
        let tgt: Vec<&Want> = ws.iter().filter(|w| w.role == "target").collect();
        if n_in != 1 || tgt.len() > 1 {
            return Err(DataError::new(
                file,
                format!(
                    "a .csv file feeds a model with one input and one target; this one has {n_in} input{} and {} target{}",
                    if n_in == 1 { "" } else { "s" },
                    tgt.len(),
                    if tgt.len() == 1 { "" } else { "s" }
                ),
            )
            .help("use a .npz archive with one array per input and target"));
        }
        let mut target_col = None;
        if let Some(w) = tgt.first() {
            let wanted = opts
                .target_column
                .clone()
                .or_else(|| {
                    graph
                        .train
                        .as_ref()
                        .and_then(|t| t.decl.data.as_ref())
                        .and_then(|d| d.target_column.clone())
                })
                .unwrap_or_else(|| w.name.clone());
            match t.header.iter().position(|h| *h == wanted) {
                Some(k) => target_col = Some(k),
                None => {
                    let cols = t
                        .header
                        .iter()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(DataError::new(
                        file,
                        format!(
                            "no column `{wanted}` holds the target `{}`; the columns are {cols}",
                            w.name
                        ),
                    )
                    .help(match crate::diag::did_you_mean(&wanted, t.header.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`? name it with `data: {{target_column: {s}}}` in the spec, or `--target-column {s}`"),
                        None => "name the target column with `data: {target_column: NAME}` in the spec, or `--target-column NAME`".into(),
                    }));
                }
            }
        }
        let rows = t.lines.len();
        let features: Vec<usize> = (0..t.header.len())
            .filter(|&k| Some(k) != target_col)
            .collect();
        let input = &ws[0];
        let x = ArrayD::from_shape_fn(IxDyn(&[rows, features.len()]), |ix| {
            t.columns[features[ix[1]]][ix[0]] as f32
        });
        if input.ty.rank() != 2 || input.ty.shape[1].as_const() != Some(features.len() as i64) {
            let by = match target_col {
                Some(k) => format!(" (every column but the target `{}`)", t.header[k]),
                None => String::new(),
            };
            return Err(DataError::new(
                file,
                format!(
                    "the file has {} feature column{}{by}, but the input `{}` is {}",
                    features.len(),
                    if features.len() == 1 { "" } else { "s" },
                    input.name,
                    input.ty.describe()
                ),
            )
            .array(&input.name)
            .help(format!(
                "declare the input as `[batch, {}]`, or drop the extra columns",
                features.len()
            )));
        }
        let mut named = vec![(
            input.name.clone(),
            Loaded {
                data: x,
                dtype: Dtype {
                    kind: Kind::Float,
                    size: 8,
                    signed: true,
                    big_endian: false,
                },
                inexact: false,
            },
        )];
        if let (Some(k), Some(w)) = (target_col, tgt.first()) {
            let col = &t.columns[k];
            let shape: Vec<usize> = match w.ty.rank() {
                1 => vec![rows],
                2 if w.ty.shape[1].as_const() == Some(1) => vec![rows, 1],
                _ => {
                    return Err(DataError::new(
                        file,
                        format!(
                            "the target `{}` is {}; a .csv column fills a target of shape [batch] or [batch, 1]",
                            w.name,
                            w.ty.describe()
                        ),
                    ));
                }
            };
            if w.ty.dtype.is_int()
                && let Some(i) = col.iter().position(|v| v.fract() != 0.0)
            {
                return Err(DataError::new(
                    file,
                    format!(
                        "line {}, column `{}`: the target `{}` is {} but the value is {}",
                        t.lines[i],
                        t.header[k],
                        w.name,
                        w.ty.dtype.name(),
                        col[i]
                    ),
                ));
            }
            let y = ArrayD::from_shape_vec(IxDyn(&shape), col.iter().map(|&v| v as f32).collect())
                .map_err(|e| DataError::new(file, e.to_string()))?;
            named.push((
                w.name.clone(),
                Loaded {
                    data: y,
                    dtype: Dtype {
                        kind: if w.ty.dtype.is_int() {
                            Kind::Int
                        } else {
                            Kind::Float
                        },
                        size: 8,
                        signed: true,
                        big_endian: false,
                    },
                    inexact: col.iter().any(|v| v.abs() > (1 << 24) as f64),
                },
            ));
        }
        Dataset::from_named(file, named, graph, opts, true)
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Examples `start..end`, as a new dataset.
    pub fn slice(&self, start: usize, end: usize) -> Dataset {
        let cut = |v: &[(String, ArrayD<f32>)]| {
            v.iter()
                .map(|(n, a)| {
                    (
                        n.clone(),
                        a.slice_axis(ndarray::Axis(0), (start..end).into())
                            .to_owned(),
                    )
                })
                .collect()
        };
        Dataset {
            source: self.source.clone(),
            inputs: cut(&self.inputs),
            targets: cut(&self.targets),
            len: end - start,
        }
    }

    /// Keras's `validation_split`: the last `fraction` of the examples (taken before any
    /// shuffling) is held out. `split_at = floor(n * (1 - fraction))`; both parts must
    /// be non-empty.
    pub fn split(&self, fraction: f64) -> Result<(Dataset, Option<Dataset>), DataError> {
        if fraction <= 0.0 {
            return Ok((self.clone(), None));
        }
        if fraction >= 1.0 || fraction.is_nan() {
            return Err(DataError::new(
                None,
                format!("validation_split must be below 1, but is {fraction}"),
            ));
        }
        let n = self.len;
        let at = (n as f64 * (1.0 - fraction)).floor() as usize;
        if at == 0 || at == n {
            return Err(DataError::new(
                None,
                format!(
                    "{} has {n} example{}, too few to hold out a validation split of {fraction}: the {} part would be empty",
                    self.source,
                    if n == 1 { "" } else { "s" },
                    if at == 0 { "training" } else { "validation" }
                ),
            )
            .help("use more data, or a different `validation_split`"));
        }
        Ok((self.slice(0, at), Some(self.slice(at, n))))
    }

    /// The examples at `idx`, in that order: (inputs, targets).
    pub fn gather(&self, idx: &[usize]) -> (Vec<ArrayD<f32>>, Vec<ArrayD<f32>>) {
        let take = |a: &ArrayD<f32>| -> ArrayD<f32> {
            let mut shape = a.shape().to_vec();
            let row: usize = shape[1..].iter().product();
            shape[0] = idx.len();
            let src = a.as_slice().unwrap_or(&[]);
            let mut out = Vec::with_capacity(idx.len() * row);
            if src.len() == a.len() {
                for &i in idx {
                    out.extend_from_slice(&src[i * row..(i + 1) * row]);
                }
                ArrayD::from_shape_vec(IxDyn(&shape), out)
                    .unwrap_or_else(|_| a.select(ndarray::Axis(0), idx))
            } else {
                a.select(ndarray::Axis(0), idx)
            }
        };
        (
            self.inputs.iter().map(|(_, a)| take(a)).collect(),
            self.targets.iter().map(|(_, a)| take(a)).collect(),
        )
    }

    /// A fingerprint of the contents (for checking that a resumed run sees the same
    /// data).
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0u64;
        for (n, a) in self.inputs.iter().chain(&self.targets) {
            let mut bytes = n.as_bytes().to_vec();
            for d in a.shape() {
                bytes.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            for v in a.iter() {
                bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            h = crate::rng::hash64(h ^ 0x6461_7461, &bytes);
        }
        h
    }
}

/// Checks arrays handed to the forward pass (`predict`) against the model's inputs:
/// every input present and no other, dtypes, shapes and symbols. `dtypes` gives what
/// each array held in its file, when it came from one.
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
                .help(format!("give it with `--input {}=FILE.npy`", w.name)));
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
    check_arrays(file.as_deref(), &ws, &haves, None).map(|_| ())
}

/// A seeded permutation of `0..n` (Fisher–Yates on a Philox stream): the order of the
/// examples in one epoch. The same (seed, epoch) gives the same order on every machine.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let stream = crate::rng::hash64(0x6b69_6c6e_2f73_6875, &epoch.to_le_bytes());
    let mut rng = crate::weights::Rng::new(seed, stream);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Unbiased: rejection on the top of the range.
        let bound = (i + 1) as u64;
        let zone = u64::MAX - u64::MAX % bound;
        let j = loop {
            let r = rng.next_u64();
            if r < zone {
                break (r % bound) as usize;
            }
        };
        p.swap(i, j);
    }
    p
}

/// The number of batches of an epoch: ceil(n / batch_size).
pub fn num_batches(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size.max(1))
}

/// Indices of batch `b` in an epoch's order (the last batch may be partial).
pub fn batch_indices(order: &[usize], batch_size: usize, b: usize) -> &[usize] {
    let start = (b * batch_size).min(order.len());
    let end = ((b + 1) * batch_size).min(order.len());
    &order[start..end]
}

/// Shape text for messages: `[batch, 8, 8, 1]`.
pub fn describe(ty: &TensorType) -> String {
    fmt_shape(&ty.shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(100, 7, 0);
        let b = permutation(100, 7, 0);
        let c = permutation(100, 7, 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(num_batches(1437, 32), 45);
        assert_eq!(batch_indices(&a, 32, 3).len(), 4);
    }
}
