//! Every CLIP-Dissect similarity function agrees with the reference outputs (1e-4 rel.).

use std::path::Path;

#[test]
fn similarity_functions_match_clip_dissect() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checks = dissect::parity_checks(&fixtures).expect("reading the clip_dissect fixture");
    assert!(checks.len() >= 5, "expected the five reference outputs, got {}", checks.len());
    for check in &checks {
        println!("{} max_rel_err={:.3e} {}", check.name, check.max_rel_err, check.detail);
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
}
