//! `kiln summary`: a table like Keras's `model.summary()` — layer (type), output shape
//! (with symbols where Keras prints `None`), parameter count, connected to — then the
//! totals, with the same counts Keras gives for the same model.

use crate::check::{Graph, Source};
use crate::dim::{Dim, fmt_shape};
use crate::layers::{MaskUse, group_digits};

/// Most names one cell or list of the summary shows: a `concatenate` of 10,000 inputs
/// would otherwise widen every row of the table to hold all of them (output quadratic
/// in the spec).
pub const MAX_LISTED: usize = 8;

/// The first of `total` names (at least [`MAX_LISTED`] of them when there are that
/// many) joined by `, `: [`MAX_LISTED`] of them, then how many more.
fn listed<S: AsRef<str>>(first: &[S], total: usize) -> String {
    listed_by(first, total, ", ")
}

/// [`listed`] with another separator.
fn listed_by<S: AsRef<str>>(first: &[S], total: usize, sep: &str) -> String {
    let shown: Vec<&str> = first.iter().take(MAX_LISTED).map(AsRef::as_ref).collect();
    let mut out = shown.join(sep);
    if total > shown.len() {
        out.push_str(&format!(
            ", … and {} more",
            group_digits((total - shown.len()) as i64)
        ));
    }
    out
}

fn shape(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

/// Keras's `readable_memory_size` for f32 weights.
fn memory(params: i64) -> String {
    let mut size = params as f64 * 4.0;
    for unit in ["B", "KB", "MB", "GB"] {
        if size < 1024.0 || unit == "GB" {
            return format!("{size:.2} {unit}");
        }
        size /= 1024.0;
    }
    unreachable!("the loop returns at GB")
}

/// Renders the summary table.
pub fn render(g: &Graph) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for inp in &g.inputs {
        rows.push([
            format!("{} (InputLayer)", inp.name),
            shape(&inp.ty.shape),
            "0".into(),
            "-".into(),
        ]);
    }
    for l in &g.layers {
        let count: i64 = l.params.iter().map(|p| p.count()).sum();
        let connected: Vec<&str> = l
            .inputs
            .iter()
            .take(MAX_LISTED)
            .map(|&s| g.name_of(s))
            .collect();
        // A layer with several outputs lists their shapes, as Keras prints them.
        let out = if l.parts.is_empty() {
            shape(&l.output.shape)
        } else {
            let each: Vec<String> = l.parts.iter().map(|p| shape(&p.ty.shape)).collect();
            format!("[{}]", each.join(", "))
        };
        rows.push([
            format!("{} ({})", l.name, l.kind.class),
            out,
            group_digits(count),
            listed(&connected, l.inputs.len()),
        ]);
    }
    let header = ["Layer (type)", "Output Shape", "Param #", "Connected to"];
    let mut w = header.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |l: &str, m: &str, r: &str, fill: &str| {
        let segs: Vec<String> = w.iter().map(|&n| fill.repeat(n + 2)).collect();
        format!("{l}{}{r}\n", segs.join(m))
    };
    let cells = |r: &[String; 4], edge: &str| {
        let mut s = String::from(edge);
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 2 {
                s.push_str(&format!(" {}{} {edge}", " ".repeat(pad), c));
            } else {
                s.push_str(&format!(" {}{} {edge}", c, " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    };
    let mut out = format!("Model: \"{}\"\n", g.name);
    out.push_str(&line("┏", "┳", "┓", "━"));
    out.push_str(&cells(&header.map(String::from), "┃"));
    out.push_str(&line("┡", "╇", "┩", "━"));
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(&line("├", "┼", "┤", "─"));
        }
        out.push_str(&cells(r, "│"));
    }
    out.push_str(&line("└", "┴", "┘", "─"));
    let (total, trainable, non) = g.param_counts();
    out.push_str(&format!(
        " Total params: {} ({})\n",
        group_digits(total),
        memory(total)
    ));
    out.push_str(&format!(
        " Trainable params: {} ({})\n",
        group_digits(trainable),
        memory(trainable)
    ));
    out.push_str(&format!(
        " Non-trainable params: {} ({})\n",
        group_digits(non),
        memory(non)
    ));
    out.push_str(&masks(g));
    let outs: Vec<&str> = g.outputs.iter().map(|&s| g.name_of(s)).collect();
    if g.outputs.len() > 1
        || g.outputs
            .first()
            .is_some_and(|s| *s != Source::Layer(g.layers.len().wrapping_sub(1)))
    {
        out.push_str(&format!(" Outputs: {}\n", listed(&outs, outs.len())));
    }
    out
}

/// The layers that make, use, pass on or drop a Keras mask, one line (nothing when no
/// layer makes one): ` Masks: embedding produces, lstm consumes, propagates, …`.
fn masks(g: &Graph) -> String {
    let notes: Vec<String> = g
        .masks()
        .iter()
        .zip(&g.layers)
        .filter(|((used, _), _)| *used != MaskUse::None)
        .map(|((used, _), l)| format!("{} {}", l.name, used.word()))
        .collect();
    if notes.is_empty() {
        return String::new();
    }
    format!(" Masks: {}\n", listed_by(&notes, notes.len(), "; "))
}

/// `ok: digits_cnn — 6 layers, 12,345 params; image [batch, 8, 8, 1] → logits [batch, 10]`
pub fn one_line(g: &Graph) -> String {
    let ins: Vec<String> = g
        .inputs
        .iter()
        .take(MAX_LISTED)
        .map(|i| format!("{} {}", i.name, i.ty.describe()))
        .collect();
    let outs: Vec<String> = g
        .outputs
        .iter()
        .take(MAX_LISTED)
        .map(|&s| format!("{} {}", g.name_of(s), fmt_shape(&g.type_of(s).shape)))
        .collect();
    let (total, _, _) = g.param_counts();
    format!(
        "ok: {} — {} layer{}, {} params; {} → {}",
        g.name,
        g.layers.len(),
        if g.layers.len() == 1 { "" } else { "s" },
        group_digits(total),
        listed(&ins, g.inputs.len()),
        listed(&outs, g.outputs.len())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_like_keras() {
        assert_eq!(memory(0), "0.00 B");
        assert_eq!(memory(1234), "4.82 KB");
        assert_eq!(memory(1 << 20), "4.00 MB");
    }
}
