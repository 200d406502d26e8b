//! The crate's floors (ARCHITECTURE.md, "Floors"): a top-level module may import only
//! modules on floors below its own. Read from the sources: every `crate::NAME` in code
//! (comments and `#[cfg(test)]` modules aside) is an import of `NAME`. The CLI is a
//! separate crate (the binary) and can reach only the library's public items.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top. Keep in step with ARCHITECTURE.md.
const FLOORS: &[&[&str]] = &[
    &["dim", "diag", "rng"],
    &["types", "yaml", "paths"],
    &["ir", "args"],
    &["catalog", "exec"],
    &["layers", "jit"],
    &["spec", "runtime"],
    &["check"],
    &["lower", "summary", "weights", "settings"],
    &["data", "bench", "budget", "onnx"],
    &["error"],
    &["net", "dist"],
    &["fit", "aot"],
    &["plot"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::NAME` and `crate::{A, B::…}` in `code`.
fn imports(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn modules_import_only_modules_on_lower_floors() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main", "cli"].contains(&top.as_str()) {
            continue;
        }
        let Some(own) = floor_of(&top) else {
            wrong.push(format!(
                "`{top}` is on no floor: add it to FLOORS and ARCHITECTURE.md"
            ));
            continue;
        };
        seen.insert(top.clone(), ());
        let text = std::fs::read_to_string(f).unwrap();
        for m in imports(&code(&text)) {
            if m == top || m.is_empty() {
                continue;
            }
            match floor_of(&m) {
                Some(fl) if fl < own => {}
                Some(_) => wrong.push(format!(
                    "{}: `{top}` (floor {own}) imports `{m}`, which is not below it",
                    rel.display()
                )),
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for f in FLOORS.iter().flat_map(|f| f.iter()) {
        assert!(
            seen.contains_key(*f),
            "FLOORS names `{f}`, which is no module"
        );
    }
}

#[test]
fn the_import_scanner_sees_grouped_and_plain_paths() {
    let found = imports("use crate::{ir::Func, dim};\nlet x = crate::types::DType::F32;");
    assert_eq!(found, vec!["ir", "dim", "types"]);
    assert_eq!(
        code("// crate::fit\nlet a = 1;\n#[cfg(test)]\nmod t { crate::net }"),
        "let a = 1;"
    );
}
