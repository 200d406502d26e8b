//! The registry of diagnostic codes: each code once, with a title, a longer explanation
//! and two examples, a spec with the mistake and the same spec fixed. `kiln explain CODE`
//! prints an entry the way `rustc --explain` does.
//!
//! Adding a code means one [`CodeInfo`] in the file of its range. `tests/explain.rs`
//! fails when `src/` uses a code without an entry (or an entry's code is no longer
//! used), and checks every example: the wrong one must produce its code, the fixed one
//! must check clean. Many wrong examples are the golden specs of `specs/errors/`, so
//! their rendered diagnostics are pinned beside them.

mod arguments;
mod file;
mod graph;
mod keras;
mod shapes;
mod structure;
mod train;

use std::fmt::Write;

/// One diagnostic code and what `kiln explain` says about it.
#[derive(Debug)]
pub struct CodeInfo {
    /// `E0504` (an error) or `W0701` (a warning); the range is in ARCHITECTURE.md.
    pub code: &'static str,
    /// What went wrong, in a few words.
    pub title: &'static str,
    /// Why it is an error and how it is usually fixed, one or two short paragraphs.
    pub explanation: &'static str,
    /// An input that produces the code.
    pub wrong: Example,
    /// The same input corrected: it checks clean, without errors or warnings.
    pub fixed: Example,
}

/// An example input, and with it the kind of input that produces a code.
#[derive(Clone, Copy, Debug)]
pub enum Example {
    /// Spec text, as handed to the checker (`kiln check`, `Model::from_source`). A first
    /// line `# expect: …` (the header of the golden specs in `specs/errors/`) is not
    /// shown.
    Spec(&'static str),
    /// Spec text in which `line` is written `times` times in a row, between `head` and
    /// `tail`: for codes about the size of a spec. Shown with the line once.
    Repeated {
        head: &'static str,
        line: &'static str,
        times: usize,
        tail: &'static str,
    },
    /// The bytes of a spec file, for codes reported while the file is read
    /// (`kiln check FILE`, `Model::from_path`) rather than while its text is checked.
    File(&'static [u8]),
}

impl Example {
    /// The whole input: spec text for `Spec` and `Repeated`, a file's bytes for `File`.
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Example::Spec(text) => text.as_bytes().to_vec(),
            Example::Repeated {
                head,
                line,
                times,
                tail,
            } => [head, &line.repeat(times), tail].concat().into_bytes(),
            Example::File(bytes) => bytes.to_vec(),
        }
    }

    /// The example as printed: indented, with bytes that are not UTF-8 as `\xNN`.
    fn shown(&self) -> String {
        let text = match *self {
            Example::Spec(text) => match text.strip_prefix("# expect:") {
                Some(rest) => rest.split_once('\n').map_or("", |(_, r)| r).to_string(),
                None => text.to_string(),
            },
            Example::Repeated {
                head,
                line,
                times,
                tail,
            } => {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{head}{line}{indent}# … the line above {times} times in all\n{tail}")
            }
            Example::File(bytes) => escape_invalid_utf8(bytes),
        };
        text.lines().fold(String::new(), |mut out, l| {
            match l.is_empty() {
                true => out.push('\n'),
                false => {
                    let _ = writeln!(out, "    {l}");
                }
            }
            out
        })
    }
}

/// `bytes` as text, each byte that is not part of valid UTF-8 written as `\xNN`.
fn escape_invalid_utf8(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\x{b:02X}");
                }
                bytes = &rest[bad..];
            }
        }
    }
}

impl CodeInfo {
    /// The page `kiln explain CODE` prints.
    pub fn page(&self) -> String {
        let (wrong, fixed) = match self.wrong {
            Example::File(_) => (
                "A spec file with this mistake (read from disk):",
                "The same file, fixed:",
            ),
            _ => ("A spec with this mistake:", "The same spec, fixed:"),
        };
        format!(
            "{}: {}\n\n{}\n{wrong}\n\n{}\n{fixed}\n\n{}",
            self.code,
            self.title,
            self.explanation,
            self.wrong.shown(),
            self.fixed.shown()
        )
    }
}

/// Every registered code, errors of each range before its warnings.
pub fn all() -> impl Iterator<Item = &'static CodeInfo> {
    [
        file::CODES,
        structure::CODES,
        arguments::CODES,
        shapes::CODES,
        train::CODES,
        graph::CODES,
        keras::CODES,
    ]
    .into_iter()
    .flatten()
}

/// The entry for `code`, written `E0504`, `e0504` or `0504` (a bare number is an
/// error's code when both `E` and `W` have it).
pub fn lookup(code: &str) -> Option<&'static CodeInfo> {
    let code = code.trim().to_ascii_uppercase();
    let find = |c: &str| all().find(|i| i.code == c);
    match code.starts_with(['E', 'W']) {
        true => find(&code),
        false => find(&format!("E{code}")).or_else(|| find(&format!("W{code}"))),
    }
}

/// The explanation page of `code` (see [`lookup`] for how it may be written), or `None`
/// for a code kiln does not have.
pub fn explain(code: &str) -> Option<String> {
    lookup(code).map(CodeInfo::page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_however_they_are_written() {
        for written in ["E0504", "e0504", " E0504\n", "0504"] {
            assert_eq!(lookup(written).map(|i| i.code), Some("E0504"), "{written}");
        }
        assert_eq!(lookup("w0701").map(|i| i.code), Some("W0701"));
        assert_eq!(lookup("0108").map(|i| i.code), Some("E0108"));
        assert_eq!(lookup("W0108").map(|i| i.code), Some("W0108"));
        for unknown in ["", "E", "E9999", "X0504", "E05040", "504", "é0504"] {
            assert!(lookup(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn a_page_has_the_title_the_explanation_and_both_examples() {
        let page = explain("E0504").expect("E0504 is registered");
        assert!(page.starts_with("E0504: "), "{page}");
        let info = lookup("E0504").expect("E0504 is registered");
        assert!(page.contains(info.title), "{page}");
        assert!(page.contains(info.explanation), "{page}");
        // The golden spec's header is test metadata, not part of the example.
        assert!(!page.contains("# expect:"), "{page}");
        assert!(
            page.contains("    - add: {inputs: [x, branch]}\n"),
            "the wrong example, indented: {page}"
        );
        assert!(
            page.find("with this mistake") < page.find("fixed:"),
            "{page}"
        );
    }

    #[test]
    fn a_repeated_line_is_shown_once_with_its_count() {
        let ex = Example::Repeated {
            head: "layers:\n",
            line: "  - relu\n",
            times: 3,
            tail: "  - dense: {units: 1}\n",
        };
        assert_eq!(
            String::from_utf8(ex.bytes()).unwrap(),
            "layers:\n  - relu\n  - relu\n  - relu\n  - dense: {units: 1}\n"
        );
        assert_eq!(
            ex.shown(),
            "    layers:\n      - relu\n      # … the line above 3 times in all\n      - dense: {units: 1}\n"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_escaped() {
        assert_eq!(escape_invalid_utf8(b"caf\xe9 ok"), "caf\\xE9 ok");
        assert_eq!(escape_invalid_utf8(b"\xff\xfe"), "\\xFF\\xFE");
        assert_eq!(escape_invalid_utf8("é".as_bytes()), "é");
        // A sequence cut short at the end is escaped byte by byte.
        assert_eq!(escape_invalid_utf8(b"a\xe2\x82"), "a\\xE2\\x82");
        let page = explain("E0107").expect("E0107 is registered");
        assert!(page.contains("\\xE9"), "{page}");
        assert!(page.contains("read from disk"), "{page}");
    }
}
