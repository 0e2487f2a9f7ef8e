//! Where tower parameters come from: a Hugging Face `model.safetensors` (any float dtype, read as
//! f32 by `cvn_autograd::io`) or deterministic random values for benchmarks and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cvn_autograd::io::TensorFile;
use cvn_autograd::{DType, Device, Tensor};

use crate::config::ClipConfig;
use crate::error::{ClipError, Result};
use crate::model::ClipModel;

/// Hands out parameters by their Hugging Face name and expected shape.
///
/// Sources never fail per tensor: a checkpoint records every missing or mis-shaped tensor and
/// reports them all at once from [`WeightSource::finish`], so one error lists everything wrong.
pub trait WeightSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Tensor;
    /// Ok once every requested tensor was found with its expected shape.
    fn finish(self) -> Result<()>;
}

/// The tensors of a safetensors checkpoint. Tensors nobody asks for (`position_ids`, heads of
/// other models) are ignored.
pub struct Checkpoint {
    tensors: BTreeMap<String, Tensor>,
    file: PathBuf,
    problems: Vec<String>,
}

impl Checkpoint {
    /// Reads every tensor of `path` (no shape or finiteness checks: see [`Checkpoint::load_for`]).
    pub fn load(path: &Path) -> Result<Self> {
        let file = TensorFile::load(path)?;
        Ok(Self { tensors: file.tensors, file: path.to_path_buf(), problems: Vec::new() })
    }

    /// Reads the tensors of `path` that a model of `config` takes, after comparing the file's header
    /// with the names and shapes the configuration implies (so a lying `config.json` is refused
    /// before anything is sized from it); every tensor taken must be finite.
    pub fn load_for(path: &Path, config: &ClipConfig) -> Result<Self> {
        let mut plan = Plan::default();
        ClipModel::build(config.clone(), &mut plan)?;
        let weights_err = |detail: String| ClipError::Weights { file: path.display().to_string(), detail };
        let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| weights_err(format!("not a safetensors file: {e}")))?;
        let infos = header.tensors();
        let problems: Vec<String> = plan
            .wanted
            .iter()
            .filter_map(|(name, shape)| match infos.get(name) {
                None => Some(format!("`{name}`: expected {shape:?}, missing")),
                Some(info) if info.shape != *shape => Some(format!("`{name}`: expected {shape:?}, found {:?}", info.shape)),
                Some(_) => None,
            })
            .collect();
        if !problems.is_empty() {
            return Err(weights_err(format!(
                "{} tensor(s) missing or mis-shaped for this config.json:\n  {}",
                problems.len(),
                problems.join("\n  ")
            )));
        }
        let file = TensorFile::from_bytes(&bytes).map_err(|e| weights_err(e.detail()))?;
        let mut tensors = file.tensors;
        tensors.retain(|name, _| plan.wanted.iter().any(|(wanted, _)| wanted == name));
        for (name, t) in &tensors {
            cvn_autograd::io::require_finite(name, t).map_err(|e| weights_err(e.to_string()))?;
        }
        Ok(Self { tensors, file: path.to_path_buf(), problems: Vec::new() })
    }
}

/// Records the names and shapes a model asks for, handing out empty placeholders (nothing is
/// allocated from the shapes).
#[derive(Debug, Default)]
struct Plan {
    wanted: Vec<(String, Vec<usize>)>,
}

impl WeightSource for &mut Plan {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Tensor {
        self.wanted.push((name.to_string(), shape.to_vec()));
        Tensor::zeros(&[0])
    }

    fn finish(self) -> Result<()> {
        Ok(())
    }
}

impl WeightSource for Checkpoint {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Tensor {
        match self.tensors.remove(name) {
            Some(t) if t.shape() == shape => return t,
            Some(t) => self.problems.push(format!("`{name}`: expected {shape:?}, found {:?}", t.shape())),
            None => self.problems.push(format!("`{name}`: expected {shape:?}, missing")),
        }
        // A stand-in so the build can go on collecting problems; `finish` rejects the model.
        Tensor::zeros(shape)
    }

    fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(ClipError::Weights {
            file: self.file.display().to_string(),
            detail: format!(
                "{} tensor(s) missing or mis-shaped for this config.json:\n  {}",
                self.problems.len(),
                self.problems.join("\n  ")
            ),
        })
    }
}

/// Uniform values in ±0.02·√3 (standard deviation 0.02, CLIP's init range) from the Philox stream,
/// so a benchmark model is the same on every run.
pub struct RandomWeights {
    seed: u64,
    next_offset: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed, next_offset: 0 }
    }
}

impl WeightSource for RandomWeights {
    fn tensor(&mut self, _name: &str, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let half_width = 0.02 * 3f32.sqrt();
        let offset = self.next_offset;
        self.next_offset += 1;
        let data = (0..n.div_ceil(4) as u64)
            .flat_map(|group| lwta_kernels::philox::uniforms_of_group(self.seed, offset, group))
            .take(n)
            .map(|u| (2.0 * u - 1.0) * half_width)
            .collect();
        Tensor::from_vec(data, shape).expect("the data has exactly the shape's element count")
    }

    fn finish(self) -> Result<()> {
        Ok(())
    }
}

/// Another source's tensors stored as `dtype` on `device` (the towers in half precision on a GPU).
pub struct OnDevice<W> {
    inner: W,
    device: Device,
    dtype: DType,
    problems: Vec<String>,
}

impl<W: WeightSource> OnDevice<W> {
    pub fn new(inner: W, device: Device, dtype: DType) -> Self {
        Self { inner, device, dtype, problems: Vec::new() }
    }
}

impl<W: WeightSource> WeightSource for OnDevice<W> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Tensor {
        let t = self.inner.tensor(name, shape);
        // Cast before the transfer: bf16 moves half the bytes.
        match t.to_dtype(self.dtype).and_then(|t| t.to_device(&self.device)) {
            Ok(moved) => moved,
            Err(e) => {
                self.problems.push(format!("`{name}`: {e}"));
                t
            }
        }
    }

    fn finish(self) -> Result<()> {
        self.inner.finish()?;
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(ClipError::Weights {
            file: self.device.to_string(),
            detail: format!("{} tensor(s) could not be placed on the device:\n  {}", self.problems.len(), self.problems.join("\n  ")),
        })
    }
}
