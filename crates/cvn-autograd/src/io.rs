//! Safetensors in and out: every dtype a reference checkpoint may hold is read as f32; files are
//! written atomically and durably (temporary file + fsync + rename + directory fsync) so an
//! interrupted save never destroys the last one, and carry a content hash checked on reading.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The longest side of any image decoded from a file (training and probe sets, `clip --image`):
/// an image header may announce any size, so decoders are held to these before they allocate.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one image's decoding may take (`image::Limits::max_alloc`).
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

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
    /// The metadata strings, without [`CONTENT_HASH_KEY`].
    pub metadata: HashMap<String, String>,
    /// Whether the content matched a stored hash (a mismatch fails the read).
    pub integrity: Integrity,
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

    /// Parses safetensors bytes, checking their content hash ([`verify`]); errors name the tensor,
    /// the caller adds the file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let not_safetensors =
            |e: safetensors::SafeTensorError| file_err_from(Path::new("<bytes>"), format!("not a safetensors file: {e}"), e);
        let integrity = verify(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
        let st = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = to_f32(&view)
                .ok_or_else(|| file_err(Path::new("<bytes>"), format!("tensor `{name}` has unsupported dtype {:?}", view.dtype())))?;
            tensors.insert(name.to_string(), Tensor::from_vec(data, view.shape())?);
        }
        let mut metadata = header.metadata().clone().unwrap_or_default();
        metadata.remove(CONTENT_HASH_KEY);
        Ok(Self { tensors, metadata, integrity })
    }

    /// Checks that every tensor is finite ([`require_finite`]).
    pub fn require_finite(&self) -> Result<()> {
        self.tensors.iter().try_for_each(|(name, t)| require_finite(name, t))
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

/// Writes tensors and metadata to `path` atomically, with their content hash ([`serialize`]).
pub fn save(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &HashMap<String, String>) -> Result<()> {
    write_atomically(path, &encode(path, tensors, metadata)?)
}

/// The safetensors bytes [`save`] writes (with the content hash), for writing several files as one
/// step ([`write_all_atomically`]); errors name `path`.
pub fn encode(path: &Path, tensors: &BTreeMap<String, Stored>, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let owned: Vec<(String, RawTensor)> = tensors.iter().map(|(k, v)| Ok((k.clone(), v.bytes_and_view()?))).collect::<Result<_>>()?;
    let views = owned
        .iter()
        .map(|(k, (dt, shape, bytes))| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| file_err_from(path, format!("tensor `{k}`: {e}"), e))
        })
        .collect::<Result<Vec<_>>>()?;
    serialize(views, metadata.clone()).map_err(|e| match e {
        Error::File { detail, source, .. } => Error::File { file: path.display().to_string(), detail, source },
        other => other,
    })
}

/// Metadata key of a file's content hash: hex sha256 of its tensors (name, dtype, shape, bytes, in
/// name order) and its other metadata (key and value, in key order). Every safetensors file the
/// project writes goes through [`serialize`], which adds it; every read through [`verify`].
pub const CONTENT_HASH_KEY: &str = "content_sha256";

/// Whether a file's content matched its stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Integrity {
    /// The stored hash matches the content.
    Verified,
    /// The file has no hash (written elsewhere, e.g. by PyTorch, or by an older version): it loads
    /// unverified.
    #[default]
    Unhashed,
}

/// The content hash of tensors (`(name, dtype, shape, bytes)`) and metadata (without
/// [`CONTENT_HASH_KEY`]); see [`CONTENT_HASH_KEY`].
fn content_sha256<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    // Every variable-length field is preceded by its length, so no two contents hash alike by
    // shifting bytes between fields.
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (name, dtype, shape, data) in tensors {
        field(name.as_bytes());
        field(format!("{dtype:?}").as_bytes());
        field(&shape.iter().flat_map(|&d| (d as u64).to_le_bytes()).collect::<Vec<u8>>());
        field(data);
    }
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != CONTENT_HASH_KEY).collect();
    keys.sort();
    for key in keys {
        field(key.as_bytes());
        field(metadata[key].as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Safetensors bytes of `tensors` and `metadata`, with the content hash added to the metadata.
pub fn serialize(tensors: Vec<(String, TensorView<'_>)>, mut metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    metadata.remove(CONTENT_HASH_KEY);
    let hash = content_sha256(tensors.iter().map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())), &metadata);
    metadata.insert(CONTENT_HASH_KEY.to_string(), hash);
    let mut bytes = safetensors::tensor::serialize(tensors, Some(metadata))
        .map_err(|e| file_err_from(Path::new("<bytes>"), format!("cannot serialise: {e}"), e))?;
    sort_header(&mut bytes);
    Ok(bytes)
}

/// Rewrites a safetensors header with its keys sorted (the metadata comes from a `HashMap`, whose
/// order differs between runs), so equal content always gives equal bytes. Same keys and values,
/// so the same length: the padding to 8 bytes is kept.
fn sort_header(bytes: &mut [u8]) {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return };
    let Some(header) = bytes.get(8..8 + len) else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else { return };
    let Ok(sorted) = serde_json::to_vec(&value) else { return };
    if sorted.len() <= len {
        bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
        bytes[8 + sorted.len()..8 + len].fill(b' ');
    }
}

/// Checks safetensors bytes against their stored content hash: [`Integrity::Verified`], or
/// [`Integrity::Unhashed`] for a file without one; a mismatch is an error (the caller names the
/// file).
pub fn verify(bytes: &[u8]) -> Result<Integrity> {
    let not_safetensors = |e: safetensors::SafeTensorError| file_err_from(Path::new("<bytes>"), format!("not a safetensors file: {e}"), e);
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let Some(stored) = metadata.get(CONTENT_HASH_KEY) else { return Ok(Integrity::Unhashed) };
    let st = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
    let views = st.tensors();
    let computed = content_sha256(views.iter().map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())), &metadata);
    if *stored != computed {
        return Err(file_err(
            Path::new("<bytes>"),
            format!("content hash mismatch: the file is corrupt or was altered (stored {CONTENT_HASH_KEY} {stored}, content hashes to {computed})"),
        ));
    }
    Ok(Integrity::Verified)
}

/// Checks that every value of `t` is finite; the error names the tensor and the first bad value.
pub fn require_finite(name: &str, t: &Tensor) -> Result<()> {
    let values = t.to_vec()?;
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Invalid {
            op: "safetensors",
            detail: format!(
                "tensor `{name}` holds a non-finite value ({} at flat index {i} of {}): the weights are corrupt",
                values[i],
                values.len()
            ),
        }),
    }
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it ([`temp_path`]) is
/// written and synced, renamed over `path`, and the directory is synced, so after a crash `path`
/// holds either its old or its new content, and after return the new content survives one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all_atomically(&[(path, bytes)])
}

/// Writes several files atomically as one step as far as a full disk or failing write goes: every
/// temporary file is written and synced before the first rename, so a write error leaves every
/// `path` as it was.
pub fn write_all_atomically(files: &[(&Path, &[u8])]) -> Result<()> {
    use std::io::Write;
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    let cleanup = |written: &[(PathBuf, &Path)]| written.iter().for_each(|(tmp, _)| drop(std::fs::remove_file(tmp)));
    for &(path, bytes) in files {
        let dir = parent_dir(path);
        if let Err(e) = std::fs::create_dir_all(dir) {
            cleanup(&written);
            return Err(file_err_from(dir, format!("cannot create directory: {e}"), e));
        }
        let tmp = temp_path(path);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            cleanup(&written);
            return Err(file_err_from(path, format!("cannot write: {e}"), e));
        }
        written.push((tmp, path));
    }
    for (i, (tmp, path)) in written.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            cleanup(&written[i..]);
            return Err(file_err_from(path, format!("cannot write: {e}"), e));
        }
    }
    let mut dirs: Vec<&Path> = files.iter().map(|(p, _)| parent_dir(p)).collect();
    dirs.dedup();
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Appends `bytes` to `path` atomically (the old content plus `bytes` replace the file as in
/// [`write_atomically`]), so a crash never leaves a torn line behind.
pub fn append_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut content = match std::fs::read(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(file_err_from(path, format!("cannot read: {e}"), e)),
    };
    content.extend_from_slice(bytes);
    write_atomically(path, &content)
}

/// The temporary file [`write_atomically`] writes before renaming it to `path`:
/// `.NAME.tmp-PID` in the same directory (a rename never crosses file systems).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(path).join(format!(".{name}{TEMP_MARKER}{}", std::process::id()))
}

/// What marks the name of a temporary file of [`temp_path`].
const TEMP_MARKER: &str = ".tmp-";

/// Removes the temporary files that killed writers left in `dir` (not recursive) and returns how
/// many. Only a process that owns `dir` (holds its run lock) may call this: another writer's
/// temporary file in flight would be removed too.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(file_err_from(dir, format!("cannot list the folder: {e}"), e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temp = name.starts_with('.')
            && name.rsplit_once(TEMP_MARKER).is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .map_err(|e| file_err_from(&entry.path(), format!("cannot remove a stale temporary file: {e}"), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Syncs a directory, so that a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| file_err_from(dir, format!("cannot sync the directory: {e}"), e))
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
