//! The LWTA CPU reference against the float64 PyTorch fixtures of `tests/fixtures/lwta` (the same
//! checks `cargo xtask parity` prints), and the Philox known answers.

use std::path::Path;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_lwta_fixture_case_passes() {
    let checks = lwta_kernels::parity_checks(&fixtures()).unwrap();
    for check in &checks {
        println!("{} {} max_rel_err={:.2e} {}", if check.passed { "PASS" } else { "FAIL" }, check.name, check.max_rel_err, check.detail);
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    // The known answers plus a forward and a backward check for each of the file's cases.
    assert!(checks.len() >= 3 && checks.len() % 2 == 1, "{} checks", checks.len());
    assert!(checks.iter().any(|c| c.name.contains("nchw")) && checks.iter().any(|c| c.name.contains("tokens")));
}

#[test]
fn a_missing_fixture_file_is_an_error_naming_it() {
    let err = lwta_kernels::parity_checks(Path::new("/nonexistent")).unwrap_err().to_string();
    assert!(err.contains("lwta/lwta_cases.safetensors") && err.contains("cannot read"), "{err}");
}
