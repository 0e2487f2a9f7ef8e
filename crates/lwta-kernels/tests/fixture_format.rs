//! `parity_checks` takes every case, size, U, τ and layout from the file: a file of the same format
//! with other cases passes, and malformed files give errors naming the file and the tensor.

mod common;

use common::{reference, values};
use lwta_kernels::parity::Check;
use lwta_kernels::philox::uniform_at;
use lwta_kernels::{parity_checks, BlockGeometry, Noise};
use safetensors::{Dtype, View};

/// A tensor to write: dtype, shape, little-endian bytes.
struct Tensor(Dtype, Vec<usize>, Vec<u8>);

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.2).into()
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

fn f64s(shape: &[usize], v: impl IntoIterator<Item = f64>) -> Tensor {
    Tensor(Dtype::F64, shape.to_vec(), v.into_iter().flat_map(f64::to_le_bytes).collect())
}

fn i64_scalar(v: i64) -> Tensor {
    Tensor(Dtype::I64, vec![1], v.to_le_bytes().to_vec())
}

/// The tensors of one case computed by the f64 oracle (inputs are f32 values, so exactly
/// representable for the kernels).
fn case(name: &str, shape: &[usize], u: usize, tau: f64, nchw: bool) -> Vec<(String, Tensor)> {
    let geom = if nchw {
        BlockGeometry::nchw(shape[0], shape[1], shape[2], shape[3])
    } else {
        BlockGeometry::tokens(shape[..shape.len() - 1].iter().product(), shape[shape.len() - 1])
    };
    let (x, gy) = (values(geom.len(), 11), values(geom.len(), 12));
    let uniforms: Vec<f32> = (0..geom.len() as u64).map(|e| uniform_at(13, 0, e)).collect();
    let (y, winners, gx) = reference(&x, &gy, geom, u, tau, Noise::Uniforms(&uniforms));
    let mut mask = vec![0.0; geom.len()];
    for (members, w) in common::blocks(geom, u).iter().zip(&winners) {
        mask[members[*w as usize]] = 1.0;
    }
    let as64 = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    [
        ("x", f64s(shape, as64(&x))),
        ("u", f64s(shape, as64(&uniforms))),
        ("gy", f64s(shape, as64(&gy))),
        ("y", f64s(shape, y)),
        ("gx", f64s(shape, gx)),
        ("winner_mask", f64s(shape, mask)),
        ("U", i64_scalar(u as i64)),
        ("tau", f64s(&[1], [tau])),
        ("conv", i64_scalar(nchw as i64)),
    ]
    .into_iter()
    .map(|(suffix, t)| (format!("{name}.{suffix}"), t))
    .collect()
}

/// Writes `tensors` as `<temp dir>/…/lwta/lwta_cases.safetensors` and runs the checks on it.
fn checks_of(test: &str, tensors: &[(String, Tensor)]) -> lwta_kernels::Result<Vec<Check>> {
    let dir = std::env::temp_dir().join(format!("lwta-fixture-format-{}-{test}", std::process::id()));
    std::fs::create_dir_all(dir.join("lwta")).unwrap();
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(dir.join("lwta/lwta_cases.safetensors"), bytes).unwrap();
    let checks = parity_checks(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    checks
}

#[test]
fn other_cases_and_sizes_pass() {
    let mut tensors = case("tokens_u3", &[5, 2, 9], 3, 0.5, false);
    tensors.extend(case("tokens_u16_big", &[300, 64], 16, 1.67, false));
    tensors.extend(case("tokens_u4", &[1000, 12], 4, 2.0, false));
    tensors.extend(case("nchw_u4_odd", &[3, 8, 5, 3], 4, 0.67, true));
    tensors.extend(case("nchw_u2_large", &[2, 4, 30, 30], 2, 1.0, true));
    let checks = checks_of("pass", &tensors).unwrap();
    assert_eq!(checks.len(), 1 + 2 * 5);
    for c in &checks {
        assert!(c.passed, "{} max_rel_err={:e} {}", c.name, c.max_rel_err, c.detail);
    }
    assert!(checks.iter().any(|c| c.name == "lwta/tokens_u16_big/backward"));
}

#[test]
fn a_wrong_reference_fails_its_check() {
    let mut tensors = case("tokens_u4", &[20, 8], 4, 1.0, false);
    let gx = tensors.iter_mut().find(|(n, _)| n == "tokens_u4.gx").unwrap();
    let first = f64::from_le_bytes(gx.1 .2[..8].try_into().unwrap());
    gx.1 .2[..8].copy_from_slice(&(first + 0.1).to_le_bytes());
    let checks = checks_of("wrong", &tensors).unwrap();
    let backward = checks.iter().find(|c| c.name == "lwta/tokens_u4/backward").unwrap();
    assert!(!backward.passed && backward.max_rel_err > 1e-3, "{backward:?}");
}

#[test]
fn malformed_files_name_the_file_and_tensor() {
    let expect_error = |test: &str, tensors: Vec<(String, Tensor)>, tensor: &str, what: &str| {
        let err = checks_of(test, &tensors).unwrap_err().to_string();
        assert!(err.contains("lwta_cases.safetensors") && err.contains(tensor) && err.contains(what), "{test}: {err}");
    };
    let good = || case("c", &[4, 8], 4, 1.0, false);

    let mut t = good();
    t.retain(|(n, _)| n != "c.tau");
    expect_error("missing", t, "`c.tau`", "");

    let mut t = good();
    let mask = t.iter_mut().find(|(n, _)| n == "c.winner_mask").unwrap();
    mask.1 = f64s(&[4, 8], vec![1.0; 32]);
    expect_error("one_hot", t, "`c.winner_mask`", "not one-hot");

    let mut t = good();
    let x = t.iter_mut().find(|(n, _)| n == "c.x").unwrap();
    x.1 = Tensor(Dtype::F32, vec![4, 8], vec![0; 128]);
    expect_error("dtype", t, "`c.x`", "expected F64");

    let mut t = good();
    let conv = t.iter_mut().find(|(n, _)| n == "c.conv").unwrap();
    conv.1 = i64_scalar(1);
    expect_error("layout", t, "`c.conv`", "NCHW");

    let mut t = good();
    let gy = t.iter_mut().find(|(n, _)| n == "c.gy").unwrap();
    gy.1 = f64s(&[8, 4], vec![0.0; 32]);
    expect_error("shape", t, "`c.gy`", "shape [8, 4]");

    let mut t = good();
    let u = t.iter_mut().find(|(n, _)| n == "c.U").unwrap();
    u.1 = i64_scalar(3);
    let err = checks_of("indivisible", &t).unwrap_err().to_string();
    assert!(err.contains("layer `c`") && err.contains("8 channels are not divisible by U = 3"), "{err}");

    let err = checks_of("empty", &[]).unwrap_err().to_string();
    assert!(err.contains("lwta_cases.safetensors") && err.contains("no cases"), "{err}");
}
