//! The C header of a `kiln build` object: every function, shape and buffer.

use std::fmt::Write;

use super::{Api, Tensor};

/// `NAME` as an upper-case C macro part.
fn macro_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn dims(shape: &[i64]) -> String {
    let d: Vec<String> = shape.iter().map(|d| format!("[{d}]")).collect();
    d.concat()
}

fn len(t: &Tensor) -> i64 {
    t.shape.iter().product()
}

/// `float *name` arguments' documentation and size macros.
fn args(h: &mut String, p: &str, kind: &str, ts: &[Tensor]) {
    for t in ts {
        let _ = writeln!(
            h,
            "/* {kind} `{}`: float{} (row-major, {} floats) */\n#define {p}_{}_{}_SIZE {}",
            t.name,
            dims(&t.shape),
            len(t),
            kind.to_ascii_uppercase(),
            macro_part(&t.name),
            len(t)
        );
    }
}

fn tables(h: &mut String, p: &str, what: &str, ts: &[Tensor]) {
    for t in ts {
        let m = macro_part(&t.name);
        let _ = writeln!(
            h,
            "/* `{}`: float{} */\n#define {p}_{what}_{m}_OFFSET {}\n#define {p}_{what}_{m}_SIZE {}",
            t.name,
            dims(&t.shape),
            t.offset,
            len(t)
        );
    }
}

fn params(ts: &[&Tensor], konst: bool) -> Vec<String> {
    ts.iter()
        .map(|t| {
            let c = if konst { "const " } else { "" };
            let id: String = t
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{c}float *{id}")
        })
        .collect()
}

/// The header's text.
pub(super) fn header(api: &Api) -> String {
    let p = &api.prefix;
    let guard = format!("KILN_{}_H", macro_part(p));
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {p}.h: the model `{}` compiled ahead of time by `kiln build`.\n *\n * Link with the object file: `cc main.c {p}.o -lm`. The object needs no kiln, JIT or\n * Rust runtime. It is built for the CPU features of the machine that built it.\n *\n * Every function runs on the calling thread (single-threaded) and uses static\n * memory (an arena of {} bytes, the weights, the optimizer state): the functions\n * are not reentrant; call them from one thread at a time. Every buffer is float32,\n * row-major (C order), contiguous; integer inputs and targets (class ids, token ids)\n * are passed as float values. Sizes are fixed at build time.\n */",
        api.model, api.arena_bytes
    );
    let _ = writeln!(
        h,
        "#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {{\n#endif\n"
    );
    let _ = writeln!(
        h,
        "/* The batch size the functions were built for. */\n#define {p}_BATCH {}",
        api.batch
    );
    for (k, v) in &api.dims {
        let _ = writeln!(
            h,
            "/* The symbolic dimension `{k}`. */\n#define {p}_DIM_{} {v}",
            macro_part(k)
        );
    }
    h.push('\n');
    args(&mut h, p, "input", &api.inputs);
    args(&mut h, p, "output", &api.outputs);
    let ins: Vec<&Tensor> = api.inputs.iter().collect();
    let outs: Vec<&Tensor> = api.outputs.iter().collect();
    let mut sig = params(&ins, true);
    sig.extend(params(&outs, false));
    let _ = writeln!(
        h,
        "\n/* The forward pass in inference mode (`kiln predict`): reads the inputs, writes\n * every output (in the spec's order) with the current weights. Returns 0, or 1 when\n * an index input (a token id) is outside its table (row 0 is used for it). */\nint {p}_predict({});\n",
        sig.join(", ")
    );
    if let Some(t) = &api.train {
        args(&mut h, p, "target", &t.targets);
        let tg: Vec<&Tensor> = t.targets.iter().collect();
        let mut sig = params(&ins, true);
        sig.extend(params(&tg, true));
        sig.push("float *loss_out".into());
        let _ = writeln!(
            h,
            "\n/* One training step, exactly `kiln train`'s on this batch: forward in training\n * mode, loss, gradients and the optimizer's update of `{p}_weights` and\n * `{p}_opt_state` in place. Writes the batch's loss (before the update) to\n * *loss_out and increments `{p}_step`. Dropout's random key is `kiln train`'s for\n * (seed {}, step). Returns 0, or 1\n * when an index input is out of range (as {p}_predict). */\nint {p}_train_step({});\n",
            t.seed,
            sig.join(", ")
        );
        let _ = writeln!(
            h,
            "/* Optimizer iterations done (Keras's `optimizer.iterations`); starts at {}. */\nextern uint64_t {p}_step;\n/* The learning rate of the next steps (the spec's constant: {:e}); may be set. */\nextern float {p}_lr;\n",
            t.step, t.lr
        );
        let total: i64 = t.state.iter().map(len).sum();
        let _ = writeln!(
            h,
            "/* The optimizer's state ({total} floats, zero at the start of training), in\n * Keras's order; each slot's place: */\n#define {p}_OPT_STATE_SIZE {total}\nextern float {p}_opt_state[];"
        );
        tables(&mut h, p, "S", &t.state);
        h.push('\n');
    }
    let total: i64 = api.weights.iter().map(len).sum();
    let _ = writeln!(
        h,
        "/* The weights ({total} floats), embedded and writable, in the order and with the\n * keys and shapes of the model's safetensors file; each weight's place: */\n#define {p}_WEIGHTS_SIZE {total}\nextern float {p}_weights[];"
    );
    tables(&mut h, p, "W", &api.weights);
    let _ = writeln!(
        h,
        "\n/* Copies the {total} weight floats out to `dst` (to save them). */\nvoid {p}_get_weights(float *dst);\n/* Replaces the weights with {total} floats from `src` (to load saved ones). */\nvoid {p}_set_weights(const float *src);\n\n#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */"
    );
    h
}
