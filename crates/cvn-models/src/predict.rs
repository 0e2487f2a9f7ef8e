//! Per-image predictions of a model (`cargo xtask predict`): the logits of the deterministic pass
//! (argmax winners; a BatchNorm CVN with its stored argmax BatchNorm statistics, as `eval
//! --deterministic` and `dissect` use), the predicted class and the true one, written as CSV
//! (`index,label,predicted,logit_0,…`) or safetensors (`logits` `[N, classes]` f32, `index`,
//! `label`, `predicted` `[N]` int64).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use cvn_autograd::io::Stored;
use cvn_autograd::{DType, LwtaMode, Tensor};

use crate::argmax_bn::ArgmaxBatchNorm;
use crate::checkpoint;
use crate::data::{BatchLoader, Dataset, LoaderConfig};
use crate::forward::Forward;
use crate::model::Model;
use crate::train::{Progress, Result, TrainError};

/// Logits, predicted and true classes of every image of a data set, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Row-major `[images, classes]`.
    pub logits: Vec<f32>,
    pub classes: usize,
    pub labels: Vec<usize>,
    pub predicted: Vec<usize>,
}

/// Runs `model` deterministically over `data` (with `argmax_bn` in place of its BatchNorm
/// statistics when given).
pub fn predict(
    model: &Model,
    data: Arc<dyn Dataset>,
    batch_size: usize,
    argmax_bn: Option<&ArgmaxBatchNorm>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Predictions> {
    let mut net = model.clone();
    if let Some(stats) = argmax_bn.filter(|_| ArgmaxBatchNorm::needed(model)) {
        stats.apply(&mut net, "argmax BatchNorm statistics")?;
    }
    let device = net.device();
    let classes = net.config().num_classes();
    let total = data.len();
    let mut out = Predictions { logits: Vec::with_capacity(total * classes), classes, labels: Vec::new(), predicted: Vec::new() };
    for batch in BatchLoader::new(data, LoaderConfig::eval(batch_size), 0, 0)? {
        let batch = batch?;
        let x = Tensor::from_slice_on(&batch.images, &batch.shape, DType::F32, &device)?;
        let logits = net.forward(&x, &mut Forward::new(LwtaMode::Deterministic, 0, 0))?.to_dtype(DType::F32)?.to_vec()?;
        for row in logits.chunks_exact(classes) {
            // The first of equal maxima, as `torch.argmax` picks.
            let best = row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
            out.predicted.push(best);
        }
        out.logits.extend_from_slice(&logits);
        out.labels.extend_from_slice(&batch.labels);
        progress(Progress::Evaluating { done: out.labels.len(), total });
    }
    Ok(out)
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Fraction of images whose predicted class is the true one.
    pub fn top1(&self) -> f64 {
        let right = self.labels.iter().zip(&self.predicted).filter(|(a, b)| a == b).count();
        right as f64 / self.len().max(1) as f64
    }

    /// Writes to `path`: CSV for `.csv`, safetensors for `.safetensors` (atomically).
    pub fn write(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(cvn_autograd::io::write_atomically(path, self.csv().as_bytes())?),
            Some("safetensors") => self.write_safetensors(path, metadata),
            _ => {
                Err(TrainError::Config { field: "out", detail: format!("{}: give a file ending in .csv or .safetensors", path.display()) })
            }
        }
    }

    /// `index,label,predicted,logit_0,…` with one line per image; logits in Rust's shortest
    /// round-trip form (parsing one gives back the same f32).
    pub fn csv(&self) -> String {
        let mut s = String::from("index,label,predicted");
        for c in 0..self.classes {
            let _ = write!(s, ",logit_{c}");
        }
        s.push('\n');
        for (i, row) in self.logits.chunks_exact(self.classes.max(1)).enumerate() {
            let _ = write!(s, "{i},{},{}", self.labels[i], self.predicted[i]);
            for v in row {
                let _ = write!(s, ",{v}");
            }
            s.push('\n');
        }
        s
    }

    fn write_safetensors(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let n = self.len();
        let ints = |v: &[usize]| Stored::I64 { shape: vec![n], values: v.iter().map(|&x| x as i64).collect() };
        let tensors = BTreeMap::from([
            ("logits".to_string(), Stored::F32(Tensor::from_vec(self.logits.clone(), &[n, self.classes])?)),
            ("index".to_string(), ints(&(0..n).collect::<Vec<_>>())),
            ("label".to_string(), ints(&self.labels)),
            ("predicted".to_string(), ints(&self.predicted)),
        ]);
        Ok(checkpoint::write(path, &tensors, metadata)?)
    }
}
