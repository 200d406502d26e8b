//! Keras's `adapt` at the start of `fit`: a layer whose kind adapts
//! ([`crate::layers::Facts::adapt`], e.g. `normalization` without `mean` and
//! `variance`) gets its weights from the training data before the first step, while
//! they are still the initial ones (weights loaded from a file, a checkpoint or an
//! earlier `fit` are kept). A layer whose input is computed by earlier layers
//! (`rescaling` → `normalization`) adapts on that input over the training data, as a
//! Keras user adapts it on the preprocessed array: the layers before it run in
//! inference mode, with the weights at hand (earlier adapted layers included).

use ndarray::{ArrayD, ArrayViewD, Axis, Slice, concatenate};

use crate::check::{Graph, Source};
use crate::data::Dataset;
use crate::error::Error;
use crate::net::Net;
use crate::weights::{self, Weights};

/// Examples per run of the layers before an adapting layer.
const CHUNK: usize = 1024;

/// Adapts every such layer on `data` (all of it, as a Keras user adapts on the array
/// passed to `fit`), in layer order.
pub(super) fn adapt(net: &mut Net, data: &Dataset) -> Result<(), Error> {
    let graph = net.graph();
    let mut w = net.weights().clone();
    let mut changed = false;
    for l in &graph.layers {
        let Some(a) = l.kind.facts.adapt else {
            continue;
        };
        if !(a.wanted)(&l.args) {
            continue;
        }
        let mut initial = true;
        for p in &l.params {
            let init =
                weights::init_param(l, p, net.seed()).map_err(|e| Error::Invalid(e.to_string()))?;
            initial &= w.get(&weights::key(l, p)) == Some(&init);
        }
        if !initial {
            continue;
        }
        let x = match l.inputs.first() {
            Some(Source::Input(i)) => {
                let input = &graph.inputs[*i].name;
                let Some(x) = data.input(input)? else {
                    return Err(Error::Invalid(format!(
                        "`{}` adapts to the input `{input}`, which {} does not hold",
                        l.name, data.source
                    )));
                };
                x
            }
            Some(&s) => std::borrow::Cow::Owned(value_of(net, graph, &w, s, data).map_err(|e| {
                    Error::Invalid(format!(
                        "`{}` adapts to the output of `{}` over the training data, which could not be computed: {e}",
                        l.name,
                        graph.name_of(s)
                    ))
                })?),
            None => continue,
        };
        for (key, v) in (a.compute)(&l.args, &x) {
            w.insert(format!("{}/{key}", l.name), v);
            changed = true;
        }
    }
    if changed {
        net.set_weights(w)?;
    }
    Ok(())
}

/// The value of `s` (a layer's output) over every example of `data`: the model's
/// layers up to it in inference mode with the weights `w`, run in chunks of [`CHUNK`]
/// examples.
fn value_of(
    net: &Net,
    graph: &Graph,
    w: &Weights,
    s: Source,
    data: &Dataset,
) -> Result<ArrayD<f32>, Error> {
    let mut g = graph.clone();
    g.outputs = vec![s];
    g.train = None;
    let f = crate::lower::predict_func(&g)?;
    let kernel = crate::runtime::compile(&f, net.backend())?;
    let mut inputs = Vec::new();
    for i in &graph.inputs {
        let Some(x) = data.input(&i.name)? else {
            return Err(Error::Invalid(format!(
                "{} does not hold the input `{}`",
                data.source, i.name
            )));
        };
        inputs.push(x);
    }
    let n = data.len();
    let mut parts = Vec::new();
    for start in (0..n).step_by(CHUNK) {
        let rows = Slice::from(start..(start + CHUNK).min(n));
        let mut args: Vec<ArrayViewD<f32>> =
            inputs.iter().map(|x| x.slice_axis(Axis(0), rows)).collect();
        args.extend(w.iter().map(|(_, a)| a.view()));
        parts.push(kernel.run(&args)?.remove(0));
    }
    let views: Vec<ArrayViewD<f32>> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).map_err(|e| Error::Invalid(e.to_string()))
}
