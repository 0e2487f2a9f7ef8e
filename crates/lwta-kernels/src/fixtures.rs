//! Parity of the CPU kernels with the float64 PyTorch reference in `lwta/lwta_cases.safetensors`.
//!
//! Every case `<name>` of the file is found from its tensor names and read whole from the file —
//! `<name>.x, .u, .gy` (inputs: logits, uniform draws, upstream gradient), `.y, .gx, .winner_mask`
//! (reference outputs), `.U, .tau, .conv` (competitors, temperature, 0 = tokens `[..., C]`,
//! 1 = NCHW) — so files of the same format with other cases and sizes are checked the same way.
//! The f32 kernels run with the supplied draws ([`Noise::Uniforms`]); checks: identical winners,
//! and `y`, `gx` within [`TOLERANCE`] relative error.
//!
//! How `gx` is measured: against the largest reference gradient of the case (`max|Δ| / max|gx|`).
//! Element-wise relative errors of small gradient entries are not a property of the kernels but
//! of f32 *inputs*: near `u = 1` the noise `g = −ln(−ln(u + 1e-8) + 1e-8)` amplifies the f32
//! rounding of `u` (and of `u + 1e-8`, which the stream contract fixes in f32) by `1/(1 − u)`, so
//! the logits carry errors of ~1e-6 that the softmax passes on (the fixtures hold `u = 0.989`:
//! rounding `u` alone moves one entry by 1.7e-5 relative). The element-wise figure is still
//! reported in the check's detail.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::parity::{max_rel_err, Check};
use crate::philox::{philox4x32_10, KNOWN_ANSWERS};
use crate::{cpu, BlockGeometry, LwtaError, Noise, Result};

/// The reference fixture file, relative to the fixtures directory.
pub const FILE: &str = "lwta/lwta_cases.safetensors";
/// Relative error allowed for `y` and `gx` (f32 kernels against the float64 reference).
pub const TOLERANCE: f64 = 1e-5;
/// Element-wise relative errors are taken against `max(|reference|, FLOOR_FRACTION · max|reference|)`,
/// so that exact zeros and tiny entries (losing units' outputs and gradients) do not turn f32
/// rounding into huge relative errors.
pub const FLOOR_FRACTION: f64 = 1e-3;
/// Blocks whose two best logits are closer than this (relative) are reported as near-ties: f32
/// rounding may legitimately pick the other winner there.
const NEAR_TIE: f64 = 1e-6;

/// One check for the Philox known answers, then a forward and a backward check per case.
pub fn parity_checks(fixtures: &Path) -> Result<Vec<Check>> {
    let path = fixtures.join(FILE);
    let file = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| LwtaError::FixtureFile { file: file.clone(), what: format!("cannot read: {e}") })?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| LwtaError::FixtureFile { file: file.clone(), what: format!("not a safetensors file: {e}") })?;
    let mut cases: Vec<&str> = tensors.names().into_iter().filter_map(|n| n.strip_suffix(".x")).collect();
    cases.sort_unstable();
    if cases.is_empty() {
        return Err(LwtaError::FixtureFile { file, what: "no `<case>.x` tensors: no cases to check".into() });
    }
    let mut checks = vec![known_answers()];
    for case in cases {
        let fixture = Case::read(&Reader { file: &file, tensors: &tensors }, case)?;
        checks.extend(fixture.check()?);
    }
    Ok(checks)
}

fn known_answers() -> Check {
    let wrong: Vec<String> = KNOWN_ANSWERS
        .iter()
        .filter(|(counter, key, expected)| philox4x32_10(*counter, *key) != *expected)
        .map(|(counter, key, _)| format!("counter {counter:08x?} key {key:08x?}"))
        .collect();
    let error = if wrong.is_empty() { 0.0 } else { 1.0 };
    Check::within("lwta/philox4x32_10_known_answers", error, 0.0).require(wrong.is_empty(), wrong.join(", "))
}

/// Reads tensors of one file, naming the file and tensor in every error.
struct Reader<'a> {
    file: &'a str,
    tensors: &'a SafeTensors<'a>,
}

impl Reader<'_> {
    fn error(&self, tensor: &str, what: impl Into<String>) -> LwtaError {
        LwtaError::Fixture { file: self.file.to_string(), tensor: tensor.to_string(), what: what.into() }
    }

    /// A float64 tensor: its values and shape.
    fn f64s(&self, tensor: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        let view = self.tensors.tensor(tensor).map_err(|e| self.error(tensor, e.to_string()))?;
        if view.dtype() != Dtype::F64 {
            return Err(self.error(tensor, format!("dtype {:?}, expected F64", view.dtype())));
        }
        let values = view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk"))).collect();
        Ok((values, view.shape().to_vec()))
    }

    /// A one-element tensor (I64 or F64) as f64.
    fn scalar(&self, tensor: &str) -> Result<f64> {
        let view = self.tensors.tensor(tensor).map_err(|e| self.error(tensor, e.to_string()))?;
        let data = view.data();
        let value = match (view.dtype(), data.len()) {
            (Dtype::I64, 8) => i64::from_le_bytes(data.try_into().expect("8 bytes")) as f64,
            (Dtype::F64, 8) => f64::from_le_bytes(data.try_into().expect("8 bytes")),
            (dtype, _) => return Err(self.error(tensor, format!("{dtype:?} with shape {:?}, expected one I64 or F64 value", view.shape()))),
        };
        Ok(value)
    }
}

/// One reference case, read and validated.
struct Case<'a> {
    name: &'a str,
    geom: BlockGeometry,
    u: usize,
    tau: f64,
    x: Vec<f64>,
    uniforms: Vec<f64>,
    gy: Vec<f64>,
    y: Vec<f64>,
    gx: Vec<f64>,
    /// The reference winner of every block (from `.winner_mask`).
    winners: Vec<u8>,
    /// Flat indices of every block's competitors.
    members: Vec<Vec<usize>>,
}

impl<'a> Case<'a> {
    fn read(r: &Reader, name: &'a str) -> Result<Self> {
        let tensor = |suffix: &str| format!("{name}.{suffix}");
        let (x, shape) = r.f64s(&tensor("x"))?;
        let same_shape = |suffix: &str| -> Result<Vec<f64>> {
            let (values, s) = r.f64s(&tensor(suffix))?;
            if s != shape {
                return Err(r.error(&tensor(suffix), format!("shape {s:?}, expected {shape:?} like `{name}.x`")));
            }
            Ok(values)
        };
        let (uniforms, gy, y, gx, mask) =
            (same_shape("u")?, same_shape("gy")?, same_shape("y")?, same_shape("gx")?, same_shape("winner_mask")?);

        let u = r.scalar(&tensor("U"))?;
        if !((1.0..=255.0).contains(&u) && u.fract() == 0.0) {
            return Err(r.error(&tensor("U"), format!("{u} competitors, expected an integer in 1..=255")));
        }
        let u = u as usize;
        let tau = r.scalar(&tensor("tau"))?;
        if !(tau.is_finite() && tau > 0.0) {
            return Err(r.error(&tensor("tau"), format!("{tau}, expected a finite τ > 0")));
        }
        let geom = match (r.scalar(&tensor("conv"))?, shape.as_slice()) {
            (0.0, [.., channels]) => BlockGeometry::tokens(x.len() / (*channels).max(1), *channels),
            (1.0, &[n, channels, h, w]) => BlockGeometry::nchw(n, channels, h, w),
            (c, _) => {
                return Err(
                    r.error(&tensor("conv"), format!("layout {c} for `{name}.x` of shape {shape:?}; expected 0 (tokens) or 1 (NCHW, 4-d)"))
                )
            }
        };
        geom.check(u, name)?;

        let members: Vec<Vec<usize>> = block_members(geom, u).collect();
        let mut winners = Vec::with_capacity(members.len());
        for (b, members) in members.iter().enumerate() {
            let ones: Vec<usize> = (0..u).filter(|&j| mask[members[j]] == 1.0).collect();
            let zeros = (0..u).filter(|&j| mask[members[j]] == 0.0).count();
            if ones.len() != 1 || zeros != u - 1 {
                return Err(r.error(&tensor("winner_mask"), format!("block {b} is not one-hot")));
            }
            winners.push(ones[0] as u8);
        }
        Ok(Self { name, geom, u, tau, x, uniforms, gy, y, gx, winners, members })
    }

    /// Runs the f32 kernels and compares: one forward and one backward check.
    fn check(&self) -> Result<[Check; 2]> {
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (x, uniforms, gy) = (f32s(&self.x), f32s(&self.uniforms), f32s(&self.gy));
        let noise = Noise::Uniforms(&uniforms);
        let (mut y, mut winners, mut gx) = (vec![0.0; x.len()], vec![0; self.geom.blocks(self.u)], vec![0.0; x.len()]);
        cpu::forward(&x, &mut y, &mut winners, self.geom, self.u, noise)?;
        cpu::backward(&x, &gy, &mut gx, self.geom, self.u, self.tau as f32, noise)?;

        let (closest, closest_block) = self.closest_race();
        let wrong: Vec<usize> = (0..winners.len()).filter(|&b| winners[b] != self.winners[b]).collect();
        let mut detail = format!("{} blocks, identical winners", winners.len());
        if !wrong.is_empty() {
            let ties = wrong.iter().filter(|&&b| self.race(b) < NEAR_TIE).count();
            detail = format!("{} of {} winners differ (first: block {}; {ties} of them near-ties)", wrong.len(), winners.len(), wrong[0]);
        }
        detail.push_str(&format!("; closest race: block {closest_block}, margin {closest:.1e}"));
        let forward = Check::within(format!("lwta/{}/forward", self.name), rel_err(&y, &self.y, FLOOR_FRACTION), TOLERANCE)
            .require(wrong.is_empty(), detail);
        let element_wise = rel_err(&gx, &self.gx, FLOOR_FRACTION);
        let backward = Check::within(format!("lwta/{}/backward", self.name), rel_err(&gx, &self.gx, 1.0), TOLERANCE)
            .require(true, format!("relative to max|gx|; element-wise {element_wise:.1e}"));
        Ok([forward, backward])
    }

    /// The relative margin between the best and second-best logit of block `b` (float64 noise).
    fn race(&self, b: usize) -> f64 {
        let logits: Vec<f64> = self.members[b].iter().map(|&e| self.x[e] + gumbel64(self.uniforms[e])).collect();
        let best = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let second = logits.iter().cloned().filter(|&z| z < best).fold(f64::NEG_INFINITY, f64::max);
        let ties = logits.iter().filter(|&&z| z == best).count();
        if ties > 1 {
            0.0
        } else {
            (best - second) / best.abs().max(1.0)
        }
    }

    /// The smallest race margin of the case and its block.
    fn closest_race(&self) -> (f64, usize) {
        (0..self.geom.blocks(self.u)).map(|b| (self.race(b), b)).fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
    }
}

/// The reference's noise in float64: `-ln(-ln(u + 1e-8) + 1e-8)`.
fn gumbel64(u: f64) -> f64 {
    -(-(u + 1e-8).ln() + 1e-8).ln()
}

/// Largest relative error with the floor `floor_fraction · max|reference|`.
fn rel_err(actual: &[f32], reference: &[f64], floor_fraction: f64) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    max_rel_err(actual.iter().map(|&a| a as f64), reference.iter().copied(), (floor_fraction * scale).max(f64::MIN_POSITIVE))
}

/// Flat indices of each block's competitors, in block order (see the crate docs).
fn block_members(geom: BlockGeometry, u: usize) -> impl Iterator<Item = Vec<usize>> {
    let groups = geom.channels / u;
    (0..geom.outer).flat_map(move |o| {
        (0..groups).flat_map(move |group| {
            (0..geom.inner).map(move |p| (0..u).map(|j| (o * geom.channels + group * u + j) * geom.inner + p).collect())
        })
    })
}
