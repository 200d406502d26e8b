//! Issue 11 item 3 and issue 15 item 4: 3-D convolutions and pooling, and grouped
//! convolutions of every rank, run as generated loops (around GEMM for one group)
//! split across the thread team, not as reference routines. Compiled against
//! interpreted (forward and training step) on random windows; the gradients against
//! finite differences; the trained bits independent of the team's size; and no bundled
//! spec's plan calling a reference routine.

use std::process::Command;

use crate::common::{self, Rng, fd_check, model, stack_values};
use kiln::lower::{self, Mode};

/// `v` as a YAML list.
fn list(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(usize::to_string).collect();
    format!("[{}]", s.join(", "))
}

/// The input declaration `[batch, sizes…, channels]` in `format`'s layout.
fn input(sizes: &[usize], channels: usize, first: bool) -> String {
    let mut dims = vec!["batch".to_string()];
    let sp: Vec<String> = sizes.iter().map(usize::to_string).collect();
    if first {
        dims.push(channels.to_string());
        dims.extend(sp);
    } else {
        dims.extend(sp);
        dims.push(channels.to_string());
    }
    format!("{{x: [{}]}}", dims.join(", "))
}

fn format_name(first: bool) -> &'static str {
    if first {
        "channels_first"
    } else {
        "channels_last"
    }
}

/// A random convolution over 1 to 3 spatial axes: kernel sizes, strides or dilation
/// (Keras takes one of them above 1), padding, groups 1, 2 or 3 (with 1, 2, 3 or 8
/// input channels per group: windowed loops below 8, one product per group from 8 —
/// and 1 to 3 filters per group), odd sizes, either data format.
fn conv_case(rng: &mut Rng) -> (String, String) {
    let sp = rng.int(1, 3);
    let groups = [1, 2, 3][rng.int(0, 2)];
    let (cg, fg) = ([1, 2, 3, 8][rng.int(0, 3)], rng.int(1, 3));
    let k: Vec<usize> = (0..sp).map(|_| rng.int(1, 3)).collect();
    let dilate = rng.int(0, 2) == 0;
    let st: Vec<usize> = (0..sp)
        .map(|_| if dilate { 1 } else { rng.int(1, 3) })
        .collect();
    let dl: Vec<usize> = (0..sp)
        .map(|_| if dilate { rng.int(1, 2) } else { 1 })
        .collect();
    let same = rng.int(0, 1) == 1;
    let sizes: Vec<usize> = (0..sp)
        .map(|a| (k[a] - 1) * dl[a] + 1 + rng.int(0, 3))
        .collect();
    let first = rng.int(0, 1) == 1;
    let layer = format!(
        "  - conv{sp}d: {{filters: {}, kernel_size: {}, strides: {}, dilation_rate: {}, padding: {}, groups: {groups}, data_format: {}}}\n",
        groups * fg,
        list(&k),
        list(&st),
        list(&dl),
        if same { "same" } else { "valid" },
        format_name(first),
    );
    (input(&sizes, groups * cg, first), layer)
}

/// A random max or average pooling over 1 to 3 spatial axes.
fn pool_case(rng: &mut Rng) -> (String, String) {
    let sp = rng.int(1, 3);
    let w: Vec<usize> = (0..sp).map(|_| rng.int(1, 3)).collect();
    let st: Vec<usize> = (0..sp).map(|_| rng.int(1, 3)).collect();
    let same = rng.int(0, 1) == 1;
    let sizes: Vec<usize> = (0..sp).map(|a| w[a] + rng.int(0, 3)).collect();
    let first = rng.int(0, 1) == 1;
    let kind = if rng.int(0, 1) == 1 { "max" } else { "average" };
    let layer = format!(
        "  - {kind}_pooling{sp}d: {{pool_size: {}, strides: {}, padding: {}, data_format: {}}}\n",
        list(&w),
        list(&st),
        if same { "same" } else { "valid" },
        format_name(first),
    );
    (input(&sizes, rng.int(1, 4), first), layer)
}

/// The forward pass and a whole training step compiled against interpreted at batch
/// 1 and odd batches (values and every gradient of the step).
fn compiled_matches(inputs: &str, layers: &str, sizes: &[(usize, usize)]) {
    let m = model(inputs, layers);
    let out = &m.graph.layers.last().unwrap().output;
    let shape: Vec<String> = out.shape.iter().map(|d| d.to_string()).collect();
    common::compiled_matches_interpreted(inputs, layers, (&shape, ""), sizes);
}

#[test]
fn random_convolutions_compiled_match_interpreted() {
    let mut rng = Rng::new(311);
    for _ in 0..24 {
        let (inputs, layer) = conv_case(&mut rng);
        compiled_matches(&inputs, &layer, &[(1, 3), (3, 3)]);
    }
}

#[test]
fn random_pooling_compiled_matches_interpreted() {
    let mut rng = Rng::new(312);
    for _ in 0..20 {
        let (inputs, layer) = pool_case(&mut rng);
        compiled_matches(&inputs, &layer, &[(1, 3), (5, 3)]);
    }
}

/// Larger windows whose loops split across the team (batch entries for the forward
/// passes and input gradients, taps for the grouped kernel gradient).
const LARGE: &[(&str, &str)] = &[
    (
        "{x: [batch, 6, 12, 12, 2]}",
        "  - conv3d: {filters: 16, kernel_size: 3, padding: same}\n  - max_pooling3d: {pool_size: [1, 2, 2]}\n  - conv3d: {filters: 6, kernel_size: [2, 3, 3], groups: 2, dilation_rate: [1, 2, 1]}\n  - average_pooling3d: {pool_size: 2, strides: 1, padding: same}\n",
    ),
    (
        "{x: [batch, 6, 9, 10, 11]}",
        "  - conv3d: {filters: 6, kernel_size: [3, 2, 3], strides: [1, 2, 2], groups: 3, data_format: channels_first}\n  - average_pooling3d: {pool_size: [2, 2, 1], data_format: channels_first}\n",
    ),
    (
        "{x: [batch, 17, 15, 6]}",
        "  - conv2d: {filters: 9, kernel_size: 3, strides: 2, padding: same, groups: 3}\n  - conv2d: {filters: 9, kernel_size: 2, groups: 9}\n",
    ),
    (
        "{x: [batch, 9, 11, 16]}",
        "  - conv2d: {filters: 12, kernel_size: 3, padding: same, groups: 2}\n  - conv2d: {filters: 4, kernel_size: [2, 3], strides: 2, groups: 2}\n",
    ),
    (
        "{x: [batch, 16, 7, 9]}",
        "  - conv2d: {filters: 6, kernel_size: [3, 2], dilation_rate: 2, groups: 2, data_format: channels_first}\n",
    ),
    (
        "{x: [batch, 33, 4]}",
        "  - conv1d: {filters: 6, kernel_size: 5, dilation_rate: 2, padding: same, groups: 2}\n  - max_pooling1d: {pool_size: 3, strides: 2}\n",
    ),
];

#[test]
fn large_windows_compiled_match_interpreted() {
    for &(inputs, layers) in LARGE {
        compiled_matches(inputs, layers, &[(1, 3), (7, 3), (13, 3)]);
    }
}

/// The gradients the compiled steps are checked against are right: central finite
/// differences of the 3-D and grouped layers' differentiated IR.
#[test]
fn gradients_match_finite_differences() {
    let stacks = [
        (
            "{x: [batch, 3, 4, 5, 2]}",
            "  - conv3d: {filters: 3, kernel_size: [2, 3, 2], padding: same, strides: [1, 2, 1]}\n",
        ),
        (
            "{x: [batch, 4, 5, 4, 4]}",
            "  - conv3d: {filters: 2, kernel_size: 2, groups: 2, dilation_rate: [2, 1, 1]}\n",
        ),
        (
            "{x: [batch, 6, 5, 6]}",
            "  - conv2d: {filters: 9, kernel_size: [3, 2], padding: same, groups: 3}\n",
        ),
        (
            "{x: [batch, 4, 7]}",
            "  - conv1d: {filters: 4, kernel_size: 3, strides: 2, groups: 2, data_format: channels_first}\n",
        ),
        (
            "{x: [batch, 4, 5, 5, 2]}",
            "  - average_pooling3d: {pool_size: [2, 3, 2], strides: [1, 2, 2], padding: same}\n",
        ),
        (
            "{x: [batch, 4, 5, 5, 2]}",
            "  - max_pooling3d: {pool_size: 2, strides: 1}\n",
        ),
    ];
    for (inputs, layers) in stacks {
        let m = model(inputs, layers);
        let mut rng = Rng::new(layers.len() as u64);
        let lw = lower::forward(&m.graph, Mode::Train, "t").unwrap_or_else(|e| panic!("{e}"));
        let out = lw.f.outputs[0].1;
        let (vals, diff) = stack_values(&lw.f, &mut rng, 2, 4);
        fd_check(layers, &lw.f, out, &vals, &diff, &mut rng);
    }
}

/// The plan of `f` as `kiln ir --stage kernels` prints it, and its calls.
fn plan_calls(f: &kiln::ir::Func) -> (String, Vec<String>) {
    let text = kiln::jit::plan::plan(&kiln::ir::passes::optimize(f)).print();
    let calls = text
        .lines()
        .filter(|l| l.contains(": call "))
        .map(str::to_string)
        .collect();
    (text, calls)
}

/// `kiln ir --stage kernels` of every bundled spec, forward and training step: every
/// call is a team routine, named as one; no kernel calls a reference routine.
#[test]
fn no_bundled_spec_calls_a_reference_routine() {
    let specs = crate::common::bundled_spec_paths();
    for spec in &specs {
        let m = kiln::Model::from_path(spec).unwrap_or_else(|e| panic!("{e}"));
        let mut funcs = vec![("forward", lower::predict_func(&m.graph).unwrap())];
        if m.graph.train.is_some() {
            let step = lower::train::build(&m.graph).unwrap();
            funcs.push(("training step", step.func));
        }
        for (what, f) in funcs {
            let (text, calls) = plan_calls(&f);
            assert!(text.starts_with("plan @"), "{}: a plan", spec.display());
            for c in calls {
                assert!(
                    c.contains("(team)") && !c.contains("(reference)"),
                    "{} {what}: {c}",
                    spec.display()
                );
            }
        }
    }
}

/// 3-D and grouped windows leave no call in the plan of a training step (max
/// pooling's gradient, a team routine, aside); a window whose sizes are unknown
/// still names its call a reference routine.
#[test]
fn windows_plan_as_loops() {
    let src = "inputs:\n  x: [batch, 5, 6, 7, 4]\nlayers:\n  - conv3d: {filters: 6, kernel_size: 3, padding: same, groups: 2}\n  - average_pooling3d: {pool_size: 2}\n  - conv3d: {filters: 3, kernel_size: 2, groups: 3}\n  - flatten\ntrain:\n  targets: {t: [batch, 12]}\n  loss: mse\n  optimizer: sgd\n";
    let m = kiln::Model::from_source(src, "t", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let step = lower::train::build(&m.graph).unwrap();
    let (text, calls) = plan_calls(&step.func);
    assert!(calls.is_empty(), "{text}");
    let m = model(
        "{x: [batch, seq, 3]}",
        "  - conv1d: {filters: 4, kernel_size: 2, groups: 1}\n",
    );
    let f = lower::predict_func(&m.graph).unwrap();
    let (text, calls) = plan_calls(&f);
    assert_eq!(calls.len(), 1, "{text}");
    assert!(calls[0].contains("call conv (reference)"), "{text}");
}

/// Compiled training gives the same bits whatever the size of the thread team: the
/// 3-D and grouped loops split by batch entry or by tap, each element computed as
/// the unsplit loop computes it. Two epochs with 1, 2 and 3 threads.
#[test]
fn the_thread_count_does_not_change_the_trained_bits() {
    let dir = std::env::temp_dir().join(format!("kiln-windows-nd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("s.yaml");
    std::fs::write(
        &spec,
        "inputs:\n  clip: [batch, 6, 10, 10, 4]\nlayers:\n  - conv3d: {filters: 6, kernel_size: 3, padding: same, groups: 2, activation: relu}\n  - max_pooling3d: {pool_size: [1, 2, 2]}\n  - conv3d: {filters: 8, kernel_size: 2, activation: relu}\n  - average_pooling3d: {pool_size: 2, padding: same}\n  - flatten\n  - dense: {units: 3}\ntrain:\n  targets: {target: [batch, 3]}\n  loss: mse\n  optimizer: adam\n  batch_size: 16\n",
    )
    .unwrap();
    let mut rng = Rng::new(5);
    let clip = rng.array(&[32, 6, 10, 10, 4], -1.0, 1.0).mapv(|v| v as f32);
    let target = rng.array(&[32, 3], -1.0, 1.0).mapv(|v| v as f32);
    let members = vec![
        ("clip".to_string(), kiln::data::npy::to_bytes(&clip)),
        ("target".to_string(), kiln::data::npy::to_bytes(&target)),
    ];
    let data = dir.join("d.npz");
    std::fs::write(&data, kiln::data::npz::pack(&members).unwrap()).unwrap();
    let mut files = Vec::new();
    for t in ["1", "2", "3"] {
        let out = dir.join(format!("w{t}.safetensors"));
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["train", spec.to_str().unwrap(), "--data"])
            .arg(&data)
            .args(["--epochs", "2", "--backend", "jit", "--out"])
            .arg(&out)
            .env("KILN_NUM_THREADS", t)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{t} threads: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        files.push(std::fs::read(&out).unwrap());
    }
    assert!(files[0] == files[1], "1 vs 2 threads differ");
    assert!(files[0] == files[2], "1 vs 3 threads differ");
    let _ = std::fs::remove_dir_all(&dir);
}
