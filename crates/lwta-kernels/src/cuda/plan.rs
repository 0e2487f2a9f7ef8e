//! The launch plan of the LWTA kernels, without cudarc: which entry runs, its grid, block and
//! dynamic shared memory, and its full argument list, for a geometry, U, noise, τ, the device
//! pointers and the device's occupancy. [`super::LwtaCuda`] launches plans through cudarc; the
//! emulator tests (`tests/emulated_ptx.rs`) run the same plans on `ptx-emu`.

use super::{check_call, Element};
use crate::{BlockGeometry, LwtaError, Noise, Result};

/// Threads per CTA when shared memory does not limit it.
const THREADS: u32 = 128;
/// Dynamic shared memory a CTA may use without opting in to more.
const STASH_BYTES: u32 = 48 * 1024;
/// Philox4x32 Weyl key increments (see [`crate::philox`]).
const KEY_STEP: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// The four entries of each PTX file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    ForwardQuad,
    BackwardQuad,
    ForwardScalar,
    BackwardScalar,
}

impl Kernel {
    /// `quad` or `scalar`.
    pub fn shape(self) -> &'static str {
        match self {
            Kernel::ForwardQuad | Kernel::BackwardQuad => "quad",
            Kernel::ForwardScalar | Kernel::BackwardScalar => "scalar",
        }
    }

    /// The PTX entry name for storage type `T` (`lwta_fwd_quad_f32`).
    pub fn entry<T: Element>(self) -> String {
        let direction = match self {
            Kernel::ForwardQuad | Kernel::ForwardScalar => "fwd",
            Kernel::BackwardQuad | Kernel::BackwardScalar => "bwd",
        };
        format!("lwta_{direction}_{}_{}", self.shape(), T::SUFFIX)
    }
}

/// One kernel argument, in the entry's `.param` order and type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KernelArg {
    U32(u32),
    U64(u64),
    F32(f32),
    /// The 10 Philox round keys (`.param .align 4 .b8 p_keys[80]`).
    RoundKeys([u32; 20]),
}

/// A launch, ready for any backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub kernel: Kernel,
    pub grid: u32,
    pub threads: u32,
    pub shared_bytes: u32,
    pub args: Vec<KernelArg>,
}

/// What the grid size depends on: `sm_slots` = streaming multiprocessors × waves, and how many
/// CTAs of a kernel fit on one SM at `(threads, dynamic shared bytes)`.
pub struct Occupancy<'a> {
    pub sm_slots: u32,
    pub blocks_per_sm: &'a dyn Fn(Kernel, u32, u32) -> Result<u32>,
}

/// The forward launch (`y`, `winners` from `x`), or `None` for an empty tensor.
pub fn forward<T: Element>(
    geom: BlockGeometry,
    u: usize,
    noise: Noise,
    x: u64,
    y: u64,
    winners: u64,
    occupancy: &Occupancy,
) -> Result<Option<Launch>> {
    check_call(geom, u, "lwta_kernels::cuda::forward")?;
    let noise = noise_args(noise)?;
    if geom.is_empty() {
        return Ok(None);
    }
    let plan = Plan::new::<T>(geom, u, &[x, y], Some(winners))?;
    let kernel = if plan.is_quad() { Kernel::ForwardQuad } else { Kernel::ForwardScalar };
    let mut args = vec![KernelArg::U64(x), KernelArg::U64(y), KernelArg::U64(winners)];
    plan.push(&mut args);
    args.extend(noise);
    let (grid, threads) = plan.config(kernel, occupancy, THREADS, 0)?;
    Ok(Some(Launch { kernel, grid, threads, shared_bytes: 0, args }))
}

/// The backward launch (`dx` from `x`, `dy`) at temperature `tau`, or `None` for an empty tensor.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Element>(
    geom: BlockGeometry,
    u: usize,
    tau: f32,
    noise: Noise,
    x: u64,
    dy: u64,
    dx: u64,
    occupancy: &Occupancy,
) -> Result<Option<Launch>> {
    check_call(geom, u, "lwta_kernels::cuda::backward")?;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(LwtaError::Tau(tau));
    }
    let noise = noise_args(noise)?;
    if geom.is_empty() {
        return Ok(None);
    }
    let plan = Plan::new::<T>(geom, u, &[x, dy, dx], None)?;
    let (kernel, stash_per_thread) = match &plan {
        Plan::Quad(q) => (Kernel::BackwardQuad, 2 * 16 * q.chunks),
        Plan::Scalar(s) => (Kernel::BackwardScalar, 2 * 4 * s.u),
    };
    let mut args = vec![KernelArg::U64(x), KernelArg::U64(dy), KernelArg::U64(dx)];
    plan.push(&mut args);
    args.extend(noise);
    // The kernels round (v - max)·(1/τ) exactly as the CPU reference does.
    args.push(KernelArg::F32(1.0 / tau));
    // Largest multiple of 32 threads whose stash fits; U ≤ 32 keeps it ≥ 32.
    let threads = (STASH_BYTES / stash_per_thread / 32 * 32).clamp(32, THREADS);
    let shared_bytes = threads * stash_per_thread;
    let (grid, threads) = plan.config(kernel, occupancy, threads, shared_bytes)?;
    Ok(Some(Launch { kernel, grid, threads, shared_bytes, args }))
}

/// Which kernel shape runs, with its geometry parameters (see the PTX entry comments).
enum Plan {
    Quad(QuadArgs),
    Scalar(ScalarArgs),
}

struct QuadArgs {
    items: u32,
    plane_quads: u32,
    plane_elems: u64,
    chunk_stride: u64,
    chunks: u32,
    tokens: u32,
}

struct ScalarArgs {
    items: u32,
    inner: u32,
    plane_elems: u64,
    u: u32,
}

impl Plan {
    /// The quad kernels when the layout allows 4-element chunks and every pointer is aligned for
    /// them (NCHW also writes its 4 winners as one u32); the scalar kernels otherwise.
    fn new<T: Element>(geom: BlockGeometry, u: usize, data: &[u64], winners: Option<u64>) -> Result<Self> {
        let too_big = || LwtaError::Cuda(format!("{} blocks exceed the kernels' 32-bit block index", geom.blocks(u)));
        let (inner, blocks) = (geom.inner as u64, geom.blocks(u) as u64);
        let aligned = data.iter().all(|p| p.is_multiple_of(4 * T::BYTES));
        let tokens = geom.inner == 1;
        if aligned && tokens && u.is_multiple_of(4) {
            return Ok(Plan::Quad(QuadArgs {
                items: u32::try_from(blocks).map_err(|_| too_big())?,
                plane_quads: 1,
                plane_elems: u as u64,
                chunk_stride: 4,
                chunks: (u / 4) as u32,
                tokens: 1,
            }));
        }
        if aligned && !tokens && inner.is_multiple_of(4) && winners.is_none_or(|w| w.is_multiple_of(4)) {
            return Ok(Plan::Quad(QuadArgs {
                items: u32::try_from(blocks / 4).map_err(|_| too_big())?,
                plane_quads: u32::try_from(inner / 4).map_err(|_| too_big())?,
                plane_elems: u as u64 * inner,
                chunk_stride: inner,
                chunks: u as u32,
                tokens: 0,
            }));
        }
        Ok(Plan::Scalar(ScalarArgs {
            items: u32::try_from(blocks).map_err(|_| too_big())?,
            inner: u32::try_from(inner).map_err(|_| too_big())?,
            plane_elems: u as u64 * inner,
            u: u as u32,
        }))
    }

    fn is_quad(&self) -> bool {
        matches!(self, Plan::Quad(_))
    }

    /// The geometry arguments, after the three pointers.
    fn push(&self, args: &mut Vec<KernelArg>) {
        match self {
            Plan::Quad(q) => args.extend([
                KernelArg::U32(q.items),
                KernelArg::U32(q.plane_quads),
                KernelArg::U64(q.plane_elems),
                KernelArg::U64(q.chunk_stride),
                KernelArg::U32(q.chunks),
                KernelArg::U32(q.tokens),
            ]),
            Plan::Scalar(s) => {
                args.extend([KernelArg::U32(s.items), KernelArg::U32(s.inner), KernelArg::U64(s.plane_elems), KernelArg::U32(s.u)])
            }
        }
    }

    /// `(grid, threads)`: one CTA per item batch up to what is resident on the GPU at once (the
    /// kernels stride over the rest), so the per-thread prologue is paid once and no partial
    /// wave trails.
    fn config(&self, kernel: Kernel, occupancy: &Occupancy, threads: u32, shared_bytes: u32) -> Result<(u32, u32)> {
        let items = match self {
            Plan::Quad(q) => q.items,
            Plan::Scalar(s) => s.items,
        };
        let per_sm = (occupancy.blocks_per_sm)(kernel, threads, shared_bytes)?.max(1);
        let ctas = items.div_ceil(threads).min(occupancy.sm_slots.saturating_mul(per_sm).max(1));
        // The kernels step a 32-bit item index by the grid's thread count: it must not wrap.
        if u64::from(items) + u64::from(ctas) * u64::from(threads) > u64::from(u32::MAX) {
            return Err(LwtaError::Cuda(format!("{items} work items exceed the kernels' 32-bit index")));
        }
        Ok((ctas, threads))
    }
}

/// The noise arguments after the geometry: flag, round keys, offset low and high word.
fn noise_args(noise: Noise) -> Result<[KernelArg; 4]> {
    let (keys, offset, use_noise) = philox_args(noise)?;
    Ok([KernelArg::U32(use_noise), KernelArg::RoundKeys(keys), KernelArg::U32(offset as u32), KernelArg::U32((offset >> 32) as u32)])
}

/// `(round keys, offset, noise flag)`: the 10 Philox round keys `seed + r·(W0, W1)` as the PTX
/// reads them, so the key schedule costs the kernels nothing.
fn philox_args(noise: Noise) -> Result<([u32; 20], u64, u32)> {
    match noise {
        Noise::None => Ok(([0; 20], 0, 0)),
        Noise::Philox { seed, offset } => {
            let mut keys = [0u32; 20];
            for round in 0..10u32 {
                keys[2 * round as usize] = (seed as u32).wrapping_add(round.wrapping_mul(KEY_STEP[0]));
                keys[2 * round as usize + 1] = ((seed >> 32) as u32).wrapping_add(round.wrapping_mul(KEY_STEP[1]));
            }
            Ok((keys, offset, 1))
        }
        Noise::Uniforms(_) => Err(LwtaError::Cuda(
            "the GPU kernels draw their noise from the Philox stream; supplied uniforms (Noise::Uniforms) are CPU-only".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;

    #[test]
    fn round_keys_follow_the_philox_key_schedule() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let (keys, offset, flag) = philox_args(Noise::Philox { seed, offset: 7 }).unwrap();
        assert_eq!((offset, flag), (7, 1));
        let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
        for round in 0..10 {
            assert_eq!([keys[2 * round], keys[2 * round + 1]], [k0, k1]);
            k0 = k0.wrapping_add(KEY_STEP[0]);
            k1 = k1.wrapping_add(KEY_STEP[1]);
        }
        assert!(philox_args(Noise::Uniforms(&[0.5])).is_err());
    }

    #[test]
    fn plans_pick_vector_kernels_only_when_layout_and_alignment_allow() {
        let nchw = BlockGeometry::nchw(2, 8, 4, 3);
        assert!(matches!(
            Plan::new::<f32>(nchw, 4, &[256, 512], Some(1024)).unwrap(),
            Plan::Quad(QuadArgs { items: 12, plane_quads: 3, chunks: 4, tokens: 0, .. })
        ));
        // a view starting 1 element in is not 16-byte aligned
        assert!(matches!(Plan::new::<f32>(nchw, 4, &[260, 512], Some(1024)).unwrap(), Plan::Scalar(_)));
        // NCHW writes 4 winner bytes at once
        assert!(matches!(Plan::new::<f32>(nchw, 4, &[256, 512], Some(1025)).unwrap(), Plan::Scalar(_)));
        let odd_pixels = BlockGeometry::nchw(2, 8, 7, 7);
        assert!(matches!(
            Plan::new::<bf16>(odd_pixels, 2, &[256, 512], Some(1024)).unwrap(),
            Plan::Scalar(ScalarArgs { items: 392, inner: 49, .. })
        ));
        let tokens = BlockGeometry::tokens(5, 24);
        assert!(matches!(
            Plan::new::<bf16>(tokens, 12, &[256, 264], None).unwrap(),
            Plan::Quad(QuadArgs { items: 10, chunks: 3, tokens: 1, .. })
        ));
        assert!(matches!(Plan::new::<f32>(tokens, 6, &[256, 512], None).unwrap(), Plan::Scalar(_)));
    }

    #[test]
    fn launches_carry_the_entry_arguments_and_size_the_grid_by_occupancy() {
        let two_per_sm = |_: Kernel, _: u32, _: u32| Ok(2);
        let occupancy = Occupancy { sm_slots: 3, blocks_per_sm: &two_per_sm };
        let geom = BlockGeometry::tokens(4096, 8);
        let fwd = forward::<f32>(geom, 8, Noise::Philox { seed: 1, offset: 1 << 33 }, 256, 512, 1024, &occupancy).unwrap().unwrap();
        assert_eq!((fwd.kernel, fwd.grid, fwd.threads, fwd.shared_bytes), (Kernel::ForwardQuad, 6, 128, 0));
        assert_eq!(fwd.kernel.entry::<f32>(), "lwta_fwd_quad_f32");
        assert_eq!(fwd.args.len(), 13); // the entry's .param count
        assert_eq!(fwd.args[12], KernelArg::U32(2)); // offset high word
        let bwd = backward::<bf16>(geom, 8, 0.5, Noise::None, 256, 512, 1028, &occupancy).unwrap().unwrap();
        assert_eq!((bwd.kernel.entry::<bf16>(), bwd.threads, bwd.shared_bytes), ("lwta_bwd_scalar_bf16".to_string(), 128, 128 * 64));
        assert_eq!((bwd.args.len(), bwd.args[11]), (12, KernelArg::F32(2.0)));
        assert!(forward::<f32>(BlockGeometry::tokens(0, 8), 8, Noise::None, 0, 0, 0, &occupancy).unwrap().is_none());
        assert!(backward::<f32>(geom, 8, 0.0, Noise::None, 256, 512, 1024, &occupancy).is_err());
    }
}
