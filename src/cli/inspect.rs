//! Commands that look at a spec without training it: `check`, `ir`, `bench`, `init`.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use kiln::{Error, Model, diag};

use super::{CliError, Result, load};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Stage {
    /// The inference function in graph IR.
    Graph,
    /// One whole training step in graph IR.
    Train,
    /// The kernel plan (fusion groups, GEMM calls, buffers) of the inference function,
    /// or of the training step with `--step`.
    Kernels,
    /// The Cranelift IR of the inference function, or of the training step with `--step`.
    Clif,
}

/// `kiln check`: one line when valid; every diagnostic when not.
pub fn check(spec: &PathBuf, format: Format) -> Result {
    match format {
        Format::Human => {
            let m = load(spec)?;
            println!("{}", kiln::summary::one_line(&m.graph));
            Ok(())
        }
        Format::Json => match Model::from_path(spec) {
            Ok(m) => {
                let file = spec.display().to_string();
                let src = diag::Source {
                    name: &file,
                    text: &m.source,
                };
                println!("{}", diag::to_json(&src, &m.warnings));
                Ok(())
            }
            Err(Error::Spec(s)) => {
                println!("{}", s.to_json());
                Err(CliError::Shown)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// `kiln ir`: a stage of compilation.
pub fn ir(spec: &PathBuf, stage: Stage, raw: bool, step: bool) -> Result {
    let m = load(spec)?;
    let want_step = matches!(stage, Stage::Train) || step;
    let func = if want_step {
        if m.graph.train.is_none() {
            return Err(CliError::Invalid(format!(
                "{} has no `train` section, so there is no training step to print",
                spec.display()
            )));
        }
        kiln::lower::train::build(&m.graph).map(|t| t.func)
    } else {
        kiln::lower::predict_func(&m.graph)
    };
    let f = func.map_err(Error::from)?;
    let f = if raw {
        f
    } else {
        kiln::ir::passes::optimize(&f)
    };
    match stage {
        Stage::Graph | Stage::Train => print!("{}", f.print()),
        Stage::Kernels => print!("{}", kiln::jit::plan::plan(&f).print()),
        Stage::Clif => {
            let k = kiln::jit::compile_with_clif(&f).map_err(Error::from)?;
            print!("{}", k.clif);
        }
    }
    Ok(())
}

/// `kiln bench`: compile, forward and train-step medians.
pub fn bench(
    spec: &Path,
    batch_size: usize,
    dim: &[(String, usize)],
    json: bool,
    (runs, profile): (usize, bool),
    memory: &super::MemoryArg,
) -> Result {
    let text = kiln::read_spec(spec)?;
    let name = spec.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let file = spec.display().to_string();
    // Bench binds every symbol to the batch size (its random inputs do), except those
    // given with `--dim`.
    let m = kiln::Model::from_source(&text, name, &file)?;
    let symbols: Vec<String> = m
        .graph
        .inputs
        .iter()
        .flat_map(|i| i.ty.shape.iter().flat_map(|d| d.symbols()))
        .collect();
    if let Some((s, _)) = dim.iter().find(|(s, _)| !symbols.contains(s)) {
        return Err(CliError::Usage(format!(
            "--dim {s}: the spec's inputs have no symbolic size `{s}` (they have: {})",
            if symbols.is_empty() {
                "none".to_string()
            } else {
                symbols.join(", ")
            }
        )));
    }
    let given: std::collections::HashMap<String, i64> =
        dim.iter().map(|(s, n)| (s.clone(), *n as i64)).collect();
    let dims = symbols
        .into_iter()
        .map(|s| {
            let v = given.get(&s).copied().unwrap_or(batch_size as i64);
            (s, v)
        })
        .collect();
    super::check_budget(
        &m.graph,
        kiln::budget::Work::Train,
        batch_size,
        &dims,
        memory,
    )?;
    match kiln::bench::run(&text, name, &file, batch_size, &given, runs, profile) {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                println!("{}", r.describe());
            }
            Ok(())
        }
        Err(kiln::bench::BenchError::Spec(e)) => Err(e.into()),
        Err(kiln::bench::BenchError::Run(e)) => Err(Error::from(e).into()),
    }
}

/// `kiln init`: 0 written, 1 the spec is wrong (a weight too big for memory included),
/// 2 the file could not be written.
pub fn init(spec: &PathBuf, out: &PathBuf, seed: Option<u64>, memory: &super::MemoryArg) -> Result {
    kiln::paths::guard_outputs(&[("the spec", spec)], &[("--out", out)])
        .map_err(CliError::Usage)?;
    let m = load(spec)?;
    let batch = kiln::settings::spec_batch_size(&m.graph);
    super::check_budget(
        &m.graph,
        kiln::budget::Work::Init,
        batch,
        &Default::default(),
        memory,
    )?;
    let seed = seed.unwrap_or_else(|| kiln::weights::default_seed(&m.graph));
    let w = kiln::weights::init(&m.graph, seed).map_err(Error::from)?;
    kiln::weights::save(out, &w)?;
    println!(
        "wrote {}: {} (seed {seed})",
        out.display(),
        kiln::weights::describe(&w)
    );
    Ok(())
}

/// `kiln export --format onnx`: the inference function with the given weights.
pub fn export_onnx(spec: &PathBuf, weights: &PathBuf, out: &Path) -> Result {
    if out.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return Err(CliError::Usage(format!(
            "-o {}: kiln writes ONNX models to `.onnx` files; give a path ending in `.onnx`",
            out.display()
        )));
    }
    kiln::paths::guard_outputs(
        &[("the spec", spec), ("the weights", weights)],
        &[("-o", out)],
    )
    .map_err(CliError::Usage)?;
    let m = load(spec)?;
    let mut net = m.compile(&kiln::Options::default())?;
    net.load_weights(weights)?;
    let bytes = net.to_onnx()?;
    kiln::paths::write_atomic(out, |w| w.write_all(&bytes)).map_err(|error| Error::Io {
        path: out.to_path_buf(),
        action: "write",
        error,
    })?;
    println!(
        "wrote {}: ONNX opset {} ({} bytes), inputs and outputs named as in the spec",
        out.display(),
        kiln::onnx::OPSET,
        kiln::layers::group_digits(bytes.len() as i64)
    );
    Ok(())
}
