//! Keras-like progress: a live bar on stderr while an epoch runs (only on a terminal),
//! and one line per epoch on stdout.

use std::io::Write;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::fit::{Logs, Observer};

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
pub struct Progress {
    bar: Option<ProgressBar>,
    epoch_label: String,
    started: Instant,
}

impl Progress {
    pub fn new() -> Progress {
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
