//! The decoded form an instruction runs as: an [`Op`] with register slots, immediates turned into
//! constant slots, and branch targets as instruction indices. No strings at run time.

/// Index into a thread's register file (`Vec<u64>`). Registers hold their value's bits in the low
/// bits; every read truncates or extends to the width the instruction reads.
pub(crate) type Slot = u32;

/// Slots every function has, in this order; the template register file fills them.
pub(crate) const ONE: Slot = 0; // the constant 1 (the guard of an unguarded instruction)
pub(crate) const ZERO: Slot = 1;
/// Where results written to `_` (and unused second results) go.
pub(crate) const SINK: Slot = 2;
/// The carry flag of `add.cc` / `addc` chains.
pub(crate) const CARRY: Slot = 3;
/// The current frame's first byte of local memory (`mov %SPL, __local_depot0` adds to it).
pub(crate) const FRAME_LOCAL: Slot = 4;
/// Special registers filled per thread at start (see [`SPECIALS`]).
pub(crate) const FIRST_SPECIAL: Slot = 5;

/// The special registers that hold a value per thread or launch, at `FIRST_SPECIAL + index`.
pub(crate) const SPECIALS: [&str; 26] = [
    "%tid.x",
    "%tid.y",
    "%tid.z",
    "%ntid.x",
    "%ntid.y",
    "%ntid.z",
    "%ctaid.x",
    "%ctaid.y",
    "%ctaid.z",
    "%nctaid.x",
    "%nctaid.y",
    "%nctaid.z",
    "%laneid",
    "%warpid",
    "%nwarpid",
    "%lanemask_eq",
    "%lanemask_le",
    "%lanemask_lt",
    "%lanemask_ge",
    "%lanemask_gt",
    "%smid",
    "%nsmid",
    "%gridid",
    "%dynamic_smem_size",
    "%total_smem_size",
    "%warpsize",
];
pub(crate) const FIRST_REGISTER: Slot = FIRST_SPECIAL + SPECIALS.len() as Slot;

pub(crate) fn special(name: &str) -> Option<Slot> {
    SPECIALS.iter().position(|s| *s == name).map(|i| FIRST_SPECIAL + i as Slot)
}

/// A decoded instruction: the operation and its guard (`regs[guard] == want` runs it).
#[derive(Debug, Clone)]
pub(crate) struct Inst {
    pub op: Op,
    pub guard: Slot,
    pub want: bool,
}

/// State spaces of memory instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
    Local,
    Const,
    /// The kernel's parameters (read-only, shared by all threads).
    KernelParam,
    /// The current function's `.param` space: a `.func`'s parameters and return values, and the
    /// argument buffers a function declares for its own calls.
    FrameParam,
    Generic,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Const => "const",
            Space::KernelParam | Space::FrameParam => "param",
            Space::Generic => "generic",
        }
    }
}

/// Formats of floating-point values (the x2 forms are two halves of a 32-bit register).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fmt {
    F16,
    BF16,
    F32,
    F64,
}

/// IEEE rounding directions (`.rn .rz .rm .rp`; the integer forms `.rni ...` set `integral`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rnd {
    Nearest,
    Zero,
    Down,
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    Sub,
    AddSat,
    SubSat,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntUnOp {
    Not,
    Cnot,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
    Bfind,
    BfindShiftAmount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarryOp {
    Add,
    Sub,
    MadLo,
    MadHi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrmtMode {
    Default,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

/// Comparisons of `setp`: integer ones use `signed`; float ones include the unordered forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

/// What `setp` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpKind {
    Int { bits: u8, signed: bool },
    Float { fmt: Fmt, ftz: bool },
}

/// Round-to-nearest f32 operations with native (bit-exact IEEE) fast paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatOp {
    Add,
    Sub,
    Mul,
    Fma,
    Div,
    Sqrt,
    Rcp,
}

/// The `.approx` / `.full` family, computed accurately (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApproxOp {
    Ex2,
    Lg2,
    Rcp,
    Rsqrt,
    Sqrt,
    Sin,
    Cos,
    Tanh,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestpOp {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

/// Value types of `cvt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CvtTy {
    Int { bits: u8, signed: bool },
    Float(Fmt),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
    Inc,
    Dec,
}

/// Element types of atomics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomTy {
    Int { bits: u8, signed: bool },
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarOp {
    Sync,
    Arrive,
    RedPopc,
    RedAnd,
    RedOr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Nop,
    Mov {
        d: Slot,
        a: Slot,
    },
    /// `%clock`, `%clock64`, `%globaltimer`: the launch's instruction counter (monotone).
    Clock {
        d: Slot,
    },
    /// `mov.b64 d, {a, b}`: `count` parts of `bits` each, first part in the low bits.
    Pack {
        d: Slot,
        parts: [Slot; 4],
        count: u8,
        bits: u8,
    },
    Unpack {
        parts: [Slot; 4],
        count: u8,
        bits: u8,
        a: Slot,
    },
    Int {
        op: IntOp,
        bits: u8,
        signed: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    IntUnary {
        op: IntUnOp,
        bits: u8,
        signed: bool,
        d: Slot,
        a: Slot,
    },
    /// `mad.lo/.hi/.wide`: `d = a*b (lo/hi/wide) + c`.
    Mad {
        hi: bool,
        wide: bool,
        bits: u8,
        signed: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Carry {
        op: CarryOp,
        carry_in: bool,
        carry_out: bool,
        bits: u8,
        signed: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Bfe {
        bits: u8,
        signed: bool,
        d: Slot,
        a: Slot,
        pos: Slot,
        len: Slot,
    },
    Bfi {
        bits: u8,
        d: Slot,
        f: Slot,
        b: Slot,
        pos: Slot,
        len: Slot,
    },
    Prmt {
        mode: PrmtMode,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Lop3 {
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
        lut: u8,
    },
    Shf {
        left: bool,
        clamp: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// `d = (a cmp b) bool c`, `d2 = !(a cmp b) bool c`.
    Setp {
        cmp: Cmp,
        kind: CmpKind,
        combine: Option<(BoolOp, bool)>,
        d: Slot,
        d2: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Selp {
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// `d = c >= 0 ? a : b`, c an s32 or (with `float`) an f32.
    Slct {
        float: bool,
        ftz: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// Round-to-nearest f32 arithmetic (the hot path).
    F32 {
        op: FloatOp,
        ftz: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// Any format, rounding, `.ftz`, `.sat`; `pair` works on both halves of f16x2 / bf16x2.
    Float {
        op: FloatOp,
        fmt: Fmt,
        pair: bool,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Approx {
        op: ApproxOp,
        f64: bool,
        ftz: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    MinMax {
        max: bool,
        nan: bool,
        fmt: Fmt,
        pair: bool,
        ftz: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    /// `abs` (`neg: false`) or `neg` of a float.
    AbsNeg {
        neg: bool,
        fmt: Fmt,
        pair: bool,
        ftz: bool,
        d: Slot,
        a: Slot,
    },
    /// `d = b with the sign of a`.
    Copysign {
        fmt: Fmt,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    Testp {
        op: TestpOp,
        fmt: Fmt,
        d: Slot,
        a: Slot,
    },
    Cvt {
        dst: CvtTy,
        src: CvtTy,
        rnd: Rnd,
        integral: bool,
        sat: bool,
        ftz: bool,
        relu: bool,
        d: Slot,
        a: Slot,
    },
    /// `cvt.rn.bf16x2.f32 d, a, b`: a to the upper half, b to the lower.
    CvtPack {
        fmt: Fmt,
        rnd: Rnd,
        relu: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    Ld {
        space: Space,
        bits: u8,
        signed: bool,
        count: u8,
        d: [Slot; 4],
        base: Slot,
        offset: i32,
    },
    St {
        space: Space,
        bits: u8,
        count: u8,
        s: [Slot; 4],
        base: Slot,
        offset: i32,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: AtomTy,
        d: Slot,
        base: Slot,
        offset: i32,
        b: Slot,
        c: Slot,
    },
    /// `cvta.space` (to generic) or `cvta.to.space`.
    Cvta {
        to: bool,
        space: Space,
        d: Slot,
        a: Slot,
    },
    Isspacep {
        space: Space,
        d: Slot,
        a: Slot,
    },
    Bra {
        target: u32,
    },
    BrxIdx {
        a: Slot,
        table: u32,
    },
    Call {
        site: u32,
    },
    Ret,
    Exit,
    Trap,
    Bar {
        op: BarOp,
        id: Slot,
        /// `None`: every thread of the CTA.
        count: Option<Slot>,
        d: Slot,
        p: Slot,
        p_neg: bool,
    },
    Shfl {
        mode: ShflMode,
        d: Slot,
        p: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
        mask: Slot,
    },
    Vote {
        mode: VoteMode,
        d: Slot,
        a: Slot,
        negate: bool,
        mask: Slot,
    },
    WarpSync {
        mask: Slot,
    },
    Redux {
        op: ReduxOp,
        signed: bool,
        d: Slot,
        a: Slot,
        mask: Slot,
    },
    Match {
        all: bool,
        wide: bool,
        d: Slot,
        p: Slot,
        a: Slot,
        mask: Slot,
    },
    Activemask {
        d: Slot,
    },
}

#[cfg(test)]
mod tests {
    /// The interpreter loop streams through these: keep them small.
    #[test]
    fn instructions_stay_compact() {
        assert!(std::mem::size_of::<super::Inst>() <= 40, "{} bytes", std::mem::size_of::<super::Inst>());
    }
}
