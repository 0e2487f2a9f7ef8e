//! Kernel bugs and misuse are errors that say where and why: faults name kernel, PTX line,
//! block, thread and address; launches check arguments and limits; parsing names the line and
//! the unsupported instruction.

mod common;

use common::{cfg, module, HEADER};
use ptx_emu::{Arg, Error, FaultKind, LaunchConfig, Memory, Module};

/// A kernel that reads `src[i]` and writes `dst[i]` for `i = tid + shift` (PTX line 10: the load,
/// line 11: the store, after the three-line header).
const COPY: &str = ".visible .entry copy(.param .u64 dst, .param .u64 src, .param .u32 shift) {
.reg .b32 %i, %s;
.reg .b64 %d, %a;
mov.u32 %i, %tid.x; ld.param.u32 %s, [shift]; add.u32 %i, %i, %s;
ld.param.u64 %a, [src]; mad.wide.u32 %a, %i, 4, %a; ld.param.u64 %d, [dst]; mad.wide.u32 %d, %i, 4, %d;
.reg .f32 %v;
ld.global.f32 %v, [%a];
st.global.f32 [%d], %v;
}";

fn fault(err: Error) -> ptx_emu::Fault {
    match err {
        Error::Fault(fault) => *fault,
        other => panic!("expected a fault, got {other}"),
    }
}

fn copy_setup(src_bytes: usize, dst_bytes: usize) -> (Module, Memory, u64, u64) {
    let m = module(COPY);
    let mut mem = Memory::new();
    let (dst, src) = (mem.alloc(dst_bytes).unwrap(), mem.alloc(src_bytes).unwrap());
    mem.fill(src, 0, src_bytes).unwrap();
    (m, mem, dst, src)
}

#[test]
fn out_of_bounds_reads_and_writes_name_the_thread_line_and_allocation() {
    let (m, mut mem, dst, src) = copy_setup(64, 256);
    let err = m
        .launch(
            &mut mem,
            "copy",
            LaunchConfig { grid: [3, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 },
            &[Arg::U64(dst), Arg::U64(src), Arg::U32(0)],
        )
        .unwrap_err();
    let message = err.to_string();
    let f = fault(err);
    assert_eq!((f.entry.as_str(), f.line, f.opcode.as_str(), f.block, f.thread), ("copy", 10, "ld.global.f32", [0, 0, 0], [16, 0, 0]));
    assert!(matches!(f.kind, FaultKind::OutOfBounds { space: "global", write: false, addr, bytes: 4, .. } if addr == src + 64));
    assert!(message.contains(&format!("0 bytes past the end of allocation {src:#x} (64 bytes)")), "{message}");
    assert!(message.contains("kernel `copy`, PTX line 10") && message.contains("thread (16,0,0)"), "{message}");

    let (m, mut mem, dst, src) = copy_setup(256, 64);
    let f = fault(m.launch(&mut mem, "copy", cfg(1, 32), &[Arg::U64(dst + 4), Arg::U64(src), Arg::U32(0)]).unwrap_err());
    assert_eq!((f.line, f.thread), (11, [15, 0, 0]));
    assert!(matches!(f.kind, FaultKind::OutOfBounds { write: true, .. }));
    // far from anything: no allocation holds it
    let f = fault(m.launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(dst), Arg::U64(src), Arg::U32(1 << 30)]).unwrap_err());
    assert!(matches!(f.kind, FaultKind::OutOfBounds { ref detail, .. } if detail == "no allocation holds it"), "{:?}", f.kind);
}

#[test]
fn misaligned_and_uninitialised_accesses() {
    let (m, mut mem, dst, src) = copy_setup(64, 64);
    let f = fault(m.launch(&mut mem, "copy", cfg(1, 4), &[Arg::U64(dst), Arg::U64(src + 2), Arg::U32(0)]).unwrap_err());
    assert!(matches!(f.kind, FaultKind::Misaligned { space: "global", write: false, bytes: 4, addr } if addr == src + 2));
    let mut mem = Memory::new();
    let (dst, src) = (mem.alloc(64).unwrap(), mem.alloc(64).unwrap());
    mem.fill(src, 0, 40).unwrap();
    let err = m.launch(&mut mem, "copy", cfg(1, 16), &[Arg::U64(dst), Arg::U64(src), Arg::U32(0)]).unwrap_err();
    let message = err.to_string();
    let f = fault(err);
    assert_eq!(f.thread, [10, 0, 0]);
    assert!(matches!(f.kind, FaultKind::Uninitialised { bytes: 4, addr, .. } if addr == src + 40));
    assert!(message.contains("byte 40 of allocation"), "{message}");
}

#[test]
fn barriers_left_by_exited_threads_and_deadlocks_are_reported() {
    let m = module(
        ".visible .entry early_exit() {
            .reg .b32 %t;
            .reg .pred %p;
            mov.u32 %t, %tid.x;
            setp.ge.u32 %p, %t, 40;
            @%p exit;
            bar.sync 0;
        }
        .visible .entry split() {
            .reg .b32 %t;
            .reg .pred %p;
            mov.u32 %t, %tid.x;
            setp.ge.u32 %p, %t, 32;
            @%p bra SECOND;
            bar.sync 0;
            exit;
        SECOND:
            bar.sync 1;
        }",
    );
    let mut mem = Memory::new();
    let err = m.launch(&mut mem, "early_exit", cfg(2, 64), &[]).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Stuck { ref entry, block: [0, 0, 0], .. } if entry == "early_exit"));
    assert!(message.contains("40 of the 64 threads barrier 0 expects wait") && message.contains("24 threads exited"), "{message}");
    assert!(message.contains("first: thread (40,0,0) at PTX line 9"), "{message}");
    let message = m.launch(&mut mem, "split", cfg(1, 64), &[]).unwrap_err().to_string();
    assert!(message.contains("no thread can make progress") && message.contains("barrier 0") && message.contains("barrier 1"), "{message}");
}

#[test]
fn shuffles_with_bad_member_masks_are_faults() {
    let m = module(
        ".visible .entry shfl(.param .u32 mask) {
            .reg .b32 %t, %v, %m;
            .reg .pred %p;
            mov.u32 %t, %tid.x;
            ld.param.u32 %m, [mask];
            setp.eq.u32 %p, %t, 3;
            @%p exit;
            shfl.sync.bfly.b32 %v, %t, 1, 0x1f, %m;
        }",
    );
    let mut mem = Memory::new();
    let f = fault(m.launch(&mut mem, "shfl", cfg(1, 32), &[Arg::U32(0xFFFF_FFFF)]).unwrap_err());
    assert!(matches!(f.kind, FaultKind::Collective(ref s) if s.contains("lane 3, which exited")), "{:?}", f.kind);
    let f = fault(m.launch(&mut mem, "shfl", cfg(1, 32), &[Arg::U32(0x0000_00F0)]).unwrap_err());
    assert!(matches!(f.kind, FaultKind::Collective(ref s) if s.contains("does not include the executing lane 0")), "{:?}", f.kind);
    let f = fault(m.launch(&mut mem, "shfl", cfg(1, 48), &[Arg::U32(0xFFFF_FFF7)]).unwrap_err());
    assert!(matches!(f.kind, FaultKind::Collective(ref s) if s.contains("lanes this warp does not have")), "{:?}", f.kind);
}

#[test]
fn launches_check_arguments_and_limits() {
    let m = module(COPY);
    let mut mem = Memory::new();
    let err = m.launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(0), Arg::U64(0)]).unwrap_err();
    assert_eq!(err, Error::Arguments { entry: "copy".into(), message: "takes 3 arguments, 2 given".into() });
    let err = m.launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(0), Arg::U32(0), Arg::U32(0)]).unwrap_err().to_string();
    assert!(err.contains("argument 1 (`src`, 8 bytes) was given 4 bytes"), "{err}");
    let err = m.launch(&mut mem, "copy", cfg(1, 1025), &[Arg::U64(0), Arg::U64(0), Arg::U32(0)]).unwrap_err();
    assert!(matches!(err, Error::Launch { ref message, .. } if message.contains("1025 threads")));
    let err = m
        .launch(
            &mut mem,
            "copy",
            LaunchConfig { grid: [1, 1, 1], block: [1, 1, 1], dynamic_shared_bytes: 49153 },
            &[Arg::U64(0), Arg::U64(0), Arg::U32(0)],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Launch { ref message, .. } if message.contains("exceed the limit of 49152")), "{err}");
    let err = m.launch(&mut mem, "missing", cfg(1, 1), &[]).unwrap_err().to_string();
    assert_eq!(err, "no kernel `missing` in the module (entries: copy)");
    let strict = module(".visible .entry k() .reqntid 64 { ret; }");
    assert!(strict.launch(&mut mem, "k", cfg(1, 32), &[]).unwrap_err().to_string().contains(".reqntid"));
    strict.launch(&mut mem, "k", cfg(1, 64), &[]).unwrap();
}

#[test]
fn traps_budgets_and_spin_waits() {
    let mut m = module(
        ".visible .entry spin() {
            .reg .b32 %i;
            mov.u32 %i, 0;
        LOOP:
            add.u32 %i, %i, 1;
            bra.uni LOOP;
        }
        .visible .entry trapping() { trap; }
        .visible .entry flag(.param .u64 out) {
            .shared .align 4 .b32 ready;
            .reg .b32 %t, %v;
            .reg .pred %waiter;
            .reg .b64 %a;
            mov.u32 %t, %tid.x;
            setp.eq.u32 %waiter, %t, 0;
            @!%waiter bra SET;
        WAIT:
            ld.volatile.shared.u32 %v, [ready];
            setp.ne.u32 %waiter, %v, 7;
            @%waiter bra WAIT;
            ld.param.u64 %a, [out];
            st.global.u32 [%a], %v;
            exit;
        SET:
            st.volatile.shared.u32 [ready], 7;
        }",
    );
    m.set_instruction_budget(100_000);
    let mut mem = Memory::new();
    assert_eq!(m.launch(&mut mem, "spin", cfg(1, 1), &[]).unwrap_err(), Error::Budget { entry: "spin".into(), budget: 100_000 });
    let f = fault(m.launch(&mut mem, "trapping", cfg(1, 1), &[]).unwrap_err());
    assert_eq!((f.kind, f.line), (FaultKind::Trap, 11));
    // thread 0 spins on a flag thread 1 sets: it yields after its time slice and then sees it
    m.set_instruction_budget(10_000_000);
    let out = mem.alloc(4).unwrap();
    let stats = m.launch(&mut mem, "flag", cfg(1, 2), &[Arg::U64(out)]).unwrap();
    assert_eq!(mem.read(out, 4).unwrap(), 7u32.to_le_bytes());
    assert!(stats.instructions > 1 << 20);
}

#[test]
fn parse_errors_name_the_line_and_the_unsupported_instruction() {
    let parse = |body: &str| Module::parse(&format!("{HEADER}{body}")).unwrap_err();
    let err = parse(".visible .entry k() {\n.reg .b32 %r;\nsad.u32 %r, %r, %r, %r;\n}");
    assert_eq!(err, Error::Parse { line: 6, message: "unsupported instruction `sad` (in `sad.u32`)".into() });
    let err = parse(".visible .entry k() {\n.reg .f32 %f;\nadd.rnx.f32 %f, %f, %f;\n}").to_string();
    assert_eq!(err, "PTX line 6: unsupported modifier `.rnx` in `add.rnx.f32`");
    let err = parse(".visible .entry k() {\nmov.u32 %nope, 1;\n}").to_string();
    assert!(err.contains("line 5") && err.contains("unknown or unsupported register `%nope`"), "{err}");
    let err = parse(".visible .entry k() {\nbra MISSING;\n}").to_string();
    assert!(err.contains("unknown label `MISSING`"), "{err}");
    let err = parse(".texref tex;").to_string();
    assert!(err.contains("unsupported module-level directive `.texref`"), "{err}");
    let err = parse(".extern .func (.param .b32 r) vprintf(.param .b64 f, .param .b64 a);\n.visible .entry k() {\n.param .b64 f;\n.param .b64 a;\n.param .b32 r;\ncall.uni (r), vprintf, (f, a);\n}").to_string();
    assert!(err.contains("line 9") && err.contains("vprintf"), "{err}");
}
