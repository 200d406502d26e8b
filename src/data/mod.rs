//! Data for training, evaluation and prediction (DESIGN §4): `.npz` archives whose
//! arrays are named after the model's inputs and targets, a `.npy` file for a single
//! input, and `.csv` files with a header (the feature columns go to the single input,
//! the target column to the single target).
//!
//! Everything is checked against the spec before any step runs: dtypes, shapes with
//! their symbolic dims (one symbol is one size in every array), finite values, integer
//! labels within the classes of a sparse cross-entropy, indices within an embedding's
//! table. Errors name the file, the array, and what was expected against what was
//! found. A [`Dataset`] holds the arrays as f32 (integer tensors as exact f32 values,
//! the runtime's convention) in the model's order; [`Dataset::split`] takes Keras's
//! validation split (the last fraction, before shuffling), and [`permutation`] with
//! [`batch_indices`] walk a seeded order in batches, the last one partial.
//!
//! The rooms: `files` reads and writes data files by extension (the formats in
//! [`csv`], [`npy`] and [`npz`]); `check` matches arrays to the model's inputs and
//! targets; `dataset` and `table` build a [`Dataset`] from a file's contents;
//! `batches` orders the examples of an epoch; `error` holds [`DataError`]. Data larger
//! than memory is read in place ([`Dataset::open`]): `shards` opens a file, a folder
//! or a glob of files and checks them a chunk at a time; `store` holds their mapped
//! arrays and reads a batch from them.

mod batches;
mod check;
pub mod csv;
mod dataset;
mod error;
mod files;
pub mod npy;
pub mod npz;
mod shards;
mod store;
mod table;

pub use batches::{batch_indices, describe, num_batches, permutation};
pub use check::check_predict_inputs;
pub use dataset::{Batch, Dataset, LoadOptions, MAP_FROM_BYTES};
pub use error::DataError;
pub use files::{
    Content, MAX_DATA_ENV, MAX_FILE_BYTES, max_data_bytes, read, read_array, read_limited, write,
};
pub use npy::{Dtype, Kind, Loaded};
