//! CLIP against `transformers` on the repository fixtures: the tiny random model (hidden states,
//! embeddings, logits at 1e-5 relative), `CLIPImageProcessor` on two photos (mean abs < 2e-2) and
//! the tokenizer (identical ids).

use std::path::Path;

#[test]
fn clip_matches_transformers_on_every_fixture() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checks = clip_encoder::parity_checks(&fixtures).expect("the CLIP fixtures load");
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for required in
        ["vision_last_hidden", "text_pooled", "image_embeds", "logits_per_image", "preprocess.china", "preprocess.flower", "tokenizer"]
    {
        assert!(names.iter().any(|n| n.contains(required)), "no check covers {required}: {names:?}");
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} max_rel_err={:e} tolerance={:e} {}", c.name, c.max_rel_err, c.tolerance, c.detail))
        .collect();
    assert!(failed.is_empty(), "failed CLIP parity checks:\n{}", failed.join("\n"));
}
