//! Warp collectives (shfl in every mode with clamps and segments, vote, redux, match,
//! activemask), CTA barriers (counts, arrive, reductions) and atomics from many threads and CTAs.

mod common;

use common::{cfg, launch_with_output, module, u32s};
use ptx_emu::{Arg, LaunchConfig};

/// `shfl.sync` as the PTX ISA's pseudocode defines it, for a full warp.
fn shfl_model(mode: &str, lane: u32, b: u32, c: u32, value: impl Fn(u32) -> u32) -> (u32, bool) {
    let (b, clamp, segment) = (b & 31, c & 31, (c >> 8) & 31);
    let max_lane = (lane & segment) | (clamp & !segment);
    let min_lane = lane & segment;
    let (j, valid) = match mode {
        "up" => (lane as i32 - b as i32, lane as i32 - b as i32 >= max_lane as i32),
        "down" => ((lane + b) as i32, lane + b <= max_lane),
        "bfly" => ((lane ^ b) as i32, lane ^ b <= max_lane),
        _ => {
            let j = min_lane | (b & !segment);
            (j as i32, j <= max_lane)
        }
    };
    (value(if valid { j as u32 } else { lane }), valid)
}

#[test]
fn shuffles_in_every_mode_with_clamps_and_segments() {
    let m = module(
        ".visible .entry shfl(.param .u64 out, .param .u32 b, .param .u32 c, .param .u32 mode) {
            .reg .b32 %t, %lane, %v, %b, %c, %d, %pv, %mode;
            .reg .pred %p, %is;
            .reg .b64 %a;
            mov.u32 %t, %tid.x;
            mov.u32 %lane, %laneid;
            mad.lo.u32 %v, %t, 7, 3;
            ld.param.u32 %b, [b];
            mad.lo.u32 %b, %lane, 5, %b;
            and.b32 %b, %b, 31;
            ld.param.u32 %c, [c];
            ld.param.u32 %mode, [mode];
            setp.eq.u32 %is, %mode, 0;
            @%is shfl.sync.up.b32 %d|%p, %v, %b, %c, 0xffffffff;
            setp.eq.u32 %is, %mode, 1;
            @%is shfl.sync.down.b32 %d|%p, %v, %b, %c, 0xffffffff;
            setp.eq.u32 %is, %mode, 2;
            @%is shfl.sync.bfly.b32 %d|%p, %v, %b, %c, 0xffffffff;
            setp.eq.u32 %is, %mode, 3;
            @%is shfl.sync.idx.b32 %d|%p, %v, %b, %c, 0xffffffff;
            selp.u32 %pv, 1, 0, %p;
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 8, %a;
            st.global.v2.u32 [%a], {%d, %pv};
        }",
    );
    for (index, mode) in ["up", "down", "bfly", "idx"].iter().enumerate() {
        for c in [0x1F, 0x0, 0x181F, 0x1C03, 0x1800, 0x1F00] {
            for b in [0, 1, 3, 16] {
                let (bytes, _) =
                    launch_with_output(&m, "shfl", cfg(1, 64), 64 * 8, &[Arg::U32(b), Arg::U32(c), Arg::U32(index as u32)]).unwrap();
                let out = u32s(&bytes);
                for t in 0..64u32 {
                    let (warp, lane) = (t / 32, t % 32);
                    let lane_b = (lane * 5 + b) & 31;
                    let (want, valid) = shfl_model(mode, lane, lane_b, c, |j| (warp * 32 + j) * 7 + 3);
                    assert_eq!(
                        (out[2 * t as usize], out[2 * t as usize + 1]),
                        (want, u32::from(valid)),
                        "shfl.{mode} b={lane_b} c={c:#x} thread {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn votes_redux_match_and_activemask_over_member_masks() {
    // Odd lanes of the second warp leave before the collectives; even lanes use mask 0x55555555.
    let m = module(
        ".visible .entry vote(.param .u64 out) {
            .reg .b32 %t, %lane, %mask, %w, %all, %any, %uni, %ballot, %sum, %min, %xor, %match, %active, %v;
            .reg .pred %p, %q, %odd, %late;
            .reg .b64 %a;
            mov.u32 %t, %tid.x;
            mov.u32 %lane, %laneid;
            mov.u32 %mask, 0xffffffff;
            and.b32 %w, %lane, 1;
            setp.ne.u32 %odd, %w, 0;
            setp.ge.u32 %late, %t, 32;
            and.pred %q, %odd, %late;
            @%q exit;
            @%late mov.u32 %mask, 0x55555555;
            rem.u32 %v, %t, 3;
            setp.eq.u32 %p, %v, 0;
            vote.sync.all.pred %q, %p, %mask;
            selp.u32 %all, 1, 0, %q;
            vote.sync.any.pred %q, %p, %mask;
            selp.u32 %any, 1, 0, %q;
            vote.sync.uni.pred %q, !%late, %mask;
            selp.u32 %uni, 1, 0, %q;
            vote.sync.ballot.b32 %ballot, %p, %mask;
            redux.sync.add.u32 %sum, %t, %mask;
            redux.sync.min.s32 %min, %t, %mask;
            redux.sync.xor.b32 %xor, %t, %mask;
            match.any.sync.b32 %match, %v, %mask;
            activemask.b32 %active;
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 48, %a;
            st.global.v4.u32 [%a], {%all, %any, %uni, %ballot};
            st.global.v4.u32 [%a+16], {%sum, %min, %xor, %match};
            st.global.u32 [%a+32], %active;
        }",
    );
    let (bytes, _) = launch_with_output(&m, "vote", cfg(1, 64), 64 * 48, &[]).unwrap();
    let out = u32s(&bytes);
    for t in 0..64u32 {
        let members: Vec<u32> = if t < 32 {
            (0..32).collect()
        } else if t % 2 == 1 {
            continue;
        } else {
            (32..64).step_by(2).collect()
        };
        let row = &out[t as usize * 12..t as usize * 12 + 9];
        let lane_bit = |m: u32| 1u32 << (m % 32);
        let ballot = members.iter().filter(|m| *m % 3 == 0).fold(0, |b, &m| b | lane_bit(m));
        let matching = members.iter().filter(|m| *m % 3 == t % 3).fold(0, |b, &m| b | lane_bit(m));
        let want = [
            u32::from(members.iter().all(|m| m % 3 == 0)),
            u32::from(members.iter().any(|m| m % 3 == 0)),
            1,
            ballot,
            members.iter().sum(),
            *members.iter().min().unwrap(),
            members.iter().fold(0, |x, m| x ^ m),
            matching,
            if t < 32 { 0xFFFF_FFFF } else { 0x5555_5555 },
        ];
        assert_eq!(row[..9], want, "thread {t}");
    }
}

#[test]
fn barriers_synchronise_shared_memory_with_counts_arrivals_and_reductions() {
    let m = module(
        ".visible .entry reduce(.param .u64 out) {
            .shared .align 4 .b32 sums[256];
            .reg .b32 %t, %s, %v, %w, %half, %popc, %addr, %other;
            .reg .pred %p, %active, %even, %all;
            .reg .b64 %a;
            mov.u32 %t, %tid.x;
            shl.b32 %addr, %t, 2;
            mov.u32 %s, sums;
            add.u32 %addr, %addr, %s;
            st.shared.u32 [%addr], %t;
            bar.sync 0;
            mov.u32 %half, 128;
        LOOP:
            setp.lt.u32 %active, %t, %half;
            @!%active bra SKIP;
            shl.b32 %w, %half, 2;
            add.u32 %w, %w, %addr;
            ld.shared.u32 %v, [%w];
            ld.shared.u32 %other, [%addr];
            add.u32 %v, %v, %other;
            st.shared.u32 [%addr], %v;
        SKIP:
            barrier.sync 0;
            shr.u32 %half, %half, 1;
            setp.ne.u32 %p, %half, 0;
            @%p bra LOOP;
            and.b32 %w, %t, 1;
            setp.eq.u32 %even, %w, 0;
            bar.red.popc.u32 %popc, 0, %even;
            bar.red.and.pred %all, 0, %even;
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 12, %a;
            ld.shared.u32 %v, [sums];
            selp.u32 %w, 1, 0, %all;
            st.global.u32 [%a], %v;
            st.global.u32 [%a+4], %popc;
            st.global.u32 [%a+8], %w;
        }
        .visible .entry producer_consumer(.param .u64 out) {
            .shared .align 4 .b32 slot[64];
            .reg .b32 %t, %v, %addr, %base;
            .reg .pred %producer;
            .reg .b64 %a;
            mov.u32 %t, %tid.x;
            setp.lt.u32 %producer, %t, 32;
            and.b32 %addr, %t, 31;
            shl.b32 %addr, %addr, 2;
            mov.u32 %base, slot;
            add.u32 %addr, %addr, %base;
            @!%producer bra CONSUME;
            mul.lo.u32 %v, %t, %t;
            st.shared.u32 [%addr], %v;
            bar.arrive 1, 64;
            exit;
        CONSUME:
            bar.sync 1, 64;
            ld.shared.u32 %v, [%addr];
            ld.param.u64 %a, [out];
            mad.wide.u32 %a, %t, 4, %a;
            st.global.u32 [%a], %v;
        }",
    );
    let (bytes, _) = launch_with_output(&m, "reduce", cfg(2, 256), 256 * 12, &[]).unwrap();
    let out = u32s(&bytes);
    for t in 0..256 {
        assert_eq!(out[3 * t..3 * t + 3], [(0..256).sum::<u32>(), 128, 0], "thread {t}");
    }
    let (bytes, _) = launch_with_output(&m, "producer_consumer", cfg(1, 64), 64 * 4, &[]).unwrap();
    let out = u32s(&bytes);
    for t in 0..64u32 {
        assert_eq!(out[t as usize], if t < 32 { 0 } else { (t - 32) * (t - 32) }, "thread {t}");
    }
}

#[test]
fn atomics_from_many_threads_and_ctas() {
    let m = module(
        ".visible .entry atomics(.param .u64 out, .param .u64 olds) {
            .shared .align 4 .b32 block_count;
            .reg .b32 %t, %id, %n, %old, %v, %s;
            .reg .f32 %f;
            .reg .pred %first;
            .reg .b64 %a, %o, %w;
            mov.u32 %t, %tid.x;
            mov.u32 %n, %ntid.x;
            mov.u32 %id, %ctaid.x;
            mad.lo.u32 %id, %id, %n, %t;
            ld.param.u64 %a, [out];
            setp.eq.u32 %first, %t, 0;
            @%first st.shared.u32 [block_count], 0;
            bar.sync 0;
            atom.global.add.u32 %old, [%a], 1;
            ld.param.u64 %o, [olds];
            mad.wide.u32 %o, %id, 4, %o;
            st.global.u32 [%o], %old;
            mov.f32 %f, 0f3F000000;
            red.global.add.f32 [%a+4], %f;
            mul.lo.u32 %v, %id, 2654435761;
            atom.global.max.s32 %old, [%a+8], %v;
            atom.global.min.u32 %old, [%a+12], %v;
            atom.global.inc.u32 %old, [%a+16], 9;
            atom.global.dec.u32 %old, [%a+20], 6;
            and.b32 %s, %id, 31;
            mov.u32 %v, 1;
            shl.b32 %v, %v, %s;
            atom.global.or.b32 %old, [%a+24], %v;
            atom.global.xor.b32 %old, [%a+28], %v;
            atom.shared.add.u32 %old, [block_count], 1;
        CAS:
            ld.volatile.global.u32 %old, [%a+32];
            add.u32 %v, %old, 3;
            atom.global.cas.b32 %s, [%a+32], %old, %v;
            setp.ne.u32 %first, %s, %old;
            @%first bra CAS;
            red.global.add.u64 [%a+40], 5;
            bar.sync 0;
            setp.eq.u32 %first, %t, 0;
            @!%first exit;
            ld.shared.u32 %v, [block_count];
            cvta.shared.u64 %w, block_count;
            atom.add.u32 %old, [%w], 0;
            add.u32 %v, %v, %old;
            atom.global.add.u32 %old, [%a+36], %v;
        }",
    );
    let (threads, blocks) = (128u32, 4u32);
    let n = (threads * blocks) as usize;
    let mut mem = ptx_emu::Memory::new();
    let out = mem.alloc(48).unwrap();
    let mut init = vec![0u8; 48];
    init[8..12].copy_from_slice(&i32::MIN.to_le_bytes());
    init[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    mem.write(out, &init).unwrap();
    let olds = mem.alloc(n * 4).unwrap();
    m.launch(
        &mut mem,
        "atomics",
        LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 },
        &[Arg::U64(out), Arg::U64(olds)],
    )
    .unwrap();
    let r = u32s(&mem.read(out, 48).unwrap());
    let ids = 0..n as u32;
    let hashes: Vec<u32> = ids.clone().map(|i| i.wrapping_mul(2654435761)).collect();
    assert_eq!(r[0], n as u32);
    assert_eq!(f32::from_bits(r[1]), 0.5 * n as f32);
    assert_eq!(r[2] as i32, hashes.iter().map(|&h| h as i32).max().unwrap());
    assert_eq!(r[3], *hashes.iter().min().unwrap());
    assert_eq!(r[4], n as u32 % 10, "inc wraps to 0 past 9");
    // dec from 0 wraps to the limit 6, then counts down: a cycle of 7
    assert_eq!(r[5], (7 - (n as u32 % 7)) % 7);
    assert_eq!((r[6], r[7]), (u32::MAX, 0), "every bit or-ed; each bit xor-ed an even number of times");
    assert_eq!(r[8], 3 * n as u32);
    assert_eq!(r[9], 2 * threads * blocks, "per-CTA shared counts, read directly and through a generic address");
    assert_eq!(u64::from(r[10]) | u64::from(r[11]) << 32, 5 * n as u64);
    let mut seen = u32s(&mem.read(olds, n * 4).unwrap());
    seen.sort_unstable();
    assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "atom.add returned every old value once");
}
