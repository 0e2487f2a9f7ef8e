//! The gpu layer on the PTX emulator: device memory is a `ptx_emu::Memory`, kernels are the
//! same embedded PTX interpreted by `ptx_emu::Module::launch`, and the GEMM is the emulation of
//! cuBLAS: `cublasGemmStridedBatchedEx`'s contract (column-major, transposes, leading dimensions,
//! batch strides, alpha/beta, f32 or bf16 operands, f32 accumulation, C rounded to its type,
//! C not read when beta is 0) computed on the host with the crate's one CPU GEMM
//! ([`crate::cpu::gemm`]). cuBLAS's argument checks are applied too ([`GemmCall::check`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use half::bf16;
use ptx_emu::{Arg, LaunchConfig, Memory, Module as PtxModule};

use super::gpu::{GemmCall, GemmMat, GemmType, Gpu, Grid, KArg, Module};
use crate::cpu::gemm::{matmul, Mat};
use crate::error::{Error, Result};

/// The pretend GPU's size for the LWTA launch plans: 4 SMs holding 2 CTAs each, so grids stay
/// small and the kernels' grid-stride loops run several items per thread.
const SM_COUNT: u32 = 4;
const BLOCKS_PER_SM: u32 = 2;

struct State {
    mem: Memory,
    modules: HashMap<Module, Arc<PtxModule>>,
}

pub(crate) struct EmulatedGpu {
    state: Mutex<State>,
}

fn emu_err(what: impl Into<String>, e: ptx_emu::Error) -> Error {
    Error::Cuda { what: format!("emulated device: {}", what.into()), source: Some(Box::new(e)) }
}

fn arg(a: &KArg) -> Arg {
    match a {
        KArg::U16(v) => Arg::U16(*v),
        KArg::U32(v) => Arg::U32(*v),
        KArg::I32(v) => Arg::I32(*v),
        KArg::U64(v) => Arg::U64(*v),
        KArg::F32(v) => Arg::F32(*v),
        KArg::F64(v) => Arg::F64(*v),
        KArg::Bytes(b) => Arg::Bytes(b.clone()),
    }
}

impl EmulatedGpu {
    pub(crate) fn new() -> Self {
        Self { state: Mutex::new(State { mem: Memory::new(), modules: HashMap::new() }) }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Cuda { what: "emulated device: poisoned by a panic".into(), source: None })
    }

    fn module(state: &mut State, module: Module) -> Result<Arc<PtxModule>> {
        if let Some(m) = state.modules.get(&module) {
            return Ok(m.clone());
        }
        let mut parsed = PtxModule::parse(module.ptx()).map_err(|e| emu_err(format!("parsing {}", module.file()), e))?;
        // as on sm_80+, where the LWTA backward opts in to more than 48 KiB
        parsed.set_shared_memory_limit(227 * 1024);
        let parsed = Arc::new(parsed);
        state.modules.insert(module, parsed.clone());
        Ok(parsed)
    }
}

/// The `rows × cols` column-major matrix `op(X)` of batch `bi` as a host matrix: its elements
/// are read (as f32) from the region the stored matrix occupies.
fn read_operand(mem: &Memory, x: &GemmMat, bi: usize, rows: usize, cols: usize) -> Result<(Vec<f32>, usize, usize)> {
    // stored matrix: (rows × cols) when not transposed, (cols × rows) when transposed
    let (sr, sc) = if x.trans { (cols, rows) } else { (rows, cols) };
    let len = if sr == 0 || sc == 0 { 0 } else { (sc - 1) * x.ld + sr };
    let addr = x.ptr + ((bi * x.stride) * x.ty.bytes()) as u64;
    let bytes = mem.read(addr, len * x.ty.bytes()).map_err(|e| emu_err("reading a GEMM operand", e))?;
    let values = widen(&bytes, x.ty);
    // element (i, j) of op(X): stored (i, j) at i + j·ld, or stored (j, i) at j + i·ld
    let (row_stride, col_stride) = if x.trans { (x.ld, 1) } else { (1, x.ld) };
    Ok((values, row_stride, col_stride))
}

fn widen(bytes: &[u8], ty: GemmType) -> Vec<f32> {
    match ty {
        GemmType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        GemmType::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect(),
    }
}

fn narrow(values: &[f32], ty: GemmType) -> Vec<u8> {
    match ty {
        GemmType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GemmType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
    }
}

impl Gpu for EmulatedGpu {
    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.state()?.mem.alloc(bytes).map_err(|e| emu_err(format!("allocating {bytes} bytes"), e))
    }

    unsafe fn free(&self, ptr: u64) -> Result<()> {
        self.state()?.mem.free(ptr).map_err(|e| emu_err("freeing", e))
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.state()?.mem.write(dst, src).map_err(|e| emu_err("copying to the device", e))
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.state()?.mem.read_into(src, dst).map_err(|e| emu_err("copying to the host", e))
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.state()?.mem.copy(dst, src, bytes).map_err(|e| emu_err("copying on the device", e))
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> Result<()> {
        self.state()?.mem.fill(dst, byte, bytes).map_err(|e| emu_err("memset", e))
    }

    unsafe fn launch(&self, module: Module, entry: &str, grid: Grid, args: &[KArg]) -> Result<()> {
        let mut state = self.state()?;
        let m = Self::module(&mut state, module)?;
        let cfg = LaunchConfig { grid: [grid.x, grid.y, 1], block: [grid.threads, 1, 1], dynamic_shared_bytes: grid.shared };
        let args: Vec<Arg> = args.iter().map(arg).collect();
        m.launch(&mut state.mem, entry, cfg, &args).map_err(|e| emu_err(format!("launching {entry} of {}", module.file()), e))?;
        Ok(())
    }

    unsafe fn gemm(&self, call: &GemmCall) -> Result<()> {
        call.check().map_err(|e| Error::Cuda { what: format!("cuBLAS (emulated): invalid GEMM arguments: {e}"), source: None })?;
        let GemmCall { m, n, k, batch, alpha, beta, a, b, c } = *call;
        let mut state = self.state()?;
        let mem = &mut state.mem;
        for bi in 0..batch {
            if m == 0 || n == 0 {
                break;
            }
            let product = if k == 0 {
                vec![0.0; m * n]
            } else {
                let (av, ars, acs) = read_operand(mem, &a, bi, m, k)?;
                let (bv, brs, bcs) = read_operand(mem, &b, bi, k, n)?;
                matmul(Mat::strided(&av, m, k, ars, acs), Mat::strided(&bv, k, n, brs, bcs))?
            };
            // C is column-major: element (i, j) at i + j·ldc; written column by column
            let c_addr = c.ptr + ((bi * c.stride) * c.ty.bytes()) as u64;
            for j in 0..n {
                let col_addr = c_addr + ((j * c.ld) * c.ty.bytes()) as u64;
                let old = if beta == 0.0 {
                    vec![0.0; m]
                } else {
                    widen(&mem.read(col_addr, m * c.ty.bytes()).map_err(|e| emu_err("reading C", e))?, c.ty)
                };
                let col: Vec<f32> = (0..m)
                    .map(|i| if beta == 0.0 { alpha * product[i * n + j] } else { alpha * product[i * n + j] + beta * old[i] })
                    .collect();
                mem.write(col_addr, &narrow(&col, c.ty)).map_err(|e| emu_err("writing C", e))?;
            }
        }
        Ok(())
    }

    fn sm_count(&self) -> u32 {
        SM_COUNT
    }

    fn blocks_per_sm(&self, _: Module, _: &str, _: u32, _: u32) -> Result<u32> {
        Ok(BLOCKS_PER_SM)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
