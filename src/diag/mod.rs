//! Diagnostics: what kiln tells a person about their spec.
//!
//! Every diagnostic has a stable code, one plain sentence, a primary label at the exact
//! span of the user's text, optional secondary labels (where a conflicting shape came
//! from) and help. Rendering goes through miette so the output reads like rustc's; the
//! JSON form is for editors and scripts. [`codes`] holds every code's explanation
//! (`kiln explain`).

pub mod codes;
pub mod keras;

pub use codes::explain;

use std::fmt;
use std::ops::Range;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

/// How bad a diagnostic is. Only errors make a spec invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the spec and what to say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Range<usize>,
    pub message: String,
    pub primary: bool,
}

/// Most secondary labels one diagnostic carries. A merge of 20,000 inputs would
/// otherwise get one per input: no one reads that many, and drawing them takes time
/// quadratic in their number.
pub const MAX_SECONDARY: usize = 16;

/// Most characters of text between backticks a diagnostic quotes: a name of 300,000
/// characters, reused through aliases, would otherwise be printed whole in every
/// message about it.
pub const MAX_QUOTED: usize = 100;

/// Most characters of one message, label or help text (a list of every name in a large
/// spec is cut here).
pub const MAX_TEXT: usize = 2000;

/// `text` with every quoted part (between backticks) longer than [`MAX_QUOTED`]
/// characters shortened, saying how long it was, and the whole cut at [`MAX_TEXT`].
pub fn shorten(text: String) -> String {
    if text.len() <= MAX_QUOTED {
        return text;
    }
    let mut out = String::new();
    let parts: Vec<&str> = text.split('`').collect();
    for (i, part) in parts.iter().enumerate() {
        let chars = part.chars().count();
        // Odd parts are quoted, unless the last backtick is never closed.
        if i % 2 == 1 && i + 1 < parts.len() && chars > MAX_QUOTED {
            out.push('`');
            out.extend(part.chars().take(MAX_QUOTED));
            out.push_str(&format!("…` ({chars} characters)"));
            continue;
        }
        if i > 0 && !(i % 2 == 0 && parts[i - 1].chars().count() > MAX_QUOTED) {
            out.push('`');
        }
        out.push_str(part);
    }
    match out.char_indices().nth(MAX_TEXT) {
        Some((cut, _)) => {
            out.truncate(cut);
            out.push('…');
            out
        }
        None => out,
    }
}

/// One finding about a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: shorten(message.into()),
            labels: Vec::new(),
            help: None,
        }
    }
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }
    /// Adds the primary label (the place that is wrong).
    pub fn label(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: shorten(message.into()),
            primary: true,
        });
        self
    }
    /// Adds a secondary label (a place that explains why), up to [`MAX_SECONDARY`].
    pub fn secondary(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        if self.labels.iter().filter(|l| !l.primary).count() >= MAX_SECONDARY {
            return self;
        }
        self.labels.push(Label {
            span,
            message: shorten(message.into()),
            primary: false,
        });
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(shorten(help.into()));
        self
    }
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help.map(shorten);
        }
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
    /// The primary label's span, if any.
    pub fn primary_span(&self) -> Option<Range<usize>> {
        self.labels
            .iter()
            .find(|l| l.primary)
            .or(self.labels.first())
            .map(|l| l.span.clone())
    }
}

/// A source file with a name, for rendering diagnostics against it.
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Adapter that lets miette draw one of our diagnostics.
struct MietteView<'a> {
    diag: &'a Diagnostic,
    source: NamedSource<String>,
    text_len: usize,
    /// `file:line:col`, said in words instead of drawing the source (see [`render`]).
    at: Option<String>,
}

impl fmt::Debug for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}
impl fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)?;
        match &self.at {
            Some(at) => write!(f, " (at {at})"),
            None => Ok(()),
        }
    }
}
impl std::error::Error for MietteView<'_> {}

impl miette::Diagnostic for MietteView<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        if self.diag.labels.is_empty() || self.at.is_some() {
            None
        } else {
            Some(&self.source)
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.diag.labels.is_empty() || self.at.is_some() {
            return None;
        }
        Some(Box::new(labeled_spans(self.diag, self.text_len)))
    }
}

/// A diagnostic's labels as miette draws them, clamped to a text of `text_len` bytes.
pub fn labeled_spans(d: &Diagnostic, text_len: usize) -> impl Iterator<Item = LabeledSpan> + '_ {
    d.labels.iter().map(move |l| {
        let start = l.span.start.min(text_len);
        let len = l.span.end.min(text_len).saturating_sub(start);
        if l.primary {
            LabeledSpan::new_primary_with_span(Some(l.message.clone()), (start, len))
        } else {
            LabeledSpan::new_with_span(Some(l.message.clone()), (start, len))
        }
    })
}

/// Longest source line drawn under a diagnostic, in bytes.
const MAX_DRAWN_LINE: usize = 1000;

/// The length in bytes of the longest line miette draws for a label over `span`: the
/// lines it covers and one line of context on either side.
fn drawn_width(text: &str, span: &Range<usize>) -> usize {
    let bytes = text.as_bytes();
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    // Back to the start of the line before, forward to the end of the line after.
    let mut from = bytes[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap_or(0);
    from = bytes[..from]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut to = bytes[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| end + i);
    if to < text.len() {
        to = bytes[to + 1..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| to + 1 + i);
    }
    bytes[from..to]
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// Renders diagnostics as people read them. `color` picks ANSI colors; without it the
/// output is plain Unicode (used by the golden snapshots).
pub fn render(source: &Source, diags: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        // A label on or next to a very long line (a spec written as one flow-style line,
        // a long name) would be drawn whole, for every diagnostic: megabytes of output,
        // slowly. Say where.
        let at = d
            .labels
            .iter()
            .any(|l| drawn_width(source.text, &l.span) > MAX_DRAWN_LINE)
            .then(|| d.primary_span())
            .flatten()
            .map(|span| {
                let (line, col) = source.line_col(span.start);
                format!("{}:{line}:{col}", source.name)
            });
        let view = MietteView {
            diag: d,
            source: NamedSource::new(
                source.name,
                if at.is_some() {
                    String::new()
                } else {
                    source.text.to_string()
                },
            ),
            text_len: source.text.len(),
            at,
        };
        if handler.render_report(&mut out, &view).is_err() {
            out.push_str(&format!("{}: {}\n", d.code, d.message));
        }
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct JsonLabel {
    line: usize,
    column: usize,
    length: usize,
    message: String,
    primary: bool,
}

#[derive(Serialize)]
struct JsonDiag {
    code: &'static str,
    severity: Severity,
    message: String,
    line: Option<usize>,
    column: Option<usize>,
    labels: Vec<JsonLabel>,
    help: Option<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    file: &'a str,
    valid: bool,
    diagnostics: Vec<JsonDiag>,
}

/// The machine-readable form of `kiln check --format json`. Lines and columns are
/// 1-based; columns and lengths count characters.
pub fn to_json(source: &Source, diags: &[Diagnostic]) -> String {
    let diagnostics = diags
        .iter()
        .map(|d| {
            let primary = d.primary_span().map(|s| source.line_col(s.start));
            JsonDiag {
                code: d.code,
                severity: d.severity,
                message: d.message.clone(),
                line: primary.map(|p| p.0),
                column: primary.map(|p| p.1),
                labels: d
                    .labels
                    .iter()
                    .map(|l| {
                        let (line, column) = source.line_col(l.span.start);
                        let text = source.text.get(l.span.clone()).unwrap_or_default();
                        JsonLabel {
                            line,
                            column,
                            length: text.chars().count(),
                            message: l.message.clone(),
                            primary: l.primary,
                        }
                    })
                    .collect(),
                help: d.help.clone(),
            }
        })
        .collect();
    let report = JsonReport {
        file: source.name,
        valid: !diags.iter().any(Diagnostic::is_error),
        diagnostics,
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_string())
}

/// Edit distance, for "did you mean" suggestions. Swapping two adjacent characters
/// (`trian` for `train`), the most common typo, counts as one edit.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                cur[j + 1] = cur[j + 1].min(before[j - 1] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase().replace('-', "_");
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let limit = (c.chars().count().max(word.chars().count()) / 3).max(1);
        // An edit distance is at least the difference in length: skip far candidates
        // without computing it (callers may pass every name in a large spec).
        let (n, m) = (lower.chars().count(), c.chars().count());
        let underscores = c.matches('_').count() + lower.matches('_').count();
        if n.abs_diff(m) > limit + underscores {
            continue;
        }
        let d = if c == lower {
            0
        } else {
            levenshtein(&lower, c)
        };
        // Also accept CamelCase Keras class names written for snake_case ones.
        let squashed = d.min(levenshtein(&lower.replace('_', ""), &c.replace('_', "")));
        if squashed <= limit && best.is_none_or(|(bd, _)| squashed < bd) {
            best = Some((squashed, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A number echoed in a message, in short form: integers as integers (`10000`), other
/// values in their shortest round-tripping form, with an exponent when very large or
/// small (`0.25`, `1e-300`, `1e300`), never hundreds of digits.
pub fn short_number<T: Copy + Into<f64> + fmt::Debug>(v: T) -> String {
    let x: f64 = v.into();
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.0}")
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod short_number_tests {
    use super::short_number;

    #[test]
    fn numbers_print_short() {
        assert_eq!(short_number(10000.0), "10000");
        assert_eq!(short_number(-1.0), "-1");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(-0.5), "-0.5");
        assert_eq!(short_number(1e-300), "1e-300");
        assert_eq!(short_number(1e300), "1e300");
        assert_eq!(short_number(f64::NAN), "NaN");
        assert_eq!(short_number(f64::INFINITY), "inf");
        assert_eq!(short_number(0.1f32), "0.1");
        assert_eq!(short_number(1e30f32), "1e30");
        assert_eq!(short_number(-0.0), "-0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_and_class_names() {
        let c = ["dense", "conv2d", "max_pooling2d", "batch_normalization"];
        assert_eq!(did_you_mean("dens", c), Some("dense"));
        assert_eq!(did_you_mean("Conv2D", c), Some("conv2d"));
        assert_eq!(did_you_mean("MaxPooling2D", c), Some("max_pooling2d"));
        assert_eq!(
            did_you_mean("BatchNormalization", c),
            Some("batch_normalization")
        );
        assert_eq!(did_you_mean("xyzzy", c), None);
        assert_eq!(did_you_mean("trian", ["train", "inputs"]), Some("train"));
        assert_eq!(levenshtein("ab", "ba"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn long_quotes_and_texts_are_shortened() {
        let name = "n".repeat(300_000);
        let d = Diagnostic::error("E0702", format!("the name `{name}` is used twice"))
            .label(0..1, format!("`{name}` again"))
            .help(format!("rename one `{name}`; keep `x`"));
        let short = format!("`{}…` (300000 characters)", "n".repeat(MAX_QUOTED));
        assert_eq!(d.message, format!("the name {short} is used twice"));
        assert_eq!(d.labels[0].message, format!("{short} again"));
        assert_eq!(
            d.help.as_deref(),
            Some(&*format!("rename one {short}; keep `x`"))
        );
        // Short quotes are untouched, and so is a lone backtick.
        let plain = format!("a `b` and {} ` c", "d".repeat(200));
        assert_eq!(shorten(plain.clone()), plain);
        let long = "word ".repeat(2000);
        assert_eq!(shorten(long).chars().count(), MAX_TEXT + 1);
    }

    #[test]
    fn lines_drawn_around_a_label_are_measured() {
        let text = format!("a: 1\nb: {}\nc: 2\nd: 3\ne: 4\n", "x".repeat(5000));
        let at = |s: &str| text.find(s).unwrap();
        assert_eq!(drawn_width(&text, &(at("c:")..at("c:") + 1)), 5003);
        assert_eq!(drawn_width(&text, &(at("a:")..at("a:") + 1)), 5003);
        assert_eq!(drawn_width(&text, &(at("d:")..at("d:") + 1)), 4);
        assert_eq!(drawn_width(&text, &(at("e:")..at("e:") + 1)), 4);
    }

    #[test]
    fn line_col_counts_characters() {
        let s = Source {
            name: "x",
            text: "a: é\nbb: 1\n",
        };
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(s.text.find("bb").unwrap()), (2, 1));
        assert_eq!(s.line_col(s.text.find(": 1").unwrap()), (2, 3));
    }
}
