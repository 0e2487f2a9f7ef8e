//! The models against the reference fixtures `tiny_vit` (timm) and `tiny_resnet` (torchvision):
//! conventional and deterministic-LWTA logits and the tapped activations, at 1e-5 relative error.

use std::path::Path;

#[test]
fn models_match_the_reference_fixtures() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checks = cvn_models::parity_checks(&fixtures).expect("fixtures load");
    // Both fixtures: two logits checks each, plus at least one tapped activation each.
    assert!(checks.len() >= 6, "{checks:?}");
    for c in &checks {
        println!("{} {} max_rel_err={:.3e} ({})", if c.passed { "PASS" } else { "FAIL" }, c.name, c.max_rel_err, c.detail);
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).map(|c| &c.name).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
