//! [`Dataset`]: a file's arrays matched to a model, and the ways training slices it.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use super::check::{Have, check_arrays, check_values, dims, example_symbol, wants};
use super::npy::{Dtype, Kind, Loaded};
use super::{Content, DataError, read};
use crate::check::Graph;

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

    pub(super) fn from_named(
        file: Option<&Path>,
        named: Vec<(String, Loaded)>,
        graph: &Graph,
        opts: &LoadOptions,
        from_file: bool,
    ) -> Result<Dataset, DataError> {
        let ws = wants(graph, opts.targets);
        let mut haves = Vec::new();
        let mut missing = Vec::new();
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
                    missing.push(e);
                }
            }
        }
        DataError::all(missing)?;
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
