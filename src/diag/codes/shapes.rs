//! E05: shapes and dtypes flowing through the layers.

use super::{CodeInfo, Example};

pub(super) const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: "E0501",
        title: "a layer's input has the wrong rank",
        explanation: "\
Each layer expects inputs of certain ranks, counting the batch axis: `dense` rank 2 or
more, `conv2d` and 2-D pooling rank 4 `[batch, height, width, channels]`, `conv1d` and
recurrent layers rank 3 `[batch, steps, features]`. Reshape the input first, or move a
`flatten` after the layers that need the spatial axes.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv2d_on_flat_input.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  pixels: [batch, 784]
layers:
  - reshape: {target_shape: [28, 28, 1]}
  - conv2d: {filters: 32, kernel_size: 3, activation: relu}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0502",
        title: "a layer's input has the wrong dtype",
        explanation: "\
Layers that compute (dense, convolutions, normalization, …) take f32 tensors; integer
tensors are indices, which an `embedding` layer turns into vectors. Conversely,
`embedding` takes integer indices, not f32 values.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/int_input_into_dense.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, 20], dtype: i32}
layers:
  - embedding: {input_dim: 1000, output_dim: 16}
  - flatten
  - dense: {units: 64, activation: relu}
  - dense: {units: 2}
",
        ),
    },
    CodeInfo {
        code: "E0503",
        title: "a window does not fit its input",
        explanation: "\
A convolution or pooling with `padding: valid` slides its window only where it fits
whole, so each spatial axis must be at least as long as the window (its size, spread by
`dilation_rate`). Pooling and strided layers before it shrink the axes. Use
`padding: same`, a smaller window, or fewer downsampling layers.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv_window_too_big.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 8, 8, 1]
layers:
  - conv2d: {filters: 16, kernel_size: 3, activation: relu}
  - max_pooling2d: {pool_size: 2}
  - max_pooling2d: {pool_size: 2}
  - conv2d: {filters: 32, kernel_size: 3, padding: same}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0504",
        title: "the inputs of an element-wise merge have different shapes",
        explanation: "\
`add`, `subtract` and `multiply` combine their inputs element by element, so every
input must have the same shape; kiln does not broadcast one to the other. Make the
branches agree (a residual branch must end in the width it started with), or use
`concatenate` to join them side by side.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/add_shape_mismatch.yaml"
        )),
        fixed: Example::Spec(
            "\
# The branch ends in the width it started with.
inputs:
  x: [batch, 32]
layers:
  - dense: {units: 64, activation: relu}
  - dense: {units: 32, name: branch}
  - add: {inputs: [x, branch]}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0505",
        title: "the inputs of `concatenate` disagree off the joined axis",
        explanation: "\
`concatenate` joins its inputs along `axis` (the last one by default); every other axis
must have the same size in all inputs. Two image branches of different resolutions
cannot be joined on the channel axis until they have the same height and width.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/concatenate_mismatch.yaml"
        )),
        fixed: Example::Spec(
            "\
# The second branch sees farther (dilation) without shrinking the image.
inputs:
  image: [batch, 16, 16, 3]
layers:
  - conv2d: {filters: 8, kernel_size: 3, padding: same, name: fine}
  - conv2d: {filters: 8, kernel_size: 3, dilation_rate: 2, padding: same, input: image, name: wide}
  - concatenate: {inputs: [fine, wide]}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0506",
        title: "`reshape` cannot produce the target shape",
        explanation: "\
`reshape` keeps the batch axis and rearranges the rest, so the product of
`target_shape` must equal the number of elements per example. One size may be `-1`, to
be computed from the others; sizes are otherwise positive.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/reshape_size_mismatch.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  pixels: [batch, 784]
layers:
  - reshape: {target_shape: [28, 28, 1]}
  - conv2d: {filters: 8, kernel_size: 3}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0507",
        title: "a weight's size would depend on a symbolic dimension",
        explanation: "\
A layer with weights needs a known size on the axis its weights span (the features of
`dense`, the channels of a convolution): a weight's shape cannot depend on a size known
only at run time. `flatten` of a variable-length sequence keeps the symbol in its size
(`8*seq`); a global pooling layer removes the symbolic axis instead.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/dense_on_symbolic_features.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, seq], dtype: i32}
layers:
  - embedding: {input_dim: 1000, output_dim: 8}
  - global_average_pooling1d
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0508",
        title: "an axis is out of range",
        explanation: "\
An `axis` argument counts from 0 (the batch axis) up to the rank minus one, or from -1
(the last axis) down. This error is also given for an axis listed twice and for
`concatenate` on the batch axis. `axis: 3` copied from an image model does not exist on
a rank-2 tensor; `-1`, the last axis, is the usual choice.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/batch_norm_axis_out_of_range.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 64]
layers:
  - dense: {units: 32}
  - batch_normalization: {axis: -1}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0509",
        title: "`dims` of `permute` is not a permutation",
        explanation: "\
`permute` reorders the non-batch axes, numbered from 1 as in Keras; `dims` lists each
of them exactly once. For a rank-4 input that is a permutation of 1, 2, 3.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/permute_bad_dims.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 8, 8, 3]
layers:
  - permute: {dims: [2, 1, 3]}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0510",
        title: "`groups` does not divide the channels and filters",
        explanation: "\
A grouped convolution splits the input channels and the filters into `groups` equal
parts, so `groups` must divide both.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv_groups_not_dividing.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  image: [batch, 16, 16, 6]
layers:
  - conv2d: {filters: 8, kernel_size: 3, groups: 2}
  - flatten
  - dense: {units: 10}
",
        ),
    },
    CodeInfo {
        code: "E0511",
        title: "the inputs of `multi_head_attention` disagree",
        explanation: "\
`multi_head_attention` takes `inputs: [query, value]` or `[query, value, key]`. All come
from the same batch, and key and value must have the same number of steps (each key
scores the value at its step). Key and value are usually the same tensor.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/attention_key_value_length.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  query: [batch, tgt, 32]
  memory: [batch, src, 32]
layers:
  - multi_head_attention: {num_heads: 4, key_dim: 8, inputs: [query, memory]}
  - global_average_pooling1d
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0513",
        title: "a layer or the model is too large",
        explanation: "\
kiln refuses models of more than 2^40 (1,099,511,627,776) parameters, and sizes that
overflow 64-bit integers or whose symbolic formula grows without bound. Such sizes are
typing mistakes (a few extra zeros in `units` or an input's shape) rather than models;
check the layer's arguments and the sizes of its inputs.
",
        wrong: Example::Spec(include_str!("../../../specs/errors/layer_too_large.yaml")),
        fixed: Example::Spec(
            "\
inputs:
  x: [batch, 100000]
layers:
  - dense: {units: 100}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0514",
        title: "`strides` and `dilation_rate` both above 1",
        explanation: "\
A convolution can step by `strides` or spread its window by `dilation_rate`, but not
both at once; Keras refuses the combination too.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/conv_strides_and_dilation.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  signal: [batch, 128, 1]
layers:
  - conv1d: {filters: 16, kernel_size: 3, dilation_rate: 2}
  - global_average_pooling1d
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0520",
        title: "the layers of a `bidirectional` disagree",
        explanation: "\
`bidirectional` runs `layer` over the sequence forward and `backward_layer` over it
backward, then merges the two. As in Keras, a `backward_layer` must have the opposite
`go_backwards` and the same `return_sequences` as `layer`, and `merge_mode` `sum`,
`mul` or `ave` need both outputs of the same shape. Without `backward_layer`, a copy of
`layer` runs backward and they always agree.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/bidirectional_same_direction.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, seq], dtype: i32}
layers:
  - embedding: {input_dim: 1000, output_dim: 32}
  - bidirectional: {layer: {lstm: {units: 16}}, backward_layer: {lstm: {units: 16, go_backwards: true}}}
  - dense: {units: 1}
",
        ),
    },
    CodeInfo {
        code: "E0521",
        title: "an attention mask does not fit the attention scores",
        explanation: "\
`multi_head_attention` joins its masks as Keras does: an `attention_mask` input, the
causal mask of `use_causal_mask` (`[1, T, S]`, T and S the sizes of axis 1 of query and
value) and the Keras masks of its inputs, broadcast together as numpy broadcasts (aligned
on the right); then axes of size 1 go before the last `2n` axes (n attention axes) until
the mask has the rank of the scores `[batch, heads, query steps, key steps]` (with
`attention_axes`: `[batch, other axes…, heads, query axes…, key axes…]`), and every axis
must be 1 or the scores'. For rank-3 inputs the mask is `[batch, query steps, key
steps]`. Keras refuses the same masks; the causal mask needs one attention axis.
",
        wrong: Example::Spec(
            "\
inputs:
  q: [batch, 4, 8]
  v: [batch, 6, 8]
  m: [batch, 4, 5]
layers:
  - multi_head_attention: {num_heads: 2, key_dim: 4, attention_mask: m, inputs: [q, v]}
",
        ),
        fixed: Example::Spec(
            "\
inputs:
  q: [batch, 4, 8]
  v: [batch, 6, 8]
  m: [batch, 4, 6]
layers:
  - multi_head_attention: {num_heads: 2, key_dim: 4, attention_mask: m, inputs: [q, v]}
",
        ),
    },
    CodeInfo {
        code: "E0522",
        title: "a Keras mask reaches a layer that cannot use it",
        explanation: "\
Keras masks travel with tensors: a mask per step (`[batch, steps]`, one axis fewer than
its tensor) from `embedding` with `mask_zero` or `masking`, and, on the scores
`multi_head_attention` returns with `return_attention_scores`, the attention mask its
softmax applied (as many axes as the scores, 1 where it does not vary). Layers that pass
masks on (dense, dropout, activations) take either. A loss, `batch_normalization`,
`concatenate` and global pooling weight or join per step and refuse a mask on scores as
Keras does (a loss whose values happen to broadcast against it gives Keras a mean over a
meaningless broadcast, which kiln refuses too), and a merge needs its inputs' masks of
one shape. Drop the mask first with a layer that does not pass masks on (e.g. a
`reshape` that changes the shape), or remove the masks that reach the attention.
",
        wrong: Example::Spec(include_str!(
            "../../../specs/errors/attention_scores_mask_loss.yaml"
        )),
        fixed: Example::Spec(
            "\
inputs:
  tokens: {shape: [batch, 6], dtype: i32}
layers:
  - embedding: {input_dim: 100, output_dim: 8, mask_zero: true, name: embed}
  - multi_head_attention: {num_heads: 2, key_dim: 4, return_attention_scores: true, inputs: [embed, embed], name: attn}
  - reshape: {target_shape: [12, 6], input: attn.scores, name: scores}
outputs: [scores]
train:
  targets: {s: [batch, 12, 6]}
  loss: mse
  optimizer: adam
",
        ),
    },
];
