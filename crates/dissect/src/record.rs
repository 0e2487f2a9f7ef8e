//! Recording: each chosen layer's activations over the probe set, pooled to one value per unit and
//! image as CLIP-Dissect does (spatial mean — or max — of conv maps, the class token of token
//! outputs, raw 2-D outputs), with activity statistics taken before pooling, and cached.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2, Axis};

use crate::cache::{Cache, CacheKey, Entry};
use crate::error::{DissectError, Result};
use crate::source::{ActivationSource, LayerOutput, ProbeSet, Progress};

/// An output counts as active (a competition winner) when `|a|` exceeds this, as in DISCOVER.
pub const ACTIVE_THRESHOLD: f32 = 1e-4;

/// How conv maps `[B, C, H, W]` become one value per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Spatial mean (CLIP-Dissect's default `avg`).
    #[default]
    Mean,
    /// Spatial maximum (CLIP-Dissect's `max`).
    Max,
}

impl FromStr for Pooling {
    type Err = DissectError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "mean" | "avg" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            other => Err(DissectError::parameter("--pooling", format!("`{other}`: expected mean (avg) or max"))),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Max => "max",
        })
    }
}

/// A layer's recordings over the whole probe set.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerActivations {
    pub layer: String,
    /// N images × K units, pooled.
    pub pooled: Array2<f32>,
    /// Per unit: the fraction of its outputs (over images and positions) that are active.
    pub unit_activity: Vec<f32>,
    /// Per image: the fraction of the layer's outputs (units × positions) that are active.
    pub image_activity: Vec<f32>,
    /// Whether the recordings came from the cache.
    pub cached: bool,
}

impl LayerActivations {
    /// Fraction of all outputs that are active (≈ 1/U for a competition layer).
    pub fn active_fraction(&self) -> f64 {
        if self.image_activity.is_empty() {
            0.0
        } else {
            self.image_activity.iter().map(|&v| v as f64).sum::<f64>() / self.image_activity.len() as f64
        }
    }
}

/// One batch of one layer, pooled, with active-output counts.
#[derive(Debug, Clone, PartialEq)]
struct PooledBatch {
    /// `B × K`.
    pooled: Vec<f32>,
    units: usize,
    /// Per unit, active outputs summed over the batch and positions.
    unit_active: Vec<u64>,
    /// Per image, active outputs over units and positions.
    image_active: Vec<u64>,
    /// Outputs per unit per image (H·W, T or 1).
    positions: usize,
}

fn pool(output: &LayerOutput, pooling: Pooling, layer: &str) -> Result<PooledBatch> {
    let shape = &output.shape;
    let expected: usize = shape.iter().product();
    let empty_dim = shape.iter().skip(1).any(|&d| d == 0);
    if output.data.len() != expected || shape.len() < 2 || shape.len() > 4 || empty_dim {
        return Err(DissectError::shape(
            format!("output of layer `{layer}`"),
            "[B, C], [B, T, C] or [B, C, H, W] (no empty dimension) with matching data",
            format!("shape {shape:?} with {} values", output.data.len()),
        ));
    }
    let batch = shape[0];
    // [B, C, H, W]: unit c's map at c·HW..; [B, T, C]: token t's units at t·C.. (class token t = 0).
    let (units, positions) = match shape.len() {
        4 => (shape[1], shape[2] * shape[3]),
        3 => (shape[2], shape[1]),
        _ => (shape[1], 1),
    };
    let unit_of = |i: usize| match shape.len() {
        4 => i / positions,
        3 => i % units,
        _ => i,
    };
    let per_image = units * positions;
    let mut pooled = vec![0.0f32; batch * units];
    let mut unit_active = vec![0u64; units];
    let mut image_active = vec![0u64; batch];
    for (b, image) in output.data.chunks_exact(per_image.max(1)).enumerate() {
        let out = &mut pooled[b * units..][..units];
        if shape.len() == 4 {
            for (unit, map) in image.chunks_exact(positions).enumerate() {
                out[unit] = match pooling {
                    Pooling::Mean => (map.iter().map(|&v| v as f64).sum::<f64>() / positions as f64) as f32,
                    Pooling::Max => map.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                };
            }
        } else {
            // Tokens: the class token; 2-D: the values themselves. Both are the first `units` values.
            out.copy_from_slice(&image[..units]);
        }
        for (i, &v) in image.iter().enumerate() {
            if v.abs() > ACTIVE_THRESHOLD {
                unit_active[unit_of(i)] += 1;
                image_active[b] += 1;
            }
        }
    }
    Ok(PooledBatch { pooled, units, unit_active, image_active, positions })
}

/// Records `layers` over all probe images, `batch_size` images per forward pass; layers found in
/// `cache` (keyed by the source's fingerprint, the layer, the probe set and the pooling) are not
/// recomputed. An unknown layer is an error suggesting the closest names.
pub fn record_layers(
    source: &mut dyn ActivationSource,
    probe: &dyn ProbeSet,
    layers: &[String],
    pooling: Pooling,
    batch_size: usize,
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<Vec<LayerActivations>> {
    let available = source.layers();
    if let Some(unknown) = layers.iter().find(|l| !available.contains(l)) {
        return Err(DissectError::unknown_layer(unknown, &available));
    }
    if probe.is_empty() {
        return Err(DissectError::parameter("probe set", format!("`{}` holds no images", probe.id())));
    }
    let key = |layer: &str| {
        CacheKey::new("activations")
            .with("model", source.fingerprint())
            .with("layer", layer)
            .with("probe", probe.id())
            .with("pooling", pooling.to_string())
    };
    let keys: Vec<CacheKey> = layers.iter().map(|l| key(l)).collect();
    let mut results: Vec<Option<LayerActivations>> =
        layers.iter().zip(&keys).map(|(layer, key)| cache.load(key).and_then(|e| from_entry(layer, &e))).collect();
    let missing: Vec<usize> = (0..layers.len()).filter(|&i| results[i].is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|&i| layers[i].clone()).collect();
        let recorded = record_uncached(source, probe, &names, pooling, batch_size.max(1), progress)?;
        for (&i, activations) in missing.iter().zip(recorded) {
            cache.store(&keys[i], &to_entry(&activations))?;
            results[i] = Some(activations);
        }
    }
    results
        .into_iter()
        .zip(layers)
        .map(|(r, layer)| r.ok_or_else(|| DissectError::Upstream { context: format!("recording `{layer}`"), detail: "no output".into() }))
        .collect()
}

fn record_uncached(
    source: &mut dyn ActivationSource,
    probe: &dyn ProbeSet,
    layers: &[String],
    pooling: Pooling,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<Vec<LayerActivations>> {
    let n = probe.len();
    let mut batches: Vec<Vec<PooledBatch>> = vec![Vec::new(); layers.len()];
    progress.start("recording activations", n as u64);
    for start in (0..n).step_by(batch_size) {
        let indices: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let outputs = source.record(probe, &indices, layers)?;
        if outputs.len() != layers.len() {
            return Err(DissectError::shape("recorded layers", layers.len().to_string(), outputs.len().to_string()));
        }
        for ((layer, output), store) in layers.iter().zip(&outputs).zip(&mut batches) {
            if output.shape.first() != Some(&indices.len()) {
                return Err(DissectError::shape(
                    format!("output of layer `{layer}`"),
                    format!("batch dimension {}", indices.len()),
                    format!("shape {:?}", output.shape),
                ));
            }
            store.push(pool(output, pooling, layer)?);
        }
        progress.advance(indices.len() as u64);
    }
    progress.finish();
    layers.iter().zip(batches).map(|(layer, parts)| concatenate(layer, parts, n)).collect()
}

fn concatenate(layer: &str, parts: Vec<PooledBatch>, images: usize) -> Result<LayerActivations> {
    let (units, positions) = parts.first().map(|p| (p.units, p.positions)).unwrap_or_default();
    if let Some(odd) = parts.iter().find(|p| p.units != units || p.positions != positions) {
        return Err(DissectError::shape(
            format!("output of layer `{layer}`"),
            format!("{units} units × {positions} positions in every batch"),
            format!("{} units × {} positions", odd.units, odd.positions),
        ));
    }
    let mut pooled = Vec::with_capacity(images * units);
    let mut unit_active = vec![0u64; units];
    let mut image_activity = Vec::with_capacity(images);
    for part in parts {
        pooled.extend_from_slice(&part.pooled);
        unit_active.iter_mut().zip(&part.unit_active).for_each(|(a, b)| *a += b);
        image_activity.extend(part.image_active.iter().map(|&a| a as f32 / (units * positions).max(1) as f32));
    }
    let pooled = Array2::from_shape_vec((images, units), pooled)
        .map_err(|err| DissectError::shape(format!("recordings of `{layer}`"), format!("{images} × {units}"), err.to_string()))?;
    let unit_activity = unit_active.iter().map(|&a| a as f32 / (images * positions).max(1) as f32).collect();
    Ok(LayerActivations { layer: layer.to_string(), pooled, unit_activity, image_activity, cached: false })
}

fn to_entry(a: &LayerActivations) -> Entry {
    Entry::from([
        ("pooled".to_string(), a.pooled.clone()),
        ("unit_activity".to_string(), Array1::from(a.unit_activity.clone()).insert_axis(Axis(0))),
        ("image_activity".to_string(), Array1::from(a.image_activity.clone()).insert_axis(Axis(0))),
    ])
}

/// A cache entry back into recordings; `None` (a miss) if it is not shaped as [`to_entry`] writes.
fn from_entry(layer: &str, entry: &Entry) -> Option<LayerActivations> {
    let pooled = entry.get("pooled")?.clone();
    let unit_activity = entry.get("unit_activity")?.iter().copied().collect::<Vec<_>>();
    let image_activity = entry.get("image_activity")?.iter().copied().collect::<Vec<_>>();
    (unit_activity.len() == pooled.ncols() && image_activity.len() == pooled.nrows()).then(|| LayerActivations {
        layer: layer.to_string(),
        pooled,
        unit_activity,
        image_activity,
        cached: true,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::{Head, Silent};
    use image::RgbImage;

    /// Probe images whose "pixels" are just their index.
    pub(crate) struct CountingProbe {
        pub(crate) n: usize,
        pub(crate) classes: Vec<String>,
    }

    impl ProbeSet for CountingProbe {
        fn id(&self) -> String {
            format!("counting-{}", self.n)
        }
        fn len(&self) -> usize {
            self.n
        }
        fn class_names(&self) -> &[String] {
            &self.classes
        }
        fn label(&self, index: usize) -> Option<usize> {
            (!self.classes.is_empty()).then(|| index % self.classes.len())
        }
        fn image(&self, index: usize) -> Result<RgbImage> {
            Ok(RgbImage::from_pixel(4, 4, image::Rgb([index as u8, 0, 0])))
        }
        fn input_shape(&self) -> [usize; 3] {
            [1, 1, 1]
        }
        fn load_input(&self, index: usize, out: &mut [f32]) -> Result<()> {
            out[0] = index as f32;
            Ok(())
        }
    }

    /// A "model" with a conv layer `conv` ([B, 2, 1, 2]), a token layer `tokens` ([B, 2, 3]) and a
    /// classifier `head` ([B, 2]); counts forward passes.
    pub(crate) struct ToyModel {
        pub(crate) passes: usize,
    }

    impl ActivationSource for ToyModel {
        fn layers(&self) -> Vec<String> {
            vec!["conv".into(), "tokens".into(), "head".into()]
        }
        fn default_layers(&self) -> Vec<String> {
            vec!["tokens".into(), "head".into()]
        }
        fn fingerprint(&self) -> String {
            "toy".into()
        }
        fn record(&mut self, probe: &dyn ProbeSet, indices: &[usize], layers: &[String]) -> Result<Vec<LayerOutput>> {
            self.passes += 1;
            let b = indices.len();
            let mut inputs = vec![0.0f32; b];
            for (slot, &i) in inputs.iter_mut().zip(indices) {
                probe.load_input(i, std::slice::from_mut(slot))?;
            }
            Ok(layers
                .iter()
                .map(|layer| {
                    let per_image = |x: f32| -> Vec<f32> {
                        match layer.as_str() {
                            // channel 0: [x, 0], channel 1: [1, 3]
                            "conv" => vec![x, 0.0, 1.0, 3.0],
                            // class token [x, 0, 2], one more token [0, 5, 0]
                            "tokens" => vec![x, 0.0, 2.0, 0.0, 5.0, 0.0],
                            _ => vec![x, -x],
                        }
                    };
                    let shape = match layer.as_str() {
                        "conv" => vec![b, 2, 1, 2],
                        "tokens" => vec![b, 2, 3],
                        _ => vec![b, 2],
                    };
                    LayerOutput { shape, data: inputs.iter().flat_map(|&x| per_image(x)).collect() }
                })
                .collect())
        }
        fn head(&self) -> Option<Head> {
            Some(Head { layer: "head".into(), inputs: vec!["tokens".into()], weight: Array2::eye(3).slice_move(ndarray::s![..2, ..]) })
        }
    }

    #[test]
    fn malformed_outputs_are_errors_naming_the_layer() {
        for (shape, len) in [(vec![2, 0, 3, 3], 0), (vec![2, 3], 5), (vec![2], 2), (vec![1, 1, 1, 1, 1], 1)] {
            let output = LayerOutput { shape, data: vec![0.0; len] };
            let err = pool(&output, Pooling::Mean, "blocks.0").unwrap_err();
            assert!(err.to_string().contains("blocks.0"), "{err}");
        }
    }

    #[test]
    fn pools_as_clip_dissect_and_counts_activity_before_pooling() {
        let probe = CountingProbe { n: 5, classes: vec![] };
        let mut model = ToyModel { passes: 0 };
        let layers: Vec<String> = vec!["conv".into(), "tokens".into()];
        let got = record_layers(&mut model, &probe, &layers, Pooling::Mean, 2, &Cache::disabled(), &Silent).unwrap();
        assert_eq!(model.passes, 3, "5 images in batches of 2");
        let conv = &got[0];
        assert_eq!(conv.pooled.row(4).to_vec(), vec![2.0, 2.0]);
        assert_eq!(conv.pooled.row(0).to_vec(), vec![0.0, 2.0]);
        // channel 0 is active in 4 of its 10 outputs (x > 0 for images 1..4), channel 1 in all.
        assert_eq!(conv.unit_activity, vec![0.4, 1.0]);
        // image 0: 2 of 4 outputs active; image 3: 3 of 4.
        assert_eq!(conv.image_activity[0], 0.5);
        assert_eq!(conv.image_activity[3], 0.75);
        let tokens = &got[1];
        assert_eq!(tokens.pooled.row(3).to_vec(), vec![3.0, 0.0, 2.0], "the class token");
        // unit 1 is active only in the second token.
        assert_eq!(tokens.unit_activity[1], 0.5);
        let max = record_layers(&mut model, &probe, &layers[..1], Pooling::Max, 8, &Cache::disabled(), &Silent).unwrap();
        assert_eq!(max[0].pooled.row(0).to_vec(), vec![0.0, 3.0]);
    }

    #[test]
    fn cached_layers_are_not_recomputed() {
        let dir = std::env::temp_dir().join(format!("dissect-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Cache::at(&dir);
        let probe = CountingProbe { n: 3, classes: vec![] };
        let mut model = ToyModel { passes: 0 };
        let layers: Vec<String> = vec!["head".into()];
        let first = record_layers(&mut model, &probe, &layers, Pooling::Mean, 8, &cache, &Silent).unwrap();
        let second = record_layers(&mut model, &probe, &layers, Pooling::Mean, 8, &cache, &Silent).unwrap();
        assert_eq!(model.passes, 1);
        assert!(!first[0].cached && second[0].cached);
        assert_eq!(first[0].pooled, second[0].pooled);
        // Another pooling is another entry.
        record_layers(&mut model, &probe, &layers, Pooling::Max, 8, &cache, &Silent).unwrap();
        assert_eq!(model.passes, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_layer_suggests_the_available_ones() {
        let probe = CountingProbe { n: 3, classes: vec![] };
        let mut model = ToyModel { passes: 0 };
        let err = record_layers(&mut model, &probe, &["fc9".into()], Pooling::Mean, 8, &Cache::disabled(), &Silent).unwrap_err();
        assert!(err.to_string().contains("fc9") && err.to_string().contains("`head`"), "{err}");
    }
}
