//! Training curves as a PNG: one panel per quantity (the loss, then each metric), the
//! training value and the validation value per epoch. Drawn with plotters into a
//! bitmap, text in DejaVu Sans compiled into the binary (no system fonts needed), and
//! written atomically.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::fit::Logs;

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        )
        .map_err(|_| "the bundled font cannot be read".to_string());
    });
    result
}

/// The quantities to draw: `loss` first, then the metrics (without `val_`), in the
/// order they were logged; `learning_rate` is left out.
fn quantities(history: &[Logs]) -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    for l in history {
        for (k, _) in l.iter() {
            let base = k.strip_prefix("val_").unwrap_or(k).to_string();
            if base != "learning_rate" && !q.contains(&base) {
                q.push(base);
            }
        }
    }
    q.sort_by_key(|k| (k != "loss", k.clone()));
    q
}

/// The drawing area of one panel (or of the whole image).
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Renders the curves of `history` (one `Logs` per epoch) as PNG bytes. `title` goes
/// above the panels.
pub fn render(history: &[Logs], title: &str) -> Result<Vec<u8>, String> {
    register_font()?;
    let qs = quantities(history);
    if history.is_empty() || qs.is_empty() {
        return Err("there is nothing to plot: no epoch finished".into());
    }
    let w = PANEL_W * qs.len() as u32;
    let h = PANEL_H + 40;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, body) = root.split_vertically(40);
        top.draw(&Text::new(
            title.to_string(),
            (12, 10),
            ("sans-serif", 20).into_font().color(&BLACK),
        ))
        .map_err(|e| e.to_string())?;
        let panels = body.split_evenly((1, qs.len()));
        for (q, area) in qs.iter().zip(panels.iter()) {
            draw_panel(area, q, history)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    encode_png(&buf, w, h)
}

/// The finite values of `key` per epoch, as (epoch from 1, value).
fn series(history: &[Logs], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .enumerate()
        .filter_map(|(e, l)| l.get(key).map(|v| ((e + 1) as f64, v)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// The value axis's (low, high) end: the values' range plus 8% either side, or
/// [0, 1] when there is no finite value.
fn value_range(train: &[(f64, f64)], val: &[(f64, f64)]) -> (f64, f64) {
    let all: Vec<f64> = train.iter().chain(val).map(|p| p.1).collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    (lo - pad, hi + pad)
}

/// One panel: quantity `q`'s axes, its training and validation curves, and a legend.
fn draw_panel(area: &Area<'_>, q: &str, history: &[Logs]) -> Result<(), String> {
    let train = series(history, q);
    let val = series(history, &format!("val_{q}"));
    let (lo, hi) = value_range(&train, &val);
    let n = history.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(q, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.8..(n + 0.2).max(1.2), lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((history.len()).clamp(2, 10))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_label_formatter(&|y| {
            let s = format!("{y:.4}");
            let s = s.trim_end_matches('0');
            s.trim_end_matches('.').to_string()
        })
        .label_style(("sans-serif", 13))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(|e| e.to_string())?;
    for (pts, color, label) in [(&train, TRAIN, "training"), (&val, VAL, "validation")] {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 13))
        // Keras's `mode: auto` rule: "acc" in a name means larger is better, so its
        // curve rises and the legend goes low; losses and errors fall.
        .position(if !q.contains("acc") {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        })
        .draw()
        .map_err(|e| e.to_string())
}

/// An 8-bit RGB buffer of `w` × `h` pixels as PNG bytes.
fn encode_png(buf: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(buf).map_err(|e| e.to_string())?;
    }
    Ok(png_bytes)
}

/// Renders and writes the curves atomically.
pub fn write(path: &Path, history: &[Logs], title: &str) -> Result<(), String> {
    let bytes = render(history, title)?;
    crate::weights::write_atomic(path, |w| w.write_all(&bytes))
        .map_err(|e| format!("{}: cannot write the plot: {e}", path.display()))
}
