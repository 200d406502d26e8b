//! `kiln build`: a model compiled ahead of time to an object file and a C header
//! (the work is `kiln::aot`'s).

use std::path::{Path, PathBuf};

use kiln::Error;
use kiln::aot::BuildOptions;

use super::{CliError, Result, load, numbers};

/// `kiln build SPEC --weights W -o F.o --header F.h [--train]`.
#[derive(clap::Args)]
pub struct BuildArgs {
    spec: PathBuf,
    /// The weights to embed (`.safetensors`, as `kiln init` or `kiln train --out` write them).
    #[arg(long)]
    weights: PathBuf,
    /// Where to write the object file (`.o`).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Where to write the C header (`.h`).
    #[arg(long)]
    header: PathBuf,
    /// Also export `NAME_train_step` (one `kiln train` step, updating the embedded
    /// weights and optimizer state in place).
    #[arg(long)]
    train: bool,
    /// The batch size the functions are built for.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = numbers::at_least_one)]
    batch: usize,
    /// The value of a symbolic dimension, `NAME=VALUE` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = dim_value)]
    dims: Vec<(String, i64)>,
    /// The seed of dropout's random key in the training step [default: the spec's].
    #[arg(long, allow_hyphen_values = true, value_parser = numbers::seed)]
    seed: Option<u64>,
}

fn dim_value(s: &str) -> std::result::Result<(String, i64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: give a dimension as NAME=VALUE, e.g. seq=20"))?;
    let v: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: the value must be a whole number"))?;
    if v < 1 {
        return Err(format!("`{s}`: the value must be at least 1"));
    }
    Ok((k.trim().to_string(), v))
}

fn write(path: &Path, bytes: &[u8]) -> Result {
    kiln::paths::write_atomic(path, |w| w.write_all(bytes)).map_err(|error| {
        CliError::Lib(Error::Io {
            path: path.to_path_buf(),
            action: "write",
            error,
        })
    })
}

/// Runs `kiln build`.
pub fn build(a: &BuildArgs) -> Result {
    kiln::paths::guard_outputs(
        &[("the spec", &a.spec), ("the weights", &a.weights)],
        &[("-o", &a.out), ("--header", &a.header)],
    )
    .map_err(CliError::Usage)?;
    let m = load(&a.spec)?;
    let mut net = m.compile(&kiln::Options {
        seed: a.seed,
        ..kiln::Options::default()
    })?;
    net.load_weights(&a.weights)?;
    let opts = BuildOptions {
        batch: a.batch as i64,
        dims: a.dims.clone(),
        train: a.train,
    };
    let built = kiln::aot::build(&net, &opts)?;
    write(&a.out, &built.object)?;
    write(&a.header, built.header.as_bytes())?;
    let f = if a.train {
        format!("{0}_predict, {0}_train_step", built.prefix)
    } else {
        format!("{}_predict", built.prefix)
    };
    println!(
        "wrote {} ({} bytes: {f}) and {}, batch {}; link with `cc main.c {} -lm`",
        a.out.display(),
        kiln::layers::group_digits(built.object.len() as i64),
        a.header.display(),
        a.batch,
        a.out.display()
    );
    Ok(())
}
