//! Reading and writing data files, by extension: `.npz`, `.npy`, `.csv`. Every read is
//! bounded by the bytes actually read (not by what the file system says, which is 0 for
//! a device or a pipe): at most [`max_data_bytes`] from a file, and as much from any one
//! `.npz` member once decompressed. Every write is atomic.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ndarray::ArrayD;

use super::npy::{self, Loaded};
use super::{DataError, csv, npz};

/// The largest data file kiln reads by default, and the most any one `.npz` member may
/// expand to (less when less memory is available: see [`max_data_bytes`]).
pub const MAX_FILE_BYTES: u64 = crate::weights::safetensors::DEFAULT_MAX_READ_BYTES;

/// The environment variable that bounds the size of a data file kiln reads.
pub const MAX_DATA_ENV: &str = "KILN_MAX_DATA_BYTES";

/// The most bytes kiln reads from one data file, and lets one `.npz` member expand to:
/// `KILN_MAX_DATA_BYTES` when set, else the smaller of [`MAX_FILE_BYTES`] and the
/// memory available.
pub fn max_data_bytes() -> Result<u64, DataError> {
    crate::weights::safetensors::max_read_bytes(MAX_DATA_ENV).map_err(|m| DataError {
        io: true,
        ..DataError::new(None, m)
    })
}

/// The most bytes of one data file, or one `.npz` member once decompressed, that kiln
/// reads in place ([`super::Dataset::open`]): `KILN_MAX_DATA_BYTES` when set, else
/// [`MAX_FILE_BYTES`] (not the memory available: data read in place is not held in
/// memory).
pub fn map_limit() -> Result<u64, DataError> {
    match std::env::var_os(MAX_DATA_ENV) {
        Some(_) => max_data_bytes(),
        None => Ok(MAX_FILE_BYTES),
    }
}

/// The contents of a data file, before they are matched to a model.
#[derive(Clone, Debug)]
pub enum Content {
    /// `.npz`: named arrays.
    Named(Vec<(String, Loaded)>),
    /// `.npy`: one unnamed array.
    Single(Loaded),
    /// `.csv`: named columns.
    Table(csv::Table),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot read the file: {e}"))
    }
}

/// The error for a file past the limit; `size` is what is known of its size.
fn too_large(path: &Path, size: String, limit: u64) -> DataError {
    DataError::new(
        Some(path),
        format!("the file is {size} bytes; kiln reads data files of at most {limit} bytes"),
    )
    .help(format!(
        "a device or a stream that never ends is not a data file; for a larger file, set {MAX_DATA_ENV}"
    ))
}

/// Opens a data file after checking that it is not a directory, nor a regular file
/// larger than `limit`.
fn open(path: &Path, limit: u64) -> Result<File, DataError> {
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return Err(DataError::new(
            Some(path),
            "this is a directory, not a data file",
        ));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(path, meta.len().to_string(), limit));
    }
    File::open(path).map_err(io_error(path))
}

/// Reads a file whole, at most `limit` bytes. A file that does not start with one of
/// the format's `magic` prefixes is read no further than that (the parser then says
/// what it is not), so that `/dev/zero` or `/dev/urandom` cost a few bytes.
fn read_bytes(path: &Path, limit: u64, magic: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut input = open(path, limit)?.take(limit.saturating_add(1));
    let mut bytes = Vec::new();
    (&mut input)
        .take(magic.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes != magic {
        return Ok(bytes);
    }
    input.read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, format!("more than {limit}"), limit));
    }
    Ok(bytes)
}

/// Streams a `.csv` file through the `csv` crate, which buffers it (never more than
/// `limit` bytes, even from a device or a file that grows while it is read).
fn read_table(path: &Path, limit: u64) -> Result<csv::Table, DataError> {
    let file = open(path, limit)?;
    csv::from_reader_limited(file, limit).map_err(|e| DataError {
        io: e.io,
        ..DataError::new(Some(path), e.message)
    })
}

/// Reads a data file by its extension: `.npz`, `.npy` or `.csv`, bounded by
/// [`max_data_bytes`].
pub fn read(path: &Path) -> Result<Content, DataError> {
    let limit = max_data_bytes().map_err(|e| DataError {
        file: Some(path.into()),
        ..e
    })?;
    read_limited(path, limit)
}

/// [`read`] with an explicit bound: at most `limit` bytes read from the file, and at
/// most `limit` bytes from any one `.npz` member once decompressed.
pub fn read_limited(path: &Path, limit: u64) -> Result<Content, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bad = |m: String| DataError::new(Some(path), m);
    match ext.as_str() {
        "npz" => {
            let bytes = read_bytes(path, limit, b"PK")?;
            npz::parse(&bytes, limit).map(Content::Named).map_err(bad)
        }
        "npy" => {
            let bytes = read_bytes(path, limit, b"\x93NUMPY")?;
            npy::parse(&bytes).map(Content::Single).map_err(bad)
        }
        "csv" => read_table(path, limit).map(Content::Table),
        _ => Err(bad(format!(
            "kiln reads data from .npz, .npy and .csv files, not `.{ext}`"
        ))
        .help("save arrays with numpy: `np.savez('data.npz', image=x, label=y)`")),
    }
}

/// Reads one array from a `.npy` file (or the single array of a `.npz`).
pub fn read_array(path: &Path) -> Result<Loaded, DataError> {
    match read(path)? {
        Content::Single(a) => Ok(a),
        Content::Named(mut v) if v.len() == 1 => Ok(v.remove(0).1),
        _ => Err(DataError::new(
            Some(path),
            "expected a single array (a .npy file)",
        )),
    }
}

/// Writes f32 arrays atomically: one array as `.npy`, or named arrays as `.npz` (by the
/// path's extension). A failed write leaves any previous file untouched.
pub fn write(path: &Path, arrays: &[(String, ArrayD<f32>)]) -> Result<(), DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bytes = match (ext.as_str(), arrays) {
        ("npy", [(_, a)]) => npy::to_bytes(a),
        ("npy", _) => {
            let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
            return Err(DataError::new(
                Some(path),
                format!(
                    "the model has {} outputs ({}); a .npy file holds one array",
                    arrays.len(),
                    names.join(", ")
                ),
            )
            .help("write a .npz archive instead: one array per output, by name"));
        }
        ("npz", _) => npz::to_bytes(arrays).map_err(|e| DataError {
            io: true,
            ..DataError::new(Some(path), format!("cannot write: {e}"))
        })?,
        _ => {
            return Err(DataError::new(
                Some(path),
                format!("kiln writes .npy or .npz files, not `.{ext}`"),
            ));
        }
    };
    crate::weights::write_atomic(path, |w| w.write_all(&bytes)).map_err(|e| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot write the file: {e}"))
    })
}
