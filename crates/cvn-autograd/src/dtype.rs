//! Element types of tensor storage.

use std::fmt;

/// What a tensor's elements are.
///
/// Arithmetic is always f32: `BF16` is a storage format (half the bytes, f32 math in every kernel,
/// results rounded to nearest even on store), as in PyTorch's bf16 autocast. The integer types are
/// for values no gradient flows through: `U8` LWTA winner indices, `U32` class labels and indices,
/// `U64` device-side counters (active units, correct predictions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    U8,
    U32,
    U64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::BF16 => 2,
            DType::U8 => 1,
            DType::U64 => 8,
        }
    }

    /// Whether tensors of this type take part in arithmetic and gradients.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::BF16)
    }

    /// The lower-case name used in errors, kernel names and CLI flags (`f32`, `bf16`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::U64 => "u64",
        }
    }

    /// Parses `f32` or `bf16` (the float types a user chooses).
    pub fn parse_float(name: &str) -> Option<Self> {
        match name {
            "f32" | "fp32" | "float32" => Some(DType::F32),
            "bf16" | "bfloat16" => Some(DType::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
