//! A YAML tree whose every node knows its byte span in the source.
//!
//! This is the only file in kiln that talks to a YAML library (saphyr's event
//! parser); everything above it sees [`Node`]. The tree is built from events by an
//! explicit stack, so hostile input cannot overflow the Rust stack, and it is bounded:
//! nesting depth, node count and expanded size in bytes (alias expansion included: an
//! alias counts as a copy of what its anchor holds) all have limits that turn into
//! diagnostics instead of hangs or runaway memory.

use std::collections::HashMap;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use crate::diag::Diagnostic;

/// Deepest nesting of sequences and mappings a spec may use.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a spec may expand to, aliases counted at their expanded size.
pub const MAX_NODES: usize = 200_000;
/// Most bytes of scalar text a spec may expand to, aliases counted at their expanded
/// size: 16 times the largest spec file, so that only aliases can reach it (one 100 KB
/// string behind 100,000 aliases would otherwise be copied 10 GB's worth).
pub const MAX_EXPANDED_BYTES: usize = 16 << 20;

/// A resolved scalar (YAML 1.2 core schema for plain scalars; quoted ones are strings).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer literal too large for i64; kept as written.
    BigInt(String),
    Float(f64),
    Str(String),
}

/// The shape of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// One YAML node and the bytes of the source it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub span: Range<usize>,
}

impl Node {
    /// The string value of a scalar that is a string (or a plain word).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Scalar(Scalar::Null))
    }
    /// Looks a key up in a mapping (first occurrence; duplicates are reported elsewhere).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }
    /// Looks a key up in a mapping and returns both the key node and the value node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }
    /// A short description of what kind of value this is, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(Scalar::Null) => "nothing (null)",
            Kind::Scalar(Scalar::Bool(_)) => "a boolean",
            Kind::Scalar(Scalar::Int(_)) | Kind::Scalar(Scalar::BigInt(_)) => "an integer",
            Kind::Scalar(Scalar::Float(_)) => "a number",
            Kind::Scalar(Scalar::Str(_)) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Maps saphyr's character indices to byte offsets in the source.
struct Offsets {
    /// `bytes[i]` is the byte offset of character `i`; one extra entry for the end.
    bytes: Vec<usize>,
}

impl Offsets {
    fn new(src: &str) -> Self {
        let mut bytes: Vec<usize> = src.char_indices().map(|(b, _)| b).collect();
        bytes.push(src.len());
        Offsets { bytes }
    }
    fn byte(&self, char_index: usize) -> usize {
        self.bytes
            .get(char_index)
            .copied()
            .unwrap_or_else(|| *self.bytes.last().unwrap_or(&0))
    }
    fn range(&self, span: &Span) -> Range<usize> {
        let a = self.byte(span.start.index());
        let b = self.byte(span.end.index()).max(a);
        a..b
    }
}

enum Frame {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// The size of a node as the limits count it: its nodes, and the bytes of its scalars'
/// text.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Size {
    nodes: usize,
    bytes: usize,
}

/// The bytes a scalar adds to a spec's expanded size.
fn scalar_bytes(s: &Scalar) -> usize {
    match s {
        Scalar::Str(t) | Scalar::BigInt(t) => t.len(),
        _ => 0,
    }
}

fn measure(n: &Node) -> Size {
    // Iterative, so that counting never recurses deeply.
    let mut stack = vec![n];
    let mut size = Size::default();
    while let Some(n) = stack.pop() {
        size.nodes += 1;
        match &n.kind {
            Kind::Scalar(s) => size.bytes = size.bytes.saturating_add(scalar_bytes(s)),
            Kind::Seq(items) => stack.extend(items.iter()),
            Kind::Map(entries) => {
                for (k, v) in entries {
                    stack.push(k);
                    stack.push(v);
                }
            }
        }
    }
    size
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::BigInt(text.to_string()),
        };
    }
    if let Some(hex) = text.strip_prefix("0x")
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return match i64::from_str_radix(hex, 16) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::BigInt(text.to_string()),
        };
    }
    if let Some(oct) = text.strip_prefix("0o")
        && !oct.is_empty()
        && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return match i64::from_str_radix(oct, 8) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::BigInt(text.to_string()),
        };
    }
    if is_float_literal(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Scalar::Float(f);
    }
    Scalar::Str(text.to_string())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float_literal(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// Trims trailing white space off a container's span (block collections run to the
/// next token, newlines included).
fn trim_end(src: &str, r: Range<usize>) -> Range<usize> {
    let text = src.get(r.clone()).unwrap_or("");
    let trimmed = text.trim_end();
    r.start..r.start + trimmed.len()
}

/// Parses one YAML document into a [`Node`] tree with byte spans.
///
/// An empty document yields a null scalar. Errors (syntax, several documents, limits)
/// come back as a diagnostic pointing at their place.
pub fn parse(src: &str) -> Result<Node, Diagnostic> {
    let offsets = Offsets::new(src);
    let mut parser = Parser::new_from_str(src);
    let mut tree = Builder {
        src,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        total: Size::default(),
        documents: 0,
    };
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(syntax_error(src, &offsets, &e)),
        };
        let range = offsets.range(&span);
        if let Some(node) = tree.event(event, range)? {
            tree.attach(node)?;
        }
    }
    Ok(tree.root.unwrap_or(Node {
        kind: Kind::Scalar(Scalar::Null),
        span: 0..0,
    }))
}

/// The parser's own error as a diagnostic: nesting past its recursion limit, an alias
/// before its anchor, or a syntax error (with the bracket left open, when that is the
/// likely cause).
fn syntax_error(src: &str, offsets: &Offsets, e: &ScanError) -> Diagnostic {
    let at = offsets.byte(e.marker().index());
    let end = src[at..]
        .char_indices()
        .nth(1)
        .map(|(i, _)| at + i)
        .unwrap_or(src.len());
    if e.info().contains("recursion limit") {
        return Diagnostic::error(
            "E0104",
            format!(
                "the spec nests deeper than the YAML parser allows ({})",
                e.info()
            ),
        )
        .label(at..end.max(at), "this is too deep")
        .help("a model spec needs only a few levels of nesting");
    }
    if e.info().contains("unknown anchor") {
        return unknown_anchor(src, at);
    }
    let mut d = Diagnostic::error("E0101", format!("this is not valid YAML: {}", e.info()))
        .label(at..end.max(at), "the YAML parser stopped here")
        .help("check the indentation and the brackets around this place; a spec is a YAML mapping like `inputs: …`, `layers: …`");
    // The usual cause of an error a line or more later: a bracket left open.
    if let Some((open, c)) = open_bracket(&src[..at])
        && src[open..at].contains('\n')
    {
        let line = src[..open].matches('\n').count() + 1;
        let close = if c == '[' { ']' } else { '}' };
        d = d
            .secondary(open..open + 1, format!("this `{c}` is still open here"))
            .help(format!(
                "the `{c}` on line {line} is never closed: add `{close}` at the end of its list"
            ));
    }
    d
}

/// The tree under construction from parser events: the collections still open, the
/// anchors defined so far, and the counts the limits are checked against.
struct Builder<'s> {
    src: &'s str,
    stack: Vec<Frame>,
    /// Each anchor's node and its size (measured once, not at every alias).
    anchors: HashMap<usize, (Node, Size)>,
    root: Option<Node>,
    /// The expanded size so far.
    total: Size,
    documents: usize,
}

impl Builder<'_> {
    /// Takes one event; returns the node it completes (a scalar, an alias's copy, or a
    /// collection that ends), if any.
    fn event(&mut self, event: Event, range: Range<usize>) -> Result<Option<Node>, Diagnostic> {
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => {
                return Ok(None);
            }
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Diagnostic::error(
                        "E0102",
                        "a spec is one YAML document, but this file has more than one",
                    )
                    .label(
                        range.start..(range.start + 3).min(self.src.len()),
                        "a second document starts here",
                    )
                    .help("remove the `---` line and everything after it, or split the file"));
                }
                return Ok(None);
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let value = match style {
                    ScalarStyle::Plain => resolve_plain(&text),
                    _ => Scalar::Str(text.into_owned()),
                };
                self.total.bytes = self.total.bytes.saturating_add(scalar_bytes(&value));
                let n = Node {
                    kind: Kind::Scalar(value),
                    span: range,
                };
                self.define(anchor, &n);
                n
            }
            Event::Alias(id) => self.alias(id, range)?,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(
                        "E0104",
                        format!("the spec nests deeper than {MAX_DEPTH} levels"),
                    )
                    .label(range.start..range.start + 1, "this is too deep")
                    .help("a model spec needs only a few levels of nesting"));
                }
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        start: range.start,
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        start: range.start,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    }
                };
                self.stack.push(frame);
                return Ok(None);
            }
            Event::SequenceEnd | Event::MappingEnd => match self.close(range) {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        Ok(Some(node))
    }

    /// Remembers a node under its anchor (0: no anchor).
    fn define(&mut self, anchor: usize, n: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (n.clone(), measure(n)));
        }
    }

    /// A copy of the anchored node, counted at its expanded size.
    fn alias(&mut self, id: usize, range: Range<usize>) -> Result<Node, Diagnostic> {
        match self.anchors.get(&id) {
            Some((n, size)) => {
                self.total.nodes = self.total.nodes.saturating_add(size.nodes);
                self.total.bytes = self.total.bytes.saturating_add(size.bytes);
                if let Some(d) = self.over_limit(range) {
                    return Err(d);
                }
                Ok(n.clone())
            }
            None => Err(Diagnostic::error(
                "E0103",
                "this alias refers to an anchor that is not defined",
            )
            .label(range, "unknown anchor")
            .help("define the anchor with `&name` before using `*name`")),
        }
    }

    /// The limit the expansion so far passes, as a diagnostic at `span`, if any.
    fn over_limit(&self, span: Range<usize>) -> Option<Diagnostic> {
        if self.total.nodes > MAX_NODES {
            Some(too_big(span, format!("more than {MAX_NODES} YAML nodes")))
        } else if self.total.bytes > MAX_EXPANDED_BYTES {
            Some(too_big(
                span,
                format!("more than {MAX_EXPANDED_BYTES} bytes of text"),
            ))
        } else {
            None
        }
    }

    /// Ends the innermost open collection and returns it as a node.
    fn close(&mut self, range: Range<usize>) -> Option<Node> {
        let frame = self.stack.pop()?;
        let (start, anchor, kind) = match frame {
            Frame::Seq {
                start,
                anchor,
                items,
            } => (start, anchor, Kind::Seq(items)),
            Frame::Map {
                start,
                anchor,
                entries,
                ..
            } => (start, anchor, Kind::Map(entries)),
        };
        let end = range.end.max(start);
        // A flow sequence's end stops before its `]`/`}`; include the bracket.
        let mut end = end;
        if let Some(c) = self.src[end..].chars().next()
            && (c == ']' || c == '}')
        {
            end += 1;
        }
        let n = Node {
            kind,
            span: trim_end(self.src, start..end),
        };
        self.define(anchor, &n);
        Some(n)
    }

    /// Counts a completed node and puts it where it belongs: the root, the next item of
    /// a sequence, or a mapping's key or value.
    fn attach(&mut self, node: Node) -> Result<(), Diagnostic> {
        self.total.nodes += 1;
        if let Some(d) = self.over_limit(node.span.clone()) {
            return Err(d);
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

/// The innermost `[` or `{` that `before` leaves open (skipping comments and quoted
/// text), with its byte offset.
fn open_bracket(before: &str) -> Option<(usize, char)> {
    let mut stack = Vec::new();
    let mut chars = before.char_indices();
    let mut prev = '\n';
    while let Some((i, c)) = chars.next() {
        let after_space = prev.is_whitespace() || "[{,:".contains(prev);
        match c {
            '#' if prev.is_whitespace() => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                prev = '\n';
                continue;
            }
            '"' | '\'' if after_space => {
                let mut escaped = false;
                for (_, q) in chars.by_ref() {
                    if q == c && !escaped {
                        break;
                    }
                    escaped = c == '"' && q == '\\' && !escaped;
                }
            }
            '[' | '{' => stack.push((i, c)),
            ']' | '}' => {
                stack.pop();
            }
            _ => {}
        }
        prev = c;
    }
    stack.pop()
}

/// An alias whose anchor is not defined before it (saphyr reports it as a syntax error).
fn unknown_anchor(src: &str, at: usize) -> Diagnostic {
    let end = src[at..]
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_whitespace() || ",[]{}".contains(*c))
        .map_or(src.len(), |(i, _)| at + i);
    let name = src[at..end].trim_start_matches('*');
    let mut d = Diagnostic::error(
        "E0103",
        format!("the alias `*{name}` refers to an anchor that is not defined before it"),
    )
    .label(at..end, "unknown anchor");
    let anchor = format!("&{name}");
    let later = src[end..]
        .match_indices(anchor.as_str())
        .map(|(i, _)| end + i)
        .find(|&i| {
            src[i + anchor.len()..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || ",[]{}".contains(c))
        });
    match later {
        Some(i) => {
            d = d
                .secondary(i..i + anchor.len(), "defined only here, after its use")
                .help(format!(
                    "an anchor must come before its aliases: put `&{name}` on the first use and write `*{name}` in the later ones"
                ));
        }
        None => {
            d = d.help(format!(
                "define the anchor with `&{name}` before using `*{name}`"
            ));
        }
    }
    d
}

fn too_big(span: Range<usize>, what: String) -> Diagnostic {
    Diagnostic::error("E0105", format!("the spec expands to {what}"))
    .label(span, "expansion passes the limit here")
    .help("aliases (`*name`) that repeat other aliases, or a long text, make a spec far larger than its file; write the spec out plainly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_by_core_schema() {
        assert_eq!(resolve_plain("12"), Scalar::Int(12));
        assert_eq!(resolve_plain("-3"), Scalar::Int(-3));
        assert_eq!(resolve_plain("1e40"), Scalar::Float(1e40));
        assert_eq!(resolve_plain("0.5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain(".5"), Scalar::Float(0.5));
        assert_eq!(resolve_plain("true"), Scalar::Bool(true));
        assert_eq!(resolve_plain("~"), Scalar::Null);
        assert_eq!(resolve_plain("relu"), Scalar::Str("relu".into()));
        assert_eq!(resolve_plain("1e"), Scalar::Str("1e".into()));
        assert_eq!(
            resolve_plain("99999999999999999999999"),
            Scalar::BigInt("99999999999999999999999".into())
        );
    }

    #[test]
    fn spans_are_bytes_even_after_non_ascii_text() {
        let src = "name: \"café ☕\"\nunits: 64\n";
        let n = parse(src).unwrap();
        let (k, v) = n.entry("units").unwrap();
        assert_eq!(&src[k.span.clone()], "units");
        assert_eq!(&src[v.span.clone()], "64");
    }

    #[test]
    fn flow_collections_include_their_brackets() {
        let src = "a: [batch, 8]\nb: {units: 3}\n";
        let n = parse(src).unwrap();
        assert_eq!(&src[n.get("a").unwrap().span.clone()], "[batch, 8]");
        assert_eq!(&src[n.get("b").unwrap().span.clone()], "{units: 3}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse(&src).unwrap_err();
        assert_eq!(e.code, "E0105");
    }

    #[test]
    fn aliases_of_a_long_string_are_counted_by_their_bytes() {
        let mut src = format!("a: &a \"{}\"\nb: [", "x".repeat(100_000));
        src.push_str(&["*a"; 1000].join(", "));
        src.push_str("]\n");
        let e = parse(&src).unwrap_err();
        assert_eq!(e.code, "E0105");
        assert!(e.message.contains("bytes"), "{}", e.message);
        // The same aliases of a short string are fine.
        let short = src.replacen(&"x".repeat(100_000), "x", 1);
        assert!(parse(&short).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = "[".repeat(10_000) + &"]".repeat(10_000);
        let e = parse(&src).unwrap_err();
        assert_eq!(e.code, "E0104");
    }

    #[test]
    fn syntax_errors_point_at_their_line() {
        let src = "inputs:\n  x: [batch, 3\nlayers: []\n";
        let e = parse(src).unwrap_err();
        assert_eq!(e.code, "E0101");
        assert!(!e.labels.is_empty());
    }
}
