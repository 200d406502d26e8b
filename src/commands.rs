//! `kiln train`, `kiln eval` and `kiln predict`: argument handling, progress display
//! and exit codes around the library's [`Net`] (DESIGN §3). Exit codes: 0 success,
//! 1 the spec or the data is wrong (or training diverged), 2 usage or I/O error, 130
//! interrupted by Ctrl-C (after writing a checkpoint).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::ArrayViewD;

use crate::data::{self, DataError, Dataset, LoadOptions};
use crate::error::Error;
use crate::fit::{FitOptions, Logs, Observer, Stop};
use crate::layers::group_digits;
use crate::net::{Net, Options};
use crate::runtime::Backend;
use crate::settings::Settings;

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

/// `kiln train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    pub spec: PathBuf,
    /// The data (.npz, .npy or .csv) [default: the spec's `train.data`].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// For .csv data: the column holding the target.
    #[arg(long)]
    pub target_column: Option<String>,
    /// Start from these weights instead of fresh ones.
    #[arg(long, value_name = "W")]
    pub init: Option<PathBuf>,
    /// Where to write the trained weights [default: next to the spec, SPEC_STEM.safetensors].
    #[arg(long, value_name = "W")]
    pub out: Option<PathBuf>,
    /// The resumable checkpoint written after every epoch and on Ctrl-C
    /// [default: beside --out, STEM.ckpt.safetensors].
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: Option<PathBuf>,
    /// Continue a run from a checkpoint, exactly where it stopped.
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the initial weights, the shuffling and dropout [default: the spec's].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the data's order in every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Hold out the last fraction of the data for validation [default: the spec's].
    #[arg(long, value_name = "F")]
    pub validation_split: Option<f64>,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
    /// Write each epoch's values to a CSV file (as Keras's CSVLogger).
    #[arg(long, value_name = "CSV")]
    pub log: Option<PathBuf>,
    /// Draw the training curves (loss and metrics per epoch) to a PNG file.
    #[arg(long, value_name = "PNG")]
    pub plot: Option<PathBuf>,
}

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
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
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
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
}

fn fail(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn fail_data(e: &DataError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Loads the spec and compiles it, printing diagnostics on failure.
fn compile(spec: &Path, backend: BackendArg, seed: Option<u64>) -> Result<Net, i32> {
    let model = crate::cli::load(&spec.to_path_buf())?;
    model
        .compile(&Options {
            backend: backend.into(),
            seed,
        })
        .map_err(|e| fail(&e))
}

fn needs_train(net: &Net, spec: &Path, what: &str) -> Result<(), i32> {
    if net.graph().train.is_none() {
        eprintln!(
            "error: {} has no `train` section, so it cannot be {what}: add targets, a loss and an optimizer under `train:`",
            spec.display()
        );
        return Err(1);
    }
    Ok(())
}

/// The data file: the flag's, else the spec's (relative to the spec).
fn data_path(net: &Net, flag: Option<&PathBuf>, spec: &Path) -> Result<PathBuf, i32> {
    match flag.cloned().or_else(|| net.spec_data_path()) {
        Some(p) => Ok(p),
        None => {
            eprintln!(
                "error: no data: {} has no `train.data`; give a file with `--data FILE.npz`",
                spec.display()
            );
            Err(2)
        }
    }
}

/// Checks that a file can be created in `path`'s folder before a long run.
fn check_writable(path: &Path) -> Result<(), i32> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = dir.join(format!(".kiln-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "error: {}: cannot write there ({e}); choose another place with --out",
                path.display()
            );
            Err(2)
        }
    }
}

/// `a.safetensors` → `a.ckpt.safetensors`.
fn checkpoint_beside(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

/// Keras's number format in progress lines.
fn keras_value(v: f64) -> String {
    if v.abs() > 1e-3 || v == 0.0 || !v.is_finite() {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

/// ` - accuracy: 0.9712 - loss: 0.1034 - val_accuracy: …`
pub fn format_logs(logs: &Logs) -> String {
    logs.sorted()
        .iter()
        .map(|(k, v)| format!(" - {k}: {}", keras_value(*v)))
        .collect()
}

fn step_time(seconds: f64, steps: usize) -> String {
    let per = seconds / steps.max(1) as f64;
    if per >= 1.0 {
        format!("{per:.1}s/step")
    } else if per >= 1e-3 {
        format!("{}ms/step", (per * 1e3).round() as u64)
    } else {
        format!("{}us/step", (per * 1e6).round() as u64)
    }
}

/// Keras-like progress: a live bar on stderr while an epoch runs (only on a terminal),
/// and one line per epoch on stdout.
struct Progress {
    bar: Option<ProgressBar>,
    epoch_label: String,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bar: None,
            epoch_label: String::new(),
            started: Instant::now(),
        }
    }
}

const BAR: &str = "━━━━━━━━━━━━━━━━━━━━";

impl Observer for Progress {
    fn on_epoch_begin(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epoch_label = format!("Epoch {}/{epochs}", epoch + 1);
        self.started = Instant::now();
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix}  {pos}/{len} {bar:20.green/white} ETA {eta} - {msg}",
        ) {
            bar.set_style(style.progress_chars("━━─"));
        }
        bar.set_prefix(self.epoch_label.clone());
        self.bar = Some(bar);
    }
    fn on_batch_end(&mut self, done: usize, _steps: usize, logs: &Logs) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            if done.is_multiple_of(4) || done == 1 {
                b.set_message(format_logs(logs).trim_start_matches(" - ").to_string());
            }
        }
    }
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _epochs: usize,
        steps: usize,
        logs: &Logs,
        seconds: f64,
    ) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let mut out = std::io::stdout().lock();
        let time = if seconds >= 0.1 {
            format!("{seconds:.1}s")
        } else if seconds >= 0.01 {
            format!("{}ms", (seconds * 1e3).round() as u64)
        } else {
            format!("{:.1}ms", seconds * 1e3)
        };
        let _ = writeln!(
            out,
            "{}  {steps}/{steps} {BAR} {time} {}{}",
            self.epoch_label,
            step_time(seconds, steps),
            format_logs(logs)
        );
        let _ = out.flush();
    }
    fn on_message(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.suspend(|| println!("{msg}"));
        } else {
            println!("{msg}");
        }
    }
}

/// Installs the Ctrl-C handler once: the first press asks training to stop after the
/// current batch (and write a checkpoint); a second press exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        let _ = ctrlc::set_handler(move || {
            if g.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping after this batch and writing a checkpoint (Ctrl-C again to quit now)");
        });
        f
    })
    .clone()
}

/// `kiln train`.
pub fn train(a: &TrainArgs) -> i32 {
    let mut net = match compile(&a.spec, a.backend, a.seed) {
        Ok(n) => n,
        Err(c) => return c,
    };
    if let Err(c) = needs_train(&net, &a.spec, "trained") {
        return c;
    }
    if a.init.is_some() && a.resume.is_some() {
        eprintln!("error: give --init (start from weights) or --resume (continue a run), not both");
        return 2;
    }
    if let Some(w) = &a.init
        && let Err(e) = net.load_weights(w)
    {
        return fail(&e);
    }
    let resume = match &a.resume {
        Some(c) => match net.load_checkpoint(c) {
            Ok(r) => Some(r),
            Err(e) => return fail(&e),
        },
        None => None,
    };
    let mut fit = FitOptions {
        epochs: a.epochs,
        batch_size: a.batch_size,
        seed: a.seed,
        shuffle: a.no_shuffle.then_some(false),
        validation_split: a.validation_split,
        ..FitOptions::default()
    };
    let ckpt_settings = resume.as_ref().and_then(|r| r.meta.settings.clone());
    let settings = match Settings::resolve(net.graph(), &fit.overrides(), ckpt_settings.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    fit.resume = resume;
    let path = match data_path(&net, a.data.as_ref(), &a.spec) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let opts = LoadOptions {
        target_column: a.target_column.clone(),
        targets: true,
    };
    let data = match Dataset::load(&path, net.graph(), &opts) {
        Ok(d) => d,
        Err(e) => return fail_data(&e),
    };
    let stem = a
        .spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.spec.with_file_name(format!("{stem}.safetensors")));
    let ckpt = a
        .checkpoint
        .clone()
        .unwrap_or_else(|| checkpoint_beside(&out));
    for p in [Some(&out), Some(&ckpt), a.plot.as_ref(), a.log.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Err(c) = check_writable(p) {
            return c;
        }
    }
    fit.checkpoint = Some(ckpt.clone());
    fit.csv_log = a.log.clone();
    fit.interrupt = Some(interrupt_flag());
    let split = settings.validation_split();
    let n_val = if split > 0.0 {
        data.len() - (data.len() as f64 * (1.0 - split)).floor() as usize
    } else {
        0
    };
    println!(
        "training {} on {}: {} examples{}; backend {}{}",
        net.graph().name,
        path.display(),
        group_digits((data.len() - n_val) as i64),
        if n_val > 0 {
            format!(", {} held out for validation", group_digits(n_val as i64))
        } else {
            String::new()
        },
        match Backend::from(a.backend) {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        },
        match &a.resume {
            Some(r) => format!("; resuming {} at step {}", r.display(), net.step()),
            None => String::new(),
        }
    );
    let mut progress = Progress::new();
    let report = match net.fit_with(&data, &fit, &mut progress) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(p) = &a.plot {
        match crate::plot::write(
            p,
            &report.history,
            &format!("{} — training curves", net.graph().name),
        ) {
            Ok(()) => println!("plotted the training curves to {}", p.display()),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    match &report.stop {
        Stop::NonFinite {
            epoch,
            batch,
            step,
            loss,
            good_epochs,
        } => {
            eprintln!(
                "error: the loss became {loss} at epoch {}, batch {} (step {step}): training diverged and stopped",
                epoch + 1,
                batch + 1
            );
            if *good_epochs > 0 && ckpt.exists() {
                eprintln!(
                    "  the last good checkpoint, after epoch {good_epochs}, is kept in {}",
                    ckpt.display()
                );
            } else {
                eprintln!("  no epoch finished, so there is no checkpoint; nothing was written");
            }
            eprintln!(
                "  help: lower the learning rate (the optimizer's `learning_rate`), or add `clipnorm`, and check the data's scale"
            );
            return 1;
        }
        Stop::Interrupted {
            epoch,
            batch,
            checkpoint,
        } => {
            match checkpoint {
                Some(c) => println!(
                    "interrupted in epoch {}, after {batch} batches: checkpoint written to {}\n  continue with: kiln train {} --resume {}",
                    epoch + 1,
                    c.display(),
                    a.spec.display(),
                    c.display()
                ),
                None => println!("interrupted"),
            }
            return 130;
        }
        Stop::Completed | Stop::EarlyStopping { .. } => {}
    }
    match net.save_weights(&out) {
        Ok(()) => {
            println!(
                "wrote the weights to {} ({}); checkpoint: {}",
                out.display(),
                crate::weights::describe(net.weights()),
                ckpt.display()
            );
            0
        }
        Err(e) => fail(&e),
    }
}

/// `kiln eval`.
pub fn eval(a: &EvalArgs) -> i32 {
    let mut net = match compile(&a.spec, a.backend, None) {
        Ok(n) => n,
        Err(c) => return c,
    };
    if let Err(c) = needs_train(&net, &a.spec, "evaluated (it has no loss)") {
        return c;
    }
    if let Err(e) = net.load_weights(&a.weights) {
        return fail(&e);
    }
    let path = match data_path(&net, a.data.as_ref(), &a.spec) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let opts = LoadOptions {
        target_column: a.target_column.clone(),
        targets: true,
    };
    let data = match Dataset::load(&path, net.graph(), &opts) {
        Ok(d) => d,
        Err(e) => return fail_data(&e),
    };
    // The spec's own data: its validation split, as training held it out.
    let split = if a.data.is_none() {
        match Settings::resolve(net.graph(), &Default::default(), None) {
            Ok(s) => s.validation_split(),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    } else {
        0.0
    };
    let (what, data) = match data.split(split) {
        Ok((_, Some(v))) => (
            format!(
                "the validation split ({}) of {}",
                crate::fit::callbacks::python_float(split),
                path.display()
            ),
            v,
        ),
        Ok((all, None)) => (path.display().to_string(), all),
        Err(e) => return fail_data(&e),
    };
    let t0 = Instant::now();
    match net.evaluate(&data, a.batch_size) {
        Ok(logs) => {
            println!(
                "evaluated {} on {} examples of {what} in {:.2}s",
                net.graph().name,
                group_digits(data.len() as i64),
                t0.elapsed().as_secs_f64()
            );
            for (k, v) in logs.sorted() {
                println!("{k}: {v:.4}");
            }
            0
        }
        Err(e) => fail(&e),
    }
}

/// `kiln predict`.
pub fn predict(a: &PredictArgs) -> i32 {
    let mut net = match compile(&a.spec, a.backend, None) {
        Ok(n) => n,
        Err(c) => return c,
    };
    if let Err(e) = net.load_weights(&a.weights) {
        return fail(&e);
    }
    let graph = net.graph().clone();
    // Read every input file; an unnamed one is the model's only input (or named by
    // its file stem), a .npz contributes its arrays by name.
    let mut arrays: Vec<(String, data::Loaded, PathBuf)> = Vec::new();
    for spec in &a.input {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if !n.is_empty() && !n.contains(['/', '\\']) => {
                (Some(n.to_string()), PathBuf::from(f))
            }
            _ => (None, PathBuf::from(spec)),
        };
        let content = match data::read(&file) {
            Ok(c) => c,
            Err(e) => return fail_data(&e),
        };
        match (content, name) {
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
                    eprintln!(
                        "error: {}: the model has {} inputs ({}); say which this is: --input NAME={}",
                        file.display(),
                        names.len(),
                        names.join(", "),
                        file.display()
                    );
                    return 1;
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
                eprintln!(
                    "error: {}: `{n}=` names one array, but this archive holds several; give a .npy file",
                    file.display()
                );
                return 1;
            }
            (data::Content::Table(_), _) => {
                eprintln!(
                    "error: {}: predict reads .npy (or .npz) arrays, not CSV tables",
                    file.display()
                );
                return 1;
            }
        }
    }
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
    if let Err(e) = data::check_predict_inputs(&graph, &with_types, &file_of) {
        return fail_data(&e);
    }
    let inputs: Vec<(&str, ArrayViewD<f32>)> = arrays
        .iter()
        .map(|(n, l, _)| (n.as_str(), l.data.view()))
        .collect();
    let t0 = Instant::now();
    let outs = match net.predict_checked(&inputs) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let secs = t0.elapsed().as_secs_f64();
    if let Err(e) = data::write(&a.output, &outs) {
        return fail_data(&e);
    }
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
    0
}
