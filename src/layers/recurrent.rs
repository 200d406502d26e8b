//! Recurrent layers: simple_rnn, lstm (gates i, f, c, o) and gru (gates z, r, h;
//! `reset_after` true by default, bias [2, 3u]). Weights sit under Keras's cell
//! sub-layer: `lstm/lstm_cell/kernel`.

use super::lower::{Call, LowerCx, Mode, dropout};
use super::masking::input_mask;
use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use super::{CellFacts, Facts, Mask, NO_FACTS};
use crate::args::{ArgKind, ArgSpec, Default, FRACTION, arg, int};
use crate::catalog::{activations, initializers, regularizers};
use crate::ir::{Cell, Id, Op, Result, RnnAttrs};

const BASE: [ArgSpec; 16] = [
    arg("units", int(1), Default::Required),
    arg("activation", activations::ACTIVATION, Default::Str("tanh")),
    arg("use_bias", ArgKind::Bool, Default::Bool(true)),
    arg(
        "kernel_initializer",
        initializers::INITIALIZER,
        Default::Str("glorot_uniform"),
    ),
    arg(
        "recurrent_initializer",
        initializers::INITIALIZER,
        Default::Str("orthogonal"),
    ),
    arg(
        "bias_initializer",
        initializers::INITIALIZER,
        Default::Str("zeros"),
    ),
    regularizers::KERNEL,
    regularizers::RECURRENT,
    regularizers::BIAS,
    regularizers::ACTIVITY,
    arg("return_sequences", ArgKind::Bool, Default::Bool(false)),
    arg("go_backwards", ArgKind::Bool, Default::Bool(false)),
    arg("unroll", ArgKind::Bool, Default::Bool(false)),
    arg("seed", int(0), Default::Null),
    arg("dropout", FRACTION, Default::Float(0.0)),
    arg("recurrent_dropout", FRACTION, Default::Float(0.0)),
];

/// LSTM and GRU add a recurrent activation and one gate-specific flag.
const fn gated(extra: ArgSpec) -> [ArgSpec; 18] {
    let b = BASE;
    let ra = arg(
        "recurrent_activation",
        activations::ACTIVATION,
        Default::Str("sigmoid"),
    );
    [
        b[0], b[1], ra, b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15], extra,
    ]
}

const LSTM_ARGS: [ArgSpec; 18] = gated(arg("unit_forget_bias", ArgKind::Bool, Default::Bool(true)));
const GRU_ARGS: [ArgSpec; 18] = gated(arg("reset_after", ArgKind::Bool, Default::Bool(true)));

pub const SIMPLE_RNN: LayerKind = LayerKind {
    name: "simple_rnn",
    class: "SimpleRNN",
    args: &BASE,
    arity: Arity::One,
    infer: rnn,
    lower: lower_rnn,
    facts: Facts {
        cell: Some(&SIMPLE_RNN_CELL),
        mask: Mask::ConsumesKeeps,
        ..NO_FACTS
    },
};
pub const LSTM: LayerKind = LayerKind {
    name: "lstm",
    class: "LSTM",
    args: &LSTM_ARGS,
    arity: Arity::One,
    infer: rnn,
    lower: lower_rnn,
    facts: Facts {
        cell: Some(&LSTM_CELL),
        mask: Mask::ConsumesKeeps,
        ..NO_FACTS
    },
};
pub const GRU: LayerKind = LayerKind {
    name: "gru",
    class: "GRU",
    args: &GRU_ARGS,
    arity: Arity::One,
    infer: rnn,
    lower: lower_rnn,
    facts: Facts {
        cell: Some(&GRU_CELL),
        mask: Mask::ConsumesKeeps,
        ..NO_FACTS
    },
};

fn rnn(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    cx.expect_rank(&[3], "[batch, steps, features]")?;
    let features = cx.known(&cx.input().last().clone(), "feature axis (the last axis)")?;
    let u = cx.args.int("units");
    let facts = cx.kind.facts.cell?;
    let (gates, cell) = (facts.gates, facts.prefix);
    let Some(gu) = u.checked_mul(gates) else {
        return cx.overflow(crate::dim::Overflow);
    };
    let mut params = vec![
        cx.param(
            &format!("{cell}/kernel"),
            vec![features, gu],
            "kernel_initializer",
        ),
        cx.param(
            &format!("{cell}/recurrent_kernel"),
            vec![u, gu],
            "recurrent_initializer",
        ),
    ];
    if cx.args.bool("use_bias") {
        let shape = if facts.split_bias && cx.args.bool("reset_after") {
            vec![2, gu]
        } else {
            vec![gu]
        };
        params.push(cx.param(&format!("{cell}/bias"), shape, "bias_initializer"));
    }
    let inp = cx.input();
    let shape = if cx.args.bool("return_sequences") {
        vec![inp.shape[0].clone(), inp.shape[1].clone(), u.into()]
    } else {
        vec![inp.shape[0].clone(), u.into()]
    };
    Some(Inferred {
        output: TensorType::f32(shape),
        params,
    })
}

pub const SIMPLE_RNN_CELL: CellFacts = CellFacts {
    cell: Cell::Simple,
    prefix: "simple_rnn_cell",
    gates: 1,
    unit_forget_bias: false,
    split_bias: false,
};
pub const LSTM_CELL: CellFacts = CellFacts {
    cell: Cell::Lstm,
    prefix: "lstm_cell",
    gates: 4,
    unit_forget_bias: true,
    split_bias: false,
};
pub const GRU_CELL: CellFacts = CellFacts {
    cell: Cell::Gru,
    prefix: "gru_cell",
    gates: 3,
    unit_forget_bias: false,
    split_bias: true,
};

fn lower_rnn(lw: &mut LowerCx, l: &Call, x: &[Id]) -> Result<Id> {
    let a = l.args;
    let facts = l
        .kind
        .facts
        .cell
        .ok_or_else(|| crate::ir::IrError(format!("`{}` has no cell", l.kind.name)))?;
    let prefix = facts.prefix;
    let mut attrs = RnnAttrs {
        cell: facts.cell,
        units: a.int("units"),
        activation: a.str("activation").to_string(),
        recurrent_activation: a
            .opt_str("recurrent_activation")
            .unwrap_or("sigmoid")
            .to_string(),
        return_sequences: a.bool("return_sequences"),
        go_backwards: a.bool("go_backwards"),
        reset_after: facts.split_bias && a.bool("reset_after"),
        use_bias: a.bool("use_bias"),
        masked: false,
        zero_output: false,
        dropout: false,
    };
    let rec_rate = a.float("recurrent_dropout");
    // With recurrent dropout Keras's cells take their `implementation=1` path: each
    // gate draws its own input and recurrent mask.
    let per_gate = lw.mode == Mode::Train && rec_rate > 0.0;
    let x = if per_gate {
        x[0]
    } else {
        input_dropout(lw, x[0], a.float("dropout"))?
    };
    let mut args = vec![
        x,
        l.param(lw, &format!("{prefix}/kernel"))?,
        l.param(lw, &format!("{prefix}/recurrent_kernel"))?,
    ];
    if attrs.use_bias {
        args.push(l.param(lw, &format!("{prefix}/bias"))?);
    }
    if let Some(m) = input_mask(lw) {
        attrs.masked = true;
        // Set by `bidirectional` on the layers it wraps, as Keras does.
        attrs.zero_output = a.bool("zero_output_for_mask");
        args.push(m);
    }
    if per_gate {
        attrs.dropout = true;
        let (gates, units) = (attrs.gates(), attrs.units);
        let (xk, hk) = gate_masks(lw, x, (gates, units), (a.float("dropout"), rec_rate))?;
        args.extend([xk, hk]);
    }
    lw.f.push(Op::Rnn(attrs), &args)
}

/// Keras's per-gate dropout masks of a recurrent cell with `recurrent_dropout`, in
/// training: one `[batch, gates, features]` keep mask on the input (all ones when
/// `dropout` is 0) and one `[batch, gates, units]` on the previous output, each drawn
/// once per sequence, kept entries scaled by 1/(1-rate).
fn gate_masks(
    lw: &mut LowerCx,
    x: Id,
    (gates, units): (usize, i64),
    (rate, rec_rate): (f64, f64),
) -> Result<(Id, Id)> {
    let shape = lw.f.ty(x).shape.clone();
    let g = crate::dim::Dim::konst(gates as i64);
    let xs = [shape[0].clone(), g.clone(), shape[2].clone()];
    let hs = [shape[0].clone(), g, crate::dim::Dim::konst(units)];
    let ones = lw.f.full(1.0, &xs)?;
    let xk = dropout(lw, ones, rate)?;
    let ones = lw.f.full(1.0, &hs)?;
    let hk = dropout(lw, ones, rec_rate)?;
    Ok((xk, hk))
}

/// Keras's `dropout` of a recurrent cell, in training: one mask per sequence
/// `[batch, features]`, the same at every step, on the cell's input.
fn input_dropout(lw: &mut LowerCx, x: Id, rate: f64) -> Result<Id> {
    if lw.mode == Mode::Infer || rate == 0.0 {
        return Ok(x);
    }
    let shape = lw.f.ty(x).shape.clone();
    let step = [shape[0].clone(), shape[2].clone()];
    let ones = lw.f.full(1.0, &step)?;
    let keep = dropout(lw, ones, rate)?;
    let keep = lw.f.broadcast(keep, &shape, &[0, 2])?;
    lw.f.mul(x, keep)
}
