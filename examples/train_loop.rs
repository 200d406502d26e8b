//! A custom training loop over `Net::train_step`: its own shuffling, its own
//! learning-rate schedule (linear warm-up, then cosine decay over the steps) and its
//! own logging (mean loss per epoch), then `Net::evaluate` on a held-out split.
//! Run with `cargo run --release --example train_loop`.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use kiln::{Model, Options};

const EPOCHS: usize = 3;
const BATCH: usize = 32;
const PEAK_LR: f32 = 0.003;
const WARMUP_STEPS: u64 = 20;
const SEED: u64 = 42;

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::from_path(root.join("specs/digits_mlp.yaml"))?;
    let mut net = model.compile(&Options::default())?;
    let data = net.load_data(root.join("data/digits.npz"))?;
    let (train, val) = data.split(0.2)?;
    let val = val.ok_or("the validation split is empty")?;
    println!(
        "{} training and {} validation examples",
        train.len(),
        val.len()
    );

    let per_epoch = train.len().div_ceil(BATCH) as u64;
    let total = per_epoch * EPOCHS as u64;
    let mut rng = SplitMix(SEED);
    let start = Instant::now();
    for epoch in 0..EPOCHS {
        let mut order: Vec<usize> = (0..train.len()).collect();
        shuffle(&mut order, &mut rng);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for idx in order.chunks(BATCH) {
            let (xs, ys) = train.gather(idx)?;
            let lr = schedule(net.step(), total);
            let key = kiln::net::rng_key(SEED, net.step());
            let out = net.train_step(xs, ys, lr, key)?;
            if !out.loss.is_finite() {
                return Err(format!("the loss diverged at step {}", net.step()).into());
            }
            loss_sum += f64::from(out.loss) * idx.len() as f64;
            seen += idx.len();
        }
        println!(
            "epoch {}/{EPOCHS}: mean loss {:.4}, lr now {:.5}",
            epoch + 1,
            loss_sum / seen as f64,
            schedule(net.step(), total)
        );
    }
    let logs = net.evaluate(&val, None)?;
    let acc = logs
        .get("accuracy")
        .ok_or("the spec has no accuracy metric")?;
    let loss = logs.get("loss").ok_or("evaluate returned no loss")?;
    println!(
        "val loss {loss:.4}, val accuracy {acc:.4} after {} steps in {:.2}s",
        net.step(),
        start.elapsed().as_secs_f64()
    );
    if acc < 0.5 {
        return Err(format!("val accuracy {acc:.4} is too low: training did not work").into());
    }
    Ok(())
}

/// Linear warm-up to `PEAK_LR`, then cosine decay to zero at step `total`.
fn schedule(step: u64, total: u64) -> f32 {
    if step < WARMUP_STEPS {
        return PEAK_LR * (step + 1) as f32 / WARMUP_STEPS as f32;
    }
    let span = total.saturating_sub(WARMUP_STEPS).max(1);
    let t = (step - WARMUP_STEPS).min(span) as f64 / span as f64;
    (f64::from(PEAK_LR) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
}

/// Fisher–Yates over the example indices.
fn shuffle(order: &mut [usize], rng: &mut SplitMix) {
    for i in (1..order.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// SplitMix64: a small, seeded generator, enough for shuffling.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
