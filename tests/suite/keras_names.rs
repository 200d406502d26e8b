//! A name Keras has and kiln lacks is reported as exactly that (E0801), with the closest
//! alternative kiln has when there is a real one, in every family a spec names things
//! in; a name Keras does not have gets the did-you-mean it always got.

use kiln::diag::keras::{Family, KERAS};

/// The spec that uses `name` as a `family` entry.
fn spec_using(family: Family, name: &str) -> Option<String> {
    let train = |loss: &str, opt: &str, extra: &str| {
        format!(
            "inputs:\n  x: [batch, 8]\nlayers:\n  - dense: {{units: 2}}\ntrain:\n  targets: {{y: [batch, 2]}}\n  loss: {loss}\n  optimizer: {opt}\n{extra}"
        )
    };
    Some(match family {
        Family::Layer => format!("inputs:\n  x: [batch, 8]\nlayers:\n  - {name}\n"),
        Family::Loss => train(name, "adam", ""),
        Family::Metric => train("mse", "adam", &format!("  metrics: [{name}]\n")),
        Family::Optimizer => train("mse", name, ""),
        Family::Schedule => train(
            "mse",
            &format!("{{adam: {{learning_rate: {{{name}: {{}}}}}}}}"),
            "",
        ),
        Family::Callback => train("mse", "adam", &format!("  callbacks: [{name}]\n")),
        Family::Initializer => format!(
            "inputs:\n  x: [batch, 8]\nlayers:\n  - dense: {{units: 2, kernel_initializer: {name}}}\n"
        ),
        Family::Activation => {
            format!(
                "inputs:\n  x: [batch, 8]\nlayers:\n  - dense: {{units: 2, activation: {name}}}\n"
            )
        }
        // Regularizers and arguments are arguments of a layer: E0402 or the catalog's.
        Family::Regularizer | Family::Argument => return None,
    })
}

fn codes(src: &str) -> Vec<String> {
    match kiln::Model::from_source(src, "t", "t.yaml") {
        Ok(_) => Vec::new(),
        Err(kiln::Error::Spec(e)) => e.diagnostics.iter().map(|d| d.code.to_string()).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_keras_name_kiln_lacks_is_said_to_be_one() {
    let mut checked = 0;
    for e in KERAS {
        let Some(src) = spec_using(e.family, e.name) else {
            continue;
        };
        let got = codes(&src);
        // kiln may support the name by now: then it is not called unknown at all.
        let unknown = ["E0602", "E0605", "E0701", "E0407", "E0408"];
        assert!(
            !got.iter().any(|c| unknown.contains(&c.as_str())),
            "`{}` ({:?}) is called unknown: {got:?}",
            e.name,
            e.family
        );
        checked += usize::from(got.iter().any(|c| c == "E0801"));
    }
    assert!(checked > 150, "only {checked} names reported as E0801");
}

#[test]
fn the_issues_examples_name_keras_not_a_lookalike() {
    let render = |src: &str| match kiln::Model::from_source(src, "t", "t.yaml") {
        Err(kiln::Error::Spec(e)) => e.render(false),
        other => panic!("{:?}", other.map(|_| ())),
    };
    let gn = render(&spec_using(Family::Layer, "group_normalization").unwrap());
    assert!(
        gn.contains("Keras has the layer `group_normalization`; kiln does not support it yet"),
        "{gn}"
    );
    assert!(!gn.contains("did you mean"), "{gn}");
    let c3 = render(&spec_using(Family::Layer, "conv_lstm2d").unwrap());
    assert!(
        c3.contains("Keras has the layer `conv_lstm2d`") && !c3.contains("did you mean"),
        "{c3}"
    );
    let f1 = render(&spec_using(Family::Metric, "f1_score").unwrap());
    assert!(f1.contains("Keras has the metric `f1_score`"), "{f1}");
    // A real alternative is named.
    let sw = render(&spec_using(Family::Activation, "celu").unwrap());
    assert!(sw.contains("the closest kiln has is `elu`"), "{sw}");
    let lc = render(&spec_using(Family::Loss, "log_cosh").unwrap());
    assert!(lc.contains("the closest kiln has is `huber`"), "{lc}");
    // A typo is still a typo.
    let typo = render(&spec_using(Family::Layer, "dense_").unwrap());
    assert!(typo.contains("did you mean `dense`?"), "{typo}");
    assert!(!typo.contains("Keras has"), "{typo}");
}
