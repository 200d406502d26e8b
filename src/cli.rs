//! The command line (DESIGN §3). Exit codes: 0 success, 1 the spec or data is wrong,
//! 2 usage or I/O error.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::dim::fmt_shape;
use crate::layers::group_digits;
use crate::{Error, Model, diag};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A declarative model compiler: YAML specs, checked shapes, native code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
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

#[derive(Subcommand)]
enum Command {
    /// Parse and shape-check a spec; print every mistake at its line.
    Check {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Print a table of layers, output shapes and parameter counts, like Keras's summary().
    Summary { spec: PathBuf },
    /// Print a stage of compilation: `graph` (the inference function) or `train` (one
    /// whole training step), after the graph passes unless `--raw`.
    Ir {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "graph")]
        stage: Stage,
        /// Print the IR as lowered, before dead-code elimination, CSE and simplification.
        #[arg(long)]
        raw: bool,
        /// With `kernels` or `clif`: show the training step instead of inference.
        #[arg(long)]
        step: bool,
    },
    /// Measure compile time, forward latency and train-step time (medians).
    Bench {
        spec: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Print `{"compile_ms", "forward_ms", "train_step_ms", "batch_size"}`.
        #[arg(long)]
        json: bool,
        /// Timed repetitions after warm-up.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Write freshly initialized weights (Keras's initializers, seeded) as safetensors.
    Init {
        spec: PathBuf,
        /// Where to write the weights (`.safetensors`).
        #[arg(long)]
        out: PathBuf,
        /// The random seed [default: the spec's `train.seed`, else 0].
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Train a model as Keras's fit does: progress per epoch, callbacks, checkpoints.
    Train(crate::commands::TrainArgs),
    /// Print the loss and metrics of weights on data.
    Eval(crate::commands::EvalArgs),
    /// Run the forward pass on input arrays and write the outputs.
    Predict(crate::commands::PredictArgs),
    /// Explain a diagnostic code (E0504, W0701): what it means, a wrong and a fixed spec.
    Explain { code: String },
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Runs the CLI with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Check { spec, format } => check(&spec, format),
        Command::Ir {
            spec,
            stage,
            raw,
            step,
        } => ir(&spec, stage, raw, step),
        Command::Bench {
            spec,
            batch_size,
            json,
            runs,
        } => bench(&spec, batch_size, json, runs),
        Command::Summary { spec } => match load(&spec) {
            Ok(m) => {
                print!("{}", crate::summary::render(&m.graph));
                0
            }
            Err(code) => code,
        },
        Command::Init { spec, out, seed } => init(&spec, &out, seed),
        Command::Train(a) => crate::commands::train(&a),
        Command::Eval(a) => crate::commands::eval(&a),
        Command::Predict(a) => crate::commands::predict(&a),
        Command::Explain { code } => match diag::explain(&code) {
            Some(page) => {
                print!("{page}");
                0
            }
            None => {
                eprintln!("error: no such code `{code}`; codes look like E0504");
                2
            }
        },
    }
}

/// `kiln init`: 0 written, 1 the spec is wrong, 2 the file could not be written.
fn init(spec: &PathBuf, out: &PathBuf, seed: Option<u64>) -> i32 {
    let m = match load(spec) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let seed = seed.unwrap_or_else(|| crate::weights::default_seed(&m.graph));
    let w = match crate::weights::init(&m.graph, seed) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match crate::weights::save(out, &w) {
        Ok(()) => {
            println!(
                "wrote {}: {} (seed {seed})",
                out.display(),
                crate::weights::describe(&w)
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Loads a spec, printing diagnostics (or warnings) on stderr.
pub fn load(spec: &PathBuf) -> Result<Model, i32> {
    match Model::from_path(spec) {
        Ok(m) => {
            if !m.warnings.is_empty() {
                eprint!("{}", m.render_warnings(color()));
            }
            Ok(m)
        }
        Err(e) => {
            report(&e);
            Err(e.exit_code())
        }
    }
}

fn report(e: &Error) {
    match e {
        Error::Spec(s) => {
            eprint!("{}", s.render(color()));
            let n = s.diagnostics.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "error: {} has {n} error{}",
                s.file,
                if n == 1 { "" } else { "s" }
            );
        }
        e => eprintln!("error: {e}"),
    }
}

fn check(spec: &PathBuf, format: Format) -> i32 {
    match format {
        Format::Human => match load(spec) {
            Ok(m) => {
                println!("{}", one_line(&m));
                0
            }
            Err(code) => code,
        },
        Format::Json => match Model::from_path(spec) {
            Ok(m) => {
                let file = spec.display().to_string();
                let src = diag::Source {
                    name: &file,
                    text: &m.source,
                };
                println!("{}", diag::to_json(&src, &m.warnings));
                0
            }
            Err(Error::Spec(s)) => {
                println!("{}", s.to_json());
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
    }
}

/// `ok: digits_cnn — 6 layers, 12,345 params; image [batch, 8, 8, 1] → logits [batch, 10]`
pub fn one_line(m: &Model) -> String {
    let g = &m.graph;
    let ins: Vec<String> = g
        .inputs
        .iter()
        .map(|i| format!("{} {}", i.name, i.ty.describe()))
        .collect();
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|&s| format!("{} {}", g.name_of(s), fmt_shape(&g.type_of(s).shape)))
        .collect();
    let (total, _, _) = g.param_counts();
    format!(
        "ok: {} — {} layer{}, {} params; {} → {}",
        g.name,
        g.layers.len(),
        if g.layers.len() == 1 { "" } else { "s" },
        group_digits(total),
        ins.join(", "),
        outs.join(", ")
    )
}

fn ir(spec: &PathBuf, stage: Stage, raw: bool, step: bool) -> i32 {
    let m = match load(spec) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let want_step = matches!(stage, Stage::Train) || step;
    let func = match want_step {
        false => crate::lower::predict_func(&m.graph),
        true => {
            if m.graph.train.is_none() {
                eprintln!(
                    "error: {} has no `train` section, so there is no training step to print",
                    spec.display()
                );
                return 1;
            }
            crate::lower::train::build(&m.graph).map(|t| t.func)
        }
    };
    match func {
        Ok(f) => {
            let f = if raw {
                f
            } else {
                crate::ir::passes::optimize(&f)
            };
            match stage {
                Stage::Graph | Stage::Train => print!("{}", f.print()),
                Stage::Kernels => print!("{}", crate::jit::plan::plan(&f).print()),
                Stage::Clif => match crate::jit::compile_with_clif(&f) {
                    Ok(k) => print!("{}", k.clif),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 2;
                    }
                },
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn bench(spec: &std::path::Path, batch_size: usize, json: bool, runs: usize) -> i32 {
    let text = match crate::read_spec(spec) {
        Ok(t) => t,
        Err(e) => {
            report(&e);
            return e.exit_code();
        }
    };
    let name = spec.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    match crate::bench::run(
        &text,
        name,
        &spec.display().to_string(),
        batch_size,
        runs.max(1),
    ) {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                println!("{}", r.describe());
            }
            0
        }
        Err(crate::bench::BenchError::Spec(e)) => {
            report(&e);
            e.exit_code()
        }
        Err(crate::bench::BenchError::Run(e)) => {
            eprintln!("error: {e}");
            2
        }
    }
}
