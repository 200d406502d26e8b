//! The safetensors format, read and written by hand: an 8-byte little-endian header
//! length N, N bytes of JSON (`{"key": {"dtype": "F32", "shape": [..], "data_offsets":
//! [begin, end]}, …, "__metadata__": {"k": "v"}}`, space-padded), then the data section.
//!
//! Reading trusts nothing in the file: the header length is bounded by the file's size,
//! every claimed size is computed with checked arithmetic and must match the bytes the
//! file really has, and the tensors must tile the data section exactly (no overlap, no
//! gap, nothing after the last one), as the format's specification requires. Nothing is
//! allocated because the file says so: the only buffers are the file's own bytes and
//! arrays whose sizes were checked against them.

use std::fmt::Write as _;
use std::io::{self, Write};

use ndarray::{ArrayD, IxDyn};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;

use super::Weights;

/// The key under which safetensors keeps string metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// Largest header kiln reads, as the reference implementation (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Every dtype the format defines, with the name kiln uses in messages.
const DTYPES: &[(&str, &str)] = &[
    ("BOOL", "bool"),
    ("U8", "u8"),
    ("I8", "i8"),
    ("F8_E5M2", "f8"),
    ("F8_E4M3", "f8"),
    ("I16", "i16"),
    ("U16", "u16"),
    ("F16", "f16"),
    ("BF16", "bf16"),
    ("I32", "i32"),
    ("U32", "u32"),
    ("F32", "f32"),
    ("F64", "f64"),
    ("I64", "i64"),
    ("U64", "u64"),
];

/// What is wrong with a file's bytes: a sentence, and the tensor it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub key: Option<String>,
    pub message: String,
}

fn err<T>(key: Option<&str>, message: String) -> Result<T, FormatError> {
    Err(FormatError {
        key: key.map(str::to_string),
        message,
    })
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
    shape: Vec<u64>,
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
        shape,
        begin,
        end,
    })
}

/// Parses a whole safetensors file. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Weights, FormatError> {
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
    if n > len - 8 {
        return err(
            None,
            format!(
                "the header claims {n} bytes, but only {} bytes follow its length: the file is truncated or not safetensors",
                len - 8
            ),
        );
    }
    if n > MAX_HEADER_BYTES {
        return err(
            None,
            format!(
                "the header is {n} bytes; kiln reads headers of at most {MAX_HEADER_BYTES} bytes"
            ),
        );
    }
    // n ≤ len - 8, so these fit in usize.
    let header_end = 8 + n as usize;
    let header = &bytes[8..header_end];
    let data = &bytes[header_end..];
    let Ok(text) = std::str::from_utf8(header) else {
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
    let entries = match serde_json::from_str::<Entries>(text) {
        Ok(e) => e.0,
        Err(e) => return err(None, format!("the header is not valid JSON: {e}")),
    };
    let mut weights = Weights::new();
    let mut claims: Vec<Claim> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (key, v) in &entries {
        if !seen.insert(key.as_str()) {
            return err(Some(key), format!("`{key}` appears twice in the header"));
        }
        if key == METADATA_KEY {
            let Some(m) = v.as_object() else {
                return err(
                    None,
                    format!("`{METADATA_KEY}` in the header is not an object of strings"),
                );
            };
            for (mk, mv) in m {
                match mv.as_str() {
                    Some(s) => {
                        weights.metadata.insert(mk.clone(), s.to_string());
                    }
                    None => {
                        return err(
                            None,
                            format!(
                                "metadata `{mk}` is not a string (safetensors metadata maps strings to strings)"
                            ),
                        );
                    }
                }
            }
            continue;
        }
        claims.push(claim(key, v)?);
    }
    // The tensors must tile the data section: sorted by offset, each begins where the
    // previous one ended, the first at 0 and the last at the end.
    claims.sort_by_key(|c| (c.begin, c.end));
    let data_len = data.len() as u64;
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
    for c in claims {
        // Every size here was checked against the file's own bytes above.
        let raw = &data[c.begin as usize..c.end as usize];
        let values: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let shape: Option<Vec<usize>> = c.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let array = shape
            .and_then(|s| ArrayD::from_shape_vec(IxDyn(&s), values).ok())
            .ok_or_else(|| FormatError {
                key: Some(c.key.clone()),
                message: format!("`{}` has a shape kiln cannot hold in memory", c.key),
            })?;
        weights.insert(c.key, array);
    }
    Ok(weights)
}

/// The JSON header (padded so the data starts at a multiple of 8 bytes) and the data
/// section's length.
fn header(w: &Weights) -> Result<String, FormatError> {
    let mut h = String::from("{");
    let mut first = true;
    if !w.metadata.is_empty() {
        let m = serde_json::to_string(&w.metadata).map_err(|e| FormatError {
            key: None,
            message: format!("cannot encode the metadata: {e}"),
        })?;
        let _ = write!(h, "\"{METADATA_KEY}\":{m}");
        first = false;
    }
    let mut offset = 0u64;
    for (key, a) in w.iter() {
        if key == METADATA_KEY {
            return err(
                Some(key),
                format!("`{METADATA_KEY}` is reserved by safetensors and cannot name a tensor"),
            );
        }
        let bytes = (a.len() as u64).checked_mul(4).ok_or_else(|| FormatError {
            key: Some(key.to_string()),
            message: format!("`{key}` is too large"),
        })?;
        let end = offset.checked_add(bytes).ok_or_else(|| FormatError {
            key: Some(key.to_string()),
            message: "the weights are too large for one file".into(),
        })?;
        let dims: Vec<u64> = a.shape().iter().map(|&d| d as u64).collect();
        let name = serde_json::to_string(key).unwrap_or_default();
        let _ = write!(
            h,
            "{}{name}:{{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            if first { "" } else { "," },
            fmt_dims(&dims).replace(' ', "")
        );
        first = false;
        offset = end;
    }
    h.push('}');
    while (8 + h.len()) % 8 != 0 {
        h.push(' ');
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
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn error(bytes: &[u8]) -> FormatError {
        match parse(bytes) {
            Ok(_) => panic!("parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn round_trips_and_pads_to_eight() {
        let mut w = Weights::new();
        w.insert(
            "b",
            ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0, -0.0, f32::NAN]).unwrap(),
        );
        w.insert("a/x\"y", ArrayD::from_elem(IxDyn(&[2, 0]), 0.0));
        w.insert("s", ArrayD::from_elem(IxDyn(&[]), 7.5));
        w.metadata.insert("kiln.seed".into(), "3".into());
        let bytes = to_bytes(&w).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!((8 + n) % 8, 0);
        let back = parse(&bytes).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["b", "a/x\"y", "s"]);
        assert_eq!(back.metadata, w.metadata);
        for (k, a) in w.iter() {
            let b = back.get(k).unwrap();
            assert_eq!(a.shape(), b.shape());
            assert!(
                a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
        }
    }

    #[test]
    fn reads_files_written_by_others() {
        // As the reference writer lays it out: keys in any order, offsets decide.
        let h = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   "#;
        let mut data = Vec::new();
        for x in [1.0f32, 2.0, 3.0] {
            data.extend_from_slice(&x.to_le_bytes());
        }
        let w = parse(&file(h, &data)).unwrap();
        assert_eq!(w.get("v").unwrap().as_slice().unwrap(), &[1.0]);
        assert_eq!(w.get("w").unwrap().as_slice().unwrap(), &[2.0, 3.0]);
        assert_eq!(w.metadata["format"], "pt");
    }

    #[test]
    fn rejects_lying_headers() {
        let f32x = |n: usize| vec![0u8; 4 * n];
        let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
            (vec![], None, "empty"),
            (vec![1, 2, 3], None, "too short"),
            (u64::MAX.to_le_bytes().to_vec(), None, "claims"),
            (
                file("{}", &[]).into_iter().take(9).collect(),
                None,
                "claims",
            ),
            (file("not json", &[]), None, "not a JSON object"),
            (file("{\"a\": 1", &[]), None, "not valid JSON"),
            (file("[1, 2]", &[]), None, "not a JSON object"),
            (
                {
                    let mut v = 4u64.to_le_bytes().to_vec();
                    v.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
                    v
                },
                None,
                "not UTF-8",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                Some("k"),
                "F16",
            ),
            (
                file(
                    r#"{"k":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                Some("k"),
                "I32",
            ),
            (
                file(
                    r#"{"k":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                Some("k"),
                "unknown dtype",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &f32x(2),
                ),
                Some("k"),
                "cover 8 bytes",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                    &f32x(2),
                ),
                Some("k"),
                "past the end",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                    &f32x(4),
                ),
                Some("k"),
                "overflows",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                    &f32x(1),
                ),
                Some("k"),
                "non-negative",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
                    &f32x(3),
                ),
                Some("k"),
                "end before",
            ),
            (
                file(
                    r#"{"k":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
                    &f32x(1),
                ),
                Some("k"),
                "data_offsets",
            ),
            (
                file(r#"{"k":{"dtype":"F32","data_offsets":[0,4]}}"#, &f32x(1)),
                Some("k"),
                "no shape",
            ),
            (file(r#"{"k":[1]}"#, &[]), Some("k"), "not an object"),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &f32x(3),
                ),
                Some("b"),
                "overlaps `a`",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &f32x(2),
                ),
                Some("a"),
                "gaps",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    &f32x(2),
                ),
                None,
                "unclaimed",
            ),
            (
                file(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &f32x(2),
                ),
                Some("a"),
                "twice",
            ),
            (
                file(r#"{"__metadata__":{"x":1}}"#, &[]),
                None,
                "not a string",
            ),
        ];
        for (bytes, key, words) in cases {
            let e = error(&bytes);
            assert_eq!(e.key.as_deref(), key, "{e:?}");
            assert!(e.message.contains(words), "{:?} lacks {words:?}", e.message);
            if let Some(k) = key {
                assert!(e.message.contains(&format!("`{k}`")), "{:?}", e.message);
            }
        }
    }

    #[test]
    fn every_prefix_of_a_good_file_is_an_error_not_a_panic() {
        let mut w = Weights::new();
        w.insert("x", ArrayD::from_elem(IxDyn(&[2, 3]), 1.5));
        w.insert("y", ArrayD::from_elem(IxDyn(&[4]), -1.0));
        let bytes = to_bytes(&w).unwrap();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "prefix {cut}");
        }
        // Any single corrupted byte either still parses or is an error; never a panic.
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = parse(&b);
            }
        }
    }

    #[test]
    fn refuses_to_write_the_reserved_key() {
        let mut w = Weights::new();
        w.insert(METADATA_KEY, ArrayD::from_elem(IxDyn(&[1]), 0.0));
        let e = to_bytes(&w).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(METADATA_KEY));
    }
}
