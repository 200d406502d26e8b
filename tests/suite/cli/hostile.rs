//! Hostile inputs to `kiln check`: bytes that are not UTF-8, empty and huge files, deep
//! nesting, alias bombs, absurd numbers, and inputs that used to panic. Each must give a
//! diagnostic quickly, never a panic, a hang or runaway memory.

use std::process::Command;
use std::time::Duration;

use super::{MLP, TempFile, check_bytes, check_json, check_text, kiln_cmd};

// ---------------------------------------------------------------------------------
// What a file holds, before YAML

#[test]
fn bytes_that_are_not_utf8_are_e0107() {
    check_bytes(b"inputs:\n  x: [batch, 4]\n  y: [b\xffatch]\nlayers: [relu]\n")
        .expect(1)
        .stderr_has("E0107");
    check_bytes(b"\xfe\xff\x00i\x00n")
        .expect(1)
        .stderr_has("E0107");
    // Where it is: line 3, column 8 (the byte after `[b`).
    let (run, v) = check_json(b"inputs:\n  x: [batch, 4]\n  y: [b\xffatch]\nlayers: [relu]\n");
    run.expect(1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "E0107");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(8)),
        "{v}"
    );
}

#[test]
fn an_empty_file_is_exit_1() {
    check_bytes(b"").expect(1).stderr_has("E0201");
    check_bytes(b"\n\n   \n# only a comment\n")
        .expect(1)
        .stderr_has("E0201");
}

#[test]
fn a_ten_megabyte_file_is_refused_quickly() {
    let big = "  - relu\n".repeat(10 << 20 >> 3);
    let spec = format!("inputs:\n  x: [batch, 4]\nlayers:\n{big}");
    assert!(spec.len() >= 10 << 20);
    check_text(&spec)
        .expect(1)
        .stderr_has("E0106")
        .within(Duration::from_secs(5));
    let (run, v) = check_json(spec.as_bytes());
    run.expect(1);
    assert_eq!(v["diagnostics"][0]["code"], "E0106");
}

/// A gigabyte file (sparse: it takes no disk) under a 1 GB address-space limit: kiln
/// must read only what it checks, not the whole file.
#[cfg(target_os = "linux")]
#[test]
fn a_huge_file_is_not_read_into_memory() {
    let f = TempFile::new("huge.yaml", b"inputs: {x: [batch, 4]}\nlayers: [relu]\n#");
    std::fs::OpenOptions::new()
        .write(true)
        .open(f.path())
        .and_then(|h| h.set_len(4 << 30))
        .expect("make a sparse 4 GB file");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -v 1048576 && exec \"$0\" check \"$1\""])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg(f.arg());
    kiln_cmd(cmd)
        .expect(1)
        .stderr_has("E0106")
        .stderr_has("4294967296")
        .within(Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------
// Hostile YAML

#[test]
fn nesting_ten_thousand_deep_is_e0104() {
    let deep = "[".repeat(10_000);
    check_text(&deep)
        .expect(1)
        .stderr_has("E0104")
        .within(Duration::from_secs(5));
    let closed = format!(
        "inputs: {{x: {}{}}}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    check_text(&closed).expect(1).stderr_has("E0104");
    let maps = "{a: ".repeat(10_000);
    check_text(&maps).expect(1).stderr_has("E0104");
    let block: String = (0..200)
        .map(|i| format!("{}- \n", " ".repeat(i * 2)))
        .collect();
    let run = check_text(&block);
    run.expect(1);
    assert!(
        run.stderr.contains("E0104") || run.stderr.contains("E0101"),
        "{}",
        run.show()
    );
}

#[test]
fn a_billion_laughs_alias_bomb_is_e0105() {
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    bomb.push_str("inputs: {x: [batch, 4]}\nlayers: *a9\n");
    check_text(&bomb)
        .expect(1)
        .stderr_has("E0105")
        .within(Duration::from_secs(5));
}

#[test]
fn syntax_errors_and_several_documents_are_exit_1() {
    check_text("inputs:\n  x: [batch, 4\nlayers: [relu]\n")
        .expect(1)
        .stderr_has("E0101");
    check_text(&format!("{MLP}---\n{MLP}"))
        .expect(1)
        .stderr_has("E0102");
    check_text("inputs: *nope\nlayers: [relu]\n")
        .expect(1)
        .stderr_has("E0103");
    check_text("- just\n- a list\n")
        .expect(1)
        .stderr_has("E0201");
}

// ---------------------------------------------------------------------------------
// Numbers

#[test]
fn units_1e40_is_a_type_error() {
    check_text("inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 1e40}\n")
        .expect(1)
        .stderr_has("E0403");
}

#[test]
fn units_99999999999_is_out_of_range() {
    check_text("inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 99999999999}\n")
        .expect(1)
        .stderr_has("E0404");
    check_text(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 99999999999999999999999999}\n",
    )
    .expect(1)
    .stderr_has("E0404");
    check_text("inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: -1}\n")
        .expect(1)
        .stderr_has("E0404");
}

#[test]
fn zero_and_negative_dimensions_are_exit_1() {
    for dim in [
        "0",
        "-1",
        "-2147483648",
        "99999999999",
        "99999999999999999999999",
    ] {
        let spec = format!("inputs:\n  x: [batch, {dim}]\nlayers:\n  - dense: {{units: 2}}\n");
        check_text(&spec).expect(1).stderr_has("E0302");
    }
    for dim in ["1.5", "1e3", "-batch", "[]", "~", "true"] {
        let spec = format!("inputs:\n  x: [batch, {dim}]\nlayers:\n  - dense: {{units: 2}}\n");
        check_text(&spec).expect(1).stderr_has("E0303");
    }
}

#[test]
fn overflowing_shapes_are_diagnostics_not_panics() {
    let max = i32::MAX;
    // 2147483647³ elements per example do not fit in 64 bits.
    check_text(&format!(
        "inputs:\n  x: [batch, {max}, {max}, {max}]\nlayers:\n  - flatten\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    check_text(&format!(
        "inputs:\n  x: [batch, {max}, {max}, {max}]\nlayers:\n  - reshape: {{target_shape: [-1]}}\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    // A dense layer with 2147483647² weights passes kiln's parameter limit.
    check_text(&format!(
        "inputs:\n  x: [batch, {max}]\nlayers:\n  - dense: {{units: {max}}}\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    // Several layers that are each allowed but too many together.
    let layers = "  - dense: {units: 1000000, input: x}\n".repeat(3);
    check_text(&format!("inputs:\n  x: [batch, {max}]\nlayers:\n{layers}"))
        .expect(1)
        .stderr_has("E0513");
    check_text(&format!(
        "inputs:\n  x: [batch, {max}, {max}, 3]\nlayers:\n  - conv2d: {{filters: {max}, kernel_size: {max}}}\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    check_text(&format!(
        "inputs:\n  x: [batch, {max}, 3]\nlayers:\n  - lstm: {{units: {max}}}\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    check_text(&format!(
        "inputs:\n  x: [batch, 4, {max}]\nlayers:\n  - multi_head_attention: {{num_heads: {max}, key_dim: {max}}}\n"
    ))
    .expect(1)
    .stderr_has("E0513");
    // Window arithmetic on huge kernels and dilations: a diagnostic or a (symbolic)
    // shape, never a panic.
    for len in ["seq", "7", &max.to_string()] {
        let run = check_text(&format!(
            "inputs:\n  x: [batch, {len}, 3]\nlayers:\n  - conv1d: {{filters: 2, kernel_size: {max}, dilation_rate: {max}}}\n  - max_pooling1d: {{pool_size: {max}, strides: {max}, padding: same}}\n"
        ));
        assert!(
            matches!(run.code, 0 | 1) && !run.stderr.contains("panicked"),
            "{}",
            run.show()
        );
    }
}

// ---------------------------------------------------------------------------------
// Inputs that used to panic (regressions)

#[test]
fn rank_zero_inputs_are_diagnostics_not_panics() {
    // reshape, permute and flatten take the batch axis off; a `[]` input has none.
    for layer in [
        "reshape: {target_shape: [1]}",
        "permute: {dims: [1]}",
        "flatten",
    ] {
        check_text(&format!("inputs:\n  x: []\nlayers:\n  - {layer}\n"))
            .expect(1)
            .stderr_has("E0501");
    }
    check_text("inputs:\n  x: []\nlayers:\n  - permute: {dims: []}\n").expect(1);
    // `accuracy` picks its Keras variant from the output's last axis, which a rank-0
    // output does not have.
    let run = check_text(
        "inputs:\n  x: []\nlayers:\n  - dropout: {rate: 0.1}\ntrain:\n  targets: {y: []}\n  loss: mse\n  optimizer: adam\n  metrics: [accuracy]\n",
    );
    assert!(matches!(run.code, 0 | 1), "{}", run.show());
    assert!(!run.stderr.contains("panicked"), "{}", run.show());
}

#[test]
fn an_empty_mapping_as_a_layer_is_a_diagnostic_not_a_panic() {
    // Found by tests/suite/props: `- {}` indexed the missing second key of the entry.
    check_text("inputs:\n  x: [batch, 4]\nlayers:\n  - {}\n  - dense: {units: 2}\n")
        .expect(1)
        .stderr_has("E0213");
    check_text("inputs:\n  x: [batch, 4]\nlayers: [{}]\n")
        .expect(1)
        .stderr_has("E0213");
}
