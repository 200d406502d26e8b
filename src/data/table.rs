//! A `.csv` table matched to a model: the feature columns fill its one input, the
//! target column its one target.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use super::check::{Want, wants};
use super::npy::{Dtype, Kind, Loaded};
use super::{DataError, Dataset, LoadOptions, csv};
use crate::check::Graph;

impl Dataset {
    pub(super) fn from_table(
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
        let target_col = match tgt.first() {
            Some(w) => Some(target_column(file, &t, graph, opts, w)?),
            // Inputs alone (predict): a table that still holds the target column
            // (the training CSV itself) gives every other column.
            None => present_target_column(&t, graph, opts),
        };
        let mut named = vec![features(file, &t, target_col, &ws[0])?];
        if let (Some(k), Some(w)) = (target_col, tgt.first()) {
            named.push(target(file, &t, k, w)?);
        }
        Dataset::from_named(file, named, graph, opts, true)
    }
}

/// The name of the target's column: the option's, else the spec's
/// `data.target_column`, else the target's own name (`target`, when given).
fn target_column_name(graph: &Graph, opts: &LoadOptions, target: Option<&str>) -> Option<String> {
    opts.target_column
        .clone()
        .or_else(|| {
            graph
                .train
                .as_ref()?
                .decl
                .data
                .as_ref()?
                .target_column
                .clone()
        })
        .or_else(|| target.map(str::to_string))
}

/// The target's column when the table has one, for reading inputs alone.
fn present_target_column(t: &csv::Table, graph: &Graph, opts: &LoadOptions) -> Option<usize> {
    let first = graph
        .train
        .as_ref()?
        .targets
        .first()
        .map(|t| t.name.as_str());
    let wanted = target_column_name(graph, opts, first)?;
    t.header.iter().position(|h| *h == wanted)
}

/// The column that holds the target: named by the option, else by the spec's
/// `data.target_column`, else after the target.
fn target_column(
    file: Option<&Path>,
    t: &csv::Table,
    graph: &Graph,
    opts: &LoadOptions,
    w: &Want,
) -> Result<usize, DataError> {
    let wanted = target_column_name(graph, opts, Some(&w.name)).unwrap_or_default();
    match t.header.iter().position(|h| *h == wanted) {
        Some(k) => Ok(k),
        None => {
            let cols = t
                .header
                .iter()
                .map(|h| format!("`{h}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let near = crate::diag::did_you_mean(&wanted, t.header.iter().map(String::as_str))
                .map(str::to_string);
            Err(DataError::new(
                file,
                format!(
                    "no column `{wanted}` holds the target `{}`; the columns are {cols}",
                    w.name
                ),
            )
            .help(match &near {
                Some(s) => format!(
                    "did you mean `{s}`? name it with `data: {{target_column: {s}}}` in the spec"
                ),
                None => {
                    "name the target column with `data: {target_column: NAME}` in the spec".into()
                }
            })
            .remedy(crate::types::Remedy::NameTargetColumn(near)))
        }
    }
}

/// Every column but the target, as the input `[rows, features]`.
fn features(
    file: Option<&Path>,
    t: &csv::Table,
    target_col: Option<usize>,
    input: &Want,
) -> Result<(String, Loaded), DataError> {
    let rows = t.lines.len();
    let features: Vec<usize> = (0..t.header.len())
        .filter(|&k| Some(k) != target_col)
        .collect();
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
    Ok((
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
    ))
}

/// Column `k` as the target `w`: shape `[rows]` or `[rows, 1]`, integers when `w` is.
fn target(
    file: Option<&Path>,
    t: &csv::Table,
    k: usize,
    w: &Want,
) -> Result<(String, Loaded), DataError> {
    let rows = t.lines.len();
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
    Ok((
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
    ))
}
