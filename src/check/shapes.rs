//! Shape inference, in the layers' order: each layer's kind infers its output type and
//! Keras parameters from its arguments and its inputs' types; sizes are capped at
//! [`MAX_PARAMS`].

use std::ops::Range;

use super::{Checker, Input, MAX_PARAMS, Resolved, Source};
use crate::diag::Diagnostic;
use crate::dim::{Dim, product};
use crate::layers::{self, Ctx, In, Inferred, Param, TensorType};

/// A Keras mask's shape (none: the tensor carries no mask).
type MaskShape = Option<Vec<Dim>>;

/// Every layer's output type, parameters and the types of its several outputs (if it
/// has them), in layer order; `None` (and nothing) for a layer that is wrong.
pub(super) struct Shapes {
    pub types: Vec<Option<TensorType>>,
    pub params: Vec<Vec<Param>>,
    pub parts: Vec<Vec<TensorType>>,
    /// The shape of each layer's output mask, and of each of its parts' masks.
    pub masks: Vec<MaskShape>,
    pub part_masks: Vec<Vec<MaskShape>>,
}

/// What inference gives for one layer: its output and parameters, its parts' types,
/// its output's mask and its parts' masks.
type Outcome = (Inferred, Vec<TensorType>, MaskShape, Vec<MaskShape>);

impl Checker<'_> {
    /// Every layer's output type and parameters, in order; `None` (and no parameters)
    /// for a layer that is wrong or takes a wrong layer, so that nothing cascades.
    pub(super) fn shapes(&mut self, inputs: &[Input], resolved: &Resolved) -> Shapes {
        let mut sh = Shapes {
            types: Vec::new(),
            params: Vec::new(),
            parts: Vec::new(),
            masks: Vec::new(),
            part_masks: Vec::new(),
        };
        for i in 0..self.spec.layers.len() {
            let full = self.full();
            let result = if full {
                None
            } else {
                self.infer(i, inputs, resolved, &sh)
            };
            match result {
                Some((inf, parts, mask, part_masks)) => {
                    sh.types.push(Some(inf.output));
                    sh.params.push(inf.params);
                    sh.parts.push(parts);
                    sh.masks.push(mask);
                    sh.part_masks.push(part_masks);
                }
                None => {
                    sh.types.push(None);
                    sh.params.push(Vec::new());
                    sh.parts.push(Vec::new());
                    sh.masks.push(None);
                    sh.part_masks.push(Vec::new());
                }
            }
        }
        sh
    }

    /// Layer `i`'s inferred type and parameters, given the types of the layers before it.
    fn infer(
        &mut self,
        i: usize,
        inputs: &[Input],
        resolved: &Resolved,
        sh: &Shapes,
    ) -> Option<Outcome> {
        let spec = self.spec;
        let decl = &spec.layers[i];
        let origin = |s: Source| -> Range<usize> {
            match s {
                Source::Input(i) => inputs[i].span.clone(),
                Source::Layer(j) | Source::Part(j, _) => spec.layers[j].type_span.clone(),
            }
        };
        let kind = resolved.kinds[i]?;
        let a = resolved.args[i].as_ref()?;
        let srcs = resolved.refs[i].as_ref()?;
        let mut ins = Vec::new();
        let ref_names: Vec<String> = srcs
            .iter()
            .map(|&s| match s {
                Source::Part(j, p) => format!("{}.{}", self.names[j], resolved.parts[j][p]),
                _ => String::new(),
            })
            .collect();
        for (&s, rn) in srcs.iter().zip(&ref_names) {
            let (name, ty, mask) = match s {
                Source::Input(k) => (inputs[k].name.as_str(), Some(&inputs[k].ty), None),
                Source::Layer(j) => (
                    self.names[j].as_str(),
                    sh.types[j].as_ref(),
                    sh.masks[j].clone(),
                ),
                Source::Part(j, p) => (
                    rn.as_str(),
                    sh.parts[j].get(p),
                    match sh.part_masks[j].get(p) {
                        Some(m) => m.clone(),
                        None => sh.masks[j].clone(),
                    },
                ),
            };
            ins.push(In {
                name,
                ty: ty?,
                origin: origin(s),
                mask,
            });
        }
        let mut cx = Ctx {
            layer: &self.names[i],
            kind,
            span: decl.type_span.clone(),
            args: a,
            inputs: ins,
            diags: self.diags,
            parts: Vec::new(),
            part_masks: Vec::new(),
        };
        cx.expect_usable_masks()?;
        let in_masks: Vec<MaskShape> = cx.inputs.iter().map(|i| i.mask.clone()).collect();
        let in_shape = cx.inputs.first().map_or(Vec::new(), |i| i.ty.shape.clone());
        let inferred = (kind.infer)(&mut cx)?;
        let parts = std::mem::take(&mut cx.parts);
        let part_masks = std::mem::take(&mut cx.part_masks);
        let mask = layers::output_mask_shape(kind, a, &in_masks, &in_shape, &inferred.output);
        let count = inferred.params.iter().try_fold(0i64, |acc, p| {
            p.shape
                .iter()
                .try_fold(1i64, |x, &d| x.checked_mul(d))
                .and_then(|c| acc.checked_add(c))
        });
        if count.is_none_or(|c| c > MAX_PARAMS) {
            self.too_large(i, count);
            return None;
        }
        if let Err(e) = product(&inferred.output.shape) {
            let mut cx = Ctx {
                layer: &self.names[i],
                kind,
                span: decl.type_span.clone(),
                args: a,
                inputs: Vec::new(),
                diags: self.diags,
                parts: Vec::new(),
                part_masks: Vec::new(),
            };
            cx.overflow(e);
            return None;
        }
        Some((inferred, parts, mask, part_masks))
    }

    /// E0513: layer `i` would have `count` parameters (`None`: more than i64 holds).
    fn too_large(&mut self, i: usize, count: Option<i64>) {
        self.diags.push(
            Diagnostic::error(
                "E0513",
                match count {
                    Some(c) => format!(
                        "`{}` would have {} parameters, more than kiln's limit of {}",
                        self.names[i],
                        layers::group_digits(c),
                        layers::group_digits(MAX_PARAMS)
                    ),
                    None => format!(
                        "`{}` would have more than {} parameters",
                        self.names[i],
                        layers::group_digits(MAX_PARAMS)
                    ),
                },
            )
            .label(
                self.spec.layers[i].type_span.clone(),
                "this layer is too large",
            )
            .help("check `units`/`filters` and the sizes of its input"),
        );
    }

    /// E0513 when the layers are each within the limit but not together.
    pub(super) fn check_total(&mut self, params: &[Vec<Param>]) {
        let total: Option<i64> = params
            .iter()
            .flatten()
            .try_fold(0i64, |acc, p| acc.checked_add(p.count()));
        if total.is_none_or(|t| t > MAX_PARAMS) {
            self.diags.push(
                Diagnostic::error(
                    "E0513",
                    format!(
                        "the model would have more than {} parameters",
                        layers::group_digits(MAX_PARAMS)
                    ),
                )
                .label(
                    self.spec.layers_span.clone(),
                    "these layers are too large together",
                )
                .help("reduce `units`/`filters`"),
            );
        }
    }
}
