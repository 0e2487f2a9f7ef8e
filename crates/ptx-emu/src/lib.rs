//! # ptx-emu — a PTX interpreter for testing GPU kernels without a GPU
//!
//! Runs CUDA PTX kernels (handwritten or NVRTC output) on the CPU, so the project's GPU kernels
//! are checked against their CPU references in CI, where there is no GPU. It is a test tool:
//! correct, deterministic and strict about kernel bugs, not fast.
//!
//! ```
//! use ptx_emu::{Arg, LaunchConfig, Memory, Module};
//!
//! let ptx = r#"
//! .version 8.4
//! .target sm_80
//! .address_size 64
//! .visible .entry scale(.param .u64 p, .param .f32 k, .param .u32 n) {
//!     .reg .pred %done;
//!     .reg .b32 %i, %n;
//!     .reg .f32 %v, %k;
//!     .reg .b64 %a;
//!     mov.u32 %i, %tid.x;
//!     ld.param.u32 %n, [n];
//!     setp.ge.u32 %done, %i, %n;
//!     @%done exit;
//!     ld.param.u64 %a, [p];
//!     mad.wide.u32 %a, %i, 4, %a;
//!     ld.param.f32 %k, [k];
//!     ld.global.f32 %v, [%a];
//!     mul.rn.f32 %v, %v, %k;
//!     st.global.f32 [%a], %v;
//! }"#;
//! let module = Module::parse(ptx)?;
//! let mut mem = Memory::new();
//! let data = mem.alloc(3 * 4)?;
//! let input: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! mem.write(data, &input)?;
//! let cfg = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
//! let stats = module.launch(&mut mem, "scale", cfg, &[Arg::U64(data), Arg::F32(0.5), Arg::U32(3)])?;
//! let out: Vec<f32> = mem.read(data, 12)?.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
//! assert_eq!(out, [0.5, 1.0, 1.5]);
//! assert_eq!(stats.threads, 32);
//! # Ok::<(), ptx_emu::Error>(())
//! ```
//!
//! ## Model
//! * **Parsing** happens once: [`Module::parse`] decodes every instruction into a compact enum
//!   with register slots, immediates as constant slots and branch targets as indices; an
//!   unsupported instruction, modifier or directive is a parse error naming its line.
//! * **Threads** schedule independently (as on Volta and later): each thread of a CTA has its
//!   own program counter and registers (a flat `Vec<u64>`) and runs until it exits or reaches a
//!   collective: a CTA barrier (`bar.sync` / `barrier.sync` / `bar.arrive` / `bar.red`, with
//!   barrier number and thread count) or a warp collective (`shfl.sync`, `vote.sync`,
//!   `bar.warp.sync`, `redux.sync`, `match.sync`). The scheduler runs the CTA's threads in
//!   order, each as far as it gets, and repeats. A barrier completes when its thread count
//!   (default: the whole CTA) has arrived; a warp collective when every lane of its member mask
//!   waits at the same kind of collective with the same mask. `activemask` answers once every
//!   live lane of the warp is blocked, with the lanes blocked at an `activemask` (the converged
//!   ones). A thread also yields after 2^20 instructions, so spin-waits on shared memory
//!   progress.
//! * **Kernel bugs are errors**: a deadlock (no thread can progress), a barrier some threads wait
//!   at while others exited, a member mask naming exited or absent lanes or missing the executing
//!   lane, out-of-bounds and misaligned accesses in every space, and — with initcheck, on by
//!   default ([`Memory::set_initcheck`]) — reads of global bytes nothing wrote. Fault messages
//!   name the kernel, PTX line, block and thread, the address and the allocation it missed.
//!   Global allocations are 256-byte aligned with 4 KiB unmapped between them, so running off
//!   the end of one buffer faults rather than reading the next. A per-launch instruction budget
//!   ([`Module::set_instruction_budget`], default 10^10) turns an endless loop into an error.
//!   What PTX leaves undefined but a GPU does not fault on gets a fixed answer: a `shfl` source
//!   lane outside the member mask reads as the reading lane's own value, integer division by
//!   zero gives all ones (`rem`: the dividend).
//! * **CTAs** run one after another in `x`, `y`, `z` order, so results are deterministic and
//!   atomics are trivially atomic; global memory is shared by all of them.
//! * **Memory spaces**: global ([`Memory`]), shared (static `.shared` variables then the
//!   `extern .shared` dynamic bytes, per CTA, at most 48 KiB unless
//!   [`Module::set_shared_memory_limit`] raises it), local (per thread, one frame per call),
//!   param (kernel and call parameters), const (module `.const` variables with their
//!   initialisers), module `.global` variables (placed in a [`Memory`] on the first launch and
//!   kept across launches, as on a GPU). Generic addresses reach shared, local, const and param
//!   memory through windows (`cvta`), so a generic pointer into shared memory works. Fresh
//!   shared and local memory, and fresh allocations, hold `0xFF` bytes (NaN as f32).
//!
//! ## Exactness against hardware
//! Integer arithmetic is exact. f32/f64 `add`, `sub`, `mul`, `fma`, `div.rn`, `sqrt.rn`,
//! `rcp.rn` and `cvt` are bit-exact IEEE in every rounding direction (`.rn .rz .rm .rp`, and the
//! integral `.rni ...`), as are f16/bf16 conversions and arithmetic; `.ftz` flushes f32
//! subnormal inputs and results to sign-preserving zero, `.sat` clamps to [0, 1]; `min`/`max`
//! return the non-NaN operand (`.NaN`: NaN), ordering -0 below +0; NaN results are the
//! canonical `0x7FFFFFFF`. The emulator runs instructions as written: ptxas may fuse a `mul.f32`
//! and an `add.f32` that carry no rounding modifier into one FMA, so NVRTC code (which writes
//! them so) can differ from a GPU in the last bit.
//!
//! The approximate instructions (`ex2.approx`, `lg2.approx`, `rcp.approx`, `rsqrt.approx`,
//! `sqrt.approx`, `sin/cos.approx`, `tanh.approx`, `div.approx`, `div.full`) are computed in f64
//! and rounded once, honouring `.ftz` and the ISA's special cases (`ex2(-inf) = +0`,
//! `lg2(0) = -inf`, `lg2(x < 0) = NaN`, ...). They are *more* accurate than the hardware, which
//! is within about 2 ulp: a test must compare results that went through them with a tolerance of
//! a few ulp per such instruction, not bit for bit.
//!
//! ## Instructions
//! Everything in `kernels/lwta_*.ptx` and what NVRTC emits for ordinary kernels (see
//! `tests/nvrtc/`): `mov` (special registers `%tid %ntid %ctaid %nctaid %laneid %warpid
//! %lanemask_* %clock %clock64 %globaltimer %dynamic_smem_size ...`, packing `{a, b}` and
//! unpacking), `ld`/`st`/`ldu` (every space, `.v2`/`.v4`, cache qualifiers ignored),
//! `prefetch`/`membar`/`fence` (no-ops), `cvta`, `isspacep`; integer `add sub mul mad div rem
//! abs neg min max` at every width (`.lo .hi .wide .sat`, carry chains `add.cc addc sub.cc subc
//! mad.cc madc`), `and or xor not cnot shl shr shf lop3 prmt bfe bfi brev popc clz bfind`;
//! float `add sub mul fma mad div rcp sqrt rsqrt ex2 lg2 sin cos tanh abs neg min max copysign
//! testp` (f32 and f64; f16, bf16 and their x2 forms for the arithmetic), `cvt` between all of
//! them, `setp` with every comparison and `.and/.or/.xor`, `selp`, `slct`, predicate logic;
//! `bra`, `brx.idx`, `call`/`ret` with `.param` passing (recursion too), `exit`, `trap`;
//! `atom`/`red` (`add min max exch cas and or xor inc dec`, global, shared and generic); and
//! the collectives above.
//!
//! ## Not supported
//! Textures and surfaces, `cp.async` and the tensor-memory instructions (`ldmatrix`, `mma`,
//! `wgmma`, TMA), clusters, dynamic parallelism, indirect calls, `vprintf`, 128-bit loads,
//! `.reg .v4` vector registers, video instructions (`vadd`, `dp4a`, `sad`), `mul24`, `setp` on
//! f16x2, half-precision atomics, and per-kernel shared layouts (every entry gets all the
//! module's static `.shared` variables).
//! The scheduler does not model memory ordering between threads: everything a thread did is
//! visible to the threads that run after it.
//!
//! ## Speed
//! On one core of the project's build machine (`lscpu`: "Intel(R) Xeon(R) Processor", a
//! 2-core KVM guest with AVX-512, shared with other builds), the LWTA kernels of `kernels/`
//! (forward and backward, quad and scalar entries, Philox noise on) run at about 50 million
//! emulated instructions per second (40–80 M/s per entry, 2026-12-01) in the test profile
//! (opt-level 2) and in release builds; `cargo run --release -p ptx-emu --example throughput`
//! measures it.

mod decode;
mod error;
mod exec;
mod float;
mod inst;
mod int;
mod memory;
mod parse;

use std::sync::atomic::{AtomicU64, Ordering};

pub use error::{Error, Fault, FaultKind};
pub use memory::Memory;

/// Instructions a launch may execute by default (see [`Module::set_instruction_budget`]).
pub const DEFAULT_INSTRUCTION_BUDGET: u64 = 10_000_000_000;
/// Shared memory a CTA may use by default: what a CUDA launch gets without opting in to more.
pub const DEFAULT_SHARED_MEMORY_LIMIT: u32 = 48 * 1024;
const MAX_THREADS_PER_BLOCK: u32 = 1024;

static NEXT_MODULE_ID: AtomicU64 = AtomicU64::new(0);

/// A parsed, decoded PTX module.
#[derive(Debug)]
pub struct Module {
    program: decode::Program,
    id: u64,
    budget: u64,
    shared_limit: u32,
}

/// Grid and block sizes and the dynamic shared memory of a launch, as in `cuLaunchKernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
}

/// One kernel argument. `Bytes` is a by-value `.param` array or struct
/// (`.param .align 4 .b8 keys[80]`) in its little-endian layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    U8(u8),
    U16(u16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bytes(Vec<u8>),
}

impl Arg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::U8(v) => vec![*v],
            Arg::U16(v) => v.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::U64(v) => v.to_le_bytes().to_vec(),
            Arg::I64(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
            Arg::F64(v) => v.to_le_bytes().to_vec(),
            Arg::Bytes(v) => v.clone(),
        }
    }
}

/// What a launch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Instructions executed by all threads, predicated-off ones included.
    pub instructions: u64,
    pub threads: u64,
    pub blocks: u64,
}

/// One `.param` of an entry: name, size and alignment in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    pub name: String,
    pub bytes: usize,
    pub align: usize,
}

impl Module {
    /// Parses and decodes `ptx`; errors name the line and what is unsupported or malformed.
    pub fn parse(ptx: &str) -> Result<Module, Error> {
        let ast = parse::parse(ptx)?;
        let id = NEXT_MODULE_ID.fetch_add(1, Ordering::Relaxed);
        let program = decode::decode(&ast, id)?;
        Ok(Module { program, id, budget: DEFAULT_INSTRUCTION_BUDGET, shared_limit: DEFAULT_SHARED_MEMORY_LIMIT })
    }

    /// The names of the module's `.entry` functions, in file order.
    pub fn entries(&self) -> Vec<&str> {
        self.program.funcs.iter().filter(|f| f.is_entry).map(|f| f.name.as_str()).collect()
    }

    /// Size and alignment of each `.param` of `entry`, in order.
    pub fn params(&self, entry: &str) -> Result<Vec<ParamInfo>, Error> {
        let func = &self.program.funcs[self.entry_index(entry)?];
        Ok(func.params.iter().map(|p| ParamInfo { name: p.name.clone(), bytes: p.bytes as usize, align: p.align as usize }).collect())
    }

    /// Instructions one launch may execute before it fails with [`Error::Budget`].
    pub fn set_instruction_budget(&mut self, instructions: u64) {
        self.budget = instructions;
    }

    /// Shared memory (static + dynamic) a CTA may use; CUDA allows up to 227 KiB on sm_90 after
    /// `cuFuncSetAttribute`, 48 KiB without.
    pub fn set_shared_memory_limit(&mut self, bytes: u32) {
        self.shared_limit = bytes;
    }

    fn entry_index(&self, entry: &str) -> Result<usize, Error> {
        self.program
            .funcs
            .iter()
            .position(|f| f.is_entry && f.name == entry)
            .ok_or_else(|| Error::UnknownEntry { name: entry.to_string(), entries: self.entries().iter().map(|s| s.to_string()).collect() })
    }

    /// Runs `entry` over the grid, reading and writing `mem`. Checks the arguments against the
    /// entry's `.param` list and the launch against CUDA's limits first.
    pub fn launch(&self, mem: &mut Memory, entry: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<Stats, Error> {
        let index = self.entry_index(entry)?;
        let func = &self.program.funcs[index];
        let launch_err = |message: String| Err(Error::Launch { entry: entry.to_string(), message });
        if args.len() != func.params.len() {
            return Err(Error::Arguments {
                entry: entry.to_string(),
                message: format!("takes {} arguments, {} given", func.params.len(), args.len()),
            });
        }
        let mut kernel_params = vec![0u8; func.kernel_param_bytes as usize];
        for (i, (arg, param)) in args.iter().zip(&func.params).enumerate() {
            let bytes = arg.bytes();
            if bytes.len() != param.bytes as usize {
                return Err(Error::Arguments {
                    entry: entry.to_string(),
                    message: format!("argument {i} (`{}`, {} bytes) was given {} bytes ({arg:?})", param.name, param.bytes, bytes.len()),
                });
            }
            kernel_params[param.offset as usize..][..bytes.len()].copy_from_slice(&bytes);
        }
        let (grid, block) = (cfg.grid, cfg.block);
        let threads = u64::from(block[0]) * u64::from(block[1]) * u64::from(block[2]);
        if grid.contains(&0) || block.contains(&0) {
            return launch_err(format!("grid {grid:?} and block {block:?} must be at least 1 in every dimension"));
        }
        if threads > u64::from(MAX_THREADS_PER_BLOCK) || block[2] > 64 {
            return launch_err(format!("block {block:?} has {threads} threads; at most {MAX_THREADS_PER_BLOCK} (and z at most 64)"));
        }
        if grid[0] >= 1 << 31 || grid[1] > 65535 || grid[2] > 65535 {
            return launch_err(format!("grid {grid:?} exceeds CUDA's limits (2^31-1, 65535, 65535)"));
        }
        if let Some(req) = func.reqntid {
            if req.map(|d| d as u32) != block {
                return launch_err(format!("the entry requires .reqntid {req:?}, the block is {block:?}"));
            }
        }
        if let Some(max) = func.maxntid {
            if threads > max.iter().product::<u64>() {
                return launch_err(format!("the entry allows at most .maxntid {max:?} threads, the block has {threads}"));
            }
        }
        if func.local_bytes as usize > exec::MAX_LOCAL_BYTES {
            return launch_err(format!(
                "the entry needs {} bytes of local memory per thread; CUDA allows {}",
                func.local_bytes,
                exec::MAX_LOCAL_BYTES
            ));
        }
        let shared = u64::from(self.program.dynamic_shared_base) + u64::from(cfg.dynamic_shared_bytes);
        if shared > u64::from(self.shared_limit) {
            return launch_err(format!(
                "{} bytes of static and {} of dynamic shared memory exceed the limit of {} (Module::set_shared_memory_limit)",
                self.program.static_shared, cfg.dynamic_shared_bytes, self.shared_limit
            ));
        }
        mem.ensure_module_globals(self.id, &self.program.globals_image);
        let mut run = exec::Launch {
            prog: &self.program,
            entry: index,
            kernel_params,
            grid,
            block,
            dynamic_shared: cfg.dynamic_shared_bytes,
            budget: self.budget,
            executed: 0,
        };
        let threads = run.run(mem)?;
        Ok(Stats { instructions: run.executed, threads, blocks: u64::from(grid[0]) * u64::from(grid[1]) * u64::from(grid[2]) })
    }
}
