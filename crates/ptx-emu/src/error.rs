//! What can go wrong: parsing, launching, host memory calls, and kernel faults (with the thread
//! that faulted and where).

use std::fmt;

/// Every error of the crate. Kernel faults say which kernel, PTX line, block and thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The PTX text could not be parsed or uses something the emulator does not implement.
    Parse { line: usize, message: String },
    /// No `.entry` of that name in the module.
    UnknownEntry { name: String, entries: Vec<String> },
    /// The argument list does not match the entry's `.param` list.
    Arguments { entry: String, message: String },
    /// The launch configuration is invalid (block size, grid, shared memory, `.reqntid`).
    Launch { entry: String, message: String },
    /// A host-side [`crate::Memory`] call was given a bad address or length.
    Memory(String),
    /// A thread did something a GPU would fault on or that the emulator reports as a bug.
    Fault(Box<Fault>),
    /// The threads of a CTA cannot all make progress (barriers, warp collectives, exits).
    Stuck { entry: String, block: [u32; 3], message: String },
    /// The launch executed more instructions than its budget (an infinite loop, most likely).
    Budget { entry: String, budget: u64 },
}

/// A fault raised by one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub entry: String,
    /// Line of the faulting instruction in the PTX text (1-based).
    pub line: usize,
    /// The instruction's opcode as written (`ld.global.f32`).
    pub opcode: String,
    pub block: [u32; 3],
    pub thread: [u32; 3],
    pub kind: FaultKind,
}

/// What a faulting thread did.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// An access outside every allocation (global) or outside the space's bytes (shared, local,
    /// param, const). `detail` names the allocation it missed.
    OutOfBounds { space: &'static str, write: bool, addr: u64, bytes: usize, detail: String },
    /// An access whose address is not a multiple of its size.
    Misaligned { space: &'static str, write: bool, addr: u64, bytes: usize },
    /// A read of global bytes nothing has written (initcheck).
    Uninitialised { addr: u64, bytes: usize, detail: String },
    /// `trap` executed.
    Trap,
    /// A collective used wrongly (a member mask without the thread, exited members, ...).
    Collective(String),
    /// Anything else (call depth, an address of an unsupported kind).
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse { line, message } => write!(f, "PTX line {line}: {message}"),
            Error::UnknownEntry { name, entries } => {
                write!(f, "no kernel `{name}` in the module (entries: {})", entries.join(", "))
            }
            Error::Arguments { entry, message } => write!(f, "kernel `{entry}`: {message}"),
            Error::Launch { entry, message } => write!(f, "launching `{entry}`: {message}"),
            Error::Memory(message) => write!(f, "memory: {message}"),
            Error::Fault(fault) => fault.fmt(f),
            Error::Stuck { entry, block, message } => write!(f, "kernel `{entry}`, block {}: {message}", coords(*block)),
            Error::Budget { entry, budget } => write!(
                f,
                "kernel `{entry}` ran past its budget of {budget} instructions (an endless loop? raise it with Module::set_instruction_budget)"
            ),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel `{}`, PTX line {} (`{}`), block {} thread {}: {}",
            self.entry,
            self.line,
            self.opcode,
            coords(self.block),
            coords(self.thread),
            self.kind
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |write: bool| if write { "write" } else { "read" };
        match self {
            FaultKind::OutOfBounds { space, write, addr, bytes, detail } => {
                write!(f, "out-of-bounds {space} {} of {bytes} bytes at {addr:#x}: {detail}", verb(*write))
            }
            FaultKind::Misaligned { space, write, addr, bytes } => {
                write!(f, "misaligned {space} {} of {bytes} bytes at {addr:#x} (must be a multiple of {bytes})", verb(*write))
            }
            FaultKind::Uninitialised { addr, bytes, detail } => {
                write!(f, "read of uninitialised global memory: {bytes} bytes at {addr:#x} ({detail})")
            }
            FaultKind::Trap => write!(f, "trap executed"),
            FaultKind::Collective(message) | FaultKind::Other(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) fn coords(c: [u32; 3]) -> String {
    format!("({},{},{})", c[0], c[1], c[2])
}

pub(crate) fn parse_err(line: usize, message: impl Into<String>) -> Error {
    Error::Parse { line, message: message.into() }
}
