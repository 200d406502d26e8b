//! Recurrent layers: simple_rnn, lstm (gates i, f, c, o) and gru (gates z, r, h;
//! `reset_after` true by default, bias [2, 3u]). Weights sit under Keras's cell
//! sub-layer: `lstm/lstm_cell/kernel`.

use super::{Arity, Ctx, Inferred, LayerKind, TensorType};
use crate::args::{ArgKind, ArgSpec, Default, arg, int};

const BASE: [ArgSpec; 10] = [
    arg("units", int(1), Default::Required),
    arg("activation", ArgKind::Activation, Default::Str("tanh")),
    arg("use_bias", ArgKind::Bool, Default::Bool(true)),
    arg(
        "kernel_initializer",
        ArgKind::Initializer,
        Default::Str("glorot_uniform"),
    ),
    arg(
        "recurrent_initializer",
        ArgKind::Initializer,
        Default::Str("orthogonal"),
    ),
    arg(
        "bias_initializer",
        ArgKind::Initializer,
        Default::Str("zeros"),
    ),
    arg("return_sequences", ArgKind::Bool, Default::Bool(false)),
    arg("go_backwards", ArgKind::Bool, Default::Bool(false)),
    arg("unroll", ArgKind::Bool, Default::Bool(false)),
    arg("seed", int(0), Default::Null),
];

/// LSTM and GRU add a recurrent activation and one gate-specific flag.
const fn gated(extra: ArgSpec) -> [ArgSpec; 12] {
    let b = BASE;
    let ra = arg(
        "recurrent_activation",
        ArgKind::Activation,
        Default::Str("sigmoid"),
    );
    [
        b[0], b[1], ra, b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], extra,
    ]
}

const LSTM_ARGS: [ArgSpec; 12] = gated(arg("unit_forget_bias", ArgKind::Bool, Default::Bool(true)));
const GRU_ARGS: [ArgSpec; 12] = gated(arg("reset_after", ArgKind::Bool, Default::Bool(true)));

pub const SIMPLE_RNN: LayerKind = LayerKind {
    name: "simple_rnn",
    class: "SimpleRNN",
    args: &BASE,
    arity: Arity::One,
    infer: rnn,
};
pub const LSTM: LayerKind = LayerKind {
    name: "lstm",
    class: "LSTM",
    args: &LSTM_ARGS,
    arity: Arity::One,
    infer: rnn,
};
pub const GRU: LayerKind = LayerKind {
    name: "gru",
    class: "GRU",
    args: &GRU_ARGS,
    arity: Arity::One,
    infer: rnn,
};

fn rnn(cx: &mut Ctx) -> Option<Inferred> {
    cx.expect_float()?;
    cx.expect_rank(&[3], "[batch, steps, features]")?;
    let features = cx.known(&cx.input().last().clone(), "feature axis (the last axis)")?;
    let u = cx.args.int("units");
    let (gates, cell) = match cx.kind.name {
        "lstm" => (4, "lstm_cell"),
        "gru" => (3, "gru_cell"),
        _ => (1, "simple_rnn_cell"),
    };
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
        let shape = if cx.kind.name == "gru" && cx.args.bool("reset_after") {
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
