//! Reading and writing 2-D f32 tensors in safetensors files (fixtures, the activation cache).

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use safetensors::{Dtype, SafeTensors};

use crate::error::{DissectError, Result};

/// Tensor `name` of a parsed file as a matrix; a 1-D tensor of length n reads as 1 × n.
pub(crate) fn read_matrix(file: &SafeTensors, name: &str, path: &Path) -> Result<Array2<f32>> {
    let view = file.tensor(name).map_err(|err| DissectError::format(path, format!("tensor `{name}`: {err}")))?;
    let shape = match *view.shape() {
        [n] => (1, n),
        [rows, cols] => (rows, cols),
        ref other => return Err(DissectError::format(path, format!("tensor `{name}`: expected 1-D or 2-D, got shape {other:?}"))),
    };
    if view.dtype() != Dtype::F32 {
        return Err(DissectError::format(path, format!("tensor `{name}`: expected F32, got {:?}", view.dtype())));
    }
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Array2::from_shape_vec(shape, values).map_err(|err| DissectError::format(path, format!("tensor `{name}`: {err}")))
}

/// The bytes of a safetensors file holding `tensors` and string `metadata`, with the content hash
/// every file of the project carries (`cvn_autograd::io::serialize`).
pub(crate) fn serialize(tensors: &[(&str, &Array2<f32>)], metadata: HashMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.iter().map(|(name, m)| (name.to_string(), m.iter().flat_map(|v| v.to_le_bytes()).collect(), m.shape().to_vec())).collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|err| DissectError::format(path, format!("tensor `{name}`: {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    cvn_autograd::io::serialize(views, metadata).map_err(|err| DissectError::format(path, err.to_string()))
}
