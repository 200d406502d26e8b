//! Every kind of op, with each of its attribute forms, reads back to the same node.

use super::ops::templates;
use crate::dim::Dim;
use crate::ir::{
    Binary, Cell, Cmp, ConvAttrs, DType, Func, Id, Op, Padding, PoolKind, ReduceOp, Result,
    RnnAttrs, Type, Unary, WindowAttrs, autodiff, op_name, parse,
};

fn sym(s: &str) -> Dim {
    Dim::sym(s)
}

fn k(c: i64) -> Dim {
    Dim::konst(c)
}

/// Sums `x` to a scalar and adds it to `acc`.
fn accumulate(f: &mut Func, acc: Id, x: Id) -> Result<Id> {
    let axes = (0..f.ty(x).rank()).collect();
    let s = f.reduce(ReduceOp::Sum, x, axes)?;
    f.add(acc, s)
}

/// Convolutions and pooling in 1-D and 2-D with every padding, and their gradients.
fn windows(f: &mut Func, acc: Id) -> Result<(Id, Vec<Id>)> {
    let x2 = f.input("x2", Type::f32(vec![sym("b"), k(8), k(8), k(2)]));
    let k2 = f.input("k2", Type::f32(vec![k(3), k(3), k(2), k(4)]));
    let x1 = f.input("x1", Type::f32(vec![sym("b"), sym("t"), k(2)]));
    let k1 = f.input("k1", Type::f32(vec![k(2), k(2), k(4)]));
    let mut acc = acc;
    for padding in Padding::ALL {
        let conv = ConvAttrs {
            strides: vec![2, 1],
            dilation: vec![1, 2],
            padding: Padding::Same,
            groups: 1,
        };
        let c = f.push(Op::Conv(conv), &[x2, k2])?;
        acc = accumulate(f, acc, c)?;
        let conv1 = ConvAttrs {
            strides: vec![1],
            dilation: vec![2],
            padding,
            groups: 1,
        };
        let c1 = f.push(Op::Conv(conv1), &[x1, k1])?;
        acc = accumulate(f, acc, c1)?;
    }
    for kind in PoolKind::ALL {
        let attrs = WindowAttrs {
            window: vec![2, 3],
            strides: vec![2, 2],
            padding: Padding::Valid,
        };
        let p = f.push(Op::Pool { kind, attrs }, &[x2])?;
        acc = accumulate(f, acc, p)?;
    }
    Ok((acc, vec![x2, k2, x1, k1]))
}

/// Recurrent cells with and without bias, and gather.
fn sequences(f: &mut Func, acc: Id) -> Result<(Id, Vec<Id>)> {
    let table = f.input("table", Type::f32(vec![k(10), k(3)]));
    let idx = f.input("idx", Type::new(vec![sym("b"), sym("t")], DType::I32));
    let x = f.push(Op::Gather, &[table, idx])?;
    let mut acc = accumulate(f, acc, x)?;
    let mut wrt = vec![table];
    for (i, cell) in Cell::ALL.into_iter().enumerate() {
        let gates = [1, 4, 3][i] * 2;
        let kern = f.input(&format!("k{i}"), Type::f32(vec![k(3), k(gates)]));
        let rec = f.input(&format!("r{i}"), Type::f32(vec![k(2), k(gates)]));
        let attrs = RnnAttrs {
            cell,
            units: 2,
            activation: "tanh".into(),
            recurrent_activation: if cell == Cell::Simple {
                "sigmoid"
            } else {
                "hard_sigmoid"
            }
            .into(),
            return_sequences: i == 1,
            go_backwards: i == 2,
            reset_after: cell == Cell::Gru,
            use_bias: i != 0,
            // The LSTM and GRU take a Keras mask (the GRU zeros masked outputs).
            masked: i != 0,
            zero_output: i == 2,
            // The GRU also has recurrent dropout's keep masks.
            dropout: i == 2,
        };
        let mut args = vec![x, kern, rec];
        if attrs.use_bias {
            let rows = if cell == Cell::Gru {
                vec![k(2)]
            } else {
                vec![]
            };
            let bias = f.input(
                &format!("bias{i}"),
                Type::f32([rows, vec![k(gates)]].concat()),
            );
            args.push(bias);
            wrt.push(bias);
        }
        if attrs.masked {
            let mask = f.input(&format!("mask{i}"), Type::f32(vec![sym("b"), sym("t")]));
            args.push(mask);
        }
        if attrs.dropout {
            let g = k(gates / 2);
            for (name, n) in [("xkeep", 3), ("hkeep", 2)] {
                let keep = f.input(
                    &format!("{name}{i}"),
                    Type::f32(vec![sym("b"), g.clone(), k(n)]),
                );
                args.push(keep);
            }
        }
        let y = f.push(Op::Rnn(attrs), &args)?;
        acc = accumulate(f, acc, y)?;
        wrt.extend([kern, rec]);
    }
    Ok((acc, wrt))
}

/// Elementwise, structural, reduction and leaf ops.
fn the_rest(f: &mut Func, acc: Id) -> Result<Id> {
    let x = f.input("x", Type::f32(vec![sym("b"), k(3)]));
    let key = f.input("key", Type::f32(vec![]));
    let mut acc = acc;
    let mut vals = vec![];
    vals.extend(
        Unary::ALL
            .map(|u| f.unary(u, x))
            .into_iter()
            .collect::<Result<Vec<_>>>()?,
    );
    for b in Binary::ALL {
        vals.push(f.push(Op::Binary(b), &[x, x])?);
    }
    for c in Cmp::ALL {
        vals.push(f.push(Op::Cmp(c), &[x, x])?);
    }
    vals.push(f.push(Op::Select, &[x, x, x])?);
    let i = f.push(Op::Cast(DType::I64), &[x])?;
    vals.push(f.push(Op::Cast(DType::F32), &[i])?);
    vals.push(f.push_typed(Op::Iota { axis: 1 }, &[], Type::f32(vec![sym("b"), k(3)])));
    vals.push(f.push_typed(Op::Rng { salt: u64::MAX }, &[key], f.ty(x).clone()));
    let n = sym("b").add_const(-1).unwrap().floor_div(2).unwrap();
    vals.push(f.dim_size(&n));
    for c in [
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e-7,
        3.4e38,
        f64::MIN_POSITIVE,
    ] {
        vals.push(f.scalar(c));
    }
    let t = f.transpose(x, vec![1, 0])?;
    vals.push(f.matmul(t, t, true, false)?);
    vals.push(f.reshape(t, vec![sym("b").scale(3).unwrap()])?);
    let start = sym("b").floor_div(2).unwrap();
    let sliced = f.push(
        Op::Slice {
            axis: 0,
            start,
            end: sym("b"),
        },
        &[x],
    )?;
    vals.push(sliced);
    let padded = Op::Pad {
        axis: 1,
        low: k(2),
        high: sym("b").add_const(-1).unwrap(),
    };
    vals.push(f.push(padded, &[x])?);
    vals.push(f.push(Op::Concat { axis: 1 }, &[x, x, x])?);
    vals.push(f.reduce(ReduceOp::Max, x, vec![0, 1])?);
    for v in vals {
        acc = accumulate(f, acc, v)?;
    }
    Ok(acc)
}

/// One function holding every kind of op (gradients through `autodiff`).
fn every_op() -> Result<Func> {
    let mut f = Func::new("every_op");
    let acc = f.scalar(0.0);
    let (acc, mut wrt) = windows(&mut f, acc)?;
    let (acc, seq_wrt) = sequences(&mut f, acc)?;
    wrt.extend(seq_wrt);
    let acc = the_rest(&mut f, acc)?;
    let grads = autodiff::grad(&mut f, acc, &wrt)?;
    f.output("loss", acc);
    for (i, g) in grads.into_iter().enumerate() {
        f.output(&format!("d{i}"), g);
    }
    Ok(f)
}

#[test]
fn every_op_reads_back() {
    let f = every_op().unwrap();
    let text = f.print();
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(back == f, "{text}\nread as\n{}", back.print());
    for (name, _) in templates() {
        assert!(
            f.nodes.iter().any(|n| op_name(&n.op) == name),
            "no `{name}` in the test function"
        );
    }
}

#[test]
fn op_names_are_unique() {
    let names: Vec<String> = templates().into_iter().map(|(n, _)| n).collect();
    for (i, n) in names.iter().enumerate() {
        assert!(!names[..i].contains(n), "`{n}` names two ops");
    }
}
