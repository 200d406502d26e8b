//! The evaluation function: the forward pass in inference mode (dropout off, batch
//! normalization on its moving statistics), then the loss and the metrics — what
//! Keras's `evaluate` and the validation pass of `fit` compute per batch.

use super::{Mode, forward};
use crate::check::Graph;
use crate::ir::{Func, Result, err};

/// Where each value of the evaluation function lives.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalLayout {
    pub model_inputs: Vec<String>,
    pub targets: Vec<String>,
    /// Every parameter key in layer order.
    pub params: Vec<String>,
    /// Metric names (outputs `metric/NAME`), as in the training step.
    pub metrics: Vec<String>,
}

/// The evaluation function and its layout.
#[derive(Clone, Debug)]
pub struct EvalStep {
    pub func: Func,
    pub layout: EvalLayout,
}

/// Builds the evaluation function of a checked graph with a `train` section.
///
/// Inputs: model inputs, params (layer order), targets. Outputs: `loss` (the mean over
/// the batch, summed over outputs as in training), then `metric/NAME` for each metric
/// (the mean over the batch).
pub fn build(graph: &Graph) -> Result<EvalStep> {
    let Some(train) = &graph.train else {
        return err("the spec has no train section");
    };
    let mut lw = forward(graph, Mode::Infer, "eval")?;
    let (total, metrics) = super::train::objective(&mut lw, train)?;
    lw.f.output("loss", total);
    for (m, v) in metrics {
        lw.f.output(&format!("metric/{m}"), v);
    }
    let layout = EvalLayout {
        model_inputs: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        targets: train.targets.iter().map(|t| t.name.clone()).collect(),
        params: lw.param_order.clone(),
        metrics: train.metrics.clone(),
    };
    Ok(EvalStep {
        func: lw.cx.f,
        layout,
    })
}
