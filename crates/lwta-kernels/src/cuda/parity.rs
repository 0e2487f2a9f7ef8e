//! GPU parity: the PTX kernels against the CPU reference [`crate::cpu`] on fresh random inputs —
//! odd sizes, every `U` in [`COMPETITORS`], tokens / NCHW with vector (quad) and scalar kernels and
//! a misaligned view, f32 and bf16, train / sample / deterministic, forward and backward.
//!
//! Output buffers are poisoned (NaN, winner 0xFF) before each launch, so an element the kernels
//! never write fails the check. What must agree:
//! * winners exactly — the noise is bit-identical, so a difference is only acceptable in a block
//!   whose two best logits are within float rounding (a *near-tie*; the data's count is reported);
//! * `y` exactly (it is `x` or 0);
//! * `dx` to 1e-6 (f32) or bf16 rounding (2^-8), relative to the size of the terms that make up
//!   each element, `|dy·h| + s/τ·(|dy·x| + Σ|dy·x|·s)`, so the cancellation in
//!   `dy·x − Σ dy·x·s` is not counted as error.
//!
//! The same cases and checks run wherever the kernels do: [`Backend`] is a GPU through
//! [`LwtaCuda`] here, and the PTX emulator in `tests/emulated_ptx.rs`.

use cudarc::driver::{CudaSlice, DriverError};
use half::bf16;
use rayon::prelude::*;

use super::plan::{self, Occupancy};
use super::{Element, LwtaCuda};
use crate::parity::Check;
use crate::philox::{gumbel_noise, uniforms_of_group};
use crate::{cpu, BlockGeometry, LwtaConfig, LwtaError, LwtaMode, Noise, Result};

/// The block sizes checked: every `U` the DISCOVER models use, and the awkward ones.
pub const COMPETITORS: [usize; 9] = [1, 2, 3, 4, 8, 12, 16, 24, 32];

/// Relative gap between a block's two best logits under which its winner may legitimately differ.
const NEAR_TIE: f64 = 1e-6;
const TOLERANCE_F32: f64 = 1e-6;
/// Half a bf16 ulp, relative, plus the f32 error.
const TOLERANCE_BF16: f64 = 1.0 / 256.0 + 1e-6;

/// One parity case: a geometry, its U and mode, and how far into its buffers the tensors start
/// (1 element makes a misaligned view that must take the scalar kernels).
#[derive(Debug, Clone)]
pub struct Case {
    pub label: String,
    pub geom: BlockGeometry,
    pub u: usize,
    pub mode: LwtaMode,
    pub view_offset: usize,
}

/// The GPU's case list.
pub fn cases() -> Vec<Case> {
    case_list(
        &COMPETITORS,
        &Sizes { rows: 301, batch: 3, channels_per_u: 3, maps: [(6, 10), (7, 5)], many_tokens: (2053, 192, 8), many_nchw: (8, 64, 28, 4) },
    )
}

/// The same coverage at sizes the PTX emulator runs in seconds: every layout and kernel shape,
/// odd and 7×7 maps, each mode, misaligned views, and grid-stride loops over many items.
pub fn small_cases() -> Vec<Case> {
    case_list(
        &[1, 2, 3, 4, 8, 12, 32],
        &Sizes { rows: 37, batch: 2, channels_per_u: 2, maps: [(4, 6), (7, 7)], many_tokens: (301, 96, 8), many_nchw: (2, 16, 14, 4) },
    )
}

/// Shapes of a case list: per U, `rows` tokens and two `batch`-image NCHW maps of
/// `channels_per_u · U` channels; then a large token and a large NCHW case `(rows/n, channels,
/// size, U)`, and the misaligned views.
struct Sizes {
    rows: usize,
    batch: usize,
    channels_per_u: usize,
    maps: [(usize, usize); 2],
    many_tokens: (usize, usize, usize),
    many_nchw: (usize, usize, usize, usize),
}

fn case_list(competitors: &[usize], sizes: &Sizes) -> Vec<Case> {
    let modes = [LwtaMode::Train, LwtaMode::Sample, LwtaMode::Deterministic];
    let (rows, batch) = (sizes.rows, sizes.batch);
    let mut cases = Vec::new();
    for &u in competitors {
        let c = sizes.channels_per_u * u;
        let [(h0, w0), (h1, w1)] = sizes.maps;
        let shapes = [
            (format!("tokens{rows}x{c}"), BlockGeometry::tokens(rows, c)),
            (format!("nchw{batch}x{c}x{h0}x{w0}"), BlockGeometry::nchw(batch, c, h0, w0)),
            (format!("nchw{batch}x{c}x{h1}x{w1}"), BlockGeometry::nchw(batch, c, h1, w1)),
        ];
        for (label, geom) in shapes {
            for mode in modes {
                cases.push(Case { label: label.clone(), geom, u, mode, view_offset: 0 });
            }
        }
    }
    // Many CTAs, and views that start one element into their buffers.
    let (many_rows, many_channels, many_u) = sizes.many_tokens;
    cases.push(Case {
        label: format!("tokens{many_rows}x{many_channels}"),
        geom: BlockGeometry::tokens(many_rows, many_channels),
        u: many_u,
        mode: LwtaMode::Train,
        view_offset: 0,
    });
    let (n, c, side, u) = sizes.many_nchw;
    cases.push(Case {
        label: format!("nchw{n}x{c}x{side}x{side}"),
        geom: BlockGeometry::nchw(n, c, side, side),
        u,
        mode: LwtaMode::Train,
        view_offset: 0,
    });
    let (h, w) = sizes.maps[0];
    cases.push(Case {
        label: format!("tokens{rows}x48+1"),
        geom: BlockGeometry::tokens(rows, 48),
        u: 8,
        mode: LwtaMode::Train,
        view_offset: 1,
    });
    cases.push(Case {
        label: format!("nchw{batch}x24x{h}x{w}+1"),
        geom: BlockGeometry::nchw(batch, 24, h, w),
        u: 12,
        mode: LwtaMode::Sample,
        view_offset: 1,
    });
    cases
}

/// Runs every case in f32 and bf16 on `cuda`; `seed` picks the inputs and the noise streams.
pub fn gpu_checks(cuda: &LwtaCuda, seed: u64) -> Result<Vec<Check>> {
    checks(&mut Gpu(cuda), &cases(), seed)
}

/// Runs `cases` in f32 and bf16 on `backend`; `seed` picks the inputs and the noise streams.
pub fn checks<B: Backend>(backend: &mut B, cases: &[Case], seed: u64) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        checks.push(check_case::<f32, B>(backend, case, seed, index as u64)?);
        checks.push(check_case::<bf16, B>(backend, case, seed, index as u64)?);
    }
    Ok(checks)
}

/// What a backend runs for one case and storage type.
pub struct CaseRun<'a, T> {
    pub case: &'a Case,
    pub noise: Noise<'static>,
    pub tau: f32,
    pub x: &'a [T],
    pub dy: &'a [T],
}

/// The kernels' outputs, widened to f32, and the kernel shape (`quad` / `scalar`) that ran.
pub struct KernelOutputs {
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub winners: Vec<u8>,
    pub shape: &'static str,
}

/// Something that runs the PTX kernels.
pub trait Backend {
    /// Prefix of the check names (`cuda`).
    fn name(&self) -> &'static str;
    /// Runs the forward and the backward pass of `run` on views starting `case.view_offset`
    /// elements into their buffers. Output elements the kernels do not write must come back as
    /// NaN (winners as 0xFF).
    fn run<T: Element>(&mut self, run: &CaseRun<T>) -> Result<KernelOutputs>;
}

/// The kernel shape [`plan::forward`] picks for a case whose buffers start at `base` (a
/// 256-byte-aligned address) plus the view offset.
pub fn forward_shape<T: Element>(case: &Case, noise: Noise, base: u64) -> Result<&'static str> {
    let one = |_, _, _| Ok(1);
    let occupancy = Occupancy { sm_slots: 1, blocks_per_sm: &one };
    let view = base + case.view_offset as u64 * T::BYTES;
    let launch = plan::forward::<T>(case.geom, case.u, noise, view, view, base, &occupancy)?;
    Ok(launch.map_or("no", |l| l.kernel.shape()))
}

struct Gpu<'a>(&'a LwtaCuda);

impl Backend for Gpu<'_> {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn run<T: Element>(&mut self, run: &CaseRun<T>) -> Result<KernelOutputs> {
        let (cuda, case) = (self.0, run.case);
        let (geom, u, off, label) = (case.geom, case.u, case.view_offset, &case.label);
        let (n, blocks) = (geom.len(), geom.blocks(u));
        // Device buffers, `off` elements of padding in front, outputs poisoned.
        let stream = cuda.stream();
        let padded = |v: &[T]| -> Vec<T> { std::iter::repeat_n(T::from_f32(0.0), off).chain(v.iter().copied()).collect() };
        let poison = vec![T::from_f32(f32::NAN); n + off];
        let x_dev: CudaSlice<T> = stream.clone_htod(&padded(run.x)).map_err(dev("uploading x", label))?;
        let dy_dev: CudaSlice<T> = stream.clone_htod(&padded(run.dy)).map_err(dev("uploading dy", label))?;
        let mut y_dev: CudaSlice<T> = stream.clone_htod(&poison).map_err(dev("allocating y", label))?;
        let mut dx_dev: CudaSlice<T> = stream.clone_htod(&poison).map_err(dev("allocating dx", label))?;
        let mut w_dev: CudaSlice<u8> = stream.clone_htod(&vec![0xffu8; blocks]).map_err(dev("allocating winners", label))?;
        let shape = {
            use cudarc::driver::DevicePtr;
            let (base, _x) = x_dev.device_ptr(stream);
            forward_shape::<T>(case, run.noise, base)?
        };
        cuda.forward(&x_dev.slice(off..), &mut y_dev.slice_mut(off..), &mut w_dev, geom, u, run.noise)?;
        cuda.backward(&x_dev.slice(off..), &dy_dev.slice(off..), &mut dx_dev.slice_mut(off..), geom, u, run.tau, run.noise)?;
        stream.synchronize().map_err(dev("running the kernels", label))?;
        let y = stream.clone_dtoh(&y_dev).map_err(dev("downloading y", label))?[off..].iter().map(|v| v.to_f32()).collect();
        let dx = stream.clone_dtoh(&dx_dev).map_err(dev("downloading dx", label))?[off..].iter().map(|v| v.to_f32()).collect();
        let winners = stream.clone_dtoh(&w_dev).map_err(dev("downloading winners", label))?;
        Ok(KernelOutputs { y, dx, winners, shape })
    }
}

/// Standard normal values from the Philox stream `(seed, stream)` (Box–Muller), for test inputs.
pub fn random_normals(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(4096).enumerate().for_each(|(chunk, values)| {
        for (i, pair) in values.chunks_mut(2).enumerate() {
            let group = (chunk * 4096 / 2 + i) as u64;
            let [a, b, ..] = uniforms_of_group(seed, stream, group);
            // uniforms are multiples of 2^-23 in [0, 1): shift into (0, 1) for the logarithm
            let radius = (-2.0 * (f64::from(a) + 0.5 / 8_388_608.0).ln()).sqrt();
            let angle = std::f64::consts::TAU * f64::from(b);
            pair[0] = (radius * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (radius * angle.sin()) as f32;
            }
        }
    });
    out
}

/// Maps a driver error to one that names the step and the case.
fn dev(what: &'static str, label: &str) -> impl Fn(DriverError) -> LwtaError {
    let label = label.to_string();
    move |e| LwtaError::Cuda(format!("{what} for parity case {label}: {e}"))
}

fn check_case<T: Element, B: Backend>(backend: &mut B, case: &Case, seed: u64, index: u64) -> Result<Check> {
    let Case { label, geom, u, mode, .. } = case;
    let (geom, u) = (*geom, *u);
    let (n, blocks) = (geom.len(), geom.blocks(u));
    let config = LwtaConfig::default();
    let (noise, tau) = match mode {
        LwtaMode::Train => (Noise::Philox { seed, offset: index }, config.tau_train),
        LwtaMode::Sample => (Noise::Philox { seed, offset: index }, config.tau_test),
        LwtaMode::Deterministic => (Noise::None, config.tau_train),
    };
    // Inputs in storage precision; the reference reads the same (widened) values.
    let to_storage = |v: Vec<f32>| -> Vec<T> { v.into_iter().map(T::from_f32).collect() };
    let x: Vec<T> = to_storage(random_normals(seed ^ 0x5eed, 2 * index, n));
    let dy: Vec<T> = to_storage(random_normals(seed ^ 0x5eed, 2 * index + 1, n));
    let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let dy32: Vec<f32> = dy.iter().map(|v| v.to_f32()).collect();

    let (mut y_ref, mut w_ref, mut dx_ref) = (vec![0.0f32; n], vec![0u8; blocks], vec![0.0f32; n]);
    cpu::forward(&x32, &mut y_ref, &mut w_ref, geom, u, noise)?;
    cpu::backward(&x32, &dy32, &mut dx_ref, geom, u, tau, noise)?;

    let KernelOutputs { y, dx, winners: w, shape: kernel } = backend.run(&CaseRun { case, noise, tau, x: &x, dy: &dy })?;

    // The logits both sides compared (the noise is the CPU's own stream).
    let mut logits = vec![0.0f32; n];
    if let Noise::Philox { seed, offset } = noise {
        gumbel_noise(seed, offset, 0, &mut logits);
    }
    for (v, &xv) in logits.iter_mut().zip(&x32) {
        *v += xv;
    }

    let stats = compare(
        geom,
        u,
        tau,
        Inputs { logits: &logits, x: &x32, dy: &dy32 },
        Outputs { y: &y, dx: &dx, winners: &w },
        Outputs { y: &y_ref, dx: &dx_ref, winners: &w_ref },
    );
    let tolerance = if T::BYTES == 4 { TOLERANCE_F32 } else { TOLERANCE_BF16 };
    let name = format!("{}/{label}/U{u}/{}/{}", backend.name(), T::SUFFIX, mode_name(*mode));
    let detail = format!(
        "{kernel} kernels; winners wrong {}/{blocks} (near-ties in data: {}); y max_rel_err {:.3e}; dx max_rel_err {:.3e}; unwritten {}",
        stats.wrong_winners, stats.near_ties, stats.y_err, stats.dx_err, stats.unwritten
    );
    Ok(Check::within(name, stats.y_err.max(stats.dx_err), tolerance)
        .require(stats.unwritten == 0 && stats.unexplained_winners == 0, detail))
}

/// What both implementations saw: the logits `x + g` they compared, and the inputs.
struct Inputs<'a> {
    logits: &'a [f32],
    x: &'a [f32],
    dy: &'a [f32],
}

struct Outputs<'a> {
    y: &'a [f32],
    dx: &'a [f32],
    winners: &'a [u8],
}

/// Compares the kernels' outputs with the reference's, block by block (see the module docs).
fn compare(geom: BlockGeometry, u: usize, tau: f32, inputs: Inputs, gpu: Outputs, reference: Outputs) -> Stats {
    let mut stats = Stats::default();
    for block in 0..geom.blocks(u) {
        let members = members(geom, u, block);
        let near_tie = is_near_tie(members.clone().map(|e| inputs.logits[e]));
        stats.near_ties += near_tie as usize;
        let (winner, expected) = (gpu.winners[block], reference.winners[block]);
        if winner as usize >= u {
            stats.unwritten += 1;
            continue;
        }
        if winner != expected {
            stats.wrong_winners += 1;
            stats.unexplained_winners += !near_tie as usize;
            continue; // y and dx legitimately differ in this block
        }
        let scales = term_scales(members.clone().map(|e| (inputs.logits[e], inputs.x[e], inputs.dy[e])), expected as usize, tau);
        for (e, scale) in members.zip(scales) {
            let (y, dx) = (gpu.y[e], gpu.dx[e]);
            stats.unwritten += y.is_nan() as usize + dx.is_nan() as usize;
            let y_ref = f64::from(reference.y[e]);
            if f64::from(y) != y_ref {
                let err = (f64::from(y) - y_ref).abs() / y_ref.abs().max(1e-30);
                stats.y_err = stats.y_err.max(if err.is_nan() { f64::INFINITY } else { err });
            }
            let err = (f64::from(dx) - f64::from(reference.dx[e])).abs() / scale;
            stats.dx_err = stats.dx_err.max(if err.is_nan() { f64::INFINITY } else { err });
        }
    }
    stats
}

#[derive(Default)]
struct Stats {
    near_ties: usize,
    wrong_winners: usize,
    unexplained_winners: usize,
    unwritten: usize,
    y_err: f64,
    dx_err: f64,
}

fn mode_name(mode: LwtaMode) -> &'static str {
    match mode {
        LwtaMode::Train => "train",
        LwtaMode::Sample => "sample",
        LwtaMode::Deterministic => "deterministic",
    }
}

/// Flat indices of the competitors of `block` (numbered as in the crate docs).
fn members(geom: BlockGeometry, u: usize, block: usize) -> impl Iterator<Item = usize> + Clone {
    let (plane, pixel) = (block / geom.inner, block % geom.inner);
    let first = plane * u * geom.inner + pixel;
    (0..u).map(move |j| first + j * geom.inner)
}

/// Whether the best two logits are within rounding of each other (or the block has one member).
fn is_near_tie(values: impl Iterator<Item = f32>) -> bool {
    let (mut best, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for v in values.map(f64::from) {
        if v > best {
            second = best;
            best = v;
        } else if v > second {
            second = v;
        }
    }
    second.is_finite() && best - second <= NEAR_TIE * best.abs().max(1.0)
}

/// Per competitor, the size of the terms of its `dx` (in f64): `|dy|·h + s/τ·(|dy·x| + Σ|dy·x|·s)`,
/// floored at 1e-6 of the block's largest so that values near underflow compare to the block's scale.
fn term_scales(members: impl Iterator<Item = (f32, f32, f32)>, winner: usize, tau: f32) -> Vec<f64> {
    let members: Vec<(f64, f64, f64)> = members.map(|(v, x, dy)| (f64::from(v), f64::from(x), f64::from(dy))).collect();
    let tau = f64::from(tau);
    let max = members.iter().map(|m| m.0).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = members.iter().map(|m| ((m.0 - max) / tau).exp()).collect();
    let z: f64 = e.iter().sum();
    let weighted: f64 = members.iter().zip(&e).map(|(m, e)| (m.1 * m.2).abs() * e / z).sum();
    let scales: Vec<f64> = members
        .iter()
        .zip(&e)
        .enumerate()
        .map(|(j, (m, e))| if j == winner { m.2.abs() } else { 0.0 } + e / z / tau * ((m.1 * m.2).abs() + weighted))
        .collect();
    let floor = 1e-6 * scales.iter().copied().fold(0.0, f64::max);
    scales.into_iter().map(|s| s.max(floor).max(f64::MIN_POSITIVE)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_follow_the_block_numbering() {
        let geom = BlockGeometry::nchw(2, 6, 2, 3); // inner 6, U 3: 2 groups per sample
        assert_eq!(members(geom, 3, 0).collect::<Vec<_>>(), vec![0, 6, 12]);
        assert_eq!(members(geom, 3, 7).collect::<Vec<_>>(), vec![19, 25, 31]); // plane 1, pixel 1
        let tokens = BlockGeometry::tokens(4, 8);
        assert_eq!(members(tokens, 4, 3).collect::<Vec<_>>(), vec![12, 13, 14, 15]);
    }

    #[test]
    fn near_ties_are_rounding_close() {
        assert!(is_near_tie([1.0, 1.0 + 1e-7, -3.0].into_iter()));
        assert!(!is_near_tie([1.0, 1.001, -3.0].into_iter()));
        assert!(!is_near_tie([2.5].into_iter()));
    }

    #[test]
    fn term_scales_bound_the_reference_gradient() {
        let members = [(0.3f32, 0.5f32, -1.0f32), (1.2, -0.7, 0.4), (-0.5, 2.0, 0.9)];
        let (x, dy): (Vec<f32>, Vec<f32>) = members.iter().map(|m| (m.1, m.2)).unzip();
        let mut dx = vec![0.0; 3];
        // logits = x (no noise), winner 1
        let members_x: Vec<(f32, f32, f32)> = x.iter().zip(&dy).map(|(&x, &dy)| (x, x, dy)).collect();
        cpu::backward(&x, &dy, &mut dx, BlockGeometry::tokens(1, 3), 3, 1.67, Noise::None).unwrap();
        let scales = term_scales(members_x.into_iter(), 2, 1.67);
        for (d, s) in dx.iter().zip(&scales) {
            assert!(f64::from(d.abs()) <= s * (1.0 + 1e-6), "{d} > {s}");
        }
    }

    /// The comparison itself, with the CPU standing in for the GPU: identical outputs pass,
    /// and each kind of kernel bug is caught.
    #[test]
    fn compare_catches_unwritten_values_wrong_winners_and_gradients() {
        let (geom, u, tau) = (BlockGeometry::nchw(2, 8, 3, 5), 4, 1.67);
        let noise = Noise::Philox { seed: 3, offset: 4 };
        let x = random_normals(5, 0, geom.len());
        let dy = random_normals(5, 1, geom.len());
        let mut logits = vec![0.0; geom.len()];
        gumbel_noise(3, 4, 0, &mut logits);
        logits.iter_mut().zip(&x).for_each(|(g, x)| *g += x);
        let (mut y, mut w, mut dx) = (vec![0.0; geom.len()], vec![0u8; geom.blocks(u)], vec![0.0; geom.len()]);
        cpu::forward(&x, &mut y, &mut w, geom, u, noise).unwrap();
        cpu::backward(&x, &dy, &mut dx, geom, u, tau, noise).unwrap();
        let against_cpu = |y_gpu: &[f32], dx_gpu: &[f32], w_gpu: &[u8]| {
            let inputs = Inputs { logits: &logits, x: &x, dy: &dy };
            compare(geom, u, tau, inputs, Outputs { y: y_gpu, dx: dx_gpu, winners: w_gpu }, Outputs { y: &y, dx: &dx, winners: &w })
        };

        let same = against_cpu(&y, &dx, &w);
        assert_eq!((same.unwritten, same.wrong_winners, same.y_err, same.dx_err), (0, 0, 0.0, 0.0));

        let mut unwritten = dx.clone();
        unwritten[7] = f32::NAN;
        assert_eq!(against_cpu(&y, &unwritten, &w).unwritten, 1);

        let mut off = dx.clone();
        off[9] *= 1.0 + 1e-4;
        let err = against_cpu(&y, &off, &w).dx_err;
        assert!(err > TOLERANCE_F32, "{err}");

        let mut swapped = w.clone();
        swapped[2] = (swapped[2] + 1) % u as u8;
        let s = against_cpu(&y, &dx, &swapped);
        assert_eq!((s.wrong_winners, s.unexplained_winners), (1, 1));

        let mut poisoned = w.clone();
        poisoned[5] = 0xff;
        assert_eq!(against_cpu(&y, &dx, &poisoned).unwritten, 1);
    }

    #[test]
    fn random_normals_have_unit_moments() {
        let v = random_normals(1, 2, 100_001);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
        assert_ne!(random_normals(1, 2, 8), random_normals(1, 3, 8));
    }

    #[test]
    fn every_competitor_count_and_layout_is_covered() {
        for (cases, competitors) in [(cases(), &COMPETITORS[..]), (small_cases(), &[1, 2, 3, 4, 8, 12, 32][..])] {
            for &u in competitors {
                assert!(cases.iter().any(|c| c.u == u && c.geom.inner == 1));
                assert!(cases.iter().any(|c| c.u == u && c.geom.inner % 4 == 0 && c.geom.inner > 1));
                assert!(cases.iter().any(|c| c.u == u && c.geom.inner % 4 != 0));
            }
            assert!(cases.iter().any(|c| c.view_offset == 1));
        }
        let gpu = cases();
        assert_eq!(gpu.len(), 9 * 9 + 4);
        assert_eq!(
            (gpu[0].label.as_str(), gpu[82].label.as_str(), gpu[84].label.as_str()),
            ("tokens301x3", "nchw8x64x28x28", "nchw3x24x6x10+1")
        );
    }
}
