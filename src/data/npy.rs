//! The `.npy` format (numpy's `np.save`), read through the `npyz` crate without
//! trusting the file, and written as little-endian f32.
//!
//! Read: format versions 1, 2 and 3; dtypes bool, int8–64, uint8–64, float16/32/64 in
//! either byte order; C or Fortran order. npyz parses the header (a Python literal) and
//! the elements; kiln checks every claim first (the header's length, the dtype, the
//! shape's element count against the bytes present), so a corrupt file is an error,
//! never a panic or a huge allocation. Writing stays a few lines here: one fixed header
//! padded to 64 bytes around the raw f32 data.

use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use npyz::{DType, Endianness, NpyFile, Order, TypeChar};

/// What kind of numbers an array held in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Floating point.
    Float,
    /// Integers.
    Int,
    /// Booleans.
    Bool,
}

/// An element type of a `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    /// Floats, integers or booleans.
    pub kind: Kind,
    /// Bytes per element.
    pub size: usize,
    /// Whether integers are signed.
    pub signed: bool,
    /// Whether bytes are most significant first.
    pub big_endian: bool,
}

impl Dtype {
    /// numpy's `float32`, little-endian.
    pub const F32: Dtype = Dtype {
        kind: Kind::Float,
        size: 4,
        signed: true,
        big_endian: false,
    };

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
    /// The values, as f32.
    pub data: ArrayD<f32>,
    /// The element type in the file.
    pub dtype: Dtype,
    /// Whether an integer did not fit exactly in f32.
    pub inexact: bool,
}

/// The largest header kiln reads (numpy's own headers are under 1 KiB).
const MAX_HEADER: usize = 1 << 20;

/// Kiln's name for a file's element type, or why kiln cannot use it.
fn dtype_of(dtype: &DType) -> Result<Dtype, String> {
    let ts = match dtype {
        DType::Plain(ts) => ts,
        DType::Record(_) => {
            return Err("it holds a structured array (named fields), not plain numbers".into());
        }
        DType::Array(..) => {
            return Err("it holds an array of sub-arrays, not plain numbers".into());
        }
    };
    let size = ts.size_field();
    let (kind, signed, ok) = match ts.type_char() {
        TypeChar::Float => (Kind::Float, true, matches!(size, 2 | 4 | 8)),
        TypeChar::Int => (Kind::Int, true, matches!(size, 1 | 2 | 4 | 8)),
        TypeChar::Uint => (Kind::Int, false, matches!(size, 1 | 2 | 4 | 8)),
        TypeChar::Bool => (Kind::Bool, false, size == 1),
        TypeChar::Object => {
            return Err(
                "it holds Python objects (dtype `object`), which kiln does not read: save a numeric array"
                    .into(),
            );
        }
        TypeChar::ByteStr | TypeChar::UnicodeStr => {
            return Err(format!(
                "it holds strings (dtype `{ts}`), not numbers: save a numeric array"
            ));
        }
        _ => (Kind::Float, true, false),
    };
    if !ok {
        return Err(format!("unsupported dtype `{ts}`"));
    }
    Ok(Dtype {
        kind,
        size: size as usize,
        signed,
        big_endian: ts.endianness() == Endianness::Big,
    })
}

/// The length of the header and where it starts, checked against the bytes present
/// before npyz is asked to read it (npyz allocates what the length field claims).
fn header_span(bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("it is not a .npy file (the numpy magic bytes are missing)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        2 | 3 => return Err("the .npy header is cut short".into()),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if header_len > MAX_HEADER || start + header_len > bytes.len() {
        return Err("the .npy header is cut short or corrupt".into());
    }
    Ok(start + header_len)
}

/// Whether the header's `shape` is a tuple, as numpy requires (`np.load` refuses a
/// list; npyz would accept one).
fn shape_is_tuple(header: &[u8]) -> bool {
    let text = String::from_utf8_lossy(header);
    ["'shape'", "\"shape\""].iter().any(|key| {
        text.split_once(key).is_some_and(|(_, rest)| {
            rest.trim_start()
                .strip_prefix(':')
                .is_some_and(|v| v.trim_start().starts_with('('))
        })
    })
}

/// Reads the elements as `T`, each converted to f32.
fn read_as<T: npyz::Deserialize>(
    npy: NpyFile<&[u8]>,
    f: impl FnMut(T) -> f32,
) -> Result<Vec<f32>, String> {
    let v = npy
        .into_vec::<T>()
        .map_err(|e| format!("the .npy data cannot be read: {e}"))?;
    Ok(v.into_iter().map(f).collect())
}

/// Reads integers, noting whether any lies beyond ±2²⁴ (not exact in f32).
fn read_ints<T: npyz::Deserialize + Copy + Into<i128>>(
    npy: NpyFile<&[u8]>,
    inexact: &mut bool,
) -> Result<Vec<f32>, String> {
    read_as(npy, |x: T| {
        let x: i128 = x.into();
        if x.unsigned_abs() > 1 << 24 {
            *inexact = true;
        }
        x as f32
    })
}

/// What a `.npy` header says, every claim checked against the bytes present.
#[derive(Clone, Debug)]
pub struct Header {
    /// The element type.
    pub dtype: Dtype,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Fortran (column-major) order.
    pub fortran: bool,
    /// Where the elements start.
    pub data_start: usize,
    /// The bytes the elements take (present in full).
    pub data_len: usize,
}

/// Reads and checks a `.npy` header: its length, the dtype, the shape as a tuple, and
/// the shape's byte count against the bytes present. Nothing is allocated by the
/// file's claims.
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    header_and_file(bytes).map(|(h, _)| h)
}

fn header_and_file(bytes: &[u8]) -> Result<(Header, NpyFile<&[u8]>), String> {
    let data_start = header_span(bytes)?;
    let npy = NpyFile::new(bytes).map_err(|e| format!("the .npy header cannot be read: {e}"))?;
    let dtype = dtype_of(&npy.dtype())?;
    if !shape_is_tuple(&bytes[..data_start]) {
        return Err("the .npy header's shape is not a tuple of sizes".into());
    }
    if npy.shape().len() > 32 {
        return Err(format!("the shape has {} axes", npy.shape().len()));
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| "the shape's element count overflows".to_string())?;
    let need = shape
        .iter()
        .try_fold(dtype.size, |a, &d| a.checked_mul(d))
        .ok_or("the shape's byte count overflows")?;
    let present = bytes.len() - data_start;
    if present < need {
        return Err(format!(
            "the file is cut short: shape {:?} of {} needs {need} bytes of data, it has {present}",
            shape,
            dtype.name(),
        ));
    }
    let fortran = npy.order() == Order::Fortran;
    let h = Header {
        dtype,
        shape,
        fortran,
        data_start,
        data_len: need,
    };
    Ok((h, npy))
}

/// Parses the bytes of a `.npy` file through npyz. Kiln checks first what npyz would
/// trust (the header's length, the dtype, the shape against the bytes present), so a
/// corrupt file is an error, never a panic or a huge allocation.
pub fn parse(bytes: &[u8]) -> Result<Loaded, String> {
    let (h, npy) = header_and_file(bytes)?;
    let (dtype, shape, fortran) = (h.dtype, h.shape, h.fortran);
    let mut inexact = false;
    let values = match (dtype.kind, dtype.size, dtype.signed) {
        (Kind::Bool, _, _) => read_as(npy, |b: bool| f32::from(u8::from(b)))?,
        (Kind::Float, 2, _) => read_as(npy, |x: npyz::half::f16| x.to_f32())?,
        (Kind::Float, 4, _) => read_as(npy, |x: f32| x)?,
        (Kind::Float, _, _) => read_as(npy, |x: f64| x as f32)?,
        (Kind::Int, 1, true) => read_ints::<i8>(npy, &mut inexact)?,
        (Kind::Int, 2, true) => read_ints::<i16>(npy, &mut inexact)?,
        (Kind::Int, 4, true) => read_ints::<i32>(npy, &mut inexact)?,
        (Kind::Int, _, true) => read_ints::<i64>(npy, &mut inexact)?,
        (Kind::Int, 1, false) => read_ints::<u8>(npy, &mut inexact)?,
        (Kind::Int, 2, false) => read_ints::<u16>(npy, &mut inexact)?,
        (Kind::Int, 4, false) => read_ints::<u32>(npy, &mut inexact)?,
        (Kind::Int, _, false) => read_ints::<u64>(npy, &mut inexact)?,
    };
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

    #[test]
    fn claims_larger_than_the_file_are_refused_before_any_allocation() {
        // 64 bytes claiming 2^38 f32 values (1 TiB): ndarray-npy 0.10 allocates that
        // and aborts the process; kiln compares it with the bytes present.
        let e = parse(&npy("<f4", "(274877906944,)", false, &[0; 8])).unwrap_err();
        assert!(e.starts_with("the file is cut short"), "{e}");
        // A version-2 header whose length field claims 4 GiB (npyz would allocate it).
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        v2.extend_from_slice(b"{}");
        assert!(parse(&v2).unwrap_err().contains("cut short or corrupt"));
        // A version-3 header and big-endian float16 values read as numpy writes them.
        let h = "{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }\n";
        let mut v3 = b"\x93NUMPY\x03\x00".to_vec();
        v3.extend_from_slice(&(h.len() as u32).to_le_bytes());
        v3.extend_from_slice(h.as_bytes());
        v3.extend_from_slice(&[0x3c, 0x00, 0xc0, 0x00]);
        assert_eq!(parse(&v3).unwrap().data.as_slice().unwrap(), &[1.0, -2.0]);
    }
}
