//! Safetensors in and out: every dtype a reference checkpoint may hold is read as f32, and files are
//! written atomically (temporary file + rename) so an interrupted save never destroys the last one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn file_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::File { file: path.display().to_string(), detail: detail.into(), source: None }
}

/// An error about `path` that keeps its cause (an I/O error, a parse error) as `source()`.
fn file_err_from(path: &Path, detail: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::File { file: path.display().to_string(), detail: detail.into(), source: Some(Box::new(source)) }
}

/// The tensors (as f32) and string metadata of a safetensors file.
#[derive(Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads a file; f16, bf16, f64 and integer tensors are converted to f32.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| file_err_from(path, format!("cannot read: {e}"), e))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::File { detail, source, .. } => Error::File { file: path.display().to_string(), detail, source },
            other => other,
        })
    }

    /// Parses safetensors bytes (errors name the tensor; the caller adds the file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let not_safetensors =
            |e: safetensors::SafeTensorError| file_err_from(Path::new("<bytes>"), format!("not a safetensors file: {e}"), e);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
        let st = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = to_f32(&view)
                .ok_or_else(|| file_err(Path::new("<bytes>"), format!("tensor `{name}` has unsupported dtype {:?}", view.dtype())))?;
            tensors.insert(name.to_string(), Tensor::from_vec(data, view.shape())?);
        }
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(Self { tensors, metadata })
    }

    /// A tensor by name, or an error naming the file's tensor and what was expected.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Invalid { op: "safetensors", detail: format!("tensor `{name}` is missing") })
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
        Dtype::BOOL => b.iter().map(|&v| (v != 0) as u8 as f32).collect(),
        _ => return None,
    })
}

/// One tensor to write: float data (any device; written as f32), or integers (e.g. BatchNorm's
/// `num_batches_tracked`, which torchvision stores as int64).
#[derive(Debug, Clone)]
pub enum Stored {
    F32(Tensor),
    I64 { shape: Vec<usize>, values: Vec<i64> },
}

impl Stored {
    fn bytes_and_view(&self) -> Result<RawTensor> {
        Ok(match self {
            Stored::F32(t) => (Dtype::F32, t.shape().to_vec(), bytemuck::cast_slice(&t.to_vec()?).to_vec()),
            Stored::I64 { shape, values } => (Dtype::I64, shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        })
    }
}

/// A tensor as safetensors stores it: dtype, shape, little-endian bytes.
type RawTensor = (Dtype, Vec<usize>, Vec<u8>);

/// Writes tensors and metadata to `path` atomically.
pub fn save(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &HashMap<String, String>) -> Result<()> {
    let owned: Vec<(String, RawTensor)> = tensors.iter().map(|(k, v)| Ok((k.clone(), v.bytes_and_view()?))).collect::<Result<_>>()?;
    let views = owned
        .iter()
        .map(|(k, (dt, shape, bytes))| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| file_err_from(path, format!("tensor `{k}`: {e}"), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let bytes = safetensors::tensor::serialize(views, meta).map_err(|e| file_err_from(path, format!("cannot serialise: {e}"), e))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_err_from(dir, format!("cannot create directory: {e}"), e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err_from(path, format!("cannot write: {e}"), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata_and_integers() {
        let dir = std::env::temp_dir().join(format!("cvn-io-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert("w".to_string(), Stored::F32(Tensor::from_vec(vec![1.0, -2.5, 3.0, 4.0], &[2, 2]).unwrap()));
        tensors.insert("n".to_string(), Stored::I64 { shape: vec![], values: vec![7] });
        let meta = HashMap::from([("config".to_string(), "{\"a\":1}".to_string())]);
        save(&path, &tensors, &meta).unwrap();
        let f = TensorFile::load(&path).unwrap();
        assert_eq!(f.get("w").unwrap().to_vec().unwrap(), vec![1.0, -2.5, 3.0, 4.0]);
        assert_eq!(f.get("w").unwrap().shape(), &[2, 2]);
        assert_eq!(f.get("n").unwrap().to_vec().unwrap(), vec![7.0]);
        assert_eq!(f.metadata["config"], "{\"a\":1}");
        assert!(f.get("missing").unwrap_err().to_string().contains("`missing`"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("cvn-io-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.safetensors");
        std::fs::write(&path, b"definitely not safetensors").unwrap();
        let err = TensorFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
