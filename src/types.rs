//! Shared types at the bottom of the crate: element types, tensor types, window
//! arithmetic and number formatting. Everything may import this module; it imports only
//! `dim`.

use crate::dim::{Dim, Overflow, fmt_shape};

/// Element types of tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }
    pub fn is_int(self) -> bool {
        !matches!(self, DType::F32)
    }
    /// Parses kiln's names and the NumPy/Keras spellings.
    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" | "float32" | "float" => Some(DType::F32),
            "i32" | "int32" => Some(DType::I32),
            "i64" | "int64" | "int" => Some(DType::I64),
            _ => None,
        }
    }
}

/// The type of a tensor flowing between layers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub shape: Vec<Dim>,
    pub dtype: DType,
}

impl TensorType {
    pub fn new(shape: Vec<Dim>, dtype: DType) -> Self {
        TensorType { shape, dtype }
    }
    pub fn f32(shape: Vec<Dim>) -> Self {
        TensorType::new(shape, DType::F32)
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn last(&self) -> &Dim {
        &self.shape[self.shape.len() - 1]
    }
    /// `[batch, 8, 8, 1]`, with ` i32` appended for integer tensors.
    pub fn describe(&self) -> String {
        if self.dtype == DType::F32 {
            fmt_shape(&self.shape)
        } else {
            format!("{} {}", fmt_shape(&self.shape), self.dtype.name())
        }
    }
}

/// Output length of a window sliding over `len` (Keras's `compute_conv_output_shape`).
pub fn window_out(
    len: &Dim,
    k: i64,
    stride: i64,
    dilation: i64,
    padding: &str,
) -> Result<Dim, Overflow> {
    match padding {
        // `same` and `causal` pad so that out = ceil(len / stride).
        "same" | "causal" => len.ceil_div(stride),
        _ => {
            let eff = dilation
                .checked_mul(k - 1)
                .and_then(|x| x.checked_add(1))
                .ok_or(Overflow)?;
            len.add_const(-eff)?.floor_div(stride)?.add_const(1)
        }
    }
}

/// Writes `n` with thousands separators, as Keras's summary does.
pub fn group_digits(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A fix the library names in its own terms (its messages never mention a command-line
/// flag), for a front end to phrase in its terms: the CLI prints the flag that does it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Give the model input of this name.
    GiveInput(String),
    /// Name the column of a table that holds the target (the closest column, if any).
    NameTargetColumn(Option<String>),
    /// The file is a weights file: start training from it rather than resuming.
    InitFromWeights,
    /// Raise the memory budget.
    RaiseMemoryLimit,
}
