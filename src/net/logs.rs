//! Named scalar results of training and evaluation.

/// Named scalar results (`loss`, `accuracy`, `val_loss`, …) in the order they were set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    entries: Vec<(String, f64)>,
}

impl Logs {
    /// The value named `name`, if it was set.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
    /// Sets a value, replacing one of the same name in its place.
    pub fn set(&mut self, name: &str, v: f64) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = v,
            None => self.entries.push((name.to_string(), v)),
        }
    }
    /// Every name, in the order the values were first set.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }
    /// Every `(name, value)` pair, in the order the values were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }
    /// Whether no value was set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Keras's display order: training values by name, then `val_` values by name.
    pub fn sorted(&self) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.iter().collect();
        v.sort_by(|a, b| (a.0.starts_with("val_"), a.0).cmp(&(b.0.starts_with("val_"), b.0)));
        v
    }
}

/// Running sums over batches (an epoch of training, an evaluation), as Keras's metric
/// objects keep them: the number of examples, the loss × batch size (Keras's `Mean`
/// of batch losses weighted by batch size), each output's loss × batch size, and each
/// metric's state summed (a mean metric's weighted total and count, `auc`'s
/// confusion counts, …), so that every value is computed from the whole run's state,
/// not averaged over batches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Examples seen.
    pub count: f64,
    /// `[loss, output losses…, metric 0's state…, metric 1's state…, …]`.
    pub values: Vec<f64>,
    /// How many output losses, then the size of each metric's state.
    output_losses: usize,
    parts: Vec<usize>,
}

impl Tally {
    /// Empty sums for `output_losses` output losses and metrics with states of
    /// `parts` values.
    pub fn new(output_losses: usize, parts: Vec<usize>) -> Tally {
        let n = 1 + output_losses + parts.iter().sum::<usize>();
        Tally {
            count: 0.0,
            values: vec![0.0; n],
            output_losses,
            parts,
        }
    }

    /// Back to zero.
    pub fn reset(&mut self) {
        self.count = 0.0;
        self.values.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Adds one batch of `n` examples: its loss, output losses and metric states.
    pub fn add(&mut self, loss: f32, output_losses: &[f32], states: &[Vec<f32>], n: usize) {
        let w = n as f64;
        self.count += w;
        self.values[0] += f64::from(loss) * w;
        let mut at = 1;
        for l in output_losses.iter().take(self.output_losses) {
            self.values[at] += f64::from(*l) * w;
            at += 1;
        }
        for (s, &p) in states.iter().zip(&self.parts) {
            for (k, v) in s.iter().take(p).enumerate() {
                self.values[at + k] += f64::from(*v);
            }
            at += p;
        }
    }

    /// The values: `loss`, each output's loss and each metric, named as `names` (the
    /// output losses' names, then the metrics'), each metric's value from its state by
    /// `result(i, state)`.
    pub fn logs(&self, names: &[String], result: impl Fn(usize, &[f64]) -> f64) -> Logs {
        let mut l = Logs::default();
        let c = self.count.max(1.0);
        l.set("loss", self.values[0] / c);
        let mut names = names.iter();
        let mut at = 1;
        for _ in 0..self.output_losses {
            if let Some(n) = names.next() {
                l.set(n, self.values[at] / c);
            }
            at += 1;
        }
        for (i, &p) in self.parts.iter().enumerate() {
            if let Some(n) = names.next() {
                l.set(n, result(i, &self.values[at..at + p]));
            }
            at += p;
        }
        l
    }
}
