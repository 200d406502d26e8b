//! The diagnostics registry (`kiln::diag::codes`) against the code that emits
//! diagnostics: every code written anywhere in `src/` has an entry, every entry's code
//! is still used, and every entry's examples do what its page says: the wrong one
//! produces the code, the fixed one checks clean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln::diag::codes::{self, CodeInfo, Example};

/// The registry's own files, which name every code by definition.
const REGISTRY_DIR: &str = "src/diag/codes";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("readable dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every word shaped like a diagnostic code (`E0504`, `W0701`: a letter and four
/// digits, standing alone) in `text`, in string literals and comments alike.
fn code_words(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    for i in 0..bytes.len().saturating_sub(4) {
        let candidate = &bytes[i..i + 5];
        if matches!(candidate[0], b'E' | b'W')
            && candidate[1..].iter().all(u8::is_ascii_digit)
            && (i == 0 || !word(bytes[i - 1]))
            && bytes.get(i + 5).is_none_or(|&b| !word(b))
        {
            let line = text[..i].matches('\n').count() + 1;
            found.push((line, &text[i..i + 5]));
        }
    }
    found
}

/// Code → the first place in `src/` (outside the registry) that names it.
fn codes_used_in_src() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut used = BTreeMap::new();
    for path in files {
        let shown = path.strip_prefix(root).unwrap_or(&path);
        if shown.starts_with(REGISTRY_DIR) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("sources are UTF-8");
        for (line, code) in code_words(&text) {
            used.entry(code.to_string())
                .or_insert_with(|| format!("{}:{line}", shown.display()));
        }
    }
    used
}

#[test]
fn the_scan_finds_codes_in_literals_and_comments_only_as_whole_words() {
    let text = "d(\"E0504\", x);\n// reported before (W0701).\nlet E05040 = XE0504;";
    assert_eq!(code_words(text), vec![(1, "E0504"), (2, "W0701")]);
}

#[test]
fn every_code_used_in_src_has_an_entry() {
    let used = codes_used_in_src();
    // A scan that finds only a few is broken: the checker alone emits dozens.
    assert!(used.len() > 50, "the scan found only {used:?}");
    let missing: Vec<String> = used
        .iter()
        .filter(|(code, _)| !codes::all().any(|i| i.code == code.as_str()))
        .map(|(code, at)| format!("{code} (used at {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without an entry in {REGISTRY_DIR}: {missing:?}"
    );
}

#[test]
fn every_entry_is_a_code_still_in_use_and_registered_once() {
    let used = codes_used_in_src();
    let mut seen = BTreeMap::new();
    for info in codes::all() {
        assert!(
            used.contains_key(info.code),
            "{} has an entry but nothing in src/ emits it",
            info.code
        );
        assert!(
            seen.insert(info.code, info.title).is_none(),
            "{} is registered twice",
            info.code
        );
        assert!(!info.title.is_empty() && !info.title.ends_with('.'));
        assert!(info.explanation.ends_with(".\n"), "{}", info.code);
        for line in info.explanation.lines() {
            assert!(
                line.chars().count() <= 90,
                "{}: a line of the explanation is too wide: {line}",
                info.code
            );
        }
    }
}

/// The codes of every diagnostic the example's input gives, and whether it was valid.
/// Spec text goes to the checker as `Model::from_source`; a file's bytes are written to
/// disk and read as `Model::from_path` (as `kiln check FILE` does).
fn diagnose(info: &CodeInfo, which: &str, example: &Example) -> (bool, Vec<&'static str>) {
    let result = match example {
        Example::Spec(_) | Example::Repeated { .. } => {
            let text = String::from_utf8(example.bytes()).expect("spec examples are text");
            kiln::Model::from_source(&text, "example", "example.yaml")
        }
        Example::File(_) => {
            let path = std::env::temp_dir().join(format!(
                "kiln-explain-{}-{}-{which}.yaml",
                std::process::id(),
                info.code
            ));
            std::fs::write(&path, example.bytes()).expect("write the example file");
            let result = kiln::Model::from_path(&path);
            let _ = std::fs::remove_file(&path);
            result
        }
    };
    match result {
        Ok(m) => (true, m.warnings.iter().map(|d| d.code).collect()),
        Err(kiln::Error::Spec(e)) => (false, e.diagnostics.iter().map(|d| d.code).collect()),
        Err(e) => panic!("{} ({which} example): not a diagnostic: {e}", info.code),
    }
}

/// `E0407 ×100, E0108`: codes in order of first appearance, with their counts.
fn counted(codes: &[&str]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for &c in codes {
        match seen.iter_mut().find(|(s, _)| *s == c) {
            Some((_, n)) => *n += 1,
            None => seen.push((c, 1)),
        }
    }
    let shown: Vec<String> = seen
        .iter()
        .map(|&(c, n)| {
            if n == 1 {
                c.to_string()
            } else {
                format!("{c} ×{n}")
            }
        })
        .collect();
    match shown.is_empty() {
        true => "no diagnostics".to_string(),
        false => shown.join(", "),
    }
}

#[test]
fn every_wrong_example_gives_its_code_and_every_fixed_one_checks_clean() {
    let mut failures = Vec::new();
    for info in codes::all() {
        let (_, got) = diagnose(info, "wrong", &info.wrong);
        let ok = match info.wrong {
            // The size codes stand for many diagnostics of another kind.
            Example::Repeated { .. } => got.contains(&info.code),
            _ => !got.is_empty() && got.iter().all(|&c| c == info.code),
        };
        if !ok {
            failures.push(format!(
                "{}: the wrong example gives {}",
                info.code,
                counted(&got)
            ));
        }
        if matches!(info.wrong, Example::File(_)) != matches!(info.fixed, Example::File(_)) {
            failures.push(format!(
                "{}: the two examples are different kinds of input",
                info.code
            ));
        }
        let (valid, got) = diagnose(info, "fixed", &info.fixed);
        if !valid || !got.is_empty() {
            failures.push(format!(
                "{}: the fixed example is not clean: valid {valid}, {}",
                info.code,
                counted(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn explain_prints_the_page_of_a_code_however_it_is_written() {
    let page = kiln::diag::explain("e0504").expect("E0504 is registered");
    assert_eq!(Some(page), codes::lookup("E0504").map(CodeInfo::page));
    assert!(kiln::diag::explain("E0999").is_none());
}

/// The pages quote kiln's limits in words; they must be the limits the code enforces.
#[test]
fn explanations_quote_the_limits_kiln_enforces() {
    use kiln::layers::group_digits;
    let quoted = [
        ("E0104", kiln::yaml::MAX_DEPTH.to_string()),
        ("E0105", group_digits(kiln::yaml::MAX_NODES as i64)),
        ("E0106", group_digits(kiln::spec::MAX_SPEC_BYTES as i64)),
        ("E0108", kiln::check::MAX_REPORTED.to_string()),
        ("W0108", kiln::check::MAX_REPORTED.to_string()),
        ("E0302", group_digits(kiln::args::MAX_SIZE)),
        ("E0513", group_digits(kiln::check::MAX_PARAMS)),
    ];
    for (code, limit) in quoted {
        let info = codes::lookup(code).expect("registered");
        assert!(
            info.explanation.contains(&limit),
            "{code} should say the limit is {limit}: {}",
            info.explanation
        );
    }
}
