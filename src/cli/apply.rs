//! `kiln eval` and `kiln predict`: trained weights applied to data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln::data::{self, Dataset, LoadOptions};
use kiln::fit::checkpoint::check_finite;
use kiln::layers::group_digits;
use kiln::settings::Settings;
use ndarray::ArrayViewD;

use super::{
    BackendArg, CliError, MemoryArg, Need, Result, check_budget, compile, data_path, input_dims,
    needs_train, numbers,
};
use kiln::budget::Work;

/// `kiln eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    pub spec: PathBuf,
    /// Weights or a checkpoint (.safetensors).
    #[arg(long, value_name = "W")]
    pub weights: PathBuf,
    /// The data [default: the spec's `train.data`, its validation split].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// For .csv data: the column holding the target.
    #[arg(long)]
    pub target_column: Option<String>,
    #[arg(long, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub memory: MemoryArg,
}

/// `kiln predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    pub spec: PathBuf,
    /// Weights or a checkpoint (.safetensors).
    #[arg(long, value_name = "W")]
    pub weights: PathBuf,
    /// An input array: `NAME=FILE.npy`, or `FILE.npy` for a model with one input (or a
    /// .npz whose arrays are named after the inputs). Repeat for several inputs.
    #[arg(long, value_name = "[NAME=]FILE", required = true)]
    pub input: Vec<String>,
    /// Where to write the outputs: `.npy` (one output) or `.npz` (by output name).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// For .csv input: the column holding the target, left out of the features
    /// [default: the spec's `data.target_column`, else the target's name].
    #[arg(long)]
    pub target_column: Option<String>,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub memory: MemoryArg,
}

/// `kiln eval`.
pub fn eval(a: &EvalArgs) -> Result {
    let need = Need {
        work: Work::Infer,
        batch: a.batch_size,
        memory: &a.memory,
    };
    let mut net = compile(&a.spec, a.backend, None, need)?;
    needs_train(&net, &a.spec, "evaluated (it has no loss)")?;
    net.load_weights(&a.weights)?;
    check_finite(&a.weights, net.weights())?;
    // Without --data: the spec's `validation_data` file, else its data's validation
    // split, as training validated.
    let val_file = a
        .data
        .is_none()
        .then(|| net.spec_validation_data_path())
        .flatten();
    let path = match &val_file {
        Some(p) => p.clone(),
        None => data_path(&net, a.data.as_ref(), &a.spec)?,
    };
    let opts = LoadOptions {
        target_column: a.target_column.clone(),
        targets: true,
        ..LoadOptions::default()
    };
    let data = Dataset::open(&path, net.graph(), &opts)?;
    // The spec's own data: its validation split, as training held it out.
    let split = if a.data.is_none() && val_file.is_none() {
        Settings::resolve(net.graph(), &Default::default(), None)
            .map_err(CliError::Usage)?
            .validation_split()
    } else {
        0.0
    };
    let (what, data) = match data.split(split)? {
        (_, Some(v)) => (
            format!(
                "the validation split ({}) of {}",
                kiln::fit::callbacks::python_float(split),
                path.display()
            ),
            v,
        ),
        (all, None) => (path.display().to_string(), all),
    };
    // Again with the data's sizes bound (a symbolic axis the data makes long).
    let batch = a
        .batch_size
        .unwrap_or_else(|| kiln::settings::spec_batch_size(net.graph()))
        .min(data.len().max(1));
    check_budget(
        net.graph(),
        Work::Infer,
        batch,
        &input_dims(net.graph(), &data.input_shapes()),
        &a.memory,
    )?;
    let t0 = Instant::now();
    let logs = net.evaluate(&data, a.batch_size)?;
    println!(
        "evaluated {} on {} examples of {what} in {:.2}s",
        net.graph().name,
        group_digits(data.len() as i64),
        t0.elapsed().as_secs_f64()
    );
    for (k, v) in logs.sorted() {
        println!("{k}: {v:.4}");
    }
    Ok(())
}

/// One input file of `kiln predict`, as `NAME=FILE` or `FILE`.
fn input_arrays(
    graph: &kiln::Graph,
    spec: &str,
    target_column: Option<&str>,
    arrays: &mut Vec<(String, data::Loaded, PathBuf)>,
) -> Result {
    let (name, file) = match spec.split_once('=') {
        Some((n, f)) if !n.is_empty() && !n.contains(['/', '\\']) => {
            (Some(n.to_string()), PathBuf::from(f))
        }
        _ => (None, PathBuf::from(spec)),
    };
    match (data::read(&file)?, name) {
        (data::Content::Single(l), Some(n)) => arrays.push((n, l, file)),
        (data::Content::Single(l), None) => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let n = if graph.inputs.len() == 1 {
                graph.inputs[0].name.clone()
            } else if graph.inputs.iter().any(|i| i.name == stem) {
                stem
            } else {
                let names: Vec<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(CliError::Invalid(format!(
                    "{}: the model has {} inputs ({}); say which this is: --input NAME={}",
                    file.display(),
                    names.len(),
                    names.join(", "),
                    file.display()
                )));
            };
            arrays.push((n, l, file));
        }
        (data::Content::Named(v), None) => {
            let targets: Vec<String> = graph
                .train
                .as_ref()
                .map(|t| t.targets.iter().map(|t| t.name.clone()).collect())
                .unwrap_or_default();
            for (n, l) in v {
                // A data archive may also hold the targets: they are not inputs.
                if targets.contains(&n) && !graph.inputs.iter().any(|i| i.name == n) {
                    continue;
                }
                arrays.push((n, l, file.clone()));
            }
        }
        (data::Content::Named(_), Some(n)) => {
            return Err(CliError::Invalid(format!(
                "{}: `{n}=` names one array, but this archive holds several; give a .npy file",
                file.display()
            )));
        }
        // A table's feature columns feed the model's single input, as in `train`.
        (table @ data::Content::Table(_), _) => {
            let opts = data::LoadOptions {
                target_column: target_column.map(str::to_string),
                targets: false,
                ..data::LoadOptions::default()
            };
            let d = data::Dataset::from_content(Some(&file), table, graph, &opts)?;
            for (n, a) in d.inputs {
                let loaded = data::Loaded {
                    data: a,
                    dtype: data::Dtype::F32,
                    inexact: false,
                };
                arrays.push((n, loaded, file.clone()));
            }
        }
    }
    Ok(())
}

/// Refuses, before any work, an output path without a `.npy` or `.npz` extension
/// (which says the format to write).
fn output_format(path: &Path) -> Result {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy" | "npz") => Ok(()),
        Some(e) if !e.is_empty() => Err(CliError::Usage(format!(
            "{}: kiln writes .npy or .npz files, not `.{e}`: give --output a `.npy` (one output) or `.npz` (one array per output) extension",
            path.display()
        ))),
        _ => Err(CliError::Usage(format!(
            "{}: the output needs a `.npy` (one output) or `.npz` (one array per output) extension, which says the format to write",
            path.display()
        ))),
    }
}

/// `kiln predict`.
pub fn predict(a: &PredictArgs) -> Result {
    output_format(&a.output)?;
    let need = Need {
        work: Work::Infer,
        batch: None,
        memory: &a.memory,
    };
    let mut net = compile(&a.spec, a.backend, None, need)?;
    net.load_weights(&a.weights)?;
    check_finite(&a.weights, net.weights())?;
    let graph = net.graph().clone();
    // Read every input file; an unnamed one is the model's only input (or named by
    // its file stem), a .npz contributes its arrays by name.
    let mut arrays: Vec<(String, data::Loaded, PathBuf)> = Vec::new();
    for spec in &a.input {
        input_arrays(&graph, spec, a.target_column.as_deref(), &mut arrays)?;
    }
    let mut ins = vec![
        ("the spec", a.spec.as_path()),
        ("--weights", a.weights.as_path()),
    ];
    ins.extend(arrays.iter().map(|(_, _, p)| ("--input", p.as_path())));
    kiln::paths::guard_outputs(&ins, &[("--output", &a.output)]).map_err(CliError::Usage)?;
    let with_types: Vec<(&str, ArrayViewD<f32>, Option<data::Dtype>)> = arrays
        .iter()
        .map(|(n, l, _)| (n.as_str(), l.data.view(), Some(l.dtype)))
        .collect();
    let file_of = |n: &str| {
        arrays
            .iter()
            .find(|(m, _, _)| m == n)
            .map(|(_, _, p)| p.clone())
    };
    data::check_predict_inputs(&graph, &with_types, &file_of)?;
    let inputs: Vec<(&str, ArrayViewD<f32>)> = arrays
        .iter()
        .map(|(n, l, _)| (n.as_str(), l.data.view()))
        .collect();
    let shapes: Vec<(String, Vec<usize>)> = inputs
        .iter()
        .map(|(n, a)| (n.to_string(), a.shape().to_vec()))
        .collect();
    let dims = input_dims(&graph, &shapes);
    let batch = dims.get("batch").map_or(1, |&b| b.max(1) as usize);
    check_budget(&graph, Work::Infer, batch, &dims, &a.memory)?;
    let t0 = Instant::now();
    let outs = net.predict_all(&inputs)?;
    let secs = t0.elapsed().as_secs_f64();
    data::write(&a.output, &outs)?;
    let desc: Vec<String> = outs
        .iter()
        .map(|(n, o)| {
            let d: Vec<String> = o.shape().iter().map(|x| x.to_string()).collect();
            format!("{n} [{}]", d.join(", "))
        })
        .collect();
    println!(
        "wrote {}: {} ({:.1} ms)",
        a.output.display(),
        desc.join(", "),
        secs * 1e3
    );
    Ok(())
}
