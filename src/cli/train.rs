//! `kiln train`: argument handling, progress and the end-of-run report around the
//! library's fit loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kiln::data::{Dataset, LoadOptions};
use kiln::fit::checkpoint::RunFiles;
use kiln::fit::{FitOptions, FitReport, Stop};
use kiln::layers::group_digits;
use kiln::runtime::Backend;
use kiln::settings::Settings;

use super::progress::Progress;
use super::{
    BackendArg, CliError, MemoryArg, Need, Result, compile, data_path, needs_train, numbers,
};

/// `kiln train`.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    pub spec: PathBuf,
    /// The data (.npz, .npy or .csv; a folder or a pattern such as `shards/*.npz` for a
    /// set of shards) [default: the spec's `train.data`].
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
    #[arg(long, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
    pub epochs: Option<usize>,
    #[arg(long, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
    pub batch_size: Option<usize>,
    /// Seed of the initial weights, the shuffling and dropout [default: the spec's].
    #[arg(long, allow_hyphen_values = true, value_parser = numbers::seed)]
    pub seed: Option<u64>,
    /// Keep the data's order in every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Hold out the last fraction of the data for validation [default: the spec's].
    #[arg(long, value_name = "F", allow_hyphen_values = true, value_parser = numbers::fraction)]
    pub validation_split: Option<f64>,
    #[arg(long, value_enum, default_value = "jit")]
    pub backend: BackendArg,
    #[command(flatten)]
    pub memory: MemoryArg,
    /// Write each epoch's values to a CSV file (as Keras's CSVLogger).
    #[arg(long, value_name = "CSV")]
    pub log: Option<PathBuf>,
    /// Draw the training curves (loss and metrics per epoch) to a PNG file.
    #[arg(long, value_name = "PNG")]
    pub plot: Option<PathBuf>,
}

/// Checks that a file can be created in `path`'s folder before a long run.
fn check_writable(path: &Path) -> Result {
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
        Err(e) => Err(CliError::Usage(format!(
            "{}: cannot write there ({e}); choose another place with --out",
            path.display()
        ))),
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

/// `kiln train --help`'s words on several processes.
pub const DISTRIBUTED: &str = "\
Data-parallel training (a kiln built with `--features mpi`, started by mpirun):
  mpirun -n 2 kiln train SPEC                       two processes on this machine
  mpirun -H a,b -n 2 kiln train SPEC --data /shared/train.npz
                                                    one process on each of hosts a and b
Every process reads the same spec and data (a path every host sees); the spec's
batch_size is the global batch, each of the K processes computes batch_size / K of it
(K must divide it), and the gradients are summed over the processes before every
update, so the weights equal one process's up to summation order. Rank 0 alone prints
progress and writes the weights, checkpoints and logs; --resume works with any K. A
process that fails ends the whole job (MPI_Abort) and the last checkpoint stays intact.
Set KILN_NUM_THREADS=1 for one thread per process when the processes share a machine.";

/// `kiln train`: on its own, or as one of the processes mpirun started (the failure of
/// any of them ends them all, after saying why).
pub fn train(a: &TrainArgs) -> Result {
    let world = kiln::dist::world()?;
    let result = train_on(a, world.as_ref());
    match &result {
        // Every process stops at the same batch for these, and rank 0 said why.
        Err(CliError::Diverged | CliError::Interrupted) | Ok(()) => result,
        Err(e) if world.size() > 1 => {
            eprintln!(
                "error on rank {} of {} processes; ending the job:",
                world.rank(),
                world.size()
            );
            e.report();
            world.abort(e.exit_code())
        }
        Err(_) => result,
    }
}

fn train_on(a: &TrainArgs, world: &dyn kiln::dist::Comm) -> Result {
    let speaks = world.rank() == 0;
    let need = Need {
        work: kiln::budget::Work::Train,
        batch: a.batch_size,
        memory: &a.memory,
    };
    let mut net = compile(&a.spec, a.backend, a.seed, need)?;
    needs_train(&net, &a.spec, "trained")?;
    if a.init.is_some() && a.resume.is_some() {
        return Err(CliError::Usage(
            "give --init (start from weights) or --resume (continue a run), not both".into(),
        ));
    }
    if let Some(w) = &a.init {
        net.load_weights(w)?;
        kiln::fit::checkpoint::check_finite(w, net.weights())?;
    }
    let resume = match &a.resume {
        Some(c) => Some(net.load_checkpoint(c)?),
        None => None,
    };
    // `--resume CKPT` alone continues the run: its data and outputs come from the
    // checkpoint unless given again.
    let filled = resume
        .as_ref()
        .and_then(|r| r.meta.run.as_ref())
        .map(|f| with_run_files(a, f));
    let a = filled.as_ref().unwrap_or(a);
    let mut fit = FitOptions {
        epochs: a.epochs,
        batch_size: a.batch_size,
        seed: a.seed,
        shuffle: a.no_shuffle.then_some(false),
        validation_split: a.validation_split,
        ..FitOptions::default()
    };
    let ckpt_settings = resume.as_ref().and_then(|r| r.meta.settings.clone());
    let settings = Settings::resolve(net.graph(), &fit.overrides(), ckpt_settings.as_ref())
        .map_err(CliError::Usage)?;
    fit.resume = resume;
    let path = data_path(&net, a.data.as_ref(), &a.spec)?;
    let opts = LoadOptions {
        target_column: a.target_column.clone(),
        targets: true,
        ..LoadOptions::default()
    };
    let data = Dataset::open(&path, net.graph(), &opts)?;
    // Again with the data's sizes bound (a symbolic axis the data makes long).
    super::check_budget(
        net.graph(),
        kiln::budget::Work::Train,
        settings.batch_size.min(data.len().max(1)),
        &super::input_dims(net.graph(), &data.input_shapes()),
        &a.memory,
    )?;
    let (out, ckpt) = outputs(a);
    let spec_files = kiln::fit::callbacks::output_files(&net);
    guard_outputs(a, &path, &out, &ckpt, &spec_files)?;
    for p in [Some(&out), Some(&ckpt), a.plot.as_ref(), a.log.as_ref()]
        .into_iter()
        .flatten()
        .filter(|_| speaks)
    {
        check_writable(p)?;
    }
    fit.checkpoint = Some(ckpt.clone());
    fit.csv_log = a.log.clone();
    fit.run_files = Some(RunFiles {
        data: Some(absolute(&path)),
        target_column: a.target_column.clone(),
        out: Some(absolute(&out)),
        log: a.log.as_deref().map(absolute),
        plot: a.plot.as_deref().map(absolute),
    });
    fit.interrupt = Some(interrupt_flag());
    if !speaks {
        net.fit_on(&data, &fit, &mut kiln::fit::Silent, world)?;
        return Ok(());
    }
    announce(
        a,
        &net,
        &path,
        data.len(),
        settings.validation_split(),
        world.size(),
    );
    let mut progress = Progress::new();
    let report = net.fit_on(&data, &fit, &mut progress, world)?;
    if let Some(p) = &a.plot {
        let title = format!("{} — training curves", net.graph().name);
        match kiln::plot::write(p, &report.history, &title) {
            Ok(()) => println!("plotted the training curves to {}", p.display()),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    stopped(a, &report, &ckpt)?;
    net.save_weights(&out)?;
    println!(
        "wrote the weights to {} ({}); checkpoint: {}",
        out.display(),
        kiln::weights::describe(net.weights()),
        ckpt.display()
    );
    Ok(())
}

/// The arguments with what the resumed run used where they are not given again.
fn with_run_files(a: &TrainArgs, f: &RunFiles) -> TrainArgs {
    let mut a = a.clone();
    a.data = a.data.or_else(|| f.data.clone());
    a.target_column = a.target_column.or_else(|| f.target_column.clone());
    a.out = a.out.or_else(|| f.out.clone());
    a.log = a.log.or_else(|| f.log.clone());
    a.plot = a.plot.or_else(|| f.plot.clone());
    a
}

/// `p` from the root, so that a resumed run finds it from any working directory.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Refuses outputs that are inputs or each other (`kiln::paths::guard_outputs`),
/// including the files the spec's callbacks write. A resumed checkpoint that is also
/// `--checkpoint` (or a model_checkpoint's file) is rewritten on purpose.
fn guard_outputs(
    a: &TrainArgs,
    data: &Path,
    out: &Path,
    ckpt: &Path,
    spec_files: &[(&str, PathBuf)],
) -> Result {
    let resume = a.resume.as_deref().filter(|r| {
        !kiln::paths::same_file(r, ckpt)
            && !spec_files.iter().any(|(_, f)| kiln::paths::same_file(r, f))
    });
    let mut inputs = vec![("the spec", a.spec.as_path()), ("the data", data)];
    inputs.extend(a.init.as_deref().map(|p| ("--init", p)));
    inputs.extend(resume.map(|p| ("--resume", p)));
    let mut outs = vec![("--out", out), ("--checkpoint", ckpt)];
    outs.extend(a.log.as_deref().map(|p| ("--log", p)));
    outs.extend(a.plot.as_deref().map(|p| ("--plot", p)));
    outs.extend(spec_files.iter().map(|(who, p)| (*who, p.as_path())));
    kiln::paths::guard_outputs(&inputs, &outs).map_err(CliError::Usage)
}

/// The weights' and the checkpoint's paths: the flags', else beside the spec.
fn outputs(a: &TrainArgs) -> (PathBuf, PathBuf) {
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
    (out, ckpt)
}

/// `training NAME on FILE: N examples, M held out for validation; backend jit`.
fn announce(a: &TrainArgs, net: &kiln::Net, path: &Path, len: usize, split: f64, ranks: usize) {
    let n_val = if split > 0.0 {
        len - (len as f64 * (1.0 - split)).floor() as usize
    } else {
        0
    };
    println!(
        "training {} on {}: {} examples{}; backend {}{}{}",
        net.graph().name,
        path.display(),
        group_digits((len - n_val) as i64),
        if n_val > 0 {
            format!(", {} held out for validation", group_digits(n_val as i64))
        } else {
            String::new()
        },
        match Backend::from(a.backend) {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        },
        if ranks > 1 {
            format!("; {ranks} processes")
        } else {
            String::new()
        },
        match &a.resume {
            Some(r) => format!("; resuming {} at step {}", r.display(), net.step()),
            None => String::new(),
        }
    );
}

/// Explains a run that did not complete: diverged (exit 1) or interrupted (130).
fn stopped(a: &TrainArgs, report: &FitReport, ckpt: &Path) -> Result {
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
            Err(CliError::Diverged)
        }
        Stop::Interrupted {
            epoch,
            batch,
            checkpoint,
        } => {
            match checkpoint {
                // The checkpoint holds the data, outputs and settings; only the
                // backend is chosen anew.
                Some(c) => println!(
                    "interrupted in epoch {}, after {batch} batches: checkpoint written to {}\n  continue with: kiln train {} --resume {}{}",
                    epoch + 1,
                    c.display(),
                    a.spec.display(),
                    c.display(),
                    match Backend::from(a.backend) {
                        Backend::Jit => "",
                        Backend::Interp => " --backend interp",
                    }
                ),
                None => println!("interrupted"),
            }
            Err(CliError::Interrupted)
        }
        Stop::Completed | Stop::EarlyStopping { .. } => Ok(()),
    }
}
