//! Planted neurons end to end: a small CVN trained on `synthetic-concepts` with seven units
//! planted for the colour and background concepts (`train --plant`) is dissected on the probe
//! split, and those units are named after their planted concept far above chance (1/37). The
//! plants are the data's easiest concepts (colour and background are pixel statistics), so this
//! checks the mechanism — loss, saved plant list, identification — not how well harder concepts
//! can be planted in a few seconds of training.

use cvn_models::data::synthetic_concepts::Split;
use cvn_models::data::ConceptSplit;
use cvn_models::plant::PlantedUnit;
use cvn_models::train::{run_config, TrainConfig, TrainData, Trainer};
use cvn_models::ModelConfig;
use dissect::cache::Cache;
use dissect::integration::{DatasetProbe, ModelSource, Sampling};
use dissect::pipeline::{dissect, Options, Scorer};
use dissect::planted::Planted;
use dissect::source::{ProbeSet, Silent};
use dissect::ConceptSet;

const LAYER: &str = "blocks.1.mlp.act";
const CONCEPTS: [&str; 7] = ["red", "green", "blue", "yellow", "black background", "gray background", "brown background"];

#[test]
fn planted_units_of_a_trained_cvn_are_named_after_their_concept() {
    let dir = std::env::temp_dir().join(format!("planted-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = TrainConfig::for_model("vit-concepts", 4, 3).unwrap();
    let ModelConfig::Vit(mut vit) = config.model_config().unwrap() else { panic!("vit-concepts is a ViT") };
    vit.depth = 2;
    config.architecture = Some(ModelConfig::Vit(vit));
    config.data_dir = Some("synthetic-concepts".into());
    config.train_limit = Some(2000);
    config.batch_size = 64;
    config.samples = 1;
    config.eval_each_epoch = false;
    config.plant =
        CONCEPTS.iter().enumerate().map(|(i, c)| PlantedUnit { layer: LAYER.into(), unit: 11 * i + 3, concept: c.to_string() }).collect();
    let data = TrainData::load(&config).unwrap();
    Trainer::start(config.clone(), data, &dir).unwrap().run(&mut |_| {}).unwrap();
    // The plant list travels with the run.
    assert_eq!(run_config(&dir).unwrap().plant, config.plant);

    let probe = DatasetProbe::synthetic(ConceptSplit::new(0, Split::Probe, 1000).unwrap()).unwrap();
    let names = probe.annotations().unwrap().names().to_vec();
    let concepts = ConceptSet::from_lines("synthetic".into(), names.iter().map(String::as_str)).unwrap();
    let mut source = ModelSource::from_run(&dir, Sampling::Deterministic).unwrap();
    let planted: Vec<Planted> =
        config.plant.iter().map(|p| Planted { layer: p.layer.clone(), unit: p.unit, concept: p.concept.clone() }).collect();
    let options = Options { layers: vec![LAYER.into()], examples: 0, planted, ..Options::default() };
    let d = dissect(&mut source, &probe, Scorer::Labels, &concepts, &options, &Cache::disabled(), &Silent).unwrap();
    let report = d.planted.expect("planted units were given");
    assert!((report.chance - 1.0 / 37.0).abs() < 1e-12);
    let cos = report.accuracy("cos").unwrap();
    let best = report.by_similarity.iter().map(|i| i.accuracy).fold(0.0, f64::max);
    let summary: Vec<String> = report.by_similarity.iter().map(|i| format!("{} {}/{}", i.similarity, i.identified, i.planted)).collect();
    println!("planted units identified: {} (chance {:.3})", summary.join(", "), report.chance);
    // Chance is 2.7%: 4 of 7 is 21 times that.
    assert!(cos >= 4.0 / 7.0 && best >= 5.0 / 7.0, "identified: {}", summary.join(", "));
    std::fs::remove_dir_all(&dir).unwrap();
}
