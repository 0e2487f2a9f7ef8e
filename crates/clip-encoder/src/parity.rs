//! Agreement with `transformers` on the fixtures (`cargo xtask parity`): the tiny random CLIP's
//! hidden states, embeddings and logits, `CLIPImageProcessor` on two photos, and tokenizer ids.

use std::path::Path;

use cvn_autograd::io::TensorFile;
use cvn_autograd::Tensor;
use lwta_kernels::parity::{max_rel_err, Check};
use serde::Deserialize;

use crate::error::{ClipError, Result};
use crate::tokenizer::{strip_padding, ClipTokenizer};
use crate::{ClipConfig, ClipModel, ImageProcessor};

/// Relative tolerance of the tiny model's outputs.
const MODEL_TOLERANCE: f64 = 1e-5;
/// Mean absolute error allowed against `CLIPImageProcessor` (JPEG decoders differ slightly).
const PREPROCESS_TOLERANCE: f64 = 2e-2;
/// Errors are relative to `max(|reference|, FLOOR · max|reference|)`, so elements that happen to
/// be near zero are judged on the tensor's scale rather than their own. The reference sets the
/// floor: `transformers`' float32 outputs are themselves up to 3e-5 away from an exact (float64)
/// evaluation of the same model at a 1e-2 floor, but within 4e-6 at 1e-1 — and so are ours.
const FLOOR: f64 = 1e-1;

/// Runs every CLIP parity check on `fixtures` (the repository's `tests/fixtures`).
pub fn parity_checks(fixtures: &Path) -> Result<Vec<Check>> {
    let tokenizer_dir = fixtures.join("clip_tokenizer");
    let tokenizer_file = tokenizer_dir.join("tokenizer.json");
    let mut checks = tiny_clip_checks(&fixtures.join("tiny_clip"), &tokenizer_file)?;
    checks.extend(preprocess_checks(&fixtures.join("clip_preprocess"))?);
    checks.push(tokenizer_check(&tokenizer_dir)?);
    Ok(checks)
}

fn fixture<'a>(file: &'a TensorFile, path: &Path, name: &str) -> Result<&'a Tensor> {
    file.tensors
        .get(name)
        .ok_or_else(|| ClipError::Weights { file: path.display().to_string(), detail: format!("fixture tensor `{name}` is missing") })
}

/// Compares two tensors element-wise; a shape mismatch is a failed check, not an error.
fn compare(name: &str, actual: &Tensor, expected: &Tensor, tolerance: f64) -> Result<Check> {
    if actual.shape() != expected.shape() {
        return Ok(Check::within(name, f64::INFINITY, tolerance)
            .require(false, format!("shape {:?}, expected {:?}", actual.shape(), expected.shape())));
    }
    let (actual, expected) = (actual.to_vec()?, expected.to_vec()?);
    let scale = expected.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let err = max_rel_err(actual.iter().map(|&v| v as f64), expected.iter().map(|&v| v as f64), (FLOOR * scale).max(f64::MIN_POSITIVE));
    Ok(Check::within(name, err, tolerance))
}

fn tiny_clip_checks(dir: &Path, tokenizer_file: &Path) -> Result<Vec<Check>> {
    let config = ClipConfig::from_file(&dir.join("config.json"))?;
    let model = ClipModel::load(config, &dir.join("model.safetensors"))?;
    let io_path = dir.join("io.safetensors");
    let io = TensorFile::load(&io_path)?;
    let get = |name: &str| fixture(&io, &io_path, name);

    let input_ids = get("input_ids")?;
    let seq = input_ids.dim(-1)?;
    let ids: Vec<Vec<u32>> = input_ids.to_vec()?.chunks(seq.max(1)).map(|r| r.iter().map(|&v| v as u32).collect()).collect();
    let pixels = get("pixel_values")?;

    let vision = model.vision_model.forward(pixels)?;
    let text = model.text_model.forward(&ids)?;
    let image_embeds = model.encode_images(pixels)?;
    let text_embeds = model.encode_token_ids(&ids)?;
    let logits = model.logits_per_image(&image_embeds, &text_embeds)?;

    let mut checks = vec![
        compare("clip.tiny.vision_last_hidden", &vision.last_hidden, get("vision_last_hidden")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.vision_pooled", &vision.pooled, get("vision_pooled")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.image_embeds", &image_embeds, get("image_embeds")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.text_last_hidden", &text.last_hidden, get("text_last_hidden")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.text_pooled", &text.pooled, get("text_pooled")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.text_embeds", &text_embeds, get("text_embeds")?, MODEL_TOLERANCE)?,
        compare("clip.tiny.logits_per_image", &logits, get("logits_per_image")?, MODEL_TOLERANCE)?,
    ];

    // The fixture's texts, tokenised here, must give the fixture's (zero-padded) input_ids.
    if let Some(texts) = io.metadata.get("texts") {
        let texts: Vec<String> = serde_json::from_str(texts).map_err(|e| ClipError::Weights {
            file: io_path.display().to_string(),
            detail: format!("metadata `texts` is not a JSON list of strings: {e}"),
        })?;
        let tokenizer = ClipTokenizer::from_file(tokenizer_file, seq)?;
        let ours = tokenizer.encode_batch(&texts)?;
        let mismatched: Vec<&str> = texts.iter().zip(ours.iter().zip(&ids)).filter(|(_, (a, b))| a != b).map(|(t, _)| t.as_str()).collect();
        checks.push(
            Check::within("clip.tiny.input_ids", mismatched.len() as f64, 0.0).require(
                mismatched.is_empty(),
                if mismatched.is_empty() { String::new() } else { format!("ids differ for {mismatched:?}") },
            ),
        );
    }
    Ok(checks)
}

fn preprocess_checks(dir: &Path) -> Result<Vec<Check>> {
    let expected_path = dir.join("expected.safetensors");
    let expected = TensorFile::load(&expected_path)?;
    let mut checks = Vec::new();
    for (name, reference) in &expected.tensors {
        let image = ["jpg", "jpeg", "png"].iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file()).ok_or_else(|| {
            ClipError::Image { source_name: dir.join(name).display().to_string(), detail: "no .jpg/.jpeg/.png for this reference".into() }
        })?;
        let &[_, size, _] = reference.shape() else {
            return Err(ClipError::Weights {
                file: expected_path.display().to_string(),
                detail: format!("`{name}` should be [3, size, size], is {:?}", reference.shape()),
            });
        };
        let ours = ImageProcessor::clip(size).load(&image)?;
        let check_name = format!("clip.preprocess.{name} (mean abs err)");
        if ours.len() != reference.len() {
            checks.push(Check::within(check_name, f64::INFINITY, PREPROCESS_TOLERANCE).require(false, "size mismatch"));
            continue;
        }
        let diffs: Vec<f64> = ours.iter().zip(reference.to_vec()?).map(|(a, b)| (*a as f64 - b as f64).abs()).collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
        let max = diffs.iter().fold(0.0f64, |m, &d| m.max(d));
        checks.push(Check::within(check_name, mean, PREPROCESS_TOLERANCE).require(true, format!("max abs err {max:.4}")));
    }
    Ok(checks)
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
}

fn tokenizer_check(dir: &Path) -> Result<Check> {
    let cases_path = dir.join("tokenizer_cases.json");
    let json = std::fs::read_to_string(&cases_path).map_err(|e| ClipError::io(&cases_path, e))?;
    let cases: Vec<TokenizerCase> =
        serde_json::from_str(&json).map_err(|e| ClipError::Tokenizer { file: cases_path.display().to_string(), detail: e.to_string() })?;
    let context = cases.iter().map(|c| c.ids.len()).max().unwrap_or(2).max(77);
    let tokenizer = ClipTokenizer::from_file(&dir.join("tokenizer.json"), context)?;
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let ours = tokenizer.encode_batch(&texts)?;
    let mut mismatches = Vec::new();
    for (case, ids) in cases.iter().zip(&ours) {
        let end = *case.ids.last().unwrap_or(&0);
        if strip_padding(ids, end) != case.ids.as_slice() {
            mismatches.push(format!("{:?}: got {:?}, expected {:?}", case.text, strip_padding(ids, end), case.ids));
        }
    }
    Ok(Check::within("clip.tokenizer ids (mismatched cases)", mismatches.len() as f64, 0.0)
        .require(mismatches.is_empty(), mismatches.join("; ")))
}
