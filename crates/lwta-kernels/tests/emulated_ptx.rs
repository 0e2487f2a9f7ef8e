//! The embedded PTX kernels (`kernels/lwta_f32.ptx`, `kernels/lwta_bf16.ptx`) on the `ptx-emu`
//! emulator against the CPU reference: the GPU parity checks of `lwta_kernels::cuda::parity` on
//! its smaller case list (every layout and kernel shape, U = 1, 2, 3, 4, 8, 12, 32, 7×7 and odd
//! maps, train / sample / argmax, misaligned views), launched by the same plans as on a GPU.
//!
//! Criteria are the GPU run's: winners and `y` exact, bf16 `dx` within bf16 rounding, f32 `dx`
//! within 1e-6 of the size of its terms. The emulator's `ex2.approx` is correctly rounded where
//! the hardware's is within ~2 ulp, so the f32 difference left is the CPU reference's own `exp`
//! (a few 1e-7 at most) and the GPU's tolerance holds with room.
//!
//! Memory runs with initcheck on: only the tensors' views are written (the element in front of a
//! misaligned view is not), so a kernel reading outside its inputs faults; outputs start as
//! unwritten 0xFF bytes (NaN, winner 255), so an element the kernels skip fails the comparison.

use half::bf16;
use lwta_kernels::cuda::parity::{checks, small_cases, Backend, CaseRun, KernelOutputs};
use lwta_kernels::cuda::plan::{self, KernelArg, Launch, Occupancy};
use lwta_kernels::cuda::{Element, PTX_BF16, PTX_F32};
use lwta_kernels::{LwtaError, Result};
use ptx_emu::{Arg, LaunchConfig, Memory, Module};

/// The pretend GPU: 4 SM slots (SMs × waves) holding 2 CTAs each, so grids stay at most 8 CTAs
/// and the larger cases run several items per thread through the kernels' grid-stride loops.
const SM_SLOTS: u32 = 4;
const BLOCKS_PER_SM: u32 = 2;

struct Emulator {
    f32: Module,
    bf16: Module,
}

fn emulator_err(e: ptx_emu::Error) -> LwtaError {
    LwtaError::Cuda(format!("emulated PTX: {e}"))
}

fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    if T::BYTES == 4 {
        values.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect()
    } else {
        values.iter().flat_map(|v| bf16::from_f32(v.to_f32()).to_bits().to_le_bytes()).collect()
    }
}

fn from_bytes<T: Element>(bytes: &[u8]) -> Vec<f32> {
    if T::BYTES == 4 {
        bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    } else {
        bytes.chunks(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect()
    }
}

fn arg(value: &KernelArg) -> Arg {
    match *value {
        KernelArg::U32(v) => Arg::U32(v),
        KernelArg::U64(v) => Arg::U64(v),
        KernelArg::F32(v) => Arg::F32(v),
        KernelArg::RoundKeys(keys) => Arg::Bytes(keys.iter().flat_map(|k| k.to_le_bytes()).collect()),
    }
}

impl Emulator {
    fn launch<T: Element>(&self, mem: &mut Memory, launch: Option<Launch>) -> Result<()> {
        let Some(launch) = launch else { return Ok(()) };
        let module = if T::BYTES == 4 { &self.f32 } else { &self.bf16 };
        let cfg = LaunchConfig { grid: [launch.grid, 1, 1], block: [launch.threads, 1, 1], dynamic_shared_bytes: launch.shared_bytes };
        let args: Vec<Arg> = launch.args.iter().map(arg).collect();
        module.launch(mem, &launch.kernel.entry::<T>(), cfg, &args).map_err(emulator_err)?;
        Ok(())
    }
}

impl Backend for Emulator {
    fn name(&self) -> &'static str {
        "emulated"
    }

    fn run<T: Element>(&mut self, run: &CaseRun<T>) -> Result<KernelOutputs> {
        let case = run.case;
        let (geom, u, off) = (case.geom, case.u, case.view_offset);
        let (n, blocks, size) = (geom.len(), geom.blocks(u), T::BYTES as usize);
        let mut mem = Memory::new();
        let mut buffer = |len: usize| mem.alloc(len).map_err(emulator_err);
        let (x, dy, y, dx, winners) =
            (buffer((n + off) * size)?, buffer((n + off) * size)?, buffer((n + off) * size)?, buffer((n + off) * size)?, buffer(blocks)?);
        let view = |base: u64| base + (off * size) as u64;
        mem.write(view(x), &to_bytes(run.x)).map_err(emulator_err)?;
        mem.write(view(dy), &to_bytes(run.dy)).map_err(emulator_err)?;
        let blocks_per_sm = |_, _, _| Ok(BLOCKS_PER_SM);
        let occupancy = Occupancy { sm_slots: SM_SLOTS, blocks_per_sm: &blocks_per_sm };
        self.launch::<T>(&mut mem, plan::forward::<T>(geom, u, run.noise, view(x), view(y), winners, &occupancy)?)?;
        self.launch::<T>(&mut mem, plan::backward::<T>(geom, u, run.tau, run.noise, view(x), view(dy), view(dx), &occupancy)?)?;
        let read = |addr: u64, len: usize| mem.read(addr, len).map_err(emulator_err);
        let shape = lwta_kernels::cuda::parity::forward_shape::<T>(case, run.noise, x)?;
        Ok(KernelOutputs {
            y: from_bytes::<T>(&read(view(y), n * size)?),
            dx: from_bytes::<T>(&read(view(dx), n * size)?),
            winners: read(winners, blocks)?,
            shape,
        })
    }
}

#[test]
fn lwta_kernels_on_the_emulator_match_the_cpu_reference() {
    let mut emulator = Emulator { f32: Module::parse(PTX_F32).unwrap(), bf16: Module::parse(PTX_BF16).unwrap() };
    let cases = small_cases();
    let results = checks(&mut emulator, &cases, 0x5eed_0001).unwrap();
    assert_eq!(results.len(), 2 * cases.len());
    let failed: Vec<String> = results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {:.3e} > {:.1e} ({})", c.name, c.max_rel_err, c.tolerance, c.detail))
        .collect();
    assert!(failed.is_empty(), "{} of {} checks failed:\n{}", failed.len(), results.len(), failed.join("\n"));
    // both kernel shapes ran
    for shape in ["quad", "scalar"] {
        assert!(results.iter().any(|c| c.detail.starts_with(shape)), "no case ran the {shape} kernels");
    }
}
