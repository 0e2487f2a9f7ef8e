//! Parity of the similarity functions with CLIP-Dissect's `similarity.py`, for `cargo xtask parity`.
//!
//! The fixture holds `clip_feats` (N × M), `target_feats` (N × K) and one K × M output per
//! reference function, named after it (`cos_similarity`, `cos_similarity_cubed`, `wpmi`,
//! `soft_wpmi`), optionally with a `_topk<N>` suffix for a non-default `top_k`. Sizes come from the
//! file; every output found is checked.

use std::path::Path;

use lwta_kernels::parity::{max_rel_err, Check};
use safetensors::SafeTensors;

use crate::error::{DissectError, Result};
use crate::similarity::{CosCubedParams, Similarity, SoftWpmiParams, WpmiParams};
use crate::tensor_file::read_matrix;

/// Relative tolerance of every similarity check.
pub const TOLERANCE: f64 = 1e-4;

/// Relative errors are taken against `max(|expected|, FLOOR_FRACTION · max|expected|)`, so entries far
/// below the output's own scale are compared on that scale. They carry the reference's f32 noise,
/// not information: a (soft-)WPMI output is the difference of two log-likelihood sums of magnitude
/// ≈ top_k·|ln p| (≈ 370 in the fixture) that PyTorch accumulates in f32, and merely re-summing them
/// in another f32 order moves entries by up to 2.4e-4 absolute — 1e-4 relative to an entry of 0.16
/// would ask for more digits than the reference has. (This crate sums in f64.)
const FLOOR_FRACTION: f64 = 5e-2;

/// The fixture inside a fixtures directory.
pub const FIXTURE: &str = "clip_dissect/similarity.safetensors";

/// One check per reference output in `fixtures/clip_dissect/similarity.safetensors`.
pub fn parity_checks(fixtures: &Path) -> Result<Vec<Check>> {
    let path = fixtures.join(FIXTURE);
    let bytes = std::fs::read(&path).map_err(|err| DissectError::io(&path, err))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|err| DissectError::format(&path, err.to_string()))?;
    let clip = read_matrix(&file, "clip_feats", &path)?;
    let target = read_matrix(&file, "target_feats", &path)?;
    let mut names: Vec<String> =
        file.names().into_iter().filter(|n| *n != "clip_feats" && *n != "target_feats").map(String::from).collect();
    names.sort();
    if names.is_empty() {
        return Err(DissectError::format(&path, "holds no reference outputs besides clip_feats and target_feats"));
    }
    let mut checks = Vec::with_capacity(names.len());
    for name in names {
        let similarity = reference_function(&name).ok_or_else(|| {
            DissectError::format(
                &path,
                format!(
                    "tensor `{name}` is not a known reference output (cos_similarity, cos_similarity_cubed, \
                     wpmi[_topkN], soft_wpmi[_topkN])"
                ),
            )
        })?;
        let expected = read_matrix(&file, &name, &path)?;
        let check_name = format!("dissect/similarity/{name}");
        let got = similarity.compute(clip.view(), target.view())?;
        if got.dim() != expected.dim() {
            checks.push(
                Check::within(check_name, f64::INFINITY, TOLERANCE)
                    .require(false, format!("shape {:?}, reference {:?}", got.dim(), expected.dim())),
            );
            continue;
        }
        let scale = expected.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
        let floor = (scale * FLOOR_FRACTION).max(f64::MIN_POSITIVE);
        let err = max_rel_err(got.iter().map(|&v| v as f64), expected.iter().map(|&v| v as f64), floor);
        let same_labels = got.rows().into_iter().zip(expected.rows()).filter(|(a, b)| argmax(a.iter()) == argmax(b.iter())).count();
        let worst = got
            .indexed_iter()
            .map(|((k, m), &g)| {
                let e = expected[[k, m]] as f64;
                ((g as f64 - e).abs() / e.abs().max(floor), k, m)
            })
            .fold((0.0, 0, 0), |a, b| if b.0 > a.0 { b } else { a });
        checks.push(Check::within(check_name, err, TOLERANCE).require(
            true,
            format!(
                "{} × {}; worst at [{}, {}]: {} vs reference {}; best concept agrees for {same_labels}/{} neurons",
                got.nrows(),
                got.ncols(),
                worst.1,
                worst.2,
                got[[worst.1, worst.2]],
                expected[[worst.1, worst.2]],
                got.nrows()
            ),
        ));
    }
    Ok(checks)
}

/// The function (with CLIP-Dissect's defaults) that produced the reference output `name`.
fn reference_function(name: &str) -> Option<Similarity> {
    let (base, top_k) = match name.rsplit_once("_topk") {
        Some((base, k)) => (base, Some(k.parse::<usize>().ok()?)),
        None => (name, None),
    };
    match (base, top_k) {
        ("cos_similarity", None) => Some(Similarity::Cos),
        ("cos_similarity_cubed", None) => Some(Similarity::CosCubed(CosCubedParams::default())),
        ("wpmi", k) => {
            let defaults = WpmiParams::default();
            Some(Similarity::Wpmi(WpmiParams { top_k: k.unwrap_or(defaults.top_k), ..defaults }))
        }
        ("soft_wpmi", k) => {
            let defaults = SoftWpmiParams::default();
            Some(Similarity::SoftWpmi(SoftWpmiParams { top_k: k.unwrap_or(defaults.top_k), ..defaults }))
        }
        _ => None,
    }
}

fn argmax<'a>(values: impl Iterator<Item = &'a f32>) -> Option<usize> {
    values.enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_map_to_functions() {
        assert_eq!(reference_function("cos_similarity"), Some(Similarity::Cos));
        match reference_function("soft_wpmi_topk20") {
            Some(Similarity::SoftWpmi(p)) => assert_eq!(p.top_k, 20),
            other => panic!("{other:?}"),
        }
        assert_eq!(reference_function("rank_reorder"), None);
        assert_eq!(reference_function("wpmi_topkX"), None);
    }

    #[test]
    fn missing_fixture_names_the_file() {
        let err = parity_checks(Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("similarity.safetensors"), "{err}");
    }
}
