//! Loads a spec and saved weights, and predicts on a batch read from a `.npy` file.
//!
//! No trained weights are committed, so the example first trains one quick epoch of
//! `specs/digits_mlp.yaml` on `data/digits.npz` and saves the weights to a temporary
//! folder; a second compiled `Net` loads them back and predicts on a batch written to
//! and read back from a `.npy` file. Run with `cargo run --release --example predict`.

use std::error::Error;
use std::path::{Path, PathBuf};

use kiln::data::{self, Content};
use kiln::ndarray::{ArrayD, Axis};
use kiln::{FitOptions, Model, Options};

/// How many examples the batch holds, and how many of them are printed.
const BATCH: usize = 16;
const SHOWN: usize = 8;

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::from_path(root.join("specs/digits_mlp.yaml"))?;
    let dir = TempDir::new("predict")?;

    // Train one epoch and save the weights (standing in for a trained model on disk).
    let mut trainer = model.compile(&Options::default())?;
    let digits = trainer.load_data(root.join("data/digits.npz"))?;
    let fit = FitOptions {
        epochs: Some(1),
        ..FitOptions::default()
    };
    let report = trainer.fit(&digits, &fit)?;
    let weights = dir.path.join("digits_mlp.safetensors");
    trainer.save_weights(&weights)?;
    println!(
        "trained {} steps, saved {}",
        report.steps,
        weights.display()
    );

    // A second compiled model, with the saved weights.
    let mut net = model.compile(&Options::default())?;
    net.load_weights(&weights)?;

    // A batch of images as a `.npy` file, read back as a program would read its input.
    let idx: Vec<usize> = (0..BATCH.min(digits.len())).collect();
    let (xs, ys) = digits.gather(&idx)?;
    let images = dir.path.join("batch.npy");
    data::write(&images, &[("image".to_string(), xs[0].clone())])?;
    let batch = match data::read(&images)? {
        Content::Single(loaded) => loaded.data,
        _ => return Err("expected one array in the .npy file".into()),
    };

    let logits = net.predict(&[("image", batch.view())])?;
    let classes = argmax_rows(&logits);
    let again = trainer.predict(&[("image", batch.view())])?;
    if again != logits {
        return Err("the reloaded weights predict differently from the trained model".into());
    }
    let labels = &ys[0];
    let right = classes
        .iter()
        .zip(labels.iter())
        .filter(|(c, l)| **c as f32 == **l)
        .count();
    for (i, (c, l)) in classes.iter().zip(labels.iter()).take(SHOWN).enumerate() {
        println!("example {i}: predicted {c}, label {l}");
    }
    println!(
        "predicted classes: {right} of {} match the labels",
        classes.len()
    );
    Ok(())
}

/// The index of the largest value of each row of a `[batch, classes]` array.
fn argmax_rows(a: &ArrayD<f32>) -> Vec<usize> {
    a.axis_iter(Axis(0))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// A folder under the system's temporary directory, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(tag: &str) -> std::io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("kiln-example-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
