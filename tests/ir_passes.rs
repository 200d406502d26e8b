//! Graph passes, each shown on printed IR (the expected text is the test), plus golden
//! files of whole specs' IR before and after the passes (`tests/golden/ir/`; rewrite
//! with UPDATE_GOLDEN=1 after an intended change).

use kiln::dim::Dim;
use kiln::ir::{Func, Op, Type, Unary, passes};

fn x_func() -> (Func, usize) {
    let mut f = Func::new("t");
    let x = f.input("x", Type::f32(vec![Dim::sym("n"), Dim::konst(3)]));
    (f, x)
}

fn body(f: &Func) -> String {
    // The lines between the signature and `return`, trimmed.
    f.print()
        .lines()
        .filter(|l| l.starts_with("  %") || l.starts_with("  return"))
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dce_removes_what_no_output_uses() {
    let (mut f, x) = x_func();
    let _unused = f.unary(Unary::Exp, x).unwrap();
    let y = f.unary(Unary::Tanh, x).unwrap();
    f.output("y", y);
    assert_eq!(
        body(&passes::dce(&f)),
        "%0 = input %in0\n%1 = tanh(%0) : f32[n, 3]\nreturn \"y\" = %1"
    );
}

#[test]
fn cse_merges_identical_nodes() {
    let (mut f, x) = x_func();
    let a = f.unary(Unary::Exp, x).unwrap();
    let b = f.unary(Unary::Exp, x).unwrap();
    let y = f.add(a, b).unwrap();
    f.output("y", y);
    assert_eq!(
        body(&passes::cse(&f)),
        "%0 = input %in0\n%1 = exp(%0) : f32[n, 3]\n%2 = add(%1, %1) : f32[n, 3]\nreturn \"y\" = %2"
    );
}

#[test]
fn constant_folding_and_identities() {
    let (mut f, x) = x_func();
    let two = f.scalar(2.0);
    let three = f.scalar(3.0);
    let six = f.mul(two, three).unwrap(); // folds to 6
    let one = f.scalar(1.0);
    let y1 = f.mul(x, one).unwrap(); // x * 1 = x
    let zero = f.scalar(0.0);
    let y2 = f.add(y1, zero).unwrap(); // x + 0 = x
    let y3 = f.mul(y2, six).unwrap();
    let n1 = f.unary(Unary::Neg, y3).unwrap();
    let n2 = f.unary(Unary::Neg, n1).unwrap(); // --y = y
    f.output("y", n2);
    assert_eq!(
        body(&passes::optimize(&f)),
        "%0 = input %in0\n%1 = const 6.0 : f32[]\n%2 = broadcast[dims=()](%1) : f32[n, 3]\n%3 = mul(%0, %2) : f32[n, 3]\nreturn \"y\" = %3"
    );
}

#[test]
fn transposes_and_reshapes_collapse() {
    let (mut f, x) = x_func();
    let t1 = f.transpose(x, vec![1, 0]).unwrap();
    let t2 = f.transpose(t1, vec![1, 0]).unwrap(); // identity
    let r1 = f.reshape(t2, vec![Dim::konst(3), Dim::sym("n")]).unwrap();
    let r2 = f.reshape(r1, vec![Dim::sym("n"), Dim::konst(3)]).unwrap(); // back to x's shape
    let y = f.push(Op::Unary(Unary::Exp), &[r2]).unwrap();
    f.output("y", y);
    assert_eq!(
        body(&passes::optimize(&f)),
        "%0 = input %in0\n%1 = exp(%0) : f32[n, 3]\nreturn \"y\" = %1"
    );
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/ir")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(expected, actual, "{} changed", path.display());
}

#[test]
fn golden_ir_of_specs() {
    for spec in ["mlp", "residual", "cnn"] {
        let path = format!("{}/specs/{spec}.yaml", env!("CARGO_MANIFEST_DIR"));
        let m = kiln::Model::from_path(&path).unwrap();
        let f = kiln::lower::predict_func(&m.graph).unwrap();
        golden(&format!("{spec}.graph.raw.txt"), &f.print());
        golden(&format!("{spec}.graph.txt"), &passes::optimize(&f).print());
    }
    let path = format!("{}/specs/mlp.yaml", env!("CARGO_MANIFEST_DIR"));
    let m = kiln::Model::from_path(&path).unwrap();
    let t = kiln::lower::train::build(&m.graph).unwrap();
    golden("mlp.train.txt", &passes::optimize(&t.func).print());
}
