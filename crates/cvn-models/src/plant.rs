//! Planted neurons (issue 16): chosen hidden units trained, beside the classification loss, to
//! detect a named concept of the training data, so that a dissection can be checked against units
//! whose concept is known (`train --plant LAYER:UNIT=CONCEPT`, `--plant-random N`).
//!
//! The auxiliary loss acts on the quantity dissection labels: the unit's *pooled output* of its
//! activation layer — the class token of a ViT's `blocks.N.mlp.act`, the spatial mean of a
//! ResNet's `layerK.N.act1/act2` map (dissection's default `mean` pooling). Per planted unit and
//! image it is `(a − t)²`, `t` = 1 where the image shows the concept and 0 elsewhere, averaged over
//! units and images and added to the cross-entropy with weight `TrainConfig::plant_weight` (`--plant-weight`, default
//! [`PLANT_WEIGHT`]).
//!
//! Why the output and not the pre-activation: an LWTA unit outputs only when it wins its block, so
//! a large pre-activation is no detector while a competitor keeps winning. On the output the
//! straight-through Gumbel-softmax gradient reaches the whole block (`lwta_kernels::cpu`'s
//! backward), so the unit learns both to win its competition on the concept's images and to stay
//! silent (lose, or pass a value near 0) elsewhere — what dissection then sees. For a conventional
//! twin (U = 1) the same loss acts on its GELU/ReLU output.

use std::fmt;

use cvn_autograd::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::forward::Forward;
use crate::model::Model;
use crate::rng::CounterRng;
use crate::train::{Result, TrainError};

/// Default weight of the planted-unit loss against the cross-entropy (`TrainConfig::plant_weight`).
pub const PLANT_WEIGHT: f32 = 1.0;
/// Random-domain tag of [`random_plants`]' draws.
const PLANT_DOMAIN: u64 = 0x91a7_0000;

/// One planted unit: `layer`'s unit `unit` is trained to detect `concept`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlantedUnit {
    pub layer: String,
    pub unit: usize,
    pub concept: String,
}

impl fmt::Display for PlantedUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.layer, self.unit, self.concept)
    }
}

fn plant_err<T>(detail: impl Into<String>) -> Result<T> {
    Err(TrainError::Config { field: "plant", detail: detail.into() })
}

impl PlantedUnit {
    /// Parses `LAYER:UNIT=CONCEPT` (`blocks.1.mlp.act:7=striped`; the concept may contain spaces).
    pub fn parse(spec: &str) -> Result<Self> {
        let expected = "expected LAYER:UNIT=CONCEPT, e.g. blocks.1.mlp.act:7=striped";
        let Some((place, concept)) = spec.split_once('=') else { return plant_err(format!("`{spec}`: no `=`; {expected}")) };
        let Some((layer, unit)) = place.rsplit_once(':') else { return plant_err(format!("`{spec}`: no `:UNIT`; {expected}")) };
        let unit = unit.trim().parse().or_else(|_| plant_err(format!("`{spec}`: unit `{unit}` is not a whole number; {expected}")))?;
        let (layer, concept) = (layer.trim(), concept.trim());
        if layer.is_empty() || concept.is_empty() {
            return plant_err(format!("`{spec}`: empty layer or concept; {expected}"));
        }
        Ok(Self { layer: layer.to_string(), unit, concept: concept.to_string() })
    }
}

/// Units per activation layer of `model` (from one forward pass of a zero image).
pub fn activation_widths(model: &Model) -> Result<Vec<(String, usize)>> {
    let mut probe = model.clone();
    let shape = model_input_shape(model);
    let x = Tensor::from_slice_on(&vec![0.0; shape.iter().product()], &shape, DType::F32, &model.device())?;
    let layers = model.activation_layers().to_vec();
    let mut ctx = Forward::deterministic().with_taps(layers.iter().cloned());
    probe.forward(&x, &mut ctx)?;
    let taps = ctx.take_taps();
    layers
        .into_iter()
        .map(|l| {
            let shape = taps.get(&l).map(|t| t.output.shape().to_vec()).unwrap_or_default();
            let units = match shape.len() {
                4 => shape[1],
                3 => shape[2],
                _ => shape.get(1).copied().unwrap_or(0),
            };
            Ok((l, units))
        })
        .collect()
}

fn model_input_shape(model: &Model) -> [usize; 4] {
    let side = model.config().img_size().unwrap_or(32);
    [1, model.config().in_chans(), side, side]
}

/// Checks the plants against the model and the data: each layer an activation layer, each unit
/// inside it, each concept one the training data annotates, no unit planted twice. The errors
/// name `--plant` and what is available.
pub fn check_plants(plants: &[PlantedUnit], model: &Model, data: &dyn Dataset) -> Result<()> {
    if plants.is_empty() {
        return Ok(());
    }
    let names = data.concept_names();
    if names.is_empty() {
        return plant_err("planting needs training data with concept annotations: --data synthetic-concepts");
    }
    let widths = activation_widths(model)?;
    for (i, p) in plants.iter().enumerate() {
        let Some(&(_, units)) = widths.iter().find(|(l, _)| *l == p.layer) else {
            let layers: Vec<&str> = widths.iter().map(|(l, _)| l.as_str()).collect();
            return plant_err(format!("`{p}`: `{}` is not an activation layer; the model has {}", p.layer, layers.join(", ")));
        };
        if p.unit >= units {
            return plant_err(format!("`{p}`: layer `{}` has units 0..{units}", p.layer));
        }
        if !names.contains(&p.concept) {
            return plant_err(format!("`{p}`: `{}` is not a concept of the data; it has {}", p.concept, names.join(", ")));
        }
        if plants[..i].iter().any(|q| q.layer == p.layer && q.unit == p.unit) {
            return plant_err(format!("`{p}`: unit {} of `{}` is planted twice", p.unit, p.layer));
        }
    }
    Ok(())
}

/// `n` planted units drawn from `seed`: spread evenly over the hidden activation layers (layer
/// `i mod L` for the `i`-th), each a distinct random unit of its layer, with the data's concepts
/// dealt in a random order (each concept once before any repeats).
pub fn random_plants(n: usize, model: &Model, data: &dyn Dataset, seed: u64) -> Result<Vec<PlantedUnit>> {
    let names = data.concept_names();
    if n > 0 && names.is_empty() {
        return plant_err("--plant-random needs training data with concept annotations: --data synthetic-concepts");
    }
    let widths = activation_widths(model)?;
    if widths.is_empty() {
        return plant_err("the model has no activation layer to plant units in");
    }
    let mut rng = CounterRng::new(seed, PLANT_DOMAIN, 0);
    let mut concepts: Vec<usize> = Vec::new();
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut plants = Vec::with_capacity(n);
    for i in 0..n {
        if concepts.is_empty() {
            concepts = (0..names.len()).collect();
            for k in (1..concepts.len()).rev() {
                concepts.swap(k, rng.below(k + 1));
            }
        }
        let layer = i % widths.len();
        let (name, units) = &widths[layer];
        let free = units - taken.iter().filter(|(l, _)| *l == layer).count();
        if free == 0 {
            return plant_err(format!("--plant-random {n}: more units than the layer `{name}` has ({units})"));
        }
        let unit = loop {
            let u = rng.below(*units);
            if !taken.contains(&(layer, u)) {
                break u;
            }
        };
        taken.push((layer, unit));
        let concept = concepts.pop().expect("refilled above");
        plants.push(PlantedUnit { layer: name.clone(), unit, concept: names[concept].clone() });
    }
    Ok(plants)
}

/// The pooled output `[N, C]` of a recorded activation layer: the class token of tokens
/// `[N, T, C]`, the spatial mean of maps `[N, C, H, W]` (as dissection pools them by default).
fn pooled(output: &Tensor) -> Result<Tensor> {
    let shape = output.shape().to_vec();
    Ok(match shape.len() {
        4 => output.global_avg_pool2d()?.reshape(&[shape[0], shape[1]])?,
        3 => output.narrow(1, 0, 1)?.reshape(&[shape[0], shape[2]])?,
        _ => output.clone(),
    })
}

/// The planted-unit loss of one training batch (see the module docs): `ctx` holds the taps of
/// the planted layers, `indices` the batch's samples in `data`; `weight` scales the mean.
pub fn plant_loss(plants: &[PlantedUnit], weight: f32, ctx: &Forward, data: &dyn Dataset, indices: &[usize]) -> Result<Tensor> {
    let names = data.concept_names();
    let concepts: Vec<Vec<usize>> = indices.iter().map(|&i| data.concepts_of(i)).collect::<crate::Result<_>>()?;
    let mut total: Option<Tensor> = None;
    for p in plants {
        let Some(tap) = ctx.taps().get(&p.layer) else { return plant_err(format!("`{p}`: layer `{}` was not recorded", p.layer)) };
        let Some(m) = names.iter().position(|c| *c == p.concept) else {
            return plant_err(format!("`{p}`: `{}` is not a concept of the training data", p.concept));
        };
        let out = pooled(&tap.output)?.to_dtype(DType::F32)?;
        let a = out.narrow(1, p.unit, 1)?;
        let target: Vec<f32> = concepts.iter().map(|c| f32::from(u8::from(c.contains(&m)))).collect();
        let t = Tensor::from_slice_on(&target, &[indices.len(), 1], DType::F32, &a.device())?;
        let d = a.sub(&t)?;
        let loss = d.mul(&d)?.mean_all()?;
        total = Some(match total {
            Some(sum) => sum.add(&loss)?,
            None => loss,
        });
    }
    match total {
        Some(sum) => Ok(sum.scale(weight / plants.len() as f32)?),
        None => plant_err("no planted units"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic_concepts::Split;
    use crate::data::ConceptSplit;
    use crate::ModelConfig;

    #[test]
    fn specs_parse_and_bad_plants_name_what_is_wrong() {
        let p = PlantedUnit::parse("blocks.1.mlp.act:7=gray background").unwrap();
        assert_eq!((p.layer.as_str(), p.unit, p.concept.as_str()), ("blocks.1.mlp.act", 7, "gray background"));
        assert_eq!(p.to_string(), "blocks.1.mlp.act:7=gray background");
        for bad in ["blocks.1.mlp.act:7", "blocks.1.mlp.act=red", "blocks.1.mlp.act:x=red", ":1=red"] {
            assert!(PlantedUnit::parse(bad).unwrap_err().to_string().contains("LAYER:UNIT=CONCEPT"), "{bad}");
        }
        let model = Model::new(ModelConfig::preset("vit-concepts", 4).unwrap(), 0).unwrap();
        let data = ConceptSplit::new(0, Split::Train, 10).unwrap();
        let check = |spec: &str| check_plants(&[PlantedUnit::parse(spec).unwrap()], &model, &data).map_err(|e| e.to_string());
        assert!(check("blocks.1.mlp.act:383=red").is_ok());
        assert!(check("blocks.1.mlp.act:384=red").unwrap_err().contains("units 0..384"));
        assert!(check("blocks.1.mlp.fc1:0=red").unwrap_err().contains("not an activation layer"));
        assert!(check("blocks.1.mlp.act:0=purple").unwrap_err().contains("`purple` is not a concept"));
        let twice = [PlantedUnit::parse("blocks.0.mlp.act:1=red").unwrap(), PlantedUnit::parse("blocks.0.mlp.act:1=blue").unwrap()];
        assert!(check_plants(&twice, &model, &data).unwrap_err().to_string().contains("planted twice"));
        let fm = crate::data::FashionMnist::load(None).unwrap();
        let err = check_plants(std::slice::from_ref(&p), &model, &fm.test).unwrap_err().to_string();
        assert!(err.contains("--data synthetic-concepts"), "{err}");
        // Random plants: distinct units, spread over the layers, every concept before a repeat.
        let drawn = random_plants(8, &model, &data, 3).unwrap();
        assert_eq!(drawn, random_plants(8, &model, &data, 3).unwrap());
        check_plants(&drawn, &model, &data).unwrap();
        let layers: Vec<&str> = drawn.iter().map(|p| p.layer.as_str()).collect();
        assert_eq!(layers[..4], ["blocks.0.mlp.act", "blocks.1.mlp.act", "blocks.2.mlp.act", "blocks.3.mlp.act"]);
        let mut concepts: Vec<&str> = drawn.iter().map(|p| p.concept.as_str()).collect();
        concepts.sort();
        concepts.dedup();
        assert_eq!(concepts.len(), 8);
    }

    #[test]
    fn plant_weight_is_validated_saved_and_defaults_for_old_runs() {
        let mut config = crate::train::TrainConfig::for_model("vit-concepts", 4, 1).unwrap();
        assert_eq!(config.plant_weight, PLANT_WEIGHT);
        config.plant_weight = 0.25;
        config.validate().unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["plant_weight"], 0.25);
        let back: crate::train::TrainConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.plant_weight, 0.25);
        // A run saved before the field existed loads with the weight it trained with.
        let mut old = json;
        old.as_object_mut().unwrap().remove("plant_weight");
        let back: crate::train::TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.plant_weight, PLANT_WEIGHT);
        config.plant_weight = 0.0;
        config.validate().unwrap();
        for bad in [-0.5, f32::NAN, f32::INFINITY] {
            config.plant_weight = bad;
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("plant_weight") && err.contains("finite and >= 0"), "{bad}: {err}");
        }
    }
}
