//! kiln's tests as one binary (one link instead of one per file). `team` stays a binary of
//! its own: it sets the thread team's size for its whole process.

mod catalog;
mod cli;
mod common;
mod conv_layers;
mod data_files;
mod data_mapped;
mod errors;
mod examples;
mod explain;
mod floors;
mod hostile_budget;
mod hostile_cli;
mod hostile_files;
mod hostile_inputs;
mod init_cli;
mod ir_passes;
mod ir_prims;
mod jit;
mod keras_golden;
mod keras_names;
mod layers;
mod library;
mod lower_grad;
mod optim;
mod predict_cli;
mod props;
mod simple_layers;
mod split_step;
mod train_bits;
mod train_cli;
mod train_loop;
mod train_options;
mod wrappers_masking;
