//! [`Dataset`]: a file's arrays matched to a model, and the ways training slices it.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::check::{Have, Want, check_arrays, check_values, dims, example_symbol, wants};
use super::npy::{Dtype, Kind, Loaded};
use super::store::Store;
use super::{Content, DataError, read};
use crate::check::Graph;

/// A batch's arrays: the inputs, then the targets.
pub type Batch = (Vec<ArrayD<f32>>, Vec<ArrayD<f32>>);

/// Takes a chunk of a target's values and its number of examples.
type RowsFn<'a> = dyn FnMut(&[f32], usize) -> Result<(), DataError> + 'a;

/// Files at least this large are read in place by [`Dataset::open`] (unless
/// [`LoadOptions::map_from`] says otherwise).
pub const MAP_FROM_BYTES: u64 = 64 << 20;

/// Options for matching a file to a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// For `.csv` files: the column holding the target (else the spec's
    /// `data.target_column`, else a column named after the target).
    pub target_column: Option<String>,
    /// Whether targets are needed (training and evaluation) or not (prediction).
    pub targets: bool,
    /// [`Dataset::open`] reads a single file of at least this many bytes in place
    /// (memory-mapped), and a smaller one whole [default: [`MAP_FROM_BYTES`]]; a set
    /// of shards is always read in place.
    pub map_from: Option<u64>,
}

/// Inputs and targets, checked against a model, as f32 arrays in the model's order:
/// in memory ([`Dataset::load`], [`Dataset::from_arrays`]: the public fields hold
/// them), or read in place from files a batch at a time ([`Dataset::open`] on a large
/// file or a set of shards: the public fields are then empty, and the methods
/// ([`Dataset::gather`], [`Dataset::input`], …) read the files).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where the data came from, for messages (`data/digits.npz`).
    pub source: String,
    /// Model inputs, in declaration order (empty when read in place).
    pub inputs: Vec<(String, ArrayD<f32>)>,
    /// Targets, in declaration order (empty when loaded without targets, or read in
    /// place).
    pub targets: Vec<(String, ArrayD<f32>)>,
    /// Each example's weight `[examples]` (the spec's `sample_weight` array, or its
    /// `class_weight` applied by [`Dataset::set_class_weights`]); when read in place,
    /// only class weights (the file's sample weights are read with the batches).
    pub sample_weight: Option<ArrayD<f32>>,
    len: usize,
    /// The files read in place, and the first of their examples this dataset holds.
    store: Option<(Arc<Store>, usize)>,
}

impl Dataset {
    /// Reads a data file and checks it against the model.
    pub fn load(path: &Path, graph: &Graph, opts: &LoadOptions) -> Result<Dataset, DataError> {
        let content = read(path)?;
        Dataset::from_content(Some(path), content, graph, opts)
    }

    /// Opens data for training or evaluation, read in place where it is large: a set
    /// of shards (a folder of `.npz`/`.npy` files, or a pattern such as
    /// `shards/*.npz`: their examples one file after another, in name order) or a
    /// single `.npy`/`.npz` file of at least [`LoadOptions::map_from`] bytes is
    /// memory-mapped and checked a chunk at a time, and its batches are read from the
    /// files as they are needed; any other file is [`Dataset::load`]ed. The arrays,
    /// checks, order of examples and values are those of [`Dataset::load`].
    pub fn open(path: &Path, graph: &Graph, opts: &LoadOptions) -> Result<Dataset, DataError> {
        let set = super::shards::is_set(path);
        if !set {
            let big = std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.len() >= opts.map_from.unwrap_or(MAP_FROM_BYTES));
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !big || !["npz", "npy"].contains(&ext.to_ascii_lowercase().as_str()) {
                return Dataset::load(path, graph, opts);
            }
        }
        let files = super::shards::resolve(path)?;
        let limit = super::files::map_limit().map_err(|e| DataError {
            file: Some(path.into()),
            ..e
        })?;
        let store = super::shards::open_store(&files, graph, opts, limit)?;
        Ok(Dataset {
            source: path.display().to_string(),
            inputs: Vec::new(),
            targets: Vec::new(),
            sample_weight: None,
            len: store.len(),
            store: Some((Arc::new(store), 0)),
        })
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
                    return Err(single_array_error(file, &ws));
                }
                let name = ws[0].name.clone();
                Dataset::from_named(file, vec![(name, a)], graph, opts, true)
            }
            Content::Table(t) => Dataset::from_table(file, t, graph, opts),
        }
    }

    pub(super) fn from_named(
        file: Option<&Path>,
        named: Vec<(String, Loaded)>,
        graph: &Graph,
        opts: &LoadOptions,
        from_file: bool,
    ) -> Result<Dataset, DataError> {
        let ws = wants(graph, opts.targets);
        let shapes: Vec<(&str, &[usize])> = named
            .iter()
            .map(|(n, l)| (n.as_str(), l.data.shape()))
            .collect();
        let order = find_wanted(file, &shapes, &ws)?;
        let haves: Vec<Have> = order
            .iter()
            .map(|&k| {
                let (n, l) = &named[k];
                Have {
                    name: n,
                    data: l.data.view(),
                    dtype: from_file.then_some(l.dtype),
                    inexact: l.inexact,
                }
            })
            .collect();
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
        let mut sample_weight = None;
        for w in &ws {
            let a = take(&w.name).as_standard_layout().into_owned();
            if w.role == "input" {
                inputs.push((w.name.clone(), a));
            } else if w.role == super::check::SAMPLE_WEIGHT {
                sample_weight = Some(a);
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
        check_values(file, graph, &ws, &all, 0)?;
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
            sample_weight,
            len,
            store: None,
        })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the examples are read from files a batch at a time ([`Dataset::open`]).
    pub fn is_read_in_place(&self) -> bool {
        self.store.is_some()
    }

    /// The number of targets it holds.
    pub fn target_count(&self) -> usize {
        match &self.store {
            Some((s, _)) => s.targets,
            None => self.targets.len(),
        }
    }

    /// Whether it holds targets (training and evaluation need them).
    pub fn has_targets(&self) -> bool {
        self.target_count() > 0
    }

    /// Each input's name and shape (examples first).
    pub fn input_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match &self.store {
            Some((s, _)) => (0..s.inputs)
                .map(|c| (s.names[c].clone(), s.shape(c, self.len)))
                .collect(),
            None => self
                .inputs
                .iter()
                .map(|(n, a)| (n.clone(), a.shape().to_vec()))
                .collect(),
        }
    }

    /// The input `name` whole (read from the files when read in place), or `None`
    /// when it holds no such input.
    pub fn input(&self, name: &str) -> Result<Option<Cow<'_, ArrayD<f32>>>, DataError> {
        let Some((s, at)) = &self.store else {
            let found = self.inputs.iter().find(|(n, _)| n == name);
            return Ok(found.map(|(_, a)| Cow::Borrowed(a)));
        };
        let Some(c) = (0..s.inputs).find(|&c| s.names[c] == name) else {
            return Ok(None);
        };
        let mut values = Vec::new();
        s.walk(c, *at..at + self.len, &mut |_, chunk, _| {
            values.extend(chunk.iter());
            Ok(())
        })?;
        ArrayD::from_shape_vec(IxDyn(&s.shape(c, self.len)), values)
            .map(|a| Some(Cow::Owned(a)))
            .map_err(|e| DataError::new(None, format!("the input `{name}` does not fit: {e}")))
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
            sample_weight: self.sample_weight.as_ref().map(|w| {
                w.slice_axis(ndarray::Axis(0), (start..end).into())
                    .to_owned()
            }),
            len: end - start,
            store: self.store.as_ref().map(|(s, at)| (s.clone(), at + start)),
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
                format!(
                    "validation_split must be below 1, but is {}",
                    crate::diag::short_number(fraction)
                ),
            ));
        }
        let n = self.len;
        let at = (n as f64 * (1.0 - fraction)).floor() as usize;
        if at == 0 || at == n {
            return Err(DataError::new(
                None,
                format!(
                    "{} has {n} example{}, too few to hold out a validation split of {}: the {} part would be empty",
                    self.source,
                    if n == 1 { "" } else { "s" },
                    crate::diag::short_number(fraction),
                    if at == 0 { "training" } else { "validation" }
                ),
            )
            .help("use more data, or a different `validation_split`"));
        }
        Ok((self.slice(0, at), Some(self.slice(at, n))))
    }

    /// The examples at `idx`, in that order: (inputs, targets). Read from the files
    /// when read in place (an error if a file changed meanwhile).
    pub fn gather(&self, idx: &[usize]) -> Result<Batch, DataError> {
        if let Some((s, at)) = &self.store {
            let idx = self.store_indices(idx, *at)?;
            let col = |c: usize| s.gather(c, &idx);
            let xs = (0..s.inputs).map(col).collect::<Result<_, _>>()?;
            let ys = (s.inputs..s.inputs + s.targets)
                .map(col)
                .collect::<Result<_, _>>()?;
            return Ok((xs, ys));
        }
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
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len) {
            return Err(out_of_range(bad, self.len));
        }
        Ok((
            self.inputs.iter().map(|(_, a)| take(a)).collect(),
            self.targets.iter().map(|(_, a)| take(a)).collect(),
        ))
    }

    /// Indices of this dataset as indices of its store.
    fn store_indices(&self, idx: &[usize], at: usize) -> Result<Vec<usize>, DataError> {
        idx.iter()
            .map(|&i| {
                if i < self.len {
                    Ok(at + i)
                } else {
                    Err(out_of_range(i, self.len))
                }
            })
            .collect()
    }

    /// The sample weights of the examples at `idx`, in that order.
    pub fn gather_weights(&self, idx: &[usize]) -> Result<Option<ArrayD<f32>>, DataError> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len) {
            return Err(out_of_range(bad, self.len));
        }
        if let Some(w) = &self.sample_weight {
            return Ok(Some(w.select(ndarray::Axis(0), idx)));
        }
        match &self.store {
            Some((s, at)) if s.weight => {
                let idx = self.store_indices(idx, *at)?;
                s.gather(s.inputs + s.targets, &idx).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Walks the first target in chunks: `f(values, examples)` (in memory: once).
    fn walk_first_target(&self, f: &mut RowsFn) -> Result<(), DataError> {
        match &self.store {
            Some((s, at)) if s.targets > 0 => {
                s.walk(s.inputs, *at..at + self.len, &mut |_, chunk, _| {
                    let n = chunk.shape().first().copied().unwrap_or(0);
                    f(chunk.as_slice().unwrap_or(&[]), n)
                })
            }
            Some(_) => Ok(()),
            None => match self.targets.first() {
                Some((_, y)) => {
                    let flat: Vec<f32> = y.iter().copied().collect();
                    f(&flat, y.shape().first().copied().unwrap_or(0))
                }
                None => Ok(()),
            },
        }
    }

    /// Keras's `class_weight`: each example's weight is its class's (1 for a class
    /// not listed), the class read from the first target as Keras's
    /// `class_weight_to_sample_weights` reads it: the index of the largest value when
    /// the target has a last axis of more than one (one-hot), else the value
    /// rounded.
    pub fn set_class_weights(&mut self, weights: &[(i64, f64)]) -> Result<(), DataError> {
        let shape = match &self.store {
            Some((s, _)) if s.targets > 0 => s.shape(s.inputs, self.len),
            Some(_) => return Ok(()),
            None => match self.targets.first() {
                Some((_, y)) => y.shape().to_vec(),
                None => return Ok(()),
            },
        };
        let one_hot = shape.len() > 1 && shape.last() != Some(&1);
        // Keras's `class_weight.get(class, 1.0)`: the first weight given for a class.
        let mut by_class = std::collections::HashMap::new();
        for (c, w) in weights {
            by_class.entry(*c).or_insert(*w as f32);
        }
        let mut w: Vec<f32> = Vec::with_capacity(self.len);
        self.walk_first_target(&mut |flat, n| {
            let row = flat.len().checked_div(n).unwrap_or(0);
            w.extend((0..n).map(|i| {
                let r = &flat[i * row..(i + 1) * row];
                let class = if one_hot {
                    // np.argmax: the first largest.
                    let mut best = 0;
                    for (k, v) in r.iter().enumerate() {
                        if *v > r[best] {
                            best = k;
                        }
                    }
                    best as i64
                } else {
                    r.first().map_or(0, |v| v.round_ties_even() as i64)
                };
                by_class.get(&class).copied().unwrap_or(1.0)
            }));
            Ok(())
        })?;
        let n = w.len();
        self.sample_weight = Some(
            ArrayD::from_shape_vec(IxDyn(&[n]), w).unwrap_or_else(|_| ArrayD::ones(IxDyn(&[n]))),
        );
        Ok(())
    }

    /// A fingerprint of the contents (for checking that a resumed run sees the same
    /// data): the same for the same values whether in memory or read in place.
    pub fn fingerprint(&self) -> Result<u64, DataError> {
        let mut h = 0u64;
        match &self.store {
            None => {
                for (n, a) in self.inputs.iter().chain(&self.targets) {
                    h = hash_array(h, n, a.shape(), &mut |f| {
                        in_chunks(a, f);
                        Ok(())
                    })?;
                }
            }
            Some((s, at)) => {
                let stored =
                    s.inputs + s.targets + usize::from(s.weight && self.sample_weight.is_none());
                for c in 0..stored {
                    let name = if c < s.inputs + s.targets {
                        s.names[c].as_str()
                    } else {
                        "sample_weight"
                    };
                    h = hash_array(h, name, &s.shape(c, self.len), &mut |f| {
                        s.walk(c, *at..at + self.len, &mut |_, chunk, _| {
                            f(chunk.as_slice().unwrap_or(&[]));
                            Ok(())
                        })
                    })?;
                }
            }
        }
        if let Some(w) = &self.sample_weight {
            h = hash_array(h, "sample_weight", w.shape(), &mut |f| {
                in_chunks(w, f);
                Ok(())
            })?;
        }
        Ok(h)
    }
}

/// Hands an array's values, a slice at a time, to the function it is given.
type Feed<'a> = dyn FnMut(&mut dyn FnMut(&[f32])) -> Result<(), DataError> + 'a;

/// One array's link of the fingerprint's chain: `hash64` of its name, shape and the
/// bits of its values (`feed`), under the previous link `h`.
fn hash_array(h: u64, name: &str, shape: &[usize], feed: &mut Feed) -> Result<u64, DataError> {
    let count: usize = shape.iter().product();
    let total = name.len() + 8 * shape.len() + 4 * count;
    let mut s = crate::rng::Hash64Stream::new(h ^ 0x6461_7461, total as u64);
    s.update(name.as_bytes());
    for d in shape {
        s.update(&(*d as u64).to_le_bytes());
    }
    let mut bytes = Vec::new();
    feed(&mut |vs: &[f32]| {
        bytes.clear();
        bytes.extend(vs.iter().flat_map(|v| v.to_bits().to_le_bytes()));
        s.update(&bytes);
    })?;
    Ok(s.finish())
}

/// An array's values in order, a slice at a time.
fn in_chunks(a: &ArrayD<f32>, f: &mut dyn FnMut(&[f32])) {
    match a.as_slice() {
        Some(s) => s.chunks(1 << 16).for_each(f),
        None => a.iter().for_each(|v| f(std::slice::from_ref(v))),
    }
}

fn out_of_range(i: usize, n: usize) -> DataError {
    DataError::new(
        None,
        format!("example {i} is beyond the data's {n} examples"),
    )
}

/// The index in `named` of each array `ws` wants, or every missing one's error (with
/// the arrays there are, and a did-you-mean among the unused names).
pub(super) fn find_wanted(
    file: Option<&Path>,
    named: &[(&str, &[usize])],
    ws: &[Want],
) -> Result<Vec<usize>, DataError> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for w in ws {
        if let Some(k) = named.iter().position(|(n, _)| *n == w.name) {
            found.push(k);
            continue;
        }
        let have: Vec<String> = named
            .iter()
            .map(|(n, s)| format!("`{n}` {}", dims(s)))
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
            .map(|(n, _)| *n)
            .filter(|n| !ws.iter().any(|w| w.name == *n));
        if let Some(s) = crate::diag::did_you_mean(&w.name, unused) {
            e = e.help(format!(
                "name the arrays after the spec's inputs and targets: is `{s}` the {} `{}`?",
                w.role, w.name
            ));
        } else {
            e = e.help("name the arrays after the spec's inputs and targets, e.g. `np.savez('data.npz', image=x, label=y)`");
        }
        missing.push(e);
    }
    DataError::all(missing)?;
    Ok(found)
}

/// A `.npy` file (one array) for a model that needs several.
pub(super) fn single_array_error(file: Option<&Path>, ws: &[Want]) -> DataError {
    let names: Vec<String> = ws
        .iter()
        .map(|w| format!("`{}` ({})", w.name, w.role))
        .collect();
    DataError::new(
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
    ))
}
