//! Layers with several outputs (Keras returns a list): `bidirectional` with
//! `merge_mode: null` returns its forward and backward outputs, which a spec picks as
//! `LAYER.PART` or `LAYER.INDEX`. Shapes and parameter counts against Keras 3.15 (the
//! numbers in the comments are what Keras prints), the summary, references and their
//! diagnostics, masks, values against the merged layer, gradients against finite
//! differences and compiled against interpreted.

use crate::common::Rng;
use crate::wrappers_masking::check_layers;
use kiln::check::Source;
use kiln::ir::interp;
use kiln::lower::{self, Mode};
use ndarray::ArrayD;

fn model(src: &str) -> kiln::Model {
    kiln::Model::from_source(src, "t", "t.yaml").unwrap_or_else(|e| panic!("{src}\n{e}"))
}

fn spec(inputs: &str, layers: &str) -> String {
    format!("inputs: {inputs}\nlayers:\n{layers}\n")
}

/// The diagnostic codes of a spec that must fail.
fn codes(src: &str) -> Vec<&'static str> {
    match kiln::Model::from_source(src, "t", "t.yaml") {
        Ok(_) => panic!("{src} checked clean"),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code).collect(),
        Err(e) => panic!("{e}"),
    }
}

const BI: &str = "  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}, merge_mode: null, name: bi}";

#[test]
fn bidirectional_without_merge_has_two_outputs() {
    // keras: Bidirectional(LSTM(2, return_sequences=True), merge_mode=None) on (5, 3):
    // [(None, 5, 2), (None, 5, 2)], 96 parameters.
    let m = model(&spec("{x: [batch, 5, 3]}", BI));
    let l = &m.graph.layers[0];
    let parts: Vec<(&str, String)> = l
        .parts
        .iter()
        .map(|p| (p.name.as_str(), kiln::dim::fmt_shape(&p.ty.shape)))
        .collect();
    assert_eq!(
        parts,
        [
            ("bi.forward", "[batch, 5, 2]".to_string()),
            ("bi.backward", "[batch, 5, 2]".to_string())
        ]
    );
    assert_eq!(m.graph.param_counts().0, 96);
    // Without `outputs:`, the last layer's outputs are all the model's, in Keras's order.
    assert_eq!(m.graph.outputs, [Source::Part(0, 0), Source::Part(0, 1)]);
    let s = kiln::summary::render(&m.graph);
    assert!(
        s.contains("│ bi (Bidirectional) │ [(batch, 5, 2), (batch, 5, 2)] │      96 │"),
        "{s}"
    );
    // A backward layer of its own gives its own output: keras: Bidirectional(GRU(2),
    // backward_layer=LSTM(3, go_backwards=True), merge_mode=None) on (5, 3): 126
    // parameters, outputs (None, 2) and (None, 3).
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        "  - bidirectional: {layer: {gru: {units: 2}}, backward_layer: {lstm: {units: 3, go_backwards: true}}, merge_mode: null, name: bi}",
    ));
    let shapes: Vec<String> = m.graph.layers[0]
        .parts
        .iter()
        .map(|p| kiln::dim::fmt_shape(&p.ty.shape))
        .collect();
    assert_eq!(shapes, ["[batch, 2]", "[batch, 3]"]);
    assert_eq!(m.graph.param_counts().0, 126);
    // `None`, as a Keras user writes it, is the same choice as YAML's null.
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        &BI.replace("merge_mode: null", "merge_mode: None"),
    ));
    assert_eq!(m.graph.layers[0].parts.len(), 2);
}

#[test]
fn parts_are_named_or_numbered() {
    let m = model(&spec(
        "{x: [batch, 5, 3]}",
        &format!(
            "{BI}\n  - dense: {{units: 2, input: bi.1, name: d}}\n  - add: {{inputs: [bi.forward, d]}}\noutputs: [add, bi.backward]"
        ),
    ));
    assert_eq!(m.graph.layers[1].inputs, [Source::Part(0, 1)]);
    assert_eq!(m.graph.layers[2].inputs[0], Source::Part(0, 0));
    let names: Vec<&str> = m
        .graph
        .outputs
        .iter()
        .map(|&o| m.graph.name_of(o))
        .collect();
    assert_eq!(names, ["add", "bi.backward"]);
    let f = lower::predict_func(&m.graph).unwrap();
    let outs: Vec<&str> = f.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(outs, ["add", "bi.backward"]);
    // The IR's text form keeps a part's name.
    let text = f.print();
    assert_eq!(kiln::ir::parse(&text).unwrap().print(), text);
}

#[test]
fn references_to_parts_are_diagnosed() {
    let x = "{x: [batch, 5, 3]}";
    // The bare name, the layer after it taking it implicitly, an unknown part, a part
    // out of range, and a part of a layer with one output.
    for layers in [
        format!("{BI}\n  - dense: {{units: 1, input: bi}}"),
        format!("{BI}\n  - dense: {{units: 1}}"),
        format!("{BI}\n  - dense: {{units: 1, input: bi.sideways}}"),
        format!("{BI}\n  - dense: {{units: 1, input: bi.2}}"),
        format!(
            "{BI}\n  - dense: {{units: 1, name: d, input: bi.0}}\n  - dense: {{units: 1, input: d.0}}"
        ),
    ] {
        assert_eq!(codes(&spec(x, &layers)), ["E0709"], "{layers}");
    }
    assert_eq!(codes(&spec(x, &format!("{BI}\noutputs: [bi]"))), ["E0709"]);
    assert_eq!(
        codes(&spec(x, &format!("{BI}\noutputs: [bi.0, bi.forward]"))),
        ["E0707"]
    );
    // Only `none` returns two outputs; the other modes merge them.
    let merged = BI.replace("merge_mode: null", "merge_mode: sum");
    assert_eq!(
        codes(&spec(
            x,
            &format!("{merged}\n  - dense: {{units: 1, input: bi.forward}}")
        )),
        ["E0709"]
    );
}

#[test]
fn both_outputs_carry_the_mask() {
    // keras: Bidirectional.compute_mask gives [mask, mask] with merge_mode=None.
    let m = model(&spec(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 5, output_dim: 3, mask_zero: true}\n  - bidirectional: {layer: {gru: {units: 2, return_sequences: true}}, merge_mode: null, name: bi}\n  - add: {inputs: [bi.forward, bi.backward]}",
    ));
    let masks = m.graph.masks();
    // `add` keeps a mask only when every input has one.
    assert!(masks[1].1 && masks[2].1, "{masks:?}");
}

/// The forward and backward outputs, concatenated, are `merge_mode: concat`'s output
/// with the same weights: the backward output is in the input's order, as Keras
/// flips it back.
#[test]
fn concatenated_parts_equal_the_concat_merge() {
    let x = "{x: [batch, 4, 3]}";
    let parts = model(&spec(
        x,
        "  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}, merge_mode: null}\n  - concatenate: {inputs: [bidirectional.forward, bidirectional.backward]}",
    ));
    let merged = model(&spec(
        x,
        "  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}}",
    ));
    let fp = lower::forward(&parts.graph, Mode::Infer, "p").unwrap().cx.f;
    let fm = lower::forward(&merged.graph, Mode::Infer, "m")
        .unwrap()
        .cx
        .f;
    let names = |f: &kiln::ir::Func| f.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fp), names(&fm));
    let mut rng = Rng::new(3);
    let vals: Vec<ArrayD<f64>> = fp
        .inputs
        .iter()
        .map(|i| rng.array(&crate::common::concrete(&i.ty, 2, 4), -0.9, 0.9))
        .collect();
    let a = interp::eval(&fp, &vals).unwrap();
    let b = interp::eval(&fm, &vals).unwrap();
    assert_eq!(a[0].shape(), [2, 4, 4]);
    assert!(a[0].iter().zip(b[0].iter()).all(|(p, q)| p == q));
    // And the backward part alone is not the forward one.
    let only_bwd = model(&spec(
        x,
        "  - bidirectional: {layer: {lstm: {units: 2, return_sequences: true}}, merge_mode: null}\noutputs: [bidirectional.backward]",
    ));
    let fb = lower::predict_func(&only_bwd.graph).unwrap();
    let c = interp::eval(&fb, &vals).unwrap();
    let tail = b[0].slice_each_axis(|ax| {
        if ax.axis.index() == 2 {
            ndarray::Slice::from(2..4)
        } else {
            ndarray::Slice::from(..)
        }
    });
    assert_eq!(c[0], tail);
}

#[test]
fn parts_differentiate_and_compile() {
    check_layers(
        "{x: [batch, seq, 3]}",
        &format!(
            "{BI}\n  - dense: {{units: 2, input: bi.backward, name: d}}\n  - multiply: {{inputs: [bi.forward, d]}}"
        ),
    );
    check_layers(
        "{t: {shape: [batch, seq], dtype: i32}}",
        "  - embedding: {input_dim: 4, output_dim: 3, mask_zero: true}\n  - bidirectional: {layer: {gru: {units: 2, return_sequences: true}}, merge_mode: null, name: bi}\n  - subtract: {inputs: [bi.1, bi.0]}\n  - global_average_pooling1d",
    );
}

#[test]
fn two_parts_as_two_outputs_train() {
    let src = format!(
        "{}outputs: [bi.forward, bi.backward]\ntrain:\n  targets: {{a: [batch, 5, 2], b: [batch, 5, 2]}}\n  loss: {{bi.forward: mse, bi.backward: mae}}\n  optimizer: adam\n",
        spec("{x: [batch, 5, 3]}", BI)
    );
    let m = model(&src);
    let t = m.graph.train.as_ref().unwrap();
    assert_eq!(
        t.log_names(&m.graph),
        ["loss", "bi.forward_loss", "bi.backward_loss"]
    );
    let step = lower::train::build(&m.graph).unwrap();
    let mut rng = Rng::new(5);
    let vals: Vec<ArrayD<f32>> = step
        .func
        .inputs
        .iter()
        .map(|i| {
            rng.array(&crate::common::concrete(&i.ty, 2, 5), 0.1, 0.9)
                .mapv(|v| v as f32)
        })
        .collect();
    crate::common::compare_jit("two parts, two losses", &step.func, &vals);
}

#[test]
fn budget_counts_every_part_inside_its_layer() {
    use kiln::budget::{self, Work};
    let m = model(&spec(
        "{x: [batch, 200, 3]}",
        "  - bidirectional: {layer: {lstm: {units: 64, return_sequences: true}}, merge_mode: null, name: bi}",
    ));
    let none = std::collections::HashMap::new();
    let e = budget::estimate(&m.graph, Work::Infer, 8, &none).unwrap();
    // The backward part comes after the forward one; both belong to `bi`.
    let value = e.largest.iter().find(|t| !t.weight).unwrap();
    assert!(value.name.contains("inside layer `bi`"), "{value:?}");
    assert!(e.activations >= 2 * 8 * 200 * 64 * 4, "{e:?}");
}
