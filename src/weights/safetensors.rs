//! The safetensors format, through the `safetensors` crate, with kiln's checks on top:
//! an 8-byte little-endian header length N, N bytes of JSON (`{"key": {"dtype": "F32",
//! "shape": [..], "data_offsets": [begin, end]}, …, "__metadata__": {"k": "v"}}`,
//! space-padded), then the data section.
//!
//! Reading trusts nothing in the file. Kiln first checks every claim of the header and
//! says what is wrong in its own words, naming the tensor: the header length is
//! bounded by the file's size, a key appears once, the dtype is F32, every claimed size
//! is computed with checked arithmetic and must match the bytes the file really has,
//! and the tensors must tile the data section exactly (no overlap, no gap, nothing
//! after the last one). Then the crate parses the same bytes (checking the layout once
//! more) and kiln copies its tensor views into arrays, in the file's offset order.
//! Nothing is allocated because the file says so. [`read_file`] maps a regular file
//! into memory rather than copying it.
//!
//! Writing: the crate's `Metadata` lays the tensors out in the weights' own order and
//! encodes the header; kiln sorts the header's JSON (so the same weights always give the
//! same bytes: the crate keeps `__metadata__` in a `HashMap`, whose order changes from
//! run to run) and streams the data to the writer [`super::save`] gives it (a temporary
//! file, synced, then renamed).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::path::Path;

use ::safetensors::tensor::{Metadata, TensorInfo};
use ::safetensors::{Dtype, SafeTensorError, SafeTensors};
use ndarray::{ArrayD, IxDyn};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;

use super::{Weights, WeightsError};

/// The key under which safetensors keeps string metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// Largest header kiln reads or writes, as the reference implementation (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Every dtype the format defines, with the name kiln uses in messages.
const DTYPES: &[(&str, &str)] = &[
    ("BOOL", "bool"),
    ("F4", "f4"),
    ("F6_E2M3", "f6"),
    ("F6_E3M2", "f6"),
    ("U8", "u8"),
    ("I8", "i8"),
    ("F8_E5M2", "f8"),
    ("F8_E4M3", "f8"),
    ("F8_E8M0", "f8"),
    ("F8_E4M3FNUZ", "f8"),
    ("F8_E5M2FNUZ", "f8"),
    ("I16", "i16"),
    ("U16", "u16"),
    ("F16", "f16"),
    ("BF16", "bf16"),
    ("I32", "i32"),
    ("U32", "u32"),
    ("F32", "f32"),
    ("C64", "c64"),
    ("F64", "f64"),
    ("I64", "i64"),
    ("U64", "u64"),
];

/// What is wrong with a file's bytes: a sentence, and the tensor it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    /// The tensor concerned, when there is one.
    pub key: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
}

fn err<T>(key: Option<&str>, message: String) -> Result<T, FormatError> {
    Err(FormatError {
        key: key.map(str::to_string),
        message,
    })
}

/// What the crate refused (kiln's own checks come first, so this is a second line).
fn refused(e: SafeTensorError) -> FormatError {
    let key = match &e {
        SafeTensorError::InvalidOffset(k) | SafeTensorError::TensorNotFound(k) => Some(k.clone()),
        _ => None,
    };
    FormatError {
        key,
        message: format!("the safetensors reader refuses the file: {e}"),
    }
}

/// The most bytes of one file kiln reads when nothing says otherwise: 16 GiB.
pub const DEFAULT_MAX_READ_BYTES: u64 = 16 << 30;

/// The environment variable that bounds the size of a weights file kiln reads.
pub const MAX_WEIGHTS_ENV: &str = "KILN_MAX_WEIGHTS_BYTES";

/// The memory the system says is available (Linux's `MemAvailable`), if it says.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// A number of bytes as a person writes it: `1000000`, `512K`, `64MiB`, `16G`, `2GB`
/// (K, M, G, T are powers of 1024, with or without `B` or `iB`).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// The most bytes of one file kiln reads: the environment variable `var` when it is
/// set, else the smaller of [`DEFAULT_MAX_READ_BYTES`] and the memory available (what
/// is read is held in memory). A value that is not a number of bytes is an error.
pub fn max_read_bytes(var: &str) -> Result<u64, String> {
    match std::env::var(var) {
        Ok(v) => parse_bytes(&v).ok_or_else(|| {
            format!("{var}=`{v}` is not a number of bytes (write e.g. `1000000`, `512M` or `16G`)")
        }),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "{var}={} is not a number of bytes",
            v.to_string_lossy()
        )),
        Err(std::env::VarError::NotPresent) => Ok(available_memory()
            .unwrap_or(DEFAULT_MAX_READ_BYTES)
            .min(DEFAULT_MAX_READ_BYTES)),
    }
}

/// A file's bytes: mapped into memory when it is a regular file, read otherwise (a
/// pipe, an empty file).
pub enum FileBytes {
    /// A regular file, mapped read-only.
    Mapped(memmap2::Mmap),
    /// Read into memory.
    Read(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

/// Opens a weights file for [`parse`], bounded by [`MAX_WEIGHTS_ENV`] (see
/// [`max_read_bytes`]).
pub fn read_file(path: &Path) -> Result<FileBytes, WeightsError> {
    let limit = max_read_bytes(MAX_WEIGHTS_ENV).map_err(|m| WeightsError::Io {
        path: path.to_path_buf(),
        action: "read",
        error: io::Error::other(m),
    })?;
    read_file_limited(path, limit)
}

/// Opens a weights file for [`parse`]: mapped when it is a regular file, so that the
/// file's bytes are not copied once more before they become arrays; read otherwise (a
/// pipe, a device, an empty file), never more than `limit` bytes and never past what
/// the header says the file holds.
pub fn read_file_limited(path: &Path, limit: u64) -> Result<FileBytes, WeightsError> {
    let io = |error| WeightsError::Io {
        path: path.to_path_buf(),
        action: "read",
        error,
    };
    let too_big = |size: String| WeightsError::Format {
        path: path.to_path_buf(),
        key: None,
        message: format!(
            "the file is {size} bytes; kiln reads weights files of at most {limit} bytes (set {MAX_WEIGHTS_ENV} to change this)"
        ),
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_big(meta.len().to_string()));
    }
    if meta.is_file() && meta.len() > 0 {
        // SAFETY: the map is only read, and only while `parse` copies the tensors out
        // of it. Kiln never changes a weights file in place (it writes a new file and
        // renames it over the old one), so the mapped bytes stay as they were; another
        // program truncating the file meanwhile is outside what kiln can guard against,
        // as with any reader of a memory-mapped file.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            return Ok(FileBytes::Mapped(map));
        }
    }
    let mut input = file.take(limit.saturating_add(1));
    let bytes = read_stream(&mut input).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(format!("more than {limit}")));
    }
    Ok(FileBytes::Read(bytes))
}

/// Reads a safetensors stream part by part: the header length, the header, then as
/// many data bytes as the header's tensors claim, and one more (so that [`parse`] sees
/// trailing bytes). As soon as a part is wrong it stops and returns what it has, for
/// [`parse`] to say what is wrong: `/dev/zero` or `/dev/urandom` take a few bytes.
fn read_stream(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(8).read_to_end(&mut bytes)?;
    let Ok(n8) = <[u8; 8]>::try_from(&bytes[..]) else {
        return Ok(bytes);
    };
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Ok(bytes);
    }
    input.take(n).read_to_end(&mut bytes)?;
    let claimed = std::str::from_utf8(&bytes[8..])
        .ok()
        .filter(|t| t.starts_with('{'))
        .and_then(|t| claims(t).ok())
        .map(|c| c.iter().map(|c| c.end).max().unwrap_or(0));
    if let Some(data) = claimed {
        input.take(data.saturating_add(1)).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// The header's top-level entries in file order, keeping duplicates (which serde_json's
/// map would silently collapse).
struct Entries(Vec<(String, Json)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn fmt_dims(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

struct Claim {
    key: String,
    begin: u64,
    end: u64,
}

/// Reads one tensor's header entry.
fn claim(key: &str, v: &Json) -> Result<Claim, FormatError> {
    let k = Some(key);
    let Some(obj) = v.as_object() else {
        return err(
            k,
            format!("`{key}` in the header is not an object with dtype, shape and data_offsets"),
        );
    };
    let dtype = match obj.get("dtype") {
        Some(Json::String(s)) => s.as_str(),
        Some(_) => return err(k, format!("`{key}` has a dtype that is not a string")),
        None => return err(k, format!("`{key}` has no dtype in the header")),
    };
    if dtype != "F32" {
        return match DTYPES.iter().find(|(d, _)| *d == dtype) {
            Some((_, name)) => err(
                k,
                format!(
                    "`{key}` is {dtype} ({name}), but kiln weights are F32 only; convert the file to float32 (in numpy: `.astype(np.float32)`)"
                ),
            ),
            None => err(k, format!("`{key}` has an unknown dtype `{dtype}`")),
        };
    }
    let shape = match obj.get("shape") {
        Some(Json::Array(dims)) => {
            let mut shape = Vec::with_capacity(dims.len());
            for d in dims {
                match d.as_u64() {
                    Some(u) => shape.push(u),
                    None => {
                        return err(
                            k,
                            format!(
                                "`{key}` has a shape entry `{d}` that is not a non-negative integer"
                            ),
                        );
                    }
                }
            }
            shape
        }
        Some(_) => return err(k, format!("`{key}` has a shape that is not a list")),
        None => return err(k, format!("`{key}` has no shape in the header")),
    };
    let (begin, end) = match obj.get("data_offsets") {
        Some(Json::Array(o)) if o.len() == 2 => match (o[0].as_u64(), o[1].as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => {
                return err(
                    k,
                    format!("`{key}` has data_offsets that are not two non-negative integers"),
                );
            }
        },
        Some(_) => {
            return err(
                k,
                format!("`{key}` has data_offsets that are not a list [begin, end]"),
            );
        }
        None => return err(k, format!("`{key}` has no data_offsets in the header")),
    };
    if begin > end {
        return err(
            k,
            format!("`{key}` has data_offsets [{begin}, {end}] that end before they begin"),
        );
    }
    let Some(bytes) = shape.iter().try_fold(4u64, |acc, &d| acc.checked_mul(d)) else {
        return err(
            k,
            format!(
                "`{key}` has shape {} whose size overflows 64 bits",
                fmt_dims(&shape)
            ),
        );
    };
    if bytes != end - begin {
        return err(
            k,
            format!(
                "`{key}` has shape {} ({bytes} bytes of F32), but its data_offsets [{begin}, {end}] cover {} bytes",
                fmt_dims(&shape),
                end - begin
            ),
        );
    }
    Ok(Claim {
        key: key.to_string(),
        begin,
        end,
    })
}

/// The header's JSON text and the data section, after checking the header length.
fn split(bytes: &[u8]) -> Result<(&str, &[u8]), FormatError> {
    let len = bytes.len() as u64;
    if len == 0 {
        return err(
            None,
            "the file is empty (0 bytes), not a safetensors file".into(),
        );
    }
    if len < 8 {
        return err(
            None,
            format!(
                "the file is {len} bytes, too short for a safetensors file (an 8-byte header length, then the header)"
            ),
        );
    }
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return err(
            None,
            format!(
                "the header claims {n} bytes; kiln reads headers of at most {MAX_HEADER_BYTES} bytes"
            ),
        );
    }
    if n > len - 8 {
        return err(
            None,
            format!(
                "the header claims {n} bytes, but only {} bytes follow its length: the file is truncated or not safetensors",
                len - 8
            ),
        );
    }
    // n ≤ len - 8, so these fit in usize.
    let header_end = 8 + n as usize;
    let Ok(text) = std::str::from_utf8(&bytes[8..header_end]) else {
        return err(
            None,
            "the header is not UTF-8 text, so this is not a safetensors file".into(),
        );
    };
    if !text.starts_with('{') {
        return err(
            None,
            "the header is not a JSON object, so this is not a safetensors file".into(),
        );
    }
    Ok((text, &bytes[header_end..]))
}

/// Every tensor's claim, each key once, and string-only metadata.
fn claims(text: &str) -> Result<Vec<Claim>, FormatError> {
    let entries = match serde_json::from_str::<Entries>(text) {
        Ok(e) => e.0,
        Err(e) => return err(None, format!("the header is not valid JSON: {e}")),
    };
    let mut claims: Vec<Claim> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (key, v) in &entries {
        if !seen.insert(key.as_str()) {
            return err(Some(key), format!("`{key}` appears twice in the header"));
        }
        if key != METADATA_KEY {
            claims.push(claim(key, v)?);
            continue;
        }
        let Some(m) = v.as_object() else {
            return err(
                None,
                format!("`{METADATA_KEY}` in the header is not an object of strings"),
            );
        };
        if let Some((mk, _)) = m.iter().find(|(_, mv)| !mv.is_string()) {
            return err(
                None,
                format!(
                    "metadata `{mk}` is not a string (safetensors metadata maps strings to strings)"
                ),
            );
        }
    }
    Ok(claims)
}

/// The tensors must tile the data section: sorted by offset, each begins where the
/// previous one ended, the first at 0 and the last at the end.
fn check_tiling(mut claims: Vec<Claim>, data_len: u64) -> Result<(), FormatError> {
    claims.sort_by_key(|c| (c.begin, c.end));
    let mut at = 0u64;
    let mut prev: Option<&str> = None;
    for c in &claims {
        if c.end > data_len {
            return err(
                Some(&c.key),
                format!(
                    "`{}` has data_offsets [{}, {}], past the end of the data section ({data_len} bytes): the file is truncated",
                    c.key, c.begin, c.end
                ),
            );
        }
        if c.begin < at {
            let other = prev.unwrap_or("another tensor");
            return err(
                Some(&c.key),
                format!(
                    "`{}` (bytes {}..{}) overlaps `{other}` (which ends at byte {at})",
                    c.key, c.begin, c.end
                ),
            );
        }
        if c.begin > at {
            return err(
                Some(&c.key),
                format!(
                    "`{}` begins at byte {} of the data, but the previous tensor ends at {at}: safetensors data may not have gaps",
                    c.key, c.begin
                ),
            );
        }
        at = c.end;
        prev = Some(&c.key);
    }
    if at != data_len {
        return err(
            None,
            format!(
                "the data section is {data_len} bytes, but the tensors cover only {at}: the file has {} unclaimed bytes at its end",
                data_len - at
            ),
        );
    }
    Ok(())
}

/// Parses a whole safetensors file. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Weights, FormatError> {
    let (text, data) = split(bytes)?;
    check_tiling(claims(text)?, data.len() as u64)?;
    // Kiln's checks passed; the crate reads the same bytes.
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(refused)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(refused)?;
    let mut weights = Weights::new();
    if let Some(m) = metadata.metadata() {
        weights.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    for key in metadata.offset_keys() {
        let view = tensors.tensor(&key).map_err(refused)?;
        if view.dtype() != Dtype::F32 {
            return err(Some(&key), format!("`{key}` is not F32"));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let array =
            ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| FormatError {
                key: Some(key.clone()),
                message: format!("`{key}` does not fit its shape: {e}"),
            })?;
        weights.insert(key, array);
    }
    Ok(weights)
}

/// The header, laid out by the crate (tensors in the weights' order, each after the
/// last) and padded so the data starts at a multiple of 8 bytes.
fn header(w: &Weights) -> Result<String, FormatError> {
    let mut infos = Vec::with_capacity(w.len());
    let mut offset = 0usize;
    for (key, a) in w.iter() {
        if key == METADATA_KEY {
            return err(
                Some(key),
                format!("`{METADATA_KEY}` is reserved by safetensors and cannot name a tensor"),
            );
        }
        let end = a
            .len()
            .checked_mul(4)
            .and_then(|bytes| offset.checked_add(bytes))
            .ok_or_else(|| FormatError {
                key: Some(key.to_string()),
                message: "the weights are too large for one file".into(),
            })?;
        infos.push((
            key.to_string(),
            TensorInfo {
                dtype: Dtype::F32,
                shape: a.shape().to_vec(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let meta = (!w.metadata.is_empty()).then(|| {
        w.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    });
    let layout = Metadata::new(meta, infos).map_err(refused)?;
    // Through a `Value`, whose objects are sorted maps: the same bytes every time.
    let mut h = serde_json::to_value(&layout)
        .and_then(|v| serde_json::to_string(&v))
        .map_err(|e| FormatError {
            key: None,
            message: format!("cannot encode the header: {e}"),
        })?;
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    if h.len() as u64 > MAX_HEADER_BYTES {
        return err(
            None,
            format!(
                "the header would be {} bytes; safetensors readers take at most {MAX_HEADER_BYTES}",
                h.len()
            ),
        );
    }
    Ok(h)
}

/// Checks that `w` can be written (no reserved key, sizes fit) without writing anything.
pub fn validate(w: &Weights) -> Result<(), FormatError> {
    header(w).map(|_| ())
}

/// Writes `w` in safetensors format.
pub fn write(w: &Weights, out: &mut dyn Write) -> io::Result<()> {
    let h = header(w).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.message))?;
    out.write_all(&(h.len() as u64).to_le_bytes())?;
    out.write_all(h.as_bytes())?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    for (_, a) in w.iter() {
        for x in a.iter() {
            buf.extend_from_slice(&x.to_le_bytes());
            if buf.len() >= 1 << 16 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.write_all(&buf)
}

/// The bytes of `w` in safetensors format.
pub fn to_bytes(w: &Weights) -> Result<Vec<u8>, FormatError> {
    validate(w)?;
    let mut v = Vec::new();
    write(w, &mut v).map_err(|e| FormatError {
        key: None,
        message: e.to_string(),
    })?;
    Ok(v)
}

#[cfg(test)]
#[path = "safetensors_tests.rs"]
mod tests;
