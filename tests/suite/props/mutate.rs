//! Mutated specs (generated ones and `specs/*.yaml`) and arbitrary bytes: checking
//! must never panic, must answer promptly, and must answer consistently.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::generator::generated;

/// Numbers that break things: zero, negatives, overflow, floats where ints go.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e40",
    "99999999999",
    "2147483647",
    "2147483648",
    "-2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "99999999999999999999999",
    "1.5",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "0o777",
    "1e-400",
    "00",
    "-0",
    "+3",
    "1_000",
];

/// Words a mutation may put in place of another.
const WORDS: &[&str] = &[
    "dense",
    "conv2d",
    "conv1d",
    "flatten",
    "reshape",
    "permute",
    "lstm",
    "gru",
    "simple_rnn",
    "embedding",
    "add",
    "concatenate",
    "multi_head_attention",
    "batch_normalization",
    "layer_normalization",
    "dropout",
    "softmax",
    "global_average_pooling1d",
    "max_pooling2d",
    "units",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "dilation_rate",
    "pool_size",
    "axis",
    "target_shape",
    "dims",
    "input",
    "inputs",
    "outputs",
    "layers",
    "name",
    "train",
    "targets",
    "loss",
    "optimizer",
    "metrics",
    "callbacks",
    "data",
    "batch",
    "seq",
    "same",
    "valid",
    "causal",
    "true",
    "false",
    "null",
    "~",
    "[]",
    "{}",
    "[batch]",
    "{units: 3}",
    "x",
    "image",
    "tokens",
    "logits",
    "dtype",
    "i32",
    "f32",
    "shape",
    "num_heads",
    "key_dim",
    "return_sequences",
    "rate",
    "&a",
    "*a",
    "!!str",
    "!!int",
    "|",
    ">",
    "'",
    "\"",
    "? ",
    "- ",
    ": ",
    "#",
    "%YAML 1.2",
    "---",
    "...",
    "@",
    "`",
    "\t",
    "",
    "É",
    "☕",
    "𝕏",
    "\u{feff}",
    "\u{0}",
];

/// Bytes to insert: invalid UTF-8, control bytes, partial multi-byte characters.
const BYTES: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xe2\x98",
    b"\xf0\x9f\x98",
    b"\x80",
    b"\x00",
    b"\r",
    b"\r\n",
    b"\t",
    b"\x1b[31m",
    b"\xef\xbb\xbf",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"{",
    b"[",
    b"]",
    b"}",
    b":",
    b",",
    b"-",
    b"&",
    b"*",
    b"!",
    b"'",
    b"\"",
    b"\\",
    b"\n",
    b"  ",
];

#[derive(Clone, Debug)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    MoveLine(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    Number(usize, usize),
    Word(usize, usize),
    Truncate(usize),
    Insert(usize, usize),
    ReplaceByte(usize, usize),
    /// Empties a flow list or mapping: `[batch, 4]` → `[]`.
    EmptyFlow(usize),
    /// Deletes a word or number.
    DropToken(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = 1usize << 20;
    prop_oneof![
        (0..n).prop_map(Mutation::DeleteLine),
        (0..n).prop_map(Mutation::DuplicateLine),
        (0..n, 0..n).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (0..n, 0..n).prop_map(|(a, b)| Mutation::MoveLine(a, b)),
        (0..n, 1usize..5).prop_map(|(a, b)| Mutation::Indent(a, b)),
        (0..n).prop_map(Mutation::Dedent),
        (0..n, 0..NUMBERS.len()).prop_map(|(a, b)| Mutation::Number(a, b)),
        (0..n, 0..WORDS.len()).prop_map(|(a, b)| Mutation::Word(a, b)),
        (0..n).prop_map(Mutation::Truncate),
        (0..n, 0..BYTES.len()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (0..n, 0..BYTES.len()).prop_map(|(a, b)| Mutation::ReplaceByte(a, b)),
        (0..n).prop_map(Mutation::EmptyFlow),
        (0..n).prop_map(Mutation::DropToken),
    ]
}

fn split_lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b'\n')
}

/// Byte ranges of tokens matching `is_start`/`is_cont` (numbers or words).
fn tokens(
    b: &[u8],
    is_start: impl Fn(u8) -> bool,
    is_cont: impl Fn(u8) -> bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_start(b[i]) && (i == 0 || !is_cont(b[i - 1])) {
            let s = i;
            i += 1;
            while i < b.len() && is_cont(b[i]) {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(src: &[u8], m: &Mutation) -> Vec<u8> {
    let mut lines = split_lines(src);
    let n = lines.len().max(1);
    match *m {
        Mutation::DeleteLine(a) => {
            if !lines.is_empty() {
                lines.remove(a % n);
            }
            join_lines(&lines)
        }
        Mutation::DuplicateLine(a) => {
            let l = lines[a % n].clone();
            lines.insert(a % n, l);
            join_lines(&lines)
        }
        Mutation::SwapLines(a, b) => {
            lines.swap(a % n, b % n);
            join_lines(&lines)
        }
        Mutation::MoveLine(a, b) => {
            let l = lines.remove(a % n);
            lines.insert(b % lines.len().max(1), l);
            join_lines(&lines)
        }
        Mutation::Indent(a, k) => {
            let l = &mut lines[a % n];
            l.splice(0..0, std::iter::repeat_n(b' ', k));
            join_lines(&lines)
        }
        Mutation::Dedent(a) => {
            let l = &mut lines[a % n];
            let k = l.iter().take_while(|&&c| c == b' ').count().min(2);
            l.drain(..k);
            join_lines(&lines)
        }
        Mutation::Number(a, v) => {
            let nums = tokens(
                src,
                |c| c.is_ascii_digit() || c == b'-',
                |c| c.is_ascii_digit() || c == b'.',
            );
            if nums.is_empty() {
                return src.to_vec();
            }
            let (s, e) = nums[a % nums.len()];
            [&src[..s], NUMBERS[v].as_bytes(), &src[e..]].concat()
        }
        Mutation::Word(a, v) => {
            let words = tokens(
                src,
                |c| c.is_ascii_alphabetic() || c == b'_',
                |c| c.is_ascii_alphanumeric() || c == b'_',
            );
            if words.is_empty() {
                return src.to_vec();
            }
            let (s, e) = words[a % words.len()];
            [&src[..s], WORDS[v].as_bytes(), &src[e..]].concat()
        }
        Mutation::Truncate(a) => src[..a % (src.len() + 1)].to_vec(),
        Mutation::Insert(a, v) => {
            let at = a % (src.len() + 1);
            [&src[..at], BYTES[v], &src[at..]].concat()
        }
        Mutation::EmptyFlow(a) => {
            let opens: Vec<usize> = (0..src.len())
                .filter(|&i| src[i] == b'[' || src[i] == b'{')
                .collect();
            if opens.is_empty() {
                return src.to_vec();
            }
            let s = opens[a % opens.len()];
            let close = if src[s] == b'[' { b']' } else { b'}' };
            let mut depth = 0;
            for (i, &c) in src.iter().enumerate().skip(s) {
                if c == src[s] {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        return [&src[..s + 1], &src[i..]].concat();
                    }
                }
            }
            src.to_vec()
        }
        Mutation::DropToken(a) => {
            let toks = tokens(
                src,
                |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
                |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.',
            );
            if toks.is_empty() {
                return src.to_vec();
            }
            let (s, e) = toks[a % toks.len()];
            [&src[..s], &src[e..]].concat()
        }
        Mutation::ReplaceByte(a, v) => {
            if src.is_empty() {
                return BYTES[v].to_vec();
            }
            let at = a % src.len();
            [&src[..at], BYTES[v], &src[at + 1..]].concat()
        }
    }
}

/// Longest a check of a mutated spec may take. They take milliseconds; a hang is the
/// thing being tested for.
const CHECK_DEADLINE: Duration = Duration::from_secs(20);

fn temp_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "kiln-props-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Checks `bytes` as a file, on a thread of its own (a panic there, or no answer by
/// the deadline, fails the test), and checks that the answer is consistent.
fn check_mutant(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let path = temp_path();
    std::fs::write(&path, &bytes).expect("write a temp spec");
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            let r = kiln::Model::from_path(&p);
            let out = match r {
                Ok(m) => {
                    let summary = kiln::summary::render(&m.graph);
                    let line = kiln::summary::one_line(&m.graph);
                    let warnings = m.render_warnings(false);
                    Ok((summary, line, warnings))
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(out);
        })
        .expect("spawn a checking thread");
    let answer = rx.recv_timeout(CHECK_DEADLINE);
    let _ = std::fs::remove_file(&path);
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let answer = match answer {
        Ok(a) => a,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!(
                "checking took more than {CHECK_DEADLINE:?}:\n{shown}"
            )));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(TestCaseError::fail(format!("checking panicked:\n{shown}")));
        }
    };
    match answer {
        Ok((summary, line, _)) => {
            prop_assert!(summary.contains("Total params:"));
            prop_assert!(line.starts_with("ok: "));
        }
        Err(other) if !matches!(other, kiln::Error::Spec(_)) => {
            return Err(TestCaseError::fail(format!(
                "an existing file failed other than as a spec error ({other}):\n{shown}"
            )));
        }
        Err(e) => {
            let kiln::Error::Spec(e) = e else {
                unreachable!("handled above")
            };
            prop_assert!(
                e.diagnostics.iter().any(|d| d.is_error()),
                "rejected without an error:\n{shown}"
            );
            for d in &e.diagnostics {
                prop_assert!(d.code.len() == 5, "code {:?}", d.code);
                prop_assert!(!d.message.is_empty());
                for l in &d.labels {
                    prop_assert!(
                        l.span.start <= l.span.end && l.span.end <= e.source.len(),
                        "{} label {:?} outside the {}-byte text:\n{shown}",
                        d.code,
                        l.span,
                        e.source.len()
                    );
                    prop_assert!(
                        e.source.is_char_boundary(l.span.start)
                            && e.source.is_char_boundary(l.span.end),
                        "{} label {:?} splits a character:\n{shown}",
                        d.code,
                        l.span
                    );
                }
            }
            let rendered = e.render(false);
            for d in &e.diagnostics {
                prop_assert!(rendered.contains(d.code), "{} not rendered", d.code);
            }
            let json: serde_json::Value = match serde_json::from_str(&e.to_json()) {
                Ok(v) => v,
                Err(err) => {
                    return Err(TestCaseError::fail(format!(
                        "invalid JSON ({err}) for:\n{shown}"
                    )));
                }
            };
            prop_assert_eq!(&json["valid"], false);
            prop_assert_eq!(
                json["diagnostics"].as_array().map(Vec::len),
                Some(e.diagnostics.len())
            );
        }
    }
    Ok(())
}

fn shipped_specs() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("specs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("read a spec"),
            )
        })
        .collect();
    specs.sort();
    specs
}

proptest! {
    #![proptest_config(Config { cases: 1500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn mutated_shipped_specs_never_crash(which in any::<usize>(), ms in prop::collection::vec(mutation(), 1..12)) {
        let specs = shipped_specs();
        let (_, src) = &specs[which % specs.len()];
        let mut bytes = src.clone();
        for m in &ms {
            bytes = apply(&bytes, m);
        }
        check_mutant(bytes)?;
    }

    #[test]
    fn mutated_generated_specs_never_crash(g in generated(), ms in prop::collection::vec(mutation(), 1..12)) {
        let mut bytes = g.yaml.into_bytes();
        for m in &ms {
            bytes = apply(&bytes, m);
        }
        check_mutant(bytes)?;
    }
}

proptest! {
    #![proptest_config(Config { cases: 500, failure_persistence: None, ..Config::default() })]

    /// Arbitrary bytes, and arbitrary text, are not specs; they must still be answered.
    #[test]
    fn random_bytes_never_crash(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_mutant(bytes)?;
    }

    #[test]
    fn random_yaml_ish_text_never_crashes(parts in prop::collection::vec(prop::sample::select(WORDS.iter().chain(NUMBERS).copied().chain(["\n", "\n  ", "\n    - ", ": ", ", ", "[", "]", "{", "}"]).collect::<Vec<&str>>()), 0..80)) {
        check_mutant(parts.concat().into_bytes())?;
    }
}

/// The shipped specs themselves pass through the same consistency checks.
#[test]
fn shipped_specs_check_clean() {
    for (name, bytes) in shipped_specs() {
        let m = kiln::Model::from_source(std::str::from_utf8(&bytes).expect("UTF-8"), "s", &name);
        assert!(
            m.is_ok(),
            "{name}: {}",
            m.err().map(|e| e.to_string()).unwrap_or_default()
        );
        check_mutant(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
