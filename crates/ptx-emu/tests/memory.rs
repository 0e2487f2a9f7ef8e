//! Memory spaces and calls: the host-side Memory API, shared (static and dynamic), local frames,
//! generic addressing, const and global variables with initialisers, by-value parameters,
//! vector accesses, and `.func` calls with parameters, return values and recursion.

mod common;

use common::{bytes_of_f32, cfg, f32s, launch_with_output, module, u32s};
use ptx_emu::{Arg, LaunchConfig, Memory};

#[test]
fn host_memory_api() {
    let mut mem = Memory::new();
    let a = mem.alloc(100).unwrap();
    let b = mem.alloc(0).unwrap();
    let c = mem.alloc(64).unwrap();
    assert!(a != 0 && [a, b, c].iter().all(|p| p.is_multiple_of(256)) && b > a && c > b);
    mem.write(a + 10, &[1, 2, 3]).unwrap();
    assert_eq!(mem.read(a + 10, 3).unwrap(), [1, 2, 3]);
    mem.fill(c, 7, 64).unwrap();
    mem.copy(a + 50, c + 8, 16).unwrap();
    let mut buf = [0u8; 16];
    mem.read_into(a + 50, &mut buf).unwrap();
    assert_eq!(buf, [7; 16]);
    mem.copy(a + 11, a + 10, 3).unwrap(); // overlapping
    assert_eq!(mem.read(a + 11, 3).unwrap(), [1, 2, 3]);
    let err = mem.write(a + 98, &[0; 4]).unwrap_err().to_string();
    assert!(err.contains("runs 2 bytes past the end of allocation"), "{err}");
    assert!(mem.read(c + 64, 1).unwrap_err().to_string().contains("0 bytes past the end"));
    mem.free(c).unwrap();
    let err = mem.read(c, 4).unwrap_err().to_string();
    assert!(err.contains("freed"), "{err}");
    assert!(mem.free(c).is_err() && mem.free(a + 4).is_err());
    assert_eq!(mem.read(a, 2).unwrap(), [0xFF, 0xFF], "fresh memory holds 0xFF");
}

#[test]
fn shared_memory_static_and_dynamic_with_generic_pointers() {
    let m = module(
        ".shared .align 8 .b8 fixed[24];
        .extern .shared .align 16 .b8 dynamic[];
        .visible .entry rotate(.param .u64 out) {
            .reg .b32 %t, %n, %v, %next;
            .reg .b64 %a, %g, %s, %off;
            mov.u32 %t, %tid.x;
            mov.u32 %n, %ntid.x;
            cvt.u64.u32 %off, %t;
            shl.b64 %off, %off, 2;
            mov.u64 %s, dynamic;
            cvta.shared.u64 %g, %s;
            add.u64 %g, %g, %off;
            mul.lo.u32 %v, %t, 10;
            st.u32 [%g], %v;
            st.shared.u32 [fixed+20], 99;
            bar.sync 0;
            add.u32 %next, %t, 1;
            rem.u32 %next, %next, %n;
            shl.b32 %next, %next, 2;
            cvt.u64.u32 %off, %next;
            add.u64 %s, %s, %off;
            ld.shared.u32 %v, [%s];
            ld.shared.u32 %next, [fixed+20];
            add.u32 %v, %v, %next;
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 4, %a;
            st.global.u32 [%a], %v;
        }",
    );
    let launch = LaunchConfig { grid: [1, 1, 1], block: [64, 1, 1], dynamic_shared_bytes: 256 };
    let (bytes, _) = launch_with_output(&m, "rotate", launch, 256, &[]).unwrap();
    assert_eq!(u32s(&bytes), (0..64).map(|t| (t + 1) % 64 * 10 + 99).collect::<Vec<u32>>());
    let err = launch_with_output(&m, "rotate", LaunchConfig { dynamic_shared_bytes: 128, ..launch }, 256, &[]).unwrap_err().to_string();
    assert!(err.contains("out-of-bounds shared write") && err.contains("24 static, 128 dynamic at offset 32"), "{err}");
}

#[test]
fn local_frames_calls_and_recursion() {
    let m = module(
        ".func (.param .b32 ret) factorial(.param .b32 n) {
            .local .align 4 .b8 depot[8];
            .reg .b32 %n, %r, %m;
            .reg .b64 %spl;
            .reg .pred %base;
            ld.param.u32 %n, [n];
            mov.u64 %spl, depot;
            st.local.u32 [%spl+4], %n;
            setp.le.u32 %base, %n, 1;
            @%base bra DONE;
            sub.u32 %m, %n, 1;
            {
                .param .b32 arg;
                .param .b32 result;
                st.param.b32 [arg], %m;
                call.uni (result), factorial, (arg);
                ld.param.b32 %r, [result];
            }
            ld.local.u32 %n, [%spl+4];
            mul.lo.u32 %r, %r, %n;
            st.param.b32 [ret], %r;
            ret;
        DONE:
            st.param.b32 [ret], 1;
            ret;
        }
        .func (.param .align 8 .b8 pair[8]) swap(.param .align 8 .b8 in[8]) {
            .reg .b32 %x, %y;
            ld.param.v2.u32 {%x, %y}, [in];
            st.param.v2.u32 [pair], {%y, %x};
        }
        .visible .entry run(.param .u64 out) {
            .local .align 16 .b8 scratch[16];
            .reg .b32 %t, %f, %x, %y, %i;
            .reg .b64 %a, %l, %g;
            mov.u32 %t, %tid.x;
            mov.u64 %l, scratch;
            st.local.v4.u32 [%l], {%t, 1, 2, 3};
            cvta.local.u64 %g, %l;
            ld.u32 %i, [%g+8];
            {
                .param .b32 arg;
                .param .b32 result;
                add.u32 %x, %t, %i;
                st.param.b32 [arg], %x;
                call (result), factorial, (arg);
                ld.param.b32 %f, [result];
            }
            {
                .param .align 8 .b8 arg[8];
                .param .align 8 .b8 result[8];
                st.param.v2.u32 [arg], {%f, %t};
                call.uni (result), swap, (arg);
                ld.param.v2.u32 {%x, %y}, [result];
            }
            ld.local.u32 %i, [%l];
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 12, %a;
            st.global.u32 [%a], %x;
            st.global.u32 [%a+4], %y;
            st.global.u32 [%a+8], %i;
        }",
    );
    let (bytes, _) = launch_with_output(&m, "run", cfg(1, 8), 8 * 12, &[]).unwrap();
    let out = u32s(&bytes);
    for t in 0..8u32 {
        let factorial: u32 = (1..=t + 2).product();
        assert_eq!(out[3 * t as usize..3 * t as usize + 3], [t, factorial, t], "thread {t}");
    }
}

#[test]
fn const_and_global_variables_params_and_vectors() {
    let m = module(
        ".const .align 4 .f32 weights[4] = {0f3F800000, 0f40000000, 0.5, -1.0};
        .global .align 4 .u32 counter = 40;
        .global .align 8 .b8 table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        .visible .entry apply(.param .u64 out, .param .align 8 .b8 options[16], .param .u64 input) {
            .reg .b32 %t, %k, %c;
            .reg .f32 %x<4>, %w<4>, %scale;
            .reg .b64 %a, %in, %p, %tab;
            .reg .pred %first, %g;
            mov.u32 %t, %tid.x;
            ld.param.u64 %in, [input];
            mad.wide.u32 %in, %t, 16, %in;
            ld.global.nc.v4.f32 {%x0, %x1, %x2, %x3}, [%in];
            ld.const.v4.f32 {%w0, %w1, %w2, %w3}, [weights];
            mov.u64 %p, options;
            ld.param.f32 %scale, [%p+8];
            ld.param.u32 %k, [options];
            mul.rn.f32 %x0, %x0, %w0;
            mul.rn.f32 %x1, %x1, %w1;
            mul.rn.f32 %x2, %x2, %w2;
            mul.rn.f32 %x3, %x3, %w3;
            add.rn.f32 %x0, %x0, %x1;
            add.rn.f32 %x2, %x2, %x3;
            add.rn.f32 %x0, %x0, %x2;
            mul.rn.f32 %x0, %x0, %scale;
            mov.u64 %tab, table;
            ld.global.u8 %c, [%tab+3];
            add.u32 %k, %k, %c;
            cvt.rn.f32.u32 %x1, %k;
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 8, %a;
            st.global.v2.f32 [%a], {%x0, %x1};
            prefetch.global.L2 [%a];
            membar.gl;
            fence.acq_rel.gpu;
            isspacep.global %g, %a;
            @!%g trap;
            setp.eq.u32 %first, %t, 0;
            @%first atom.global.add.u32 %c, [counter], 2;
        }
        .visible .entry read_counter(.param .u64 out) {
            .reg .b32 %c;
            .reg .b64 %a;
            ld.global.u32 %c, [counter];
            ld.param.u64 %a, [out];
            st.global.u32 [%a], %c;
        }",
    );
    let mut mem = Memory::new();
    let input: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let inp = mem.alloc(128).unwrap();
    mem.write(inp, &bytes_of_f32(&input)).unwrap();
    let out = mem.alloc(64).unwrap();
    let mut options = vec![0u8; 16];
    options[..4].copy_from_slice(&5u32.to_le_bytes());
    options[8..12].copy_from_slice(&3.0f32.to_le_bytes());
    for _ in 0..2 {
        let stats = m.launch(&mut mem, "apply", cfg(1, 8), &[Arg::U64(out), Arg::Bytes(options.clone()), Arg::U64(inp)]).unwrap();
        // 30 instructions and the implicit ret per thread (the predicated-off ones count)
        assert_eq!((stats.threads, stats.blocks, stats.instructions), (8, 1, 8 * 31));
    }
    let got = f32s(&mem.read(out, 64).unwrap());
    for t in 0..8 {
        let x = &input[4 * t..4 * t + 4];
        assert_eq!(got[2 * t], (x[0] + 2.0 * x[1] + (0.5 * x[2] - x[3])) * 3.0, "thread {t}");
        assert_eq!(got[2 * t + 1], 9.0);
    }
    let params = m.params("apply").unwrap();
    assert_eq!((params[1].name.as_str(), params[1].bytes, params[1].align), ("options", 16, 8));
    // .global variables persist across launches on one Memory, as on a GPU
    let counter = mem.alloc(4).unwrap();
    m.launch(&mut mem, "read_counter", cfg(1, 1), &[Arg::U64(counter)]).unwrap();
    assert_eq!(u32s(&mem.read(counter, 4).unwrap()), [44]);
    assert_eq!(m.entries(), ["apply", "read_counter"]);
}

#[test]
fn initcheck_can_be_turned_off() {
    let m = module(
        ".visible .entry copy(.param .u64 out, .param .u64 src) {
            .reg .b32 %v;
            .reg .b64 %a, %s;
            ld.param.u64 %a, [out];
            ld.param.u64 %s, [src];
            ld.global.u32 %v, [%s];
            st.global.u32 [%a], %v;
        }",
    );
    let mut mem = Memory::new();
    let (out, src) = (mem.alloc(4).unwrap(), mem.alloc(4).unwrap());
    let err = m.launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(out), Arg::U64(src)]).unwrap_err().to_string();
    assert!(err.contains("uninitialised") && err.contains("byte 0 of allocation"), "{err}");
    mem.set_initcheck(false);
    m.launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(out), Arg::U64(src)]).unwrap();
    assert_eq!(mem.read(out, 4).unwrap(), [0xFF; 4]);
    // a device-to-device copy carries the source's written bytes, not more
    mem.set_initcheck(true);
    mem.fill(src, 1, 2).unwrap();
    mem.copy(out, src, 4).unwrap();
    assert!(m
        .launch(&mut mem, "copy", cfg(1, 1), &[Arg::U64(src), Arg::U64(out)])
        .unwrap_err()
        .to_string()
        .contains("byte 2 of allocation"));
}
