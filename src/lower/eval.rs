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
    /// Whether it takes `sample_weight` after the targets, as the training step.
    pub sample_weight: bool,
    /// The outputs' own losses (`loss/NAME`), as in the training step.
    pub output_losses: Vec<String>,
    /// Metric names and state sizes (outputs `metric/NAME/i`), as in the training
    /// step.
    pub metrics: Vec<String>,
    pub metric_parts: Vec<usize>,
    /// The number of values in each metric's state.
    pub metric_sizes: Vec<usize>,
}

/// The evaluation function and its layout.
#[derive(Clone, Debug)]
pub struct EvalStep {
    pub func: Func,
    pub layout: EvalLayout,
}

/// Builds the evaluation function of a checked graph with a `train` section.
///
/// Inputs: model inputs, params (layer order), targets (and `sample_weight`). Outputs:
/// `loss` (summed over outputs as in training), each output's loss `loss/NAME`, then
/// each metric's state for the batch `metric/NAME/i`.
pub fn build(graph: &Graph) -> Result<EvalStep> {
    let Some(train) = &graph.train else {
        return err("the spec has no train section");
    };
    let mut lw = forward(graph, Mode::Infer, "eval")?;
    let obj = super::train::objective(&mut lw, graph, train)?;
    let (metrics, metric_parts, metric_sizes) = obj.output(&mut lw.f)?;
    let layout = EvalLayout {
        model_inputs: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        targets: train.targets.iter().map(|t| t.name.clone()).collect(),
        params: lw.param_order.clone(),
        sample_weight: obj.sample_weight,
        output_losses: obj.output_loss_names(),
        metrics,
        metric_parts,
        metric_sizes,
    };
    Ok(EvalStep {
        func: lw.cx.f,
        layout,
    })
}
