//! Opening data to read in place ([`super::store`]): one file, a directory of shards
//! or a glob of them (`shards/*.npz`), each file's arrays matched to the model and
//! checked as [`super::Dataset::load`] checks them, a chunk at a time.
//!
//! `.npy` files and stored (uncompressed) `.npz` members in C order are mapped and read
//! where they lie; a compressed member is decompressed as a stream (the zip crate
//! checks its CRC) into memory when small, else into an unlinked temporary file that is
//! then mapped; an array in Fortran order is read whole. Devices, pipes and files that
//! cannot be mapped are read as [`super::read`] reads them, within the same bounds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use ndarray::{ArrayViewD, IxDyn, ShapeBuilder};

use super::check::{Have, SAMPLE_WEIGHT, Want, check_arrays, check_values, example_symbol, wants};
use super::dataset::{find_wanted, single_array_error};
use super::npy::{self, Loaded};
use super::store::{Elements, Part, Region, Shard, Store, check_crcs};
use super::{Content, DataError, LoadOptions, read_limited};
use crate::check::Graph;

/// A compressed member that expands to more than this goes to a temporary file.
const SPILL_BYTES: u64 = 16 << 20;

/// Whether a path names several files: a directory, or a glob in its last component.
pub(super) fn is_set(path: &Path) -> bool {
    path.is_dir()
        || path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(has_glob)
}

fn has_glob(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// The files a data path names, in name order: the file itself, the `.npz` and `.npy`
/// files of a directory, or those matching a glob (`*` and `?` in the last component).
pub(super) fn resolve(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (dir, pattern) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else if has_glob(name) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        (dir.unwrap_or(Path::new(".")).to_path_buf(), Some(name))
    } else {
        return Ok(vec![path.to_path_buf()]);
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| DataError {
        io: true,
        ..DataError::new(Some(&dir), format!("cannot read the folder: {e}"))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            match pattern {
                Some(g) => glob_match(g.as_bytes(), n.as_bytes()),
                None => ["npz", "npy"].contains(&ext.to_ascii_lowercase().as_str()),
            }
        })
        .filter(|p| !p.is_dir())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::new(
            Some(path),
            match pattern {
                Some(_) => "no file matches this pattern".to_string(),
                None => "this folder holds no .npz or .npy file".to_string(),
            },
        )
        .help("a set of shards is a folder of .npz (or .npy) files, or a pattern such as `shards/*.npz`"));
    }
    if let Some(csv) = files.iter().find(|p| {
        !p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["npz", "npy"].contains(&e.to_ascii_lowercase().as_str()))
    }) {
        return Err(DataError::new(
            Some(csv),
            "a set of shards holds .npz or .npy files only",
        ));
    }
    Ok(files)
}

/// `*` (any run of bytes) and `?` (one byte) against a file name.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The arrays of one file, by name (`""` for a `.npy`).
type Named = Vec<(String, Part)>;

/// Opens one file's arrays to read in place.
fn open_file(path: &Path, limit: u64) -> Result<Named, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let meta = std::fs::metadata(path).map_err(|e| DataError {
        io: true,
        ..DataError::new(Some(path), format!("cannot read the file: {e}"))
    })?;
    let mapped = (meta.is_file() && meta.len() >= 16 && meta.len() <= limit)
        .then(|| File::open(path).ok())
        .flatten()
        // SAFETY: the map is read-only and every read copies out of it after the
        // file's length is checked (`Region::check`); see the module documentation
        // of `store` and SECURITY.md for a file truncated during a read.
        .and_then(|f| unsafe { Mmap::map(&f) }.ok().map(|m| (f, m)));
    let Some((file, map)) = mapped.filter(|_| ext == "npy" || ext == "npz") else {
        return read_whole(path, limit);
    };
    let region = Arc::new(Region::Mapped {
        need: map.len() as u64,
        map,
        file,
        path: path.to_path_buf(),
    });
    let bad = |m: String| DataError::new(Some(path), m);
    if ext == "npy" {
        let len = region.bytes().len();
        let part = npy_part(&region, 0..len, None).map_err(bad)?;
        return Ok(vec![(String::new(), part)]);
    }
    npz_parts(path, region, limit)
}

/// A file kiln cannot map (a device, a pipe): read as [`super::read`] reads it.
fn read_whole(path: &Path, limit: u64) -> Result<Named, DataError> {
    let memory = |l: Loaded| Part {
        shape: l.data.shape().to_vec(),
        dtype: l.dtype,
        inexact: l.inexact,
        elements: Elements::Memory(l.data),
    };
    match read_limited(path, limit)? {
        Content::Single(l) => Ok(vec![(String::new(), memory(l))]),
        Content::Named(v) => Ok(v.into_iter().map(|(n, l)| (n, memory(l))).collect()),
        Content::Table(_) => Err(DataError::new(
            Some(path),
            "a set of shards holds .npz or .npy files only",
        )),
    }
}

/// The array of the `.npy` bytes at `span` of `region`: in place in C order, read
/// whole in Fortran order.
fn npy_part(
    region: &Arc<Region>,
    span: std::ops::Range<usize>,
    crc: Option<u32>,
) -> Result<Part, String> {
    let bytes = region
        .bytes()
        .get(span.clone())
        .ok_or("the array lies outside the file")?;
    let h = npy::header(bytes)?;
    if h.fortran && h.shape.len() > 1 {
        let l = npy::parse(bytes)?;
        return Ok(Part {
            shape: h.shape,
            dtype: h.dtype,
            inexact: l.inexact,
            elements: Elements::Memory(l.data),
        });
    }
    Ok(Part {
        shape: h.shape,
        dtype: h.dtype,
        inexact: false,
        elements: Elements::Raw {
            region: region.clone(),
            start: span.start + h.data_start,
            crc: crc.map(|c| (c, span)),
        },
    })
}

/// The members of a mapped `.npz`: stored ones in place, compressed ones decompressed.
fn npz_parts(path: &Path, region: Arc<Region>, limit: u64) -> Result<Named, DataError> {
    let bad = |m: String| DataError::new(Some(path), m);
    let mut zip = zip::ZipArchive::new(Cursor::new(region.bytes()))
        .map_err(|e| bad(format!("it is not a valid .npz (zip) archive: {e}")))?;
    let mut out: Vec<(String, Part)> = Vec::new();
    for i in 0..zip.len() {
        let m = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("member {i} of the archive cannot be read: {e}")))?;
        let name = m
            .name()
            .map_err(|e| bad(format!("member {i} of the archive has a bad name: {e}")))?
            .to_string();
        if m.is_dir() {
            continue;
        }
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        if m.size() > limit {
            return Err(bad(format!(
                "the array `{key}` claims {} bytes, more than kiln reads ({limit})",
                m.size()
            )));
        }
        let stored = m.compression() == zip::CompressionMethod::Stored
            && !m.encrypted()
            && m.size() == m.compressed_size();
        let span = m
            .data_start()
            .map(|s| s as usize..(s as usize).saturating_add(m.size() as usize));
        let crc = m.crc32();
        drop(m);
        let in_member = |e: String| bad(format!("the array `{key}`: {e}"));
        let part = match span {
            Some(span) if stored => npy_part(&region, span, Some(crc)).map_err(in_member)?,
            _ => {
                let mut member = zip
                    .by_index(i)
                    .map_err(|e| bad(format!("member {i} of the archive cannot be read: {e}")))?;
                let r = Arc::new(decompress(path, &key, &mut member, limit)?);
                let len = r.bytes().len();
                npy_part(&r, 0..len, None).map_err(in_member)?
            }
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("the archive holds two arrays named `{key}`")));
        }
        out.push((key, part));
    }
    Ok(out)
}

/// A compressed member decompressed as a stream: into memory when it expands to at
/// most [`SPILL_BYTES`], else into an unlinked temporary file, mapped. Never more than
/// `limit` bytes.
fn decompress(
    path: &Path,
    key: &str,
    member: &mut impl Read,
    limit: u64,
) -> Result<Region, DataError> {
    let bad = |m: String| DataError::new(Some(path), m);
    let broken = |e: std::io::Error| bad(format!("the array `{key}` cannot be decompressed: {e}"));
    let mut head = Vec::new();
    member
        .take(SPILL_BYTES.min(limit).saturating_add(1))
        .read_to_end(&mut head)
        .map_err(broken)?;
    if head.len() as u64 <= SPILL_BYTES.min(limit) {
        return Ok(Region::Owned(head));
    }
    if head.len() as u64 > limit {
        return Err(bad(format!(
            "the array `{key}` expands to more than {limit} bytes"
        )));
    }
    static SPILLS: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir().join(format!(
        ".kiln-spill.{}.{}",
        std::process::id(),
        SPILLS.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |e: std::io::Error| DataError {
        io: true,
        ..bad(format!(
            "cannot decompress the array `{key}` into {}: {e}",
            tmp.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io)?;
    // Unlinked at once: the file lives while kiln holds it, and no one else can open it.
    std::fs::remove_file(&tmp).map_err(io)?;
    let mut w = BufWriter::new(&file);
    std::io::Write::write_all(&mut w, &head).map_err(io)?;
    let rest = limit - head.len() as u64;
    let copied = std::io::copy(&mut member.take(rest.saturating_add(1)), &mut w).map_err(broken)?;
    w.into_inner().map_err(|e| io(e.into_error()))?;
    if copied > rest {
        return Err(bad(format!(
            "the array `{key}` expands to more than {limit} bytes"
        )));
    }
    // SAFETY: the file is unlinked and only this process holds it; it is read only.
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok(Region::Mapped {
        need: map.len() as u64,
        map,
        file,
        path: path.to_path_buf(),
    })
}

/// A view of `shape` holding zeros in no memory: shape checks read only the shape.
fn shape_only(path: &Path, shape: &[usize]) -> Result<ArrayViewD<'static, f32>, DataError> {
    static ZERO: [f32; 1] = [0.0];
    let strides = IxDyn(&vec![0; shape.len()]);
    ArrayViewD::from_shape(IxDyn(shape).strides(strides), &ZERO[..])
        .map_err(|e| DataError::new(Some(path), format!("the shape {shape:?} is unusable: {e}")))
}

/// Opens `files` as one dataset for `graph`: every file's arrays matched and checked,
/// one file after another; one symbol is one size in every file (the examples apart).
pub(super) fn open_store(
    files: &[PathBuf],
    graph: &Graph,
    opts: &LoadOptions,
    limit: u64,
) -> Result<Store, DataError> {
    let ws = wants(graph, opts.targets);
    let first_file = files.first().map(PathBuf::as_path);
    let ex = example_symbol(first_file, &ws)?;
    let mut shards = Vec::new();
    let mut first_env: Option<(&Path, HashMap<String, i64>)> = None;
    let mut start = 0;
    for path in files {
        let named = open_file(path, limit)?;
        let parts = match_parts(path, named, &ws)?;
        let mut haves: Vec<Have> = Vec::new();
        for (p, w) in parts.iter().zip(&ws) {
            haves.push(Have {
                name: &w.name,
                data: shape_only(path, &p.shape)?,
                dtype: Some(p.dtype),
                inexact: p.inexact,
            });
        }
        let mut env = check_arrays(Some(path), &ws, &haves, Some(&ex))?;
        env.remove(&ex);
        match &first_env {
            None => first_env = Some((path, env)),
            Some((p0, env0)) => agree(path, p0, env0, &env)?,
        }
        let rows = parts
            .first()
            .and_then(|p| p.shape.first().copied())
            .unwrap_or(0);
        shards.push(Shard {
            path: path.clone(),
            start,
            rows,
            parts,
        });
        start += rows;
    }
    let counts = (
        ws.iter().filter(|w| w.role == "input").count(),
        ws.iter().filter(|w| w.role == "target").count(),
        ws.iter().any(|w| w.role == SAMPLE_WEIGHT),
    );
    let names = ws.iter().map(|w| w.name.clone()).collect();
    let store = Store::new(names, counts, shards);
    check_crcs(&store)?;
    let n = store.len();
    for (c, w) in ws.iter().enumerate() {
        store.walk(c, 0..n, &mut |shard, chunk, at| {
            let arrays = [(w.name.clone(), &chunk)];
            check_values(
                Some(&shard.path),
                graph,
                std::slice::from_ref(w),
                &arrays,
                at - shard.start,
            )
        })?;
    }
    if n == 0 {
        return Err(DataError::new(
            first_file,
            "the dataset is empty: it has 0 examples",
        ));
    }
    Ok(store)
}

/// A file's arrays in the order of `ws` (a `.npy` file's one array named after the
/// one tensor wanted).
fn match_parts(
    path: &Path,
    named: Vec<(String, Part)>,
    ws: &[Want],
) -> Result<Vec<Part>, DataError> {
    let mut named = named;
    if let [(n, _)] = named.as_slice()
        && n.is_empty()
    {
        if ws.len() != 1 {
            return Err(single_array_error(Some(path), ws));
        }
        named[0].0 = ws[0].name.clone();
    }
    let shapes: Vec<(&str, &[usize])> = named
        .iter()
        .map(|(n, p)| (n.as_str(), p.shape.as_slice()))
        .collect();
    let order = find_wanted(Some(path), &shapes, ws)?;
    let mut slots: Vec<Option<Part>> = named.into_iter().map(|(_, p)| Some(p)).collect();
    Ok(order.iter().filter_map(|&k| slots[k].take()).collect())
}

/// The sizes of symbols in a later shard against the first shard's.
fn agree(
    path: &Path,
    first: &Path,
    env0: &HashMap<String, i64>,
    env: &HashMap<String, i64>,
) -> Result<(), DataError> {
    let mut syms: Vec<&String> = env.keys().collect();
    syms.sort();
    for s in syms {
        if let Some(v0) = env0.get(s)
            && env[s] != *v0
        {
            return Err(DataError::new(
                Some(path),
                format!(
                    "`{s}` is {} here but {v0} in {}: one symbol is one size in every shard",
                    env[s],
                    first.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        for (p, s, ok) in [
            ("*.npz", "a.npz", true),
            ("*.npz", "a.npy", false),
            ("part-??.npz", "part-01.npz", true),
            ("part-??.npz", "part-1.npz", false),
            ("*-*", "a-b-c", true),
            ("a*", "", false),
            ("*", "", true),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), ok, "{p} {s}");
        }
    }

    #[test]
    fn shape_only_views_hold_no_data() {
        let p = Path::new("x.npy");
        let v = shape_only(p, &[1_000_000, 784]).unwrap();
        assert_eq!(v.shape(), &[1_000_000, 784]);
        assert_eq!(v[[999_999, 783]], 0.0);
        assert_eq!(shape_only(p, &[0, 3]).unwrap().len(), 0);
    }
}
