//! CLIP towers on the CPU backend with random weights of real sizes.
//!
//! * `clip_image_tower/vit_b16_batch8`: the ViT-B/16 image tower (12 layers, width 768, patch 16,
//!   224 px) on a batch of 8 — throughput in images/s. FLOPs per image are printed once
//!   (multiply-adds count 2; the customary "17.6 GFLOPs" of ViT-B/16 counts multiply-adds once).
//! * `clip_text_tower/concepts_20k_sample`: the ViT-B/16 text tower (12 layers, width 512) on an
//!   evenly spaced sample of the 20k concept set, tokenised by the fixture `tokenizer.json`; the
//!   time for all 20,000 concepts is the sample's time × 20,000 / sample size.

use std::path::Path;

use clip_encoder::{ClipConfig, ClipModel, ClipTokenizer};
use criterion::{criterion_group, Criterion, Throughput};
use cvn_autograd::gradcheck::test_values;
use cvn_autograd::Tensor;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const IMAGES: usize = 8;
const TEXT_SAMPLE: usize = 512;

/// `openai/clip-vit-base-patch16`: `transformers`' defaults with 16-pixel patches.
fn vit_b16() -> ClipConfig {
    ClipConfig::from_json(r#"{"vision_config": {"patch_size": 16}}"#, Path::new("vit-b16 config")).unwrap()
}

/// Forward FLOPs of one encoder layer on `t` tokens (multiply-add = 2 FLOPs).
fn layer_flops(t: usize, d: usize, hidden: usize) -> usize {
    2 * t * (4 * d * d + 2 * d * hidden) + 2 * 2 * t * t * d
}

fn image_tower(c: &mut Criterion) {
    let config = vit_b16();
    let model = ClipModel::random(config.clone(), 0).unwrap();
    let v = &config.vision;
    let (s, t) = (v.image_size, v.num_positions());
    let flops = v.encoder.num_layers * layer_flops(t, v.encoder.hidden_size, v.encoder.intermediate_size)
        + 2 * (t - 1) * v.encoder.hidden_size * 3 * v.patch_size * v.patch_size;
    eprintln!("ViT-B/16 image tower: {:.1} GFLOP per image ({:.1} G multiply-adds)", flops as f64 / 1e9, flops as f64 / 2e9);
    let pixels = Tensor::from_vec(test_values(IMAGES * 3 * s * s, 7), &[IMAGES, 3, s, s]).unwrap();
    let mut g = c.benchmark_group("clip_image_tower");
    g.sample_size(10);
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.bench_function("vit_b16_batch8", |b| b.iter(|| model.encode_images(&pixels).unwrap()));
    g.finish();
}

fn text_tower(c: &mut Criterion) {
    let model = ClipModel::random(vit_b16(), 1).unwrap();
    let tokenizer_file = Path::new(ROOT).join("tests/fixtures/clip_tokenizer/tokenizer.json");
    let tokenizer = ClipTokenizer::from_file(&tokenizer_file, model.text_model.context_length()).unwrap();
    let concepts = std::fs::read_to_string(Path::new(ROOT).join("crates/dissect/concepts/20k.txt")).unwrap();
    let concepts: Vec<&str> = concepts.lines().filter(|l| !l.trim().is_empty()).collect();
    let step = (concepts.len() / TEXT_SAMPLE).max(1);
    let sample: Vec<&str> = concepts.iter().step_by(step).take(TEXT_SAMPLE).copied().collect();
    let ids = tokenizer.encode_batch(&sample).unwrap();
    let tokens: usize = ids.iter().map(|r| model.text_model.pool_position(r).unwrap() + 1).sum();
    eprintln!(
        "text tower: {} of {} concepts, {:.2} tokens each up to end-of-text; 20,000 concepts take {:.1}x this sample",
        sample.len(),
        concepts.len(),
        tokens as f64 / sample.len() as f64,
        20_000.0 / sample.len() as f64
    );
    let mut g = c.benchmark_group("clip_text_tower");
    g.sample_size(10);
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.bench_function("concepts_20k_sample", |b| b.iter(|| model.encode_token_ids(&ids).unwrap()));
    g.finish();
}

criterion_group!(benches, image_tower, text_tower);
fn main() {
    // As every binary of the project does (cvn_autograd::cpu::heap).
    cvn_autograd::cpu::heap::keep_freed_buffers();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
