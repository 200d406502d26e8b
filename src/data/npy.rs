//! The `.npy` format (numpy's `np.save`), read without trusting the file and written
//! as little-endian f32.
//!
//! Read: format versions 1, 2 and 3; dtypes bool, int8–64, uint8–64, float16/32/64 in
//! either byte order; C or Fortran order. Every claim of the header (its length, the
//! shape, the element count against the bytes present) is checked; a corrupt file is
//! an error, never a panic or a huge allocation.

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

/// What kind of numbers an array held in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float,
    Int,
    Bool,
}

/// An element type of a `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    pub kind: Kind,
    /// Bytes per element.
    pub size: usize,
    pub signed: bool,
    pub big_endian: bool,
}

impl Dtype {
    /// numpy's name: `float32`, `int64`, `uint8`, `bool`.
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Bool => "bool".into(),
            Kind::Float => format!("float{}", self.size * 8),
            Kind::Int if self.signed => format!("int{}", self.size * 8),
            Kind::Int => format!("uint{}", self.size * 8),
        }
    }
    /// Short name as kiln writes dtypes: `f32`, `i64`, `u8`, `bool`.
    pub fn short(&self) -> String {
        match self.kind {
            Kind::Bool => "bool".into(),
            Kind::Float => format!("f{}", self.size * 8),
            Kind::Int if self.signed => format!("i{}", self.size * 8),
            Kind::Int => format!("u{}", self.size * 8),
        }
    }
}

/// An array read from a file: its values as f32, what its file held, and whether an
/// integer did not fit exactly in f32 (beyond ±2²⁴).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub data: ArrayD<f32>,
    pub dtype: Dtype,
    pub inexact: bool,
}

/// The largest header kiln reads (numpy's own headers are under 1 KiB).
const MAX_HEADER: usize = 1 << 20;

fn parse_descr(d: &str) -> Result<Dtype, String> {
    let bytes = d.as_bytes();
    if bytes.len() < 2 {
        return Err(format!("unknown dtype `{d}`"));
    }
    let (order, rest) = match bytes[0] {
        b'<' | b'>' | b'|' | b'=' => (bytes[0], &d[1..]),
        _ => (b'=', d),
    };
    let big_endian = order == b'>';
    let (code, size) = rest.split_at(1);
    let (kind, signed) = match code {
        "f" => (Kind::Float, true),
        "i" => (Kind::Int, true),
        "u" => (Kind::Int, false),
        "b" => (Kind::Bool, false),
        "O" => {
            return Err(
                "it holds Python objects (dtype `object`), which kiln does not read: save a numeric array"
                    .into(),
            );
        }
        "U" | "S" => {
            return Err(format!(
                "it holds strings (dtype `{d}`), not numbers: save a numeric array"
            ));
        }
        _ => return Err(format!("unsupported dtype `{d}`")),
    };
    let size: usize = size.parse().map_err(|_| format!("unknown dtype `{d}`"))?;
    let ok = match kind {
        Kind::Float => matches!(size, 2 | 4 | 8),
        Kind::Int => matches!(size, 1 | 2 | 4 | 8),
        Kind::Bool => size == 1,
    };
    if !ok {
        return Err(format!("unsupported dtype `{d}`"));
    }
    Ok(Dtype {
        kind,
        size,
        signed,
        big_endian,
    })
}

/// The value of `'key':` in a header dict, as the raw text up to the next top-level
/// comma or closing brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let at = header.find(&pat1).or_else(|| header.find(&pat2))?;
    let rest = &header[at + pat1.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            (None, ',' | '}') if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("the shape `{s}` is not a tuple"))?;
    let mut shape = Vec::new();
    for part in inner.split(',') {
        let p = part.trim().trim_end_matches('L');
        if p.is_empty() {
            continue;
        }
        shape.push(
            p.parse::<usize>()
                .map_err(|_| format!("the shape `{s}` is not a tuple of sizes"))?,
        );
    }
    if shape.len() > 32 {
        return Err(format!("the shape has {} axes", shape.len()));
    }
    Ok(shape)
}

/// Parses the bytes of a `.npy` file. Errors say what is wrong, in words.
pub fn parse(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("it is not a .npy file (the numpy magic bytes are missing)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("the .npy header is cut short".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if header_len > MAX_HEADER || start + header_len > bytes.len() {
        return Err("the .npy header is cut short or corrupt".into());
    }
    let header = std::str::from_utf8(&bytes[start..start + header_len])
        .map_err(|_| "the .npy header is not text".to_string())?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no `descr`")?;
    if descr.starts_with('[') {
        return Err("it holds a structured array (named fields), not plain numbers".into());
    }
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = parse_descr(descr)?;
    let fortran = match dict_value(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        _ => return Err("the .npy header has no valid `fortran_order`".into()),
    };
    let shape = parse_shape(dict_value(header, "shape").ok_or("the .npy header has no `shape`")?)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the shape's element count overflows")?;
    let data = &bytes[start + header_len..];
    let need = count
        .checked_mul(dtype.size)
        .ok_or("the shape's byte count overflows")?;
    if data.len() < need {
        return Err(format!(
            "the file is cut short: shape {:?} of {} needs {need} bytes of data, it has {}",
            shape,
            dtype.name(),
            data.len()
        ));
    }
    let mut inexact = false;
    let mut values = Vec::new();
    values
        .try_reserve_exact(count)
        .map_err(|_| "the array does not fit in memory".to_string())?;
    for chunk in data[..need].chunks_exact(dtype.size) {
        let mut b = [0u8; 8];
        b[..dtype.size].copy_from_slice(chunk);
        if dtype.big_endian {
            b[..dtype.size].reverse();
        }
        let v: f32 = match (dtype.kind, dtype.size, dtype.signed) {
            (Kind::Bool, _, _) => {
                if b[0] > 1 {
                    return Err(format!("a bool element has the byte value {}", b[0]));
                }
                f32::from(b[0])
            }
            (Kind::Float, 2, _) => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            (Kind::Float, 4, _) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            (Kind::Float, _, _) => f64::from_le_bytes(b) as f32,
            (Kind::Int, size, signed) => {
                let raw = u64::from_le_bytes(b);
                let shift = 64 - 8 * size as u32;
                let x: i128 = if signed {
                    i128::from(((raw << shift) as i64) >> shift)
                } else {
                    i128::from(raw)
                };
                if x.unsigned_abs() > 1 << 24 {
                    inexact = true;
                }
                x as f32
            }
        };
        values.push(v);
    }
    let arr = if fortran {
        ArrayD::from_shape_vec(IxDyn(&shape).f(), values)
            .map(|a| a.as_standard_layout().into_owned())
    } else {
        ArrayD::from_shape_vec(IxDyn(&shape), values)
    }
    .map_err(|e| format!("the data does not fit the shape: {e}"))?;
    Ok(Loaded {
        data: arr,
        dtype,
        inexact,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        0x1f if frac == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(i32::from(e) - 15),
    }
}

/// Serializes an f32 array as a version-1 `.npy` file (`<f4`, C order).
pub fn to_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    let data: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", a.shape(), &data)
}

/// A version-1 `.npy` file of dtype `descr` (numpy's notation, e.g. `<i4`), C order,
/// around raw little-endian element bytes.
pub fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary; end with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn round_trips_f32() {
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f32 - 1.5);
        let b = to_bytes(&a);
        assert_eq!((b.len() - 4 * 6) % 64, 0);
        let l = parse(&b).unwrap();
        assert_eq!(l.data, a);
        assert_eq!(l.dtype.name(), "float32");
        let s = parse(&to_bytes(&ArrayD::from_elem(IxDyn(&[4]), 1.0))).unwrap();
        assert_eq!(s.data.shape(), &[4]);
    }

    #[test]
    fn reads_ints_big_endian_and_fortran() {
        let data: Vec<u8> = [1i64, -2, 3, 4, 5, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let l = parse(&npy("<i8", "(2, 3)", true, &data)).unwrap();
        // Fortran order: column-major.
        assert_eq!(l.data[[0, 1]], 3.0);
        assert_eq!(l.data[[1, 0]], -2.0);
        assert_eq!(l.dtype.kind, Kind::Int);
        let be: Vec<u8> = [7i32, -8].iter().flat_map(|v| v.to_be_bytes()).collect();
        let l = parse(&npy(">i4", "(2,)", false, &be)).unwrap();
        assert_eq!(l.data.as_slice().unwrap(), &[7.0, -8.0]);
        let l = parse(&npy("|u1", "(2,)", false, &[255, 0])).unwrap();
        assert_eq!(l.data.as_slice().unwrap(), &[255.0, 0.0]);
        let h = parse(&npy("<f2", "(2,)", false, &[0x00, 0x3c, 0x00, 0xc0])).unwrap();
        assert_eq!(h.data.as_slice().unwrap(), &[1.0, -2.0]);
        let big: Vec<u8> = (1i64 << 40).to_le_bytes().to_vec();
        assert!(parse(&npy("<i8", "(1,)", false, &big)).unwrap().inexact);
    }

    #[test]
    fn corrupt_files_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse(&npy("<f4", "(2, 3)", false, &[0; 8])).is_err());
        assert!(parse(&npy("<f4", "(99999999999, 99999999999)", false, &[])).is_err());
        assert!(parse(&npy("|O", "(1,)", false, &[0; 8])).is_err());
        assert!(parse(&npy("<c8", "(1,)", false, &[0; 8])).is_err());
        assert!(parse(&npy("<f4", "[1, 2]", false, &[0; 8])).is_err());
        // Every truncation of a valid file is an error or a valid array, never a panic.
        let good = npy("<f4", "(2,)", false, &[0; 8]);
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
    }
}
