//! The graph IR as text. The reader gives back every function kiln builds; each graph
//! pass is shown by a file in `tests/golden/passes/` (input IR, the pass, the expected
//! IR); whole specs' IR (`tests/golden/ir/`) and kernel plans (`tests/golden/kernels/`)
//! are golden files. After an intended change, run with `KILN_BLESS=1` to rewrite the
//! expectations and read the diff.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln::dim::Dim;
use kiln::ir::{self, Func, passes};
use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bless() -> bool {
    std::env::var_os("KILN_BLESS").is_some()
}

/// The bundled specs (`specs/*.yaml`), by stem, sorted.
fn bundled_specs() -> Vec<String> {
    crate::common::bundled_spec_paths()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The functions `kiln ir` prints for a spec: inference and, with a train section, the
/// training step, each as lowered (`raw`) and after the passes.
fn stages(spec: &str) -> Vec<(String, Func)> {
    let path = root().join(format!("specs/{spec}.yaml"));
    let m = kiln::Model::from_path(&path).unwrap();
    let mut out = Vec::new();
    let graph = kiln::lower::predict_func(&m.graph).unwrap();
    out.push((format!("{spec}.graph.raw"), graph.clone()));
    out.push((format!("{spec}.graph"), passes::optimize(&graph)));
    if m.graph.train.is_some() {
        let step = kiln::lower::train::build(&m.graph).unwrap().func;
        out.push((format!("{spec}.train.raw"), step.clone()));
        out.push((format!("{spec}.train"), passes::optimize(&step)));
    }
    out
}

/// Compares `actual` with the file at `path` (or writes it when blessing); a mismatch is
/// recorded with the first line that differs.
fn golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let Ok(expected) = std::fs::read_to_string(path) else {
        failures.push(format!(
            "{} is missing (run with KILN_BLESS=1)",
            path.display()
        ));
        return;
    };
    if expected != actual {
        failures.push(first_difference(path, &expected, actual));
    }
}

fn first_difference(path: &Path, expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let i = (0..e.len().max(a.len()))
        .find(|&i| e.get(i) != a.get(i))
        .unwrap_or(0);
    format!(
        "{} differs at line {}:\n  expected: {}\n  actual:   {}",
        path.display(),
        i + 1,
        e.get(i).unwrap_or(&"<end>"),
        a.get(i).unwrap_or(&"<end>")
    )
}

fn check(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_function_kiln_builds_reads_back() {
    for spec in bundled_specs() {
        for (name, f) in stages(&spec) {
            let text = f.print();
            let back = ir::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                back.print(),
                text,
                "{name}: printing what was read changes it"
            );
            assert!(
                back == f,
                "{name}: what was read is not the function printed"
            );
        }
    }
}

#[test]
fn symbolic_dimensions_read_back() {
    let (s, t, b) = (Dim::sym("s"), Dim::sym("t"), Dim::sym("b"));
    let strided = s
        .add_const(-3)
        .unwrap()
        .floor_div(2)
        .unwrap()
        .add_const(1)
        .unwrap();
    let dims = [
        s.scale(2).unwrap().add_const(1).unwrap(),
        s.mul(&t).unwrap().add_const(-3).unwrap(),
        s.neg().unwrap().add_const(4).unwrap(),
        s.mul(&s).unwrap().sub(&t).unwrap(),
        strided.clone(),
        strided.add_const(-1).unwrap().floor_div(3).unwrap(),
        s.floor_div(2).unwrap().floor_div(3).unwrap(),
        b.mul(&s.floor_div(2).unwrap()).unwrap().scale(4).unwrap(),
        Dim::konst(0),
    ];
    let mut f = Func::new("dims");
    let x = f.input("x", ir::Type::f32(dims.to_vec()));
    f.output("x", x);
    let text = f.print();
    let back = ir::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(back == f, "{text}\nread as\n{}", back.print());
    // A floor division of a single product prints like a product holding one; the
    // reader takes the second reading, which prints the same.
    let mut g = Func::new("dims");
    let bs = b.mul(&s).unwrap().floor_div(2).unwrap();
    let y = g.input("y", ir::Type::f32(vec![bs]));
    g.output("y", y);
    assert_eq!(ir::parse(&g.print()).unwrap().print(), g.print());
}

// ---- passes, as text in and text out ----

/// One pass test: `; comments`, a `pass NAME` line, the input function, a line
/// `expect`, the expected function.
struct PassCase {
    pass: String,
    input: String,
    /// The line of the file where the input starts (for messages).
    input_line: usize,
    /// Everything up to and including the `expect` line, kept when blessing.
    head: String,
    expected: String,
}

fn read_case(path: &Path) -> PassCase {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let pass_at = lines
        .iter()
        .position(|l| l.starts_with("pass "))
        .unwrap_or_else(|| panic!("{}: no `pass NAME` line", path.display()));
    let expect_at = lines
        .iter()
        .position(|l| l.trim() == "expect")
        .unwrap_or_else(|| panic!("{}: no `expect` line", path.display()));
    PassCase {
        pass: lines[pass_at]["pass ".len()..].trim().to_string(),
        input: lines[pass_at + 1..expect_at].join("\n"),
        input_line: pass_at + 2,
        head: lines[..=expect_at].join("\n") + "\n",
        expected: lines[expect_at + 1..].join("\n").trim().to_string() + "\n",
    }
}

fn run_pass(name: &str, f: &Func) -> Option<Func> {
    Some(match name {
        "dce" => passes::dce(f),
        "cse" => passes::cse(f),
        "simplify" => passes::simplify(f),
        "optimize" => passes::optimize(f),
        _ => return None,
    })
}

#[test]
fn passes_on_golden_text() {
    let dir = root().join("tests/golden/passes");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ir"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "pass cases: {paths:?}");
    let mut failures = Vec::new();
    for path in paths {
        let case = read_case(&path);
        let input = ir::parse(&case.input).unwrap_or_else(|e| {
            let line = e.line + case.input_line - 1;
            panic!("{}:{line}:{}: {}", path.display(), e.col, e.msg)
        });
        let Some(out) = run_pass(&case.pass, &input) else {
            panic!("{}: unknown pass `{}`", path.display(), case.pass);
        };
        let actual = out.print();
        if bless() {
            std::fs::write(&path, format!("{}\n{actual}", case.head)).unwrap();
        } else if actual != case.expected {
            failures.push(first_difference(&path, &case.expected, &actual));
        }
    }
    check(failures);
}

// ---- whole specs ----

#[test]
fn golden_ir_of_specs() {
    let dir = root().join("tests/golden/ir");
    let mut failures = Vec::new();
    for spec in ["mlp", "residual", "cnn"] {
        for (name, f) in stages(spec) {
            if name.ends_with(".graph.raw") || name.ends_with(".graph") || name == "mlp.train" {
                golden(&dir.join(format!("{name}.txt")), &f.print(), &mut failures);
            }
        }
    }
    check(failures);
}

/// `kiln ir SPEC --stage kernels` (and `--step`) for every bundled spec. The plan is
/// built from the optimized function, as the CLI does.
#[test]
fn golden_kernel_plans_of_specs() {
    let dir = root().join("tests/golden/kernels");
    let mut failures = Vec::new();
    for spec in bundled_specs() {
        for (name, f) in stages(&spec) {
            let file = match name.as_str() {
                n if n.ends_with(".raw") => continue,
                n => format!("{}.txt", n.replace(".graph", "").replace(".train", ".step")),
            };
            let plan = kiln::jit::plan::plan(&f).print();
            assert_eq!(
                plan,
                kiln::jit::plan::plan(&f).print(),
                "{name}: plan varies"
            );
            golden(&dir.join(file), &plan, &mut failures);
        }
    }
    check(failures);
}

// ---- errors ----

/// Reads `text` expecting an error at `line:col` whose message contains `msg`.
fn fails_at(text: &str, line: usize, col: usize, msg: &str) {
    match ir::parse(text) {
        Ok(f) => panic!("read without error:\n{text}\nas\n{}", f.print()),
        Err(e) => assert!(
            (e.line, e.col) == (line, col) && e.msg.contains(msg),
            "wanted {line}:{col} `{msg}`, got {e}\nin\n{text}"
        ),
    }
}

const SMALL: &str = "func @t(\n    %in0: f32[n, 3] \"x\"\n) {\n  %0 = input %in0\n  \
                     %1 = exp(%0) : f32[n, 3]\n  return \"y\" = %1\n}\n";

#[test]
fn errors_have_lines_and_columns() {
    assert!(ir::parse(SMALL).is_ok());
    let edit = |from: &str, to: &str| SMALL.replacen(from, to, 1);
    fails_at(&edit("exp(%0)", "expo(%0)"), 5, 8, "unknown op `expo`");
    fails_at(
        &edit("exp(%0)", "exp(%7)"),
        5,
        12,
        "%7 is not defined above",
    );
    fails_at(
        &edit("exp(%0)", "exp(%0, %0)"),
        5,
        8,
        "takes 1 arguments, not 2",
    );
    fails_at(
        &edit(": f32[n, 3]\n  r", ": f32[n, 4]\n  r"),
        5,
        18,
        "gives f32[n, 3]",
    );
    fails_at(
        &edit("input %in0", "input %in1"),
        4,
        14,
        "no input is declared as %in1",
    );
    fails_at(&edit("%1 = exp", "%0 = exp"), 5, 3, "%0 is defined twice");
    fails_at(&edit("[n, 3] \"x\"", "[n, 3 \"x\""), 2, 20, "expected `]`");
    fails_at(&edit("\"x\"", "\"x"), 2, 23, "closing `\"`");
    fails_at(
        &edit("f32[n, 3] \"x\"", "f16[n, 3] \"x\""),
        2,
        11,
        "element type",
    );
    fails_at(
        &edit("n, 3] \"x\"", "(n // 0), 3] \"x\""),
        2,
        21,
        "positive divisor",
    );
    fails_at(
        &edit("n, 3] \"x\"", "99999999999999999999, 3] \"x\""),
        2,
        15,
        "out of range",
    );
    fails_at(&SMALL.replace("}\n", ""), 7, 1, "found the end of the text");
    fails_at(
        &format!("{SMALL}extra"),
        8,
        1,
        "the end of the text after the function",
    );
    let deep = format!("{}n{}", "(".repeat(40), ")".repeat(40));
    fails_at(
        &edit("n, 3] \"x\"", &format!("{deep}, 3] \"x\"")),
        2,
        48,
        "nested",
    );
}

#[test]
fn the_reader_checks_types_of_builder_typed_ops() {
    let bad_broadcast = SMALL.replace(
        "%1 = exp(%0) : f32[n, 3]",
        "%1 = broadcast[dims=(0,1)](%0) : f32[n, 4]",
    );
    fails_at(&bad_broadcast, 5, 8, "cannot broadcast 3 to 4");
    let bad_reshape = SMALL.replace("%1 = exp(%0) : f32[n, 3]", "%1 = reshape(%0) : f32[n]");
    fails_at(&bad_reshape, 5, 8, "changes the element count");
}

/// The texts to mutate: whole specs' IR (the golden files, and the training steps of
/// the convolutional and recurrent specs for their gradient ops) and both sides of every
/// pass case.
fn corpus() -> &'static [String] {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut texts = vec![SMALL.to_string()];
        for dir in ["tests/golden/ir", "tests/golden/passes"] {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|x| x == "ir") {
                    let case = read_case(&p);
                    texts.extend([case.input, case.expected]);
                } else {
                    texts.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        for spec in ["cnn", "lstm", "attention"] {
            texts.extend(stages(spec).into_iter().map(|(_, f)| f.print()));
        }
        texts
    })
}

/// Numbers that probe the edges of attributes and shapes.
const EDGE_NUMBERS: [&str; 7] = [
    "0",
    "1",
    "-1",
    "7",
    "4294967296",
    "9223372036854775807",
    "-0",
];

/// Random edits: overwrite, insert, delete or duplicate a few bytes, or replace the
/// number at or after a position with an edge value.
fn mutate(text: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut b = text.as_bytes().to_vec();
    for &(at, kind, byte) in edits {
        let at = at % (b.len() + 1);
        match kind {
            0 if at < b.len() => b[at] = byte,
            1 => b.insert(at, byte),
            2 if at < b.len() => {
                b.remove(at);
            }
            3 => {
                let end = (at + usize::from(byte % 16)).min(b.len());
                let chunk = b[at..end].to_vec();
                b.splice(at..at, chunk);
            }
            _ => {
                let Some(start) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) else {
                    continue;
                };
                let end = (start..b.len())
                    .find(|&i| !b[i].is_ascii_digit())
                    .unwrap_or(b.len());
                let edge = EDGE_NUMBERS[usize::from(byte) % EDGE_NUMBERS.len()];
                b.splice(start..end, edge.bytes());
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_edits_never_panic(
        which in 0usize..256,
        edits in prop::collection::vec((any::<usize>(), 0u8..5, any::<u8>()), 1..4),
    ) {
        let texts = corpus();
        let text = mutate(&texts[which % texts.len()], &edits);
        match ir::parse(&text) {
            // What still reads prints to text that reads back to the same print.
            Ok(f) => {
                let printed = f.print();
                let again = ir::parse(&printed).map(|g| g.print());
                prop_assert_eq!(again, Ok(printed));
            }
            Err(e) => {
                prop_assert!(e.line >= 1 && e.col >= 1);
                prop_assert!(e.line <= text.lines().count() + 1, "{}", e);
            }
        }
    }
}
