//! The CPU implementation of stochastic LWTA: single pass over memory, multi-threaded, vectorised.
//!
//! * [`forward`] reads `x` once and writes `y = x·onehot` and the winner index of every block;
//! * [`backward`] reads `x` and `dy` once and writes `dx`, regenerating the noise from the Philox
//!   stream (it is never stored).
//!
//! ## How it is organised (and why)
//! Rayon splits the tensor into chunks of whole `(outer, group)` slabs (`U·inner` contiguous
//! elements holding `inner` blocks), big enough to amortise scheduling and small enough that a
//! chunk's working arrays stay in L2.
//!
//! Tokens with `U = 4` (the common case) take a path that never leaves registers: one Philox
//! counter is one block, so its noise arrives competitor-major; `x` is deinterleaved by shuffles,
//! the competition is vertical, and the result is re-interleaved (`quads_forward`).
//!
//! Otherwise, per chunk, the logits `z = x + g` are computed in memory order
//! (the noise for a contiguous range is Philox on many counters at once plus the vector `ln`; see
//! `philox::gumbel_logits_with`, which adds `x` as it goes). The competition itself runs on *tiles* of blocks laid out
//! competitor-major — row `j` holds competitor `j` of every block in the tile — so the argmax and the
//! softmax over `U` competitors are plain vertical vector operations:
//! * NCHW with large `H·W`: competitor `j` of consecutive pixels is already a contiguous channel row,
//!   so tiles read the rows in place (`Kind::Rows`);
//! * tokens (and NCHW with small `H·W`): a tile is whole slabs, gathered into rows and scattered
//!   back through index tables built once per chunk (`Kind::Gathered`).
//!
//! Every kernel is generic over [`Simd`] and compiled for AVX-512, AVX2 and scalar code
//! ([`simd::run`]); all three give identical results.

use rayon::prelude::*;

use crate::philox::{gumbel, gumbel_by_lane, gumbel_logits_with};
use crate::simd::{self, load_padded, store_partial, Isa, Simd};
use crate::{expect_len, par, BlockGeometry, LwtaError, Noise, Result};

/// Elements per rayon task: enough work (tens of µs) to amortise scheduling, and the chunk's
/// logits (64 KiB) stay in L2 next to its slices of `x`, `y` / `dy`, `dx`.
const CHUNK_ELEMENTS: usize = 1 << 14;
/// Elements per tile, at least: its competitor-major buffers stay in L1.
const TILE_ELEMENTS: usize = 512;

/// Forward pass. For every block, the winner is the first `j` maximising `x_j + g_j` (the hard
/// forward does not depend on τ); `y` is `x` at the winner and 0 elsewhere, and `winners[block]`
/// is the winner's index in the block (blocks numbered as in the crate docs). With `u = 1` every
/// element wins (`y = x`). A NaN logit never beats an earlier competitor.
pub fn forward(x: &[f32], y: &mut [f32], winners: &mut [u8], geom: BlockGeometry, u: usize, noise: Noise) -> Result<()> {
    forward_on(simd::isa(), x, y, winners, geom, u, noise)
}

/// [`forward`] into new vectors `(y, winners)` (see [`crate::par`]: no zero-filling pass first).
pub fn forward_to_vec(x: &[f32], geom: BlockGeometry, u: usize, noise: Noise) -> Result<(Vec<f32>, Vec<u8>)> {
    let isa = simd::isa();
    check_forward(x, geom, u, noise)?;
    let mut winners = vec![0; geom.blocks(u)];
    let Some(split) = Split::new(geom, u) else {
        return Ok((Vec::new(), winners));
    };
    let inputs = x.par_chunks(split.elements).zip(winners.par_chunks_mut(split.blocks)).enumerate();
    let y = par::collect_chunks(x.len(), split.elements, inputs, |(i, (x, winners)), y| {
        simd::run_with(isa, Forward { chunk: split.chunk(i, x, geom, u, noise), y, winners })
    });
    Ok((y, winners))
}

/// [`forward`] with a given instruction set (the tests compare them).
fn forward_on(isa: Isa, x: &[f32], y: &mut [f32], winners: &mut [u8], geom: BlockGeometry, u: usize, noise: Noise) -> Result<()> {
    check_forward(x, geom, u, noise)?;
    expect_len("y", y.len(), geom.len())?;
    expect_len("winners", winners.len(), geom.blocks(u))?;
    let Some(split) = Split::new(geom, u) else {
        return Ok(());
    };
    x.par_chunks(split.elements)
        .zip(y.par_chunks_mut(split.elements))
        .zip(winners.par_chunks_mut(split.blocks))
        .enumerate()
        .for_each(|(i, ((x, y), winners))| simd::run_with(isa, Forward { chunk: split.chunk(i, x, geom, u, noise), y, winners }));
    Ok(())
}

fn check_forward(x: &[f32], geom: BlockGeometry, u: usize, noise: Noise) -> Result<()> {
    geom.check(u, "lwta_kernels::cpu::forward")?;
    expect_len("x", x.len(), geom.len())?;
    expect_noise(noise, geom.len())
}

/// Backward pass of the straight-through hard Gumbel-softmax at temperature `tau`:
/// with `s = softmax((x + g)/τ)` and `h` the forward's one-hot,
/// `dx_j = dy_j·h_j + (s_j/τ)·(dy_j·x_j − Σ_i dy_i·x_i·s_i)`.
/// `noise` must be the forward's: the same stream regenerates the same `g`.
pub fn backward(x: &[f32], dy: &[f32], dx: &mut [f32], geom: BlockGeometry, u: usize, tau: f32, noise: Noise) -> Result<()> {
    backward_on(simd::isa(), x, dy, dx, geom, u, tau, noise)
}

/// [`backward`] into a new vector `dx` (see [`crate::par`]: no zero-filling pass first).
pub fn backward_to_vec(x: &[f32], dy: &[f32], geom: BlockGeometry, u: usize, tau: f32, noise: Noise) -> Result<Vec<f32>> {
    let isa = simd::isa();
    check_backward(x, dy, geom, u, tau, noise)?;
    let Some(split) = Split::new(geom, u) else {
        return Ok(Vec::new());
    };
    let inputs = x.par_chunks(split.elements).zip(dy.par_chunks(split.elements)).enumerate();
    Ok(par::collect_chunks(x.len(), split.elements, inputs, |(i, (x, dy)), dx| {
        simd::run_with(isa, Backward { chunk: split.chunk(i, x, geom, u, noise), dy, dx, inv_tau: 1.0 / tau })
    }))
}

/// [`backward`] with a given instruction set (the tests compare them).
#[allow(clippy::too_many_arguments)]
fn backward_on(isa: Isa, x: &[f32], dy: &[f32], dx: &mut [f32], geom: BlockGeometry, u: usize, tau: f32, noise: Noise) -> Result<()> {
    check_backward(x, dy, geom, u, tau, noise)?;
    expect_len("dx", dx.len(), geom.len())?;
    let Some(split) = Split::new(geom, u) else {
        return Ok(());
    };
    x.par_chunks(split.elements).zip(dy.par_chunks(split.elements)).zip(dx.par_chunks_mut(split.elements)).enumerate().for_each(
        |(i, ((x, dy), dx))| simd::run_with(isa, Backward { chunk: split.chunk(i, x, geom, u, noise), dy, dx, inv_tau: 1.0 / tau }),
    );
    Ok(())
}

fn check_backward(x: &[f32], dy: &[f32], geom: BlockGeometry, u: usize, tau: f32, noise: Noise) -> Result<()> {
    geom.check(u, "lwta_kernels::cpu::backward")?;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(LwtaError::Tau(tau));
    }
    expect_len("x", x.len(), geom.len())?;
    expect_len("dy", dy.len(), geom.len())?;
    expect_noise(noise, geom.len())
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
        if geom.is_empty() {
            return None;
        }
        let slab = u * geom.inner;
        let slabs = (CHUNK_ELEMENTS / slab).max(1);
        Some(Self { elements: slabs * slab, blocks: slabs * geom.inner })
    }

    /// Chunk `i`, whose elements are `x`.
    fn chunk<'a>(&self, i: usize, x: &'a [f32], geom: BlockGeometry, u: usize, noise: Noise<'a>) -> Chunk<'a> {
        Chunk { x, start: i * self.elements, u, inner: geom.inner, noise }
    }
}

/// What a pass over a chunk reads.
struct Chunk<'a> {
    x: &'a [f32],
    /// Flat index of `x[0]` in the whole tensor (the noise stream is indexed by it).
    start: usize,
    u: usize,
    inner: usize,
    noise: Noise<'a>,
}

impl Chunk<'_> {
    /// The logits `x + g` of the whole chunk, in memory order.
    #[inline(always)]
    fn logits<S: Simd>(&self, s: S) -> Vec<f32> {
        let mut z = vec![0.0; self.x.len()];
        match self.noise {
            Noise::None => z.copy_from_slice(self.x),
            Noise::Philox { seed, offset } => gumbel_logits_with(s, seed, offset, self.start as u64, self.x, &mut z),
            Noise::Uniforms(uniforms) => {
                let uniforms = &uniforms[self.start..self.start + self.x.len()];
                for i in (0..z.len()).step_by(S::LANES) {
                    let end = (i + S::LANES).min(z.len());
                    let g = gumbel(s, load_padded(s, &uniforms[i..end], 0.5));
                    store_partial(s, &mut z[i..end], s.add(load_padded(s, &self.x[i..end], 0.0), g));
                }
            }
        }
        z
    }
}

/// How tiles find their competitors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A tile is up to `pitch` consecutive pixels of one slab; competitor `j` is the channel row
    /// `j·inner` further on (NCHW with `H·W ≥ pitch`).
    Rows,
    /// A tile is `slabs_per_tile` whole slabs, gathered through [`Tables`] (tokens, small `H·W`).
    Gathered,
}

/// The tiling of a chunk, for a vector width.
struct Tiling {
    kind: Kind,
    u: usize,
    inner: usize,
    /// Lanes per competitor row in the tile buffers: a multiple of `S::LANES`.
    pitch: usize,
    /// Slabs per tile (`Kind::Gathered`).
    slabs_per_tile: usize,
}

/// One tile of a chunk.
struct Tile {
    /// Memory offset of the tile's first element in the chunk.
    offset: usize,
    /// Its first block, in the chunk's winner numbering (the tile's blocks are consecutive).
    first_block: usize,
    lanes: usize,
    /// Elements from `offset` to the tile's end ([`Kind::Gathered`]: the tile is contiguous).
    len: usize,
}

impl Tiling {
    fn new<S: Simd>(u: usize, inner: usize) -> Self {
        let pitch = (TILE_ELEMENTS / u).max(1).next_multiple_of(S::LANES);
        if inner >= pitch {
            Self { kind: Kind::Rows, u, inner, pitch, slabs_per_tile: 0 }
        } else {
            Self { kind: Kind::Gathered, u, inner, pitch, slabs_per_tile: pitch / inner }
        }
    }

    /// The tiles of a chunk of `chunk_len` elements, in memory order.
    fn tiles(&self, chunk_len: usize) -> Vec<Tile> {
        let (u, inner) = (self.u, self.inner);
        let slabs = chunk_len / (u * inner);
        let mut tiles = Vec::new();
        match self.kind {
            Kind::Rows => {
                for slab in 0..slabs {
                    for p in (0..inner).step_by(self.pitch) {
                        let lanes = self.pitch.min(inner - p);
                        tiles.push(Tile { offset: slab * u * inner + p, first_block: slab * inner + p, lanes, len: 0 });
                    }
                }
            }
            Kind::Gathered => {
                for first in (0..slabs).step_by(self.slabs_per_tile) {
                    let n = self.slabs_per_tile.min(slabs - first);
                    tiles.push(Tile { offset: first * u * inner, first_block: first * inner, lanes: n * inner, len: n * u * inner });
                }
            }
        }
        tiles
    }
}

/// Index tables of a [`Kind::Gathered`] tile (the same for every full tile; a partial last tile
/// uses their prefixes). Padded to whole vectors; padding indices are 0.
struct Tables {
    /// Per tile element (memory order): its lane, its competitor `j` (as f32), and `j·pitch + lane`.
    lane_of: Vec<u32>,
    competitor_of: Vec<f32>,
    row_of: Vec<u32>,
    /// Per `j·pitch + lane`: the memory offset of that competitor.
    memory_of: Vec<u32>,
}

impl Tables {
    fn new<S: Simd>(t: &Tiling) -> Self {
        let (u, inner, pitch) = (t.u, t.inner, t.pitch);
        let len = t.slabs_per_tile * u * inner;
        let padded = len.next_multiple_of(S::LANES);
        let mut tables =
            Tables { lane_of: vec![0; padded], competitor_of: vec![0.0; padded], row_of: vec![0; padded], memory_of: vec![0; u * pitch] };
        for e in 0..len {
            let (slab, rest) = (e / (u * inner), e % (u * inner));
            let (j, lane) = (rest / inner, slab * inner + rest % inner);
            tables.lane_of[e] = lane as u32;
            tables.competitor_of[e] = j as f32;
            tables.row_of[e] = (j * pitch + lane) as u32;
            tables.memory_of[j * pitch + lane] = e as u32;
        }
        tables
    }
}

/// Competitor rows of a tile: row `j` is `data[start + j·stride ..][..len]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    start: usize,
    stride: usize,
    len: usize,
}

impl<'a> Rows<'a> {
    #[inline(always)]
    fn row(&self, j: usize) -> &'a [f32] {
        &self.data[self.start + j * self.stride..][..self.len]
    }

    /// Lanes `l .. l + LANES` of row `j` (padded with 0 past the row's end).
    #[inline(always)]
    fn load<S: Simd>(&self, s: S, j: usize, l: usize) -> S::F {
        let row = self.row(j);
        load_padded(s, &row[l..(l + S::LANES).min(row.len())], 0.0)
    }
}

/// Fills `rows` (pitch `pitch`) with the tile's competitors gathered from `memory` (the chunk-level
/// array, e.g. logits) and returns them as [`Rows`].
#[inline(always)]
fn gather_rows<'a, S: Simd>(s: S, t: &Tiling, tables: &Tables, tile: &Tile, memory: &[f32], rows: &'a mut [f32]) -> Rows<'a> {
    let memory = &memory[tile.offset..tile.offset + tile.len];
    for j in 0..t.u {
        for l in (0..tile.lanes).step_by(S::LANES) {
            let at = j * t.pitch + l;
            s.store(&mut rows[at..], s.gather(memory, s.load_i(&tables.memory_of[at..])));
        }
    }
    Rows { data: rows, start: 0, stride: t.pitch, len: tile.lanes }
}

/// One step of the argmax over a block's competitors, taken in order: competitor `j` with logit
/// `z` takes over (`best`, `winner`) only if strictly larger, so the first maximum wins and a NaN
/// never takes over.
#[inline(always)]
fn compete<S: Simd>(s: S, best: &mut S::F, winner: &mut S::F, z: S::F, j: usize) {
    let wins = s.lt(*best, z);
    *best = s.select(wins, z, *best);
    *winner = s.select(wins, s.splat(j as f32), *winner);
}

/// The softmax part of the backward for one vector of blocks, fed competitor by competitor:
/// `e_j = exp((z_j − max)/τ)` ([`Relaxed::weight`]), then `soft_j = (s_j/τ)·(p_j − Σ_i p_i·s_i)`
/// with `s_j = e_j / Σ e` and `p = dy·x` ([`Relaxed::gradient`]).
struct Relaxed<S: Simd> {
    max: S::F,
    inv_tau: S::F,
    sum: S::F,
    weighted: S::F,
}

impl<S: Simd> Relaxed<S> {
    #[inline(always)]
    fn new(s: S, max: S::F, inv_tau: f32) -> Self {
        Self { max, inv_tau: s.splat(inv_tau), sum: s.splat(0.0), weighted: s.splat(0.0) }
    }

    /// `e_j` of competitor `j`, accumulated into the sums.
    #[inline(always)]
    fn weight(&mut self, s: S, z: S::F, p: S::F) -> S::F {
        let e = simd::exp(s, s.mul(s.sub(z, self.max), self.inv_tau));
        self.sum = s.add(self.sum, e);
        self.weighted = s.add(self.weighted, s.mul(p, e));
        e
    }

    /// `(scale, mean)` once every competitor was weighted: `soft_j = e_j·scale·(p_j − mean)`.
    #[inline(always)]
    fn finish(&self, s: S) -> (S::F, S::F) {
        let inv_sum = s.div(s.splat(1.0), self.sum);
        (s.mul(inv_sum, self.inv_tau), s.mul(self.weighted, inv_sum))
    }

    #[inline(always)]
    fn gradient(s: S, e: S::F, p: S::F, (scale, mean): (S::F, S::F)) -> S::F {
        s.mul(s.mul(e, scale), s.sub(p, mean))
    }
}

/// Per lane, the largest logit and the first competitor holding it (as f32).
#[inline(always)]
fn argmax<S: Simd>(s: S, u: usize, logits: Rows, best: &mut [f32], winner: &mut [f32]) {
    for l in (0..logits.len).step_by(S::LANES) {
        let (mut b, mut w) = (logits.load(s, 0, l), s.splat(0.0));
        for j in 1..u {
            compete(s, &mut b, &mut w, logits.load(s, j, l), j);
        }
        s.store(&mut best[l..], b);
        s.store(&mut winner[l..], w);
    }
}

/// Writes `out = (winner == j) ? value : 0` (+ `extra` where given) for every element of the
/// tile, in memory order; `values`/`extra` are read and `out` written at the tile's memory
/// positions. The one place that maps a tile back to memory.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scatter<S: Simd>(
    s: S,
    t: &Tiling,
    tables: Option<&Tables>,
    tile: &Tile,
    winner: &[f32],
    values: &[f32],
    extra: Option<&[f32]>,
    out: &mut [f32],
) {
    match (t.kind, tables) {
        (Kind::Gathered, Some(tables)) => {
            let (values, out) = (&values[tile.offset..][..tile.len], &mut out[tile.offset..][..tile.len]);
            for e in (0..tile.len).step_by(S::LANES) {
                let end = (e + S::LANES).min(tile.len);
                let win = s.gather(winner, s.load_i(&tables.lane_of[e..]));
                let hard = s.keep(s.eq(win, s.load(&tables.competitor_of[e..])), load_padded(s, &values[e..end], 0.0));
                let v = match extra {
                    Some(extra) => s.add(hard, s.gather(extra, s.load_i(&tables.row_of[e..]))),
                    None => hard,
                };
                store_partial(s, &mut out[e..end], v);
            }
        }
        _ => {
            for j in 0..t.u {
                let row = tile.offset + j * t.inner;
                let (values, out) = (&values[row..][..tile.lanes], &mut out[row..][..tile.lanes]);
                for l in (0..tile.lanes).step_by(S::LANES) {
                    let end = (l + S::LANES).min(tile.lanes);
                    let hard = if_winner(s, s.load(&winner[l..]), j, load_padded(s, &values[l..end], 0.0));
                    let v = match extra {
                        Some(extra) => s.add(hard, s.load(&extra[j * t.pitch + l..])),
                        None => hard,
                    };
                    store_partial(s, &mut out[l..end], v);
                }
            }
        }
    }
}

/// Tile-sized working buffers: competitor-major rows (`u × pitch`) and per-lane values (`pitch`).
struct Buffers {
    rows: Vec<f32>,
    rows2: Vec<f32>,
    best: Vec<f32>,
    winner: Vec<f32>,
}

impl Buffers {
    fn new(t: &Tiling) -> Self {
        Self { rows: vec![0.0; t.u * t.pitch], rows2: vec![0.0; t.u * t.pitch], best: vec![0.0; t.pitch], winner: vec![0.0; t.pitch] }
    }
}

struct Forward<'a> {
    chunk: Chunk<'a>,
    y: &'a mut [f32],
    winners: &'a mut [u8],
}

impl simd::Kernel for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Forward { chunk, y, winners } = self;
        if chunk.inner == 1 && chunk.u == 4 {
            return quads_forward(s, &chunk, y, winners);
        }
        let t = Tiling::new::<S>(chunk.u, chunk.inner);
        let tables = (t.kind == Kind::Gathered).then(|| Tables::new::<S>(&t));
        let z = chunk.logits(s);
        let mut b = Buffers::new(&t);
        for tile in t.tiles(chunk.x.len()) {
            let logits = match &tables {
                Some(tables) => gather_rows(s, &t, tables, &tile, &z, &mut b.rows),
                None => Rows { data: &z, start: tile.offset, stride: t.inner, len: tile.lanes },
            };
            argmax(s, t.u, logits, &mut b.best, &mut b.winner);
            scatter(s, &t, tables.as_ref(), &tile, &b.winner, chunk.x, None, y);
            store_indices(s, &mut winners[tile.first_block..][..tile.lanes], &b.winner);
        }
    }
}

struct Backward<'a> {
    chunk: Chunk<'a>,
    dy: &'a [f32],
    dx: &'a mut [f32],
    inv_tau: f32,
}

impl simd::Kernel for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Backward { chunk, dy, dx, inv_tau } = self;
        if chunk.inner == 1 && chunk.u == 4 {
            return quads_backward(s, &chunk, dy, dx, inv_tau);
        }
        let t = Tiling::new::<S>(chunk.u, chunk.inner);
        let tables = (t.kind == Kind::Gathered).then(|| Tables::new::<S>(&t));
        let z = chunk.logits(s);
        let mut dy_x = vec![0.0; chunk.x.len()];
        for i in (0..dy_x.len()).step_by(S::LANES) {
            let end = (i + S::LANES).min(dy_x.len());
            let product = s.mul(load_padded(s, &dy[i..end], 0.0), load_padded(s, &chunk.x[i..end], 0.0));
            store_partial(s, &mut dy_x[i..end], product);
        }
        let mut b = Buffers::new(&t);
        let mut soft = vec![0.0; t.u * t.pitch];
        for tile in t.tiles(chunk.x.len()) {
            let (logits, products) = match &tables {
                Some(tables) => {
                    (gather_rows(s, &t, tables, &tile, &z, &mut b.rows), gather_rows(s, &t, tables, &tile, &dy_x, &mut b.rows2))
                }
                None => (
                    Rows { data: &z, start: tile.offset, stride: t.inner, len: tile.lanes },
                    Rows { data: &dy_x, start: tile.offset, stride: t.inner, len: tile.lanes },
                ),
            };
            argmax(s, t.u, logits, &mut b.best, &mut b.winner);
            relaxed_gradient(s, t.u, t.pitch, inv_tau, logits, products, &b.best, &mut soft);
            scatter(s, &t, tables.as_ref(), &tile, &b.winner, dy, Some(&soft), dx);
        }
    }
}

/// The relaxed part of the gradient, per competitor row: with `e_j = exp((z_j − max)/τ)`,
/// `s_j = e_j / Σ e`, `soft_j = (s_j/τ)·(dy_j·x_j − Σ_i dy_i·x_i·s_i)` (`products` holds `dy·x`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn relaxed_gradient<S: Simd>(s: S, u: usize, pitch: usize, inv_tau: f32, logits: Rows, products: Rows, best: &[f32], soft: &mut [f32]) {
    for l in (0..logits.len).step_by(S::LANES) {
        let mut relaxed = Relaxed::new(s, s.load(&best[l..]), inv_tau);
        for j in 0..u {
            let e = relaxed.weight(s, logits.load(s, j, l), products.load(s, j, l));
            s.store(&mut soft[j * pitch + l..], e);
        }
        let finished = relaxed.finish(s);
        for j in 0..u {
            let v = Relaxed::gradient(s, s.load(&soft[j * pitch + l..]), products.load(s, j, l), finished);
            s.store(&mut soft[j * pitch + l..], v);
        }
    }
}

/// Writes winner indices (f32 lanes of `winner`) as bytes to `dst` (any length ≤ `winner.len()`).
#[inline(always)]
fn store_indices<S: Simd>(s: S, dst: &mut [u8], winner: &[f32]) {
    let mut i = 0;
    while i + S::LANES <= dst.len() {
        s.store_indices(&mut dst[i..], s.load(&winner[i..]));
        i += S::LANES;
    }
    if i < dst.len() {
        let mut tmp = [0u8; simd::MAX_LANES];
        s.store_indices(&mut tmp, s.load(&winner[i..]));
        let n = dst.len() - i;
        dst[i..].copy_from_slice(&tmp[..n]);
    }
}

// Tokens with U = 4: a block is exactly one Philox counter (four elements), so the noise of
// `LANES` consecutive blocks arrives competitor-major (`gumbel_by_lane`) and a group of blocks
// never leaves registers: `x` (and `dy`) are deinterleaved with shuffles, the competition is
// vertical, and the result is re-interleaved. No tables, gathers or buffers.

// (No closures here: a closure is compiled without the kernel's target features.)

/// The four competitor vectors of `src` (`4·n` elements, `n ≤ LANES` blocks; missing blocks 0).
#[inline(always)]
fn load_quads<S: Simd>(s: S, src: &[f32]) -> [S::F; 4] {
    let m = [
        s.to_bits(load_part(s, src, 0)),
        s.to_bits(load_part(s, src, 1)),
        s.to_bits(load_part(s, src, 2)),
        s.to_bits(load_part(s, src, 3)),
    ];
    let r = s.deinterleave4(m);
    [s.from_bits(r[0]), s.from_bits(r[1]), s.from_bits(r[2]), s.from_bits(r[3])]
}

/// Vector `i` of `src` (padded with 0 past its end).
#[inline(always)]
fn load_part<S: Simd>(s: S, src: &[f32], i: usize) -> S::F {
    load_padded(s, &src[(i * S::LANES).min(src.len())..((i + 1) * S::LANES).min(src.len())], 0.0)
}

/// `v` where `winner` is competitor `j`, 0 elsewhere.
#[inline(always)]
fn if_winner<S: Simd>(s: S, winner: S::F, j: usize, v: S::F) -> S::F {
    s.keep(s.eq(winner, s.splat(j as f32)), v)
}

/// Writes four competitor vectors back to memory order (`dst.len() = 4·n`).
#[inline(always)]
fn store_quads<S: Simd>(s: S, dst: &mut [f32], v: [S::F; 4]) {
    let m = s.interleave4([s.to_bits(v[0]), s.to_bits(v[1]), s.to_bits(v[2]), s.to_bits(v[3])]);
    for (i, m) in m.into_iter().enumerate() {
        let (start, end) = ((i * S::LANES).min(dst.len()), ((i + 1) * S::LANES).min(dst.len()));
        store_partial(s, &mut dst[start..end], s.from_bits(m));
    }
}

/// The noise of chunk blocks `first .. first + n` as four competitor vectors.
#[inline(always)]
fn quad_noise<S: Simd>(s: S, chunk: &Chunk, first: usize, n: usize) -> [S::F; 4] {
    match chunk.noise {
        Noise::None => [s.splat(0.0); 4],
        Noise::Philox { seed, offset } => gumbel_by_lane(s, seed, offset, (chunk.start / 4 + first) as u64),
        Noise::Uniforms(uniforms) => {
            let u = load_quads(s, &uniforms[chunk.start + 4 * first..][..4 * n]);
            [gumbel(s, u[0]), gumbel(s, u[1]), gumbel(s, u[2]), gumbel(s, u[3])]
        }
    }
}

/// Logits, best logit and winner of chunk blocks `first .. first + n` whose inputs are `x`.
#[inline(always)]
fn quad_competition<S: Simd>(s: S, chunk: &Chunk, first: usize, n: usize, x: [S::F; 4]) -> ([S::F; 4], S::F, S::F) {
    let g = quad_noise(s, chunk, first, n);
    let z = [s.add(x[0], g[0]), s.add(x[1], g[1]), s.add(x[2], g[2]), s.add(x[3], g[3])];
    let (mut best, mut winner) = (z[0], s.splat(0.0));
    for (j, &z) in z.iter().enumerate().skip(1) {
        compete(s, &mut best, &mut winner, z, j);
    }
    (z, best, winner)
}

#[inline(always)]
fn quads_forward<S: Simd>(s: S, chunk: &Chunk, y: &mut [f32], winners: &mut [u8]) {
    let blocks = chunk.x.len() / 4;
    for first in (0..blocks).step_by(S::LANES) {
        let n = (blocks - first).min(S::LANES);
        let elements = 4 * first..4 * (first + n);
        let x = load_quads(s, &chunk.x[elements.clone()]);
        let (_, _, winner) = quad_competition(s, chunk, first, n, x);
        let y_quads =
            [if_winner(s, winner, 0, x[0]), if_winner(s, winner, 1, x[1]), if_winner(s, winner, 2, x[2]), if_winner(s, winner, 3, x[3])];
        store_quads(s, &mut y[elements], y_quads);
        let mut indices = [0.0; simd::MAX_LANES];
        s.store(&mut indices, winner);
        store_indices(s, &mut winners[first..first + n], &indices);
    }
}

#[inline(always)]
fn quads_backward<S: Simd>(s: S, chunk: &Chunk, dy: &[f32], dx: &mut [f32], inv_tau: f32) {
    let blocks = chunk.x.len() / 4;
    for first in (0..blocks).step_by(S::LANES) {
        let n = (blocks - first).min(S::LANES);
        let elements = 4 * first..4 * (first + n);
        let x = load_quads(s, &chunk.x[elements.clone()]);
        let dy = load_quads(s, &dy[elements.clone()]);
        let (z, best, winner) = quad_competition(s, chunk, first, n, x);
        let p = [s.mul(dy[0], x[0]), s.mul(dy[1], x[1]), s.mul(dy[2], x[2]), s.mul(dy[3], x[3])];
        let mut relaxed = Relaxed::new(s, best, inv_tau);
        let e =
            [relaxed.weight(s, z[0], p[0]), relaxed.weight(s, z[1], p[1]), relaxed.weight(s, z[2], p[2]), relaxed.weight(s, z[3], p[3])];
        let finished = relaxed.finish(s);
        let dx_quads = [
            s.add(if_winner(s, winner, 0, dy[0]), Relaxed::gradient(s, e[0], p[0], finished)),
            s.add(if_winner(s, winner, 1, dy[1]), Relaxed::gradient(s, e[1], p[1], finished)),
            s.add(if_winner(s, winner, 2, dy[2]), Relaxed::gradient(s, e[2], p[2], finished)),
            s.add(if_winner(s, winner, 3, dy[3]), Relaxed::gradient(s, e[3], p[3], finished)),
        ];
        store_quads(s, &mut dx[elements], dx_quads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::philox::uniform_at;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len as u64).map(|e| 4.0 * uniform_at(seed, 5, e) - 2.0).collect()
    }

    /// Every kernel path (U = 4 tokens in registers, gathered tiles, channel rows; partial
    /// vectors, tiles and chunks) gives the scalar path's bits on every instruction set.
    #[test]
    fn every_instruction_set_gives_the_scalar_bits() {
        let cases = [
            (BlockGeometry::tokens(1031, 8), 4),
            (BlockGeometry::tokens(300, 24), 8),
            (BlockGeometry::tokens(77, 9), 3),
            (BlockGeometry::nchw(3, 8, 28, 28), 4),
            (BlockGeometry::nchw(5, 6, 3, 5), 2),
            (BlockGeometry::nchw(2, 32, 7, 7), 16),
        ];
        for (geom, u) in cases {
            let (x, dy) = (values(geom.len(), 1), values(geom.len(), 2));
            let uniforms: Vec<f32> = (0..geom.len() as u64).map(|e| uniform_at(3, 4, e)).collect();
            for noise in [Noise::None, Noise::Philox { seed: 9, offset: 2 }, Noise::Uniforms(&uniforms)] {
                let run = |isa| {
                    let (mut y, mut winners, mut dx) = (vec![0.0; x.len()], vec![0; geom.blocks(u)], vec![0.0; x.len()]);
                    forward_on(isa, &x, &mut y, &mut winners, geom, u, noise).unwrap();
                    backward_on(isa, &x, &dy, &mut dx, geom, u, 0.67, noise).unwrap();
                    (y.iter().chain(&dx).map(|v| v.to_bits()).collect::<Vec<_>>(), winners)
                };
                let reference = run(Isa::Scalar);
                for isa in simd::supported() {
                    assert!(run(isa) == reference, "{isa:?} differs from scalar: {geom:?} U={u} {noise:?}");
                }
                // The entry points that allocate their outputs give the same bits.
                let (y, winners) = forward_to_vec(&x, geom, u, noise).unwrap();
                let dx = backward_to_vec(&x, &dy, geom, u, 0.67, noise).unwrap();
                assert!(
                    y.iter().chain(&dx).map(|v| v.to_bits()).eq(reference.0.iter().copied()),
                    "forward_to_vec/backward_to_vec: {geom:?} U={u}"
                );
                assert_eq!(winners, reference.1, "forward_to_vec winners: {geom:?} U={u}");
            }
        }
    }
}
