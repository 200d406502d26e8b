//! Named scalar results of training and evaluation.

/// Named scalar results (`loss`, `accuracy`, `val_loss`, …) in the order they were set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Logs {
    entries: Vec<(String, f64)>,
}

impl Logs {
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
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), *v))
    }
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
