//! A recurrent layer (the IR's `Rnn`) as ONNX's `LSTM`, `GRU` or `RNN`.
//!
//! Keras keeps kernels `[features, gates·units]` with gates in the order i, f, c, o
//! (LSTM) or z, r, h (GRU); ONNX wants `[1, gates·units, features]` with LSTM's gates in
//! the order i, o, f, c (GRU's order is Keras's). ONNX's bias is the input bias and the
//! recurrent bias side by side; Keras has one (a recurrent bias only for GRU with
//! `reset_after`, which is ONNX's `linear_before_reset`). ONNX runs time-major, so the
//! input and outputs are transposed around the node; `go_backwards` is ONNX's `reverse`
//! direction, whose outputs are in input order where Keras's are in the order
//! processed, so a returned sequence is reversed back.
//!
//! A layer under a Keras mask keeps its state through masked steps, which ONNX's
//! recurrent operators (sequence lengths only) cannot say: it becomes a `Scan` whose
//! body is Keras's cell written out (gates, state update, and the mask's choice between
//! the new and the carried state), over the input projection computed for all steps
//! at once.

use super::proto::{
    AttributeProto, GraphProto, TensorTypeProto, TypeProto, ValueInfoProto, attribute_type,
    data_type,
};
use super::{Emitter, Result, int, ints, refuse, string, strings, tensor_attr, tensor_f32};
use crate::ir::{Cell, RnnAttrs};

/// ONNX's name of a Keras activation, for those both have.
fn activation(name: &str) -> Result<&'static str> {
    Ok(match name {
        "tanh" => "Tanh",
        "sigmoid" => "Sigmoid",
        "relu" => "Relu",
        other => {
            return refuse(format!(
                "a recurrent layer with activation `{other}`: ONNX's recurrent operators have no such activation (kiln exports tanh, sigmoid and relu)"
            ));
        }
    })
}

pub(super) fn emit(e: &mut Emitter, a: &[&str], r: &RnnAttrs) -> Result<String> {
    if r.masked {
        return masked(e, a, r);
    }
    if a.len() != 3 + usize::from(r.use_bias) {
        return refuse("a recurrent layer with extra operands (recurrent dropout at inference)");
    }
    let units = r.units;
    let (gates, op, acts): (i64, &str, Vec<&str>) = match r.cell {
        Cell::Lstm => (
            4,
            "LSTM",
            vec![
                activation(&r.recurrent_activation)?,
                activation(&r.activation)?,
                activation(&r.activation)?,
            ],
        ),
        Cell::Gru => (
            3,
            "GRU",
            vec![
                activation(&r.recurrent_activation)?,
                activation(&r.activation)?,
            ],
        ),
        Cell::Simple => (1, "RNN", vec![activation(&r.activation)?]),
    };
    // Column blocks of a Keras matrix in ONNX's gate order.
    let order: Vec<i64> = match r.cell {
        Cell::Lstm => vec![0, 3, 1, 2],
        _ => (0..gates).collect(),
    };
    let reorder = |e: &mut Emitter, m: &str, axis: i64| -> String {
        if order.iter().enumerate().all(|(i, &o)| i as i64 == o) {
            return m.to_string();
        }
        let parts: Vec<String> = order
            .iter()
            .map(|&o| e.slice(m, axis, o * units, (o + 1) * units))
            .collect();
        let ordered: Vec<&str> = parts.iter().map(String::as_str).collect();
        e.node("Concat", &ordered, vec![int("axis", axis)])
    };
    let zero = e.ints1(&[0]);
    // [f, g·u] → [1, g·u, f]
    let onnx_matrix = |e: &mut Emitter, m: &str| -> String {
        let m = reorder(e, m, 1);
        let t = e.transpose(&m, &[1, 0]);
        e.node("Unsqueeze", &[&t, &zero], vec![])
    };
    let w = onnx_matrix(e, a[1]);
    let rec = onnx_matrix(e, a[2]);
    let b = if r.use_bias {
        let g = (gates * units) as usize;
        let (input, recurrent) = if r.cell == Cell::Gru && r.reset_after {
            let (i, rr) = e.gru_biases(a[3]);
            (i, rr)
        } else {
            (a[3].to_string(), e.const_f32(&[g], &vec![0.0; g]))
        };
        let input = reorder(e, &input, 0);
        let both = e.node("Concat", &[&input, &recurrent], vec![int("axis", 0)]);
        e.node("Unsqueeze", &[&both, &zero], vec![])
    } else {
        String::new()
    };
    // Time-major, and for `go_backwards` in reverse order: the forward direction over
    // the reversed steps gives Keras's outputs in Keras's (processing) order, with no
    // reliance on how a runtime orders a reverse direction's outputs.
    let x = e.transpose(a[0], &[1, 0, 2]);
    let x = if r.go_backwards { e.reverse(&x, 0) } else { x };
    let attrs = vec![
        int("hidden_size", units),
        strings("activations", &acts),
        string("direction", "forward"),
    ];
    let mut attrs = attrs;
    if r.cell == Cell::Gru {
        attrs.push(int("linear_before_reset", i64::from(r.reset_after)));
    }
    let outs = e.node_n(op, &[&x, &w, &rec, &b], attrs, 2);
    if r.return_sequences {
        // Y: [steps, 1, batch, units] → [batch, steps, units].
        let one = e.ints1(&[1]);
        let y = e.node("Squeeze", &[&outs[0], &one], vec![]);
        Ok(e.transpose(&y, &[1, 0, 2]))
    } else {
        // Y_h: [1, batch, units] → [batch, units].
        Ok(e.node("Squeeze", &[&outs[1], &zero], vec![]))
    }
}

/// A Keras activation as ONNX nodes, for those the recurrent layers use.
fn act(e: &mut Emitter, name: &str, x: &str) -> Result<String> {
    Ok(match name {
        "tanh" => e.node("Tanh", &[x], vec![]),
        "sigmoid" => e.node("Sigmoid", &[x], vec![]),
        "relu" => e.node("Relu", &[x], vec![]),
        "linear" => e.node("Identity", &[x], vec![]),
        "hard_sigmoid" => e.node(
            "HardSigmoid",
            &[x],
            vec![super::float("alpha", 1.0 / 6.0), super::float("beta", 0.5)],
        ),
        other => {
            return refuse(format!(
                "a masked recurrent layer with activation `{other}` (kiln exports tanh, sigmoid, relu, linear and hard_sigmoid)"
            ));
        }
    })
}

fn float_input(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: None,
            }),
        }),
    }
}

/// The `Scan` of a masked recurrent layer (see the module's documentation).
fn masked(e: &mut Emitter, a: &[&str], r: &RnnAttrs) -> Result<String> {
    let Some(mi) = r.mask_index() else {
        return refuse("a masked recurrent layer without its mask");
    };
    if a.len() != mi + 1 {
        return refuse("a recurrent layer with extra operands (recurrent dropout at inference)");
    }
    let u = r.units;
    let lstm = r.cell == Cell::Lstm;
    // The input projection of every step, with the input bias: [batch, steps, g·u].
    let mut xz = e.node("MatMul", &[a[0], a[1]], vec![]);
    let mut rec_bias = None;
    if r.use_bias {
        let (bi, br) = if r.cell == Cell::Gru && r.reset_after {
            let (bi, br) = e.gru_biases(a[3]);
            (bi, Some(br))
        } else {
            (a[3].to_string(), None)
        };
        xz = e.node("Add", &[&xz, &bi], vec![]);
        rec_bias = br;
    }
    // GRU without reset_after multiplies the candidate's recurrent kernel after the
    // reset gate: split it off outside the loop.
    let (rec, rec_h) = if r.cell == Cell::Gru && !r.reset_after {
        (
            e.slice(a[2], 1, 0, 2 * u),
            Some(e.slice(a[2], 1, 2 * u, 3 * u)),
        )
    } else {
        (a[2].to_string(), None)
    };
    // Zero initial states [batch, units].
    let shape = e.node("Shape", &[a[0]], vec![]);
    let first = e.ints1(&[0]);
    let batch = e.node("Gather", &[&shape, &first], vec![int("axis", 0)]);
    let units = e.ints1(&[u]);
    let state_shape = e.node("Concat", &[&batch, &units], vec![int("axis", 0)]);
    let zero = tensor_f32("", &[1], [0.0f32].into_iter());
    let h0 = e.node(
        "ConstantOfShape",
        &[&state_shape],
        vec![tensor_attr("value", zero)],
    );

    // The body, written into its own node list.
    let outer = std::mem::take(&mut e.nodes);
    let (h_prev, c_prev, xz_t, m_t) = (
        e.fresh("h_prev"),
        e.fresh("c_prev"),
        e.fresh("xz_t"),
        e.fresh("mask_t"),
    );
    let body = cell_body(
        e,
        r,
        &h_prev,
        &c_prev,
        &xz_t,
        &m_t,
        &rec,
        rec_h.as_deref(),
        rec_bias.as_deref(),
    );
    let body_nodes = std::mem::replace(&mut e.nodes, outer);
    let (h_out, c_out, y_out) = body?;
    let mut inputs = vec![float_input(&h_prev)];
    let mut outputs = vec![float_input(&h_out)];
    if lstm {
        inputs.push(float_input(&c_prev));
        outputs.push(float_input(&c_out));
    }
    inputs.push(float_input(&xz_t));
    inputs.push(float_input(&m_t));
    outputs.push(float_input(&y_out));
    let graph = GraphProto {
        node: body_nodes,
        name: e.fresh("cell"),
        initializer: vec![],
        input: inputs,
        output: outputs,
    };
    // `go_backwards`: scan the reversed steps forward (outputs in Keras's processing
    // order, with no reliance on how a runtime orders a reverse scan's outputs).
    let (xz, mask) = if r.go_backwards {
        (e.reverse(&xz, 1), e.reverse(a[mi], 1))
    } else {
        (xz, a[mi].to_string())
    };
    let attrs = vec![
        AttributeProto {
            name: "body".into(),
            g: Some(graph),
            r#type: attribute_type::GRAPH,
            ..AttributeProto::default()
        },
        int("num_scan_inputs", 2),
        ints("scan_input_axes", &[1, 1]),
        ints("scan_output_axes", &[1]),
    ];
    // The cell state starts from zeros of its own (a runtime may update state
    // buffers in place, so the two states do not share a tensor).
    let c0 = if lstm {
        let zero = tensor_f32("", &[1], [0.0f32].into_iter());
        e.node(
            "ConstantOfShape",
            &[&state_shape],
            vec![tensor_attr("value", zero)],
        )
    } else {
        String::new()
    };
    let mut scan_in: Vec<&str> = vec![&h0];
    if lstm {
        scan_in.push(&c0);
    }
    scan_in.push(&xz);
    scan_in.push(&mask);
    let outs = e.node_n("Scan", &scan_in, attrs, if lstm { 3 } else { 2 });
    let ys = outs.last().expect("the scan's outputs").clone();
    if r.return_sequences {
        return Ok(ys);
    }
    // The last step's output: [batch, 1, units] → [batch, units].
    let start = e.ints1(&[-1]);
    let end = e.ints1(&[i64::MAX]);
    let axis = e.ints1(&[1]);
    let last = e.node("Slice", &[&ys, &start, &end, &axis], vec![]);
    Ok(e.node("Squeeze", &[&last, &axis], vec![]))
}

/// Keras's cell for one step and the mask's choice: the names of the new output
/// state, the new cell state (LSTM) and the step's output.
#[allow(clippy::too_many_arguments)]
fn cell_body(
    e: &mut Emitter,
    r: &RnnAttrs,
    h_prev: &str,
    c_prev: &str,
    xz: &str,
    m_t: &str,
    rec: &str,
    rec_h: Option<&str>,
    rec_bias: Option<&str>,
) -> Result<(String, String, String)> {
    let u = r.units;
    let (an, rn) = (r.activation.as_str(), r.recurrent_activation.as_str());
    let one_axis = e.ints1(&[1]);
    let m = e.node("Unsqueeze", &[m_t, &one_axis], vec![]);
    let one = e.const_f32(&[], &[1.0]);
    let keep = e.node("Sub", &[&one, &m], vec![]);
    let mut c_new = String::new();
    let h_new = match r.cell {
        Cell::Simple => {
            let hz = e.node("MatMul", &[h_prev, rec], vec![]);
            let z = e.node("Add", &[xz, &hz], vec![]);
            act(e, an, &z)?
        }
        Cell::Lstm => {
            let hz = e.node("MatMul", &[h_prev, rec], vec![]);
            let z = e.node("Add", &[xz, &hz], vec![]);
            let g: Vec<String> = (0..4).map(|k| e.slice(&z, 1, k * u, (k + 1) * u)).collect();
            let i = act(e, rn, &g[0])?;
            let f = act(e, rn, &g[1])?;
            let cand = act(e, an, &g[2])?;
            let o = act(e, rn, &g[3])?;
            let fc = e.node("Mul", &[&f, c_prev], vec![]);
            let ig = e.node("Mul", &[&i, &cand], vec![]);
            c_new = e.node("Add", &[&fc, &ig], vec![]);
            let ac = act(e, an, &c_new)?;
            e.node("Mul", &[&o, &ac], vec![])
        }
        Cell::Gru => {
            let xg: Vec<String> = (0..3).map(|k| e.slice(xz, 1, k * u, (k + 1) * u)).collect();
            let (hz_z, hz_r, pre_h) = if r.reset_after {
                let mut hz = e.node("MatMul", &[h_prev, rec], vec![]);
                if let Some(b) = rec_bias {
                    hz = e.node("Add", &[&hz, b], vec![]);
                }
                let hg: Vec<String> = (0..3)
                    .map(|k| e.slice(&hz, 1, k * u, (k + 1) * u))
                    .collect();
                (hg[0].clone(), hg[1].clone(), Some(hg[2].clone()))
            } else {
                let hz = e.node("MatMul", &[h_prev, rec], vec![]);
                (e.slice(&hz, 1, 0, u), e.slice(&hz, 1, u, 2 * u), None)
            };
            let zs = e.node("Add", &[&xg[0], &hz_z], vec![]);
            let z = act(e, rn, &zs)?;
            let rs = e.node("Add", &[&xg[1], &hz_r], vec![]);
            let rg = act(e, rn, &rs)?;
            let cand_pre = match pre_h {
                Some(hh) => {
                    let rh = e.node("Mul", &[&rg, &hh], vec![]);
                    e.node("Add", &[&xg[2], &rh], vec![])
                }
                None => {
                    let Some(uh) = rec_h else {
                        return refuse("a GRU without its candidate's recurrent kernel");
                    };
                    let rh = e.node("Mul", &[&rg, h_prev], vec![]);
                    let p = e.node("MatMul", &[&rh, uh], vec![]);
                    e.node("Add", &[&xg[2], &p], vec![])
                }
            };
            let hh = act(e, an, &cand_pre)?;
            let zh = e.node("Mul", &[&z, h_prev], vec![]);
            let one_minus = e.node("Sub", &[&one, &z], vec![]);
            let nh = e.node("Mul", &[&one_minus, &hh], vec![]);
            e.node("Add", &[&zh, &nh], vec![])
        }
    };
    // Masked steps keep the previous state; the output is the carried one (or zeros).
    let fresh = e.node("Mul", &[&h_new, &m], vec![]);
    let carried = e.node("Mul", &[h_prev, &keep], vec![]);
    let h = e.node("Add", &[&fresh, &carried], vec![]);
    let c = if r.cell == Cell::Lstm {
        let cf = e.node("Mul", &[&c_new, &m], vec![]);
        let cc = e.node("Mul", &[c_prev, &keep], vec![]);
        e.node("Add", &[&cf, &cc], vec![])
    } else {
        String::new()
    };
    let y = if r.zero_output { fresh } else { h.clone() };
    // Scan outputs must be distinct names.
    let y = e.node("Identity", &[&y], vec![]);
    Ok((h, c, y))
}

impl Emitter {
    /// A GRU's `[2, 3·units]` bias (with `reset_after`) as its input and recurrent rows.
    pub(super) fn gru_biases(&mut self, b: &str) -> (String, String) {
        let zero = self.ints1(&[0]);
        let rows: Vec<String> = (0..2)
            .map(|k| {
                let row = self.slice(b, 0, k, k + 1);
                self.node("Squeeze", &[&row, &zero], vec![])
            })
            .collect();
        (rows[0].clone(), rows[1].clone())
    }
}
