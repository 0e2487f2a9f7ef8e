//! Running a launch: CTAs one after another; in a CTA, each thread runs on its own (own pc and
//! registers, Volta-style independent scheduling) until it exits or reaches a collective, which
//! completes once every participant has arrived.

use crate::decode::{Function, Program};
use crate::error::{coords, Error, Fault, FaultKind};
use crate::float::{self, Convert};
use crate::inst::*;
use crate::int;
use crate::memory::{KernelAccess, Memory, CONST_WINDOW, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, WINDOW_BYTES};

const WARP: usize = 32;
/// Instructions a thread runs before the scheduler turns to the others, so a spin-wait on a
/// flag another thread of the CTA sets still makes progress.
const SLICE: u64 = 1 << 20;
const MAX_CALL_DEPTH: usize = 64;
/// CUDA's limit on local memory per thread, all call frames together.
pub(crate) const MAX_LOCAL_BYTES: usize = 512 * 1024;
/// Fresh shared and local memory hold all-ones bytes (NaN as f32), as a hint when a kernel
/// reads what it never wrote.
const POISON: u8 = 0xFF;

/// Everything one launch needs besides global memory.
pub(crate) struct Launch<'a> {
    pub prog: &'a Program,
    pub entry: usize,
    pub kernel_params: Vec<u8>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
    pub budget: u64,
    pub executed: u64,
}

struct Thread {
    regs: Vec<u64>,
    func: u32,
    pc: u32,
    /// All frames' local memory; the current frame starts at `regs[FRAME_LOCAL]`.
    local: Vec<u8>,
    /// The current frame's param space.
    params: Vec<u8>,
    frames: Vec<Frame>,
    state: State,
    tid: [u32; 3],
    /// Where the thread exited (for diagnostics).
    exit_line: u32,
}

struct Frame {
    func: u32,
    pc: u32,
    site: u32,
    regs: Vec<u64>,
    params: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Ready,
    AtBarrier(u32),
    Warp(WarpWait),
    Exited,
}

/// A thread's arrival at a warp collective: what it contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WarpWait {
    kind: WarpKind,
    mask: u32,
    a: u64,
    b: u64,
    c: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WarpKind {
    Shfl(ShflMode),
    Vote(VoteMode),
    Sync,
    Redux(ReduxOp, bool),
    Match {
        all: bool,
        wide: bool,
    },
    /// `activemask`: answered once every live lane of the warp is blocked, with the lanes
    /// blocked there (the converged ones).
    Active,
}

impl WarpKind {
    fn name(self) -> &'static str {
        match self {
            WarpKind::Shfl(_) => "shfl.sync",
            WarpKind::Vote(_) => "vote.sync",
            WarpKind::Sync => "bar.warp.sync",
            WarpKind::Redux(..) => "redux.sync",
            WarpKind::Match { .. } => "match.sync",
            WarpKind::Active => "activemask",
        }
    }
}

/// Why a thread stopped running.
enum Event {
    Exit,
    Yield,
    Barrier { op: BarOp, id: u32, count: Option<u32>, pred: bool },
    Warp(WarpWait),
}

enum Ctl {
    Call(u32),
    Ret,
    Event(Event),
}

#[derive(Default)]
struct Barrier {
    arrived: u32,
    expected: u32,
    waiting: Vec<usize>,
    popc: u32,
    line: u32,
}

/// Per-CTA state shared by its threads.
struct Cta {
    shared: Vec<u8>,
    ctaid: [u32; 3],
    /// Per warp: lanes that exist and lanes that exited.
    lanes: Vec<u32>,
    exited: Vec<u32>,
}

/// The byte spaces a running thread can address.
struct Spaces<'a> {
    mem: &'a mut Memory,
    shared: &'a mut [u8],
    local: &'a mut [u8],
    params: &'a mut [u8],
    kernel_params: &'a [u8],
    consts: &'a [u8],
    static_shared: u32,
    dynamic_base: u32,
}

impl Spaces<'_> {
    /// A generic address to the space it falls in.
    fn resolve(space: Space, addr: u64) -> (Space, u64) {
        if space != Space::Generic {
            return (space, addr);
        }
        for (window, target) in
            [(SHARED_WINDOW, Space::Shared), (LOCAL_WINDOW, Space::Local), (CONST_WINDOW, Space::Const), (PARAM_WINDOW, Space::KernelParam)]
        {
            if addr.wrapping_sub(window) < WINDOW_BYTES {
                return (target, addr - window);
            }
        }
        (Space::Global, addr)
    }

    fn range(&self, space: Space, len: usize, addr: u64, bytes: usize, write: bool) -> Result<std::ops::Range<usize>, FaultKind> {
        match addr.checked_add(bytes as u64) {
            Some(end) if end <= len as u64 => Ok(addr as usize..end as usize),
            _ => {
                let what = match space {
                    Space::Shared => format!(
                        "the CTA has {len} bytes of shared memory ({} static, {} dynamic at offset {})",
                        self.static_shared,
                        len as u32 - self.dynamic_base,
                        self.dynamic_base
                    ),
                    Space::Local => format!("the thread has {len} bytes of local memory"),
                    _ => format!("the {} space has {len} bytes", space.name()),
                };
                Err(FaultKind::OutOfBounds { space: space.name(), write, addr, bytes, detail: what })
            }
        }
    }

    fn read(&mut self, space: Space, addr: u64, out: &mut [u8]) -> Result<(), FaultKind> {
        let (space, addr) = Self::resolve(space, addr);
        let source: &[u8] = match space {
            Space::Global => {
                return self.mem.kernel_read(addr, out).map_err(|e| match e {
                    KernelAccess::OutOfBounds(detail) => {
                        FaultKind::OutOfBounds { space: "global", write: false, addr, bytes: out.len(), detail }
                    }
                    KernelAccess::Uninitialised(detail) => FaultKind::Uninitialised { addr, bytes: out.len(), detail },
                })
            }
            Space::Shared => self.shared,
            Space::Local => self.local,
            Space::FrameParam => self.params,
            Space::KernelParam => self.kernel_params,
            Space::Const | Space::Generic => self.consts,
        };
        let range = self.range(space, source.len(), addr, out.len(), false)?;
        out.copy_from_slice(&source[range]);
        Ok(())
    }

    fn write(&mut self, space: Space, addr: u64, data: &[u8]) -> Result<(), FaultKind> {
        let (space, addr) = Self::resolve(space, addr);
        let len = match space {
            Space::Global => {
                return self.mem.kernel_write(addr, data).map_err(|e| match e {
                    KernelAccess::OutOfBounds(detail) | KernelAccess::Uninitialised(detail) => {
                        FaultKind::OutOfBounds { space: "global", write: true, addr, bytes: data.len(), detail }
                    }
                })
            }
            Space::Shared => self.shared.len(),
            Space::Local => self.local.len(),
            Space::FrameParam => self.params.len(),
            Space::KernelParam | Space::Const | Space::Generic => {
                return Err(FaultKind::Other(format!("write to read-only {} memory at {addr:#x}", space.name())))
            }
        };
        let range = self.range(space, len, addr, data.len(), true)?;
        let target: &mut [u8] = match space {
            Space::Shared => self.shared,
            Space::Local => self.local,
            _ => self.params,
        };
        target[range].copy_from_slice(data);
        Ok(())
    }
}

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

fn window(space: Space) -> u64 {
    match space {
        Space::Shared => SHARED_WINDOW,
        Space::Local => LOCAL_WINDOW,
        Space::Const => CONST_WINDOW,
        Space::KernelParam | Space::FrameParam => PARAM_WINDOW,
        Space::Global | Space::Generic => 0,
    }
}

fn check_aligned(space: Space, addr: u64, bytes: usize, write: bool) -> Result<(), FaultKind> {
    if addr.is_multiple_of(bytes as u64) {
        Ok(())
    } else {
        Err(FaultKind::Misaligned { space: Spaces::resolve(space, addr).0.name(), write, addr, bytes })
    }
}

fn compare(cmp: Cmp, kind: CmpKind, a: u64, b: u64) -> bool {
    match kind {
        CmpKind::Int { bits, signed } => {
            let (x, y) = (float::int_value(a, bits, signed), float::int_value(b, bits, signed));
            match cmp {
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Gt => x > y,
                _ => x >= y,
            }
        }
        CmpKind::Float { fmt, ftz } => {
            let value = |v: u64| {
                let v = float::to_f64(v, fmt);
                if ftz && fmt == Fmt::F32 && (v as f32).is_subnormal() {
                    0.0
                } else {
                    v
                }
            };
            let (x, y) = (value(a), value(b));
            let unordered = x.is_nan() || y.is_nan();
            match cmp {
                Cmp::Eq => x == y,
                Cmp::Ne => !unordered && x != y,
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Gt => x > y,
                Cmp::Ge => x >= y,
                Cmp::Equ => unordered || x == y,
                Cmp::Neu => unordered || x != y,
                Cmp::Ltu => unordered || x < y,
                Cmp::Leu => unordered || x <= y,
                Cmp::Gtu => unordered || x > y,
                Cmp::Geu => unordered || x >= y,
                Cmp::Num => !unordered,
                Cmp::Nan => unordered,
            }
        }
    }
}

fn bool_op(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

fn atomic(op: AtomOp, ty: AtomTy, old: u64, b: u64, c: u64) -> u64 {
    match ty {
        // atom.add.f32 flushes subnormal inputs and results to zero
        AtomTy::F32 if op == AtomOp::Add => float::f32_op(FloatOp::Add, true, old, b, 0),
        AtomTy::F64 if op == AtomOp::Add => {
            let sum = f64::from_bits(old) + f64::from_bits(b);
            if sum.is_nan() {
                float::canonical_nan(Fmt::F64)
            } else {
                sum.to_bits()
            }
        }
        AtomTy::F32 | AtomTy::F64 => b, // exch
        AtomTy::Int { bits, signed } => {
            let (x, y) = (float::int_value(old, bits, signed), float::int_value(b, bits, signed));
            let (ux, uy) = (old & mask(bits), b & mask(bits));
            match op {
                AtomOp::Add => old.wrapping_add(b),
                AtomOp::Min => x.min(y) as u64,
                AtomOp::Max => x.max(y) as u64,
                AtomOp::Exch => b,
                AtomOp::Cas => {
                    if ux == uy {
                        c
                    } else {
                        old
                    }
                }
                AtomOp::And => old & b,
                AtomOp::Or => old | b,
                AtomOp::Xor => old ^ b,
                AtomOp::Inc => {
                    if ux >= uy {
                        0
                    } else {
                        ux + 1
                    }
                }
                AtomOp::Dec => {
                    if ux == 0 || ux > uy {
                        uy
                    } else {
                        ux - 1
                    }
                }
            }
        }
    }
}

impl Launch<'_> {
    fn func(&self, index: u32) -> &Function {
        &self.prog.funcs[index as usize]
    }

    fn entry_name(&self) -> String {
        self.prog.funcs[self.entry].name.clone()
    }

    fn fault(&self, t: &Thread, ctaid: [u32; 3], kind: FaultKind) -> Error {
        let func = self.func(t.func);
        let pc = (t.pc as usize).min(func.code.len() - 1);
        Error::Fault(Box::new(Fault {
            entry: self.entry_name(),
            line: func.lines[pc] as usize,
            opcode: func.opcodes[pc].to_string(),
            block: ctaid,
            thread: t.tid,
            kind,
        }))
    }

    /// Runs every CTA; returns the number of threads run.
    pub fn run(&mut self, mem: &mut Memory) -> Result<u64, Error> {
        let [gx, gy, gz] = self.grid;
        for z in 0..gz {
            for y in 0..gy {
                for x in 0..gx {
                    self.run_cta([x, y, z], mem)?;
                }
            }
        }
        let [bx, by, bz] = self.block;
        Ok(u64::from(gx) * u64::from(gy) * u64::from(gz) * u64::from(bx * by * bz))
    }

    fn new_thread(&self, linear: usize, ctaid: [u32; 3]) -> Thread {
        let entry = &self.prog.funcs[self.entry];
        let [bx, by, bz] = self.block;
        let (bx_, by_) = (bx as usize, by as usize);
        let tid = [(linear % bx_) as u32, ((linear / bx_) % by_) as u32, (linear / (bx_ * by_)) as u32];
        let mut regs = entry.template.clone();
        let lane = (linear % WARP) as u32;
        let threads = bx * by * bz;
        let specials = [
            tid[0],
            tid[1],
            tid[2],
            bx,
            by,
            bz,
            ctaid[0],
            ctaid[1],
            ctaid[2],
            self.grid[0],
            self.grid[1],
            self.grid[2],
            lane,
            (linear / WARP) as u32,
            threads.div_ceil(WARP as u32),
            1 << lane,
            ((1u64 << (lane + 1)) - 1) as u32,
            (1u32 << lane) - 1,
            !((1u32 << lane) - 1),
            !((1u64 << (lane + 1)) - 1) as u32,
            0,
            1,
            0,
            self.dynamic_shared,
            self.prog.dynamic_shared_base + self.dynamic_shared,
            WARP as u32,
        ];
        for (i, value) in specials.iter().enumerate() {
            regs[FIRST_SPECIAL as usize + i] = u64::from(*value);
        }
        Thread {
            regs,
            func: self.entry as u32,
            pc: 0,
            local: vec![POISON; entry.local_bytes as usize],
            params: vec![0; entry.frame_param_bytes as usize],
            frames: Vec::new(),
            state: State::Ready,
            tid,
            exit_line: 0,
        }
    }

    fn run_cta(&mut self, ctaid: [u32; 3], mem: &mut Memory) -> Result<(), Error> {
        let n = self.block.iter().product::<u32>() as usize;
        let mut threads: Vec<Thread> = (0..n).map(|i| self.new_thread(i, ctaid)).collect();
        let warps = n.div_ceil(WARP);
        let mut cta = Cta {
            shared: vec![POISON; (self.prog.dynamic_shared_base + self.dynamic_shared) as usize],
            ctaid,
            lanes: (0..warps).map(|w| ((1u64 << (n - w * WARP).min(WARP)) - 1) as u32).collect(),
            exited: vec![0; warps],
        };
        let mut barriers: Vec<Barrier> = (0..16).map(|_| Barrier::default()).collect();
        loop {
            let mut progressed = false;
            for i in 0..n {
                while threads[i].state == State::Ready {
                    progressed = true;
                    match self.run_thread(&mut threads[i], &mut cta, mem)? {
                        Event::Exit => self.exit(&mut threads, i, &mut cta)?,
                        Event::Yield => break,
                        Event::Barrier { op, id, count, pred } => {
                            self.arrive(&mut threads, i, &mut barriers, op, id, count, pred, ctaid)?
                        }
                        Event::Warp(wait) => {
                            threads[i].state = State::Warp(wait);
                            if wait.kind != WarpKind::Active {
                                self.try_warp(&mut threads, i, &cta)?;
                            }
                        }
                    }
                }
            }
            // every live thread is blocked now: the lanes at an activemask are the converged ones
            progressed |= self.answer_activemasks(&mut threads);
            if threads.iter().all(|t| t.state == State::Exited) {
                return Ok(());
            }
            if !progressed {
                return Err(self.stuck(&threads, &barriers, ctaid));
            }
        }
    }

    fn exit(&self, threads: &mut [Thread], i: usize, cta: &mut Cta) -> Result<(), Error> {
        let t = &mut threads[i];
        t.state = State::Exited;
        t.exit_line = self.func(t.func).lines[t.pc as usize];
        let (warp, lane) = (i / WARP, i % WARP);
        cta.exited[warp] |= 1 << lane;
        // a waiting collective that names this lane can never complete
        for other in &threads[warp * WARP..(warp * WARP + WARP).min(threads.len())] {
            if let State::Warp(wait) = other.state {
                if wait.mask & (1 << lane) != 0 {
                    return Err(self.fault(
                        other,
                        cta.ctaid,
                        FaultKind::Collective(format!(
                            "{} with membermask {:#010x} waits for lane {lane}, which exited (PTX line {})",
                            wait.kind.name(),
                            wait.mask,
                            threads[i].exit_line
                        )),
                    ));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn arrive(
        &self,
        threads: &mut [Thread],
        i: usize,
        barriers: &mut [Barrier],
        op: BarOp,
        id: u32,
        count: Option<u32>,
        pred: bool,
        ctaid: [u32; 3],
    ) -> Result<(), Error> {
        let n = threads.len() as u32;
        let bad = |message: String| Err(self.fault(&threads[i], ctaid, FaultKind::Collective(message)));
        let Some(barrier) = barriers.get_mut(id as usize) else {
            return bad(format!("barrier {id} does not exist (0..15)"));
        };
        let expected = count.unwrap_or(n);
        if count.is_some_and(|c| c == 0 || c % WARP as u32 != 0 && c != n || c > n) {
            return bad(format!("barrier thread count {expected} must be a non-zero multiple of 32 and at most the CTA's {n} threads"));
        }
        if barrier.arrived == 0 {
            barrier.expected = expected;
            barrier.line = self.func(threads[i].func).lines[threads[i].pc as usize];
        } else if barrier.expected != expected {
            return bad(format!(
                "barrier {id} reached with thread count {expected} while {} threads wait expecting {}",
                barrier.arrived, barrier.expected
            ));
        }
        barrier.arrived += 1;
        barrier.popc += pred as u32;
        let t = &mut threads[i];
        if op == BarOp::Arrive {
            t.pc += 1;
        } else {
            t.state = State::AtBarrier(id);
            barrier.waiting.push(i);
        }
        if barrier.arrived < barrier.expected {
            return Ok(());
        }
        let (arrived, popc) = (barrier.arrived, barrier.popc);
        for &w in &barrier.waiting {
            let t = &mut threads[w];
            if let Op::Bar { op, d, .. } = self.func(t.func).code[t.pc as usize].op {
                let result = match op {
                    BarOp::RedPopc => u64::from(popc),
                    BarOp::RedAnd => u64::from(popc == arrived),
                    BarOp::RedOr => u64::from(popc > 0),
                    BarOp::Sync | BarOp::Arrive => 0,
                };
                t.regs[d as usize] = result;
            }
            t.pc += 1;
            t.state = State::Ready;
        }
        *barrier = Barrier::default();
        Ok(())
    }

    /// Completes the warp collective thread `i` just arrived at, if all its members are there.
    fn try_warp(&self, threads: &mut [Thread], i: usize, cta: &Cta) -> Result<(), Error> {
        let State::Warp(wait) = threads[i].state else { return Ok(()) };
        let (warp, lane) = (i / WARP, i % WARP);
        let bad = |message: String| Err(self.fault(&threads[i], cta.ctaid, FaultKind::Collective(message)));
        if wait.mask & (1 << lane) == 0 {
            return bad(format!("{} with membermask {:#010x} does not include the executing lane {lane}", wait.kind.name(), wait.mask));
        }
        if wait.mask & !cta.lanes[warp] != 0 {
            return bad(format!(
                "{} membermask {:#010x} names lanes this warp does not have (it has lanes {:#010x})",
                wait.kind.name(),
                wait.mask,
                cta.lanes[warp]
            ));
        }
        if wait.mask & cta.exited[warp] != 0 {
            let gone = (wait.mask & cta.exited[warp]).trailing_zeros();
            return bad(format!(
                "{} membermask {:#010x} names lane {gone}, which exited (PTX line {})",
                wait.kind.name(),
                wait.mask,
                threads[warp * WARP + gone as usize].exit_line
            ));
        }
        let base = warp * WARP;
        let member = |l: usize| wait.mask & (1 << l) != 0;
        // lanes tend to arrive in order: look at the highest first
        for l in (0..WARP).rev().filter(|&l| member(l)) {
            match threads[base + l].state {
                State::Warp(w) if w.kind == wait.kind && w.mask == wait.mask => {}
                // each waits for the other at a different collective
                State::Warp(w) if w.mask & (1 << lane) != 0 => {
                    return bad(format!(
                        "lane {lane} waits at {} with membermask {:#010x} while lane {l} waits at {} with membermask {:#010x}",
                        wait.kind.name(),
                        wait.mask,
                        w.kind.name(),
                        w.mask
                    ));
                }
                _ => return Ok(()),
            }
        }
        let lanes: Vec<usize> = (0..WARP).filter(|&l| member(l)).collect();
        let value = |l: usize| match threads[base + l].state {
            State::Warp(w) => w.a,
            _ => 0,
        };
        let results: Vec<(usize, u64, u64)> = lanes
            .iter()
            .map(|&l| {
                let State::Warp(own) = threads[base + l].state else { unreachable!("every member waits") };
                warp_result(wait.kind, wait.mask, l, own, &lanes, &value)
            })
            .collect();
        for (l, d_value, p_value) in results {
            let t = &mut threads[base + l];
            let (d, p) = match self.func(t.func).code[t.pc as usize].op {
                Op::Shfl { d, p, .. } | Op::Match { d, p, .. } => (d, p),
                Op::Vote { d, .. } | Op::Redux { d, .. } => (d, SINK),
                _ => (SINK, SINK),
            };
            t.regs[d as usize] = d_value;
            t.regs[p as usize] = p_value;
            t.pc += 1;
            t.state = State::Ready;
        }
        Ok(())
    }

    /// Completes the `activemask`s of every warp whose live lanes are all blocked, each with the
    /// lanes waiting at one; whether there was any.
    fn answer_activemasks(&self, threads: &mut [Thread]) -> bool {
        let mut any = false;
        for warp in threads.chunks_mut(WARP) {
            if warp.iter().any(|t| t.state == State::Ready) {
                continue;
            }
            let at_activemask = |t: &Thread| matches!(t.state, State::Warp(WarpWait { kind: WarpKind::Active, .. }));
            let lanes = warp.iter().enumerate().filter(|(_, t)| at_activemask(t)).fold(0u32, |m, (l, _)| m | 1 << l);
            for t in warp.iter_mut().filter(|t| at_activemask(t)) {
                if let Op::Activemask { d } = self.func(t.func).code[t.pc as usize].op {
                    t.regs[d as usize] = u64::from(lanes);
                }
                t.pc += 1;
                t.state = State::Ready;
                any = true;
            }
        }
        any
    }

    fn stuck(&self, threads: &[Thread], barriers: &[Barrier], ctaid: [u32; 3]) -> Error {
        let exited: Vec<&Thread> = threads.iter().filter(|t| t.state == State::Exited).collect();
        let mut parts = Vec::new();
        for (id, b) in barriers.iter().enumerate().filter(|(_, b)| b.arrived > 0) {
            let mut part = format!("{} of the {} threads barrier {id} expects wait at it (PTX line {})", b.arrived, b.expected, b.line);
            if let Some(first) = exited.first() {
                part += &format!(
                    "; {} threads exited instead of reaching it (first: thread {} at PTX line {})",
                    exited.len(),
                    coords(first.tid),
                    first.exit_line
                );
            }
            parts.push(part);
        }
        for t in threads {
            if let State::Warp(w) = t.state {
                let func = self.func(t.func);
                parts.push(format!(
                    "thread {} waits at {} (PTX line {}) for lanes {:#010x}",
                    coords(t.tid),
                    w.kind.name(),
                    func.lines[t.pc as usize],
                    w.mask
                ));
                if parts.len() > 8 {
                    break;
                }
            }
        }
        Error::Stuck { entry: self.entry_name(), block: ctaid, message: format!("no thread can make progress: {}", parts.join("; ")) }
    }

    /// Runs `t` until it exits, yields or reaches a collective.
    fn run_thread(&mut self, t: &mut Thread, cta: &mut Cta, mem: &mut Memory) -> Result<Event, Error> {
        loop {
            let stop = self.budget.min(self.executed.saturating_add(SLICE));
            let result = self.execute(t, cta, mem, stop);
            match result {
                Ok(Ctl::Event(Event::Yield)) if self.executed >= self.budget => {
                    return Err(Error::Budget { entry: self.entry_name(), budget: self.budget })
                }
                Ok(Ctl::Event(event)) => return Ok(event),
                Ok(Ctl::Call(site)) => self.call(t, site).map_err(|kind| self.fault(t, cta.ctaid, kind))?,
                Ok(Ctl::Ret) if t.frames.is_empty() => return Ok(Event::Exit),
                Ok(Ctl::Ret) => self.ret(t),
                Err(kind) => return Err(self.fault(t, cta.ctaid, kind)),
            }
        }
    }

    fn call(&self, t: &mut Thread, site: u32) -> Result<(), FaultKind> {
        if t.frames.len() >= MAX_CALL_DEPTH {
            return Err(FaultKind::Other(format!("call depth exceeds {MAX_CALL_DEPTH} (unbounded recursion?)")));
        }
        let caller = self.func(t.func);
        let call = &caller.calls[site as usize];
        let callee = self.func(call.callee);
        let mut params = vec![0u8; callee.frame_param_bytes as usize];
        for &(from, to, len) in &call.args {
            let (from, to, len) = (from as usize, to as usize, len as usize);
            params[to..to + len].copy_from_slice(&t.params[from..from + len]);
        }
        let local_base = (t.regs[FRAME_LOCAL as usize] as usize + caller.local_bytes as usize).next_multiple_of(16);
        if local_base + callee.local_bytes as usize > MAX_LOCAL_BYTES {
            return Err(FaultKind::Other(format!("call frames need more than {MAX_LOCAL_BYTES} bytes of local memory (a stack overflow)")));
        }
        t.local.resize(local_base + callee.local_bytes as usize, POISON);
        let mut regs = callee.template.clone();
        regs[FIRST_SPECIAL as usize..FIRST_REGISTER as usize].copy_from_slice(&t.regs[FIRST_SPECIAL as usize..FIRST_REGISTER as usize]);
        regs[FRAME_LOCAL as usize] = local_base as u64;
        t.frames.push(Frame {
            func: t.func,
            pc: t.pc + 1,
            site,
            regs: std::mem::replace(&mut t.regs, regs),
            params: std::mem::replace(&mut t.params, params),
        });
        t.func = call.callee;
        t.pc = 0;
        Ok(())
    }

    fn ret(&self, t: &mut Thread) {
        let frame = t.frames.pop().expect("ret with a caller frame");
        let call = &self.func(frame.func).calls[frame.site as usize];
        let callee_params = std::mem::replace(&mut t.params, frame.params);
        for &(from, to, len) in &call.rets {
            let (from, to, len) = (from as usize, to as usize, len as usize);
            t.params[to..to + len].copy_from_slice(&callee_params[from..from + len]);
        }
        t.regs = frame.regs;
        t.func = frame.func;
        t.pc = frame.pc;
    }

    /// The interpreter loop over the current frame; stops at calls, returns, collectives, and
    /// after `stop` launch-wide instructions.
    fn execute(&mut self, t: &mut Thread, cta: &mut Cta, mem: &mut Memory, stop: u64) -> Result<Ctl, FaultKind> {
        let prog = self.prog;
        let func = &prog.funcs[t.func as usize];
        let code = &func.code[..];
        let Thread { regs, local, params, pc: thread_pc, .. } = t;
        let mut sp = Spaces {
            mem,
            shared: &mut cta.shared,
            local,
            params,
            kernel_params: &self.kernel_params,
            consts: &prog.const_bank,
            static_shared: prog.static_shared,
            dynamic_base: prog.dynamic_shared_base,
        };
        let mut pc = *thread_pc as usize;
        let mut count = self.executed;
        macro_rules! r {
            ($s:expr) => {
                regs[$s as usize]
            };
        }
        let outcome = loop {
            if count >= stop {
                break Ok(Ctl::Event(Event::Yield));
            }
            count += 1;
            let inst = &code[pc];
            if regs[inst.guard as usize] != u64::from(inst.want) {
                pc += 1;
                continue;
            }
            match inst.op {
                Op::Nop => {}
                Op::Mov { d, a } => r!(d) = r!(a),
                Op::Clock { d } => r!(d) = count,
                Op::Pack { d, parts, count: n, bits } => {
                    let mut v = 0u64;
                    for (i, part) in parts.iter().take(n as usize).enumerate() {
                        v |= (r!(*part) & mask(bits)) << (i as u32 * u32::from(bits));
                    }
                    r!(d) = v;
                }
                Op::Unpack { parts, count: n, bits, a } => {
                    let v = r!(a);
                    for (i, part) in parts.iter().take(n as usize).enumerate() {
                        r!(*part) = (v >> (i as u32 * u32::from(bits))) & mask(bits);
                    }
                }
                Op::Int { op, bits, signed, d, a, b } => r!(d) = int::binary(op, bits, signed, r!(a), r!(b)),
                Op::IntUnary { op, bits, signed, d, a } => r!(d) = int::unary(op, bits, signed, r!(a)),
                Op::Mad { hi, wide, bits, signed, d, a, b, c } => r!(d) = int::mad(hi, wide, bits, signed, r!(a), r!(b), r!(c)),
                Op::Carry { op, carry_in, carry_out, bits, signed, d, a, b, c } => {
                    let cin = if carry_in { r!(CARRY) } else { 0 };
                    let (v, cout) = int::carry(op, bits, signed, r!(a), r!(b), r!(c), cin);
                    r!(d) = v;
                    if carry_out {
                        r!(CARRY) = cout;
                    }
                }
                Op::Bfe { bits, signed, d, a, pos, len } => r!(d) = int::bfe(bits, signed, r!(a), r!(pos), r!(len)),
                Op::Bfi { bits, d, f, b, pos, len } => r!(d) = int::bfi(bits, r!(f), r!(b), r!(pos), r!(len)),
                Op::Prmt { mode, d, a, b, c } => r!(d) = int::prmt(mode, r!(a), r!(b), r!(c)),
                Op::Lop3 { d, a, b, c, lut } => r!(d) = int::lop3(r!(a), r!(b), r!(c), lut),
                Op::Shf { left, clamp, d, a, b, c } => r!(d) = int::shf(left, clamp, r!(a), r!(b), r!(c)),
                Op::Setp { cmp, kind, combine, d, d2, a, b, c } => {
                    let t = compare(cmp, kind, r!(a), r!(b));
                    let (p, q) = match combine {
                        None => (t, !t),
                        Some((op, negated)) => {
                            let other = (r!(c) != 0) ^ negated;
                            (bool_op(op, t, other), bool_op(op, !t, other))
                        }
                    };
                    r!(d2) = u64::from(q);
                    r!(d) = u64::from(p);
                }
                Op::Selp { d, a, b, c } => r!(d) = if r!(c) != 0 { r!(a) } else { r!(b) },
                Op::Slct { float, ftz, d, a, b, c } => {
                    let take_a = if float {
                        let v = f32::from_bits(r!(c) as u32);
                        (if ftz { float::flush(v) } else { v }) >= 0.0
                    } else {
                        r!(c) as u32 as i32 >= 0
                    };
                    r!(d) = if take_a { r!(a) } else { r!(b) };
                }
                Op::F32 { op, ftz, d, a, b, c } => r!(d) = float::f32_op(op, ftz, r!(a), r!(b), r!(c)),
                Op::Float { op, fmt, pair, rnd, ftz, sat, d, a, b, c } => {
                    let one = |x, y, z| float::float_op(op, fmt, rnd, ftz, sat, x, y, z);
                    r!(d) = if pair { float::pairwise(r!(a), r!(b), r!(c), one) } else { one(r!(a), r!(b), r!(c)) };
                }
                Op::Approx { op, f64, ftz, d, a, b } => r!(d) = float::approx(op, f64, ftz, r!(a), r!(b)),
                Op::MinMax { max, nan, fmt, pair, ftz, d, a, b } => {
                    let one = |x, y, _| float::min_max(max, nan, fmt, ftz, x, y);
                    r!(d) = if pair { float::pairwise(r!(a), r!(b), 0, one) } else { one(r!(a), r!(b), 0) };
                }
                Op::AbsNeg { neg, fmt, pair, ftz, d, a } => {
                    let one = |x, _, _| float::abs_neg(neg, fmt, ftz, x);
                    r!(d) = if pair { float::pairwise(r!(a), 0, 0, one) } else { one(r!(a), 0, 0) };
                }
                Op::Copysign { fmt, d, a, b } => {
                    let sign = float::sign_mask(fmt);
                    r!(d) = (r!(b) & !sign) | (r!(a) & sign);
                }
                Op::Testp { op, fmt, d, a } => r!(d) = u64::from(float::testp(op, fmt, r!(a))),
                Op::Cvt { dst, src, rnd, integral, sat, ftz, relu, d, a } => {
                    r!(d) = float::cvt(Convert { dst, src, rnd, integral, sat, ftz, relu }, r!(a));
                }
                Op::CvtPack { fmt, rnd, relu, d, a, b } => r!(d) = float::cvt_pack(fmt, rnd, relu, r!(a), r!(b)),
                Op::Ld { space, bits, signed, count: n, d, base, offset } => {
                    let addr = r!(base).wrapping_add(offset as i64 as u64);
                    let size = usize::from(bits / 8);
                    let total = size * n as usize;
                    let mut buf = [0u8; 32];
                    let done = check_aligned(space, addr, total, false).and_then(|()| sp.read(space, addr, &mut buf[..total]));
                    if let Err(e) = done {
                        break Err(e);
                    }
                    for (i, slot) in d.iter().take(n as usize).enumerate() {
                        let mut raw = [0u8; 8];
                        raw[..size].copy_from_slice(&buf[i * size..(i + 1) * size]);
                        let v = u64::from_le_bytes(raw);
                        r!(*slot) = if signed { float::int_value(v, bits, true) as u64 } else { v };
                    }
                }
                Op::St { space, bits, count: n, s, base, offset } => {
                    let addr = r!(base).wrapping_add(offset as i64 as u64);
                    let size = usize::from(bits / 8);
                    let total = size * n as usize;
                    let mut buf = [0u8; 32];
                    for (i, slot) in s.iter().take(n as usize).enumerate() {
                        buf[i * size..(i + 1) * size].copy_from_slice(&r!(*slot).to_le_bytes()[..size]);
                    }
                    if let Err(e) = check_aligned(space, addr, total, true).and_then(|()| sp.write(space, addr, &buf[..total])) {
                        break Err(e);
                    }
                }
                Op::Atom { space, op, ty, d, base, offset, b, c } => {
                    let addr = r!(base).wrapping_add(offset as i64 as u64);
                    let size = match ty {
                        AtomTy::Int { bits, .. } => usize::from(bits / 8),
                        AtomTy::F32 => 4,
                        AtomTy::F64 => 8,
                    };
                    let mut buf = [0u8; 8];
                    if let Err(e) = check_aligned(space, addr, size, true).and_then(|()| sp.read(space, addr, &mut buf[..size])) {
                        break Err(e);
                    }
                    let old = u64::from_le_bytes(buf);
                    let new = atomic(op, ty, old, r!(b), r!(c));
                    if let Err(e) = sp.write(space, addr, &new.to_le_bytes()[..size]) {
                        break Err(e);
                    }
                    r!(d) = old;
                }
                Op::Cvta { to, space, d, a } => {
                    r!(d) = if to { r!(a).wrapping_sub(window(space)) } else { r!(a).wrapping_add(window(space)) }
                }
                Op::Isspacep { space, d, a } => {
                    let (actual, _) = Spaces::resolve(Space::Generic, r!(a));
                    r!(d) = u64::from(actual == space);
                }
                Op::Bra { target } => {
                    pc = target as usize;
                    continue;
                }
                Op::BrxIdx { a, table } => {
                    let targets = &func.tables[table as usize];
                    match targets.get(r!(a) as u32 as usize) {
                        Some(&target) => {
                            pc = target as usize;
                            continue;
                        }
                        None => {
                            break Err(FaultKind::Other(format!("brx.idx index {} outside its {} targets", r!(a) as u32, targets.len())))
                        }
                    }
                }
                Op::Call { site } => break Ok(Ctl::Call(site)),
                Op::Ret => break Ok(Ctl::Ret),
                Op::Exit => {
                    break Ok(Ctl::Event(Event::Exit));
                }
                Op::Trap => break Err(FaultKind::Trap),
                Op::Bar { op, id, count: n, p, p_neg, .. } => {
                    break Ok(Ctl::Event(Event::Barrier {
                        op,
                        id: r!(id) as u32,
                        count: n.map(|s| r!(s) as u32),
                        pred: (r!(p) != 0) ^ p_neg,
                    }));
                }
                Op::Shfl { mode, a, b, c, mask, .. } => {
                    break Ok(Ctl::Event(Event::Warp(WarpWait {
                        kind: WarpKind::Shfl(mode),
                        mask: r!(mask) as u32,
                        a: r!(a),
                        b: r!(b),
                        c: r!(c),
                    })));
                }
                Op::Vote { mode, a, negate, mask, .. } => {
                    let a = u64::from((r!(a) != 0) ^ negate);
                    break Ok(Ctl::Event(Event::Warp(WarpWait { kind: WarpKind::Vote(mode), mask: r!(mask) as u32, a, b: 0, c: 0 })));
                }
                Op::WarpSync { mask } => {
                    break Ok(Ctl::Event(Event::Warp(WarpWait { kind: WarpKind::Sync, mask: r!(mask) as u32, a: 0, b: 0, c: 0 })));
                }
                Op::Redux { op, signed, a, mask, .. } => {
                    break Ok(Ctl::Event(Event::Warp(WarpWait {
                        kind: WarpKind::Redux(op, signed),
                        mask: r!(mask) as u32,
                        a: r!(a),
                        b: 0,
                        c: 0,
                    })));
                }
                Op::Match { all, wide, a, mask, .. } => {
                    let a = if wide { r!(a) } else { r!(a) & 0xFFFF_FFFF };
                    break Ok(Ctl::Event(Event::Warp(WarpWait {
                        kind: WarpKind::Match { all, wide },
                        mask: r!(mask) as u32,
                        a,
                        b: 0,
                        c: 0,
                    })));
                }
                Op::Activemask { .. } => {
                    break Ok(Ctl::Event(Event::Warp(WarpWait { kind: WarpKind::Active, mask: 0, a: 0, b: 0, c: 0 })));
                }
            }
            pc += 1;
        };
        *thread_pc = pc as u32;
        self.executed = count;
        outcome
    }
}

/// `(lane, d, p)` of one member of a completed warp collective. `value(l)` is lane l's `a`.
fn warp_result(kind: WarpKind, mask: u32, lane: usize, own: WarpWait, lanes: &[usize], value: &dyn Fn(usize) -> u64) -> (usize, u64, u64) {
    let member = |l: usize| l < WARP && mask & (1 << l) != 0;
    match kind {
        WarpKind::Shfl(mode) => {
            let (b, c) = (own.b as u32 & 31, own.c as u32);
            let (clamp, segment) = (c & 31, (c >> 8) & 31);
            let l = lane as u32;
            let max_lane = (l & segment) | (clamp & !segment);
            let min_lane = l & segment;
            let (j, valid) = match mode {
                ShflMode::Up => {
                    let j = l as i32 - b as i32;
                    (j, j >= max_lane as i32)
                }
                ShflMode::Down => ((l + b) as i32, l + b <= max_lane),
                ShflMode::Bfly => ((l ^ b) as i32, l ^ b <= max_lane),
                ShflMode::Idx => {
                    let j = min_lane | (b & !segment);
                    (j as i32, j <= max_lane)
                }
            };
            // a source lane outside membermask is undefined in PTX: it reads as the own value
            let source = if valid && member(j as usize) { j as usize } else { lane };
            (lane, value(source) & 0xFFFF_FFFF, u64::from(valid))
        }
        WarpKind::Vote(mode) => {
            let ballot = lanes.iter().filter(|&&l| value(l) != 0).fold(0u32, |m, &l| m | 1 << l);
            let d = match mode {
                VoteMode::All => u64::from(ballot == mask),
                VoteMode::Any => u64::from(ballot != 0),
                VoteMode::Uni => u64::from(ballot == mask || ballot == 0),
                VoteMode::Ballot => u64::from(ballot),
            };
            (lane, d, 0)
        }
        WarpKind::Sync | WarpKind::Active => (lane, 0, 0),
        WarpKind::Redux(op, signed) => {
            let values = lanes.iter().map(|&l| value(l) as u32);
            let d = match op {
                ReduxOp::Add => values.fold(0u32, u32::wrapping_add),
                ReduxOp::Min if signed => values.map(|v| v as i32).min().unwrap_or(0) as u32,
                ReduxOp::Max if signed => values.map(|v| v as i32).max().unwrap_or(0) as u32,
                ReduxOp::Min => values.min().unwrap_or(0),
                ReduxOp::Max => values.max().unwrap_or(0),
                ReduxOp::And => values.fold(u32::MAX, |x, v| x & v),
                ReduxOp::Or => values.fold(0, |x, v| x | v),
                ReduxOp::Xor => values.fold(0, |x, v| x ^ v),
            };
            (lane, u64::from(d), 0)
        }
        WarpKind::Match { all, .. } => {
            let same = lanes.iter().filter(|&&l| value(l) == own.a).fold(0u32, |m, &l| m | 1 << l);
            if all {
                let uniform = same == mask;
                (lane, if uniform { u64::from(mask) } else { 0 }, u64::from(uniform))
            } else {
                (lane, u64::from(same), 0)
            }
        }
    }
}
