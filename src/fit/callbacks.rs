//! The fit loop's side of Keras's callbacks (the callbacks themselves are the
//! catalog's, [`crate::catalog::callbacks`]): building them from the spec, running
//! them at the end of an epoch against the loop's logs, learning rate and weights, the
//! checkpoint paths they name, and the CSV log.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Logs;
use crate::catalog::callbacks::{self as catalog, Host};
pub use crate::catalog::callbacks::{
    Callback, CallbackKind, CheckpointState, Direction, EarlyState, PlateauState, Snapshot, States,
};
use crate::spec::train::Named;
use crate::weights::Weights;

/// Builds a callback from the spec; the arguments were validated by the checker.
pub fn from_spec(n: &Named<CallbackKind>) -> Callback {
    (n.kind.build)(&n.args)
}

/// The files the spec's callbacks write, resolved against the spec's folder, with who
/// writes each: callers guard them like their own outputs (never over the data).
pub fn output_files(net: &crate::net::Net) -> Vec<(&'static str, PathBuf)> {
    let Some(train) = &net.graph().train else {
        return Vec::new();
    };
    train
        .decl
        .callbacks
        .iter()
        .map(from_spec)
        .filter_map(|c| {
            let (who, f) = c.output_file()?;
            Some((who, crate::net::join_clean(net.spec_dir(), Path::new(f))))
        })
        .collect()
}

/// What the callbacks decided at the end of an epoch.
#[derive(Debug, Default)]
pub struct EpochDecision {
    /// Stop training after this epoch.
    pub stop: bool,
    /// The new learning rate, if reduce-LR-on-plateau changed it.
    pub new_lr: Option<f32>,
    /// Checkpoint files to write now (full checkpoints: weights, optimizer, state).
    pub save: Vec<PathBuf>,
    /// Messages to show (Keras's verbose callback lines).
    pub messages: Vec<String>,
}

/// The loop as the callbacks see it at the end of one epoch.
struct EpochEnd<'a> {
    epoch: usize,
    logs: &'a mut Logs,
    lr: f32,
    weights: &'a Weights,
    spec_dir: &'a Path,
    decision: EpochDecision,
}

impl Host for EpochEnd<'_> {
    fn log(&self, name: &str) -> Option<f64> {
        self.logs.get(name)
    }
    fn set_log(&mut self, name: &str, v: f64) {
        self.logs.set(name, v);
    }
    fn log_names(&self) -> Vec<String> {
        self.logs.names()
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
        self.decision.new_lr = Some(lr);
    }
    fn stop(&mut self) {
        self.decision.stop = true;
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.weights.clone())
    }
    fn checkpoint_path(&self, template: &str) -> Result<PathBuf, String> {
        let p = format_path(template, self.epoch, self.logs)?;
        Ok(crate::net::join_clean(self.spec_dir, Path::new(&p)))
    }
    fn save(&mut self, path: PathBuf) {
        self.decision.save.push(path);
    }
    fn message(&mut self, m: String) {
        self.decision.messages.push(m);
    }
}

/// Runs every callback's `on_epoch_end` in order (Keras's order: the list as written).
/// `lr` is the optimizer's learning rate (f32, as Keras's variable); when a plateau
/// callback is present, `learning_rate` is added to the logs before later callbacks
/// see them, as Keras does.
pub fn on_epoch_end(
    cbs: &mut [Callback],
    epoch: usize,
    logs: &mut Logs,
    lr: f32,
    weights: &Weights,
    spec_dir: &Path,
) -> EpochDecision {
    let mut host = EpochEnd {
        epoch,
        logs,
        lr,
        weights,
        spec_dir,
        decision: EpochDecision::default(),
    };
    catalog::on_epoch_end(cbs, epoch, &mut host);
    host.decision
}

/// The best weights an early-stopping callback kept, if any.
pub fn best_weights(state: &EarlyState) -> Option<&Weights> {
    state.best_weights.as_ref().and_then(Snapshot::get)
}

/// Keras's (Python's) `str.format` of a checkpoint path: `{epoch}`, `{epoch:02d}`,
/// `{val_loss:.2f}`. Epochs are 1-based in names, as in Keras.
pub fn format_path(template: &str, epoch: usize, logs: &Logs) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        if let Some(stripped) = after.strip_prefix('{') {
            out.push('{');
            rest = stripped;
            continue;
        }
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has an unclosed `{{`"))?;
        let field = &after[..close];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        let value = if name == "epoch" {
            (epoch + 1) as f64
        } else {
            logs.get(name).ok_or_else(|| {
                format!(
                    "`{template}` names `{{{name}}}`, which is not among: epoch, {}",
                    logs.names().join(", ")
                )
            })?
        };
        out.push_str(&py_format(value, spec, name == "epoch"));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out.replace("}}", "}"))
}

/// A small part of Python's format mini-language: `[0][width][.prec](d|f|e)`.
fn py_format(v: f64, spec: &str, int: bool) -> String {
    if spec.is_empty() {
        return if int {
            format!("{}", v as i64)
        } else {
            python_float(v)
        };
    }
    let (body, ty) = spec.split_at(spec.len() - 1);
    let zero = body.starts_with('0');
    let (width, prec) = match body.split_once('.') {
        Some((w, p)) => (w.parse::<usize>().unwrap_or(0), p.parse::<usize>().ok()),
        None => (body.parse::<usize>().unwrap_or(0), None),
    };
    let s = match ty {
        "d" => format!("{}", v as i64),
        "f" => format!("{:.*}", prec.unwrap_or(6), v),
        "e" => format!("{:.*e}", prec.unwrap_or(6), v),
        _ => python_float(v),
    };
    if s.len() >= width {
        s
    } else if zero {
        let neg = s.starts_with('-');
        let digits = s.trim_start_matches('-');
        format!(
            "{}{}{digits}",
            if neg { "-" } else { "" },
            "0".repeat(width - s.len())
        )
    } else {
        format!("{}{s}", " ".repeat(width - s.len()))
    }
}

/// Python's `repr` of a float: the shortest round-trip digits; exponent form below
/// 1e-4 and from 1e16, with a two-digit signed exponent (`1e-07`).
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = v.abs();
    if v == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{v}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{v:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        format!("{m}e{sign}{digits:0>2}")
    }
}

/// Keras's CSVLogger: one row per epoch, `epoch` (0-based) then the logs' keys sorted.
pub struct CsvLog {
    path: PathBuf,
    separator: String,
    keys: Option<Vec<String>>,
}

impl CsvLog {
    /// Opens the log: truncated (or appended to with `append`), then the rows of any
    /// epochs already done (when resuming) are written again.
    pub fn open(
        path: PathBuf,
        separator: &str,
        append: bool,
        history: &[Logs],
    ) -> std::io::Result<CsvLog> {
        let exists_nonempty = append
            && std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
        let mut log = CsvLog {
            path,
            separator: separator.to_string(),
            keys: None,
        };
        if exists_nonempty {
            // Keep the existing header; rows follow it.
            let text = std::fs::read_to_string(&log.path).unwrap_or_default();
            if let Some(h) = text.lines().next() {
                let keys: Vec<String> = h.split(separator).skip(1).map(str::to_string).collect();
                log.keys = Some(keys);
            }
        } else {
            std::fs::File::create(&log.path)?;
        }
        for (e, l) in history.iter().enumerate() {
            log.row(e, l)?;
        }
        Ok(log)
    }

    /// Appends the row of epoch `epoch` (0-based).
    pub fn row(&mut self, epoch: usize, logs: &Logs) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        if self.keys.is_none() {
            let mut keys = logs.names();
            keys.sort();
            writeln!(f, "epoch{}{}", self.separator, keys.join(&self.separator))?;
            self.keys = Some(keys);
        }
        let keys = self.keys.as_deref().unwrap_or(&[]);
        let vals: Vec<String> = keys
            .iter()
            .map(|k| logs.get(k).map(python_float).unwrap_or_else(|| "NA".into()))
            .collect();
        writeln!(f, "{epoch}{}{}", self.separator, vals.join(&self.separator))?;
        f.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_formats() {
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(2.5e16), "2.5e+16");
        let mut logs = Logs::default();
        logs.set("val_loss", 0.12345);
        assert_eq!(
            format_path("ckpt-{epoch:02d}-{val_loss:.2f}.safetensors", 2, &logs).unwrap(),
            "ckpt-03-0.12.safetensors"
        );
        assert!(format_path("x-{nope}.safetensors", 0, &logs).is_err());
    }

    fn early(patience: u64, restore: bool) -> Callback {
        Callback::EarlyStopping {
            monitor: "val_loss".into(),
            direction: Direction::Min,
            min_delta: -0.0,
            patience,
            baseline: None,
            restore_best_weights: restore,
            start_from_epoch: 0,
            state: EarlyState::default(),
        }
    }

    #[test]
    fn early_stopping_follows_keras() {
        // Losses 1.0, 0.5, 0.6, 0.7 with patience 2: stops at epoch index 3, best 1.
        let mut cbs = vec![early(2, true)];
        let w = Weights::new();
        let mut stops = Vec::new();
        for (e, v) in [1.0, 0.5, 0.6, 0.7].iter().enumerate() {
            let mut logs = Logs::default();
            logs.set("val_loss", *v);
            let d = on_epoch_end(&mut cbs, e, &mut logs, 0.1, &w, Path::new("."));
            stops.push(d.stop);
        }
        assert_eq!(stops, vec![false, false, false, true]);
        let Callback::EarlyStopping { state, .. } = &cbs[0] else {
            unreachable!()
        };
        assert_eq!(state.best_epoch, 1);
        assert!(state.best_weights.is_some());
    }

    #[test]
    fn plateau_reduces_after_patience_with_cooldown() {
        let mut cbs = vec![Callback::ReduceLrOnPlateau {
            monitor: "loss".into(),
            direction: Direction::Min,
            factor: 0.5,
            patience: 1,
            min_delta: 1e-4,
            cooldown: 2,
            min_lr: 0.0,
            state: PlateauState {
                wait: 0,
                cooldown_counter: 0,
                best: f64::INFINITY.to_bits(),
            },
        }];
        let w = Weights::new();
        let mut lr = 1.0f32;
        let mut lrs = Vec::new();
        for (e, v) in [1.0, 1.0, 1.0, 1.0, 1.0].iter().enumerate() {
            let mut logs = Logs::default();
            logs.set("loss", *v);
            let d = on_epoch_end(&mut cbs, e, &mut logs, lr, &w, Path::new("."));
            assert_eq!(logs.get("learning_rate"), Some(f64::from(lr)));
            if let Some(n) = d.new_lr {
                lr = n;
            }
            lrs.push(lr);
        }
        // Epoch 1: wait 1 ≥ 1 → 0.5, cooldown 2; epoch 2: in cooldown; epoch 3: the
        // cooldown ends (Keras decrements before testing) → 0.25.
        assert_eq!(lrs, vec![1.0, 0.5, 0.5, 0.25, 0.25]);
    }
}
