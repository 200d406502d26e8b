//! Data read in place: the arrays of one or more files (shards), memory-mapped where
//! the file's layout allows and converted to f32 a batch at a time, so that training
//! holds one batch of the data in memory, not the dataset.
//!
//! A [`Region`] is the bytes of one file: a read-only map of a regular file, or the
//! decompressed bytes of a compressed `.npz` member (in memory when small, else in an
//! unlinked temporary file, mapped). A [`Part`] is one array of one shard: elements in
//! C order at an offset of a region (any dtype kiln reads, either byte order), or an
//! array read whole (Fortran order). A [`Store`] is the columns (inputs, targets, the
//! sample weights) of every shard, the shards' examples one after another.
//!
//! Walks over a whole column (the checks when the data is opened, the fingerprint, class
//! weights) read the map in order, a chunk at a time. Pages of a map that were read
//! stay resident until the kernel needs the memory, and count in the process's resident
//! size: after every chunk the store tells the kernel it no longer needs them
//! (`MADV_DONTNEED`; a later read faults them in again from the page cache). A batch's
//! examples lie anywhere in the files, and one fault maps a whole cached folio around
//! the page it needs (up to megabytes on a recent kernel), so batches are not read
//! through the map: each example's bytes are copied from the file at their offset
//! (`pread`, served by the same page cache). What the data adds to the resident size
//! stays about one batch and one chunk.
//!
//! A mapped file that another process truncates would end the process with SIGBUS when
//! a vanished page is read. Before every walk the store checks that the file still
//! holds its bytes; a batch read from a truncated file comes up short, which is an
//! error (SECURITY.md says what remains).

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use memmap2::Mmap;
use ndarray::{ArrayD, IxDyn};

use super::DataError;
use super::npy::{Dtype, Kind};

/// Elements converted at a time when a whole column is walked (checks, fingerprints).
const CHUNK_ELEMENTS: usize = 1 << 20;

/// The bytes of one file.
pub(super) enum Region {
    /// A regular file mapped read-only; it must keep at least `need` bytes.
    Mapped {
        map: Mmap,
        file: File,
        path: PathBuf,
        need: u64,
    },
    /// Bytes held in memory (a small compressed member, decompressed).
    Owned(Vec<u8>),
}

impl Region {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Region::Mapped { map, .. } => map,
            Region::Owned(v) => v,
        }
    }

    /// Whether the file still holds the bytes kiln reads from it: a file truncated
    /// while mapped is an error here, before any of its pages is touched.
    fn check(&self) -> Result<(), DataError> {
        let Region::Mapped {
            file, path, need, ..
        } = self
        else {
            return Ok(());
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < *need {
            return Err(changed(path, len, *need));
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes at `at` of the file (not through the map: see the
    /// module documentation); a file cut shorter since it was opened is an error.
    fn read_at(&self, at: usize, buf: &mut [u8]) -> Result<(), DataError> {
        match self {
            Region::Mapped { file, path, .. } => file.read_exact_at(buf, at as u64).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    return self
                        .check()
                        .err()
                        .unwrap_or_else(|| changed(path, 0, at as u64));
                }
                DataError {
                    io: true,
                    ..DataError::new(Some(path), format!("cannot read the file: {e}"))
                }
            }),
            Region::Owned(v) => {
                let src = v.get(at..at + buf.len()).ok_or_else(|| {
                    DataError::new(None, "an array's data lies outside its bytes")
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Gives the pages read so far back to the kernel.
    fn release(&self) {
        if let Region::Mapped { map, .. } = self {
            // SAFETY: the map is a read-only shared mapping of a file; MADV_DONTNEED
            // only drops the process's page-table entries, and a later read faults
            // the same file bytes in again from the page cache. Nothing holds a
            // reference into the map across this call (every read copies out).
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

/// A file cut short while kiln reads it in place.
fn changed(path: &std::path::Path, len: u64, need: u64) -> DataError {
    DataError {
        io: true,
        ..DataError::new(
            Some(path),
            format!(
                "the file changed while kiln was reading it: it now has {len} bytes, {need} were read from it"
            ),
        )
        .help("another program truncated or rewrote the data file during training; replace data files atomically (write a new file, then rename it)")
    }
}

/// Where one array's elements are.
pub(super) enum Elements {
    /// In C order at `start` of the region; `crc` is the zip member's CRC-32 over
    /// `member` of the region, checked when the whole column is first walked.
    Raw {
        region: Arc<Region>,
        start: usize,
        crc: Option<(u32, Range<usize>)>,
    },
    /// Read whole (an array in Fortran order).
    Memory(ArrayD<f32>),
}

/// One array of one shard.
pub(super) struct Part {
    pub(super) shape: Vec<usize>,
    pub(super) dtype: Dtype,
    /// An integer beyond ±2²⁴ was seen when the array was read whole.
    pub(super) inexact: bool,
    pub(super) elements: Elements,
}

impl Part {
    /// Example `r` (within this part) copied from its file and converted into `out`
    /// (`row` values); `scratch` holds the raw bytes.
    fn copy_row(&self, r: usize, out: &mut [f32], scratch: &mut Vec<u8>) -> Result<(), DataError> {
        let row = self.row();
        match &self.elements {
            Elements::Raw { region, start, .. } => {
                let bpr = row * self.dtype.size;
                scratch.resize(bpr, 0);
                region.read_at(start + r * bpr, scratch)?;
                convert(self.dtype, scratch, out)
                    .map(|_| ())
                    .map_err(|m| DataError::new(None, m))
            }
            Elements::Memory(a) => {
                let src = a
                    .as_slice()
                    .ok_or_else(|| DataError::new(None, "an array is not contiguous"))?;
                out.copy_from_slice(&src[r * row..(r + 1) * row]);
                Ok(())
            }
        }
    }

    /// Gives the pages of its file read so far back to the kernel.
    fn release(&self) {
        if let Elements::Raw { region, .. } = &self.elements {
            region.release();
        }
    }

    /// Elements per example.
    fn row(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Examples `rows` (within this part) converted into `out` (exactly
    /// `rows.len() * row` values); whether an integer was beyond ±2²⁴.
    fn read(&self, rows: Range<usize>, out: &mut [f32]) -> Result<bool, String> {
        let row = self.row();
        match &self.elements {
            Elements::Raw { region, start, .. } => {
                let bpr = row * self.dtype.size;
                let from = start + rows.start * bpr;
                let to = start + rows.end * bpr;
                let raw = region
                    .bytes()
                    .get(from..to)
                    .ok_or_else(|| "the array's data lies outside its file".to_string())?;
                convert(self.dtype, raw, out)
            }
            Elements::Memory(a) => {
                let src = a.as_slice().ok_or("an array is not contiguous")?;
                out.copy_from_slice(&src[rows.start * row..rows.end * row]);
                Ok(false)
            }
        }
    }
}

/// Takes a chunk of a column: its shard, its values, the store index of its first
/// example.
pub(super) type ChunkFn<'a> = dyn FnMut(&Shard, ArrayD<f32>, usize) -> Result<(), DataError> + 'a;

/// One file's arrays, in the store's column order; its examples are
/// `start..start + rows` of the store.
pub(super) struct Shard {
    pub(super) path: PathBuf,
    pub(super) start: usize,
    pub(super) rows: usize,
    pub(super) parts: Vec<Part>,
}

/// The columns of every shard.
pub(super) struct Store {
    /// Column names: the inputs, then the targets, then the sample weights.
    pub(super) names: Vec<String>,
    pub(super) inputs: usize,
    pub(super) targets: usize,
    pub(super) weight: bool,
    pub(super) shards: Vec<Shard>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("names", &self.names)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Store {
    pub(super) fn new(
        names: Vec<String>,
        (inputs, targets, weight): (usize, usize, bool),
        shards: Vec<Shard>,
    ) -> Store {
        Store {
            names,
            inputs,
            targets,
            weight,
            shards,
        }
    }

    /// Examples in all shards.
    pub(super) fn len(&self) -> usize {
        self.shards.last().map_or(0, |s| s.start + s.rows)
    }

    /// The shape of column `c` with `n` examples.
    pub(super) fn shape(&self, c: usize, n: usize) -> Vec<usize> {
        let mut s = self.shards[0].parts[c].shape.clone();
        if let Some(first) = s.first_mut() {
            *first = n;
        }
        s
    }

    fn shard_of(&self, i: usize) -> usize {
        self.shards.partition_point(|s| s.start + s.rows <= i)
    }

    /// The examples `idx` (store indices) of column `c`, in that order.
    pub(super) fn gather(&self, c: usize, idx: &[usize]) -> Result<ArrayD<f32>, DataError> {
        let shape = self.shape(c, idx.len());
        let row: usize = shape[1..].iter().product();
        let mut out = vec![0f32; idx.len() * row];
        let mut scratch = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let shard = self.shards.get(self.shard_of(i)).ok_or_else(|| {
                DataError::new(
                    None,
                    format!("example {i} is beyond the data's {}", self.len()),
                )
            })?;
            let r = i - shard.start;
            shard.parts[c]
                .copy_row(r, &mut out[k * row..(k + 1) * row], &mut scratch)
                .map_err(|e| DataError {
                    file: e
                        .file
                        .or_else(|| Some(shard.path.clone().into_boxed_path())),
                    ..e
                })?;
        }
        ArrayD::from_shape_vec(IxDyn(&shape), out)
            .map_err(|e| DataError::new(None, format!("a batch does not fit its shape: {e}")))
    }

    /// Walks examples `range` of column `c` in chunks, each converted to f32 and handed
    /// to `f` with the index of its first example; stops at `f`'s first error.
    pub(super) fn walk(
        &self,
        c: usize,
        range: Range<usize>,
        f: &mut ChunkFn,
    ) -> Result<(), DataError> {
        for shard in &self.shards {
            let lo = range.start.max(shard.start);
            let hi = range.end.min(shard.start + shard.rows);
            if lo >= hi {
                continue;
            }
            let part = &shard.parts[c];
            if let Elements::Raw { region, .. } = &part.elements {
                region.check()?;
            }
            let row = part.row().max(1);
            let step = (CHUNK_ELEMENTS / row).max(1);
            let mut at = lo;
            while at < hi {
                let end = (at + step).min(hi);
                let mut shape = part.shape.clone();
                shape[0] = end - at;
                let mut buf = vec![0f32; (end - at) * part.row()];
                let r = at - shard.start;
                let inexact = part
                    .read(r..r + (end - at), &mut buf)
                    .map_err(|m| DataError::new(Some(&shard.path), m))?;
                part.release();
                if inexact {
                    return Err(DataError::new(
                        Some(&shard.path),
                        format!(
                            "the array `{}` holds integers beyond ±16,777,216, which kiln cannot use exactly",
                            self.names[c]
                        ),
                    )
                    .array(&self.names[c]));
                }
                let chunk = ArrayD::from_shape_vec(IxDyn(&shape), buf).map_err(|e| {
                    DataError::new(Some(&shard.path), format!("a chunk does not fit: {e}"))
                })?;
                f(shard, chunk, at)?;
                at = end;
            }
        }
        Ok(())
    }
}

/// Checks the CRC-32 of every stored zip member read in place (the zip crate checks
/// those it decompresses), a few megabytes at a time, releasing the pages it read.
pub(super) fn check_crcs(store: &Store) -> Result<(), DataError> {
    for shard in &store.shards {
        for (c, part) in shard.parts.iter().enumerate() {
            let Elements::Raw {
                region,
                crc: Some((want, member)),
                ..
            } = &part.elements
            else {
                continue;
            };
            let bytes = region.bytes().get(member.clone()).unwrap_or(&[]);
            let mut crc = flate2::Crc::new();
            for chunk in bytes.chunks(4 << 20) {
                crc.update(chunk);
                region.release();
            }
            if crc.sum() != *want {
                return Err(DataError::new(
                    Some(&shard.path),
                    format!(
                        "the array `{}` cannot be decompressed: invalid checksum",
                        store.names[c]
                    ),
                )
                .array(&store.names[c]));
            }
        }
    }
    Ok(())
}

/// Converts raw elements of `d` into f32 (`out` has one slot per element); whether an
/// integer was beyond ±2²⁴. A bool byte other than 0 or 1 is an error, as numpy's
/// reader and npyz have it.
pub(super) fn convert(d: Dtype, raw: &[u8], out: &mut [f32]) -> Result<bool, String> {
    macro_rules! each {
        ($n:expr, $f:expr) => {{
            for (o, c) in out.iter_mut().zip(raw.chunks_exact($n)) {
                let mut b = [0u8; $n];
                b.copy_from_slice(c);
                if d.big_endian {
                    b.reverse();
                }
                *o = $f(b);
            }
        }};
    }
    macro_rules! ints {
        ($t:ty, $n:expr) => {{
            let mut inexact = false;
            each!($n, |b| {
                let x = <$t>::from_le_bytes(b) as i128;
                inexact |= x.unsigned_abs() > 1 << 24;
                x as f32
            });
            return Ok(inexact);
        }};
    }
    if raw.len() != out.len() * d.size {
        return Err("the .npy data does not fill the array".into());
    }
    match (d.kind, d.size, d.signed) {
        (Kind::Bool, _, _) => {
            if let Some(b) = raw.iter().find(|&&b| b > 1) {
                return Err(format!(
                    "the .npy data cannot be read: invalid value for bool: {b}"
                ));
            }
            for (o, &b) in out.iter_mut().zip(raw) {
                *o = f32::from(b);
            }
        }
        (Kind::Float, 2, _) => each!(2, |b| npyz::half::f16::from_le_bytes(b).to_f32()),
        (Kind::Float, 4, _) => each!(4, f32::from_le_bytes),
        (Kind::Float, _, _) => each!(8, |b| f64::from_le_bytes(b) as f32),
        (Kind::Int, 1, true) => ints!(i8, 1),
        (Kind::Int, 2, true) => ints!(i16, 2),
        (Kind::Int, 4, true) => ints!(i32, 4),
        (Kind::Int, _, true) => ints!(i64, 8),
        (Kind::Int, 1, false) => ints!(u8, 1),
        (Kind::Int, 2, false) => ints!(u16, 2),
        (Kind::Int, 4, false) => ints!(u32, 4),
        (Kind::Int, _, false) => ints!(u64, 8),
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_matches_the_npy_reader() {
        let cases: &[(&str, Vec<u8>)] = &[
            (
                "<f4",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                ">f4",
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
            ),
            (
                "<f8",
                [0.1f64, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            ("<f2", vec![0x00, 0x3c, 0x00, 0xc0]),
            (
                "<i8",
                [-5i64, 1 << 40]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                ">i2",
                [-5i16, 300].iter().flat_map(|v| v.to_be_bytes()).collect(),
            ),
            ("|u1", vec![255, 7]),
            (
                "<u4",
                [70_000u32, 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            ("|b1", vec![1, 0]),
        ];
        for (descr, data) in cases {
            let file = super::super::npy::encode(descr, &[2], data);
            let want = super::super::npy::parse(&file).unwrap();
            let h = super::super::npy::header(&file).unwrap();
            let mut got = [0f32; 2];
            let inexact = convert(h.dtype, &file[h.data_start..], &mut got).unwrap();
            assert_eq!(got.as_slice(), want.data.as_slice().unwrap(), "{descr}");
            assert_eq!(inexact, want.inexact, "{descr}");
        }
        let bad_bool = Dtype {
            kind: Kind::Bool,
            size: 1,
            signed: false,
            big_endian: false,
        };
        assert!(convert(bad_bool, &[2], &mut [0.0]).is_err());
        assert!(convert(Dtype::F32, &[0; 3], &mut [0.0]).is_err());
    }
}
