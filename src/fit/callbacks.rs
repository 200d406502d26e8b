//! Keras's callbacks, with Keras 3's semantics (keras/src/callbacks/*.py): early
//! stopping (with `restore_best_weights`), model checkpoints (every epoch or the best
//! only), reduce-LR-on-plateau, a CSV log and terminate-on-NaN.
//!
//! Each callback's state (counters, best values, best weights) is part of a
//! checkpoint, so that a resumed run makes exactly the decisions an uninterrupted one
//! would.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Logs;
use crate::spec::train::Named;
use crate::weights::Weights;

/// Whether smaller or larger is better for a monitored quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Min,
    Max,
}

/// EarlyStopping's rule for `mode: auto` (Keras 3): `loss` and the error metrics go
/// down, accuracies go up.
fn early_stopping_direction(mode: &str, monitor: &str) -> Direction {
    match mode {
        "min" => Direction::Min,
        "max" => Direction::Max,
        _ => {
            let m = monitor.strip_prefix("val_").unwrap_or(monitor);
            if m.contains("accuracy") || m == "acc" {
                Direction::Max
            } else {
                Direction::Min
            }
        }
    }
}

/// ModelCheckpoint's and ReduceLROnPlateau's rule for `mode: auto`: "acc" in the name
/// means larger is better.
fn acc_direction(mode: &str, monitor: &str) -> Direction {
    match mode {
        "min" => Direction::Min,
        "max" => Direction::Max,
        _ if monitor.contains("acc") => Direction::Max,
        _ => Direction::Min,
    }
}

/// State of `early_stopping`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyState {
    pub wait: u64,
    pub best: Option<u64>,
    pub best_epoch: usize,
    pub stopped_epoch: usize,
    #[serde(skip)]
    pub best_weights: Option<Weights>,
    pub has_best_weights: bool,
}

/// State of `reduce_lr_on_plateau`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    pub wait: u64,
    pub cooldown_counter: u64,
    /// f64 bits of the best value so far.
    pub best: u64,
}

/// State of `model_checkpoint`: the best value so far (f64 bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub best: u64,
}

/// One callback: its arguments and its state.
#[derive(Clone, Debug)]
pub enum Callback {
    EarlyStopping {
        monitor: String,
        direction: Direction,
        /// Signed as Keras makes it: negative for `min`.
        min_delta: f64,
        patience: u64,
        baseline: Option<f64>,
        restore_best_weights: bool,
        start_from_epoch: usize,
        state: EarlyState,
    },
    ModelCheckpoint {
        filepath: String,
        monitor: String,
        direction: Direction,
        save_best_only: bool,
        state: CheckpointState,
    },
    ReduceLrOnPlateau {
        monitor: String,
        direction: Direction,
        factor: f64,
        patience: u64,
        min_delta: f64,
        cooldown: u64,
        min_lr: f64,
        state: PlateauState,
    },
    CsvLogger {
        filename: String,
        separator: String,
        append: bool,
    },
    TerminateOnNan,
}

/// The serialized state of every callback, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct States {
    pub early: Vec<EarlyState>,
    pub plateau: Vec<PlateauState>,
    pub checkpoint: Vec<CheckpointState>,
}

fn bits(v: f64) -> u64 {
    v.to_bits()
}
fn unbits(b: u64) -> f64 {
    f64::from_bits(b)
}

impl Callback {
    /// Builds a callback from the spec; the arguments were validated by the checker.
    pub fn from_spec(n: &Named) -> Callback {
        let a = &n.args;
        let monitor = a.opt_str("monitor").unwrap_or("val_loss").to_string();
        let mode = a.opt_str("mode").unwrap_or("auto");
        match n.name.as_str() {
            "early_stopping" => {
                let direction = early_stopping_direction(mode, &monitor);
                let md = a.float("min_delta").abs();
                Callback::EarlyStopping {
                    monitor,
                    direction,
                    min_delta: if direction == Direction::Min { -md } else { md },
                    patience: a.int("patience").max(0) as u64,
                    baseline: match a.get("baseline") {
                        crate::args::Value::Float(f) => Some(*f),
                        crate::args::Value::Int(i) => Some(*i as f64),
                        _ => None,
                    },
                    restore_best_weights: a.bool("restore_best_weights"),
                    start_from_epoch: a.int("start_from_epoch").max(0) as usize,
                    state: EarlyState::default(),
                }
            }
            "model_checkpoint" => {
                let direction = acc_direction(mode, &monitor);
                Callback::ModelCheckpoint {
                    filepath: a.str("filepath").to_string(),
                    monitor,
                    direction,
                    save_best_only: a.bool("save_best_only"),
                    state: CheckpointState {
                        best: bits(if direction == Direction::Min {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        }),
                    },
                }
            }
            "reduce_lr_on_plateau" => {
                let direction = acc_direction(mode, &monitor);
                Callback::ReduceLrOnPlateau {
                    monitor,
                    direction,
                    factor: a.float("factor"),
                    patience: a.int("patience").max(0) as u64,
                    min_delta: a.float("min_delta"),
                    cooldown: a.int("cooldown").max(0) as u64,
                    min_lr: a.float("min_lr"),
                    state: PlateauState {
                        wait: 0,
                        cooldown_counter: 0,
                        best: bits(if direction == Direction::Min {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        }),
                    },
                }
            }
            "csv_logger" => Callback::CsvLogger {
                filename: a.str("filename").to_string(),
                separator: a.opt_str("separator").unwrap_or(",").to_string(),
                append: a.bool("append"),
            },
            _ => Callback::TerminateOnNan,
        }
    }

    /// The state of the callbacks, for a checkpoint.
    pub fn save_states(cbs: &[Callback]) -> States {
        let mut s = States::default();
        for c in cbs {
            match c {
                Callback::EarlyStopping { state, .. } => {
                    let mut st = state.clone();
                    st.has_best_weights = st.best_weights.is_some();
                    st.best_weights = None;
                    s.early.push(st)
                }
                Callback::ReduceLrOnPlateau { state, .. } => s.plateau.push(state.clone()),
                Callback::ModelCheckpoint { state, .. } => s.checkpoint.push(state.clone()),
                _ => {}
            }
        }
        s
    }

    /// Restores the callbacks' states from a checkpoint (best weights are restored by
    /// the caller). Returns false when the checkpoint's callbacks differ from these.
    pub fn load_states(cbs: &mut [Callback], s: &States) -> bool {
        let (mut e, mut p, mut k) = (0, 0, 0);
        for c in cbs.iter_mut() {
            match c {
                Callback::EarlyStopping { state, .. } => {
                    let Some(x) = s.early.get(e) else {
                        return false;
                    };
                    *state = x.clone();
                    e += 1;
                }
                Callback::ReduceLrOnPlateau { state, .. } => {
                    let Some(x) = s.plateau.get(p) else {
                        return false;
                    };
                    *state = x.clone();
                    p += 1;
                }
                Callback::ModelCheckpoint { state, .. } => {
                    let Some(x) = s.checkpoint.get(k) else {
                        return false;
                    };
                    *state = x.clone();
                    k += 1;
                }
                _ => {}
            }
        }
        e == s.early.len() && p == s.plateau.len() && k == s.checkpoint.len()
    }
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
    let mut d = EpochDecision::default();
    let mut lr_now = lr;
    for c in cbs.iter_mut() {
        match c {
            Callback::EarlyStopping {
                monitor,
                direction,
                min_delta,
                patience,
                baseline,
                restore_best_weights,
                start_from_epoch,
                state,
            } => {
                let Some(current) = logs.get(monitor) else {
                    d.messages.push(format!(
                        "warning: early stopping monitors `{monitor}`, which is not available; available: {}",
                        logs.names().join(", ")
                    ));
                    continue;
                };
                if epoch < *start_from_epoch {
                    continue;
                }
                if *restore_best_weights && state.best_weights.is_none() {
                    state.best_weights = Some(weights.clone());
                    state.best_epoch = epoch;
                }
                state.wait += 1;
                let better = |v: f64, reference: Option<f64>| match reference {
                    None => true,
                    Some(r) => match direction {
                        Direction::Min => v - *min_delta < r,
                        Direction::Max => v - *min_delta > r,
                    },
                };
                if better(current, state.best.map(unbits)) {
                    state.best = Some(bits(current));
                    state.best_epoch = epoch;
                    if *restore_best_weights {
                        state.best_weights = Some(weights.clone());
                    }
                    if baseline.is_none() || better(current, *baseline) {
                        state.wait = 0;
                    }
                    continue;
                }
                if state.wait >= *patience && epoch > 0 {
                    state.stopped_epoch = epoch;
                    d.stop = true;
                }
            }
            Callback::ReduceLrOnPlateau {
                monitor,
                direction,
                factor,
                patience,
                min_delta,
                cooldown,
                min_lr,
                state,
            } => {
                logs.set("learning_rate", f64::from(lr_now));
                let Some(current) = logs.get(monitor) else {
                    d.messages.push(format!(
                        "warning: reduce_lr_on_plateau monitors `{monitor}`, which is not available; available: {}",
                        logs.names().join(", ")
                    ));
                    continue;
                };
                if state.cooldown_counter > 0 {
                    state.cooldown_counter -= 1;
                    state.wait = 0;
                }
                let best = unbits(state.best);
                let improved = match direction {
                    Direction::Min => current < best - *min_delta,
                    Direction::Max => current > best + *min_delta,
                };
                if improved {
                    state.best = bits(current);
                    state.wait = 0;
                } else if state.cooldown_counter == 0 {
                    state.wait += 1;
                    if state.wait >= *patience {
                        let old = f64::from(lr_now);
                        if lr_now > *min_lr as f32 {
                            let new = (old * *factor).max(*min_lr);
                            lr_now = new as f32;
                            d.new_lr = Some(lr_now);
                            d.messages.push(format!(
                                "Epoch {}: ReduceLROnPlateau reducing learning rate to {lr_now}.",
                                epoch + 1
                            ));
                            state.cooldown_counter = *cooldown;
                            state.wait = 0;
                        }
                    }
                }
            }
            Callback::ModelCheckpoint {
                filepath,
                monitor,
                direction,
                save_best_only,
                state,
            } => {
                let path = match format_path(filepath, epoch, logs) {
                    Ok(p) => crate::net::join_clean(spec_dir, Path::new(&p)),
                    Err(e) => {
                        d.messages.push(format!("warning: model_checkpoint: {e}"));
                        continue;
                    }
                };
                if !*save_best_only {
                    d.save.push(path);
                    continue;
                }
                let Some(current) = logs.get(monitor) else {
                    d.messages.push(format!(
                        "warning: model_checkpoint can save the best model only with `{monitor}` available, skipping"
                    ));
                    continue;
                };
                let best = unbits(state.best);
                let better = match direction {
                    Direction::Min => current < best,
                    Direction::Max => current > best,
                };
                if better {
                    d.messages.push(format!(
                        "Epoch {}: {monitor} improved from {} to {}, saving model to {}",
                        epoch + 1,
                        fmt5(best),
                        fmt5(current),
                        path.display()
                    ));
                    state.best = bits(current);
                    d.save.push(path);
                }
            }
            Callback::CsvLogger { .. } | Callback::TerminateOnNan => {}
        }
    }
    d
}

fn fmt5(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:.5}")
    }
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
