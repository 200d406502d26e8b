//! Reading and writing data files, by extension: `.npz`, `.npy`, `.csv`. Every read is
//! bounded by [`MAX_FILE_BYTES`]; every write is atomic.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ndarray::ArrayD;

use super::npy::{self, Loaded};
use super::{DataError, csv, npz};

/// The largest data file kiln reads, and the most any one `.npz` member may expand to.
pub const MAX_FILE_BYTES: u64 = 16 << 30;

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

/// Opens a data file after checking that it is a file kiln may read whole.
fn open(path: &Path) -> Result<File, DataError> {
    let io = |e: std::io::Error| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot read the file: {e}"))
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(DataError::new(
            Some(path),
            "this is a directory, not a data file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DataError::new(
            Some(path),
            format!(
                "the file is {} bytes; kiln reads at most {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    File::open(path).map_err(io)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError {
            io: true,
            ..DataError::new(Some(path), format!("cannot read the file: {e}"))
        })?;
    Ok(bytes)
}

/// Streams a `.csv` file through the `csv` crate, which buffers it (never more than
/// [`MAX_FILE_BYTES`], even from a file that grows while it is read).
fn read_table(path: &Path) -> Result<csv::Table, DataError> {
    let file = open(path)?.take(MAX_FILE_BYTES);
    csv::from_reader(file).map_err(|e| DataError {
        io: e.io,
        ..DataError::new(Some(path), e.message)
    })
}

/// Reads a data file by its extension: `.npz`, `.npy` or `.csv`.
pub fn read(path: &Path) -> Result<Content, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let bad = |m: String| DataError::new(Some(path), m);
    match ext.as_str() {
        "npz" => {
            let bytes = read_bytes(path)?;
            npz::parse(&bytes, MAX_FILE_BYTES)
                .map(Content::Named)
                .map_err(bad)
        }
        "npy" => {
            let bytes = read_bytes(path)?;
            npy::parse(&bytes).map(Content::Single).map_err(bad)
        }
        "csv" => read_table(path).map(Content::Table),
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
