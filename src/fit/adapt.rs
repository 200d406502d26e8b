//! Keras's `adapt` at the start of `fit`: a layer whose kind adapts
//! ([`crate::layers::Facts::adapt`], e.g. `normalization` without `mean` and
//! `variance`) gets its weights from the training data before the first step, while
//! they are still the initial ones (weights loaded from a file, a checkpoint or an
//! earlier `fit` are kept).

use crate::check::Source;
use crate::data::Dataset;
use crate::error::Error;
use crate::net::Net;
use crate::weights;

/// Adapts every such layer on `data` (all of it, as a Keras user adapts on the array
/// passed to `fit`). A layer that does not sit directly on a model input is refused:
/// kiln reads only the data files' arrays, not values inside the model.
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
        let input = match l.inputs.first() {
            Some(Source::Input(i)) => &graph.inputs[*i].name,
            Some(&s) => {
                return Err(Error::Invalid(format!(
                    "`{}` ({}) computes its `mean` and `variance` from the training data, which kiln reads only from a model input, but it follows `{}`; place it directly on an input, or give `mean` and `variance` as arguments",
                    l.name,
                    l.kind.name,
                    graph.name_of(s)
                )));
            }
            None => continue,
        };
        let Some(x) = data.input(input)? else {
            return Err(Error::Invalid(format!(
                "`{}` adapts to the input `{input}`, which {} does not hold",
                l.name, data.source
            )));
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
