//! The CPU implementation of stochastic LWTA: single pass, multi-threaded, vectorised.
//!
//! * [`forward`] reads `x` once and writes `y = x·onehot` and the winner index of every block;
//! * [`backward`] reads `x` and `dy` once and writes `dx`, regenerating the noise from the Philox
//!   stream (it is never stored).
//!
//! ## How it is organised (and why)
//! Rayon splits the tensor into chunks of whole `(outer, group)` slabs (`U·inner` contiguous
//! elements, `inner` winners), big enough to amortise scheduling. Each chunk is cut into *tiles*
//! of at most [`TILE_ELEMENTS`] elements that live in L1: a tile holds `lanes` blocks — consecutive
//! blocks for tokens, consecutive pixels of one slab for NCHW. A tile is
//! 1. filled with noise for its contiguous memory runs ([`crate::philox::gumbel_noise`], Philox
//!    on 16 counters at once and the branch-free `ln_f32`),
//! 2. gathered into a competitor-major ("structure of arrays") buffer, so that
//! 3. the argmax / softmax over the `U` competitors of every block runs across lanes in vector
//!    registers, and
//! 4. scattered back to memory order.
//!
//! Kernels are compiled per instruction set ([`crate::simd::run`]) and per common `U` (2, 4, 8, 16:
//! constant strides let the token layout's transposes vectorise); other `U` take a generic copy.

use rayon::prelude::*;

use crate::philox::{gumbel_from_uniform, gumbel_noise};
use crate::simd::{self, exp_f32};
use crate::{BlockGeometry, LwtaError, Noise, Result};

/// Elements per rayon task: enough work (≈ 30 µs) to amortise scheduling, small enough to balance.
const CHUNK_ELEMENTS: usize = 1 << 15;
/// Elements per tile: its half-dozen buffers together stay well inside L1.
const TILE_ELEMENTS: usize = 512;

/// Forward pass. For every block, the winner is the first `j` maximising `x_j + g_j` (the hard
/// forward does not depend on τ); `y` is `x` at the winner and 0 elsewhere, and `winners[block]`
/// is the winner's index in the block (blocks numbered as in the crate docs). With `u = 1` every
/// element wins (`y = x`). A NaN logit never beats an earlier competitor.
pub fn forward(x: &[f32], y: &mut [f32], winners: &mut [u8], geom: BlockGeometry, u: usize, noise: Noise) -> Result<()> {
    geom.check(u, "lwta_kernels::cpu::forward")?;
    expect_len("x", x.len(), geom.len())?;
    expect_len("y", y.len(), geom.len())?;
    expect_len("winners", winners.len(), geom.blocks(u))?;
    expect_noise(noise, geom.len())?;
    let Some(split) = Split::new(geom, u) else { return Ok(()) };
    x.par_chunks(split.elements)
        .zip(y.par_chunks_mut(split.elements))
        .zip(winners.par_chunks_mut(split.blocks))
        .enumerate()
        .for_each(|(i, ((x, y), winners))| {
            let chunk = Chunk { x, start: i * split.elements, inner: geom.inner, noise };
            run_specialised(Forward { chunk, y, winners }, u);
        });
    Ok(())
}

/// Backward pass of the straight-through hard Gumbel-softmax at temperature `tau`:
/// with `s = softmax((x + g)/τ)` and `h` the forward's one-hot,
/// `dx_j = dy_j·h_j + (s_j/τ)·(dy_j·x_j − Σ_i dy_i·x_i·s_i)`.
/// `noise` must be the forward's: the same stream regenerates the same `g`.
pub fn backward(x: &[f32], dy: &[f32], dx: &mut [f32], geom: BlockGeometry, u: usize, tau: f32, noise: Noise) -> Result<()> {
    geom.check(u, "lwta_kernels::cpu::backward")?;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(LwtaError::Tau(tau));
    }
    expect_len("x", x.len(), geom.len())?;
    expect_len("dy", dy.len(), geom.len())?;
    expect_len("dx", dx.len(), geom.len())?;
    expect_noise(noise, geom.len())?;
    let Some(split) = Split::new(geom, u) else { return Ok(()) };
    x.par_chunks(split.elements)
        .zip(dy.par_chunks(split.elements))
        .zip(dx.par_chunks_mut(split.elements))
        .enumerate()
        .for_each(|(i, ((x, dy), dx))| {
            let chunk = Chunk { x, start: i * split.elements, inner: geom.inner, noise };
            run_specialised(Backward { chunk, dy, dx, inv_tau: 1.0 / tau }, u);
        });
    Ok(())
}

fn expect_len(name: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(LwtaError::Length { name, got, expected })
    }
}

fn expect_noise(noise: Noise, elements: usize) -> Result<()> {
    match noise {
        Noise::Uniforms(u) => expect_len("uniforms", u.len(), elements),
        Noise::None | Noise::Philox { .. } => Ok(()),
    }
}

/// How the tensor is cut into rayon tasks: whole slabs of `U·inner` elements.
struct Split {
    /// Elements per chunk.
    elements: usize,
    /// Blocks (winner entries) per chunk.
    blocks: usize,
}

impl Split {
    /// `None` when the tensor has no elements.
    fn new(geom: BlockGeometry, u: usize) -> Option<Self> {
        let slab = u * geom.inner;
        if geom.is_empty() {
            return None;
        }
        let slabs = (CHUNK_ELEMENTS / slab).max(1);
        Some(Self { elements: slabs * slab, blocks: slabs * geom.inner })
    }
}

/// Competitors per block, either a compile-time constant (so strides are constants) or not.
trait Competitors: Copy + Send + Sync {
    fn get(self) -> usize;
}

#[derive(Clone, Copy)]
struct Fixed<const U: usize>;

impl<const U: usize> Competitors for Fixed<U> {
    #[inline(always)]
    fn get(self) -> usize {
        U
    }
}

#[derive(Clone, Copy)]
struct Any(usize);

impl Competitors for Any {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// A pass over one chunk: the work of one tile, for either layout.
trait Pass {
    fn chunk(&self) -> &Chunk<'_>;
    /// Processes the tile at memory `offset` (in the chunk) holding blocks `first_block ..
    /// first_block + lanes` (in the chunk's winner numbering).
    fn tile<L: Layout>(&mut self, layout: L, scratch: &mut Scratch, offset: usize, first_block: usize, lanes: usize);
}

/// A [`Pass`] with its `U` chosen, ready for [`simd::run`].
struct Specialised<P, C>(P, C);

impl<P: Pass, C: Competitors> simd::Kernel for Specialised<P, C> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Specialised(mut pass, u) = self;
        let (len, inner) = (pass.chunk().x.len(), pass.chunk().inner);
        let mut scratch = Scratch::new();
        if inner == 1 {
            let layout = Tokens(u);
            layout.tiles(len, |offset, block, lanes| pass.tile(layout, &mut scratch, offset, block, lanes));
        } else {
            let layout = Pixels { u, inner };
            layout.tiles(len, |offset, block, lanes| pass.tile(layout, &mut scratch, offset, block, lanes));
        }
    }
}

fn run_specialised<P: Pass>(pass: P, u: usize) {
    match u {
        2 => simd::run(Specialised(pass, Fixed::<2>)),
        4 => simd::run(Specialised(pass, Fixed::<4>)),
        8 => simd::run(Specialised(pass, Fixed::<8>)),
        16 => simd::run(Specialised(pass, Fixed::<16>)),
        _ => simd::run(Specialised(pass, Any(u))),
    }
}

/// Where the elements of a tile live. A tile is `runs` contiguous memory runs, `stride` apart,
/// each `outer × inner` elements in memory order; element `(r, a, b)` belongs to lane
/// `lane_of(r, a, b)` as competitor `competitor_of(r, a, b)`.
trait Layout: Copy {
    fn u(self) -> usize;
    /// `(runs, stride between runs)`.
    fn runs(self) -> (usize, usize);
    /// `(outer, inner)` shape of one run of a tile with `lanes` blocks.
    fn run_shape(self, lanes: usize) -> (usize, usize);
    fn lane_of(self, r: usize, a: usize, b: usize) -> usize;
    fn competitor_of(self, r: usize, a: usize, b: usize) -> usize;
    /// Calls `tile(memory offset, first block, lanes)` for the tiles covering a chunk of `len`
    /// elements, in order.
    fn tiles(self, len: usize, tile: impl FnMut(usize, usize, usize));
}

/// Tokens `[..., C]`: a block is `U` contiguous elements; a tile is `lanes` consecutive blocks.
#[derive(Clone, Copy)]
struct Tokens<C>(C);

impl<C: Competitors> Layout for Tokens<C> {
    #[inline(always)]
    fn u(self) -> usize {
        self.0.get()
    }
    #[inline(always)]
    fn runs(self) -> (usize, usize) {
        (1, 0)
    }
    #[inline(always)]
    fn run_shape(self, lanes: usize) -> (usize, usize) {
        (lanes, self.u())
    }
    #[inline(always)]
    fn lane_of(self, _r: usize, a: usize, _b: usize) -> usize {
        a
    }
    #[inline(always)]
    fn competitor_of(self, _r: usize, _a: usize, b: usize) -> usize {
        b
    }
    #[inline(always)]
    fn tiles(self, len: usize, mut tile: impl FnMut(usize, usize, usize)) {
        let u = self.u();
        let (blocks, per_tile) = (len / u, TILE_ELEMENTS / u);
        for first in (0..blocks).step_by(per_tile) {
            tile(first * u, first, per_tile.min(blocks - first));
        }
    }
}

/// NCHW: competitor `j` of pixel `p` sits `j·inner` after competitor 0; a tile is `lanes`
/// consecutive pixels of one `(n, group)` slab, i.e. `U` channel runs of `lanes` elements.
#[derive(Clone, Copy)]
struct Pixels<C> {
    u: C,
    inner: usize,
}

impl<C: Competitors> Layout for Pixels<C> {
    #[inline(always)]
    fn u(self) -> usize {
        self.u.get()
    }
    #[inline(always)]
    fn runs(self) -> (usize, usize) {
        (self.u(), self.inner)
    }
    #[inline(always)]
    fn run_shape(self, lanes: usize) -> (usize, usize) {
        (1, lanes)
    }
    #[inline(always)]
    fn lane_of(self, _r: usize, _a: usize, b: usize) -> usize {
        b
    }
    #[inline(always)]
    fn competitor_of(self, r: usize, _a: usize, _b: usize) -> usize {
        r
    }
    #[inline(always)]
    fn tiles(self, len: usize, mut tile: impl FnMut(usize, usize, usize)) {
        let (u, inner) = (self.u(), self.inner);
        let per_tile = (TILE_ELEMENTS / u).min(inner);
        for slab in 0..len / (u * inner) {
            for first in (0..inner).step_by(per_tile) {
                tile(slab * u * inner + first, slab * inner + first, per_tile.min(inner - first));
            }
        }
    }
}

/// Visits every element of a tile: `f(memory offset, position in the noise buffer, lane, j)`.
/// The noise buffer holds the tile's runs back to back, so its position is the memory-order rank.
#[inline(always)]
fn for_each_element<L: Layout>(layout: L, lanes: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let (runs, stride) = layout.runs();
    let (outer, inner) = layout.run_shape(lanes);
    for r in 0..runs {
        for a in 0..outer {
            for b in 0..inner {
                let rank = (r * outer + a) * inner + b;
                f(r * stride + a * inner + b, rank, layout.lane_of(r, a, b), layout.competitor_of(r, a, b));
            }
        }
    }
}

/// What a pass over a chunk reads: `x`, where it starts in the tensor, and the noise.
struct Chunk<'a> {
    x: &'a [f32],
    /// Flat index of `x[0]` in the whole tensor (the noise stream is indexed by it).
    start: usize,
    inner: usize,
    noise: Noise<'a>,
}

impl Chunk<'_> {
    /// Fills `scratch.logits` (competitor-major) with `x + g` for the tile at `offset`.
    #[inline(always)]
    fn load_logits<L: Layout>(&self, layout: L, scratch: &mut Scratch, offset: usize, lanes: usize) {
        let (runs, stride) = layout.runs();
        let (outer, inner) = layout.run_shape(lanes);
        let run_len = outer * inner;
        for r in 0..runs {
            let start = self.start + offset + r * stride;
            fill_noise(self.noise, start, &mut scratch.noise[r * run_len..(r + 1) * run_len]);
        }
        let x = &self.x[offset..];
        let (noise, logits) = (&scratch.noise, &mut scratch.logits);
        for_each_element(layout, lanes, |mem, rank, lane, j| logits[j * lanes + lane] = x[mem] + noise[rank]);
    }
}

/// Writes the noise `g` of elements `start .. start + out.len()` of the tensor.
#[inline(always)]
fn fill_noise(noise: Noise, start: usize, out: &mut [f32]) {
    match noise {
        Noise::None => out.fill(0.0),
        Noise::Philox { seed, offset } => gumbel_noise(seed, offset, start as u64, out),
        Noise::Uniforms(uniforms) => {
            let uniforms = &uniforms[start..start + out.len()];
            for (g, &u) in out.iter_mut().zip(uniforms) {
                *g = gumbel_from_uniform(u);
            }
        }
    }
}

/// Per lane, the first competitor with the largest logit (`best`, `winner`).
#[inline(always)]
fn argmax(u: usize, lanes: usize, logits: &[f32], best: &mut [f32], winner: &mut [u32]) {
    let (best, winner) = (&mut best[..lanes], &mut winner[..lanes]);
    best.copy_from_slice(&logits[..lanes]);
    winner.fill(0);
    for j in 1..u {
        for ((b, w), &z) in best.iter_mut().zip(winner.iter_mut()).zip(&logits[j * lanes..(j + 1) * lanes]) {
            let wins = z > *b;
            *b = if wins { z } else { *b };
            *w = if wins { j as u32 } else { *w };
        }
    }
}

struct Forward<'a> {
    chunk: Chunk<'a>,
    y: &'a mut [f32],
    winners: &'a mut [u8],
}

impl Pass for Forward<'_> {
    #[inline(always)]
    fn chunk(&self) -> &Chunk<'_> {
        &self.chunk
    }

    #[inline(always)]
    fn tile<L: Layout>(&mut self, layout: L, s: &mut Scratch, offset: usize, first_block: usize, lanes: usize) {
        self.chunk.load_logits(layout, s, offset, lanes);
        argmax(layout.u(), lanes, &s.logits, &mut s.best, &mut s.winner);
        let (x, y, winner) = (&self.chunk.x[offset..], &mut self.y[offset..], &s.winner);
        for_each_element(layout, lanes, |mem, _, lane, j| {
            y[mem] = if winner[lane] == j as u32 { x[mem] } else { 0.0 };
        });
        for (w, &win) in self.winners[first_block..first_block + lanes].iter_mut().zip(&winner[..lanes]) {
            *w = win as u8;
        }
    }
}

struct Backward<'a> {
    chunk: Chunk<'a>,
    dy: &'a [f32],
    dx: &'a mut [f32],
    inv_tau: f32,
}

impl Pass for Backward<'_> {
    #[inline(always)]
    fn chunk(&self) -> &Chunk<'_> {
        &self.chunk
    }

    #[inline(always)]
    fn tile<L: Layout>(&mut self, layout: L, s: &mut Scratch, offset: usize, _first_block: usize, lanes: usize) {
        let (u, inv_tau) = (layout.u(), self.inv_tau);
        self.chunk.load_logits(layout, s, offset, lanes);
        let (x, dy) = (&self.chunk.x[offset..], &self.dy[offset..]);
        let dy_x = &mut s.dy_x;
        for_each_element(layout, lanes, |mem, _, lane, j| dy_x[j * lanes + lane] = dy[mem] * x[mem]);
        argmax(u, lanes, &s.logits, &mut s.best, &mut s.winner);

        // Unnormalised softmax e_j = exp((z_j − max)/τ), its sum, and Σ dy·x·e, per lane.
        let (sum, weighted, best) = (&mut s.sum[..lanes], &mut s.weighted[..lanes], &s.best[..lanes]);
        sum.fill(0.0);
        weighted.fill(0.0);
        for j in 0..u {
            let row = j * lanes..(j + 1) * lanes;
            let (logits, dy_x) = (&mut s.logits[row.clone()], &s.dy_x[row]);
            for ((((z, &p), &m), sum), weighted) in logits.iter_mut().zip(dy_x).zip(best).zip(sum.iter_mut()).zip(weighted.iter_mut()) {
                let e = exp_f32((*z - m) * inv_tau);
                *z = e;
                *sum += e;
                *weighted += p * e;
            }
        }
        // sum → 1/sum, weighted → Σ dy·x·s.
        for (sum, weighted) in sum.iter_mut().zip(weighted.iter_mut()) {
            *sum = 1.0 / *sum;
            *weighted *= *sum;
        }

        let (exps, dy_x, winner) = (&s.logits, &s.dy_x, &s.winner);
        let (inv_sum, weighted) = (&s.sum, &s.weighted);
        let dx = &mut self.dx[offset..];
        for_each_element(layout, lanes, |mem, _, lane, j| {
            let k = j * lanes + lane;
            let hard = if winner[lane] == j as u32 { dy[mem] } else { 0.0 };
            dx[mem] = hard + exps[k] * inv_sum[lane] * inv_tau * (dy_x[k] - weighted[lane]);
        });
    }
}

/// Tile-sized working buffers (on the stack, in L1).
struct Scratch {
    /// Noise of the tile's runs, then reused for other memory-order values.
    noise: [f32; TILE_ELEMENTS],
    /// `x + g` competitor-major: `logits[j·lanes + lane]`; the backward turns it into `exp`.
    logits: [f32; TILE_ELEMENTS],
    /// `dy·x` competitor-major (backward only).
    dy_x: [f32; TILE_ELEMENTS],
    /// Per lane: best logit, softmax sum, `Σ dy·x·e`.
    best: [f32; TILE_ELEMENTS],
    sum: [f32; TILE_ELEMENTS],
    weighted: [f32; TILE_ELEMENTS],
    /// Per lane: the winner's competitor index.
    winner: [u32; TILE_ELEMENTS],
}

impl Scratch {
    fn new() -> Self {
        Self {
            noise: [0.0; TILE_ELEMENTS],
            logits: [0.0; TILE_ELEMENTS],
            dy_x: [0.0; TILE_ELEMENTS],
            best: [0.0; TILE_ELEMENTS],
            sum: [0.0; TILE_ELEMENTS],
            weighted: [0.0; TILE_ELEMENTS],
            winner: [0; TILE_ELEMENTS],
        }
    }
}
