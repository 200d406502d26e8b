//! Specs built to make checking slow: each must be a prompt answer.

use std::time::Duration;

use super::{check_json, check_text};

// ---------------------------------------------------------------------------------
// Specs built to make checking slow. Each took from half a minute to forever (or
// gigabytes) before kiln bounded the work; now each is a prompt answer.

/// `n` numbered lines from a template (`{i}` is the index).
fn lines(n: usize, template: &str) -> String {
    (0..n)
        .map(|i| template.replace("{i}", &i.to_string()))
        .collect()
}

const QUICK: Duration = Duration::from_secs(15);

#[test]
fn stacked_strided_layers_on_a_symbolic_length_stay_small() {
    // Each pooling nests a floor division in the length's formula: 3,000 of them made a
    // formula thousands deep, copied at every layer (34 s and 4 GB).
    let spec = format!(
        "inputs:\n  x: [batch, seq, 4]\nlayers:\n{}",
        "  - max_pooling1d: {padding: same}\n".repeat(3000)
    );
    check_text(&spec)
        .expect(1)
        .stderr_has("E0513")
        .within(QUICK);
    // A short stack is fine and exact.
    let spec = format!(
        "inputs:\n  x: [batch, seq, 4]\nlayers:\n{}",
        "  - max_pooling1d: {padding: same}\n".repeat(3)
    );
    check_text(&spec)
        .expect(0)
        .stdout_has("[batch, (((seq + 1) // 2 + 1) // 2 + 1) // 2, 4]");
}

#[test]
fn products_of_long_symbolic_sums_stay_small() {
    // [b, s0+…+s149, 1] + its transpose broadcasts to [b, S, S]; flatten then multiplies
    // out 22,500 terms (a 4 kB spec that never finished).
    let m = 150;
    let mut spec = String::from("inputs:\n");
    spec += &lines(m, "  x{i}: [batch, s{i}, 1]\n");
    let names: Vec<String> = (0..m).map(|i| format!("x{i}")).collect();
    spec += &format!(
        "layers:\n  - concatenate: {{axis: 1, inputs: [{}], name: t}}\n",
        names.join(", ")
    );
    spec += "  - permute: {dims: [2, 1], name: p}\n  - add: {inputs: [t, p]}\n  - flatten\n";
    check_text(&spec)
        .expect(1)
        .stderr_has("E0513")
        .within(QUICK);
}

#[test]
fn a_megabyte_of_layers_checks_in_linear_time() {
    // Automatic names were checked against a list of every name taken (40 s).
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n{}",
        "  - relu\n".repeat(110_000)
    );
    let run = check_text(&spec);
    run.expect(0).stdout_has("110000 layers").within(QUICK);
}

#[test]
fn a_mapping_with_eighty_thousand_keys_is_checked_for_duplicates_in_linear_time() {
    let keys: Vec<String> = (0..80_000).map(|i| format!("k{i}: 1")).collect();
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {{units: 2, kernel_initializer: {{glorot_uniform: {{{}}}}}}}\n",
        keys.join(", ")
    );
    check_text(&spec).expect(1).within(QUICK);
}

#[test]
fn many_errors_are_cut_off_with_a_note() {
    // 6,000 layers naming an unknown input: each error searched and listed every name,
    // and each rendering copied and scanned the whole file (minutes; 20,000 never ended).
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n{}",
        lines(6000, "  - dense: {units: 1, input: nope{i}}\n")
    );
    let run = check_text(&spec);
    run.expect(1)
        .stderr_has("E0703")
        .stderr_has("E0108")
        .within(QUICK);
    assert_eq!(run.stderr.matches("E0703").count(), 100, "{}", run.show());
    assert!(run.stderr.contains("has 101 errors"), "{}", run.show());
    let (run, v) = check_json(spec.as_bytes());
    run.expect(1).within(QUICK);
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 101);
    assert_eq!(diags[100]["code"], "E0108");
    assert_eq!(
        diags[100]["line"], 104,
        "the note points at the first error not shown"
    );
}

#[test]
fn many_unknown_layer_types_are_cut_off() {
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n{}",
        "  - foo\n".repeat(100_000)
    );
    let run = check_text(&spec);
    run.expect(1)
        .stderr_has("E0701")
        .stderr_has("E0108")
        .within(QUICK);
    assert_eq!(run.stderr.matches("E0701").count(), 100, "{}", run.show());
}

#[test]
fn many_forward_references_are_cut_off() {
    // Each forward reference searched the whole chain after it for a cycle.
    let mut spec = String::from("inputs:\n  x: [batch, 4]\nlayers:\n");
    spec += &(0..20_000)
        .map(|i| format!("  - relu: {{name: l{i}, input: l{}}}\n", i + 1))
        .collect::<String>();
    spec += "  - relu: {name: l20000, input: x}\n";
    check_text(&spec)
        .expect(1)
        .stderr_has("E0704")
        .stderr_has("E0108")
        .within(QUICK);
}

#[test]
fn a_long_cycle_is_cut_off() {
    let mut spec = String::from("inputs:\n  x: [batch, 4]\nlayers:\n");
    spec += &(0..2000)
        .map(|i| format!("  - relu: {{name: l{i}, input: l{}}}\n", i + 1))
        .collect::<String>();
    spec += "  - relu: {name: l2000, input: l0}\n";
    check_text(&spec)
        .expect(1)
        .stderr_has("E0705")
        .stderr_has("E0108")
        .within(QUICK);
}

#[test]
fn a_spec_on_one_long_line_is_not_drawn_once_per_error() {
    // Every diagnostic drew the whole 800 kB line: 80 MB of output, slowly.
    let keys: Vec<String> = (0..60_000).map(|i| format!("k{i}: 1")).collect();
    let spec = format!(
        "{{inputs: {{x: [batch, 4]}}, layers: [{{dense: {{units: 2, kernel_initializer: {{glorot_uniform: {{{}}}}}}}}}]}}\n",
        keys.join(", ")
    );
    let run = check_text(&spec);
    run.expect(1)
        .stderr_has("E0401")
        .stderr_has("E0108")
        .within(QUICK);
    assert!(
        run.stderr.len() < 100_000,
        "{} bytes of diagnostics",
        run.stderr.len()
    );
    assert!(run.stderr.contains("(at "), "{}", run.show());
}

#[test]
fn many_warnings_are_cut_off_with_a_note_and_the_spec_stays_valid() {
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers:\n{}  - dense: {{units: 2, input: x}}\n",
        lines(5000, "  - relu: {input: x}\n")
    );
    let run = check_text(&spec);
    run.expect(0)
        .stderr_has("W0701")
        .stderr_has("W0108")
        .within(QUICK);
    assert_eq!(run.stderr.matches("W0701").count(), 100, "{}", run.show());
}

#[test]
fn callbacks_times_metrics_is_not_quadratic() {
    let metrics = vec!["mae"; 30_000].join(", ");
    let callbacks = vec!["{early_stopping: {monitor: zz}}"; 3000].join(", ");
    let spec = format!(
        "inputs:\n  x: [batch, 4]\nlayers: [{{dense: {{units: 1}}}}]\ntrain:\n  targets: {{y: [batch, 1]}}\n  loss: mse\n  optimizer: adam\n  metrics: [{metrics}]\n  callbacks: [{callbacks}]\n"
    );
    check_text(&spec)
        .expect(1)
        .stderr_has("E0607")
        .within(QUICK);
}

#[test]
fn a_merge_of_twenty_thousand_inputs_keeps_its_diagnostic_small() {
    // One secondary label per input made miette's layout quadratic.
    let mut spec = String::from("inputs:\n  x: [batch, 4]\n  y: [batch, 5]\nlayers:\n");
    spec += &lines(20_000, "  - relu: {name: a{i}, input: y}\n");
    let names: Vec<String> = (0..20_000).map(|i| format!("a{i}")).collect();
    spec += &format!("  - add: {{inputs: [x, {}]}}\n", names.join(", "));
    let run = check_text(&spec);
    run.expect(1).stderr_has("E0504").within(QUICK);
    let (_, v) = check_json(spec.as_bytes());
    let labels = v["diagnostics"][0]["labels"].as_array().unwrap().len();
    assert!(labels <= 17, "{labels} labels");
}

#[test]
fn did_you_mean_is_the_same_every_run() {
    // Two names at the same distance: the suggestion used to follow a HashMap's order.
    let spec = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 2, name: dense_a}\n  - dense: {units: 2, name: dense_b, input: x}\n  - add: {inputs: [dense_a, dense_c]}\n";
    for _ in 0..8 {
        check_text(spec)
            .expect(1)
            .stderr_has("did you mean `dense_a`?");
    }
    let spec = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 2, name: dense_a}\n  - dense: {units: 2, name: dense_b, input: x}\noutputs: [dense_a, dense_c]\n";
    for _ in 0..8 {
        check_text(spec)
            .expect(1)
            .stderr_has("did you mean `dense_a`?");
    }
}
