//! CLIP-Dissect's similarity functions between neurons and concepts.
//!
//! Inputs are `clip` (N probe images × M concepts: the image–concept matrix P) and `target`
//! (N images × K neurons: recorded activations); every function returns K × M, higher = the concept
//! describes the neuron better. Each one reproduces CLIP-Dissect's `similarity.py` with its defaults,
//! including where PyTorch rounds in f32, so that the reference fixtures agree to 1e-4.
//!
//! ## Why (soft-)WPMI is fast here
//! CLIP-Dissect computes, per neuron k and concept m,
//! `D[k,m] = Σ_j log(term_j(C[i_kj, m]))` over the neuron's top-k images `i_kj` (C = row softmax of
//! `a·clip`), then `D − λ·logmeanexp_k(D)`: it gathers a top_k × M block per neuron and takes
//! K·top_k·M logarithms. Here:
//! * the sum of logs is the log of a product: factors are multiplied in f64 and one logarithm is
//!   taken per chunk of factors (as many as cannot underflow; with the defaults, all of them, so
//!   the only logarithms are the K·M at the end);
//! * the softmax is computed once per probe row that is some neuron's top image (never for the
//!   others), rows in parallel, with a vectorised `exp`; each factor is rounded in f32 exactly as
//!   PyTorch's expression, so only the (more accurate) summation differs from the reference;
//! * the accumulators are split into column blocks small enough for a core's L2 cache; the softmax
//!   values are computed in rounds of rows and written block-major, and each block then takes its
//!   neurons one by one, multiplying in all of a neuron's factors from the round's rows with 32
//!   columns of its accumulators held in registers (loaded and stored once per round, not once per
//!   factor);
//! * each column's top-k rows are found in one pass that keeps a bar (the k-th best so far), so
//!   most values cost one comparison;
//! * the hot loops are compiled for AVX-512 or AVX2 when the CPU has them (see `simd`).
//!
//! `cos` and `cos-cubed` are one GEMM (the workspace's checked `cvn_autograd::cpu::gemm`, threaded) scaled by column norms.
//! `rank-reorder` draws its shuffled baseline from a seeded Philox stream (CLIP-Dissect uses torch's
//! unseeded global `randperm`, which cannot be reproduced), so its result is deterministic per seed.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use cvn_models::rng::CounterRng;
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{DissectError, Result};
use cvn_autograd::cpu::gemm::{matmul, Mat};
use lwta_kernels::simd::exp_f32;

use crate::simd::multiversion;

/// Parameters of `soft_wpmi` (CLIP-Dissect defaults: `top_k=100, a=10, lam=1, min_prob=1e-7,
/// p_start=0.998, p_end=0.97`). Kept as f64 because they are Python floats in the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftWpmiParams {
    pub top_k: usize,
    pub a: f64,
    pub lam: f64,
    pub min_prob: f64,
    pub p_start: f64,
    pub p_end: f64,
}

impl Default for SoftWpmiParams {
    fn default() -> Self {
        Self { top_k: 100, a: 10.0, lam: 1.0, min_prob: 1e-7, p_start: 0.998, p_end: 0.97 }
    }
}

/// Parameters of `wpmi` (CLIP-Dissect defaults: `top_k=28, a=2, lam=0.6, min_prob=1e-7`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WpmiParams {
    pub top_k: usize,
    pub a: f64,
    pub lam: f64,
    pub min_prob: f64,
}

impl Default for WpmiParams {
    fn default() -> Self {
        Self { top_k: 28, a: 2.0, lam: 0.6, min_prob: 1e-7 }
    }
}

/// Parameters of `cos_similarity_cubed` (CLIP-Dissect default `min_norm=1e-3`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosCubedParams {
    pub min_norm: f64,
}

impl Default for CosCubedParams {
    fn default() -> Self {
        Self { min_norm: 1e-3 }
    }
}

/// Parameters of `rank_reorder` (CLIP-Dissect defaults `p=3, top_fraction=0.05, scale_p=0.5`) plus
/// the seed of the shuffled baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankReorderParams {
    pub p: f64,
    pub top_fraction: f64,
    pub scale_p: f64,
    pub seed: u64,
}

impl Default for RankReorderParams {
    fn default() -> Self {
        Self { p: 3.0, top_fraction: 0.05, scale_p: 0.5, seed: 0 }
    }
}

/// How many shuffles CLIP-Dissect's rank_reorder averages for its baseline.
const BASELINE_SHUFFLES: u32 = 5;

/// A similarity function with its parameters. Parsed from the CLI names
/// `cos, cos-cubed, rank-reorder, wpmi, soft-wpmi` (with default parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    Cos,
    CosCubed(CosCubedParams),
    RankReorder(RankReorderParams),
    Wpmi(WpmiParams),
    SoftWpmi(SoftWpmiParams),
}

impl Default for Similarity {
    /// soft-wpmi, CLIP-Dissect's default.
    fn default() -> Self {
        Self::SoftWpmi(SoftWpmiParams::default())
    }
}

impl Similarity {
    /// The default when P is exact presence (concept annotations or class labels, no CLIP):
    /// cos, which identified planted units and scored held-out AUPRC best of the five in
    /// `cargo xtask concept-benchmark` (README, "Concept benchmark"). With CLIP the default stays
    /// soft-wpmi ([`Similarity::default`]), which this benchmark cannot measure.
    pub const EXACT_DEFAULT: Self = Self::Cos;

    /// The CLI names, in the order the help lists them.
    pub const NAMES: [&'static str; 5] = ["cos", "cos-cubed", "rank-reorder", "wpmi", "soft-wpmi"];

    /// The CLI name of this function.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cos => "cos",
            Self::CosCubed(_) => "cos-cubed",
            Self::RankReorder(_) => "rank-reorder",
            Self::Wpmi(_) => "wpmi",
            Self::SoftWpmi(_) => "soft-wpmi",
        }
    }

    /// How many top-activating of `images` probe images the function compares per neuron
    /// (`None`: it uses every image).
    pub fn top_k(&self, images: usize) -> Option<usize> {
        match self {
            Self::Cos | Self::CosCubed(_) => None,
            // As `rank_reorder` counts them (Python's int() truncates).
            Self::RankReorder(params) => Some((images as f64 * params.top_fraction) as usize),
            Self::Wpmi(params) => Some(params.top_k),
            Self::SoftWpmi(params) => Some(params.top_k),
        }
    }

    /// K × M similarities of `target` (N × K activations) to `clip` (N × M image–concept scores).
    pub fn compute(&self, clip: ArrayView2<f32>, target: ArrayView2<f32>) -> Result<Array2<f32>> {
        match self {
            Self::Cos => cos(clip, target),
            Self::CosCubed(params) => cos_cubed(clip, target, params),
            Self::RankReorder(params) => rank_reorder(clip, target, params),
            Self::Wpmi(params) => wpmi(clip, target, params),
            Self::SoftWpmi(params) => soft_wpmi(clip, target, params),
        }
    }
}

impl FromStr for Similarity {
    type Err = DissectError;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "cos" => Ok(Self::Cos),
            "cos-cubed" => Ok(Self::CosCubed(CosCubedParams::default())),
            "rank-reorder" => Ok(Self::RankReorder(RankReorderParams::default())),
            "wpmi" => Ok(Self::Wpmi(WpmiParams::default())),
            "soft-wpmi" => Ok(Self::SoftWpmi(SoftWpmiParams::default())),
            other => Err(DissectError::UnknownSimilarity(other.to_string())),
        }
    }
}

impl fmt::Display for Similarity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sizes of a checked (clip, target) pair.
#[derive(Debug, Clone, Copy)]
struct Dims {
    images: usize,
    concepts: usize,
    neurons: usize,
}

fn dims(clip: &ArrayView2<f32>, target: &ArrayView2<f32>) -> Result<Dims> {
    let (images, concepts) = clip.dim();
    let (target_images, neurons) = target.dim();
    if target_images != images {
        return Err(DissectError::shape(
            "target activations",
            format!("{images} rows (one per probe image, as the image–concept matrix)"),
            format!("{target_images} rows"),
        ));
    }
    if images == 0 || concepts == 0 || neurons == 0 {
        return Err(DissectError::shape(
            "similarity inputs",
            "at least one image, concept and neuron",
            format!("{images} images × {concepts} concepts, {neurons} neurons"),
        ));
    }
    Ok(Dims { images, concepts, neurons })
}

/// The matrix as a row-major slice, copying only when the view is not already laid out that way.
fn row_major<'a>(view: &'a ArrayView2<'a, f32>) -> Cow<'a, [f32]> {
    match view.as_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(view.iter().copied().collect()),
    }
}

fn to_array(rows: usize, cols: usize, data: Vec<f32>) -> Result<Array2<f32>> {
    Array2::from_shape_vec((rows, cols), data)
        .map_err(|err| DissectError::shape("similarity output", format!("{rows} × {cols}"), err.to_string()))
}

/// `cos_similarity`: cosine between each neuron's and each concept's column over the probe images.
pub fn cos(clip: ArrayView2<f32>, target: ArrayView2<f32>) -> Result<Array2<f32>> {
    let d = dims(&clip, &target)?;
    let (c, t) = (row_major(&clip), row_major(&target));
    let scale_c = inverse_column_norms(&c, d.concepts, 0.0);
    let scale_t = inverse_column_norms(&t, d.neurons, 0.0);
    to_array(d.neurons, d.concepts, scaled_gram(&t, &c, d, &scale_t, &scale_c)?)
}

/// `cos_similarity_cubed`: columns centred, cubed, normalised (norm clipped below at `min_norm`),
/// then cosine.
pub fn cos_cubed(clip: ArrayView2<f32>, target: ArrayView2<f32>, params: &CosCubedParams) -> Result<Array2<f32>> {
    let d = dims(&clip, &target)?;
    let c = centred_cubes(&row_major(&clip), d.concepts);
    let t = centred_cubes(&row_major(&target), d.neurons);
    let scale_c = inverse_column_norms(&c, d.concepts, params.min_norm);
    let scale_t = inverse_column_norms(&t, d.neurons, params.min_norm);
    to_array(d.neurons, d.concepts, scaled_gram(&t, &c, d, &scale_t, &scale_c)?)
}

/// `out[k, m] = scale_t[k] · scale_c[m] · Σ_n t[n, k] c[n, m]`.
fn scaled_gram(t: &[f32], c: &[f32], d: Dims, scale_t: &[f32], scale_c: &[f32]) -> Result<Vec<f32>> {
    let mut out = matmul(Mat::new(t, d.images, d.neurons).t(), Mat::new(c, d.images, d.concepts))
        .map_err(|e| DissectError::shape("similarity product", "neuron and concept columns over the same images", e.to_string()))?;
    out.par_chunks_mut(d.concepts).zip(scale_t).for_each(|(row, &st)| {
        for (value, &sc) in row.iter_mut().zip(scale_c) {
            *value *= st * sc;
        }
    });
    Ok(out)
}

/// Per-column sums of `f(x)` over a row-major matrix with `cols` columns, in f64.
fn column_sums(data: &[f32], cols: usize, f: impl Fn(f32) -> f64 + Sync) -> Vec<f64> {
    let rows = data.len() / cols;
    let rows_per_task = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
    data.par_chunks(rows_per_task * cols)
        .map(|chunk| {
            let mut sums = vec![0.0f64; cols];
            for row in chunk.chunks_exact(cols) {
                for (sum, &x) in sums.iter_mut().zip(row) {
                    *sum += f(x);
                }
            }
            sums
        })
        .reduce(
            || vec![0.0; cols],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// `1 / max(‖column‖₂, min_norm)` per column, as the reference divides by the clipped norm.
fn inverse_column_norms(data: &[f32], cols: usize, min_norm: f64) -> Vec<f32> {
    column_sums(data, cols, |x| (x as f64) * (x as f64)).into_iter().map(|sq| (1.0 / sq.sqrt().max(min_norm)) as f32).collect()
}

/// `(x − column mean)³`, rounded in f32 like the reference's `(x - mean)**3`.
fn centred_cubes(data: &[f32], cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let means: Vec<f32> = column_sums(data, cols, |x| x as f64).into_iter().map(|s| (s / rows as f64) as f32).collect();
    let mut out = data.to_vec();
    out.par_chunks_mut(cols).for_each(|row| {
        for (x, &mean) in row.iter_mut().zip(&means) {
            let d = *x - mean;
            *x = d * d * d;
        }
    });
    out
}

/// The indices of the `n` largest values, largest first; ties go to the lower index, NaN counts as
/// the largest (as `torch.topk`).
pub(crate) fn largest(mut values: Vec<(f32, u32)>, n: usize) -> Vec<u32> {
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let n = n.min(values.len());
    if n == 0 {
        return Vec::new();
    }
    if n < values.len() {
        values.select_nth_unstable_by(n - 1, order);
        values.truncate(n);
    }
    values.sort_unstable_by(order);
    values.into_iter().map(|(_, i)| i).collect()
}

/// Columns scanned per task in [`top_rows_per_column`]: 64 f32 = four cache lines of each row.
const SCAN_COLUMNS: usize = 64;

/// `total_cmp`'s order of f32 as an integer order (NaN with the sign bit clear is the largest).
#[inline]
fn order_key(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// The `k` best rows of one column seen so far (as [`largest`]: larger value first, ties to the
/// lower row), found in one pass: candidates collect in a buffer of `2k`; when it is full the best
/// `k` are kept and the worst of them becomes the bar a later row must pass (a later row that only
/// ties the bar ranks after it). On random data few rows pass, so the scan is one compare per value.
struct TopRows {
    k: usize,
    /// `(order_key, row)`; the bar is i64::MIN (admits everything) until the first cut.
    candidates: Vec<(i32, u32)>,
    bar: i64,
}

impl TopRows {
    fn new(k: usize) -> Self {
        Self { k, candidates: Vec::with_capacity(2 * k), bar: i64::MIN }
    }

    #[inline]
    fn offer(&mut self, v: f32, row: u32) {
        let key = order_key(v);
        if key as i64 > self.bar {
            self.candidates.push((key, row));
            if self.candidates.len() == 2 * self.k {
                self.cut();
            }
        }
    }

    fn order(a: &(i32, u32), b: &(i32, u32)) -> std::cmp::Ordering {
        b.0.cmp(&a.0).then(a.1.cmp(&b.1))
    }

    /// Keeps the best `k` candidates; the worst of them is the new bar.
    fn cut(&mut self) {
        self.candidates.select_nth_unstable_by(self.k - 1, Self::order);
        self.candidates.truncate(self.k);
        self.bar = self.candidates[self.k - 1].0 as i64;
    }

    /// The rows, best first (fewer than `k` when the column has fewer rows).
    fn into_rows(mut self) -> impl Iterator<Item = u32> {
        if self.candidates.len() > self.k {
            self.cut();
        }
        self.candidates.sort_unstable_by(Self::order);
        self.candidates.into_iter().map(|(_, row)| row)
    }
}

/// For each column of a row-major `rows × cols` matrix, the row indices of its `k` largest entries
/// ([`largest`]'s order), as `cols × k` row-major. `k` must be at most `rows` (the callers check).
pub(crate) fn top_rows_per_column(data: &[f32], rows: usize, cols: usize, k: usize) -> Vec<u32> {
    let mut out = vec![0u32; cols * k];
    if k == 0 {
        return out;
    }
    assert!(k <= rows, "top_rows_per_column: {k} of {rows} rows");
    out.par_chunks_mut(k * SCAN_COLUMNS).enumerate().for_each(|(group, tops)| {
        let c0 = group * SCAN_COLUMNS;
        let width = tops.len() / k;
        let mut columns: Vec<TopRows> = (0..width).map(|_| TopRows::new(k)).collect();
        for (r, row) in data.chunks_exact(cols).enumerate() {
            for (column, &v) in columns.iter_mut().zip(&row[c0..c0 + width]) {
                column.offer(v, r as u32);
            }
        }
        for (top, column) in tops.chunks_exact_mut(k).zip(columns) {
            top.iter_mut().zip(column.into_rows()).for_each(|(t, row)| *t = row);
        }
    });
    out
}

/// `soft_wpmi`: WPMI where the j-th ranked top image counts with probability
/// `p_j = p_start − j/top_k·(p_start − p_end)`: `D[k,m] = Σ_j log(1 + p_j(C − 1) + min_prob)`.
pub fn soft_wpmi(clip: ArrayView2<f32>, target: ArrayView2<f32>, params: &SoftWpmiParams) -> Result<Array2<f32>> {
    // PyTorch builds p_j in f32: p_start − (arange/top_k)·(p_start − p_end), the scalars cast to f32.
    let top_k = params.top_k;
    let diff = (params.p_start - params.p_end) as f32;
    let p: Vec<f32> = (0..top_k).map(|j| params.p_start as f32 - (j as f32 / top_k as f32) * diff).collect();
    let terms = Terms::Soft { p, min_prob: params.min_prob as f32 };
    mutual_information(clip, target, top_k, params.a, params.lam, &terms, "soft-wpmi top_k")
}

/// `wpmi`: `D[k,m] = Σ_j log(C[i_kj, m] + min_prob)` over the neuron's top-k images.
pub fn wpmi(clip: ArrayView2<f32>, target: ArrayView2<f32>, params: &WpmiParams) -> Result<Array2<f32>> {
    let terms = Terms::Plain { min_prob: params.min_prob as f32 };
    mutual_information(clip, target, params.top_k, params.a, params.lam, &terms, "wpmi top_k")
}

/// The factor each top image contributes to a neuron's likelihood of a concept.
enum Terms {
    /// soft-WPMI: `1 + p_j·(C − 1) + min_prob`, `p` indexed by rank j.
    Soft { p: Vec<f32>, min_prob: f32 },
    /// WPMI: `C + min_prob`.
    Plain { min_prob: f32 },
}

/// One rank's factor, small enough to pass into the vectorised kernel by value.
#[derive(Clone, Copy)]
enum Term {
    Soft { p: f32, min_prob: f32 },
    Plain { min_prob: f32 },
}

impl Terms {
    fn at(&self, rank: usize) -> Term {
        match self {
            Self::Soft { p, min_prob } => Term::Soft { p: p[rank], min_prob: *min_prob },
            Self::Plain { min_prob } => Term::Plain { min_prob: *min_prob },
        }
    }

    /// The smallest factor any of the `top_k` ranks can produce for C in [0, 1] (factors are
    /// linear in C, so it is at an end).
    fn smallest(&self, top_k: usize) -> f64 {
        (0..top_k).map(|rank| self.at(rank)).flat_map(|term| [term.value(0.0), term.value(1.0)]).fold(f64::INFINITY, |a, b| a.min(b as f64))
    }

    /// How many factors can be multiplied in f64 before a logarithm must be taken: as many as keep
    /// the product of the smallest factors above f64's smallest normal number (e^−708), so the
    /// product never underflows; `None` when all `top_k` fit (no logarithm until the end). A
    /// non-positive factor gets its own `ln` (−inf/NaN, as the reference).
    fn fold_every(&self, top_k: usize) -> Option<usize> {
        const LN_SMALLEST_F64: f64 = -700.0; // f64::MIN_POSITIVE is e^-708.4; keep a margin
        let smallest = self.smallest(top_k);
        let chunk = if smallest >= 1.0 {
            top_k
        } else if smallest > 0.0 {
            ((LN_SMALLEST_F64 / smallest.ln()).floor() as usize).clamp(1, top_k.max(1))
        } else {
            1
        };
        (chunk < top_k).then_some(chunk)
    }
}

impl Term {
    /// The factor for one softmax value, rounded in f32 exactly as the reference's expression.
    #[inline(always)]
    fn value(self, c: f32) -> f32 {
        match self {
            Self::Soft { p, min_prob } => (1.0 + p * (c - 1.0)) + min_prob,
            Self::Plain { min_prob } => c + min_prob,
        }
    }
}

/// `acc[i] *= term(c[i])`. Matching outside the loop gives each arm a loop in which the variant is
/// known, so it vectorises without a branch per element. Inlined into [`multiply_rows`]'s
/// instruction-set versions.
#[inline(always)]
fn multiply_factors(acc: &mut [f64], c: &[f32], term: Term) {
    match term {
        Term::Soft { .. } => acc.iter_mut().zip(c).for_each(|(a, &v)| *a *= term.value(v) as f64),
        Term::Plain { .. } => acc.iter_mut().zip(c).for_each(|(a, &v)| *a *= term.value(v) as f64),
    }
}

/// Accumulators of one neuron kept in registers while its factors from a round's rows are multiplied
/// in (4 AVX-512 or 8 AVX2 registers of f64).
const REGISTER_COLUMNS: usize = 32;

multiversion! {
    /// `acc[c] *= term_rank(softmax[i·w + c])` for every `(i, rank)` of `uses` in order, `softmax`
    /// being a round's rows × `w = acc.len()` values. Each group of [`REGISTER_COLUMNS`] accumulators
    /// stays in registers across all the uses, so it is loaded and stored once per round, not once
    /// per factor (those L2 loads and stores were the hottest instructions of the old loop in `perf`).
    fn multiply_rows(acc: &mut [f64], softmax: &[f32], uses: &[(u32, u32)], terms: &Terms) {
        let w = acc.len();
        for (g, acc) in acc.chunks_mut(REGISTER_COLUMNS).enumerate() {
            let c0 = g * REGISTER_COLUMNS;
            if let Ok(acc) = <&mut [f64; REGISTER_COLUMNS]>::try_from(&mut *acc) {
                let mut a = *acc;
                for &(i, rank) in uses {
                    let c: &[f32; REGISTER_COLUMNS] = softmax[i as usize * w + c0..][..REGISTER_COLUMNS].try_into().expect("a full group");
                    multiply_factors(&mut a, c, terms.at(rank as usize));
                }
                *acc = a;
            } else {
                for &(i, rank) in uses {
                    multiply_factors(acc, &softmax[i as usize * w + c0..][..acc.len()], terms.at(rank as usize));
                }
            }
        }
    }
}

multiversion! {
    /// `values *= factor` (a row's numerators times the reciprocal of its sum: the softmax, rounded
    /// as PyTorch's).
    fn scale(values: &mut [f32], factor: f32) {
        values.iter_mut().for_each(|e| *e *= factor);
    }
}

/// Lanes of the vectorised row reductions (two AVX2 registers, for instruction-level parallelism).
const LANES: usize = 16;

multiversion! {
    /// `max_j a·row_j`, the shift of a softmax row.
    fn scaled_max(row: &[f32], a: f32) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (m, &x) in lanes.iter_mut().zip(chunk) {
                let y = a * x;
                *m = if y > *m { y } else { *m };
            }
        }
        let max = lanes.iter().fold(f32::NEG_INFINITY, |m, &y| if y > m { y } else { m });
        tail.iter().fold(max, |m, &x| {
            let y = a * x;
            if y > m { y } else { m }
        })
    }
}

multiversion! {
    /// Writes the softmax numerators `e_j = exp(a·x_j − max)` of a piece of a row into `out` and
    /// returns their sum. The softmax is `e_j · (1 / Σ e)`, rounded as PyTorch's vectorised softmax
    /// (exp, then multiply by the reciprocal of the sum).
    fn softmax_numerators(x: &[f32], a: f32, max: f32, out: &mut [f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        let mut xs = x.chunks_exact(LANES);
        let mut outs = out.chunks_exact_mut(LANES);
        for (chunk, o) in (&mut xs).zip(&mut outs) {
            for ((s, &v), o) in lanes.iter_mut().zip(chunk).zip(o) {
                *o = exp_f32(a * v - max);
                *s += *o;
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for (&v, o) in xs.remainder().iter().zip(outs.into_remainder()) {
            *o = exp_f32(a * v - max);
            sum += *o;
        }
        sum
    }
}

/// Which neurons use each probe row, and at which rank: the top-k lists inverted, so each needed row
/// is visited once.
struct RowUses {
    rows: Vec<u32>,
    /// `uses[starts[r]..starts[r + 1]]` are the `(neuron, rank)` pairs of `rows[r]`.
    starts: Vec<usize>,
    uses: Vec<(u32, u32)>,
}

impl RowUses {
    fn new(top: &[u32], top_k: usize, images: usize) -> Self {
        let mut counts = vec![0usize; images];
        top.iter().for_each(|&row| counts[row as usize] += 1);
        let rows: Vec<u32> = (0..images as u32).filter(|&r| counts[r as usize] > 0).collect();
        let mut starts = Vec::with_capacity(rows.len() + 1);
        let mut next = vec![0usize; images];
        let mut total = 0;
        for &row in &rows {
            starts.push(total);
            next[row as usize] = total;
            total += counts[row as usize];
        }
        starts.push(total);
        let mut uses = vec![(0u32, 0u32); total];
        for (i, &row) in top.iter().enumerate() {
            let slot = &mut next[row as usize];
            uses[*slot] = ((i / top_k) as u32, (i % top_k) as u32);
            *slot += 1;
        }
        Self { rows, starts, uses }
    }
}

/// The uses of one round's rows, neuron-major: `of(n)` are neuron n's `(row within the round, rank)`
/// pairs, rows ascending (so each neuron's factors are multiplied in row order, as one row at a time
/// would).
struct RoundUses {
    starts: Vec<usize>,
    uses: Vec<(u32, u32)>,
}

impl RoundUses {
    /// Rows `first .. first + n_rows` of `rows` (indices into `rows.rows`).
    fn new(rows: &RowUses, first: usize, n_rows: usize, neurons: usize) -> Self {
        let of_row = |i: usize| &rows.uses[rows.starts[first + i]..rows.starts[first + i + 1]];
        let mut starts = vec![0usize; neurons + 1];
        for i in 0..n_rows {
            of_row(i).iter().for_each(|&(n, _)| starts[n as usize + 1] += 1);
        }
        for n in 0..neurons {
            starts[n + 1] += starts[n];
        }
        let mut next = starts[..neurons].to_vec();
        let mut uses = vec![(0u32, 0u32); starts[neurons]];
        for i in 0..n_rows {
            for &(n, rank) in of_row(i) {
                uses[next[n as usize]] = (i as u32, rank);
                next[n as usize] += 1;
            }
        }
        Self { starts, uses }
    }

    fn of(&self, neuron: usize) -> &[(u32, u32)] {
        &self.uses[self.starts[neuron]..self.starts[neuron + 1]]
    }
}

/// Bytes of f64 accumulators (product and log sum per neuron and column) per column block: small
/// enough to stay in a core's L2 while the block's rows stream past.
const BLOCK_ACCUMULATOR_BYTES: usize = 1 << 20;

/// Bytes of softmax numerators computed per round (a chunk of the probe rows that are some neuron's
/// top image). More rounds cost a reload of every block's accumulators; fewer, memory.
const ROUND_BYTES: usize = 8 << 20;

/// One column block's accumulators: the running product (f64) per neuron × column, the log sums of
/// products folded so far (allocated at the first fold: with the default parameters the product
/// never needs folding), and how many factors each neuron's product holds.
struct Block {
    c0: usize,
    width: usize,
    products: Vec<f64>,
    logs: Vec<f64>,
    pending: Vec<usize>,
}

impl Block {
    /// Moves neuron n's products into its log sums.
    fn fold(&mut self, n: usize) {
        let w = self.width;
        if self.logs.is_empty() {
            self.logs = vec![0.0; self.products.len()];
        }
        fold_products(&mut self.products[n * w..][..w], &mut self.logs[n * w..][..w]);
        self.pending[n] = 0;
    }

    /// D (neuron-major, K × width): the folded log sums plus the log of what is left in the products.
    fn log_likelihoods(self) -> Vec<f64> {
        let mut d = self.products;
        log_of_products(&mut d, &self.logs);
        d
    }
}

/// `ln p` for a product of factors in (0, 1 + ε]: the f64 exponent exactly plus the f32 logarithm of
/// the mantissa (error about 1e-7 absolute, far below the f32 rounding of the reference's sums), in
/// a branch-free form that vectorises, unlike libm's `ln`. 0 gives −∞, negative or NaN p NaN.
#[inline(always)]
fn ln_product(p: f64) -> f64 {
    let bits = p.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000); // in [1, 2)
    let value = exponent as f64 * std::f64::consts::LN_2 + lwta_kernels::philox::ln_f32(mantissa as f32) as f64;
    if p > 0.0 && p < f64::INFINITY {
        value
    } else if p == 0.0 {
        f64::NEG_INFINITY
    } else if p == f64::INFINITY {
        p
    } else {
        f64::NAN
    }
}

multiversion! {
    /// `logs[i] += ln products[i]`, then `products[i] = 1`.
    fn fold_products(products: &mut [f64], logs: &mut [f64]) {
        products.iter_mut().zip(logs).for_each(|(p, l)| {
            *l += ln_product(*p);
            *p = 1.0;
        });
    }
}

multiversion! {
    /// `d[i] = folded[i] + ln d[i]` (`folded` may be empty: nothing folded yet).
    fn log_of_products(d: &mut [f64], folded: &[f64]) {
        if folded.is_empty() {
            d.iter_mut().for_each(|v| *v = ln_product(*v));
        } else {
            d.iter_mut().zip(folded).for_each(|(v, &f)| *v = f + ln_product(*v));
        }
    }
}

multiversion! {
    /// `out = D − λ·(logsumexp_k D − ln K)` for one block of D (K × w, neuron-major), loops running
    /// along the block's columns so that they vectorise.
    fn subtract_log_mean(d: &[f64], w: usize, lam: f64, ln_neurons: f64, out: &mut [f32]) {
        let mut max = vec![f64::NEG_INFINITY; w];
        for row in d.chunks_exact(w) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = if v > *m { v } else { *m };
            }
        }
        // exp(D − max) ≤ 1 in f32: terms that f32 rounds coarsely are below e^-20 of the largest.
        let mut sum = vec![0.0f64; w];
        for row in d.chunks_exact(w) {
            for ((s, &v), &m) in sum.iter_mut().zip(row).zip(&max) {
                *s += exp_f32((v - m) as f32) as f64;
            }
        }
        let log_mean: Vec<f64> = max
            .iter()
            .zip(&sum)
            .map(|(&m, &s)| if m == f64::NEG_INFINITY { m } else { m + s.ln() } - ln_neurons)
            .collect();
        for (row, o) in d.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            for ((o, &v), &l) in o.iter_mut().zip(row).zip(&log_mean) {
                *o = (v - lam * l) as f32;
            }
        }
    }
}

/// The (soft-)WPMI core: `D − λ·(logsumexp_k D − log K)` with `D[k,m] = Σ_j log term_j(C[i_kj, m])`.
///
/// Rounds over chunks of the probe rows that are some neuron's top image: first each row's softmax
/// numerators are computed (rows in parallel, one contiguous pass over the input), then every column
/// block multiplies them into its accumulators (blocks in parallel, reading the chunk from cache).
fn mutual_information(
    clip: ArrayView2<f32>,
    target: ArrayView2<f32>,
    top_k: usize,
    a: f64,
    lam: f64,
    terms: &Terms,
    top_k_name: &str,
) -> Result<Array2<f32>> {
    let d = dims(&clip, &target)?;
    if top_k == 0 || top_k > d.images {
        return Err(DissectError::parameter(
            top_k_name,
            format!("must be in 1..={} (the number of probe images: use a larger probe set), got {top_k}", d.images),
        ));
    }
    let (c, t) = (row_major(&clip), row_major(&target));
    let (m, k) = (d.concepts, d.neurons);
    let a = a as f32;
    let top = top_rows_per_column(&t, d.images, k, top_k);
    let uses = RowUses::new(&top, top_k, d.images);
    let fold_every = terms.fold_every(top_k);

    let threads = rayon::current_num_threads();
    let width = (BLOCK_ACCUMULATOR_BYTES / (16 * k)).min(m.div_ceil(4 * threads)).clamp(8, m.max(8)).min(m);
    let mut blocks: Vec<Block> = (0..m.div_ceil(width))
        .map(|b| {
            let c0 = b * width;
            let w = width.min(m - c0);
            Block { c0, width: w, products: vec![1.0; k * w], logs: Vec::new(), pending: vec![0; k] }
        })
        .collect();
    let rows_per_round = (ROUND_BYTES / (4 * m)).clamp(1, uses.rows.len().max(1));
    let rows_per_task = rows_per_round.div_ceil(4 * threads);
    // Softmax values of a round, block-major: block b's rows × width_b at [rows·c0_b ..], so that each
    // block reads its part as one contiguous stream.
    let mut numerators = vec![0.0f32; rows_per_round * m];
    for (round, rows) in uses.rows.chunks(rows_per_round).enumerate() {
        let n_rows = rows.len();
        // Rows in parallel, in tasks of `rows_per_task` rows; each task owns those rows of every
        // block's region.
        let mut tasks: Vec<Vec<&mut [f32]>> = (0..n_rows.div_ceil(rows_per_task)).map(|_| Vec::new()).collect();
        for (region, block) in numerators[..n_rows * m].chunks_mut(n_rows * width).zip(&blocks) {
            for (task, part) in tasks.iter_mut().zip(region.chunks_mut(rows_per_task * block.width)) {
                task.push(part);
            }
        }
        tasks.into_par_iter().zip(rows.par_chunks(rows_per_task)).for_each(|(mut parts, rows)| {
            for (i, &row) in rows.iter().enumerate() {
                let x = &c[row as usize * m..][..m];
                let max = scaled_max(x, a);
                let mut sum = 0.0f32;
                for (part, block) in parts.iter_mut().zip(&blocks) {
                    let w = block.width;
                    sum += softmax_numerators(&x[block.c0..][..w], a, max, &mut part[i * w..][..w]);
                }
                // Normalised while the row is still in this core's cache.
                let inv_sum = 1.0 / sum;
                for (part, block) in parts.iter_mut().zip(&blocks) {
                    scale(&mut part[i * block.width..][..block.width], inv_sum);
                }
            }
        });
        // Blocks in parallel, each streaming through its region neuron by neuron.
        let round_uses = RoundUses::new(&uses, round * rows_per_round, n_rows, k);
        blocks.par_iter_mut().zip(numerators[..n_rows * m].par_chunks(n_rows * width)).for_each(|(block, region)| {
            let w = block.width;
            for n in 0..k {
                let mut todo = round_uses.of(n);
                while !todo.is_empty() {
                    // Only up to the next fold: a product never holds more factors than f64 can take.
                    let take = fold_every.map_or(todo.len(), |every| (every - block.pending[n]).min(todo.len()));
                    let (now, rest) = todo.split_at(take);
                    multiply_rows(&mut block.products[n * w..][..w], region, now, terms);
                    block.pending[n] += take;
                    if Some(block.pending[n]) == fold_every {
                        block.fold(n);
                    }
                    todo = rest;
                }
            }
        });
    }

    let lam = lam as f32 as f64; // PyTorch multiplies by λ in f32
    let ln_neurons = (k as f32).ln() as f64;
    let finished: Vec<Vec<f32>> = blocks
        .into_par_iter()
        .map(|block| {
            let w = block.width;
            let mut out = vec![0.0f32; k * w];
            subtract_log_mean(&block.log_likelihoods(), w, lam, ln_neurons, &mut out);
            out
        })
        .collect();

    let mut out = vec![0.0f32; k * m];
    for (block, values) in finished.iter().enumerate() {
        let (c0, w) = (block * width, values.len() / k);
        for n in 0..k {
            out[n * m + c0..][..w].copy_from_slice(&values[n * w..][..w]);
        }
    }
    to_array(k, m, out)
}

/// `rank_reorder`: how well each concept's ranking of a neuron's top images reproduces the order of
/// their activations — the p-th power error of the reordered activations against a shuffled baseline,
/// divided by `mean(C)^scale_p`, negated so that higher is better.
pub fn rank_reorder(clip: ArrayView2<f32>, target: ArrayView2<f32>, params: &RankReorderParams) -> Result<Array2<f32>> {
    let d = dims(&clip, &target)?;
    let top_n = (d.images as f64 * params.top_fraction) as usize; // Python's int(): truncates
    if top_n == 0 || top_n > d.images {
        return Err(DissectError::parameter(
            "rank-reorder top_fraction",
            format!("{} × {} probe images must select between 1 and {} images", params.top_fraction, d.images, d.images),
        ));
    }
    let (c, t) = (row_major(&clip), row_major(&target));
    let (m, k) = (d.concepts, d.neurons);
    let top = top_rows_per_column(&t, d.images, k, top_n);
    let mut out = vec![0.0f32; k * m];
    out.par_chunks_mut(m).enumerate().for_each(|(neuron, out_row)| {
        let rows = &top[neuron * top_n..][..top_n];
        let descending: Vec<f32> = rows.iter().map(|&r| t[r as usize * k + neuron]).collect();
        let ascending: Vec<f32> = descending.iter().rev().copied().collect();
        let baseline = shuffled_baseline(&ascending, params.p, params.seed, neuron as u32);
        // The neuron's top rows of C, transposed so each concept's scores are contiguous.
        let mut scores = vec![0.0f32; m * top_n];
        for (i, &r) in rows.iter().enumerate() {
            for (concept, &v) in c[r as usize * m..][..m].iter().enumerate() {
                scores[concept * top_n + i] = v;
            }
        }
        let mut order: Vec<usize> = Vec::with_capacity(top_n);
        let mut rank = vec![0usize; top_n];
        for (concept, value) in out_row.iter_mut().enumerate() {
            let s = &scores[concept * top_n..][..top_n];
            let mean = s.iter().map(|&v| v as f64).sum::<f64>() / top_n as f64;
            order.clear();
            order.extend(0..top_n);
            order.sort_by(|&x, &y| s[x].total_cmp(&s[y]).then(x.cmp(&y)));
            for (r, &i) in order.iter().enumerate() {
                rank[i] = r;
            }
            let error = (0..top_n).map(|i| ((descending[i] - ascending[rank[i]]).abs() as f64).powf(params.p)).sum::<f64>() / top_n as f64;
            *value = (-(error / baseline) / mean.powf(params.scale_p)) as f32;
        }
    });
    to_array(k, m, out)
}

/// Mean p-th power difference between the sorted activations and [`BASELINE_SHUFFLES`] seeded
/// shuffles of them: the error a concept unrelated to the neuron would get.
fn shuffled_baseline(ascending: &[f32], p: f64, seed: u64, neuron: u32) -> f64 {
    let mut sum = 0.0f64;
    let mut permutation: Vec<usize> = Vec::with_capacity(ascending.len());
    for shuffle in 0..BASELINE_SHUFFLES {
        permutation.clear();
        permutation.extend(0..ascending.len());
        // One independent Philox stream per (neuron, shuffle): results do not depend on threads.
        let mut stream = CounterRng::new(seed, neuron as u64, shuffle as u64);
        for i in (1..permutation.len()).rev() {
            let j = stream.below(i + 1);
            permutation.swap(i, j);
        }
        sum += ascending.iter().zip(&permutation).map(|(&x, &j)| ((x - ascending[j]).abs() as f64).powf(p)).sum::<f64>();
    }
    sum / (BASELINE_SHUFFLES as usize * ascending.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// A deterministic pseudo-random matrix in [-1, 1).
    fn matrix(rows: usize, cols: usize, salt: u32) -> Array2<f32> {
        let mut stream = CounterRng::new(0x5eed, salt as u64, 0);
        Array2::from_shape_fn((rows, cols), |_| stream.next_u32() as f32 / 2_147_483_648.0 - 1.0)
    }

    /// CLIP-Dissect's soft_wpmi/wpmi written the direct way (gather, f32 log per term, f64 sums).
    fn direct_mi(
        clip: &Array2<f32>,
        target: &Array2<f32>,
        top_k: usize,
        a: f32,
        lam: f64,
        term: impl Fn(usize, f32) -> f32,
    ) -> Array2<f64> {
        let (n, m) = clip.dim();
        let k = target.ncols();
        let mut soft = clip.mapv(|x| a * x);
        for mut row in soft.rows_mut() {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&y| ((y - max) as f64).exp()).sum();
            row.mapv_inplace(|y| (((y - max) as f64).exp() / sum) as f32);
        }
        let mut d = Array2::<f64>::zeros((k, m));
        for neuron in 0..k {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&x, &y| target[[y, neuron]].total_cmp(&target[[x, neuron]]));
            for concept in 0..m {
                d[[neuron, concept]] = (0..top_k).map(|j| (term(j, soft[[order[j], concept]]) as f64).ln()).sum::<f64>();
            }
        }
        let mut out = d.clone();
        for concept in 0..m {
            let lme = (d.column(concept).iter().map(|v| v.exp()).sum::<f64>() / k as f64).ln();
            out.column_mut(concept).mapv_inplace(|v| v - lam * lme);
        }
        out
    }

    fn assert_close(got: &Array2<f32>, want: &Array2<f64>, tol: f64) {
        assert_eq!(got.dim(), want.dim());
        for (g, w) in got.iter().zip(want) {
            assert!(((*g as f64) - w).abs() <= tol * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn soft_wpmi_matches_direct_formula_with_many_blocks_and_short_chunks() {
        // 77 concepts over several column blocks; p_start = 1 with a tiny min_prob allows factors
        // near 1e-20, which forces several ln chunks within top_k = 40.
        let clip = matrix(120, 77, 1);
        let target = matrix(120, 9, 2);
        let params = SoftWpmiParams { top_k: 40, a: 10.0, lam: 1.0, min_prob: 1e-20, p_start: 1.0, p_end: 0.97 };
        let diff = (params.p_start - params.p_end) as f32;
        let terms = Terms::Soft {
            p: (0..40).map(|j| params.p_start as f32 - (j as f32 / 40.0) * diff).collect(),
            min_prob: params.min_prob as f32,
        };
        assert!(terms.fold_every(40).is_some(), "test must exercise chunked logs");
        let got = soft_wpmi(clip.view(), target.view(), &params).unwrap();
        let want = direct_mi(&clip, &target, 40, 10.0, 1.0, |j, c| match terms.at(j) {
            t @ Term::Soft { .. } => t.value(c),
            Term::Plain { .. } => unreachable!(),
        });
        assert_close(&got, &want, 1e-5);
    }

    #[test]
    fn wpmi_matches_direct_formula() {
        let clip = matrix(64, 30, 3);
        let target = matrix(64, 5, 4);
        let got = wpmi(clip.view(), target.view(), &WpmiParams::default()).unwrap();
        let want = direct_mi(&clip, &target, 28, 2.0, 0.6, |_, c| c + 1e-7);
        assert_close(&got, &want, 1e-5);
    }

    #[test]
    fn cos_is_the_cosine_of_columns_and_accepts_any_layout() {
        let clip = matrix(50, 7, 5);
        let target = matrix(50, 3, 6);
        let got = cos(clip.view(), target.view()).unwrap();
        let transposed = target.t().to_owned();
        let via_other_layout = cos(clip.view(), transposed.t()).unwrap();
        assert_eq!(got, via_other_layout);
        for k in 0..3 {
            for m in 0..7 {
                let (t, c) = (target.column(k), clip.column(m));
                let dot: f64 = t.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum();
                let norm = |v: ndarray::ArrayView1<f32>| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                let want = dot / (norm(t) * norm(c));
                assert!((got[[k, m]] as f64 - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn cos_cubed_clips_small_norms() {
        // A constant neuron centres to zero: its norm is clipped to min_norm and the similarity is 0,
        // not NaN.
        let clip = matrix(20, 4, 7);
        let target = Array2::from_elem((20, 2), 3.0f32);
        let got = cos_cubed(clip.view(), target.view(), &CosCubedParams::default()).unwrap();
        assert!(got.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rank_reorder_prefers_the_concept_that_orders_the_top_images() {
        // Neuron 0's activation rises with concept 0's score and is unrelated to concept 1's.
        let n = 200;
        let noise = matrix(n, 1, 8);
        let clip =
            Array2::from_shape_fn((n, 2), |(i, m)| if m == 0 { 0.2 + i as f32 / n as f32 } else { 0.2 + (noise[[i, 0]] + 1.0) / 2.0 });
        let target = Array2::from_shape_fn((n, 1), |(i, _)| i as f32);
        let params = RankReorderParams::default();
        let got = rank_reorder(clip.view(), target.view(), &params).unwrap();
        assert!(got[[0, 0]] > got[[0, 1]], "{got:?}");
        // A perfectly ordering concept has zero error.
        assert_eq!(got[[0, 0]], 0.0);
        // Seeded: same seed, same answer; another seed moves only the baseline.
        assert_eq!(got, rank_reorder(clip.view(), target.view(), &params).unwrap());
        let other = rank_reorder(clip.view(), target.view(), &RankReorderParams { seed: 7, ..params }).unwrap();
        assert_ne!(got[[0, 1]], other[[0, 1]]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let clip = matrix(10, 4, 9);
        let target = matrix(11, 2, 10);
        assert!(matches!(cos(clip.view(), target.view()), Err(DissectError::Shape { .. })));
        let target = matrix(10, 2, 10);
        let too_many = SoftWpmiParams { top_k: 11, ..Default::default() };
        let err = soft_wpmi(clip.view(), target.view(), &too_many).unwrap_err();
        assert!(err.to_string().contains("top_k"), "{err}");
        assert!(rank_reorder(clip.view(), target.view(), &RankReorderParams::default()).is_err());
        assert!("cosine".parse::<Similarity>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for name in Similarity::NAMES {
            assert_eq!(name.parse::<Similarity>().unwrap().name(), name);
        }
        assert_eq!(Similarity::default().name(), "soft-wpmi");
    }

    /// The one-pass scan cuts its candidates many times on long columns; with many ties, NaNs of
    /// both signs and infinities it must still pick exactly what sorting the whole column picks.
    #[test]
    fn top_rows_scan_agrees_with_full_selection_on_long_columns_with_ties() {
        let specials = [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
        let (rows, cols) = (700, 70);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                if h.is_multiple_of(53) {
                    specials[(h / 53) as usize % specials.len()]
                } else {
                    (h % 29) as f32 - 14.0
                }
            })
            .collect();
        for k in [1, 7, 100, rows] {
            let top = top_rows_per_column(&data, rows, cols, k);
            for col in [0, 1, 63, 64, 69] {
                let column = (0..rows).map(|r| (data[r * cols + col], r as u32)).collect();
                assert_eq!(&top[col * k..][..k], &largest(column, k)[..], "k {k}, column {col}");
            }
        }
    }

    #[test]
    fn top_rows_are_sorted_largest_first_with_ties_by_row() {
        let data = [1.0, 5.0, 3.0, 5.0, f32::NAN, 0.0];
        // One column of six rows.
        assert_eq!(top_rows_per_column(&data, 6, 1, 3), vec![4, 1, 3]);
        // Columns beyond the first gather group agree with sorting each column.
        let m = matrix(9, 37, 11);
        let top = top_rows_per_column(m.as_slice().unwrap(), 9, 37, 4);
        for col in [0, 15, 16, 36] {
            let mut rows: Vec<u32> = (0..9).collect();
            rows.sort_by(|&x, &y| m[[y as usize, col]].total_cmp(&m[[x as usize, col]]));
            assert_eq!(&top[col * 4..][..4], &rows[..4], "column {col}");
        }
    }
}
