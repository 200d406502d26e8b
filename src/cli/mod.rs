//! The command line (DESIGN §3), a thin client of the library: `main` parses the
//! arguments, runs one command and maps its error to the exit code in one place
//! ([`CliError::exit_code`]): 0 success, 1 the spec or the data is wrong (or training
//! diverged), 2 usage, I/O or an internal failure, 130 interrupted by Ctrl-C.

mod apply;
mod build;
mod inspect;
mod numbers;
mod progress;
mod train;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kiln::runtime::Backend;
use kiln::types::Remedy;
use kiln::{Error, Model, Net, Options};

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

#[derive(Subcommand)]
enum Command {
    /// Parse and shape-check a spec; print every mistake at its line.
    Check {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: inspect::Format,
    },
    /// Print a table of layers, output shapes and parameter counts, like Keras's summary().
    Summary { spec: PathBuf },
    /// Print a stage of compilation: `graph` (the inference function) or `train` (one
    /// whole training step), after the graph passes unless `--raw`.
    Ir {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "graph")]
        stage: inspect::Stage,
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
        #[arg(long, default_value_t = 32, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
        batch_size: usize,
        /// Bind a symbolic size, `--dim seq=128` (repeatable); the others take the batch size.
        #[arg(long, value_parser = numbers::binding)]
        dim: Vec<(String, usize)>,
        /// Print `{"compile_ms", "forward_ms", "train_step_ms", "batch_size"}`.
        #[arg(long)]
        json: bool,
        /// Timed repetitions after warm-up.
        #[arg(long, default_value_t = 20, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
        runs: usize,
        /// Also time each kernel of the plans (`kiln ir --stage kernels`) and show where
        /// the time goes.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        memory: MemoryArg,
    },
    /// Write freshly initialized weights (Keras's initializers, seeded) as safetensors.
    Init {
        spec: PathBuf,
        /// Where to write the weights (`.safetensors`).
        #[arg(long)]
        out: PathBuf,
        /// The random seed [default: the spec's `train.seed`, else 0].
        #[arg(long, allow_hyphen_values = true, value_parser = numbers::seed)]
        seed: Option<u64>,
        #[command(flatten)]
        memory: MemoryArg,
    },
    /// Write a model's inference function with its weights in another format: a
    /// standard ONNX model (opset 17) for ONNX Runtime, TensorRT, OpenVINO, tract.
    Export {
        spec: PathBuf,
        /// The weights to export (`.safetensors`, as `kiln train --out` writes them).
        #[arg(long)]
        weights: PathBuf,
        /// The format to write.
        #[arg(long, value_enum, default_value = "onnx")]
        format: ExportFormat,
        /// Where to write the model (`.onnx`).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Compile a model ahead of time to an object file with C functions (predict, with
    /// `--train` one training step) and a C header; links with `cc main.c F.o -lm`.
    Build(build::BuildArgs),
    /// Train a model as Keras's fit does: progress per epoch, callbacks, checkpoints.
    #[command(after_long_help = train::DISTRIBUTED)]
    Train(train::TrainArgs),
    /// Print the loss and metrics of weights on data.
    Eval(apply::EvalArgs),
    /// Run the forward pass on input arrays and write the outputs.
    Predict(apply::PredictArgs),
    /// Explain a diagnostic code (E0504, W0701): what it means, a wrong and a fixed spec.
    Explain { code: String },
}

/// Why a command failed; [`CliError::exit_code`] is the one mapping to exit codes.
#[derive(Debug)]
pub enum CliError {
    /// A library error: spec errors are drawn against the spec, the rest said in a
    /// sentence; the exit code is the library's ([`Error::exit_code`]).
    Lib(Error),
    /// The command line asks for something that cannot be done (exit 2).
    Usage(String),
    /// The spec or the data does not suit this command (exit 1).
    Invalid(String),
    /// A spec error already shown in another form (`check --format json`) (exit 1).
    Shown,
    /// Training diverged; the explanation was printed (exit 1).
    Diverged,
    /// Stopped by Ctrl-C after writing a checkpoint (exit 130).
    Interrupted,
}

impl CliError {
    /// The process exit code (DESIGN §3).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Lib(e) => e.exit_code(),
            CliError::Usage(_) => 2,
            CliError::Invalid(_) | CliError::Shown | CliError::Diverged => 1,
            CliError::Interrupted => 130,
        }
    }

    /// Prints the error on stderr (what was not printed already).
    fn report(&self) {
        match self {
            CliError::Lib(Error::Spec(s)) => {
                eprint!("{}", s.render(color()));
                let n = s.diagnostics.iter().filter(|d| d.is_error()).count();
                eprintln!(
                    "error: {} has {n} error{}",
                    s.file,
                    if n == 1 { "" } else { "s" }
                );
            }
            CliError::Lib(e) => {
                eprintln!("error: {e}");
                if let Some(flag) = e.remedy().and_then(|r| flag_for(&r)) {
                    eprintln!("  help: on the command line, {flag}");
                }
            }
            CliError::Usage(m) | CliError::Invalid(m) => eprintln!("error: {m}"),
            CliError::Shown | CliError::Diverged | CliError::Interrupted => {}
        }
    }
}

/// The command-line flag that carries out a library's [`Remedy`].
fn flag_for(r: &Remedy) -> Option<String> {
    Some(match r {
        Remedy::GiveInput(name) => format!("give it with `--input {name}=FILE.npy`"),
        Remedy::NameTargetColumn(Some(c)) => format!("`--target-column {c}`"),
        Remedy::NameTargetColumn(None) => "`--target-column NAME`".into(),
        Remedy::InitFromWeights => "load it with `--init` to start training from it".into(),
        Remedy::RaiseMemoryLimit => "`--memory-limit` raises the budget".into(),
        _ => return None,
    })
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Lib(e)
    }
}

impl From<kiln::data::DataError> for CliError {
    fn from(e: kiln::data::DataError) -> Self {
        CliError::Lib(Error::Data(e))
    }
}

impl From<kiln::weights::WeightsError> for CliError {
    fn from(e: kiln::weights::WeightsError) -> Self {
        CliError::Lib(Error::Weights(e))
    }
}

/// What a command returns.
pub type Result<T = ()> = std::result::Result<T, CliError>;

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
    match run(cli.command) {
        Ok(()) => 0,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

fn run(command: Command) -> Result {
    match command {
        Command::Check { spec, format } => inspect::check(&spec, format),
        Command::Ir {
            spec,
            stage,
            raw,
            step,
        } => inspect::ir(&spec, stage, raw, step),
        Command::Bench {
            spec,
            batch_size,
            dim,
            json,
            runs,
            profile,
            memory,
        } => inspect::bench(&spec, batch_size, &dim, json, (runs, profile), &memory),
        Command::Summary { spec } => {
            let m = load(&spec)?;
            print!("{}", kiln::summary::render(&m.graph));
            Ok(())
        }
        Command::Init {
            spec,
            out,
            seed,
            memory,
        } => inspect::init(&spec, &out, seed, &memory),
        Command::Export {
            spec,
            weights,
            format: ExportFormat::Onnx,
            out,
        } => inspect::export_onnx(&spec, &weights, &out),
        Command::Build(a) => build::build(&a),
        Command::Train(a) => train::train(&a),
        Command::Eval(a) => apply::eval(&a),
        Command::Predict(a) => apply::predict(&a),
        Command::Explain { code } => match kiln::diag::explain(&code) {
            Some(page) => {
                print!("{page}");
                Ok(())
            }
            None => Err(CliError::Usage(format!(
                "no such code `{code}`; codes look like E0504"
            ))),
        },
    }
}

/// Loads a spec, printing its warnings on stderr.
fn load(spec: &PathBuf) -> Result<Model> {
    let m = Model::from_path(spec)?;
    if !m.warnings.is_empty() {
        eprint!("{}", m.render_warnings(color()));
    }
    Ok(m)
}

/// A format `kiln export` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// ONNX, opset 17: the inference graph, weights as initializers.
    Onnx,
}

/// The executor of compiled functions, as a flag.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum BackendArg {
    /// Native code (Cranelift).
    #[default]
    Jit,
    /// The reference interpreter.
    Interp,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Jit => Backend::Jit,
            BackendArg::Interp => Backend::Interp,
        }
    }
}

/// `--memory-limit`, on every command that allocates by the model's sizes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MemoryArg {
    /// The memory budget (`8G`, `512MiB`, bytes) [default: KILN_MEMORY_LIMIT, else 3/4
    /// of the available memory]. A model estimated to need more is refused before
    /// anything is allocated for it.
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true, value_parser = numbers::bytes)]
    pub memory_limit: Option<u64>,
}

/// Refuses a model whose estimated memory (parameters, optimizer state, activations at
/// `batch` and the symbol values `dims`) is over the budget: exit 1, the estimate and
/// the largest tensors named, the same from every command.
fn check_budget(
    graph: &kiln::Graph,
    work: kiln::budget::Work,
    batch: usize,
    dims: &std::collections::HashMap<String, i64>,
    memory: &MemoryArg,
) -> Result {
    let limit = kiln::budget::limit(memory.memory_limit).map_err(CliError::Usage)?;
    kiln::net::check_budget(graph, work, batch, dims, Some(limit))?;
    Ok(())
}

/// The symbol values input arrays give: each input axis whose declared size is one
/// symbol binds it to the array's size on that axis (`batch` to the number of rows).
fn input_dims(
    graph: &kiln::Graph,
    inputs: &[(String, Vec<usize>)],
) -> std::collections::HashMap<String, i64> {
    let mut dims = std::collections::HashMap::new();
    for (name, shape) in inputs {
        let Some(decl) = graph.inputs.iter().find(|i| i.name == *name) else {
            continue;
        };
        for (d, &n) in decl.ty.shape.iter().zip(shape) {
            if let [s] = d.symbols().as_slice()
                && d.to_string() == *s
            {
                dims.entry(s.clone()).or_insert(n as i64);
            }
        }
    }
    dims
}

/// What a command will run, for the memory budget checked before compiling.
struct Need<'a> {
    work: kiln::budget::Work,
    batch: Option<usize>,
    memory: &'a MemoryArg,
}

/// Loads the spec, checks it against the memory budget, and compiles it.
fn compile(spec: &PathBuf, backend: BackendArg, seed: Option<u64>, need: Need) -> Result<Net> {
    let model = load(spec)?;
    let batch = need
        .batch
        .unwrap_or_else(|| kiln::settings::spec_batch_size(&model.graph));
    check_budget(
        &model.graph,
        need.work,
        batch,
        &Default::default(),
        need.memory,
    )?;
    let memory_limit = kiln::budget::limit(need.memory.memory_limit).map_err(CliError::Usage)?;
    Ok(model.compile(&Options {
        backend: backend.into(),
        seed,
        memory_limit: Some(memory_limit),
    })?)
}

/// Refuses a spec without a `train` section for a command that needs one.
fn needs_train(net: &Net, spec: &std::path::Path, what: &str) -> Result {
    if net.graph().train.is_none() {
        return Err(CliError::Invalid(format!(
            "{} has no `train` section, so it cannot be {what}: add targets, a loss and an optimizer under `train:`",
            spec.display()
        )));
    }
    Ok(())
}

/// The data file: the flag's, else the spec's (relative to the spec).
fn data_path(net: &Net, flag: Option<&PathBuf>, spec: &std::path::Path) -> Result<PathBuf> {
    flag.cloned()
        .or_else(|| net.spec_data_path())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no data: {} has no `train.data`; give a file with `--data FILE.npz`",
                spec.display()
            ))
        })
}
