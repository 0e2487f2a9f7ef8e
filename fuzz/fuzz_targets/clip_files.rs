//! A CLIP directory: `config.json`, `tokenizer.json` and `model.safetensors` from one input (the
//! first two bytes choose where it splits).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("fuzz-clip-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (a, b) = (data.first().copied().unwrap_or(0) as usize * 16, data.get(1).copied().unwrap_or(0) as usize * 64);
    let rest = data.get(2..).unwrap_or_default();
    let a = a.min(rest.len());
    let b = (a + b).min(rest.len());
    let config = std::str::from_utf8(&rest[..a]).unwrap_or("{}");
    let parsed = clip_encoder::ClipConfig::from_json(config, std::path::Path::new("config.json"));
    let tokenizer = dir.join("tokenizer.json");
    if std::fs::write(&tokenizer, &rest[a..b]).is_ok() {
        let _ = clip_encoder::ClipTokenizer::from_file(&tokenizer, 77);
    }
    let weights = dir.join("model.safetensors");
    if let Ok(config) = parsed {
        if std::fs::write(&weights, &rest[b..]).is_ok() {
            let _ = clip_encoder::ClipModel::load(config, &weights);
        }
    }
});
