//! The library's one error type: spec errors are miette diagnostics with the spec's
//! text, I/O and data failures keep their cause as `source`, and every error maps to
//! the exit codes of DESIGN §3 in one place.

use std::error::Error as _;

use miette::Diagnostic as _;

#[test]
fn a_spec_error_is_a_miette_diagnostic_with_its_source() {
    let src = "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: -3}\n";
    let e = kiln::Model::from_source(src, "t", "t.yaml").unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let code = e.code().map(|c| c.to_string()).unwrap_or_default();
    assert!(code.starts_with('E'), "{code}");
    assert!(e.source_code().is_some());
    let labels: Vec<_> = e.labels().into_iter().flatten().collect();
    assert!(!labels.is_empty());
    // Every label points into the spec's text.
    assert!(labels.iter().all(|l| l.offset() + l.len() <= src.len()));
}

#[test]
fn io_and_data_errors_keep_their_cause() {
    let missing = std::env::temp_dir().join(format!("kiln-missing-{}.yaml", std::process::id()));
    let e = kiln::Model::from_path(&missing).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let cause = e.source().expect("the I/O error is the source");
    assert!(cause.downcast_ref::<std::io::Error>().is_some());

    let m = kiln::Model::from_source(
        "inputs:\n  x: [batch, 4]\nlayers:\n  - dense: {units: 2}\n",
        "t",
        "t.yaml",
    )
    .unwrap();
    let net = m.compile(&kiln::Options::default()).unwrap();
    let e = net.load_data(missing.with_extension("npz")).unwrap_err();
    assert!(matches!(e, kiln::Error::Data(_)), "{e:?}");
    assert!(e.source().is_some());
}
