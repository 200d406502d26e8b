//! Keras's own names, in one table, so that a name Keras has and kiln lacks is reported
//! as exactly that ("Keras has `conv_lstm2d`; kiln does not support it yet") with the closest
//! thing kiln has when there is a real one, instead of a did-you-mean to an unrelated
//! kiln name (`group_normalization` is not a misspelled `batch_normalization`).
//!
//! The table lists Keras 3's public names per family (from `keras.layers`,
//! `keras.losses`, … as Keras spells them in snake_case, with its string aliases).
//! It is consulted only for a name that kiln's catalog does not know, so a name kiln
//! gains later stays correct here without an edit.

use std::ops::Range;

use super::Diagnostic;

/// A family of names that a spec may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Layer,
    Loss,
    Metric,
    Optimizer,
    Schedule,
    Initializer,
    Activation,
    Callback,
    Regularizer,
    /// An argument of a layer, loss, optimizer or callback.
    Argument,
}

impl Family {
    /// The family's noun in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Family::Layer => "layer",
            Family::Loss => "loss",
            Family::Metric => "metric",
            Family::Optimizer => "optimizer",
            Family::Schedule => "learning-rate schedule",
            Family::Initializer => "initializer",
            Family::Activation => "activation",
            Family::Callback => "callback",
            Family::Regularizer => "regularizer",
            Family::Argument => "argument",
        }
    }
}

/// One Keras name and what to use in kiln instead: a kiln name in backticks, or advice;
/// empty when kiln has nothing close.
pub struct KerasName {
    pub family: Family,
    pub name: &'static str,
    pub instead: &'static str,
}

const fn k(family: Family, name: &'static str, instead: &'static str) -> KerasName {
    KerasName {
        family,
        name,
        instead,
    }
}

use Family::*;

/// Keras 3's names (3.15), by family.
pub static KERAS: &[KerasName] = &[
    // Layers (keras.layers), with Keras's aliases.
    k(Layer, "activation", ""),
    k(Layer, "activity_regularization", ""),
    k(
        Layer,
        "adaptive_average_pooling1d",
        "global_average_pooling1d",
    ),
    k(
        Layer,
        "adaptive_average_pooling2d",
        "global_average_pooling2d",
    ),
    k(
        Layer,
        "adaptive_average_pooling3d",
        "global_average_pooling3d",
    ),
    k(Layer, "adaptive_max_pooling1d", "global_max_pooling1d"),
    k(Layer, "adaptive_max_pooling2d", "global_max_pooling2d"),
    k(Layer, "adaptive_max_pooling3d", "global_max_pooling3d"),
    k(Layer, "additive_attention", "multi_head_attention"),
    k(Layer, "alpha_dropout", "dropout"),
    k(Layer, "attention", "multi_head_attention"),
    k(Layer, "aug_mix", ""),
    k(Layer, "auto_contrast", ""),
    k(Layer, "average", ""),
    k(Layer, "avg_pool1d", "average_pooling1d"),
    k(Layer, "avg_pool2d", "average_pooling2d"),
    k(Layer, "avg_pool3d", "average_pooling3d"),
    k(Layer, "bidirectional", ""),
    k(Layer, "category_encoding", ""),
    k(Layer, "center_crop", ""),
    k(
        Layer,
        "contrast_limited_adaptive_histogram_equalization",
        "",
    ),
    k(Layer, "conv1d_transpose", ""),
    k(Layer, "conv2d_transpose", ""),
    k(Layer, "conv_lstm1d", ""),
    k(Layer, "conv_lstm2d", ""),
    k(Layer, "conv_lstm3d", ""),
    k(Layer, "convolution1d", "conv1d"),
    k(Layer, "convolution1d_transpose", "conv1d_transpose"),
    k(Layer, "convolution2d", "conv2d"),
    k(Layer, "convolution2d_transpose", "conv2d_transpose"),
    k(Layer, "convolution3d", "conv3d"),
    k(Layer, "convolution3d_transpose", "conv3d_transpose"),
    k(Layer, "cropping1d", ""),
    k(Layer, "cropping2d", ""),
    k(Layer, "cut_mix", ""),
    k(Layer, "depthwise_conv1d", ""),
    k(Layer, "depthwise_conv2d", ""),
    k(Layer, "discretization", ""),
    k(Layer, "dot", ""),
    k(Layer, "einsum_dense", "dense"),
    k(Layer, "equalization", ""),
    k(Layer, "flax_layer", ""),
    k(Layer, "gaussian_dropout", "dropout"),
    k(Layer, "gaussian_noise", ""),
    k(Layer, "global_avg_pool1d", "global_average_pooling1d"),
    k(Layer, "global_avg_pool2d", "global_average_pooling2d"),
    k(Layer, "global_avg_pool3d", "global_average_pooling3d"),
    k(Layer, "global_max_pool1d", "global_max_pooling1d"),
    k(Layer, "global_max_pool2d", "global_max_pooling2d"),
    k(Layer, "global_max_pool3d", "global_max_pooling3d"),
    k(Layer, "group_normalization", ""),
    k(Layer, "group_query_attention", "multi_head_attention"),
    k(Layer, "gru_cell", "gru"),
    k(Layer, "hashed_crossing", ""),
    k(Layer, "hashing", ""),
    k(Layer, "identity", ""),
    k(Layer, "input", "declare the model's inputs under `inputs:`"),
    k(
        Layer,
        "input_layer",
        "declare the model's inputs under `inputs:`",
    ),
    k(Layer, "integer_lookup", ""),
    k(Layer, "jax_layer", ""),
    k(Layer, "lambda", ""),
    k(Layer, "lstm_cell", "lstm"),
    k(Layer, "masking", ""),
    k(Layer, "max_num_bounding_boxes", ""),
    k(Layer, "max_pool1d", "max_pooling1d"),
    k(Layer, "max_pool2d", "max_pooling2d"),
    k(Layer, "max_pool3d", "max_pooling3d"),
    k(Layer, "maximum", ""),
    k(Layer, "mel_spectrogram", ""),
    k(Layer, "minimum", ""),
    k(Layer, "mix_up", ""),
    k(Layer, "normalization", ""),
    k(Layer, "pipeline", ""),
    k(Layer, "prelu", "leaky_relu"),
    k(Layer, "rand_augment", ""),
    k(Layer, "random_brightness", ""),
    k(Layer, "random_color_degeneration", ""),
    k(Layer, "random_color_jitter", ""),
    k(Layer, "random_contrast", ""),
    k(Layer, "random_crop", ""),
    k(Layer, "random_elastic_transform", ""),
    k(Layer, "random_erasing", ""),
    k(Layer, "random_flip", ""),
    k(Layer, "random_gaussian_blur", ""),
    k(Layer, "random_grayscale", ""),
    k(Layer, "random_hue", ""),
    k(Layer, "random_invert", ""),
    k(Layer, "random_perspective", ""),
    k(Layer, "random_posterization", ""),
    k(Layer, "random_rotation", ""),
    k(Layer, "random_saturation", ""),
    k(Layer, "random_sharpness", ""),
    k(Layer, "random_shear", ""),
    k(Layer, "random_translation", ""),
    k(Layer, "random_zoom", ""),
    k(Layer, "repeat_vector", ""),
    k(Layer, "rescaling", ""),
    k(Layer, "resizing", ""),
    k(Layer, "reversible_embedding", "embedding"),
    k(Layer, "rms_normalization", ""),
    k(Layer, "rnn", "lstm, gru or simple_rnn"),
    k(Layer, "separable_conv1d", ""),
    k(Layer, "separable_conv2d", ""),
    k(Layer, "separable_convolution1d", "separable_conv1d"),
    k(Layer, "separable_convolution2d", "separable_conv2d"),
    k(Layer, "simple_rnn_cell", "simple_rnn"),
    k(Layer, "solarization", ""),
    k(Layer, "spatial_dropout1d", "dropout"),
    k(Layer, "spatial_dropout2d", "dropout"),
    k(Layer, "spectral_normalization", ""),
    k(
        Layer,
        "stacked_rnn_cells",
        "several recurrent layers with `return_sequences: true`",
    ),
    k(Layer, "stft_spectrogram", ""),
    k(Layer, "string_lookup", ""),
    k(Layer, "text_vectorization", ""),
    k(Layer, "tfsm_layer", ""),
    k(Layer, "time_distributed", ""),
    k(Layer, "torch_module_wrapper", ""),
    k(Layer, "unit_normalization", ""),
    k(Layer, "up_sampling1d", ""),
    k(Layer, "up_sampling2d", ""),
    k(Layer, "zero_padding1d", ""),
    k(Layer, "zero_padding2d", ""),
    // Losses (keras.losses), with their string aliases.
    k(Loss, "binary_focal_crossentropy", "binary_crossentropy"),
    k(
        Loss,
        "categorical_focal_crossentropy",
        "categorical_crossentropy",
    ),
    k(
        Loss,
        "categorical_generalized_cross_entropy",
        "categorical_crossentropy",
    ),
    k(Loss, "categorical_hinge", ""),
    k(Loss, "circle", ""),
    k(Loss, "cosine_similarity", ""),
    k(Loss, "ctc", ""),
    k(Loss, "dice", ""),
    k(Loss, "hinge", ""),
    k(Loss, "kl_divergence", ""),
    k(Loss, "kld", ""),
    k(Loss, "log_cosh", "huber"),
    k(Loss, "logcosh", "huber"),
    k(Loss, "mape", ""),
    k(Loss, "mean_absolute_percentage_error", ""),
    k(Loss, "mean_squared_logarithmic_error", ""),
    k(Loss, "msle", ""),
    k(Loss, "poisson", ""),
    k(Loss, "squared_hinge", ""),
    k(Loss, "tversky", ""),
    // Metrics (keras.metrics), with their string aliases; Keras also takes a loss's
    // name as a metric.
    k(Metric, "auc", ""),
    k(Metric, "binary_crossentropy", ""),
    k(Metric, "binary_focal_crossentropy", ""),
    k(Metric, "binary_iou", ""),
    k(Metric, "categorical_crossentropy", ""),
    k(Metric, "categorical_focal_crossentropy", ""),
    k(Metric, "categorical_hinge", ""),
    k(Metric, "concordance_correlation", ""),
    k(Metric, "cosine_similarity", ""),
    k(Metric, "f1_score", ""),
    k(Metric, "f_beta_score", ""),
    k(Metric, "false_negatives", ""),
    k(Metric, "false_positives", ""),
    k(Metric, "hinge", ""),
    k(Metric, "huber", ""),
    k(Metric, "iou", ""),
    k(Metric, "kl_divergence", ""),
    k(Metric, "kld", ""),
    k(Metric, "log_cosh_error", ""),
    k(Metric, "logcosh", ""),
    k(Metric, "mape", ""),
    k(Metric, "mean_absolute_percentage_error", ""),
    k(Metric, "mean_iou", ""),
    k(Metric, "mean_squared_logarithmic_error", ""),
    k(Metric, "msle", ""),
    k(Metric, "one_hot_iou", ""),
    k(Metric, "one_hot_mean_iou", ""),
    k(Metric, "pearson_correlation", ""),
    k(Metric, "poisson", ""),
    k(Metric, "precision", ""),
    k(Metric, "precision_at_recall", ""),
    k(Metric, "r2_score", ""),
    k(Metric, "recall", ""),
    k(Metric, "recall_at_precision", ""),
    k(Metric, "root_mean_squared_error", "mse"),
    k(Metric, "sensitivity_at_specificity", ""),
    k(Metric, "sparse_categorical_crossentropy", ""),
    k(
        Metric,
        "sparse_top_k_categorical_accuracy",
        "sparse_categorical_accuracy",
    ),
    k(Metric, "specificity_at_sensitivity", ""),
    k(Metric, "squared_hinge", ""),
    k(Metric, "top_k_categorical_accuracy", "categorical_accuracy"),
    k(Metric, "true_negatives", ""),
    k(Metric, "true_positives", ""),
    // Optimizers (keras.optimizers, by their lower-case class names).
    k(Optimizer, "adadelta", ""),
    k(Optimizer, "adafactor", ""),
    k(Optimizer, "adagrad", ""),
    k(Optimizer, "adamax", "adam"),
    k(Optimizer, "ftrl", ""),
    k(Optimizer, "lamb", "adamw"),
    k(Optimizer, "lion", ""),
    k(Optimizer, "loss_scale_optimizer", ""),
    k(Optimizer, "muon", ""),
    k(Optimizer, "nadam", "adam"),
    k(Optimizer, "schedule_free_adamw", "adamw"),
    // Learning-rate schedules (keras.optimizers.schedules).
    k(Schedule, "cosine_decay_restarts", "cosine_decay"),
    // Initializers (keras.initializers), with their aliases.
    k(Initializer, "identity", ""),
    k(Initializer, "identity_initializer", ""),
    k(Initializer, "stft", ""),
    k(Initializer, "stft_initializer", ""),
    // Activations (keras.activations).
    k(Activation, "celu", "elu"),
    k(Activation, "glu", ""),
    k(Activation, "hard_shrink", ""),
    k(Activation, "hard_tanh", "tanh"),
    k(Activation, "log_sigmoid", ""),
    k(Activation, "soft_shrink", ""),
    k(Activation, "sparse_plus", ""),
    k(Activation, "sparse_sigmoid", ""),
    k(Activation, "sparsemax", "softmax"),
    k(Activation, "squareplus", ""),
    k(Activation, "tanh_shrink", ""),
    k(Activation, "threshold", ""),
    // Callbacks (keras.callbacks).
    k(
        Callback,
        "backup_and_restore",
        "model_checkpoint, and `kiln train --resume CKPT`",
    ),
    k(Callback, "lambda_callback", ""),
    k(
        Callback,
        "learning_rate_scheduler",
        "a schedule as the optimizer's `learning_rate`, or reduce_lr_on_plateau",
    ),
    k(Callback, "orbax_checkpoint", "model_checkpoint"),
    k(Callback, "remote_monitor", "csv_logger"),
    k(Callback, "swap_ema_weights", ""),
    k(Callback, "tensorboard", "csv_logger"),
    // Regularizers (keras.regularizers).
    k(Regularizer, "l1", ""),
    k(Regularizer, "l1_l2", ""),
    k(Regularizer, "l2", ""),
    k(Regularizer, "orthogonal_regularizer", ""),
    // Arguments kiln does not take, and why or where they went.
    k(
        Argument,
        "kernel_regularizer",
        "kiln takes `kernel_regularizer` where Keras does (dense, the convolutions, the recurrent layers, multi_head_attention), not on this layer",
    ),
    k(
        Argument,
        "bias_regularizer",
        "kiln takes `bias_regularizer` where Keras does (dense, the convolutions, the recurrent layers, multi_head_attention), not on this layer",
    ),
    k(
        Argument,
        "activity_regularizer",
        "kiln takes `activity_regularizer` on dense, the convolutions, embedding and the recurrent layers; not on this layer yet (multi_head_attention's, on each projection, is not supported yet)",
    ),
    k(
        Argument,
        "kernel_constraint",
        "constraints are not supported yet",
    ),
    k(
        Argument,
        "bias_constraint",
        "constraints are not supported yet",
    ),
    k(
        Argument,
        "recurrent_constraint",
        "constraints are not supported yet",
    ),
    k(
        Argument,
        "dtype",
        "layers compute in f32; set dtypes on `inputs`",
    ),
    k(
        Argument,
        "input_shape",
        "shapes are declared under `inputs:`, e.g. `inputs: {x: [batch, 784]}`",
    ),
    k(
        Argument,
        "data_format",
        "kiln takes `data_format` where Keras does (convolutions, pooling, flatten, up-sampling, padding, cropping); this layer is channels_last only",
    ),
    k(
        Argument,
        "trainable",
        "freezing layers is not supported yet",
    ),
    k(
        Argument,
        "return_state",
        "layers return one tensor; use `return_sequences`",
    ),
    k(
        Argument,
        "stateful",
        "stateful recurrent layers are not supported",
    ),
    k(Argument, "amsgrad", "AMSGrad is not supported yet"),
    k(
        Argument,
        "return_attention_scores",
        "a layer's second output is not supported yet",
    ),
    k(
        Argument,
        "attention_mask",
        "an explicit mask input is not supported yet; Keras masks (`mask_zero`, `masking`) and `use_causal_mask` apply",
    ),
    k(
        Argument,
        "sliding_window",
        "sliding-window attention is not supported yet",
    ),
    k(
        Argument,
        "flash_attention",
        "kiln computes attention one way, with Keras's numerics",
    ),
];

/// The table's entry for `name` in `family`, if Keras has one.
pub fn lookup(family: Family, name: &str) -> Option<&'static KerasName> {
    let lower = name.to_lowercase();
    KERAS.iter().find(|e| e.family == family && e.name == lower)
}

/// E0801 for a Keras name kiln's catalog lacks, or `None` when Keras has no such name
/// (then the caller's did-you-mean applies). `known` lists kiln's names of the family,
/// for the help when there is no close alternative.
pub fn not_yet<'a>(
    family: Family,
    name: &str,
    span: Range<usize>,
    known: impl Iterator<Item = &'a str>,
) -> Option<Diagnostic> {
    let e = lookup(family, name)?;
    let noun = family.noun();
    let help = if e.instead.is_empty() {
        let names: Vec<&str> = known.collect();
        format!(
            "kiln has no close alternative; kiln's {noun}s: {}",
            names.join(", ")
        )
    } else if e.instead.contains(' ') {
        format!("instead: {}", e.instead)
    } else {
        format!("the closest kiln has is `{}`", e.instead)
    };
    Some(
        Diagnostic::error(
            "E0801",
            format!("Keras has the {noun} `{name}`; kiln does not support it yet"),
        )
        .label(span, format!("a Keras {noun} kiln does not support yet"))
        .help(help),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_once_per_family_and_in_keras_spelling() {
        for (i, a) in KERAS.iter().enumerate() {
            assert!(
                !KERAS[..i]
                    .iter()
                    .any(|b| b.family == a.family && b.name == a.name),
                "{} twice",
                a.name
            );
            assert!(
                a.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn a_keras_name_gets_its_alternative_and_others_none() {
        let d = not_yet(Family::Loss, "log_cosh", 0..8, std::iter::empty()).unwrap();
        assert_eq!(d.code, "E0801");
        assert!(
            d.message.contains("Keras has the loss `log_cosh`"),
            "{}",
            d.message
        );
        assert_eq!(d.help.as_deref(), Some("the closest kiln has is `huber`"));
        let d = not_yet(
            Family::Layer,
            "group_normalization",
            0..1,
            ["dense"].into_iter(),
        )
        .unwrap();
        assert!(d.help.unwrap().contains("no close alternative"));
        assert!(not_yet(Family::Layer, "densee", 0..1, std::iter::empty()).is_none());
        // Families are kept apart: `auc` is a metric, not a loss.
        assert!(not_yet(Family::Loss, "auc", 0..1, std::iter::empty()).is_none());
    }
}
