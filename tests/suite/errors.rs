//! Golden tests of diagnostics: every `specs/errors/*.yaml` is a broken spec whose first
//! line says which diagnostics it must produce (`# expect: E0503` or
//! `# expect: E0401, W0701`). The rendered diagnostics and their JSON form are kept
//! beside it as `NAME.txt` and `NAME.json`, so a changed message shows up as a readable
//! diff. Run with `UPDATE_GOLDEN=1` to rewrite the snapshots after an intended change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/errors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("specs/errors exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn expected_codes(text: &str, path: &Path) -> Vec<String> {
    let first = text.lines().next().unwrap_or("");
    let list = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("{} must start with `# expect: CODE, …`", path.display()));
    list.split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Compares `actual` with the snapshot at `path`, or writes it under UPDATE_GOLDEN.
fn golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).expect("write snapshot");
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{} is missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

#[test]
fn every_error_spec_matches_its_snapshot() {
    let files = corpus();
    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("error specs are UTF-8");
        let want = expected_codes(&text, path);
        let shown = format!(
            "specs/errors/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let err = match kiln::Model::from_source(&text, &stem, &shown) {
            Ok(_) => {
                failures.push(format!(
                    "{shown} checked clean, but it must fail with {want:?}"
                ));
                continue;
            }
            Err(kiln::Error::Spec(e)) => e,
            Err(e) => panic!("{shown}: unexpected error {e}"),
        };
        let got: Vec<String> = err.diagnostics.iter().map(|d| d.code.to_string()).collect();
        if got != want {
            failures.push(format!(
                "{shown}: expected diagnostics {want:?}, got {got:?}"
            ));
        }
        if let Some(first) = err.diagnostics.iter().find(|d| d.is_error()) {
            kinds.insert(first.code);
        }
        for d in &err.diagnostics {
            assert!(
                !d.labels.is_empty() || d.code == "E0106",
                "{shown}: {} has no label",
                d.code
            );
            assert!(d.help.is_some(), "{shown}: {} has no help", d.code);
        }
        golden(
            &path.with_extension("txt"),
            &err.render(false),
            &mut failures,
        );
        golden(
            &path.with_extension("json"),
            &(err.to_json() + "\n"),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        kinds.len() >= 30,
        "the corpus covers only {} distinct error kinds: {kinds:?}",
        kinds.len()
    );
}
